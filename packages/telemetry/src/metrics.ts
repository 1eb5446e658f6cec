import {
  type EndpointState,
  grpcStatusName,
  type Mesh,
  type MeshEventMap,
  type Outcome,
  type RequestEvent,
  runningProcessLoad,
  type ServiceRuntime,
  type Transport,
} from '@meshlet/core';
import { allocateEndpointSlot } from '@meshlet/core/extend';
import { collectDefaultMetrics } from 'prom-client';
import type { MetricsConfig } from './config.js';
import {
  type AnyRegistry,
  type CounterFamily as CF,
  CounterFamily,
  type CounterSeries,
  GaugeFamily,
  type GaugeSeries,
  HistogramFamily,
  type HistogramSeries,
  type Labels,
  OVERFLOW_LABEL,
  registerFamily,
} from './series.js';
import { rpcMethod, type TraceStash } from './tracing.js';
import { VERSION } from './version.js';

export const OUTCOMES: readonly Outcome[] = [
  'success',
  'http_error',
  'timeout',
  'connect_failure',
  'reset',
  'circuit_open',
  'no_endpoint',
  'overloaded',
  'cancelled',
  'error',
];
/**
 * The index of an outcome in `OUTCOMES` (`error`'s for anything else). A switch, not a lookup
 * table: a keyed load by a string the request carries is a megamorphic, string-table lookup on
 * every request (~600 instructions for the two of a request), and a table built on an ordinary
 * object answers `constructor` too.
 */
export function outcomeIndex(o: string): number {
  switch (o) {
    case 'success':
      return 0;
    case 'http_error':
      return 1;
    case 'timeout':
      return 2;
    case 'connect_failure':
      return 3;
    case 'reset':
      return 4;
    case 'circuit_open':
      return 5;
    case 'no_endpoint':
      return 6;
    case 'overloaded':
      return 7;
    case 'cancelled':
      return 8;
    default:
      return 9;
  }
}

export const METHODS: readonly string[] = [
  '_OTHER',
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'DELETE',
  'CONNECT',
  'OPTIONS',
  'TRACE',
  'PATCH',
];

/** The index of an HTTP method in `METHODS` (`_OTHER`'s, 0, for any other). See `outcomeIndex`. */
export function methodIndex(m: string): number {
  switch (m) {
    case 'GET':
      return 1;
    case 'HEAD':
      return 2;
    case 'POST':
      return 3;
    case 'PUT':
      return 4;
    case 'DELETE':
      return 5;
    case 'CONNECT':
      return 6;
    case 'OPTIONS':
      return 7;
    case 'TRACE':
      return 8;
    case 'PATCH':
      return 9;
    default:
      return 0;
  }
}

/** Endpoint states reported by `meshlet_endpoints`. */
export const ENDPOINT_STATES = [
  'healthy',
  'unknown',
  'degraded',
  'draining',
  'unhealthy',
  'ejected',
] as const;

/** Envoy response flags for outcomes without a response, as Istio reports them. */
const RESPONSE_FLAGS: Readonly<Record<Outcome, string>> = {
  success: '-',
  http_error: '-',
  timeout: 'UT',
  connect_failure: 'UF',
  reset: 'UC',
  circuit_open: 'UO',
  no_endpoint: 'UH',
  overloaded: 'UO',
  cancelled: 'DC',
  error: 'UC',
};

/** Istio's standard histogram buckets for `istio_request_duration_milliseconds`. */
export const ISTIO_BUCKETS_MS: readonly number[] = [
  0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000,
  3600000,
];

const HTTP_LABELS = [
  'service',
  'http_request_method',
  'http_response_status_code',
  'status_class',
  'outcome',
];
const ATTEMPT_LABELS = ['service', 'http_response_status_code', 'status_class', 'outcome'];
/** gRPC calls (OpenTelemetry's RPC conventions: `rpc.system.name`, `rpc.method`, `rpc.status_code`). */
const RPC_LABELS = ['service', 'rpc_system_name', 'rpc_method', 'rpc_status_code', 'outcome'];
const RPC_ATTEMPT_LABELS = ['service', 'rpc_status_code', 'outcome'];
/** Distinct gRPC methods labelled per service; more are `_OTHER` (as the RPC conventions say). */
export const MAX_RPC_METHODS = 1000;
/** Slots per gRPC method: outcome × (status code 0–16, or 17: none). */
const RPC_CODES = 18;
const SERVER_LABELS = ['http_request_method', 'http_response_status_code', 'status_class', 'http_route'];
export const ISTIO_LABELS = [
  'reporter',
  'source_workload',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_canonical_service',
  'destination_workload',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_service',
  'destination_service_name',
  'destination_service_namespace',
  'destination_canonical_service',
  'request_protocol',
  'response_code',
  'grpc_response_status',
  'response_flags',
  'connection_security_policy',
];

interface Bound {
  readonly count: CounterSeries;
  readonly duration: HistogramSeries;
}

/** Counters the admin page reads (cumulative; the page derives rates). */
export interface ServiceStats {
  requests: number;
  errors: number;
  durationSumMs: number;
  retries: number;
  retriesDenied: number;
  ejections: number;
  breaker: 'closed' | 'open' | 'half_open';
}

