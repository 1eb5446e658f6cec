import {
  type EndpointState,
  isDraining,
  isServing,
  type Mesh,
  type ServiceRuntime,
  type ServiceSnapshot,
} from '@meshlet/core';
import {
  type AdminStats,
  type Denial,
  EP_CONNECT_FAILURE,
  EP_FAILURE,
  IN_CLIENT_ERROR,
  IN_DENIED,
  IN_SERVER_ERROR,
  SUB_WINDOW_SECONDS,
  SVC_ERROR,
  type WindowSummary,
} from './admin-stats.js';
import type { ServiceStats } from './metrics.js';

/** What the admin server reads from telemetry (kept narrow to avoid a module cycle). */
export interface AdminSource {
  scrape(): Promise<{ contentType: string; body: string }>;
  readonly metrics: { stats(service: string): ServiceStats | undefined } | undefined;
  /** Recent latencies, outcomes, rates and inbound routes (undefined: none recorded). */
  readonly adminStats?: AdminStats | undefined;
}

/**
 * An endpoint's state as the admin page shows it, worst first:
 * - `ejected`: outlier detection took it out of rotation;
 * - `unhealthy`: active health checks fail, or discovery says so;
 * - `failing`: at least half of its attempts in the last minute failed by the pipeline's verdict
 *   (local failures such as refused connections, resets and the mesh's timeouts; gateway errors),
 *   although nothing took it out of rotation yet;
 * - `draining`: discovery says it is terminating;
 * - `degraded`: discovery says so, 5 % or more of its recent attempts failed, or it asked to be
 *   avoided (429/503 with Retry-After);
 * - `healthy`: recent attempts succeed, or active health checks pass;
 * - `idle`: nothing to go by: no attempts in the last minute, no active health check (discovery's
 *   word alone — a static list says every endpoint is healthy — is not evidence).
 */
export type EndpointVerdict =
  | 'ejected'
  | 'unhealthy'
  | 'failing'
  | 'draining'
  | 'degraded'
  | 'healthy'
  | 'idle';

/**
 * A service's state: `down` (no endpoints, none usable, or the breaker open: requests fail),
 * `degraded` (some endpoints bad, panic mode, a half-open breaker, stale discovery, or 5 % or more
 * of recent requests failed), `healthy`, `idle` (nothing observed in the last minute) or
 * `waiting` (discovery has not answered yet).
 */
export type ServiceVerdict = 'down' | 'degraded' | 'waiting' | 'healthy' | 'idle';

/** The share of failed attempts that makes an endpoint `failing`, and `degraded`. */
export const FAILING_RATIO = 0.5;
export const DEGRADED_RATIO = 0.05;
/** The length of the window recent counts and quantiles cover, at most (two sub-windows). */
export const WINDOW_SECONDS = 2 * SUB_WINDOW_SECONDS;

export interface RecentLatency {
  /** Records in the window (the last 30 to 60 s). */
  count: number;
  /** Median and 99th percentile in ms (±4.9 %), null when nothing was recorded. */
  p50Ms: number | null;
  p99Ms: number | null;
}

export interface ClusterEndpoint {
  id: string;
  /** The instance's name when discovery knows it (pod, xDS hostname, config `name`). */
  name: string | undefined;
  address: string;
  port: number;
  weight: number;
  priority: number;
  zone: string;
  state: EndpointVerdict;
  /** Why, in words, most important first. */
  reasons: string[];
  discoveryHealth: string;
  activeHealth: string;
  ejected: boolean;
  ejectionCount: number;
  active: number;
  ewmaMs: number;
  /** Since the endpoint joined. */
  attempts: number;
  failures: number;
  /** What the endpoint last reported about its load (ORCA); null when it never did. */
  load: EndpointLoadView | null;
  /** Its adaptive concurrency limit; null without a limiter (or before its first attempt). */
  concurrency: EndpointLimitView | null;
  recent: RecentLatency & {
    failures: number;
    connectFailures: number;
    lastFailure: { outcome: string; reason: string; at: string } | null;
    lastSuccess: string | null;
  };
}

