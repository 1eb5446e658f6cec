import { type ClientSideWrrConfig, loadBalancers } from '@meshlet/core';
import {
  CDS_TYPE,
  EDS_TYPE,
  encodeMessage,
  LDS_TYPE,
  type Msg,
  RDS_TYPE,
  type ResourceType,
} from '@meshlet/xds';
import type { ControlPlaneConfig, CpHeaderMatch, CpRoute, CpService } from './config.js';
import { ISTIO_SERVER_LISTENER_TEMPLATE, inboundListeners } from './inbound.js';

const HCM =
  'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const ROUTER = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router';
const FAULT = 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault';
const UPSTREAM_TLS = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext';
const RAW_BUFFER = 'type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer';
const TYPED_STRUCT = 'type.googleapis.com/xds.type.v3.TypedStruct';
const FAULT_FILTER = 'envoy.filters.http.fault';

/** One encoded resource: its name and `Any`. */
export interface EncodedResource {
  readonly name: string;
  readonly any: { readonly typeUrl: string; readonly value: Uint8Array };
}

/** A versioned set of resources, by type then name. Immutable once built. */
export interface Snapshot {
  readonly version: string;
  readonly resources: ReadonlyMap<ResourceType, ReadonlyMap<string, EncodedResource>>;
}

/** Resources as plain objects (proto-JSON field names), by type. */
export interface ResourceSet {
  listeners?: Msg[];
  routes?: Msg[];
  clusters?: Msg[];
  endpoints?: Msg[];
}

