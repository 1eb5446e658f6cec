import { isIP } from 'node:net';
import { type ConfigIssue, describe, join, listeningAddress, parseHostPort } from '@meshlet/core';
import {
  type AuthorizationPolicy,
  type Condition,
  type Operation,
  parsePolicies,
  type Source,
} from '@meshlet/tls';
import type { Msg } from '@meshlet/xds';

/**
 * The server side of a service from the control plane's YAML, in the shape istiod's proxyless
 * generator gives it (istio/istio `pilot/pkg/networking/grpcgen/lds.go`: `buildInboundListeners`,
 * `buildInboundFilterChain`, `buildRBAC`; `pilot/pkg/security/authz/model`: `Generate(forTCP =
 * false, useAuthenticated = true)`): per listening address of the service's workloads an inbound
 * Listener named by the server listener template, its filter chains by the service's mTLS mode,
 * and its AuthorizationPolicies as an RBAC DENY and an RBAC ALLOW filter before the router.
 */

/** PeerAuthentication modes. */
export type MtlsMode = 'STRICT' | 'PERMISSIVE' | 'DISABLE';
export const MTLS_MODES: readonly MtlsMode[] = ['STRICT', 'PERMISSIVE', 'DISABLE'];

/** istio-agent's template (`pkg/istio-agent/grpcxds`: `ServerListenerNameTemplate`). */
export const ISTIO_SERVER_LISTENER_TEMPLATE = 'xds.istio.io/grpc/lds/inbound/%s';

/** What a service declares for its servers. */
export interface CpInbound {
  /** The listening addresses of its workloads (`ip:port`, as their servers bind). */
  readonly addresses: readonly { readonly host: string; readonly port: number }[];
  /** Its mTLS mode (PeerAuthentication). */
  readonly mtls: MtlsMode;
  readonly policies: readonly AuthorizationPolicy[];
}

/** Parses a service's `inbound`, `mtls` and `authorization` keys (every bad field named). */
export function parseInbound(
  o: Record<string, unknown>,
  path: string,
  issues: ConfigIssue[],
  hasIdentity: boolean,
): CpInbound | undefined {
  if (o.inbound === undefined && o.mtls === undefined && o.authorization === undefined) return undefined;
  const addresses: { host: string; port: number }[] = [];
  if (o.inbound !== undefined) {
    if (!Array.isArray(o.inbound))
      issues.push({
        path: join(path, 'inbound'),
        message: `must be a list of "ip:port" listening addresses, got ${describe(o.inbound)}`,
      });
    else
      o.inbound.forEach((a: unknown, i: number) => {
        const p = `${join(path, 'inbound')}[${i}]`;
        const hp = typeof a === 'string' ? parseHostPort(a, p, issues) : undefined;
        if (hp !== undefined && isIP(hp.address) !== 0) addresses.push({ host: hp.address, port: hp.port });
        else if (hp !== undefined || typeof a !== 'string')
          issues.push({
            path: p,
            message: `must be a listening address "ip:port" ("0.0.0.0:8080", "[::]:8080"), got ${describe(a)}`,
          });
      });
  }
  let mtls: MtlsMode = hasIdentity ? 'PERMISSIVE' : 'DISABLE';
  if (o.mtls !== undefined) {
    if (typeof o.mtls === 'string' && (MTLS_MODES as readonly string[]).includes(o.mtls))
      mtls = o.mtls as MtlsMode;
    else
      issues.push({
        path: join(path, 'mtls'),
        message: `must be one of ${MTLS_MODES.join(', ')}, got ${describe(o.mtls)}`,
      });
  }
  const policies =
    o.authorization === undefined ? [] : parsePolicies(o.authorization, join(path, 'authorization'), issues);
  return { addresses, mtls, policies };
}

// ---- RBAC, as istio's authz model generates it for gRPC -----------------------------------------

const RBAC = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';
const ROUTER = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router';
const HCM =
  'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const DOWNSTREAM_TLS = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext';

const quoteMeta = (s: string) => s.replace(/[\\.+*?()|[\]{}^$]/g, '\\$&');

/** `matcher.StringMatcherWithPrefix`: `*` → `.+`, `*x` → suffix (regex with a prefix), `x*` → prefix. */
function stringMatcher(v: string, prefix = ''): Msg {
  if (v === '*') return { safeRegex: { regex: '.+' } };
  if (v.startsWith('*'))
    return prefix === ''
      ? { suffix: v.slice(1) }
      : { safeRegex: { regex: `${prefix}.*${quoteMeta(v.slice(1))}` } };
  if (v.endsWith('*')) return { prefix: prefix + v.slice(0, -1) };
  return { exact: prefix + v };
}

