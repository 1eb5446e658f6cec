import {
  clampTimer,
  type Endpoint,
  endpointId,
  type HealthStatus,
  isValidHost,
  type LbSelection,
  type Locality,
  loadBalancers,
  type OutlierPolicy,
  parseOutlierPolicy,
  type SanMatcher,
  type SanType,
  type TransportSocketMatch,
  type UpstreamSecurity,
  type UpstreamTls,
} from '@meshlet/core';
import {
  bool,
  durationMs,
  list,
  type Msg,
  msg,
  num,
  str,
  structToJson,
  typeOf,
  XdsDecodeError,
} from './codec.js';
import { perFilterRbac } from './rbac.js';
import { compileSafeRegex, DEFAULT_MAX_PROGRAM_SIZE, type SafeRegex } from './regex.js';
import type {
  CircuitBreakers,
  ClusterUpdate,
  DropOverload,
  EndpointsUpdate,
  FaultPolicy,
  HashPolicy,
  HeaderMatch,
  ListenerUpdate,
  OutlierDetection,
  RouteConfigUpdate,
  RouteMatch,
  RouteRetry,
  VirtualHost,
  WeightedCluster,
  XdsRoute,
} from './types.js';

const HCM = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const FAULT = 'envoy.extensions.filters.http.fault.v3.HTTPFault';
const ROUTER = 'envoy.extensions.filters.http.router.v3.Router';
const UPSTREAM_TLS = 'envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext';
const AGGREGATE = 'envoy.extensions.clusters.aggregate.v3.ClusterConfig';

function fail(field: string, message: string): never {
  throw new XdsDecodeError(field, message);
}

/** A `FractionalPercent` as parts per million. */
export function fractionPpm(v: unknown): number {
  const m = msg(v);
  if (!m) return 0;
  const n = num(m.numerator) ?? 0;
  const raw = m.denominator;
  // Numeric when read from a raw protobufjs message (HUNDRED = 0, TEN_THOUSAND = 1, MILLION = 2).
  const d =
    typeof raw === 'number'
      ? (['HUNDRED', 'TEN_THOUSAND', 'MILLION'][raw] ?? 'HUNDRED')
      : (str(raw) ?? 'HUNDRED');
  const scale = d === 'MILLION' ? 1 : d === 'TEN_THOUSAND' ? 100 : 10_000;
  return Math.min(1_000_000, n * scale);
}

// ---- LDS ---------------------------------------------------------------------------------------

function translateFault(cfg: Msg, path: string): FaultPolicy | undefined {
  const delay = msg(cfg.delay);
  const abort = msg(cfg.abort);
  if (!delay && !abort) return undefined;
  const delayMs = delay ? (durationMs(delay.fixedDelay, `${path}.delay.fixed_delay`) ?? 0) : 0;
  if (delay && delay.headerDelay !== undefined)
    fail(`${path}.delay.header_delay`, 'header-controlled delays are not supported');
  if (abort && abort.headerAbort !== undefined)
    fail(`${path}.abort.header_abort`, 'header-controlled aborts are not supported');
  const httpStatus = abort ? num(abort.httpStatus) : undefined;
  if (httpStatus !== undefined && (httpStatus < 200 || httpStatus >= 600))
    fail(`${path}.abort.http_status`, `${httpStatus} is not a valid HTTP status`);
  return Object.freeze({
    delayMs,
    delayPpm: delay ? fractionPpm(delay.percentage) : 0,
    abortStatus: httpStatus,
    abortGrpcStatus: abort ? num(abort.grpcStatus) : undefined,
    abortPpm: abort ? fractionPpm(abort.percentage) : 0,
  });
}

/**
 * Where an HttpConnectionManager's routes come from: RDS over the ADS stream (`ads` or `self`; a
 * `config_source` naming anything else is NACKed: one ADS stream per process) or an inline
 * `route_config`; scoped routes are NACKed. Clients and servers read it alike.
 */
export function hcmRouteSource(
  hcm: Msg,
  path: string,
  opts: TranslateOptions,
): { rdsName: string | undefined; routeConfig: RouteConfigUpdate | undefined } {
  let rdsName: string | undefined;
  let routeConfig: RouteConfigUpdate | undefined;
  const rds = msg(hcm.rds);
  if (rds) {
    rdsName = str(rds.routeConfigName);
    if (!rdsName) fail(`${path}.rds.route_config_name`, 'is required');
    const cs = msg(rds.configSource);
    if (cs && cs.ads === undefined && cs.self === undefined)
      fail(`${path}.rds.config_source`, 'must be ads or self (one ADS stream per process)');
  } else if (hcm.routeConfig !== undefined) {
    routeConfig = translateRouteConfig(msg(hcm.routeConfig) ?? {}, `${path}.route_config`, opts);
  } else if (hcm.scopedRoutes !== undefined) {
    fail(`${path}.scoped_routes`, 'scoped routes are not supported');
  } else {
    fail(path, 'has neither rds nor route_config');
  }
  return { rdsName, routeConfig };
}

function translateHcm(name: string, hcm: Msg, path: string, opts: TranslateOptions): ListenerUpdate {
  const { rdsName, routeConfig } = hcmRouteSource(hcm, path, opts);
  const filters: string[] = [];
  let fault: FaultPolicy | undefined;
  list(hcm.httpFilters).forEach((f, i) => {
    const t = typeOf(f.typedConfig);
    const fp = `${path}.http_filters[${i}]`;
    if (t === FAULT) {
      filters.push('fault');
      fault = translateFault(msg(f.typedConfig) ?? {}, `${fp}.typed_config`);
    } else if (t === ROUTER) {
      filters.push('router');
    } else {
      const optional = bool(f.isOptional) === true;
      filters.push(t || str(f.name) || 'unknown');
      // gRPC NACKs unknown non-optional filters on client listeners; Envoy-only filters in
      // sidecar dumps (istio.stats, cors) do not change client routing, so they are recorded only.
      void optional;
    }
  });
  const cp = msg(hcm.commonHttpProtocolOptions);
  return Object.freeze({
    name,
    rdsName,
    routeConfig,
    maxStreamDurationMs: durationMs(
      cp?.maxStreamDuration,
      `${path}.common_http_protocol_options.max_stream_duration`,
    ),
    httpFilters: Object.freeze(filters),
    fault,
  });
}

