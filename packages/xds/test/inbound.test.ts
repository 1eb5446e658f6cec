import type { InboundConnection } from '@meshlet/core';
import { describe, expect, it } from 'vitest';
import {
  connectionIndependentChain,
  matchFilterChain,
  type ServerListenerUpdate,
  serverListenerMatcher,
  serverListenerName,
  translateServerListener,
} from '../src/inbound.js';
import { fromJson } from '../src/index.js';
import {
  ANY_PERMISSION,
  ANY_PRINCIPAL,
  istioCommonTlsContext,
  istioFilterChain,
  istioInboundListener,
  istioRbac,
  operationOf,
  principalsOf,
} from './istio-shapes.js';

type Json = Record<string, unknown>;
const LISTENER = 'envoy.config.listener.v3.Listener';
const HCM =
  'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const ROUTER = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router';
const RBAC = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';
const DTLS = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext';

const known: ReadonlySet<string> = new Set(['default']);
const server = (json: Json, certificateProviders = known): ServerListenerUpdate =>
  translateServerListener(fromJson(LISTENER, json), { certificateProviders });

/** A plain chain with an inline catch-all non-forwarding route, `extra` merged in. */
function chain(extra: Json = {}, hcm: Json = {}): Json {
  return {
    filters: [
      {
        name: 'hcm',
        typedConfig: {
          '@type': HCM,
          routeConfig: {
            name: 'inbound',
            virtualHosts: [{ domains: ['*'], routes: [{ match: { prefix: '/' }, nonForwardingAction: {} }] }],
          },
          httpFilters: [{ name: 'router', typedConfig: { '@type': ROUTER } }],
          ...hcm,
        },
      },
    ],
    ...extra,
  };
}

const listener = (chains: Json[], extra: Json = {}): Json => ({
  name: 'xds.istio.io/grpc/lds/inbound/0.0.0.0:8080',
  address: { socketAddress: { address: '0.0.0.0', portValue: 8080 } },
  filterChains: chains,
  ...extra,
});

const conn = (c: Partial<InboundConnection>): InboundConnection => ({
  localAddress: '10.0.0.7',
  localPort: 8080,
  remoteAddress: '10.0.0.9',
  remotePort: 40000,
  transport: 'raw_buffer',
  ...c,
});

describe('the server listener name (gRFC A36)', () => {
  it('replaces every %s of the template; the matcher tells server listeners from client ones', () => {
    expect(serverListenerName('xds.istio.io/grpc/lds/inbound/%s', '[::]:80')).toBe(
      'xds.istio.io/grpc/lds/inbound/[::]:80',
    );
    expect(serverListenerName('a/%s/b/%s', '0.0.0.0:1')).toBe('a/0.0.0.0:1/b/0.0.0.0:1');
    const is = serverListenerMatcher('xds.istio.io/grpc/lds/inbound/%s') as (n: string) => boolean;
    expect(is('xds.istio.io/grpc/lds/inbound/0.0.0.0:8080')).toBe(true);
    expect(is('reviews.default.svc.cluster.local:9080')).toBe(false);
    expect(serverListenerMatcher(undefined)).toBeUndefined();
    expect((serverListenerMatcher('fixed') as (n: string) => boolean)('fixed')).toBe(true);
  });
});

describe('inbound listeners in istiod’s shape', () => {
  it('STRICT: one mTLS chain from the "default" provider, RBAC DENY then ALLOW then the router', () => {
    const l = server(
      istioInboundListener(
        '0.0.0.0',
        8080,
        istioFilterChain({
          mtls: true,
          deny: istioRbac('DENY', {
            'default-deny-admin-0': {
              principals: [ANY_PRINCIPAL],
              permissions: [operationOf({ paths: ['/admin*'] })],
            },
          }),
          allow: istioRbac('ALLOW', {
            'default-allow-frontend-0': {
              principals: [principalsOf(['cluster.local/ns/default/sa/frontend'])],
              permissions: [ANY_PERMISSION],
            },
          }),
        }),
      ),
    );
    expect(l.address).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(l.chains).toHaveLength(1);
    const c = l.chains[0];
    expect(c?.name).toBe('inbound-mtls');
    expect(c?.tls).toMatchObject({
      certificateProvider: 'default',
      caProvider: 'default',
      requireClientCertificate: true,
    });
    expect(c?.hcm.filters.map((f) => [f.name, f.kind, f.rbac?.action])).toEqual([
      ['envoy.filters.http.rbac.DENY', 'rbac', 'DENY'],
      ['envoy.filters.http.rbac', 'rbac', 'ALLOW'],
      ['envoy.filters.http.router', 'router', undefined],
    ]);
    expect(l.needsTransport).toBe(false);
    // No filter_chain_match: matches every connection.
    expect(matchFilterChain(l, conn({}))).toBe(c);
  });

  it('only the deprecated certificate-provider fields are accepted too', () => {
    const ctx = {
      tlsCertificateCertificateProviderInstance: { instanceName: 'default' },
      combinedValidationContext: {
        defaultValidationContext: {},
        validationContextCertificateProviderInstance: { instanceName: 'default' },
      },
    };
    const l = server(
      listener([
        chain({
          transportSocket: {
            name: 'envoy.transport_sockets.tls',
            typedConfig: { '@type': DTLS, commonTlsContext: ctx, requireClientCertificate: true },
          },
        }),
      ]),
    );
    expect(l.chains[0]?.tls).toMatchObject({ certificateProvider: 'default', caProvider: 'default' });
  });
});