class ServiceSeries {
  readonly name: string;
  readonly logical = new Map<number, Bound>();
  readonly attempts = new Map<number, Bound>();
  /** gRPC calls by method path, then by `outcome * RPC_CODES + code`. */
  readonly rpc = new Map<string, Array<Bound | undefined>>();
  readonly rpcAttempts: Array<Bound | undefined> = [];
  readonly istio = new Map<number, Bound>();
  /**
   * The last logical request's and attempt's series and their keys: a service's requests mostly
   * end the same way, and a hit spares a Map lookup per request (entries are never removed).
   */
  lastLogicalKey = -1;
  lastLogical: Bound | undefined = undefined;
  lastAttemptKey = -1;
  lastAttempt: Bound | undefined = undefined;
  readonly stats: ServiceStats = {
    requests: 0,
    errors: 0,
    durationSumMs: 0,
    retries: 0,
    retriesDenied: 0,
    ejections: 0,
    breaker: 'closed',
  };
  constructor(name: string) {
    this.name = name;
  }
}

interface EndpointSeries {
  readonly labels: Labels;
  readonly duration: HistogramSeries;
  readonly outcomes: Array<CounterSeries | undefined>;
}

/** Where a MeshMetrics keeps an endpoint's per-endpoint series (an array index, not a map lookup). */
const ENDPOINT_SLOT = allocateEndpointSlot();

function statusClass(status: number | undefined): string {
  if (status === undefined) return 'none';
  if (status >= 100 && status < 600) return `${Math.floor(status / 100)}xx`;
  return 'other';
}

/** `reviews.default.svc.cluster.local:8080` → name `reviews`, namespace `default`. */
function splitServiceName(service: string, fallbackNs: string): { name: string; namespace: string } {
  const host = service.replace(/:\d+$/, '');
  const parts = host.split('.');
  if (parts.length >= 3 && parts[2] === 'svc')
    return { name: parts[0] as string, namespace: parts[1] as string };
  return { name: parts[0] as string, namespace: fallbackNs };
}

/**
 * Prometheus metrics of one mesh: client request metrics (OpenTelemetry HTTP names and/or Istio's
 * names) recorded into pre-bound series from the mesh's `request`/`attempt` events, and mesh
 * internals (endpoints by state, ejections, breakers, retries, discovery) read at scrape time.
 */
export class MeshMetrics {
  readonly registry: AnyRegistry;
  readonly config: MetricsConfig;
  readonly #mesh: Mesh;
  readonly #stash: TraceStash | undefined;
  readonly #services = new Map<string, ServiceSeries>();
  #lastService: ServiceSeries | undefined = undefined;
  readonly #otel: boolean;
  readonly #istio: boolean;
  readonly #disposers: Array<() => void> = [];
  readonly #workload: string;
  readonly #namespace: string;
  readonly #mtls: boolean;

  readonly #logicalCount: CF | undefined;
  readonly #logicalDuration: HistogramFamily | undefined;
  readonly #attemptCount: CF | undefined;
  readonly #attemptDuration: HistogramFamily | undefined;
  readonly #rpcCount: CF | undefined;
  readonly #rpcDuration: HistogramFamily | undefined;
  readonly #rpcAttemptCount: CF | undefined;
  readonly #rpcAttemptDuration: HistogramFamily | undefined;
  readonly #istioCount: CF | undefined;
  readonly #istioDuration: HistogramFamily | undefined;
  readonly #serverCount: CF | undefined;
  readonly #serverDuration: HistogramFamily | undefined;
  readonly #istioServerCount: CF | undefined;
  readonly #istioServerDuration: HistogramFamily | undefined;
  readonly #epAttempts: CF | undefined;
  readonly #epDuration: HistogramFamily | undefined;
  readonly #epActive: GaugeFamily | undefined;
  readonly #epEwma: GaugeFamily | undefined;
  readonly #epUtilization: GaugeFamily | undefined;
  readonly #epRps: GaugeFamily | undefined;
  readonly #epWeight: GaugeFamily | undefined;
  readonly #epLimit: GaugeFamily | undefined;
  readonly #epRefused: CF | undefined;

  readonly #ejections: CF;
  readonly #healthChanges: CF;
  readonly #panicEntered: CF;
  readonly #breakerState: GaugeFamily;
  readonly #breakerTransitions: CF;
  readonly #retries: CF;
  readonly #retriesDenied: CF;
  readonly #budgetExhausted: CF;
  readonly #certExpiry: GaugeFamily;
  /** Inbound series by route, then by `status * 16 + methodIndex` (no key string per request). */
  readonly #serverBound = new Map<string, Map<number, Bound>>();
  /** Istio inbound series by `status * 2 + grpc` (status -1: none). */
  readonly #istioServerBound = new Map<number, Bound>();

