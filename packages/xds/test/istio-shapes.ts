/**
 * Inbound resources in the shape istiod's proxyless generator gives them, built the way
 * istio/istio `pilot/pkg/networking/grpcgen/lds.go` (`buildInboundListeners`,
 * `buildInboundFilterChain`, `buildRBAC`), `grpcgen.go` (`buildCommonTLSContext`: the current and
 * the deprecated certificate-provider fields, instance `default`) and
 * `pilot/pkg/security/authz/model` (`Generate(forTCP=false, useAuthenticated=true)`: principals
 * and permissions as and-of-or lists, principals as `authenticated.principal_name`) do. Proto-JSON
 * in lowerCamelCase, ready for `fromJson` or a control plane's `setResources`.
 */

type Json = Record<string, unknown>;

export const ISTIO_LISTENER_PREFIX = 'xds.istio.io/grpc/lds/inbound/';
const HCM =
  'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const RBAC = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';
const ROUTER = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router';
const DOWNSTREAM_TLS = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext';

/** grpcgen.go `buildCommonTLSContext(nil)`: both the current and the deprecated provider fields. */
export function istioCommonTlsContext(): Json {
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

/** An Istio rule's `from.source.principals` (authz/model: `authenticated`, exact or prefix). */
export function principalsOf(values: readonly string[]): Json {
  return {
    andIds: {
      ids: [
        {
          orIds: {
            ids: values.map((v) => ({
              authenticated: {
                principalName: v.endsWith('*')
                  ? { prefix: `spiffe://${v.slice(0, -1)}` }
                  : { exact: `spiffe://${v}` },
              },
            })),
          },
        },
      ],
    },
  };
}

/** An Istio rule's `from.source.namespaces` (a regex on the principal, as srcNamespaceGenerator writes it). */
export function namespacesOf(values: readonly string[]): Json {
  return {
    andIds: {
      ids: [
        {
          orIds: {
            ids: values.map((ns) => ({
              authenticated: { principalName: { safeRegex: { regex: `.*/ns/${ns}/.*` } } },
            })),
          },
        },
      ],
    },
  };
}

export const ANY_PRINCIPAL: Json = { andIds: { ids: [{ any: true }] } };
export const ANY_PERMISSION: Json = { andRules: { rules: [{ any: true }] } };

/** An Istio rule's `to.operation` (paths as url_path, methods as `:method` headers), ANDed. */
export function operationOf(o: {
  paths?: readonly string[];
  methods?: readonly string[];
  notPaths?: readonly string[];
}): Json {
  const rules: Json[] = [];
  const path = (p: string): Json => ({
    urlPath: {
      path: p.endsWith('*')
        ? { prefix: p.slice(0, -1) }
        : p.startsWith('*')
          ? { suffix: p.slice(1) }
          : { exact: p },
    },
  });
  if (o.methods)
    rules.push({
      orRules: { rules: o.methods.map((m) => ({ header: { name: ':method', stringMatch: { exact: m } } })) },
    });
  if (o.paths) rules.push({ orRules: { rules: o.paths.map(path) } });
  if (o.notPaths) rules.push({ notRule: { orRules: { rules: o.notPaths.map(path) } } });
  return { andRules: { rules: rules.length > 0 ? rules : [{ any: true }] } };
}

/** `buildRBAC(action, policies)`: one RBAC policy per rule, named `<ns>-<name>-<i>`. */
export function istioRbac(
  action: 'ALLOW' | 'DENY',
  policies: Record<string, { principals: Json[]; permissions: Json[] }>,
): Json {
  return { '@type': RBAC, rules: { action, policies } };
}

/** `buildInboundFilterChain`: RBAC DENY, RBAC ALLOW (when they have policies), router; inline route config. */
export function istioFilterChain(opts: { mtls: boolean; deny?: Json; allow?: Json }): Json {
  const filters: Json[] = [];
  if (opts.deny) filters.push({ name: 'envoy.filters.http.rbac.DENY', typedConfig: opts.deny });
  if (opts.allow) filters.push({ name: 'envoy.filters.http.rbac', typedConfig: opts.allow });
  filters.push({ name: 'envoy.filters.http.router', typedConfig: { '@type': ROUTER } });
  const suffix = opts.mtls ? 'mtls' : 'plaintext';
  const chain: Json = {
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
  if (opts.mtls)
    chain.transportSocket = {
      name: 'envoy.transport_sockets.tls',
      typedConfig: {
        '@type': DOWNSTREAM_TLS,
        commonTlsContext: istioCommonTlsContext(),
        requireClientCertificate: true,
      },
    };
  return chain;
}

/** `buildInboundListeners`: the listener of `host:port`, its address, one filter chain. */
export function istioInboundListener(host: string, port: number, chain: Json): Json {
  const address = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  return {
    name: `${ISTIO_LISTENER_PREFIX}${address}`,
    address: { socketAddress: { address: host, portValue: port } },
    filterChains: [chain],
  };
}
