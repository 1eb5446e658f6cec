/**
 * Shared machinery of the overload and surge scenario benchmarks: instances of the service in
 * child processes (`overload-instance.ts`), open-loop clients in child processes or in this one
 * (`overload-client.ts`), one scenario run across them, and the statistics the suites report.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { loadavg } from 'node:os';
import { type ClientResult, type ClientRun, type Phase, runClient } from './overload-client.js';

/** How an instance's handler holds its event loop (see overload-instance.mjs). */
export interface InstanceSpec {
  /** Blocking time of an ordinary request, ms. */
  readonly workMs: number;
  /** Blocking time of every `heavyEvery`-th request, ms (0: none). */
  readonly heavyMs?: number;
  readonly heavyEvery?: number;
}

export interface InstanceStats {
  readonly served: number;
  /** Requests overload protection shed (answered 503 before the handler). */
  readonly shed: number;
  readonly windowMs: number;
  /** Event-loop delay inside the instance over the window (ms beyond the 10 ms resolution). */
  readonly eldP99Ms: number;
  readonly eldMaxMs: number;
  /** Event-loop utilization over the window. */
  readonly elu: number;
  /** Event-loop busy time per request served, ms. */
  readonly busyMsPerRequest: number;
}

export interface Instance {
  readonly port: number;
  /** Sets the instance's overload protection (`inbound.overload`: false, true or options). */
  configure(overload: unknown): Promise<void>;
  reset(): Promise<void>;
  stats(): Promise<InstanceStats>;
  close(): Promise<void>;
}

function ipc<T>(
  child: ChildProcess,
  msg: Record<string, unknown>,
  pick: (m: Record<string, unknown>) => T,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const on = (m: unknown) => {
      const r = m as Record<string, unknown>;
      if (r.id !== msg.id) return;
      child.off('message', on);
      child.off('exit', onExit);
      if (typeof r.error === 'string') reject(new Error(r.error));
      else resolve(pick(r));
    };
    const onExit = (code: number | null) => {
      child.off('message', on);
      reject(new Error(`child process exited (code ${code}) during ${String(msg.cmd)}`));
    };
    child.on('message', on);
    child.once('exit', onExit);
    child.send(msg);
  });
}

function closeChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

let seq = 0;

/** One policy setup compared in a scenario: a name and the service's config keys (lb, …). */
export interface Variant {
  readonly name: string;
  /** Service config keys besides the endpoints, merged over `BASE_SERVICE`. */
  readonly service: Readonly<Record<string, unknown>>;
  /** The instances' overload protection (`inbound.overload`); default off. */
  readonly overload?: unknown;
  /**
   * Clients whose adaptive concurrency limiter does not tell their own event-loop stalls from
   * the endpoints' latency (as before it did): the A/B of that change in one run.
   */
  readonly stallBlind?: boolean;
}

/** Every request's deadline in both scenarios. */
export const DEADLINE_MS = 250;

/**
 * The service config both scenarios start from: the deadline, and the mesh as a balancer only
 * (outlier detection, circuit breaker and retries off), so that policies are compared, not the
 * resilience layers.
 */
export const BASE_SERVICE = {
  timeout: `${DEADLINE_MS}ms`,
  outlierDetection: false,
  circuitBreaker: false,
  retry: false,
} as const;

/**
 * The load-aware setup (issue 15): weights from the instances' load reports, adaptive concurrency
 * per endpoint, and shedding on the instances; a shed request goes to another endpoint at once
 * (retries of refused streams only, within the default 20% budget), and the shedding endpoint is
 * avoided for its Retry-After. Everything else at its defaults.
 */
export const LOAD_AWARE: Variant = {
  name: 'load_aware',
  service: {
    lb: 'client_side_weighted_round_robin',
    adaptiveConcurrency: true,
    retry: { on: ['refused-stream'] },
  },
  overload: true,
};

/**
 * The variants a run compares: all of them, or those named in `MESHLET_BENCH_VARIANTS`
 * (comma-separated, e.g. `round_robin,load_aware`) to look at a few quickly while working.
 */