describe('validation NACKs what A36, A29, A39 and A41 say to NACK', () => {
  const nack = (json: Json, re: RegExp, has = known) => expect(() => server(json, has)).toThrow(re);
  const tlsChain = (typed: Json, name = 'envoy.transport_sockets.tls') =>
    chain({ transportSocket: { name, typedConfig: { '@type': DTLS, ...typed } } });

  it('listener-level: listener_filters, use_original_dst, no chains, an API listener', () => {
    nack(
      listener([chain()], { listenerFilters: [{ name: 'envoy.filters.listener.tls_inspector' }] }),
      /^listener_filters: are not supported/,
    );
    nack(listener([chain()], { useOriginalDst: true }), /^use_original_dst: is not supported/);
    nack(listener([]), /^filter_chains: a server listener needs filter_chains or a default_filter_chain/);
    nack(
      listener([chain()], {
        apiListener: {
          apiListener: { '@type': HCM, rds: { routeConfigName: 'x', configSource: { ads: {} } } },
        },
      }),
      /^api_listener: a server listener must not be an API listener/,
    );
  });

  it('filter chains: exactly one filter, an HttpConnectionManager', () => {
    const two = chain();
    (two.filters as Json[]).push((two.filters as Json[])[0] as Json);
    nack(listener([two]), /^filter_chains\[0\]\.filters: must hold exactly one filter/);
    nack(
      listener([{ filters: [{ name: 'tcp', typedConfig: { '@type': ROUTER } }] }]),
      /filters\[0\]\.typed_config: must be an HttpConnectionManager/,
    );
    nack(
      listener([chain()], { defaultFilterChain: { filters: [] } }),
      /^default_filter_chain\.filters: must hold exactly one filter/,
    );
  });

  it('HTTP filters: the router last and present, no duplicate names, unknown ones only when optional', () => {
    const filters = (f: Json[]) => listener([chain({}, { httpFilters: f })]);
    const router = { name: 'router', typedConfig: { '@type': ROUTER } };
    const fault = {
      name: 'fault',
      typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault' },
    };
    nack(filters([router, fault]), /the router filter must be the last HTTP filter/);
    nack(filters([]), /http_filters: must end with the router filter/);
    nack(
      filters([fault, router]),
      /http_filters\[0\]\.typed_config: envoy\.extensions\.filters\.http\.fault\.v3\.HTTPFault is not supported on servers/,
    );
    expect(server(filters([{ ...fault, isOptional: true }, router])).chains[0]?.hcm.filters).toHaveLength(1);
    nack(
      filters([{ ...fault, name: 'x', isOptional: true }, { ...fault, name: 'x', isOptional: true }, router]),
      /duplicate HTTP filter name "x"/,
    );
  });

  it('the HCM: remote_ip must be the mesh’s (A41), routes from RDS over ADS or inline', () => {
    nack(listener([chain({}, { xffNumTrustedHops: 1 })]), /xff_num_trusted_hops: must be 0/);
    nack(
      listener([
        chain({}, { routeConfig: undefined, rds: { routeConfigName: 'r', configSource: { path: '/x' } } }),
      ]),
      /rds\.config_source: must be ads or self/,
    );
    const rds = server(
      listener([
        chain({}, { routeConfig: undefined, rds: { routeConfigName: 'r', configSource: { ads: {} } } }),
      ]),
    );
    expect(rds.rdsNames).toEqual(['r']);
  });

  it('DownstreamTlsContext: name, require_sni, OCSP, providers known and present, trust bundle for client certificates', () => {
    nack(
      listener([tlsChain({ commonTlsContext: istioCommonTlsContext() }, 'envoy.transport_sockets.alts')]),
      /transport_socket\.name: must be envoy\.transport_sockets\.tls/,
    );
    nack(
      listener([tlsChain({ commonTlsContext: istioCommonTlsContext(), requireSni: true })]),
      /require_sni: is not supported/,
    );
    nack(
      listener([tlsChain({ commonTlsContext: istioCommonTlsContext(), ocspStaplePolicy: 'MUST_STAPLE' })]),
      /ocsp_staple_policy: MUST_STAPLE is not supported/,
    );
    nack(listener([tlsChain({})]), /common_tls_context: is required/);
    nack(
      listener([
        tlsChain({ commonTlsContext: { combinedValidationContext: { defaultValidationContext: {} } } }),
      ]),
      /tls_certificate_provider_instance: is required/,
    );
    nack(
      listener([tlsChain({ commonTlsContext: istioCommonTlsContext() })]),
      /certificate provider instance "default" is not in the bootstrap's certificate_providers/,
      new Set(),
    );
    nack(
      listener([
        tlsChain({
          commonTlsContext: { tlsCertificateProviderInstance: { instanceName: 'default' } },
          requireClientCertificate: true,
        }),
      ]),
      /require_client_certificate: is set without a validation context/,
    );
    nack(
      listener([
        tlsChain({
          // validation_context_type is a oneof: the SDS config instead of the combined context
          commonTlsContext: {
            tlsCertificateProviderInstance: { instanceName: 'default' },
            validationContextSdsSecretConfig: { name: 'x' },
          },
        }),
      ]),
      /validation_context_sds_secret_config: SDS is not supported/,
    );
    nack(
      listener([
        tlsChain({
          commonTlsContext: {
            tlsCertificateProviderInstance: { instanceName: 'default' },
            validationContext: {
              caCertificateProviderInstance: { instanceName: 'default' },
              verifyCertificateSpki: ['x'],
            },
          },
        }),
      ]),
      /verify_certificate_spki: is not supported/,
    );
    // TLS without client certificates: a server certificate, no trust bundle needed.
    const plainTls = server(
      listener([
        tlsChain({ commonTlsContext: { tlsCertificateProviderInstance: { instanceName: 'default' } } }),
      ]),
    );
    expect(plainTls.chains[0]?.tls).toMatchObject({ requireClientCertificate: false, caProvider: undefined });
  });

  it('duplicate matches after normalization (host bits, the cross product)', () => {
    const m = (fcm: Json) => chain({ filterChainMatch: fcm });
    nack(
      listener([
        m({ prefixRanges: [{ addressPrefix: '10.1.2.3', prefixLen: 8 }] }),
        m({
          prefixRanges: [
            { addressPrefix: '10.0.0.0', prefixLen: 8 },
            { addressPrefix: '192.168.0.0', prefixLen: 16 },
          ],
        }),
      ]),
      /filter_chains\[1\]\.filter_chain_match: duplicates the match of filter_chains\[0\]/,
    );
    // An always-failing matcher (destination_port) still counts for duplicates.
    nack(listener([m({ destinationPort: 80 }), m({ destinationPort: 80 })]), /duplicates the match/);
    expect(
      server(listener([m({ sourceType: 'EXTERNAL' }), m({ sourceType: 'SAME_IP_OR_LOOPBACK' })])).chains,
    ).toHaveLength(2);
  });

  it('RBAC (A41): CEL, grpc- and :scheme headers, any: false, empty lists, the matcher form; LOG is ignored', () => {
    const rbac = (rules: Json, extra: Json = {}) =>
      listener([
        chain(
          {},
          {
            httpFilters: [
              { name: 'rbac', typedConfig: { '@type': RBAC, rules, ...extra } },
              { name: 'router', typedConfig: { '@type': ROUTER } },
            ],
          },
        ),
      ]);
    const policy = (p: Json) => ({
      action: 'ALLOW',
      policies: { p: { principals: [{ any: true }], permissions: [{ any: true }], ...p } },
    });
    nack(
      rbac(policy({ condition: { constExpr: { boolValue: true } } })),
      /policies\["p"\]\.condition: CEL conditions are not supported/,
    );
    nack(
      rbac(policy({ permissions: [{ header: { name: 'grpc-timeout', presentMatch: true } }] })),
      /grpc- headers cannot be matched/,
    );
    nack(
      rbac(policy({ principals: [{ header: { name: ':scheme', presentMatch: true } }] })),
      /":scheme" cannot be matched/,
    );
    nack(rbac(policy({ permissions: [{ any: false }] })), /permissions\[0\]\.any: must be true/);
    nack(rbac(policy({ permissions: [] })), /permissions: must not be empty/);
    nack(
      rbac(policy({ principals: [{ andIds: { ids: [] } }] })),
      /principals\[0\]\.and_ids\.ids: must not be empty/,
    );
    nack(
      rbac(policy({}), { matcher: { matcherList: { matchers: [] } } }),
      /matcher: the matcher form of RBAC rules is not supported/,
    );
    const log = server(
      rbac({ action: 'LOG', policies: { p: { principals: [{ any: true }], permissions: [{ any: true }] } } }),
    );
    expect(log.chains[0]?.hcm.filters[0]?.rbac).toMatchObject({ action: 'none', authorizer: undefined });
    const noRules = server(rbac(undefined as unknown as Json));
    expect(noRules.chains[0]?.hcm.filters[0]?.rbac?.authorizer).toBeUndefined();
    // An ALLOW filter with no policies allows nothing.
    const empty = server(rbac({ action: 'ALLOW' }));
    expect(empty.chains[0]?.hcm.filters[0]?.rbac?.authorizer?.({ path: '/x' }).allowed).toBe(false);
  });
});

