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

// ---------------------------------------------------------------------------------------------
// The outbound side, as istiod gives it to a proxyless client.

const UPSTREAM_TLS = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext';
const RAW_BUFFER = 'type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer';
const FAULT = 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault';

/** `model.BuildSubsetKey(outbound, "", host, port)`: `outbound|9080||ratings.default.svc.cluster.local`. */
export function istioClusterName(host: string, port: number): string {
  return `outbound|${port}||${host}`;
}

/**
 * grpcgen/lds.go `buildOutboundListeners`: an API listener named `host:port` (the name the client
 * asked for), the service's address, an HCM with RDS over ADS naming the cluster key, and the
 * `supportedFilters` (fault, then the router).
 */
export function istioOutboundListener(host: string, port: number, vip = '10.96.0.10'): Json {
  return {
    name: `${host}:${port}`,
    address: { socketAddress: { address: vip, portValue: port } },
    apiListener: {
      apiListener: {
        '@type': HCM,
        httpFilters: [
          { name: 'envoy.filters.http.fault', typedConfig: { '@type': FAULT } },
          { name: 'envoy.filters.http.router', typedConfig: { '@type': ROUTER } },
        ],
        rds: { configSource: { ads: {} }, routeConfigName: istioClusterName(host, port) },
      },
    },
  };
}

/**
 * grpcgen/rds.go `buildHTTPRoute`: the route configuration named by the cluster key, with the
 * virtual host `BuildSidecarOutboundVirtualHosts` gives a service without a VirtualService (its
 * domains: the FQDN, the short names the namespace allows, each with and without the port; the
 * default route with Istio's default retry policy, no timeout) filtered to the host asked for.
 */
export function istioOutboundRoute(host: string, port: number, ns = 'default'): Json {
  const short = host.slice(0, host.indexOf('.'));
  const names = [host, `${short}.${ns}.svc`, `${short}.${ns}`, short];
  return {
    name: istioClusterName(host, port),
    virtualHosts: [
      {
        name: `${host}:${port}`,
        domains: names.flatMap((n) => [n, `${n}:${port}`]),
        routes: [
          {
            name: 'default',
            match: { prefix: '/' },
            route: {
              cluster: istioClusterName(host, port),
              timeout: '0s',
              retryPolicy: {
                retryOn: 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes',
                numRetries: 2,
                retryHostPredicate: [{ name: 'envoy.retry_host_predicates.previous_hosts' }],
                hostSelectionRetryMaxAttempts: '5',
                retriableStatusCodes: [503],
              },
              maxGrpcTimeout: '0s',
            },
          },
        ],
        includeRequestAttemptCount: true,
      },
    ],
  };
}

/** grpcgen/cds.go `buildUpstreamTLSContext(sans)`: `buildCommonTLSContext` with exact SAN matchers. */
export function istioUpstreamTlsSocket(sans: readonly string[]): Json {
  const common = istioCommonTlsContext() as { combinedValidationContext: { defaultValidationContext: Json } };
  common.combinedValidationContext.defaultValidationContext = {
    matchSubjectAltNames: sans.map((s) => ({ exact: s })),
    ...common.combinedValidationContext.defaultValidationContext,
  };
  return {
    name: 'envoy.transport_sockets.tls',
    typedConfig: { '@type': UPSTREAM_TLS, commonTlsContext: common },
  };
}

/**
 * grpcgen/cds.go `edsCluster` with its TLS: `ISTIO_MUTUAL` is `applyTLS` (a `transport_socket`);
 * `AUTO` is Istio's auto-mTLS as the cluster builder writes it
 * (pilot/pkg/networking/core/cluster_tls.go `applyUpstreamTLSSettings`: the socket moved into a
 * `tlsMode-istio` match on `{tlsMode: istio}`, then `defaultTransportSocketMatch()`,
 * `tlsMode-disabled` with an empty match and raw_buffer). grpcgen's own `applyTLS` leaves
 * auto-mTLS out ("for now, we leave mTLS *off* by default"), so `AUTO` is the sidecar shape.
 */
export function istioCluster(
  host: string,
  port: number,
  tls: { mode: 'ISTIO_MUTUAL' | 'AUTO' | 'DISABLE'; sans: readonly string[] },
): Json {
  const name = istioClusterName(host, port);
  const cluster: Json = {
    name,
    altStatName: `${name}_`,
    type: 'EDS',
    edsClusterConfig: { serviceName: name, edsConfig: { ads: {} } },
  };
  if (tls.mode === 'ISTIO_MUTUAL') cluster.transportSocket = istioUpstreamTlsSocket(tls.sans);
  else if (tls.mode === 'AUTO')
    cluster.transportSocketMatches = [
      {
        name: 'tlsMode-istio',
        match: { tlsMode: 'istio' },
        transportSocket: istioUpstreamTlsSocket(tls.sans),
      },
      {
        name: 'tlsMode-disabled',
        match: {},
        transportSocket: { name: 'envoy.transport_sockets.raw_buffer', typedConfig: { '@type': RAW_BUFFER } },
      },
    ];
  return cluster;
}

/**
 * The assignment istiod's endpoint builder gives the cluster (pilot/pkg/xds/endpoints
 * `EndpointBuilder`, `util.AppendLbEndpointMetadata`): one locality (empty, as in the sidecar
 * dumps), each endpoint HEALTHY with weight 1; an injected workload (`security.istio.io/tlsMode:
 * istio` label) carries `envoy.transport_socket_match: {tlsMode: istio}`, others nothing.
 */
export function istioLoadAssignment(
  host: string,
  port: number,
  endpoints: ReadonlyArray<{ address: string; port: number; tlsMode?: 'istio'; workload?: string }>,
): Json {
  return {
    clusterName: istioClusterName(host, port),
    endpoints: [
      {
        locality: {},
        lbEndpoints: endpoints.map((e) => {
          const filterMetadata: Json = {};
          if (e.tlsMode !== undefined)
            filterMetadata['envoy.transport_socket_match'] = { tlsMode: e.tlsMode };
          if (e.workload !== undefined) filterMetadata.istio = { workload: e.workload };
          return {
            endpoint: { address: { socketAddress: { address: e.address, portValue: e.port } } },
            healthStatus: 'HEALTHY',
            metadata: { filterMetadata },
            loadBalancingWeight: 1,
          };
        }),
        loadBalancingWeight: endpoints.length,
      },
    ],
  };
}
