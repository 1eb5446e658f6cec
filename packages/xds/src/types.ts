import type { Endpoint, LbSelection, OutlierPolicy, UpstreamSecurity } from '@meshlet/core';
import type { RbacConfig } from './rbac.js';
import type { SafeRegex } from './regex.js';

/** A compiled header matcher of a route (Envoy `HeaderMatcher`). */
export interface HeaderMatch {
  /** Lower-case header name. */
  readonly name: string;
  readonly kind: 'exact' | 'prefix' | 'suffix' | 'contains' | 'regex' | 'present' | 'range';
  readonly value: string;
  readonly regex: SafeRegex | undefined;
  readonly range: { readonly start: number; readonly end: number } | undefined;
  /** For `present`: whether the header must be present (true) or absent (false). */
  readonly present: boolean;
  readonly invert: boolean;
  readonly ignoreCase: boolean;
}

export interface RouteMatch {
  readonly pathKind: 'prefix' | 'path' | 'regex';
  /** The prefix/path (lower-cased when not case sensitive). */
  readonly path: string;
  readonly regex: SafeRegex | undefined;
  readonly caseSensitive: boolean;
  readonly headers: readonly HeaderMatch[];
  /** `runtime_fraction` as parts per million of requests (undefined: all requests). */
  readonly fractionPpm: number | undefined;
}

export interface WeightedCluster {
  readonly name: string;
  readonly weight: number;
}

export interface RouteRetry {
  readonly retryOn: readonly string[];
  readonly numRetries: number;
  readonly retriableStatusCodes: readonly number[];
  readonly perTryTimeoutMs: number | undefined;
  readonly backoffBaseMs: number | undefined;
  readonly backoffMaxMs: number | undefined;
}

export type HashPolicy =
  | { readonly kind: 'header'; readonly name: string; readonly terminal: boolean }
  | { readonly kind: 'cookie'; readonly name: string; readonly terminal: boolean }
  | { readonly kind: 'sourceIp'; readonly terminal: boolean };

export interface FaultPolicy {
  /** Fixed delay in ms and the share of requests delayed, in ppm. */
  readonly delayMs: number;
  readonly delayPpm: number;
  /** HTTP status of an aborted request (or undefined) and the share aborted, in ppm. */
  readonly abortStatus: number | undefined;
  readonly abortGrpcStatus: number | undefined;
  readonly abortPpm: number;
}

export interface XdsRoute {
  readonly name: string;
  readonly match: RouteMatch;
  /** `cluster`: forward to one of `clusters`; `nonForwarding`: not for clients (fails the request). */
  readonly action: 'cluster' | 'nonForwarding' | 'unsupported';
  readonly clusters: readonly WeightedCluster[];
  readonly totalWeight: number;
  /** Route timeout in ms (0 disables; undefined: cluster/mesh default). */
  readonly timeoutMs: number | undefined;
  /** `max_stream_duration.max_stream_duration`, which gRPC applies as a deadline cap. */
  readonly maxStreamDurationMs: number | undefined;
  readonly retry: RouteRetry | undefined;
  readonly hashPolicy: readonly HashPolicy[];
  readonly fault: FaultPolicy | undefined;
  /** RBAC filter overrides (`RBACPerRoute`) by filter name, the route's over its virtual host's; servers only. */
  readonly rbac?: Readonly<Record<string, RbacConfig>>;
}

export interface VirtualHost {
  readonly name: string;
  readonly domains: readonly string[];
  readonly routes: readonly XdsRoute[];
}

export interface RouteConfigUpdate {
  readonly name: string;
  readonly virtualHosts: readonly VirtualHost[];
}

export interface ListenerUpdate {
  readonly name: string;
  /** The RDS name when routes come over RDS. */
  readonly rdsName: string | undefined;
  /** The inline route configuration otherwise. */
  readonly routeConfig: RouteConfigUpdate | undefined;
  /** HCM-level `common_http_protocol_options.max_stream_duration`. */
  readonly maxStreamDurationMs: number | undefined;
  /** The HTTP filter chain, by filter type (`fault`, `router`, …); fault applies only when present. */
  readonly httpFilters: readonly string[];
  /** Listener-level fault config (the fault filter's own `typed_config`). */
  readonly fault: FaultPolicy | undefined;
}

export interface CircuitBreakers {
  readonly maxConnections: number | undefined;
  readonly maxPendingRequests: number | undefined;
  readonly maxRequests: number | undefined;
  readonly maxRetries: number | undefined;
}

export interface OutlierDetection {
  readonly consecutive5xx: number | undefined;
  readonly consecutiveGatewayFailure: number | undefined;
  readonly intervalMs: number | undefined;
  readonly baseEjectionTimeMs: number | undefined;
  readonly maxEjectionPercent: number | undefined;
  readonly successRateMinimumHosts: number | undefined;
  readonly successRateStdevFactor: number | undefined;
  readonly failurePercentageThreshold: number | undefined;
}

export interface ClusterUpdate {
  readonly name: string;
  readonly kind: 'eds' | 'logical_dns' | 'static' | 'aggregate';
  /** The EDS resource to watch (`eds_cluster_config.service_name` or the cluster name). */
  readonly edsServiceName: string | undefined;
  /** Endpoints given inline (`STATIC`, `LOGICAL_DNS`'s `load_assignment`). */
  readonly endpoints: readonly Endpoint[] | undefined;
  /** Child clusters of an aggregate cluster, in priority order. */
  readonly children: readonly string[];
  readonly lb: LbSelection;
  readonly circuitBreakers: CircuitBreakers | undefined;
  readonly outlierDetection: OutlierDetection | undefined;
  /** The same as meshlet's outlier-detection policy (undefined: off, as in Envoy when the field is absent). */
  readonly outlierPolicy: OutlierPolicy | undefined;
  /** The first SPIFFE ID (or trust domain) the UpstreamTlsContext's SAN matchers accept, for display. */
  readonly identity: string | undefined;
  /** Some hop of the cluster is TLS. */
  readonly tls: boolean;
  readonly sni: string | undefined;
  /**
   * `transport_socket` / `transport_socket_matches` (gRFC A29): per endpoint TLS or plaintext,
   * certificate-provider instances, SAN matchers. Undefined when the cluster names no socket.
   */
  readonly security: UpstreamSecurity | undefined;
  /** `lrs_server` is set (`self`): load reports for this cluster go to the ADS server. */
  readonly lrs: boolean;
  readonly connectTimeoutMs: number | undefined;
}

export interface DropOverload {
  readonly category: string;
  readonly ppm: number;
}

export interface EndpointsUpdate {
  readonly name: string;
  /** Every endpoint, in order: the concatenation of `segments` (built on first read by the incremental path). */
  readonly endpoints: readonly Endpoint[];
  /**
   * The endpoints of each `LocalityLbEndpoints` that is not dropped, in order (unix pipes left
   * out). The incremental translation reuses a locality's array, the very same object, while its
   * bytes do not change: the runtime then skips it (`DiscoveryUpdate.segments`).
   */
  readonly segments: readonly (readonly Endpoint[])[];
  readonly dropOverloads: readonly DropOverload[];
}
