/**
 * One open-loop client of the overload and surge benchmarks: its own Mesh (its own balancer state,
 * as one replica of a calling service has), sending `GET http://svc/` on a fixed arrival schedule
 * whatever the answers do, so that overload shows as queueing and timeouts, not as a client that
 * slows down (a closed loop hides it: coordinated omission).
 *
 * Latency is measured from each request's *scheduled* time, so a client that falls behind its own
 * schedule pays for it too; the client's own event-loop delay is reported alongside, to tell a
 * slow client on a busy machine from a slow service.
 *
 * Runs in the benchmark process (`runClient`) or in a child process, several clients (meshes) to
 * a process: `fork(this file, ['child'], { execArgv: ['--import', 'tsx', '--conditions=meshlet-source'] })`,
 * which answers `{ cmd: 'run', id, count, run }` with `{ id, results }` (one per client).
 */
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { createMesh } from '../../../packages/meshlet/src/index.js';

/** A stretch of constant arrival rate (requests per second of this client). */
export interface Phase {
  readonly ms: number;
  readonly rps: number;
}

export interface ClientRun {
  /** Ports of the service's instances on 127.0.0.1. */
  readonly ports: readonly number[];
  /** The service's config besides its endpoints (lb, timeout, ...). */
  readonly service: Readonly<Record<string, unknown>>;
  /**
   * The mesh gets its clock injected (the same `performance.now`): a mesh with an injected clock
   * does not hand its services the process' heartbeat, so the limiter does not discount the
   * client's own event-loop stalls (the A/B of that change).
   */
  readonly stallBlind?: boolean;
  readonly phases: readonly Phase[];
  /** Requests scheduled before this (ms from the start) warm up and are not recorded. */
  readonly warmupMs: number;
  /** `Date.now()` at which every client starts its schedule. */
  readonly startAt: number;
}

export interface ClientResult {
  /** Scheduled times (ms from the start) of the recorded requests. */
  readonly sched: number[];
  /** Their latency from the scheduled time, ms; -1 for a request that failed. */
  readonly lat: number[];
  /** HTTP status, or 0 for a failure. */
  readonly status: number[];
  /** Completion times (ms from the start). */
  readonly done: number[];
  /** Failed requests by error code (MESHLET_ERR_TIMEOUT, ...). */
  readonly errors: Record<string, number>;
  /** Attempts per instance port during the recorded part. */
  readonly attempts: Record<string, number>;
  /** This client's own event-loop delay during the recorded part (ms over the 10 ms resolution). */
  readonly eldP99Ms: number;
  readonly eldMaxMs: number;
}

/** The time of the k-th request (0-based) of a piecewise-constant schedule, or Infinity past its end. */
export function scheduleTime(phases: readonly Phase[], k: number): number {
  let before = 0;
  let start = 0;
  for (const p of phases) {
    const n = (p.rps * p.ms) / 1000;
    if (k < before + n) return start + ((k - before) * 1000) / p.rps;
    before += n;
    start += p.ms;
  }
  return Number.POSITIVE_INFINITY;
}

/** The most specific code of a failed fetch (`fetch failed` wraps the cause). */
function errorCode(err: unknown): string {
  const e = err as { code?: unknown; cause?: { code?: unknown; name?: unknown }; name?: unknown };
  return String(e?.code ?? e?.cause?.code ?? e?.cause?.name ?? e?.name ?? 'error');
}