export function selectedVariants(all: readonly Variant[]): readonly Variant[] {
  const only = process.env.MESHLET_BENCH_VARIANTS?.split(',').map((s) => s.trim());
  if (only === undefined || only.length === 0 || only[0] === '') return all;
  const picked = all.filter((v) => only.includes(v.name));
  if (picked.length === 0)
    throw new Error(`MESHLET_BENCH_VARIANTS names none of ${all.map((v) => v.name).join(', ')}`);
  return picked;
}

/**
 * The order variants run in: as listed (the default), or as `MESHLET_BENCH_ORDER` says —
 * `reverse`, or `shuffle` / `shuffle:SEED` (a seeded shuffle; the seed used is in the results), to
 * check that a result does not depend on its place in the run.
 */
export function variantOrder(variants: readonly Variant[]): { order: Variant[]; how: string } {
  const spec = process.env.MESHLET_BENCH_ORDER?.trim() ?? '';
  if (spec === '' || spec === 'listed') return { order: [...variants], how: 'listed' };
  if (spec === 'reverse') return { order: [...variants].reverse(), how: 'reverse' };
  const m = /^shuffle(?::(\d+))?$/.exec(spec);
  if (m === null)
    throw new Error(`MESHLET_BENCH_ORDER must be listed, reverse, shuffle or shuffle:SEED, got ${spec}`);
  const seed = m[1] !== undefined ? Number(m[1]) : Math.floor(Math.random() * 1e9);
  // mulberry32: a small seeded generator, enough to reproduce an order.
  let a = seed >>> 0;
  const random = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const order = [...variants];
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j] as Variant, order[i] as Variant];
  }
  return { order, how: `shuffle:${seed}` };
}

/** One variant's result with the machine's load average (1 min) when it started and ended. */
export interface VariantRun<R> {
  readonly result: R;
  readonly loadAverage: { readonly start: number; readonly end: number };
}

/**
 * Runs every variant, in `variantOrder`. With `fresh` (full runs), each variant gets processes of
 * its own — new instances and client processes, warmed up by `warmUp` — so that nothing one
 * variant leaves behind (connections and backlogs in the instances, a heap grown by the previous
 * run's results, the instances' load sampler and overload state, the clients' JIT state) reaches
 * the next; otherwise (quick runs, clients in this process) one set of processes serves them all.
 */
export async function runVariants<R>(
  variants: readonly Variant[],
  harness: {
    readonly specs: readonly InstanceSpec[];
    readonly clients: number;
    readonly clientProcesses: number;
    readonly warmUp: Phase | undefined;
    readonly fresh: boolean;
  },
  run: (instances: Instance[], clients: Clients, variant: Variant) => Promise<R>,
): Promise<{
  runs: Record<string, VariantRun<R>>;
  /** Results by variant, and load averages by variant, in the order they ran. */
  results: Record<string, R>;
  loadAverage: Record<string, VariantRun<R>['loadAverage']>;
  order: string[];
  orderedBy: string;
}> {
  const { order, how } = variantOrder(variants);
  const runs: Record<string, VariantRun<R>> = {};
  const one = async (instances: Instance[], clients: Clients, v: Variant) => {
    const start = loadavg()[0] as number;
    const result = await run(instances, clients, v);
    runs[v.name] = { result, loadAverage: { start: round2(start), end: round2(loadavg()[0] as number) } };
  };
  const h = harness;
  if (h.fresh) {
    for (const v of order)
      await withHarness(h.specs, h.clients, h.clientProcesses, h.warmUp, (i, c) => one(i, c, v));
  } else {
    await withHarness(h.specs, h.clients, h.clientProcesses, h.warmUp, async (i, c) => {
      for (const v of order) await one(i, c, v);
    });
  }
  const names = order.map((v) => v.name);
  const of = (k: string) => runs[k] as VariantRun<R>;
  return {
    runs,
    results: Object.fromEntries(names.map((k) => [k, of(k).result])),
    loadAverage: Object.fromEntries(names.map((k) => [k, of(k).loadAverage])),
    order: names,
    orderedBy: how,
  };
}

const round2 = (x: number) => Math.round(x * 100) / 100;

