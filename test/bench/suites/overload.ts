import type { BenchSuite, BenchSuiteResult } from '../lib.js';
import {
  BASE_SERVICE,
  type Clients,
  DEADLINE_MS,
  type Instance,
  type InstanceStats,
  LOAD_AWARE,
  merge,
  pct,
  percentile,
  round1,
  runScenario,
  runVariants,
  selectedVariants,
  succeeded,
  type Variant,
} from '../support/overload.js';

/**
 * The overload scenario (issue 15): 4 instances of an HTTP service, each in its own process; one
 * has a CPU-heavy handler mix that saturates its event loop at a quarter of the others' rate
 * (every request holds the loop 2 ms, except every 4th on the heavy one, which holds it 26 ms:
 * 8 ms on average). 8 open-loop clients, each with its own mesh, offer a fixed arrival rate the
 * four together serve with room to spare (about 40% of their capacity), but that round robin's
 * even split pushes past the heavy instance's capacity (150/s offered, about 120/s served).
 * Every request has a 250 ms deadline.
 *
 * Reported per policy, side by side in one run: the share of requests that succeeded within the
 * deadline (measured from each request's scheduled time), latency percentiles, where the requests
 * went, and the saturated instance's event-loop delay p99, measured inside that instance.
 * The mesh runs as a balancer only (outlier detection, circuit breaker and retries off), so the
 * policies are compared, not the resilience layers.
 *
 * Goal (issue 15, with the load-aware policy and shedding, which the integration adds): >= 99.9%
 * within the deadline and the saturated instance's event-loop delay p99 < 50 ms, where round
 * robin does not. A new variant is one line in VARIANTS.
 */

const VARIANTS: readonly Variant[] = [
  { name: 'round_robin', service: { lb: 'round_robin' } },
  { name: 'least_request', service: { lb: 'least_request' } },
  { name: 'peak_ewma', service: { lb: 'peak_ewma' } },
  LOAD_AWARE,
];

/** Three ordinary instances and the saturated one (index 3). */
const INSTANCES = [
  { workMs: 2 },
  { workMs: 2 },
  { workMs: 2 },
  { workMs: 2, heavyMs: 26, heavyEvery: 4 },
] as const;
const SATURATED = 3;
const CLIENTS = 8;
/** The 8 clients run in 2 processes of 4 meshes each (see `startClients`). */
const CLIENT_PROCESSES = 2;
/** Per client: 8 × 75 = 600 requests/s; round robin gives the saturated instance 150/s. */
const RPS_PER_CLIENT = 75;

interface VariantResult {
  readonly requests: number;
  readonly withinDeadline: number;
  readonly successRate: number;
  readonly failed: number;
  /** Successes that came later than the deadline (the client fell behind its schedule). */
  readonly late: number;
  readonly errors: Record<string, number>;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly p999Ms: number;
  /** Share of attempts each instance got. */
  readonly share: number[];
  readonly saturated: InstanceStats;
  /** The highest event-loop delay p99 among the other instances. */
  readonly othersEldP99Ms: number;
  /** The highest event-loop delay p99 among the clients (noise of this machine). */
  readonly clientEldP99Ms: number;
  /** Every instance over the measured window: requests/s served, event-loop delay, utilization, busy ms/request. */
  readonly instances: Array<{ rps: number; eldP99Ms: number; elu: number; busyMsPerRequest: number }>;
}