export interface EndpointLoadView {
  /** `application_utilization`, else `cpu_utilization` (what weights use), 0..1 (may exceed 1). */
  utilization: number;
  rps: number;
  eps: number;
  /** The client_side_weighted_round_robin weight from the reports; 0: none usable (yet). */
  weight: number;
  /** Milliseconds since the last report. */
  ageMs: number;
  reports: number;
  /** The report's named metrics (`in_flight`, `event_loop_delay_p99_ms`, the application's). */
  namedMetrics: Record<string, number>;
}

export interface EndpointLimitView {
  limit: number;
  inFlight: number;
  /** The measured (or fixed) minRTT, ms; null until measured. */
  minRttMs: number | null;
  /** The latest window's sampleRTT, ms; null until a window closed. */
  sampleRttMs: number | null;
  measuring: boolean;
  refused: number;
}

export interface ClusterService {
  name: string;
  lb: string;
  health: ServiceVerdict;
  reasons: string[];
  panic: boolean;
  /** `off` when the service has no circuit breaker. */
  breaker: 'closed' | 'open' | 'half_open' | 'off';
  /** As in `snapshot()`, and `stale`: the last discovery attempt failed, the endpoints are the last good ones. */
  discovery: ServiceSnapshot['discovery'] & { stale: boolean };
  endpointCounts: { total: number; healthy: number; byState: Record<EndpointVerdict, number> };
  /** Cumulative counters since the mesh started (undefined with metrics off or before any request). */
  stats: ServiceStats | undefined;
  /** Logical requests (after retries) in the window. */
  recent: RecentLatency & { errors: number };
  /** Requests and failed requests per second, the last 59 complete seconds, oldest first. */
  rate: { requests: number[]; errors: number[] };
  endpoints: ClusterEndpoint[];
}

export interface InboundRoute {
  /** The framework's route template (gRPC: the method path), `(no route)` or `(other routes)`. */
  route: string;
  transport: string;
  /** Since the admin server started. */
  total: number;
  denied: number;
  recent: RecentLatency & { denied: number; clientErrors: number; serverErrors: number };
}

export interface InboundView {
  /** False when nothing records inbound requests (telemetry off, or no server adapter reports). */
  recorded: boolean;
  total: number;
  denied: number;
  /** Requests and denials per second, the last 59 complete seconds, oldest first. */
  rate: { requests: number[]; denied: number[] };
  routes: InboundRoute[];
  /** The last requests refused by authorization, newest first. */
  denials: Denial[];
}

export type ServingState = 'serving' | 'not_ready' | 'draining' | 'closed';

/** The `/clusters` document: what the admin page shows. */
export interface ClustersDocument {
  time: number;
  /** `isServing(mesh)`: ready and not draining (what `/ready` answers). */
  ready: boolean;
  serving: ServingState;
  /** The worst service state, and the services that are not healthy/idle. */
  health: { state: ServiceVerdict | 'empty'; problems: string[] };
  windowSeconds: number;
  services: ClusterService[];
  inbound: InboundView;
}

function ms(v: number | undefined): number | null {
  return v === undefined ? null : Math.round(v * 1000) / 1000;
}

function iso(t: number | undefined): string | undefined {
  return t === undefined ? undefined : new Date(t).toISOString();
}