/**
 * Starts the instances and the clients, runs `fn` with them, and stops them all whatever happens.
 * With `warmUp`, one unmeasured run at that rate comes first, so that the JIT of every process has
 * settled before the first variant is measured (it would otherwise pay for the others' start-up).
 */
export async function withHarness<T>(
  specs: readonly InstanceSpec[],
  clientCount: number,
  clientProcesses: number,
  warmUp: Phase | undefined,
  fn: (instances: Instance[], clients: Clients) => Promise<T>,
): Promise<T> {
  const instances = await startInstances(specs);
  try {
    const clients = await startClients(clientCount, clientProcesses);
    try {
      if (warmUp !== undefined && warmUp.ms > 0) {
        await runScenario(instances, clients, {
          service: { ...BASE_SERVICE, lb: 'peak_ewma' },
          phases: [warmUp],
          warmupMs: warmUp.ms,
          marks: [],
          leadMs: clientProcesses > 0 ? 1000 : 50,
        });
      }
      return await fn(instances, clients);
    } finally {
      await clients.close();
    }
  } finally {
    await Promise.all(instances.map((i) => i.close()));
  }
}

export async function startInstances(specs: readonly InstanceSpec[]): Promise<Instance[]> {
  const started = specs.map(async (spec) => {
    const child = fork(
      new URL('./overload-instance.ts', import.meta.url),
      [String(spec.workMs), String(spec.heavyMs ?? 0), String(spec.heavyEvery ?? 4)],
      {
        execArgv: ['--import', 'tsx', '--conditions=meshlet-source'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      },
    );
    const port = await new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`instance exited early (code ${code})`)));
      child.once('message', (m) => resolve((m as { port: number }).port));
    });
    child.removeAllListeners('exit');
    const instance: Instance = {
      port,
      configure: (overload) => ipc(child, { cmd: 'configure', id: ++seq, overload }, () => undefined),
      reset: () => ipc(child, { cmd: 'reset', id: ++seq }, () => undefined),
      stats: () => ipc(child, { cmd: 'stats', id: ++seq }, (m) => m.stats as InstanceStats),
      close: () => closeChild(child),
    };
    return instance;
  });
  const settled = await Promise.allSettled(started);
  const ok = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const failed = settled.find((s) => s.status === 'rejected');
  if (failed) {
    await Promise.all(ok.map((i) => i.close()));
    throw (failed as PromiseRejectedResult).reason;
  }
  return ok;
}

export interface Clients {
  readonly count: number;
  /** Runs the same schedule on every client; resolves with each client's result. */
  run(run: Omit<ClientRun, 'startAt'>, startAt: number): Promise<ClientResult[]>;
  close(): Promise<void>;
}

/**
 * `count` clients, each with its own mesh (its own balancer, as replicas of a caller have), spread
 * over `processes` child processes (full runs: a process per client would put 12 Node processes on
 * a 2-core machine, and the clients' own scheduling delays would swamp the service's), or all in
 * this process with `processes` 0 (quick runs, which cannot afford the start-up of children).
 */