/** Translates an LDS `Listener`: an API listener (proxyless) or the first HCM of a filter chain. */
export function translateListener(m: Msg, opts: TranslateOptions = NO_OPTIONS): ListenerUpdate {
  const name = str(m.name);
  if (!name) fail('name', 'is required');
  const api = msg(msg(m.apiListener)?.apiListener);
  if (api) {
    if (typeOf(api) !== HCM)
      fail('api_listener.api_listener', `must be an HttpConnectionManager, got ${typeOf(api) || 'nothing'}`);
    return translateHcm(name, api, 'api_listener.api_listener', opts);
  }
  const chains = list(m.filterChains);
  const dfc = msg(m.defaultFilterChain);
  if (dfc) chains.push(dfc);
  for (let c = 0; c < chains.length; c++) {
    const filters = list(chains[c]?.filters);
    for (let f = 0; f < filters.length; f++) {
      const tc = msg(filters[f]?.typedConfig);
      if (tc && typeOf(tc) === HCM)
        return translateHcm(name, tc, `filter_chains[${c}].filters[${f}].typed_config`, opts);
    }
  }
  return fail('api_listener', 'has no api_listener and no HttpConnectionManager filter');
}

// ---- RDS ---------------------------------------------------------------------------------------

/** Options of a translation (from the mesh's `xds` config section). */
export interface TranslateOptions {
  /** Largest RE2 program a `safe_regex` may compile to (default 100, Envoy's). */
  readonly maxRegexProgramSize?: number | undefined;
  /**
   * The bootstrap's certificate-provider instance names: a TLS context naming another is NACKed
   * (gRFC A29). Undefined: not checked (translation without a bootstrap).
   */
  readonly certificateProviders?: ReadonlySet<string> | undefined;
  /** Whether a listener name is a server's inbound listener (the bootstrap's template; gRFC A36). */
  readonly isServerListener?: ((name: string) => boolean) | undefined;
}

const NO_OPTIONS: TranslateOptions = Object.freeze({});

/**
 * Compiles a `RegexMatcher` with RE2 semantics (linear time, RE2 syntax, full match). Its own
 * deprecated `google_re2.max_program_size` overrides the configured limit, as in Envoy.
 */
function compileRegex(re: unknown, path: string, ignoreCase: boolean, opts: TranslateOptions): SafeRegex {
  const m = msg(re);
  const text = str(m?.regex);
  if (text === undefined) fail(path, 'safe_regex needs a regex');
  const own = num(msg(msg(m?.googleRe2)?.maxProgramSize));
  try {
    return compileSafeRegex(text, {
      ignoreCase,
      maxProgramSize: own ?? opts.maxRegexProgramSize ?? DEFAULT_MAX_PROGRAM_SIZE,
    });
  } catch (err) {
    return fail(`${path}.regex`, (err as Error).message);
  }
}

type StringKind = 'exact' | 'prefix' | 'suffix' | 'contains';
/** A header matcher's deprecated string fields, and `StringMatcher`'s (one of each is set: a oneof). */
const HEADER_STRING_FIELDS: ReadonlyArray<readonly [StringKind, string]> = [
  ['exact', 'exactMatch'],
  ['prefix', 'prefixMatch'],
  ['suffix', 'suffixMatch'],
  ['contains', 'containsMatch'],
];
const STRING_MATCHER_FIELDS: ReadonlyArray<readonly [StringKind, string]> = [
  ['exact', 'exact'],
  ['prefix', 'prefix'],
  ['suffix', 'suffix'],
  ['contains', 'contains'],
];

/** The string match of `o` among `fields`, if one is set. */
function stringMatchOf(
  o: Msg,
  fields: ReadonlyArray<readonly [StringKind, string]>,
): { kind: StringKind; value: string } | undefined {
  for (const [kind, key] of fields) if (o[key] !== undefined) return { kind, value: str(o[key]) ?? '' };
  return undefined;
}

function translateHeaderMatcher(h: Msg, path: string, opts: TranslateOptions): HeaderMatch {
  const name = (str(h.name) ?? '').toLowerCase();
  if (!name) fail(`${path}.name`, 'is required');
  let kind: HeaderMatch['kind'];
  let value = '';
  let regex: SafeRegex | undefined;
  let range: HeaderMatch['range'];
  let present = true;
  let ignoreCase = false;
  const legacy = stringMatchOf(h, HEADER_STRING_FIELDS);
  if (legacy !== undefined) {
    ({ kind, value } = legacy);
  } else if (h.safeRegexMatch !== undefined) {
    kind = 'regex';
    regex = compileRegex(h.safeRegexMatch, `${path}.safe_regex_match`, false, opts);
  } else if (h.rangeMatch !== undefined) {
    kind = 'range';
    const r = msg(h.rangeMatch) ?? {};
    range = { start: num(r.start) ?? 0, end: num(r.end) ?? 0 };
  } else if (h.presentMatch !== undefined) {
    kind = 'present';
    present = h.presentMatch === true;
  } else if (h.stringMatch !== undefined) {
    const sm = msg(h.stringMatch) ?? {};
    ignoreCase = sm.ignoreCase === true;
    const m = stringMatchOf(sm, STRING_MATCHER_FIELDS);
    if (m !== undefined) {
      ({ kind, value } = m);
    } else if (sm.safeRegex !== undefined) {
      kind = 'regex';
      regex = compileRegex(sm.safeRegex, `${path}.string_match.safe_regex`, ignoreCase, opts);
    } else {
      return fail(`${path}.string_match`, 'has no match type');
    }
    if (ignoreCase) value = value.toLowerCase();
  } else {
    // No match specifier: Envoy treats it as "present".
    kind = 'present';
  }
  return Object.freeze({
    name,
    kind,
    value,
    regex,
    range,
    present,
    invert: h.invertMatch === true,
    ignoreCase,
  });
}

function translateMatch(m: Msg, path: string, opts: TranslateOptions): RouteMatch | undefined {
  const caseSensitive = bool(m.caseSensitive) ?? true;
  let pathKind: RouteMatch['pathKind'];
  let p = '';
  let regex: SafeRegex | undefined;
  if (m.prefix !== undefined) {
    pathKind = 'prefix';
    p = str(m.prefix) ?? '';
  } else if (m.path !== undefined) {
    pathKind = 'path';
    p = str(m.path) ?? '';
  } else if (m.safeRegex !== undefined) {
    pathKind = 'regex';
    regex = compileRegex(m.safeRegex, `${path}.safe_regex`, !caseSensitive, opts);
  } else if (m.pathSeparatedPrefix !== undefined) {
    pathKind = 'prefix';
    p = str(m.pathSeparatedPrefix) ?? '';
  } else if (m.connectMatcher !== undefined || m.pathMatchPolicy !== undefined) {
    return undefined; // never matches a client request (gRPC semantics)
  } else {
    return fail(path, 'has no path specifier (prefix, path or safe_regex)');
  }
  if (!caseSensitive) p = p.toLowerCase();
  // gRPC: a route with query-parameter matchers never matches.
  if (list(m.queryParameters).length > 0) return undefined;
  const rf = msg(m.runtimeFraction);
  return Object.freeze({
    pathKind,
    path: p,
    regex,
    caseSensitive,
    headers: Object.freeze(
      list(m.headers).map((h, i) => translateHeaderMatcher(h, `${path}.headers[${i}]`, opts)),
    ),
    fractionPpm: rf ? fractionPpm(rf.defaultValue) : undefined,
  });
}