  constructor(mesh: Mesh, registry: AnyRegistry, config: MetricsConfig, stash?: TraceStash) {
    this.#mesh = mesh;
    this.registry = registry;
    this.config = config;
    this.#stash = config.exemplars ? stash : undefined;
    this.#otel = config.naming !== 'istio';
    this.#istio = config.naming !== 'otel';
    this.#workload = mesh.config.local.workload;
    this.#namespace = mesh.config.local.namespace;
    this.#mtls = mesh.config.extensions.tls !== undefined;
    const b = config.buckets;
    const families: Array<CounterFamily | GaugeFamily | HistogramFamily> = [];
    const reg = <F extends CounterFamily | GaugeFamily | HistogramFamily>(f: F): F => {
      const family = registerFamily(registry, f);
      family.maxSeries = config.maxSeries;
      families.push(family);
      return family;
    };

    if (this.#otel) {
      this.#logicalCount = reg(
        new CounterFamily(
          'http_client_requests_total',
          'HTTP requests to mesh services, one per fetch call (retries are not counted again).',
          HTTP_LABELS,
        ),
      );
      this.#logicalDuration = reg(
        new HistogramFamily(
          'http_client_request_duration_seconds',
          'Duration of HTTP requests to mesh services as the caller sees it (retries and backoff included), in seconds.',
          HTTP_LABELS,
          b,
        ),
      );
      this.#attemptCount = reg(
        new CounterFamily(
          'meshlet_client_attempts_total',
          'Attempts sent to mesh services (the first try and every retry).',
          ATTEMPT_LABELS,
        ),
      );
      this.#attemptDuration = reg(
        new HistogramFamily(
          'meshlet_client_attempt_duration_seconds',
          'Duration of single attempts to mesh services, in seconds.',
          ATTEMPT_LABELS,
          b,
        ),
      );
      this.#rpcCount = reg(
        new CounterFamily(
          'rpc_client_calls_total',
          'gRPC calls to mesh services, one per call (retries are not counted again).',
          RPC_LABELS,
        ),
      );
      this.#rpcDuration = reg(
        new HistogramFamily(
          'rpc_client_call_duration_seconds',
          'Duration of gRPC calls to mesh services as the caller sees it (retries and backoff included), in seconds.',
          RPC_LABELS,
          b,
        ),
      );
      this.#rpcAttemptCount = reg(
        new CounterFamily(
          'meshlet_rpc_client_attempts_total',
          'Attempts of gRPC calls sent to mesh services (the first try and every retry).',
          RPC_ATTEMPT_LABELS,
        ),
      );
      this.#rpcAttemptDuration = reg(
        new HistogramFamily(
          'meshlet_rpc_client_attempt_duration_seconds',
          'Duration of single attempts of gRPC calls to mesh services, in seconds.',
          RPC_ATTEMPT_LABELS,
          b,
        ),
      );
      this.#serverCount = reg(
        new CounterFamily('http_server_requests_total', 'Inbound HTTP requests served.', SERVER_LABELS),
      );
      this.#serverDuration = reg(
        new HistogramFamily(
          'http_server_request_duration_seconds',
          'Duration of inbound HTTP requests, in seconds.',
          SERVER_LABELS,
          b,
        ),
      );
    }
    if (this.#istio) {
      this.#istioCount = reg(
        new CounterFamily('istio_requests_total', 'Requests (Istio-compatible).', ISTIO_LABELS),
      );
      this.#istioDuration = reg(
        new HistogramFamily(
          'istio_request_duration_milliseconds',
          'Request duration in milliseconds (Istio-compatible).',
          ISTIO_LABELS,
          ISTIO_BUCKETS_MS,
        ),
      );
      this.#istioServerCount = this.#istioCount;
      this.#istioServerDuration = this.#istioDuration;
    }
    if (config.perEndpoint) {
      const l = ['service', 'endpoint'];
      this.#epAttempts = reg(
        new CounterFamily('meshlet_endpoint_attempts_total', 'Attempts sent to an endpoint, by outcome.', [
          ...l,
          'outcome',
        ]),
      );
      this.#epDuration = reg(
        new HistogramFamily(
          'meshlet_endpoint_attempt_duration_seconds',
          'Attempt duration per endpoint, in seconds.',
          l,
          b,
        ),
      );
      this.#epActive = reg(
        new GaugeFamily('meshlet_endpoint_active_requests', 'Requests in flight to an endpoint.', l),
      );
      this.#epEwma = reg(
        new GaugeFamily(
          'meshlet_endpoint_latency_ewma_seconds',
          'Peak-EWMA latency estimate of an endpoint (what the balancer sees), in seconds.',
          l,
        ),
      );
      // Load awareness (docs/load-aware.md): present once an endpoint reported / was limited.
      this.#epUtilization = reg(
        new GaugeFamily(
          'meshlet_endpoint_reported_utilization',
          'The utilization an endpoint last reported (ORCA application_utilization, else cpu_utilization; 0..1, may exceed 1).',
          l,
        ),
      );
      this.#epRps = reg(
        new GaugeFamily(
          'meshlet_endpoint_reported_rps',
          'The requests per second an endpoint last reported (ORCA rps_fractional).',
          l,
        ),
      );
      this.#epWeight = reg(
        new GaugeFamily(
          'meshlet_endpoint_load_weight',
          'The weight client_side_weighted_round_robin gives an endpoint from its reports (0: none usable yet).',
          l,
        ),
      );
      this.#epLimit = reg(
        new GaugeFamily(
          'meshlet_endpoint_concurrency_limit',
          "An endpoint's adaptive concurrency limit (attempts in flight).",
          l,
        ),
      );
      this.#epRefused = reg(
        new CounterFamily(
          'meshlet_endpoint_concurrency_refused_total',
          'Attempts the adaptive concurrency limit refused an endpoint (the call went elsewhere or waited).',
          l,
        ),
      );
    }
    // The process' own load as its servers report it (present once a server counts requests).
    const serverLoad = reg(
      new GaugeFamily(
        'meshlet_server_load',
        "This process' load as its servers report it (ORCA), by figure: event_loop_utilization, cpu_utilization, event_loop_delay_p99_seconds, rps, in_flight.",
        ['figure'],
      ),
    );
    const serverShed = reg(
      new CounterFamily(
        'meshlet_server_requests_shed_total',
        "Requests this process' servers shed (overload protection: 503 / RESOURCE_EXHAUSTED before the handler).",
        [],
      ),
    );

    const svc = ['service'];
    const endpoints = reg(
      new GaugeFamily('meshlet_endpoints', 'Endpoints of a service by state.', ['service', 'state']),
    );
    const panic = reg(
      new GaugeFamily(
        'meshlet_panic_mode',
        '1 while a service balances over all endpoints (panic threshold).',
        svc,
      ),
    );
    this.#panicEntered = reg(
      new CounterFamily('meshlet_panic_mode_entered_total', 'Times a service entered panic mode.', svc),
    );
    this.#ejections = reg(
      new CounterFamily('meshlet_outlier_ejections_total', 'Endpoints ejected by outlier detection.', svc),
    );
    this.#healthChanges = reg(
      new CounterFamily(
        'meshlet_endpoint_health_transitions_total',
        'Endpoint health changes by new state.',
        ['service', 'state'],
      ),
    );
    this.#breakerState = reg(
      new GaugeFamily('meshlet_circuit_breaker_state', '1 for the current breaker state of a service.', [
        'service',
        'state',
      ]),
    );
    this.#breakerTransitions = reg(
      new CounterFamily(
        'meshlet_circuit_breaker_transitions_total',
        'Circuit breaker state changes by new state.',
        ['service', 'state'],
      ),
    );
    this.#retries = reg(
      new CounterFamily('meshlet_retries_total', 'Retries the mesh made, by reason.', ['service', 'reason']),
    );
    this.#retriesDenied = reg(
      new CounterFamily('meshlet_retries_denied_total', 'Retries refused, by cause (budget, deadline).', [
        'service',
        'cause',
      ]),
    );
    this.#budgetExhausted = reg(
      new CounterFamily(
        'meshlet_retry_budget_exhausted_total',
        'Retries refused because the retry budget was spent.',
        svc,
      ),
    );
    const dl = ['service', 'source'];
    const dUpdates = reg(
      new CounterFamily('meshlet_discovery_updates_total', 'Endpoint updates applied from discovery.', dl),
    );
    const dErrors = reg(new CounterFamily('meshlet_discovery_errors_total', 'Discovery failures.', dl));
    const dAge = reg(
      new GaugeFamily(
        'meshlet_discovery_last_update_age_seconds',
        'Seconds since the last good discovery update of a service.',
        dl,
      ),
    );
    const dStamp = reg(
      new GaugeFamily(
        'meshlet_discovery_last_update_timestamp_seconds',
        'Unix time of the last good discovery update of a service.',
        dl,
      ),
    );
    // What the series limit refused, per metric (read at scrape time; the family itself has one
    // series per metric name, so it needs no limit).
    const dropped = registerFamily(
      registry,
      new CounterFamily(
        'meshlet_metric_series_dropped_total',
        `New label sets a metric refused because it held its maximum of series (telemetry.metrics.maxSeries); their observations went to its ${OVERFLOW_LABEL}="true" series.`,
        ['metric'],
      ),
    );
    this.#disposers.push(
      dropped.addCollector(() => {
        for (const f of families) if (f.dropped > 0) dropped.child({ metric: f.fullName }).value = f.dropped;
      }),
    );
    this.#certExpiry = reg(
      new GaugeFamily('meshlet_certificate_expiry_timestamp_seconds', 'Unix time a certificate expires.', [
        'certificate',
        'identity',
      ]),
    );
    const info = reg(
      new GaugeFamily('meshlet_info', 'Constant 1, labelled with the workload and meshlet version.', [
        'workload',
        'namespace',
        'version',
      ]),
    );
    info.set({ workload: this.#workload, namespace: this.#namespace, version: VERSION }, 1);
    const ready = reg(new GaugeFamily('meshlet_ready', '1 once the mesh is ready.', ['workload']));

    if (config.defaultMetrics && registry.getSingleMetric('process_cpu_user_seconds_total') === undefined) {
      collectDefaultMetrics({ register: registry });
    }

    // ---- scrape-time collectors (off the request path) ----
    let seen = new Set<string>();
    const perService = new WeakMap<
      ServiceRuntime,
      {
        states: GaugeSeries[];
        panic: GaugeSeries;
        updates: CounterSeries;
        errors: CounterSeries;
        age: GaugeSeries | undefined;
        stamp: GaugeSeries | undefined;
      }
    >();
    // One pass over the mesh per scrape, whichever family the registry reads first.
    let collected = false;
    const collect = () => {
      if (collected) return;
      collected = true;
      queueMicrotask(() => {
        collected = false;
      });
      {
        const now = mesh.now();
        const wall = Date.now();
        const current = new Set<string>();
        for (const rt of mesh.services()) {
          current.add(rt.name);
          let bound = perService.get(rt);
          if (bound === undefined) {
            const dlab = { service: rt.name, source: rt.discovery.type };
            bound = {
              states: ENDPOINT_STATES.map((state) => endpoints.child({ service: rt.name, state })),
              panic: panic.child({ service: rt.name }),
              updates: dUpdates.child(dlab),
              errors: dErrors.child(dlab),
              age: undefined,
              stamp: undefined,
            };
            perService.set(rt, bound);
          }
          const counts = [0, 0, 0, 0, 0, 0];
          for (const st of rt.endpoints) {
            const i = stateIndex(st, now);
            counts[i] = (counts[i] as number) + 1;
          }
          for (let i = 0; i < counts.length; i++)
            (bound.states[i] as GaugeSeries).value = counts[i] as number;
          bound.panic.value = rt.panic ? 1 : 0;
          const d = rt.discovery;
          bound.updates.value = d.updates;
          bound.errors.value = d.errors;
          if (d.lastUpdate !== undefined) {
            const dlab = { service: rt.name, source: d.type };
            bound.age ??= dAge.child(dlab);
            bound.stamp ??= dStamp.child(dlab);
            bound.age.value = Math.max(0, (wall - d.lastUpdate) / 1000);
            bound.stamp.value = d.lastUpdate / 1000;
          }
          this.#service(rt.name); // zero breaker state for services without events
          if (this.#epActive !== undefined && this.#epEwma !== undefined) {
            for (const st of rt.endpoints) {
              const l = { service: rt.name, endpoint: st.id };
              this.#epActive.set(l, st.active);
              this.#epEwma.set(l, st.ewmaMs / 1000);
              const load = st.load;
              const r = load?.report;
              if (load !== undefined && r !== undefined) {
                this.#epUtilization?.set(
                  l,
                  r.applicationUtilization > 0 ? r.applicationUtilization : r.cpuUtilization,
                );
                this.#epRps?.set(l, r.rpsFractional);
                this.#epWeight?.set(l, load.weight);
              }
              const c = st.concurrency;
              if (c !== undefined) {
                this.#epLimit?.set(l, c.limit);
                if (this.#epRefused !== undefined) this.#epRefused.child(l).value = c.refused;
              }
            }
          }
        }
        const sampler = runningProcessLoad();
        if (sampler !== undefined) {
          const cur = sampler.current;
          serverLoad.set({ figure: 'event_loop_utilization' }, cur.eventLoopUtilization);
          serverLoad.set({ figure: 'cpu_utilization' }, cur.cpuUtilization);
          serverLoad.set({ figure: 'event_loop_delay_p99_seconds' }, cur.eventLoopDelayP99Ms / 1000);
          serverLoad.set({ figure: 'rps' }, cur.rps);
          serverLoad.set({ figure: 'in_flight' }, sampler.inFlight);
          serverShed.child({}).value = sampler.shedTotal;
        }
        for (const name of seen) {
          if (current.has(name)) continue;
          for (const f of [endpoints, panic, dUpdates, dErrors, dAge, dStamp])
            f.removeMatching({ service: name });
        }
        seen = current;
        ready.set({ workload: this.#workload }, mesh.isReady ? 1 : 0);
      }
    };
    const scraped: Array<GaugeFamily | CounterFamily | undefined> = [
      endpoints,
      panic,
      dUpdates,
      dErrors,
      dAge,
      dStamp,
      ready,
      this.#breakerState,
      this.#epActive,
      this.#epEwma,
      this.#epUtilization,
      this.#epRps,
      this.#epWeight,
      this.#epLimit,
      this.#epRefused,
      serverLoad,
      serverShed,
    ];
    for (const f of scraped) if (f !== undefined) this.#disposers.push(f.addCollector(collect));

    // ---- events ----
    const on = <K extends keyof MeshEventMap>(name: K, fn: (e: MeshEventMap[K]) => void) =>
      this.#disposers.push(mesh.events.on(name, fn));
    // Attempts through core's call listener: the values of the `attempt` event, no event object.
    if (this.#otel || this.#epAttempts !== undefined)
      this.#disposers.push(
        mesh.addCallListener({
          attemptEnd: (rt, ep, _attempt, durationMs, outcome, status, _error, _retry, transport) =>
            this.#onAttempt(rt.name, ep, durationMs, outcome, status, transport),
        }),
      );
    on('ejection', (e) => {
      if (!e.ejected) return;
      this.#ejections.child({ service: e.service }).inc();
      this.#service(e.service).stats.ejections++;
    });
    on('health', (e) =>
      this.#healthChanges.child({ service: e.service, state: e.healthy ? 'healthy' : 'unhealthy' }).inc(),
    );
    on('panic', (e) => {
      if (e.panic) this.#panicEntered.child({ service: e.service }).inc();
    });
    on('breaker', (e) => {
      const s = this.#service(e.service);
      s.stats.breaker = e.state;
      for (const st of ['closed', 'open', 'half_open'])
        this.#breakerState.set({ service: e.service, state: st }, st === e.state ? 1 : 0);
      this.#breakerTransitions.child({ service: e.service, state: e.state }).inc();
    });
    on('retry', (e) => {
      const s = this.#service(e.service);
      if (e.allowed) {
        s.stats.retries++;
        this.#retries.child({ service: e.service, reason: e.reason }).inc();
      } else {
        s.stats.retriesDenied++;
        const cause = e.denial ?? 'unknown';
        this.#retriesDenied.child({ service: e.service, cause }).inc();
        if (cause === 'budget') this.#budgetExhausted.child({ service: e.service }).inc();
      }
    });
    on('endpointRemoved', (e) => this.#removeEndpoint(e.endpoint));
    on('log', (e) => this.#onLog(e));
  }

  #service(name: string): ServiceSeries {
    // The last service asked for (one service, or a few in turn, is the common case): no Map
    // lookup. Entries are never removed.
    const last = this.#lastService;
    if (last !== undefined && last.name === name) return last;
    let s = this.#services.get(name);
    if (s === undefined) {
      s = new ServiceSeries(name);
      this.#services.set(name, s);
      for (const st of ['closed', 'open', 'half_open'])
        this.#breakerState.set({ service: name, state: st }, st === 'closed' ? 1 : 0);
    }
    this.#lastService = s;
    return s;
  }

  /** Cumulative per-service counters for the admin page. */
  stats(service: string): ServiceStats | undefined {
    return this.#services.get(service)?.stats;
  }

  #bind(
    count: CF,
    duration: HistogramFamily,
    service: string,
    method: string,
    status: number | undefined,
    outcome: Outcome,
  ): Bound {
    const labels = {
      service,
      http_request_method: methodIndex(method) === 0 ? '_OTHER' : method,
      http_response_status_code: status === undefined ? '' : String(status),
      status_class: statusClass(status),
      outcome,
    };
    return { count: count.child(labels), duration: duration.child(labels) };
  }

  #istioBind(service: string, status: number | undefined, outcome: Outcome, grpc: boolean): Bound {
    const { name, namespace } = splitServiceName(service, 'unknown');
    const labels: Record<string, string> = {
      reporter: 'source',
      source_workload: this.#workload,
      source_workload_namespace: this.#namespace,
      source_principal: 'unknown',
      source_app: this.#workload,
      source_canonical_service: this.#workload,
      destination_workload: 'unknown',
      destination_workload_namespace: namespace,
      destination_principal: 'unknown',
      destination_app: 'unknown',
      destination_service: service.replace(/:\d+$/, ''),
      destination_service_name: name,
      destination_service_namespace: namespace,
      destination_canonical_service: name,
      request_protocol: grpc ? 'grpc' : 'http',
      response_code: status === undefined ? '0' : String(status),
      grpc_response_status: '',
      response_flags: RESPONSE_FLAGS[outcome] ?? '-',
      connection_security_policy: 'unknown',
    };
    if (grpc && status !== undefined) {
      labels.grpc_response_status = String(status);
      labels.response_code = '200';
    }
    const c = this.#istioCount as CF;
    const d = this.#istioDuration as HistogramFamily;
    return { count: c.child(labels), duration: d.child(labels) };
  }

  /** Records a logical request, as a `request` event describes it. */
  onRequest(e: RequestEvent): void {
    this.onCall(e.service, e.method, e.path, e.durationMs, e.outcome, e.status, e.transport);
  }

  /**
   * Records a logical request (called by the telemetry's call listener, `Mesh.addCallListener`,
   * with the values a `request` event carries).
   */
  onCall(
    service: string,
    method: string,
    path: string,
    durationMs: number,
    outcome: Outcome,
    status: number | undefined,
    transport: Transport,
  ): void {
    const s = this.#service(service);
    const st = s.stats;
    st.requests++;
    if (outcome !== 'success') st.errors++;
    st.durationSumMs += durationMs;
    const oi = outcomeIndex(outcome);
    const mi = methodIndex(method);
    const key = mi * 1_000_000 + oi * 1000 + (status ?? 0);
    const stash = this.#stash;
    const traceId = stash?.traceId;
    if (this.#otel && transport === 'grpc') {
      const b = this.#rpcBound(s, path, oi, status);
      b.count.value++;
      if (traceId !== undefined)
        b.duration.observeWithExemplar(durationMs / 1000, traceId, stash?.spanId as string);
      else b.duration.observe(durationMs / 1000);
    } else if (this.#otel) {
      let b = key === s.lastLogicalKey ? s.lastLogical : s.logical.get(key);
      if (b === undefined) {
        b = this.#bind(
          this.#logicalCount as CF,
          this.#logicalDuration as HistogramFamily,
          service,
          method,
          status,
          outcome,
        );
        s.logical.set(key, b);
      }
      s.lastLogicalKey = key;
      s.lastLogical = b;
      b.count.value++;
      if (traceId !== undefined)
        b.duration.observeWithExemplar(durationMs / 1000, traceId, stash?.spanId as string);
      else b.duration.observe(durationMs / 1000);
    }
    if (this.#istio) {
      const grpc = transport === 'grpc';
      const ikey = key + (grpc ? 500_000 : 0);
      let b = s.istio.get(ikey);
      if (b === undefined) {
        b = this.#istioBind(service, status, outcome, grpc);
        s.istio.set(ikey, b);
      }
      b.count.value++;
      if (traceId !== undefined) b.duration.observeWithExemplar(durationMs, traceId, stash?.spanId as string);
      else b.duration.observe(durationMs);
    }
  }

  /** The series of a gRPC call of `path` (bound once per method, outcome and code). */
  #rpcBound(s: ServiceSeries, path: string, oi: number, status: number | undefined): Bound {
    let byMethod = s.rpc.get(path);
    if (byMethod === undefined) {
      // Bounded: past MAX_RPC_METHODS distinct methods, the rest share `_OTHER`.
      const known = s.rpc.size < MAX_RPC_METHODS;
      byMethod = known ? [] : (s.rpc.get('_OTHER') ?? []);
      s.rpc.set(known ? path : '_OTHER', byMethod);
      if (!known) path = '_OTHER';
    }
    const code = status === undefined || status < 0 || status >= RPC_CODES - 1 ? RPC_CODES - 1 : status;
    const slot = oi * RPC_CODES + code;
    let b = byMethod[slot];
    if (b === undefined) {
      const labels = {
        service: s.name,
        rpc_system_name: 'grpc',
        rpc_method: path === '_OTHER' ? path : rpcMethod(path),
        rpc_status_code: status === undefined ? '' : grpcStatusName(status),
        outcome: OUTCOMES[oi] as string,
      };
      b = {
        count: (this.#rpcCount as CF).child(labels),
        duration: (this.#rpcDuration as HistogramFamily).child(labels),
      };
      byMethod[slot] = b;
    }
    return b;
  }

  #onAttempt(
    service: string,
    ep: EndpointState,
    durationMs: number,
    outcome: Outcome,
    status: number | undefined,
    transport: Transport,
  ): void {
    if (this.#otel && transport === 'grpc') {
      const s = this.#service(service);
      const oi = outcomeIndex(outcome);
      const code = status === undefined || status < 0 || status >= RPC_CODES - 1 ? RPC_CODES - 1 : status;
      const slot = oi * RPC_CODES + code;
      let b = s.rpcAttempts[slot];
      if (b === undefined) {
        const labels = {
          service,
          rpc_status_code: status === undefined ? '' : grpcStatusName(status),
          outcome,
        };
        b = {
          count: (this.#rpcAttemptCount as CF).child(labels),
          duration: (this.#rpcAttemptDuration as HistogramFamily).child(labels),
        };
        s.rpcAttempts[slot] = b;
      }
      b.count.value++;
      b.duration.observe(durationMs / 1000);
    } else if (this.#otel) {
      const s = this.#service(service);
      const key = outcomeIndex(outcome) * 1000 + (status ?? 0);
      let b = key === s.lastAttemptKey ? s.lastAttempt : s.attempts.get(key);
      if (b === undefined) {
        const labels = {
          service,
          http_response_status_code: status === undefined ? '' : String(status),
          status_class: statusClass(status),
          outcome,
        };
        b = {
          count: (this.#attemptCount as CF).child(labels),
          duration: (this.#attemptDuration as HistogramFamily).child(labels),
        };
        s.attempts.set(key, b);
      }
      s.lastAttemptKey = key;
      s.lastAttempt = b;
      b.count.value++;
      b.duration.observe(durationMs / 1000);
    }
    if (this.#epAttempts !== undefined) {
      let es = ep.slots[ENDPOINT_SLOT] as EndpointSeries | undefined;
      if (es === undefined) {
        const labels = { service, endpoint: ep.id };
        es = { labels, duration: (this.#epDuration as HistogramFamily).child(labels), outcomes: [] };
        ep.slots[ENDPOINT_SLOT] = es;
      }
      const oi = outcomeIndex(outcome);
      let c = es.outcomes[oi];
      if (c === undefined) {
        c = this.#epAttempts.child({ ...es.labels, outcome });
        es.outcomes[oi] = c;
      }
      c.value++;
      es.duration.observe(durationMs / 1000);
    }
  }

  #removeEndpoint(ep: EndpointState): void {
    ep.slots[ENDPOINT_SLOT] = undefined;
    if (this.#epAttempts === undefined) return;
    const labels = { service: ep.service, endpoint: ep.id };
    this.#epAttempts.removeMatching(labels);
    this.#epDuration?.remove(labels);
    this.#epActive?.remove(labels);
    this.#epEwma?.remove(labels);
    this.#epUtilization?.remove(labels);
    this.#epRps?.remove(labels);
    this.#epWeight?.remove(labels);
    this.#epLimit?.remove(labels);
    this.#epRefused?.remove(labels);
  }

  #onLog(e: MeshEventMap['log']): void {
    const cert = (
      e.data as { certificate?: { notAfter?: unknown; identity?: unknown; name?: unknown } } | undefined
    )?.certificate;
    if (cert === undefined || cert.notAfter === undefined) return;
    const t = new Date(cert.notAfter as string | number | Date).getTime();
    if (Number.isNaN(t)) return;
    this.setCertificateExpiry(
      typeof cert.name === 'string' ? cert.name : e.scope,
      new Date(t),
      typeof cert.identity === 'string' ? cert.identity : '',
    );
  }

  /**
   * Reports when a certificate expires (`meshlet_certificate_expiry_timestamp_seconds`). The TLS
   * package calls it (or emits a `log` event whose `data.certificate` is `{ notAfter, identity,
   * name }`) whenever it loads or rotates a certificate.
   */
  setCertificateExpiry(name: string, notAfter: Date, identity = ''): void {
    this.#certExpiry.removeMatching({ certificate: name });
    this.#certExpiry.set({ certificate: name, identity }, notAfter.getTime() / 1000);
  }

  /** Records one inbound request (server side; used by `ServerTelemetry`). */
  recordServer(
    method: string,
    status: number | undefined,
    route: string,
    durationMs: number,
    grpc: boolean,
  ): void {
    if (this.#serverCount !== undefined && this.#serverDuration !== undefined) {
      const mi = methodIndex(method);
      const m = METHODS[mi] as string;
      const slot = (status === undefined ? -1 : status) * 16 + mi;
      const byStatus = this.#serverBound.get(route);
      let b = byStatus?.get(slot);
      if (b === undefined) {
        const labels = {
          http_request_method: m,
          http_response_status_code: status === undefined ? '' : String(status),
          status_class: statusClass(status),
          http_route: route,
        };
        b = { count: this.#serverCount.child(labels), duration: this.#serverDuration.child(labels) };
        // Cached only while it is a series of its own: the cache stays as bounded as the families
        // (routes are templates, but an adapter without them may report many).
        if (!this.#serverCount.isOverflow(b.count)) {
          if (byStatus === undefined) this.#serverBound.set(route, new Map([[slot, b]]));
          else byStatus.set(slot, b);
        }
      }
      b.count.value++;
      b.duration.observe(durationMs / 1000);
    }
    if (this.#istioServerCount !== undefined && this.#istioServerDuration !== undefined) {
      const key = (status === undefined ? -1 : status) * 2 + (grpc ? 1 : 0);
      let b = this.#istioServerBound.get(key);
      if (b === undefined) {
        const labels: Record<string, string> = {
          reporter: 'destination',
          source_workload: 'unknown',
          source_workload_namespace: 'unknown',
          source_principal: 'unknown',
          source_app: 'unknown',
          source_canonical_service: 'unknown',
          destination_workload: this.#workload,
          destination_workload_namespace: this.#namespace,
          destination_principal: 'unknown',
          destination_app: this.#workload,
          destination_service: `${this.#workload}.${this.#namespace}.svc.cluster.local`,
          destination_service_name: this.#workload,
          destination_service_namespace: this.#namespace,
          destination_canonical_service: this.#workload,
          request_protocol: grpc ? 'grpc' : 'http',
          response_code: status === undefined ? '0' : grpc ? '200' : String(status),
          grpc_response_status: grpc && status !== undefined ? String(status) : '',
          response_flags: '-',
          connection_security_policy: this.#mtls ? 'mutual_tls' : 'none',
        };
        b = {
          count: this.#istioServerCount.child(labels),
          duration: this.#istioServerDuration.child(labels),
        };
        this.#istioServerBound.set(key, b);
      }
      b.count.value++;
      b.duration.observe(durationMs);
    }
  }

  /** Unsubscribes from the mesh. Series stay in the registry (counters never go back). */
  close(): void {
    for (const d of this.#disposers.splice(0)) d();
    for (const rt of this.#mesh.services())
      for (const ep of rt.endpoints) ep.slots[ENDPOINT_SLOT] = undefined;
  }
}

function stateIndex(st: EndpointState, now: number): number {
  if (st.isEjected(now)) return 5;
  if (st.activeHealth === 'unhealthy' || st.unreachable > 0) return 4;
  switch (st.endpoint.health) {
    case 'healthy':
      return st.activeHealth === 'healthy' || st.activeHealth === 'unknown' ? 0 : 4;
    case 'unknown':
      return 1;
    case 'degraded':
      return 2;
    case 'draining':
      return 3;
    default:
      return 4;
  }
}