/** `matcher.HeaderMatcher` / `HostMatcher` (hosts compare case-insensitively). */
function headerMatcher(name: string, v: string, ignoreCase = false): Msg {
  if (v === '*') return { name, presentMatch: true };
  if (v.startsWith('*')) return { name, stringMatch: { suffix: v.slice(1), ignoreCase } };
  if (v.endsWith('*')) return { name, stringMatch: { prefix: v.slice(0, -1), ignoreCase } };
  return { name, stringMatch: { exact: v, ignoreCase } };
}

function cidr(v: string): Msg {
  const [addr = '', len] = v.split('/');
  return {
    addressPrefix: addr,
    prefixLen: { value: len === undefined ? (addr.includes(':') ? 128 : 32) : Number(len) },
  };
}

const principalName = (m: Msg): Msg => ({ authenticated: { principalName: m } });
const namespaceRegex = (ns: string) => ({
  safeRegex: { regex: `.*/ns/${ns.split('*').map(quoteMeta).join('.*')}/.*` },
});

type Gen = (v: string) => Msg;

/** One attribute: its values ORed, its notValues as NOT(OR) (istio's `rule.permission` / `principal`). */
function attribute(
  values: readonly string[] | undefined,
  notValues: readonly string[] | undefined,
  gen: Gen,
  kind: 'rules' | 'ids',
): Msg[] {
  const set = (xs: Msg[]) => (kind === 'rules' ? { orRules: { rules: xs } } : { orIds: { ids: xs } });
  const out: Msg[] = [];
  if (values && values.length > 0) out.push(set(values.map(gen)));
  if (notValues && notValues.length > 0)
    out.push(kind === 'rules' ? { notRule: set(notValues.map(gen)) } : { notId: set(notValues.map(gen)) });
  return out;
}