function translateRetry(r: Msg, path: string): RouteRetry {
  const retryOn = (str(r.retryOn) ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const numRetries = num(r.numRetries) ?? 1;
  const bo = msg(r.retryBackOff);
  const base = bo ? durationMs(bo.baseInterval, `${path}.retry_back_off.base_interval`) : undefined;
  if (bo && (base === undefined || base <= 0)) fail(`${path}.retry_back_off.base_interval`, 'must be > 0');
  const max = bo
    ? (durationMs(bo.maxInterval, `${path}.retry_back_off.max_interval`) ?? clampTimer((base as number) * 10))
    : undefined;
  if (base !== undefined && max !== undefined && max < base)
    fail(`${path}.retry_back_off.max_interval`, 'must be >= base_interval');
  return Object.freeze({
    retryOn: Object.freeze(retryOn),
    numRetries,
    retriableStatusCodes: Object.freeze(
      (Array.isArray(r.retriableStatusCodes) ? r.retriableStatusCodes : []).map(Number),
    ),
    perTryTimeoutMs: durationMs(r.perTryTimeout, `${path}.per_try_timeout`),
    backoffBaseMs: base,
    backoffMaxMs: max,
  });
}

function translateHashPolicy(list_: Msg[], path: string): HashPolicy[] {
  const out: HashPolicy[] = [];
  list_.forEach((h, i) => {
    const terminal = h.terminal === true;
    const hdr = msg(h.header);
    if (hdr) {
      const name = str(hdr.headerName);
      if (!name) fail(`${path}[${i}].header.header_name`, 'is required');
      out.push({ kind: 'header', name: name.toLowerCase(), terminal });
    } else if (msg(h.cookie)) {
      out.push({ kind: 'cookie', name: str(msg(h.cookie)?.name) ?? '', terminal });
    } else if (msg(h.connectionProperties)?.sourceIp === true) {
      out.push({ kind: 'sourceIp', terminal });
    }
    // filter_state (gRPC's io.grpc.channel_id) and query parameters: not supported, ignored.
  });
  return out;
}

function perFilterFault(cfg: unknown, path: string): FaultPolicy | undefined {
  const m = msg(cfg);
  if (!m) return undefined;
  for (const [k, v] of Object.entries(m)) {
    let inner = msg(v);
    // FilterConfig wrapper ({ config: Any, is_optional })
    if (inner && typeOf(inner) === 'envoy.config.route.v3.FilterConfig') inner = msg(inner.config);
    if (inner && typeOf(inner) === FAULT) return translateFault(inner, `${path}.${k}`);
  }
  return undefined;
}

function translateRoute(
  r: Msg,
  path: string,
  vhFault: FaultPolicy | undefined,
  opts: TranslateOptions,
): XdsRoute | undefined {
  const match = translateMatch(msg(r.match) ?? {}, `${path}.match`, opts);
  if (!match) return undefined;
  const ra = msg(r.route);
  const fault = perFilterFault(r.typedPerFilterConfig, `${path}.typed_per_filter_config`) ?? vhFault;
  const name = str(r.name) ?? '';
  if (!ra) {
    return Object.freeze({
      name,
      match,
      action: r.nonForwardingAction !== undefined ? 'nonForwarding' : 'unsupported',
      clusters: [],
      totalWeight: 0,
      timeoutMs: undefined,
      maxStreamDurationMs: undefined,
      retry: undefined,
      hashPolicy: [],
      fault,
    });
  }
  let clusters: WeightedCluster[];
  if (ra.cluster !== undefined) {
    const c = str(ra.cluster);
    if (!c) fail(`${path}.route.cluster`, 'must not be empty');
    clusters = [{ name: c, weight: 1 }];
  } else if (ra.weightedClusters !== undefined) {
    const wc = msg(ra.weightedClusters) ?? {};
    clusters = list(wc.clusters).map((c, i) => {
      const n = str(c.name);
      if (!n) fail(`${path}.route.weighted_clusters.clusters[${i}].name`, 'is required');
      return { name: n, weight: num(c.weight) ?? 0 };
    });
    if (clusters.length === 0) fail(`${path}.route.weighted_clusters.clusters`, 'must not be empty');
  } else if (ra.clusterSpecifierPlugin !== undefined || ra.clusterHeader !== undefined) {
    return Object.freeze({
      name,
      match,
      action: 'unsupported',
      clusters: [],
      totalWeight: 0,
      timeoutMs: undefined,
      maxStreamDurationMs: undefined,
      retry: undefined,
      hashPolicy: [],
      fault,
    });
  } else {
    return fail(`${path}.route`, 'has no cluster specifier');
  }
  const total = clusters.reduce((a, c) => a + c.weight, 0);
  if (total <= 0) fail(`${path}.route.weighted_clusters`, 'total weight must be > 0');
  if (total > 0xffffffff) fail(`${path}.route.weighted_clusters`, 'total weight exceeds uint32');
  const msd = msg(ra.maxStreamDuration);
  const rp = msg(ra.retryPolicy);
  return Object.freeze({
    name,
    match,
    action: 'cluster',
    clusters: Object.freeze(clusters),
    totalWeight: total,
    timeoutMs: durationMs(ra.timeout, `${path}.route.timeout`),
    maxStreamDurationMs:
      durationMs(msd?.grpcTimeoutHeaderMax, `${path}.route.max_stream_duration.grpc_timeout_header_max`) ??
      durationMs(msd?.maxStreamDuration, `${path}.route.max_stream_duration.max_stream_duration`),
    retry: rp ? translateRetry(rp, `${path}.route.retry_policy`) : undefined,
    hashPolicy: Object.freeze(translateHashPolicy(list(ra.hashPolicy), `${path}.route.hash_policy`)),
    fault,
  });
}

/** Translates an RDS `RouteConfiguration` (or an HCM's inline `route_config`). */
export function translateRouteConfig(
  m: Msg,
  base = '',
  opts: TranslateOptions = NO_OPTIONS,
): RouteConfigUpdate {
  const name = str(m.name) ?? '';
  const pre = base ? `${base}.` : '';
  const virtualHosts: VirtualHost[] = list(m.virtualHosts).map((vh, v) => {
    const vp = `${pre}virtual_hosts[${v}]`;
    const domains = (Array.isArray(vh.domains) ? vh.domains : []).map(String);
    if (domains.length === 0) fail(`${vp}.domains`, 'must not be empty');
    const vhFault = perFilterFault(vh.typedPerFilterConfig, `${vp}.typed_per_filter_config`);
    const vhRbac = perFilterRbac(vh.typedPerFilterConfig, `${vp}.typed_per_filter_config`, undefined, opts);
    const vhRetry = msg(vh.retryPolicy);
    const routes: XdsRoute[] = [];
    list(vh.routes).forEach((r, i) => {
      let route = translateRoute(r, `${vp}.routes[${i}]`, vhFault, opts);
      if (!route) return;
      // A virtual host's retry policy applies to routes without their own.
      if (route.retry === undefined && vhRetry && route.action === 'cluster')
        route = Object.freeze({ ...route, retry: translateRetry(vhRetry, `${vp}.retry_policy`) });
      // RBAC overrides (RBACPerRoute, gRFC A41), the route's over its virtual host's.
      const rbac = perFilterRbac(
        r.typedPerFilterConfig,
        `${vp}.routes[${i}].typed_per_filter_config`,
        vhRbac,
        opts,
      );
      routes.push(rbac === undefined ? route : Object.freeze({ ...route, rbac }));
    });
    return Object.freeze({
      name: str(vh.name) ?? '',
      domains: Object.freeze(domains.map((d) => d.toLowerCase())),
      routes: Object.freeze(routes),
    });
  });
  return Object.freeze({ name, virtualHosts: Object.freeze(virtualHosts) });
}

// ---- CDS ---------------------------------------------------------------------------------------

const LB_ENUM: Record<string, string> = {
  ROUND_ROBIN: 'round_robin',
  LEAST_REQUEST: 'least_request',
  RING_HASH: 'ring_hash',
  MAGLEV: 'maglev',
  RANDOM: 'random',
};

function lbSelection(policy: string, options: Record<string, unknown>, path: string): LbSelection {
  const factory = loadBalancers.get(policy);
  if (!factory) fail(path, `load-balancing policy "${policy}" is not registered in this process`);
  const issues: { path: string; message: string }[] = [];
  const config = factory.parseConfig(options, path, issues);
  if (issues.length > 0) fail(path, issues.map((i) => `${i.path}: ${i.message}`).join('; '));
  return Object.freeze({ policy, config });
}

/** Maps one typed LB policy to a meshlet policy, or undefined when this client does not know it. */
function typedLb(cfg: Msg, path: string): LbSelection | undefined {
  const t = typeOf(cfg);
  const has = (n: string) => loadBalancers.get(n) !== undefined;
  switch (t) {
    case 'envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin':
      return has('round_robin') ? lbSelection('round_robin', {}, path) : undefined;
    case 'envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest': {
      if (!has('least_request')) return undefined;
      const cc = num(cfg.choiceCount);
      return lbSelection('least_request', cc === undefined ? {} : { choiceCount: cc }, path);
    }
    case 'envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash': {
      if (!has('ring_hash')) return undefined;
      const o: Record<string, unknown> = {};
      const min = num(cfg.minimumRingSize);
      const max = num(cfg.maximumRingSize);
      if (min !== undefined) o.minRingSize = min;
      if (max !== undefined) o.maxRingSize = max;
      return lbSelection('ring_hash', o, path);
    }
    case 'envoy.extensions.load_balancing_policies.maglev.v3.Maglev': {
      if (!has('maglev')) return undefined;
      const ts = num(cfg.tableSize);
      return lbSelection('maglev', ts === undefined ? {} : { tableSize: ts }, path);
    }
    case 'envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin': {
      if (!has('client_side_weighted_round_robin')) return undefined;
      // gRFC A58 / Envoy's fields, one for one (metric_names_for_computing_utilization has no
      // meshlet counterpart: meshlet servers always send application_utilization).
      const o: Record<string, unknown> = {};
      const oob = bool(cfg.enableOobLoadReport);
      if (oob !== undefined) o.enableOobLoadReport = oob;
      const periods = [
        ['oobReportingPeriod', 'oob_reporting_period'],
        ['blackoutPeriod', 'blackout_period'],
        ['weightExpirationPeriod', 'weight_expiration_period'],
        ['weightUpdatePeriod', 'weight_update_period'],
      ] as const;
      for (const [key, field] of periods) {
        const ms = durationMs(cfg[key], `${path}.${field}`);
        if (ms !== undefined) o[key] = ms;
      }
      const penalty = num(cfg.errorUtilizationPenalty);
      if (penalty !== undefined) o.errorUtilizationPenalty = penalty;
      return lbSelection('client_side_weighted_round_robin', o, path);
    }
    case 'envoy.extensions.load_balancing_policies.wrr_locality.v3.WrrLocality':
      return typedLbList(msg(cfg.endpointPickingPolicy) ?? {}, `${path}.endpoint_picking_policy`);
    case 'xds.type.v3.TypedStruct':
    case 'udpa.type.v1.TypedStruct': {
      // Custom policies (gRFC A52): `type_url` names a meshlet policy (…/meshlet.lb.peak_ewma).
      const url = str(cfg.typeUrl) ?? '';
      const name = url.slice(url.lastIndexOf('/') + 1).replace(/^meshlet\.lb\./, '');
      return has(name) ? lbSelection(name, structToJson(cfg.value), path) : undefined;
    }
    default:
      return undefined;
  }
}

function typedLbList(policy: Msg, path: string): LbSelection | undefined {
  const policies = list(policy.policies);
  for (let i = 0; i < policies.length; i++) {
    const cfg = msg(msg(policies[i]?.typedExtensionConfig)?.typedConfig);
    if (!cfg) continue;
    const sel = typedLb(cfg, `${path}.policies[${i}]`);
    if (sel) return sel;
  }
  return undefined;
}

function clusterLb(m: Msg): LbSelection {
  const typed = msg(m.loadBalancingPolicy);
  if (typed) {
    const sel = typedLbList(typed, 'load_balancing_policy');
    if (!sel) fail('load_balancing_policy', 'names no load-balancing policy this client supports');
    return sel;
  }
  const e = str(m.lbPolicy) ?? 'ROUND_ROBIN';
  const policy = LB_ENUM[e];
  if (!policy) fail('lb_policy', `${e} is not supported`);
  const o: Record<string, unknown> = {};
  if (policy === 'least_request') {
    const cc = num(msg(m.leastRequestLbConfig)?.choiceCount);
    if (cc !== undefined) o.choiceCount = cc;
  } else if (policy === 'ring_hash') {
    const rh = msg(m.ringHashLbConfig);
    const min = num(rh?.minimumRingSize);
    const max = num(rh?.maximumRingSize);
    if (min !== undefined) o.minRingSize = min;
    if (max !== undefined) o.maxRingSize = max;
    if (rh?.hashFunction !== undefined && rh.hashFunction !== 'XX_HASH')
      fail('ring_hash_lb_config.hash_function', 'only XX_HASH is supported (as in gRPC)');
  } else if (policy === 'maglev') {
    const ts = num(msg(m.maglevLbConfig)?.tableSize);
    if (ts !== undefined) o.tableSize = ts;
  }
  return lbSelection(policy, o, 'lb_policy');
}

function circuitBreakers(m: Msg): CircuitBreakers | undefined {
  const cb = msg(m.circuitBreakers);
  if (!cb) return undefined;
  const th = list(cb.thresholds).find((t) => (str(t.priority) ?? 'DEFAULT') === 'DEFAULT');
  if (!th) return undefined;
  return Object.freeze({
    maxConnections: num(th.maxConnections),
    maxPendingRequests: num(th.maxPendingRequests),
    maxRequests: num(th.maxRequests),
    maxRetries: num(th.maxRetries),
  });
}

/** Validates the outlier detection against meshlet's policy and converts it (NACK on bad values). */
function outlierPolicy(od: OutlierDetection | undefined): OutlierPolicy | undefined {
  if (!od) return undefined;
  const raw: Record<string, unknown> = {};
  const ms = (v: number | undefined) => (v === undefined ? undefined : `${Math.round(v)}ms`);
  const put = (k: string, v: unknown) => {
    if (v !== undefined) raw[k] = v;
  };
  // A count of 0 disables that detector (Envoy); gateway-failure enforcement defaults to 0 in Envoy.
  if (od.consecutive5xx === 0) put('enforcingConsecutive5xx', 0);
  else put('consecutive5xx', od.consecutive5xx);
  put('enforcingConsecutiveGatewayFailure', 0);
  if (od.consecutiveGatewayFailure !== 0) put('consecutiveGatewayFailure', od.consecutiveGatewayFailure);
  put('interval', ms(od.intervalMs));
  put('baseEjectionTime', ms(od.baseEjectionTimeMs));
  put('maxEjectionPercent', od.maxEjectionPercent);
  put('successRateMinimumHosts', od.successRateMinimumHosts);
  put('successRateStdevFactor', od.successRateStdevFactor);
  put('failurePercentageThreshold', od.failurePercentageThreshold);
  const issues: { path: string; message: string }[] = [];
  const p = parseOutlierPolicy(raw, 'outlier_detection', issues, undefined);
  if (issues.length > 0) fail('outlier_detection', issues.map((i) => `${i.path}: ${i.message}`).join('; '));
  return p;
}

function outlierDetection(m: Msg): OutlierDetection | undefined {
  const o = msg(m.outlierDetection);
  if (!o) return undefined;
  const pct = num(o.maxEjectionPercent);
  if (pct !== undefined && pct > 100) fail('outlier_detection.max_ejection_percent', 'must be <= 100');
  return Object.freeze({
    consecutive5xx: num(o.consecutive_5xx) ?? num(o.consecutive5xx),
    consecutiveGatewayFailure: num(o.consecutiveGatewayFailure),
    intervalMs: durationMs(o.interval, 'outlier_detection.interval'),
    baseEjectionTimeMs: durationMs(o.baseEjectionTime, 'outlier_detection.base_ejection_time'),
    maxEjectionPercent: pct,
    successRateMinimumHosts: num(o.successRateMinimumHosts),
    successRateStdevFactor: num(o.successRateStdevFactor),
    failurePercentageThreshold: num(o.failurePercentageThreshold),
  });
}

const RAW_BUFFER = 'envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer';
const SAN_TYPES: Record<string, SanType | undefined> = {
  EMAIL: 'EMAIL',
  DNS: 'DNS',
  URI: 'URI',
  IP_ADDRESS: 'IP_ADDRESS',
  1: 'EMAIL',
  2: 'DNS',
  3: 'URI',
  4: 'IP_ADDRESS',
};

/** A `StringMatcher` applied to SANs (A29: exact, prefix, suffix, contains, safe_regex). */
function sanMatcher(sm: Msg, path: string, sanType: SanType | undefined, opts: TranslateOptions): SanMatcher {
  const ignoreCase = sm.ignoreCase === true;
  const m = stringMatchOf(sm, STRING_MATCHER_FIELDS);
  if (m !== undefined)
    return Object.freeze({
      kind: m.kind,
      value: ignoreCase ? m.value.toLowerCase() : m.value,
      regex: undefined,
      ignoreCase,
      sanType,
    });
  if (sm.safeRegex !== undefined) {
    const regex = compileRegex(sm.safeRegex, `${path}.safe_regex`, ignoreCase, opts);
    return Object.freeze({ kind: 'regex', value: regex.source, regex, ignoreCase: false, sanType });
  }
  return fail(path, 'has no match pattern (exact, prefix, suffix, contains or safe_regex)');
}

/** The instance name of a (current or deprecated) certificate provider instance message. */
function instanceOf(v: unknown, path: string, opts: TranslateOptions): string | undefined {
  const m = msg(v);
  if (!m) return undefined;
  const name = str(m.instanceName) ?? '';
  if (name === '') fail(`${path}.instance_name`, 'is required');
  if (opts.certificateProviders !== undefined && !opts.certificateProviders.has(name))
    fail(
      `${path}.instance_name`,
      `certificate provider instance "${name}" is not in the bootstrap's certificate_providers${
        opts.certificateProviders.size > 0
          ? ` (it has ${[...opts.certificateProviders].join(', ')})`
          : ' (it has none)'
      }`,
    );
  return name;
}

/** The certificate-provider instances and validation context of a `CommonTlsContext` (gRFC A29). */
export interface CommonTlsInstances {
  /** The identity (certificate and key) instance, current or deprecated field. */
  readonly identityInstance: string | undefined;
  /** The trust-bundle instance, current or deprecated field. */
  readonly rootInstance: string | undefined;
  /** The validation context (`validation_context` or the combined one's default), if any. */
  readonly validation: Msg | undefined;
  /** The path of `validation` in errors. */
  readonly validationPath: string;
}

/**
 * A `CommonTlsContext` as gRFC A29 reads it on both sides: certificates from bootstrap
 * certificate-provider instances (the current `CertificateProviderPluginInstance` fields or the
 * deprecated ones istiod still sends). What would weaken security if ignored, or what meshlet
 * cannot do (SDS, inline certificates, TLS parameters, custom handshakers or validators, pinned
 * hashes, CRLs), is NACKed naming the field. Which instances are required is the caller's.
 */
export function commonTlsContext(ctc: Msg, cp: string, opts: TranslateOptions): CommonTlsInstances {
  if (ctc.tlsParams !== undefined) fail(`${cp}.tls_params`, 'is not supported (gRFC A29)');
  if (ctc.customHandshaker !== undefined) fail(`${cp}.custom_handshaker`, 'is not supported (gRFC A29)');
  if (ctc.tlsCertificateCertificateProvider !== undefined)
    fail(
      `${cp}.tls_certificate_certificate_provider`,
      'is not supported: use tls_certificate_provider_instance',
    );
  const identityInstance =
    instanceOf(ctc.tlsCertificateProviderInstance, `${cp}.tls_certificate_provider_instance`, opts) ??
    instanceOf(
      ctc.tlsCertificateCertificateProviderInstance,
      `${cp}.tls_certificate_certificate_provider_instance`,
      opts,
    );
  if (identityInstance === undefined) {
    if (list(ctc.tlsCertificates).length > 0)
      fail(
        `${cp}.tls_certificates`,
        'inline certificates are not supported: use tls_certificate_provider_instance',
      );
    if (list(ctc.tlsCertificateSdsSecretConfigs).length > 0)
      fail(
        `${cp}.tls_certificate_sds_secret_configs`,
        'SDS is not supported: use tls_certificate_provider_instance',
      );
  }
  if (ctc.validationContextSdsSecretConfig !== undefined)
    fail(`${cp}.validation_context_sds_secret_config`, 'SDS is not supported (gRFC A29)');
  if (ctc.validationContextCertificateProvider !== undefined)
    fail(
      `${cp}.validation_context_certificate_provider`,
      'is not supported: use ca_certificate_provider_instance',
    );
  const combined = msg(ctc.combinedValidationContext);
  let vc: Msg | undefined;
  let vp: string;
  if (combined) {
    vp = `${cp}.combined_validation_context`;
    if (combined.validationContextSdsSecretConfig !== undefined)
      fail(`${vp}.validation_context_sds_secret_config`, 'SDS is not supported (gRFC A29)');
    if (combined.validationContextCertificateProvider !== undefined)
      fail(
        `${vp}.validation_context_certificate_provider`,
        'is not supported: use ca_certificate_provider_instance',
      );
    vc = msg(combined.defaultValidationContext);
    vp = `${vp}.default_validation_context`;
  } else {
    vc = msg(ctc.validationContext);
    vp = `${cp}.validation_context`;
  }
  const deprecatedRoot =
    instanceOf(
      combined?.validationContextCertificateProviderInstance,
      `${cp}.combined_validation_context.validation_context_certificate_provider_instance`,
      opts,
    ) ??
    instanceOf(
      ctc.validationContextCertificateProviderInstance,
      `${cp}.validation_context_certificate_provider_instance`,
      opts,
    );
  const v = vc ?? {};
  if (Array.isArray(v.verifyCertificateSpki) && v.verifyCertificateSpki.length > 0)
    fail(`${vp}.verify_certificate_spki`, 'is not supported (gRFC A29)');
  if (Array.isArray(v.verifyCertificateHash) && v.verifyCertificateHash.length > 0)
    fail(`${vp}.verify_certificate_hash`, 'is not supported (gRFC A29)');
  if (bool(v.requireSignedCertificateTimestamp) === true)
    fail(`${vp}.require_signed_certificate_timestamp`, 'is not supported (gRFC A29)');
  if (v.crl !== undefined) fail(`${vp}.crl`, 'is not supported (gRFC A29)');
  if (v.customValidatorConfig !== undefined)
    fail(`${vp}.custom_validator_config`, 'is not supported (gRFC A29)');
  const rootInstance =
    instanceOf(v.caCertificateProviderInstance, `${vp}.ca_certificate_provider_instance`, opts) ??
    deprecatedRoot;
  return { identityInstance, rootInstance, validation: vc, validationPath: vp };
}

/**
 * An `UpstreamTlsContext` as gRFC A29 reads it: the common context's instances (a trust bundle is
 * required: a TLS cluster must verify its servers), server authorization by SAN matchers.
 */
function translateUpstreamTls(tc: Msg, path: string, opts: TranslateOptions): UpstreamTls {
  const ctc = msg(tc.commonTlsContext);
  if (!ctc) return fail(`${path}.common_tls_context`, 'is required (gRFC A29)');
  const cp = `${path}.common_tls_context`;
  const { identityInstance, rootInstance, validation, validationPath: vp } = commonTlsContext(ctc, cp, opts);
  if (!validation && rootInstance === undefined)
    fail(`${cp}`, 'has no validation context: a TLS cluster must verify its servers (gRFC A29)');
  if (rootInstance === undefined)
    fail(
      `${vp}.ca_certificate_provider_instance`,
      'is required: the CA certificates that verify the server (gRFC A29)',
    );
  const v = validation ?? {};
  const sanMatchers: SanMatcher[] = [];
  list(v.matchSubjectAltNames).forEach((sm, i) => {
    sanMatchers.push(sanMatcher(sm, `${vp}.match_subject_alt_names[${i}]`, undefined, opts));
  });
  list(v.matchTypedSubjectAltNames).forEach((t, i) => {
    const tp = `${vp}.match_typed_subject_alt_names[${i}]`;
    const raw = t.sanType;
    const sanType = SAN_TYPES[String(raw)];
    if (sanType === undefined)
      fail(
        `${tp}.san_type`,
        `${String(raw ?? 'SAN_TYPE_UNSPECIFIED')} is not supported (EMAIL, DNS, URI, IP_ADDRESS)`,
      );
    sanMatchers.push(sanMatcher(msg(t.matcher) ?? {}, `${tp}.matcher`, sanType, opts));
  });
  return Object.freeze({
    identityInstance,
    rootInstance,
    sanMatchers: Object.freeze(sanMatchers),
    sni: str(tc.sni) || undefined,
  });
}

/** A transport socket: an UpstreamTlsContext (TLS) or a raw_buffer (plaintext); anything else is NACKed. */
function transportSocket(ts: Msg, path: string, opts: TranslateOptions): UpstreamTls | undefined {
  const tc = msg(ts.typedConfig);
  const t = typeOf(tc);
  if (t === UPSTREAM_TLS) return translateUpstreamTls(tc as Msg, `${path}.typed_config`, opts);
  if (t === RAW_BUFFER || (!tc && str(ts.name) === 'envoy.transport_sockets.raw_buffer')) return undefined;
  return fail(
    `${path}.typed_config`,
    `unsupported transport socket ${t || str(ts.name) || '(none)'} (UpstreamTlsContext or raw_buffer)`,
  );
}

/**
 * The cluster's transport security: `transport_socket` and `transport_socket_matches` (Istio's
 * auto-mTLS: `{ tlsMode: istio }` endpoints get the TLS socket, the rest a raw_buffer one).
 * Undefined when the cluster names neither (the mesh's own settings apply).
 */
function upstreamSecurity(m: Msg, opts: TranslateOptions): UpstreamSecurity | undefined {
  const ts = msg(m.transportSocket);
  const tsm = list(m.transportSocketMatches);
  if (!ts && tsm.length === 0) return undefined;
  const matches: TransportSocketMatch[] = tsm.map((x, i) => {
    const p = `transport_socket_matches[${i}]`;
    const match: Record<string, string> = {};
    for (const [k, val] of Object.entries(structToJson(x.match))) {
      if (typeof val !== 'string' && typeof val !== 'number' && typeof val !== 'boolean')
        fail(`${p}.match.${k}`, 'must be a string, number or boolean');
      match[k] = String(val);
    }
    const sock = msg(x.transportSocket);
    if (!sock) fail(`${p}.transport_socket`, 'is required');
    return Object.freeze({
      name: str(x.name) ?? '',
      match: Object.freeze(match),
      tls: transportSocket(sock, `${p}.transport_socket`, opts),
    });
  });
  return Object.freeze({
    matches: Object.freeze(matches),
    tls: ts ? transportSocket(ts, 'transport_socket', opts) : undefined,
  });
}

/** The first exact SPIFFE ID (or trust domain of a `spiffe://td/` prefix) the TLS accepts, for display. */
function identityOf(sec: UpstreamSecurity | undefined): string | undefined {
  const all = [sec?.tls, ...(sec?.matches.map((x) => x.tls) ?? [])];
  for (const t of all) {
    for (const sm of t?.sanMatchers ?? []) {
      if (sm.kind === 'exact' && sm.value.startsWith('spiffe://')) return sm.value;
      if (sm.kind === 'prefix' && sm.value.startsWith('spiffe://')) {
        const td = sm.value.slice('spiffe://'.length).split('/')[0];
        if (td) return `spiffe://${td}`;
      }
    }
  }
  return undefined;
}

/** Translates a CDS `Cluster`. LB policy names must be registered in `@meshlet/core`'s registry. */
export function translateCluster(m: Msg, opts: TranslateOptions = NO_OPTIONS): ClusterUpdate {
  const name = str(m.name);
  if (!name) fail('name', 'is required');
  let kind: ClusterUpdate['kind'];
  let edsServiceName: string | undefined;
  let endpoints: Endpoint[] | undefined;
  let children: string[] = [];
  const ct = msg(m.clusterType);
  if (ct) {
    const cfg = msg(ct.typedConfig);
    if (typeOf(cfg) !== AGGREGATE) fail('cluster_type', `unsupported custom cluster type ${typeOf(cfg)}`);
    kind = 'aggregate';
    children = (Array.isArray(cfg?.clusters) ? cfg.clusters : []).map(String);
    if (children.length === 0) fail('cluster_type.typed_config.clusters', 'must not be empty');
  } else {
    const t = str(m.type) ?? 'STATIC';
    if (t === 'EDS') {
      kind = 'eds';
      const ec = msg(m.edsClusterConfig);
      const cs = msg(ec?.edsConfig);
      if (cs && cs.ads === undefined && cs.self === undefined)
        fail('eds_cluster_config.eds_config', 'must be ads or self');
      edsServiceName = str(ec?.serviceName) || name;
    } else if (t === 'STATIC' || t === 'STRICT_DNS' || t === 'LOGICAL_DNS') {
      kind = t === 'STATIC' ? 'static' : 'logical_dns';
      const la = msg(m.loadAssignment);
      if (!la) fail('load_assignment', `is required for a ${t} cluster`);
      endpoints = [...translateEndpoints({ ...la, clusterName: name }, 'load_assignment').endpoints];
      if (t === 'LOGICAL_DNS' && endpoints.length !== 1)
        fail('load_assignment', 'a LOGICAL_DNS cluster needs exactly one endpoint');
    } else {
      return fail('type', `${t} clusters are not supported`);
    }
  }
  const security = upstreamSecurity(m, opts);
  const tlsAny =
    security !== undefined && (security.tls !== undefined || security.matches.some((x) => x.tls));
  const lrs = msg(m.lrsServer);
  if (lrs && lrs.self === undefined)
    fail('lrs_server', 'must be self (load reports go to the ADS server; gRPC accepts nothing else)');
  const od = outlierDetection(m);
  return Object.freeze({
    name,
    kind,
    edsServiceName,
    endpoints: endpoints && Object.freeze(endpoints),
    children: Object.freeze(children),
    lb: clusterLb(m),
    circuitBreakers: circuitBreakers(m),
    outlierDetection: od,
    outlierPolicy: outlierPolicy(od),
    identity: identityOf(security),
    tls: tlsAny,
    sni: security?.tls?.sni,
    security,
    lrs: lrs !== undefined,
    connectTimeoutMs: durationMs(m.connectTimeout, 'connect_timeout'),
  });
}

// ---- EDS ---------------------------------------------------------------------------------------

const HEALTH: Record<string, HealthStatus> = {
  UNKNOWN: 'unknown',
  HEALTHY: 'healthy',
  UNHEALTHY: 'unhealthy',
  DRAINING: 'draining',
  TIMEOUT: 'unhealthy',
  DEGRADED: 'degraded',
};
/** `HealthStatus` enum numbers (raw protobufjs messages). */
export const HEALTH_BY_NUMBER: readonly HealthStatus[] = [
  'unknown',
  'healthy',
  'unhealthy',
  'draining',
  'unhealthy',
  'degraded',
];
export const NO_METADATA: Readonly<Record<string, string>> = Object.freeze({});

function flatMetadata(md: unknown): Readonly<Record<string, string>> {
  const fm = msg(msg(md)?.filterMetadata);
  if (!fm) return NO_METADATA;
  let any = false;
  for (const _k in fm) {
    any = true;
    break;
  }
  if (!any) return NO_METADATA;
  const out: Record<string, string> = {};
  for (const [ns, s] of Object.entries(fm)) {
    for (const [k, v] of Object.entries(structToJson(s))) {
      if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean')
        out[`${ns}/${k}`] = String(v);
    }
  }
  return out;
}

/** What the LbEndpoints of one `LocalityLbEndpoints` share. */
export interface LocalityFrame {
  readonly locality: Locality;
  /**
   * The locality's `load_balancing_weight` (undefined when absent), carried on each endpoint as
   * `localityWeight`: the core splits a priority's traffic across localities by it (gRPC's
   * weighted_target), then balances within a locality by endpoint weight.
   */
  readonly locWeight: number | undefined;
  readonly priority: number;
}

/** Scratch output of `translateLbEndpoint`: the endpoint's own `load_balancing_weight`. */
export const lbEndpointOut = { ownWeight: 1 };

/**
 * Translates one decoded `LbEndpoint` of a locality (`lp` is the locality's field path, `e` the
 * endpoint's index, for errors). Returns undefined for a unix pipe (a remote client cannot dial it).
 * Sets `lbEndpointOut.ownWeight`. The endpoint carries its own weight and its locality's weight.
 */
export function translateLbEndpoint(
  lbe: Msg,
  frame: LocalityFrame,
  lp: string,
  e: number,
): Endpoint | undefined {
  const ep = msg(lbe.endpoint);
  const sa = msg(msg(ep?.address)?.socketAddress);
  if (!sa) {
    if (msg(msg(ep?.address)?.pipe)) return undefined;
    fail(`${lp}.lb_endpoints[${e}].endpoint.address`, 'needs a socket_address');
  }
  const address = str(sa.address);
  const port = num(sa.portValue);
  if (!address) fail(`${lp}.lb_endpoints[${e}].endpoint.address.socket_address.address`, 'is required');
  // gRPC takes IP literals only; host names are accepted too (LOGICAL_DNS clusters, and mesh files
  // served by meshlet's control plane name hosts), anything else is refused before a pool sees it.
  if (!isValidHost(address))
    fail(
      `${lp}.lb_endpoints[${e}].endpoint.address.socket_address.address`,
      `${JSON.stringify(address)} is not an IP address or a host name`,
    );
  if (port === undefined || port < 1 || port > 65535)
    fail(`${lp}.lb_endpoints[${e}].endpoint.address.socket_address.port_value`, 'must be 1-65535');
  const w = num(lbe.loadBalancingWeight) ?? 1;
  if (w < 1) fail(`${lp}.lb_endpoints[${e}].load_balancing_weight`, 'must be >= 1');
  const hs = lbe.healthStatus;
  const health =
    typeof hs === 'number'
      ? (HEALTH_BY_NUMBER[hs] ?? 'unknown')
      : (HEALTH[str(hs) ?? 'UNKNOWN'] ?? 'unknown');
  lbEndpointOut.ownWeight = w;
  return Object.freeze({
    id: endpointId(address, port),
    address,
    port,
    weight: w,
    localityWeight: frame.locWeight,
    locality: frame.locality,
    priority: frame.priority,
    health,
    metadata: flatMetadata(lbe.metadata),
    hostname: str(ep?.hostname) || undefined,
    // Envoy's admin names a host by its `hostname` too.
    name: str(ep?.hostname) || undefined,
  });
}

/** The same endpoint in another locality frame (`ownWeight`: its own `load_balancing_weight`). */
export function reframeEndpoint(ep: Endpoint, ownWeight: number, frame: LocalityFrame): Endpoint {
  return Object.freeze({
    id: ep.id,
    address: ep.address,
    port: ep.port,
    weight: ownWeight,
    localityWeight: frame.locWeight,
    locality: frame.locality,
    priority: frame.priority,
    health: ep.health,
    metadata: ep.metadata,
    hostname: ep.hostname,
    name: ep.name,
  });
}

/** Translates a `ClusterLoadAssignment.Policy` (decoded) into its drop overloads. */
export function translateDrops(policy: unknown): readonly DropOverload[] {
  return Object.freeze(
    list(msg(policy)?.dropOverloads).map((d) => ({
      category: str(d.category) ?? '',
      ppm: fractionPpm(d.dropPercentage),
    })),
  );
}

/** Throws unless the priorities seen are contiguous from 0 (Envoy, gRPC). */
export function checkPriorities(seen: ReadonlySet<number>, path: string): void {
  let max = -1;
  for (const p of seen) if (p > max) max = p;
  for (let p = 0; p <= max; p++)
    if (!seen.has(p)) fail(path, `priority ${p} is missing (priorities must be contiguous)`);
}

/**
 * Translates an EDS `ClusterLoadAssignment` (a plain object or a raw protobufjs message). Each
 * endpoint keeps its own weight and carries its locality's weight (`localityWeight`); endpoints of
 * one locality share its frozen Locality.
 * (The xDS client translates EDS incrementally from the wire format, see eds.ts, with the same result.)
 */
export function translateEndpoints(m: Msg, base = ''): EndpointsUpdate {
  const name = str(m.clusterName);
  if (!name) fail('cluster_name', 'is required');
  const pre = base ? `${base}.` : '';
  const endpoints: Endpoint[] = [];
  const segments: (readonly Endpoint[])[] = [];
  const seenPriorities = new Set<number>();
  list(m.endpoints).forEach((lle, l) => {
    const lp = `${pre}endpoints[${l}]`;
    const locWeight = num(lle.loadBalancingWeight);
    if (locWeight === 0) return; // gRPC drops localities with weight 0
    const priority = num(lle.priority) ?? 0;
    seenPriorities.add(priority);
    const loc = msg(lle.locality) ?? {};
    const frame: LocalityFrame = {
      locality: Object.freeze({
        region: str(loc.region) ?? '',
        zone: str(loc.zone) ?? '',
        subZone: str(loc.subZone) ?? '',
      }),
      locWeight,
      priority,
    };
    const lbes = list(lle.lbEndpoints);
    const segment: Endpoint[] = [];
    for (let e = 0; e < lbes.length; e++) {
      const endpoint = translateLbEndpoint(lbes[e] as Msg, frame, lp, e);
      if (endpoint !== undefined) {
        endpoints.push(endpoint);
        segment.push(endpoint);
      }
    }
    segments.push(Object.freeze(segment));
  });
  checkPriorities(seenPriorities, `${pre}endpoints`);
  return Object.freeze({
    name,
    endpoints: Object.freeze(endpoints),
    segments: Object.freeze(segments),
    dropOverloads: translateDrops(m.policy),
  });
}