describe('filter chain matching (the most specific match, A36’s subset)', () => {
  const named = (name: string, fcm?: Json) => chain({ name, ...(fcm ? { filterChainMatch: fcm } : {}) });
  const pick = (l: ServerListenerUpdate, c: Partial<InboundConnection>) => matchFilterChain(l, conn(c))?.name;

  it('destination prefix: the longest one wins; prefix_len 0 is more specific than none', () => {
    const l = server(
      listener([
        named('any'),
        named('all-v4', { prefixRanges: [{ addressPrefix: '0.0.0.0', prefixLen: 0 }] }),
        named('ten', { prefixRanges: [{ addressPrefix: '10.0.0.0', prefixLen: 8 }] }),
        named('host', { prefixRanges: [{ addressPrefix: '10.0.0.7', prefixLen: 32 }] }),
      ]),
    );
    expect(pick(l, {})).toBe('host');
    expect(pick(l, { localAddress: '10.9.9.9' })).toBe('ten');
    expect(pick(l, { localAddress: '192.168.1.1' })).toBe('all-v4');
    expect(pick(l, { localAddress: '::1' })).toBe('any');
  });

  it('source type, source prefix and source port, in that order', () => {
    const l = server(
      listener([
        named('local', { sourceType: 'SAME_IP_OR_LOOPBACK' }),
        named('external', { sourceType: 'EXTERNAL' }),
        named('external-net', {
          sourceType: 'EXTERNAL',
          sourcePrefixRanges: [{ addressPrefix: '203.0.113.0', prefixLen: 24 }],
        }),
        named('external-net-port', {
          sourceType: 'EXTERNAL',
          sourcePrefixRanges: [{ addressPrefix: '203.0.113.0', prefixLen: 24 }],
          sourcePorts: [5555],
        }),
      ]),
    );
    expect(pick(l, { remoteAddress: '127.0.0.1' })).toBe('local');
    expect(pick(l, { remoteAddress: '10.0.0.7' })).toBe('local');
    expect(pick(l, { remoteAddress: '10.0.0.9' })).toBe('external');
    expect(pick(l, { remoteAddress: '203.0.113.5' })).toBe('external-net');
    expect(pick(l, { remoteAddress: '203.0.113.5', remotePort: 5555 })).toBe('external-net-port');
  });

  it('destination_port, server_names and ALPN never match; the default chain takes what nothing matches', () => {
    const l = server(
      listener(
        [
          named('port', { destinationPort: 8080 }),
          named('sni', { serverNames: ['a.example'] }),
          named('alpn', { applicationProtocols: ['h2'] }),
        ],
        {
          defaultFilterChain: named('default'),
        },
      ),
    );
    expect(pick(l, {})).toBe('default');
    const none = server(listener([named('port', { destinationPort: 8080 })]));
    expect(pick(none, {})).toBeUndefined();
  });

  it('transport protocol: raw_buffer matches every connection, unless a chain asks for tls', () => {
    const a36 = server(listener([named('raw', { transportProtocol: 'raw_buffer' })]));
    expect(a36.needsTransport).toBe(false);
    expect(pick(a36, { transport: 'tls' })).toBe('raw');
    const permissive = server(
      listener([
        named('plaintext', { transportProtocol: 'raw_buffer' }),
        named('mtls', { transportProtocol: 'tls' }),
      ]),
    );
    expect(permissive.needsTransport).toBe(true);
    expect(pick(permissive, { transport: 'tls' })).toBe('mtls');
    expect(pick(permissive, { transport: 'raw_buffer' })).toBe('plaintext');
  });

  it('a chain every connection gets is found once per version; any matcher that reads the connection rules it out', () => {
    const every = (l: ServerListenerUpdate) => {
      const c = connectionIndependentChain(l);
      return c === null ? null : (c?.name ?? 'none');
    };
    // istiod's shape: one chain, no filter_chain_match.
    expect(every(server(istioInboundListener('0.0.0.0', 8080, istioFilterChain({ mtls: true }))))).toBe(
      'inbound-mtls',
    );
    expect(every(server(listener([], { defaultFilterChain: named('default') })))).toBe('default');
    expect(every(server(listener([named('port', { destinationPort: 8080 })])))).toBe('none');
    // raw_buffer beats '' when no chain asks for tls, for every connection alike.
    expect(every(server(listener([named('any'), named('raw', { transportProtocol: 'raw_buffer' })])))).toBe(
      'raw',
    );
    for (const fcm of [
      { prefixRanges: [{ addressPrefix: '10.0.0.0', prefixLen: 8 }] },
      { sourceType: 'EXTERNAL' },
      { sourcePrefixRanges: [{ addressPrefix: '10.0.0.0', prefixLen: 8 }] },
      { sourcePorts: [5555] },
      { transportProtocol: 'tls' },
    ])
      expect(every(server(listener([named('x', fcm), named('other')])))).toBeNull();
    // Whenever it is not null it is what matching any connection gives.
    for (const l of [
      server(listener([named('any'), named('raw', { transportProtocol: 'raw_buffer' })])),
      server(listener([named('alpn', { applicationProtocols: ['h2'] })], { defaultFilterChain: named('d') })),
    ])
      for (const c of [
        {},
        { remoteAddress: '127.0.0.1' },
        { transport: 'tls' as const },
        { localAddress: '::1' },
      ])
        expect(matchFilterChain(l, conn(c))).toBe(connectionIndependentChain(l));
  });

  it('IPv4-mapped peers match IPv4 blocks', () => {
    const l = server(
      listener([
        named('ten', { sourcePrefixRanges: [{ addressPrefix: '10.0.0.0', prefixLen: 8 }] }),
        named('other'),
      ]),
    );
    expect(pick(l, { remoteAddress: '::ffff:10.1.1.1' })).toBe('ten');
    expect(pick(l, { remoteAddress: '::ffff:11.1.1.1' })).toBe('other');
  });
});

describe('RBACPerRoute in the inbound route configuration', () => {
  it('a route’s override replaces its virtual host’s, by filter name', () => {
    const override = (action: string) => ({
      '@type': 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute',
      rbac: {
        rules: { action, policies: { p: { principals: [{ any: true }], permissions: [{ any: true }] } } },
      },
    });
    const l = server(
      listener([
        chain(
          {},
          {
            routeConfig: {
              name: 'inbound',
              virtualHosts: [
                {
                  domains: ['*'],
                  typedPerFilterConfig: { rbac: override('DENY') },
                  routes: [
                    {
                      name: 'open',
                      match: { prefix: '/public' },
                      nonForwardingAction: {},
                      typedPerFilterConfig: {
                        rbac: {
                          '@type': 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute',
                        },
                      },
                    },
                    { name: 'rest', match: { prefix: '/' }, nonForwardingAction: {} },
                  ],
                },
              ],
            },
          },
        ),
      ]),
    );
    const routes = l.chains[0]?.hcm.routeConfig?.virtualHosts[0]?.routes ?? [];
    expect(routes[0]?.rbac?.rbac).toMatchObject({ action: 'none', authorizer: undefined });
    expect(routes[1]?.rbac?.rbac?.action).toBe('DENY');
  });
});