async function runVariant(
  instances: readonly Instance[],
  clients: Clients,
  variant: Variant,
  warmupMs: number,
  measureMs: number,
  leadMs: number,
): Promise<VariantResult> {
  const run = await runScenario(instances, clients, {
    service: { ...BASE_SERVICE, ...variant.service },
    overload: variant.overload,
    stallBlind: variant.stallBlind,
    phases: [{ ms: warmupMs + measureMs, rps: RPS_PER_CLIENT }],
    warmupMs,
    marks: [warmupMs, warmupMs + measureMs],
    leadMs,
  });
  const all = merge(run.clients);
  const n = all.lat.length;
  let ok = 0;
  let failed = 0;
  for (let i = 0; i < n; i++) {
    if (succeeded(all.status[i] as number, all.lat[i] as number, DEADLINE_MS)) ok++;
    else if (all.status[i] === 0) failed++;
  }
  // Latency of every request, failures at the time they failed (a timeout at its deadline).
  const lat = Float64Array.from(all.lat, (l, i) =>
    l >= 0 ? l : (all.done[i] as number) - (all.sched[i] as number),
  );
  lat.sort();
  const errors: Record<string, number> = {};
  const attempts = new Map<number, number>();
  for (const c of run.clients) {
    for (const [k, v] of Object.entries(c.errors)) errors[k] = (errors[k] ?? 0) + v;
    for (const [port, v] of Object.entries(c.attempts))
      attempts.set(Number(port), (attempts.get(Number(port)) ?? 0) + v);
  }
  const totalAttempts = [...attempts.values()].reduce((a, b) => a + b, 0);
  const window = run.windows[0] as InstanceStats[];
  return {
    requests: n,
    withinDeadline: ok,
    successRate: n === 0 ? 0 : ok / n,
    failed,
    late: n - ok - failed,
    errors,
    p50Ms: round1(percentile(lat, 0.5)),
    p99Ms: round1(percentile(lat, 0.99)),
    p999Ms: round1(percentile(lat, 0.999)),
    share: instances.map(
      (x) => Math.round(((attempts.get(x.port) ?? 0) / Math.max(1, totalAttempts)) * 1000) / 1000,
    ),
    saturated: window[SATURATED] as InstanceStats,
    othersEldP99Ms: round1(Math.max(...window.filter((_, i) => i !== SATURATED).map((s) => s.eldP99Ms))),
    clientEldP99Ms: round1(Math.max(...run.clients.map((c) => c.eldP99Ms))),
    instances: window.map((s) => ({
      rps: round1(s.served / (s.windowMs / 1000)),
      eldP99Ms: round1(s.eldP99Ms),
      elu: Math.round(s.elu * 100) / 100,
      busyMsPerRequest: Math.round(s.busyMsPerRequest * 100) / 100,
    })),
  };
}

const suite: BenchSuite = {
  name: 'overload',
  inQuick: true,
  async run({ quick }): Promise<BenchSuiteResult> {
    // Quick: a smoke run of the whole harness (clients in this process, seconds); full: 8 clients
    // in 2 processes, 3 s of warm-up and 20 s measured per policy.
    const warmupMs = quick ? 200 : 3000;
    const measureMs = quick ? 500 : 20_000;
    // Full runs warm every process up first (the first policy would pay for the start-up of 12).
    const warmUp = quick ? undefined : { ms: 3000, rps: RPS_PER_CLIENT / 2 };
    const variants = selectedVariants(VARIANTS);
    // Full runs: fresh processes per variant (see runVariants), so a variant's place in the run
    // does not change its result; quick runs share one set.
    const { runs, results, loadAverage, order, orderedBy } = await runVariants(
      variants,
      {
        specs: INSTANCES,
        clients: CLIENTS,
        clientProcesses: quick ? 0 : CLIENT_PROCESSES,
        warmUp,
        fresh: !quick,
      },
      (instances, clients, v) => runVariant(instances, clients, v, warmupMs, measureMs, quick ? 50 : 1000),
    );
    const summary = [
      `overload: 4 instances (one saturates at 1/4 the others' rate), ${CLIENTS} open-loop clients × ${RPS_PER_CLIENT}/s, deadline ${DEADLINE_MS}ms, ${measureMs / 1000}s per policy${quick ? ' (quick: clients in-process)' : ', fresh processes per variant'}, order ${orderedBy}`,
    ];
    for (const name of order) {
      const { result: r, loadAverage } = runs[name] as {
        result: VariantResult;
        loadAverage: { start: number; end: number };
      };
      summary.push(
        `  ${name.padEnd(16)} within deadline ${pct(r.successRate)} (failed ${r.failed}, late ${r.late}, n=${r.requests})  p50 ${r.p50Ms}ms  p99 ${r.p99Ms}ms  p99.9 ${r.p999Ms}ms  saturated instance: share ${pct(r.share[SATURATED] ?? 0)}, ELD p99 ${round1(r.saturated.eldP99Ms)}ms (max ${round1(r.saturated.eldMaxMs)}), ELU ${r.saturated.elu.toFixed(2)}, shed ${r.saturated.shed}  others' ELD p99 <= ${r.othersEldP99Ms}ms  clients' ELD p99 <= ${r.clientEldP99Ms}ms  load average ${loadAverage.start}→${loadAverage.end}${Object.keys(r.errors).length > 0 ? `  errors ${JSON.stringify(r.errors)}` : ''}`,
      );
    }
    return {
      results: {
        config: {
          instances: INSTANCES,
          saturated: SATURATED,
          clients: CLIENTS,
          rpsPerClient: RPS_PER_CLIENT,
          deadlineMs: DEADLINE_MS,
          warmupMs,
          measureMs,
          clientProcesses: quick ? 0 : CLIENT_PROCESSES,
          freshProcessesPerVariant: !quick,
          order,
          orderedBy,
          service: BASE_SERVICE,
        },
        variants: results,
        loadAverage,
      },
      summary,
    };
  },
};

export default suite;