export async function startClients(count: number, processes: number): Promise<Clients> {
  if (processes <= 0) {
    return {
      count,
      run: (run, startAt) => Promise.all(Array.from({ length: count }, () => runClient({ ...run, startAt }))),
      close: async () => {},
    };
  }
  const n = Math.min(processes, count);
  // Clients per process: as even as possible (8 over 3: 3, 3, 2).
  const per = Array.from({ length: n }, (_, i) => Math.floor(count / n) + (i < count % n ? 1 : 0));
  const children = await Promise.all(
    Array.from({ length: n }, async () => {
      const child = fork(new URL('./overload-client.ts', import.meta.url), ['child'], {
        execArgv: ['--import', 'tsx', '--conditions=meshlet-source'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      await new Promise<void>((resolve, reject) => {
        child.once('error', reject);
        child.once('exit', (code) => reject(new Error(`client exited early (code ${code})`)));
        child.once('message', () => resolve());
      });
      child.removeAllListeners('exit');
      return child;
    }),
  );
  return {
    count,
    run: async (run, startAt) =>
      (
        await Promise.all(
          children.map((child, i) =>
            ipc(
              child,
              { cmd: 'run', id: ++seq, count: per[i], run: { ...run, startAt } },
              (m) => m.results as ClientResult[],
            ),
          ),
        )
      ).flat(),
    close: async () => {
      await Promise.all(children.map(closeChild));
    },
  };
}

export interface ScenarioResult {
  readonly clients: ClientResult[];
  /** Instance statistics per window between consecutive marks: windows[w][instance]. */
  readonly windows: InstanceStats[][];
}

/**
 * Runs one schedule on every client at once. Instance statistics restart at `marks[0]` (the end of
 * the warm-up) and are collected at each later mark (ms from the start), giving one window per pair
 * of consecutive marks.
 */
export async function runScenario(
  instances: readonly Instance[],
  clients: Clients,
  opts: {
    readonly service: Readonly<Record<string, unknown>>;
    /** The instances' overload protection for this run (default off). */
    readonly overload?: unknown;
    /** See `Variant.stallBlind`. */
    readonly stallBlind?: boolean;
    readonly phases: readonly Phase[];
    readonly warmupMs: number;
    readonly marks: readonly number[];
    /** Lead time for the clients to create their meshes before the common start. */
    readonly leadMs: number;
  },
): Promise<ScenarioResult> {
  await Promise.all(instances.map((i) => i.configure(opts.overload ?? false)));
  const startAt = Date.now() + opts.leadMs;
  const windows: InstanceStats[][] = [];
  const timers: NodeJS.Timeout[] = [];
  const collected = opts.marks.map(
    (mark, i) =>
      new Promise<void>((resolve, reject) => {
        timers.push(
          setTimeout(
            () => {
              const stats = i === 0 ? Promise.resolve() : Promise.all(instances.map((x) => x.stats()));
              stats
                .then((s) => {
                  if (s !== undefined) windows[i - 1] = s;
                  return Promise.all(instances.map((x) => x.reset()));
                })
                .then(() => resolve(), reject);
            },
            Math.max(0, startAt + mark - Date.now()),
          ),
        );
      }),
  );
  try {
    const results = await clients.run(
      {
        ports: instances.map((i) => i.port),
        service: opts.service,
        stallBlind: opts.stallBlind === true,
        phases: opts.phases,
        warmupMs: opts.warmupMs,
      },
      startAt,
    );
    await Promise.all(collected);
    await drained(instances);
    return { clients: results, windows };
  } finally {
    for (const t of timers) clearTimeout(t);
  }
}

/**
 * Waits until no instance serves anything for half a second (at most 30 s): an overloaded run
 * leaves requests in the instances' sockets and accept queues after its clients are gone (HTTP/1.1
 * requests a client timed out on are still read and served), and the next variant must not start
 * on that backlog.
 */
async function drained(instances: readonly Instance[]): Promise<void> {
  const until = Date.now() + 30_000;
  while (Date.now() < until) {
    await Promise.all(instances.map((i) => i.reset()));
    await new Promise((r) => setTimeout(r, 500));
    const stats = await Promise.all(instances.map((i) => i.stats()));
    if (stats.every((s) => s.served === 0 && s.shed === 0)) return;
  }
}

export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number;
}

export const round1 = (x: number) => Math.round(x * 10) / 10;
export const pct = (x: number) => `${(x * 100).toFixed(2)}%`;

/** Every recorded request of every client, as parallel arrays. */
export function merge(results: readonly ClientResult[]): {
  sched: number[];
  lat: number[];
  status: number[];
  done: number[];
} {
  const out = { sched: [] as number[], lat: [] as number[], status: [] as number[], done: [] as number[] };
  for (const r of results) {
    out.sched.push(...r.sched);
    out.lat.push(...r.lat);
    out.status.push(...r.status);
    out.done.push(...r.done);
  }
  return out;
}

/** A request succeeded: a 200 within `deadlineMs` of its scheduled time. */
export function succeeded(status: number, lat: number, deadlineMs: number): boolean {
  return status === 200 && lat >= 0 && lat <= deadlineMs;
}