const PRINCIPAL_KEYS: Record<string, Gen> = {
  'source.ip': (v) => ({ directRemoteIp: cidr(v) }),
  'remote.ip': (v) => ({ remoteIp: cidr(v) }),
  'source.namespace': (v) => principalName(namespaceRegex(v)),
  'source.principal': (v) => principalName(stringMatcher(v.replace(/^spiffe:\/\//, ''), 'spiffe://')),
};
const PERMISSION_KEYS: Record<string, Gen> = {
  'destination.ip': (v) => ({ destinationIp: cidr(v) }),
  'destination.port': (v) => ({ destinationPort: Number(v) }),
  'connection.sni': (v) => ({ requestedServerName: stringMatcher(v) }),
};

function whenParts(when: readonly Condition[] | undefined): { principals: Msg[]; permissions: Msg[] } {
  const principals: Msg[] = [];
  const permissions: Msg[] = [];
  for (const c of when ?? []) {
    const header = /^request\.headers\[(.+)\]$/.exec(c.key);
    if (header) {
      const name = (header[1] as string).toLowerCase();
      principals.push(
        ...attribute(c.values, c.notValues, (v) => ({ header: headerMatcher(name, v) }), 'ids'),
      );
    } else if (PRINCIPAL_KEYS[c.key])
      principals.push(...attribute(c.values, c.notValues, PRINCIPAL_KEYS[c.key] as Gen, 'ids'));
    else if (PERMISSION_KEYS[c.key])
      permissions.push(...attribute(c.values, c.notValues, PERMISSION_KEYS[c.key] as Gen, 'rules'));
  }
  return { principals, permissions };
}

function sourcePrincipal(s: Source | undefined, base: Msg[]): Msg {
  const and: Msg[] = [];
  if (s) {
    and.push(...attribute(s.principals, s.notPrincipals, PRINCIPAL_KEYS['source.principal'] as Gen, 'ids'));
    and.push(...attribute(s.namespaces, s.notNamespaces, PRINCIPAL_KEYS['source.namespace'] as Gen, 'ids'));
    and.push(...attribute(s.remoteIpBlocks, s.notRemoteIpBlocks, PRINCIPAL_KEYS['remote.ip'] as Gen, 'ids'));
    and.push(...attribute(s.ipBlocks, s.notIpBlocks, PRINCIPAL_KEYS['source.ip'] as Gen, 'ids'));
  }
  and.push(...base);
  return { andIds: { ids: and.length > 0 ? and : [{ any: true }] } };
}

function operationPermission(o: Operation | undefined, base: Msg[]): Msg {
  const and: Msg[] = [];
  if (o) {
    and.push(
      ...attribute(o.hosts, o.notHosts, (v) => ({ header: headerMatcher(':authority', v, true) }), 'rules'),
    );
    and.push(
      ...attribute(o.methods, o.notMethods, (v) => ({ header: headerMatcher(':method', v) }), 'rules'),
    );
    and.push(...attribute(o.paths, o.notPaths, (v) => ({ urlPath: { path: stringMatcher(v) } }), 'rules'));
    and.push(...attribute(o.ports, o.notPorts, PERMISSION_KEYS['destination.port'] as Gen, 'rules'));
  }
  and.push(...base);
  return { andRules: { rules: and.length > 0 ? and : [{ any: true }] } };
}

/** `buildRBAC(action, policies)`: one RBAC policy per rule, named `<policy>-<rule index>`. */
function rbacFilter(action: 'ALLOW' | 'DENY', policies: readonly AuthorizationPolicy[]): Msg {
  const out: Record<string, Msg> = {};
  for (const p of policies) {
    (p.rules ?? []).forEach((r, i) => {
      const w = whenParts(r.when);
      out[`${p.name.replace(/\//g, '-')}-${i}`] = {
        permissions: (r.to && r.to.length > 0 ? r.to : [undefined]).map((t) =>
          operationPermission(t?.operation, w.permissions),
        ),
        principals: (r.from && r.from.length > 0 ? r.from : [undefined]).map((f) =>
          sourcePrincipal(f?.source, w.principals),
        ),
      };
    });
  }
  return { '@type': RBAC, rules: { action, policies: out } };
}

/** `buildCommonTLSContext(nil)`: the `default` instance, current and deprecated fields. */
function commonTlsContext(): Msg {
  return {
    tlsCertificateProviderInstance: { instanceName: 'default', certificateName: 'default' },
    tlsCertificateCertificateProviderInstance: { instanceName: 'default', certificateName: 'default' },
    combinedValidationContext: {
      validationContextCertificateProviderInstance: { instanceName: 'default', certificateName: 'ROOTCA' },
      defaultValidationContext: {
        caCertificateProviderInstance: { instanceName: 'default', certificateName: 'ROOTCA' },
      },
    },
  };
}

function filterChain(
  suffix: 'mtls' | 'plaintext',
  policies: readonly AuthorizationPolicy[],
  transport?: string,
): Msg {
  const filters: Msg[] = [];
  const deny = policies.filter((p) => p.action === 'DENY');
  const allow = policies.filter((p) => p.action === 'ALLOW');
  if (deny.length > 0)
    filters.push({ name: 'envoy.filters.http.rbac.DENY', typedConfig: rbacFilter('DENY', deny) });
  // An ALLOW policy set is kept even when it has no rules: it then allows nothing, as the policy says
  // (istiod leaves such a filter out for proxyless servers, which allows everything).
  if (allow.length > 0)
    filters.push({ name: 'envoy.filters.http.rbac', typedConfig: rbacFilter('ALLOW', allow) });
  filters.push({ name: 'envoy.filters.http.router', typedConfig: { '@type': ROUTER } });
  const chain: Msg = {
    name: `inbound-${suffix}`,
    filters: [
      {
        name: `inbound-hcm${suffix}`,
        typedConfig: {
          '@type': HCM,
          routeConfig: {
            name: 'inbound',
            virtualHosts: [{ domains: ['*'], routes: [{ match: { prefix: '/' }, nonForwardingAction: {} }] }],
          },
          httpFilters: filters,
        },
      },
    ],
  };
  if (transport !== undefined) chain.filterChainMatch = { transportProtocol: transport };
  if (suffix === 'mtls')
    chain.transportSocket = {
      name: 'envoy.transport_sockets.tls',
      typedConfig: {
        '@type': DOWNSTREAM_TLS,
        commonTlsContext: commonTlsContext(),
        requireClientCertificate: { value: true },
      },
    };
  return chain;
}

/**
 * The inbound Listeners of a service: one per listening address, named by `template`. STRICT: an
 * mTLS chain; DISABLE: a plaintext chain; PERMISSIVE: both, told apart by `transport_protocol`
 * (`tls` / `raw_buffer`, as Envoy's are; gRPC servers serve only the plaintext one, which is what
 * istiod gives them for PERMISSIVE anyway).
 */
export function inboundListeners(inbound: CpInbound, template: string): Msg[] {
  const chains =
    inbound.mtls === 'STRICT'
      ? [filterChain('mtls', inbound.policies)]
      : inbound.mtls === 'DISABLE'
        ? [filterChain('plaintext', inbound.policies)]
        : [
            filterChain('mtls', inbound.policies, 'tls'),
            filterChain('plaintext', inbound.policies, 'raw_buffer'),
          ];
  return inbound.addresses.map(({ host, port }) => ({
    name: template.split('%s').join(listeningAddress(host, port)),
    address: { socketAddress: { address: host, portValue: port } },
    filterChains: chains,
  }));
}