export async function runClient(run: ClientRun): Promise<ClientResult> {
  const mesh = await createMesh(
    { services: { svc: { endpoints: run.ports.map((p) => `127.0.0.1:${p}`), ...run.service } } },
    run.stallBlind === true ? { now: () => performance.now() } : {},
  );
  const result: { -readonly [K in keyof ClientResult]: ClientResult[K] } = {
    sched: [],
    lat: [],
    status: [],
    done: [],
    errors: {},
    attempts: {},
    eldP99Ms: 0,
    eldMaxMs: 0,
  };
  let recording = false;
  mesh.events.on('attempt', (e) => {
    if (!recording) return;
    const port = String(e.endpoint.endpoint.port);
    result.attempts[port] = (result.attempts[port] ?? 0) + 1;
  });
  const eld = monitorEventLoopDelay({ resolution: 10 });
  try {
    await mesh.ready();
    const wait = run.startAt - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const t0 = performance.now();
    const total = run.phases.reduce((a, p) => a + p.ms, 0);
    let pending = 0;
    let drained: (() => void) | undefined;
    const send = (sched: number) => {
      const record = sched >= run.warmupMs;
      pending++;
      mesh
        .fetch('http://svc/')
        .then(
          async (res) => {
            await res.arrayBuffer();
            return { status: res.status, code: undefined as string | undefined };
          },
          (err: unknown) => ({ status: 0, code: errorCode(err) }),
        )
        .then(({ status, code }) => {
          const now = performance.now() - t0;
          if (record) {
            result.sched.push(sched);
            result.lat.push(status === 0 ? -1 : now - sched);
            result.status.push(status);
            result.done.push(now);
            if (code !== undefined) result.errors[code] = (result.errors[code] ?? 0) + 1;
          }
          if (--pending === 0) drained?.();
        });
    };
    let k = 0;
    let next = scheduleTime(run.phases, 0);
    // One timer per scheduled request (not a 1 ms poll): the client wakes when the next request
    // is due, and sends every request that is due by then (it catches up after a stall).
    await new Promise<void>((resolve) => {
      const tick = () => {
        const now = performance.now() - t0;
        if (!recording && now >= run.warmupMs) {
          recording = true;
          eld.enable();
        }
        while (next <= now && next < total) {
          send(next);
          next = scheduleTime(run.phases, ++k);
        }
        if (now >= total || next >= total) {
          setTimeout(resolve, Math.max(0, total - now));
          return;
        }
        setTimeout(tick, Math.max(0, Math.min(next, run.warmupMs > now ? run.warmupMs : next) - now));
      };
      tick();
    });
    eld.disable();
    result.eldP99Ms = eld.count > 0 ? Math.max(0, eld.percentile(99) / 1e6 - 10) : 0;
    result.eldMaxMs = eld.count > 0 ? Math.max(0, eld.max / 1e6 - 10) : 0;
    recording = false;
    if (pending > 0) {
      await Promise.race([
        new Promise<void>((r) => {
          drained = r;
        }),
        new Promise((r) => setTimeout(r, 10_000).unref()),
      ]);
    }
    return result;
  } finally {
    await mesh.close();
  }
}

/**
 * `MESHLET_BENCH_CLIENT_STALLS=STALL/EVERY` (ms, e.g. `150/500`): the client process blocks its own
 * event loop STALL ms about every EVERY ms (±50%), as a busy or starved client would, while the
 * instances keep their capacity (the block sleeps, it takes no CPU from them). For the A/B of the
 * limiter's handling of the client's own stalls on a machine whose load would otherwise decide.
 * Returns the stop function.
 */
function clientStalls(spec: string | undefined): () => void {
  const m = /^(\d+)\/(\d+)$/.exec(spec ?? '');
  if (m === null) return () => {};
  const stall = Number(m[1]);
  const every = Number(m[2]);
  const cell = new Int32Array(new SharedArrayBuffer(4));
  let timer: NodeJS.Timeout | undefined;
  const next = () => {
    timer = setTimeout(
      () => {
        Atomics.wait(cell, 0, 0, stall);
        next();
      },
      every * (0.5 + Math.random()),
    );
  };
  next();
  return () => clearTimeout(timer);
}

if (process.argv[2] === 'child' && process.send) {
  // Load everything a mesh loads lazily before saying ready, so that the first measured run does
  // not compete with eight processes compiling modules.
  const warm = await createMesh({ services: { warm: { endpoints: ['127.0.0.1:9'] } } });
  await warm.ready();
  await warm.close();
  process.on('message', (m: { cmd?: string; id?: number; count?: number; run?: ClientRun }) => {
    const run = m.run;
    if (m.cmd !== 'run' || run === undefined) return;
    const stopStalls = clientStalls(process.env.MESHLET_BENCH_CLIENT_STALLS);
    Promise.all(Array.from({ length: m.count ?? 1 }, () => runClient(run)))
      .finally(stopStalls)
      .then(
        (results) => process.send?.({ id: m.id, results }),
        (err: unknown) => process.send?.({ id: m.id, error: String((err as Error)?.stack ?? err) }),
      );
  });
  process.on('disconnect', () => process.exit(0));
  process.send({ ready: true });
}