function seconds(msLeft: number): string {
  return msLeft >= 10_000 ? `${Math.round(msLeft / 1000)}s` : `${(msLeft / 1000).toFixed(1)}s`;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

const EMPTY: WindowSummary = { count: 0, p50: undefined, p99: undefined, kinds: [0, 0, 0] };

function endpointView(
  st: EndpointState,
  now: number,
  wall: number,
  stats: AdminStats | undefined,
): ClusterEndpoint {
  const ep = st.endpoint;
  const w = stats?.endpoint(st);
  const sum = w?.window.summary() ?? EMPTY;
  const failures = (sum.kinds[EP_FAILURE] ?? 0) + (sum.kinds[EP_CONNECT_FAILURE] ?? 0);
  const connect = sum.kinds[EP_CONNECT_FAILURE] ?? 0;
  const attempts = sum.count;
  const ratio = attempts === 0 ? 0 : failures / attempts;
  const reasons: string[] = [];
  let state: EndpointVerdict;
  const failed = (): string => {
    let text = `${failures} of ${plural(attempts, 'attempt')} in the last minute failed`;
    if (connect > 0) text += ` (${connect} could not connect)`;
    return text;
  };
  if (st.isEjected(now)) {
    state = 'ejected';
    reasons.push(
      `ejected by outlier detection for ${seconds(st.ejectedUntil - now)} more (ejection ${st.ejectionCount})`,
    );
  } else if (st.activeHealth === 'unhealthy') {
    state = 'unhealthy';
    reasons.push('active health checks fail');
  } else if (st.unreachable > 0) {
    state = 'unhealthy';
    reasons.push('its connection fails (a gRPC subchannel in TRANSIENT_FAILURE)');
  } else if (ep.health === 'unhealthy') {
    state = 'unhealthy';
    reasons.push('discovery reports it unhealthy');
  } else if (attempts > 0 && ratio >= FAILING_RATIO) {
    state = 'failing';
    reasons.push(failed());
  } else if (ep.health === 'draining') {
    state = 'draining';
    reasons.push('discovery reports it draining (terminating)');
  } else if (ep.health === 'degraded') {
    state = 'degraded';
    reasons.push('discovery reports it degraded');
  } else if (attempts > 0 && ratio >= DEGRADED_RATIO) {
    state = 'degraded';
    reasons.push(failed());
  } else if (st.penaltyUntil > now) {
    state = 'degraded';
    reasons.push(`asked to be avoided (429/503 with Retry-After) for ${seconds(st.penaltyUntil - now)} more`);
  } else if (attempts > 0) {
    state = 'healthy';
    reasons.push(
      failures === 0
        ? `${plural(attempts, 'attempt')} in the last minute, none failed`
        : `${failures} of ${plural(attempts, 'attempt')} in the last minute failed`,
    );
  } else if (st.activeHealth === 'healthy') {
    state = 'healthy';
    reasons.push('active health checks pass');
  } else {
    state = 'idle';
    reasons.push('no attempts in the last minute and no active health check');
  }
  // Secondary facts, after the verdict's own reason.
  if (state !== 'failing' && state !== 'degraded' && state !== 'healthy' && failures > 0)
    reasons.push(failed());
  if (st.activeHealth === 'unhealthy' && state !== 'unhealthy') reasons.push('active health checks fail');
  if (st.activeHealth === 'healthy' && state !== 'healthy') reasons.push('active health checks pass');
  const last = w?.lastFailure;
  if (
    last !== undefined &&
    (state === 'failing' || state === 'ejected' || state === 'degraded') &&
    wall - last.at < WINDOW_SECONDS * 1000
  )
    reasons.push(`last failure: ${last.reason}`);
  return {
    id: st.id,
    name: ep.name,
    address: ep.address,
    port: ep.port,
    weight: ep.weight,
    priority: ep.priority,
    zone: ep.locality.zone,
    state,
    reasons,
    discoveryHealth: ep.health,
    activeHealth: st.activeHealth,
    ejected: st.isEjected(now),
    ejectionCount: st.ejectionCount,
    active: st.active,
    ewmaMs: Math.round(st.ewmaMs * 1000) / 1000,
    attempts: st.attempts,
    failures: st.failures,
    load: loadView(st, now),
    concurrency: limitView(st),
    recent: {
      count: attempts,
      p50Ms: ms(sum.p50),
      p99Ms: ms(sum.p99),
      failures,
      connectFailures: connect,
      lastFailure:
        last === undefined
          ? null
          : { outcome: last.outcome, reason: last.reason, at: new Date(last.at).toISOString() },
      lastSuccess: w?.lastSuccessAt === undefined ? null : new Date(w.lastSuccessAt).toISOString(),
    },
  };
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;
const orNull = (x: number) => (Number.isFinite(x) ? round3(x) : null);

function loadView(st: EndpointState, now: number): EndpointLoadView | null {
  const l = st.load;
  const r = l?.report;
  if (l === undefined || r === undefined) return null;
  return {
    utilization: r.applicationUtilization > 0 ? r.applicationUtilization : r.cpuUtilization,
    rps: r.rpsFractional,
    eps: r.eps,
    weight: round3(l.weight),
    ageMs: Math.max(0, Math.round(now - l.reportedAt)),
    reports: l.reports,
    namedMetrics: { ...r.namedMetrics },
  };
}

function limitView(st: EndpointState): EndpointLimitView | null {
  const c = st.concurrency;
  if (c === undefined) return null;
  return {
    limit: c.limit,
    inFlight: c.inFlight,
    minRttMs: orNull(c.minRttMs),
    sampleRttMs: orNull(c.sampleRttMs),
    measuring: c.measuring,
    refused: c.refused,
  };
}

/** Endpoint states that still serve traffic well enough to count as healthy in a service's total. */
const OK_STATES: ReadonlySet<EndpointVerdict> = new Set(['healthy', 'idle', 'degraded']);

function serviceView(rt: ServiceRuntime, source: AdminSource, now: number, wall: number): ClusterService {
  const d = rt.discovery;
  const stats = source.adminStats;
  const endpoints = rt.endpoints.map((st) => endpointView(st, now, wall, stats));
  const byState: Record<EndpointVerdict, number> = {
    ejected: 0,
    unhealthy: 0,
    failing: 0,
    draining: 0,
    degraded: 0,
    healthy: 0,
    idle: 0,
  };
  let ok = 0;
  for (const e of endpoints) {
    byState[e.state]++;
    if (OK_STATES.has(e.state)) ok++;
  }
  const total = endpoints.length;
  const breaker = rt.resilience.breaker?.state ?? 'off';
  const sw = stats?.service(rt.name);
  const sum = sw?.window.summary() ?? EMPTY;
  const errors = sum.kinds[SVC_ERROR] ?? 0;
  const rate = sw?.rate.series();
  const stale = d.lastErrorAt !== undefined && (d.lastUpdate === undefined || d.lastErrorAt > d.lastUpdate);

  const down: string[] = [];
  const degraded: string[] = [];
  if (d.hasData && total === 0) {
    down.push(d.lastError ? `no endpoints (discovery: ${d.lastError})` : 'discovery reports no endpoints');
  } else if (!d.hasData && d.errors > 0) {
    down.push(`discovery fails and no endpoints are known: ${d.lastError ?? 'unknown error'}`);
  } else {
    const bad = (['ejected', 'unhealthy', 'failing', 'draining'] as const)
      .filter((s) => byState[s] > 0)
      .map((s) => `${byState[s]} ${s}`)
      .join(', ');
    if (total > 0 && ok === 0) down.push(`no healthy endpoint (${bad})`);
    else if (ok < total) degraded.push(`${total - ok} of ${plural(total, 'endpoint')} not healthy (${bad})`);
    if (ok > 0 && byState.degraded > 0)
      degraded.push(`${byState.degraded} of ${plural(total, 'endpoint')} degraded`);
  }
  if (breaker === 'open') down.push('circuit breaker open: requests fail fast');
  if (breaker === 'half_open') degraded.push('circuit breaker half-open: one probe request at a time');
  if (rt.panic) degraded.push('panic mode: too few healthy endpoints, balancing over all of them');
  if (stale && d.hasData)
    degraded.push(
      `discovery failing since ${iso(d.lastErrorAt)}: ${d.lastError}; using the last good endpoints`,
    );
  if (sum.count > 0 && errors / sum.count >= DEGRADED_RATIO)
    degraded.push(`${errors} of ${plural(sum.count, 'request')} in the last minute failed`);

  let health: ServiceVerdict;
  let reasons: string[];
  if (!d.hasData && d.errors === 0) {
    health = 'waiting';
    reasons = ['waiting for the first discovery answer'];
  } else if (down.length > 0) {
    health = 'down';
    reasons = [...down, ...degraded];
  } else if (degraded.length > 0) {
    health = 'degraded';
    reasons = degraded;
  } else if (byState.healthy > 0 || sum.count > 0) {
    health = 'healthy';
    reasons =
      sum.count > 0
        ? [`${plural(sum.count, 'request')} in the last minute, ${errors} failed`]
        : [`${plural(byState.healthy, 'healthy endpoint')}`];
  } else {
    health = 'idle';
    reasons = ['no requests in the last minute'];
  }
  return {
    name: rt.name,
    lb: rt.policy.lb.policy,
    health,
    reasons,
    panic: rt.panic,
    breaker,
    discovery: {
      type: d.type,
      hasData: d.hasData,
      version: d.version,
      lastUpdate: iso(d.lastUpdate),
      lastError: d.lastError,
      lastErrorAt: iso(d.lastErrorAt),
      updates: d.updates,
      errors: d.errors,
      stale,
    },
    endpointCounts: { total, healthy: ok, byState },
    stats: (() => {
      const s = source.metrics?.stats(rt.name);
      return s === undefined ? undefined : { ...s };
    })(),
    recent: { count: sum.count, p50Ms: ms(sum.p50), p99Ms: ms(sum.p99), errors },
    rate: { requests: rate?.a ?? [], errors: rate?.b ?? [] },
    endpoints,
  };
}

function inboundView(stats: AdminStats | undefined): InboundView {
  if (stats === undefined)
    return {
      recorded: false,
      total: 0,
      denied: 0,
      rate: { requests: [], denied: [] },
      routes: [],
      denials: [],
    };
  const routes: InboundRoute[] = [];
  for (const [route, w] of stats.routes()) {
    const s = w.window.summary();
    routes.push({
      route,
      transport: w.transport,
      total: w.total,
      denied: w.denied,
      recent: {
        count: s.count,
        p50Ms: ms(s.p50),
        p99Ms: ms(s.p99),
        denied: s.kinds[IN_DENIED] ?? 0,
        clientErrors: s.kinds[IN_CLIENT_ERROR] ?? 0,
        serverErrors: s.kinds[IN_SERVER_ERROR] ?? 0,
      },
    });
  }
  routes.sort((a, b) => b.total - a.total || (a.route < b.route ? -1 : 1));
  const rate = stats.inboundRate.series();
  return {
    recorded: true,
    total: stats.inboundTotal,
    denied: stats.inboundDenied,
    rate: { requests: rate.a, denied: rate.b },
    routes,
    denials: stats.denials(),
  };
}

/** `serving` (ready, not draining), `draining`, `not_ready` or `closed`. */
export function servingState(mesh: Mesh): ServingState {
  if (mesh.closed) return 'closed';
  if (isServing(mesh)) return 'serving';
  return isDraining(mesh) ? 'draining' : 'not_ready';
}

const RANK: Record<ServiceVerdict, number> = { down: 4, degraded: 3, waiting: 2, healthy: 1, idle: 0 };

/** The `/clusters` document: every service with its health and why, endpoints, latency, inbound. */
export function clusters(mesh: Mesh, source: AdminSource): ClustersDocument {
  const now = mesh.now();
  const wall = Date.now();
  const services = mesh.services().map((rt) => serviceView(rt, source, now, wall));
  let worst: ServiceVerdict | 'empty' = 'empty';
  const problems: string[] = [];
  for (const s of services) {
    if (worst === 'empty' || RANK[s.health] > RANK[worst]) worst = s.health;
    if (s.health === 'down' || s.health === 'degraded' || s.health === 'waiting')
      problems.push(`${s.name}: ${s.health} (${s.reasons[0] ?? ''})`);
  }
  const serving = servingState(mesh);
  return {
    time: wall,
    ready: serving === 'serving',
    serving,
    health: { state: worst, problems },
    windowSeconds: WINDOW_SECONDS,
    services,
    inbound: inboundView(source.adminStats),
  };
}

/**
 * The same verdicts, compact, for `snapshot().extensions.admin` (and so `/config_dump`): per service
 * its health and reasons, breaker, recent latency, and per endpoint its name, state and reasons.
 */
export function healthSnapshot(doc: ClustersDocument): Record<string, unknown> {
  const services: Record<string, unknown> = {};
  for (const s of doc.services) {
    const endpoints: Record<string, unknown> = {};
    for (const e of s.endpoints) {
      endpoints[e.id] = {
        name: e.name,
        state: e.state,
        reasons: e.reasons,
        recent: {
          attempts: e.recent.count,
          failures: e.recent.failures,
          p50Ms: e.recent.p50Ms,
          p99Ms: e.recent.p99Ms,
        },
      };
    }
    services[s.name] = {
      health: s.health,
      reasons: s.reasons,
      breaker: s.breaker,
      panic: s.panic,
      recent: {
        requests: s.recent.count,
        errors: s.recent.errors,
        p50Ms: s.recent.p50Ms,
        p99Ms: s.recent.p99Ms,
      },
      endpoints,
    };
  }
  return {
    serving: doc.serving,
    health: doc.health,
    windowSeconds: doc.windowSeconds,
    services,
    inbound: { recorded: doc.inbound.recorded, total: doc.inbound.total, denied: doc.inbound.denied },
  };
}