function duration(ms: number): Msg {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

function headerMatcher(h: CpHeaderMatch): Msg {
  const out: Msg = { name: h.name, invertMatch: h.invert };
  if (h.exact !== undefined) out.stringMatch = { exact: h.exact };
  else if (h.prefix !== undefined) out.stringMatch = { prefix: h.prefix };
  else if (h.suffix !== undefined) out.stringMatch = { suffix: h.suffix };
  else if (h.contains !== undefined) out.stringMatch = { contains: h.contains };
  else if (h.regex !== undefined) out.stringMatch = { safeRegex: { regex: h.regex } };
  else out.presentMatch = h.present !== false;
  return out;
}

function percent(p: number): Msg {
  return { numerator: Math.round(p * 10_000), denominator: 'MILLION' };
}

function route(r: CpRoute, i: number): Msg {
  const match: Msg = { headers: r.match.headers.map(headerMatcher) };
  if (r.match.path !== undefined) match.path = r.match.path;
  else if (r.match.regex !== undefined) match.safeRegex = { regex: r.match.regex };
  else match.prefix = r.match.prefix ?? '/';
  if (!r.match.caseSensitive) match.caseSensitive = { value: false };
  const action: Msg =
    r.clusters.length === 1
      ? { cluster: r.clusters[0]?.name }
      : {
          weightedClusters: {
            clusters: r.clusters.map((c) => ({ name: c.name, weight: { value: c.weight } })),
          },
        };
  if (r.timeoutMs !== undefined) {
    action.timeout = duration(r.timeoutMs);
    action.maxStreamDuration = { maxStreamDuration: duration(r.timeoutMs) };
  }
  if (r.retry) {
    const rp: Msg = { retryOn: r.retry.on.join(','), numRetries: { value: r.retry.attempts } };
    if (r.retry.perTryTimeoutMs !== undefined) rp.perTryTimeout = duration(r.retry.perTryTimeoutMs);
    action.retryPolicy = rp;
  }
  if (r.hashHeaders.length > 0) action.hashPolicy = r.hashHeaders.map((h) => ({ header: { headerName: h } }));
  const out: Msg = { name: `route-${i}`, match, route: action };
  if (r.fault) {
    const f: Msg = { '@type': FAULT };
    if (r.fault.delayMs !== undefined)
      f.delay = { fixedDelay: duration(r.fault.delayMs), percentage: percent(r.fault.delayPercent) };
    if (r.fault.abortStatus !== undefined)
      f.abort = { httpStatus: r.fault.abortStatus, percentage: percent(r.fault.abortPercent) };
    out.typedPerFilterConfig = { [FAULT_FILTER]: f };
  }
  return out;
}

const CSWRR =
  'type.googleapis.com/envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin';
const ROUND_ROBIN_POLICY: Msg = {
  typedExtensionConfig: {
    name: 'envoy.load_balancing_policies.round_robin',
    typedConfig: {
      '@type': 'type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin',
    },
  },
};

const LB_ENUM: Record<string, string> = {
  round_robin: 'ROUND_ROBIN',
  least_request: 'LEAST_REQUEST',
  ring_hash: 'RING_HASH',
  maglev: 'MAGLEV',
  random: 'RANDOM',
};

function cluster(s: CpService): Msg {
  const c: Msg = {
    name: s.name,
    type: 'EDS',
    edsClusterConfig: { edsConfig: { ads: {}, resourceApiVersion: 'V3' }, serviceName: s.name },
  };
  const o = s.lb.options;
  const e = LB_ENUM[s.lb.policy];
  if (e) {
    c.lbPolicy = e;
    if (s.lb.policy === 'least_request' && typeof o.choiceCount === 'number')
      c.leastRequestLbConfig = { choiceCount: { value: o.choiceCount } };
    if (s.lb.policy === 'ring_hash') {
      const rh: Msg = {};
      if (typeof o.minRingSize === 'number') rh.minimumRingSize = { value: o.minRingSize };
      if (typeof o.maxRingSize === 'number') rh.maximumRingSize = { value: o.maxRingSize };
      c.ringHashLbConfig = rh;
    }
    if (s.lb.policy === 'maglev' && typeof o.tableSize === 'number')
      c.maglevLbConfig = { tableSize: { value: o.tableSize } };
  } else if (s.lb.policy === 'client_side_weighted_round_robin') {
    // Envoy's typed config (gRFC A58's fields), what grpc-js-xds (`weighted_round_robin`) and
    // meshlet's client both read; round robin for clients that know neither.
    const w = loadBalancers.get(s.lb.policy)?.parseConfig(o, 'lb', []) as ClientSideWrrConfig;
    c.loadBalancingPolicy = {
      policies: [
        {
          typedExtensionConfig: {
            name: 'envoy.load_balancing_policies.client_side_weighted_round_robin',
            typedConfig: {
              '@type': CSWRR,
              enableOobLoadReport: { value: w.enableOobLoadReport },
              oobReportingPeriod: duration(w.oobReportingPeriodMs),
              blackoutPeriod: duration(w.blackoutPeriodMs),
              weightExpirationPeriod: duration(w.weightExpirationPeriodMs),
              weightUpdatePeriod: duration(w.weightUpdatePeriodMs),
              errorUtilizationPenalty: { value: w.errorUtilizationPenalty },
            },
          },
        },
        ROUND_ROBIN_POLICY,
      ],
    };
  } else {
    // A meshlet policy Envoy has no enum for: a custom policy (gRFC A52), round robin as fallback.
    c.loadBalancingPolicy = {
      policies: [
        {
          typedExtensionConfig: {
            name: `meshlet.lb.${s.lb.policy}`,
            typedConfig: {
              '@type': TYPED_STRUCT,
              typeUrl: `type.googleapis.com/meshlet.lb.${s.lb.policy}`,
              value: o,
            },
          },
        },
        ROUND_ROBIN_POLICY,
      ],
    };
  }
  if (s.connectTimeoutMs !== undefined) c.connectTimeout = duration(s.connectTimeoutMs);
  if (s.circuitBreakers) {
    const th: Msg = { priority: 'DEFAULT' };
    for (const [k, v] of Object.entries(s.circuitBreakers)) th[k] = { value: v };
    c.circuitBreakers = { thresholds: [th] };
  }
  if (s.outlierDetection) {
    const od: Msg = {};
    const d = s.outlierDetection;
    if (d.consecutive5xx !== undefined) od.consecutive_5xx = { value: d.consecutive5xx };
    if (d.consecutiveGatewayFailure !== undefined)
      od.consecutiveGatewayFailure = { value: d.consecutiveGatewayFailure };
    if (d.interval !== undefined) od.interval = duration(d.interval);
    if (d.baseEjectionTime !== undefined) od.baseEjectionTime = duration(d.baseEjectionTime);
    if (d.maxEjectionPercent !== undefined) od.maxEjectionPercent = { value: d.maxEjectionPercent };
    c.outlierDetection = od;
  }
  if (s.tlsMode === 'ISTIO_MUTUAL') {
    c.transportSocket = tlsSocket(s.identity);
  } else if (s.tlsMode === 'AUTO') {
    // Istio's auto-mTLS: mTLS to endpoints labelled `tlsMode: istio`, plaintext to the rest.
    c.transportSocketMatches = [
      { name: 'tlsMode-istio', match: { tlsMode: 'istio' }, transportSocket: tlsSocket(s.identity) },
      {
        name: 'tlsMode-disabled',
        match: {},
        transportSocket: { name: 'envoy.transport_sockets.raw_buffer', typedConfig: { '@type': RAW_BUFFER } },
      },
    ];
  }
  if (s.loadReporting) c.lrsServer = { self: {} };
  return c;
}

/**
 * An UpstreamTlsContext as istiod's proxyless generator builds it (pilot/pkg/networking/grpcgen,
 * `buildCommonTLSContext`): certificates from the clients' bootstrap certificate-provider
 * instance `default` (certificate `default`, roots `ROOTCA`), in the current fields and in the
 * deprecated ones older gRPC clients read, and the service's identity as an exact SAN.
 */
function tlsSocket(identity: string | undefined): Msg {
  const id = { instanceName: 'default', certificateName: 'default' };
  const roots = { instanceName: 'default', certificateName: 'ROOTCA' };
  return {
    name: 'envoy.transport_sockets.tls',
    typedConfig: {
      '@type': UPSTREAM_TLS,
      commonTlsContext: {
        tlsCertificateProviderInstance: id,
        tlsCertificateCertificateProviderInstance: id,
        combinedValidationContext: {
          validationContextCertificateProviderInstance: roots,
          defaultValidationContext: {
            ...(identity ? { matchSubjectAltNames: [{ exact: identity }] } : {}),
            caCertificateProviderInstance: roots,
          },
        },
      },
    },
  };
}

const HEALTH: Record<string, string> = {
  healthy: 'HEALTHY',
  unknown: 'UNKNOWN',
  degraded: 'DEGRADED',
  draining: 'DRAINING',
  unhealthy: 'UNHEALTHY',
};

function loadAssignment(s: CpService): Msg {
  // One LocalityLbEndpoints per (priority, locality).
  const groups = new Map<string, Msg & { lbEndpoints: Msg[] }>();
  for (const ep of s.endpoints) {
    const key = `${ep.priority}|${ep.locality.region}|${ep.locality.zone}|${ep.locality.subZone}`;
    let g = groups.get(key);
    if (!g) {
      g = {
        locality: { region: ep.locality.region, zone: ep.locality.zone, subZone: ep.locality.subZone },
        loadBalancingWeight: { value: 1 },
        priority: ep.priority,
        lbEndpoints: [],
      };
      groups.set(key, g);
    }
    const lbe: Msg = {
      endpoint: { address: { socketAddress: { address: ep.address, portValue: ep.port } } },
      healthStatus: HEALTH[ep.health] ?? 'UNKNOWN',
      loadBalancingWeight: { value: ep.weight },
    };
    // An endpoint labelled `tlsMode` (Istio's sidecar-injected workloads carry `tlsMode: istio`)
    // says so in the metadata transport_socket_matches read.
    const tlsMode = ep.metadata?.tlsMode;
    if (tlsMode !== undefined)
      lbe.metadata = { filterMetadata: { 'envoy.transport_socket_match': { tlsMode } } };
    g.lbEndpoints.push(lbe);
  }
  return { clusterName: s.name, endpoints: [...groups.values()] };
}

/**
 * The xDS resources of a control-plane config: per service a listener, a route config, a cluster
 * and its endpoints, and the inbound listeners of its workloads' servers named by
 * `serverListenerTemplate` (istio-agent's by default).
 */
export function resourcesFromConfig(
  config: ControlPlaneConfig,
  serverListenerTemplate = ISTIO_SERVER_LISTENER_TEMPLATE,
): ResourceSet {
  const out: Required<ResourceSet> = { listeners: [], routes: [], clusters: [], endpoints: [] };
  for (const s of Object.values(config.services)) {
    out.clusters.push(cluster(s));
    out.endpoints.push(loadAssignment(s));
    if (s.inbound) out.listeners.push(...inboundListeners(s.inbound, serverListenerTemplate));
    if (!s.listener) continue;
    const hasFault = s.routes.some((r) => r.fault !== undefined);
    const filters: Msg[] = [];
    if (hasFault) filters.push({ name: FAULT_FILTER, typedConfig: { '@type': FAULT } });
    filters.push({ name: 'envoy.filters.http.router', typedConfig: { '@type': ROUTER } });
    out.listeners.push({
      name: s.name,
      apiListener: {
        apiListener: {
          '@type': HCM,
          rds: { routeConfigName: s.name, configSource: { ads: {}, resourceApiVersion: 'V3' } },
          httpFilters: filters,
        },
      },
    });
    out.routes.push({
      name: s.name,
      virtualHosts: [{ name: s.name, domains: ['*'], routes: s.routes.map(route) }],
    });
  }
  return out;
}

/** Encodes a resource set into a snapshot. Throws when a resource does not encode. */
export function buildSnapshot(set: ResourceSet, version: string): Snapshot {
  const resources = new Map<ResourceType, Map<string, EncodedResource>>();
  const add = (type: ResourceType, list: Msg[] | undefined, nameKey: string) => {
    const m = new Map<string, EncodedResource>();
    for (const r of list ?? []) {
      const name = String(r[nameKey] ?? '');
      m.set(name, { name, any: { typeUrl: type, value: encodeMessage(type, r) } });
    }
    resources.set(type, m);
  };
  add(LDS_TYPE, set.listeners, 'name');
  add(RDS_TYPE, set.routes, 'name');
  add(CDS_TYPE, set.clusters, 'name');
  add(EDS_TYPE, set.endpoints, 'clusterName');
  return { version, resources };
}
