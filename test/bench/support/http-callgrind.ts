/**
 * Client cost per HTTP request, raw undici vs the mesh, sequential or at concurrency C: N requests
 * through one variant to the benchmark server (its own process, not traced), after a warm-up, in
 * W measured windows. Each window prints instructions per request (under callgrind: only the
 * window is counted, `callgrind_control --zero` before it and `--dump` after it), CPU per request,
 * the garbage collections in it (scavenges and mark-compacts, their count and pause time per
 * request), the host's TCP segments, the server process' CPU and both processes' context switches
 * per request and, with `--expose-gc`, the heap's growth per request:
 *
 *   node --conditions=meshlet-source --import tsx test/bench/support/http-callgrind.ts mesh-request 20 20  # warm tsx's cache
 *   mkdir -p /tmp/cg && CALLGRIND_OUT=/tmp/cg/h valgrind --tool=callgrind --separate-threads=yes \
 *     --callgrind-out-file=/tmp/cg/h.%p --smc-check=all-non-file node --conditions=meshlet-source \
 *     --import tsx test/bench/support/http-callgrind.ts raw-request,mesh-request 4000 30000 10 4
 *
 * counts the main thread (`<file>.<n>-01`; V8's helper threads vary by more than a request costs).
 * Warm up with 30,000 requests or more: V8 gives the mesh's per-request functions TurboFan code only
 * after 10,000–28,000 requests (Node 24, `--trace-opt`), and windows before that count the mesh's
 * code in Maglev (docs/benchmarks.md, "The client at steady state").
 * Run raw and mesh side by side in the same minutes and compare. Bytes allocated per request:
 * natively with `node --expose-gc --single-threaded --no-memory-reducer --min-semi-space-size=256
 * --max-semi-space-size=256` (`gc()` before each window, a young generation larger than a window
 * allocates: no collection inside it). Without valgrind it runs natively (CPU and GC per request),
 * and with `HTTP_PROFILE=<file>` it writes a V8 CPU profile of each window alone
 * (`<file>.<variant>.<w>.cpuprofile`, 100 µs sampling; read it with `cpuprofile-groups.mjs <file> N`).
 *
 * The old recipe still works: without `CALLGRIND_OUT`, a run's whole-process "Collected" count
 * for two request counts, differenced (docs/benchmarks.md, issue 13, milestone 3).
 *
 * Arguments: variant, N, warm-up requests, concurrency C (1), windows W (1). Variants:
 * `raw-request` (undici `Pool.request`), `mesh-request` (`mesh.dispatcher.request`), `raw-fetch`
 * (undici `fetch` with the pool as dispatcher), `mesh-fetch` (`mesh.fetch`). The pool and the mesh
 * are those of `suites/fetch.ts` (a `Pool` with no connection limit, `createMesh` with the
 * defaults, metrics on); `mesh-request-bare` and `mesh-fetch-bare` turn metrics off.
 */
import { fork } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { Pool, fetch as undiciFetch } from 'undici';
import { createMesh } from '../../../packages/meshlet/src/index.js';
import { control, lastDumpInstructions } from './callgrind-control.js';

/** One variant, or several separated by commas: run in one process, as the suite runs them. */
const variants = (process.argv[2] ?? 'mesh-request').split(',');
const n = Number(process.argv[3] ?? 2000);
const warm = Number(process.argv[4] ?? 3000);
const concurrency = Number(process.argv[5] ?? 1);
const windows = Number(process.argv[6] ?? 1);
const underCallgrind = process.env.CALLGRIND_OUT !== undefined;
/** `HTTP_PROFILE=<file>`: a V8 CPU profile of the measured windows only (`<file>.<variant>.<w>.cpuprofile`). */
const profileTo = process.env.HTTP_PROFILE;

const child = fork(new URL('./http-server.mjs', import.meta.url), [], {
  execArgv: [],
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
});
const port = await new Promise<number>((resolve) =>
  child.once('message', (m) => resolve((m as { port: number }).port)),
);
const origin = `http://127.0.0.1:${port}`;
// As suites/fetch.ts: no connection limit (one connection per request in flight).
const pool = new Pool(origin, { keepAliveTimeout: 4_000, connectTimeout: 10_000 });
// `…-bare`: the mesh with metrics off (what telemetry costs per request, by difference).
const bare = variants.some((v) => v.endsWith('-bare'));
const mesh = variants.some((v) => v.startsWith('mesh'))
  ? await createMesh({
      services: { bench: { endpoints: [`127.0.0.1:${port}`] } },
      ...(bare ? { telemetry: { metrics: { enabled: false } } } : {}),
    })
  : undefined;
if (mesh) await mesh.ready();

const PATH = '/items/42';
const rawUrl = `${origin}${PATH}`;
const meshUrl = `http://bench${PATH}`;

async function once(variant: string): Promise<void> {
  switch (variant.endsWith('-bare') ? variant.slice(0, -5) : variant) {
    case 'raw-request': {
      const r = await pool.request({ method: 'GET', path: PATH });
      await r.body.arrayBuffer();
      return;
    }
    case 'mesh-request': {
      const r = await (mesh as NonNullable<typeof mesh>).dispatcher.request({
        origin: 'http://bench',
        method: 'GET',
        path: PATH,
      });
      await r.body.arrayBuffer();
      return;
    }
    case 'raw-fetch': {
      const r = await undiciFetch(rawUrl, { dispatcher: pool });
      await r.arrayBuffer();
      return;
    }
    case 'mesh-fetch': {
      const r = await (mesh as NonNullable<typeof mesh>).fetch(meshUrl);
      await r.arrayBuffer();
      return;
    }
    default:
      throw new Error(`unknown variant ${variant}`);
  }
}

/** `count` requests, `concurrency` at a time (closed loop, as the suite's workers). */
async function run(variant: string, count: number): Promise<void> {
  let left = count;
  const worker = async () => {
    while (left-- > 0) await once(variant);
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

/** Garbage collections seen by a `gc` performance observer: count and pause time, by kind. */
const gcs = { minor: 0, minorMs: 0, major: 0, majorMs: 0 };
const gcObserver = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const kind = (e as unknown as { detail?: { kind?: number } }).detail?.kind;
    if (kind === constants.NODE_PERFORMANCE_GC_MINOR) {
      gcs.minor++;
      gcs.minorMs += e.duration;
    } else if (
      kind === constants.NODE_PERFORMANCE_GC_MAJOR ||
      kind === constants.NODE_PERFORMANCE_GC_INCREMENTAL
    ) {
      gcs.major++;
      gcs.majorMs += e.duration;
    }
  }
});

/**
 * CPU ticks (user + system, 1/100 s) of each thread of this process by name (Linux `/proc`): the
 * main thread's (`node`) and V8's helper threads' (`V8Worker`: concurrent compilation, parallel
 * scavenges, concurrent marking), which `process.cpuUsage()` adds together.
 */
function threadTicks(): Map<string, number> {
  const out = new Map<string, number>();
  try {
    for (const t of readdirSync('/proc/self/task')) {
      const stat = readFileSync(`/proc/self/task/${t}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ticks = Number(f[11]) + Number(f[12]);
      const key = t === String(process.pid) ? 'main' : name.replace(/\s+/g, '');
      out.set(key, (out.get(key) ?? 0) + ticks);
    }
  } catch {
    // not Linux
  }
  return out;
}

/** Open sockets of this process (connections in the pools), from `/proc/self/fd`. */
function openSockets(): number | string {
  try {
    let n = 0;
    for (const fd of readdirSync('/proc/self/fd')) {
      try {
        if (readlinkSync(`/proc/self/fd/${fd}`).startsWith('socket:')) n++;
      } catch {}
    }
    return n;
  } catch {
    return '?';
  }
}

/**
 * A process' context switches (voluntary: it blocked, e.g. waiting in epoll; involuntary: it was
 * preempted) and CPU ticks (user + system, all threads), from `/proc/<pid>`.
 */
function procCounters(pid: number | string): { vol: number; invol: number; ticks: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return {
      vol: Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN),
      invol: Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN),
      ticks: Number(f[11]) + Number(f[12]),
    };
  } catch {
    return { vol: Number.NaN, invol: Number.NaN, ticks: Number.NaN };
  }
}

/** This process' read and write system calls so far (`/proc/self/io`: `syscr`, `syscw`). */
function syscalls(): { r: number; w: number } {
  try {
    const io = readFileSync('/proc/self/io', 'utf8');
    return {
      r: Number(/syscr:\s+(\d+)/.exec(io)?.[1] ?? Number.NaN),
      w: Number(/syscw:\s+(\d+)/.exec(io)?.[1] ?? Number.NaN),
    };
  } catch {
    return { r: Number.NaN, w: Number.NaN };
  }
}

/** The host's TCP segments sent so far (`/proc/net/snmp`: every process, loopback included). */
function tcpOutSegs(): number {
  try {
    const lines = readFileSync('/proc/net/snmp', 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('Tcp:'));
    const names = (lines[0] as string).split(/\s+/);
    const values = (lines[1] as string).split(/\s+/);
    return Number(values[names.indexOf('OutSegs')]);
  } catch {
    return Number.NaN;
  }
}

try {
  for (const v of variants) await run(v, warm);
  if (!underCallgrind) gcObserver.observe({ entryTypes: ['gc'] });
  // With the flags of the header's allocation recipe, no garbage collection falls inside a window.
  const gc = (globalThis as { gc?: () => void }).gc;
  // Several variants: each window measures each in turn, in ABBA order (as suites/fetch.ts).
  const order = (w: number) => (w % 2 === 0 ? variants : [...variants].reverse());
  for (let w = 0; w < windows; w++)
    for (const variant of order(w)) {
      gc?.();
      // gc entries arrive asynchronously: let the forced one's be delivered before the window.
      await new Promise((r) => setImmediate(r));
      Object.assign(gcs, { minor: 0, minorMs: 0, major: 0, majorMs: 0 });
      if (underCallgrind) await control('--zero');
      const session = profileTo === undefined ? undefined : new Session();
      if (session !== undefined) {
        session.connect();
        await session.post('Profiler.enable');
        await session.post('Profiler.setSamplingInterval', { interval: 100 });
        await session.post('Profiler.start');
      }
      const t0 = threadTicks();
      const s0 = procCounters(child.pid as number);
      const me0 = procCounters('self');
      const seg0 = tcpOutSegs();
      const io0 = syscalls();
      const h0 = process.memoryUsage().heapUsed;
      const c0 = process.cpuUsage();
      await run(variant, n);
      const cpu = process.cpuUsage(c0);
      const h1 = process.memoryUsage().heapUsed;
      const t1 = threadTicks();
      const s1 = procCounters(child.pid as number);
      const me1 = procCounters('self');
      const seg1 = tcpOutSegs();
      const io1 = syscalls();
      if (session !== undefined) {
        const { profile } = await session.post('Profiler.stop');
        writeFileSync(`${profileTo}.${variant}.${w}.cpuprofile`, JSON.stringify(profile));
        session.disconnect();
      }
      if (underCallgrind) await control(`--dump=${variant}.${w}`);
      await new Promise((r) => setImmediate(r));
      const ir = underCallgrind ? lastDumpInstructions() : undefined;
      const per = Math.max(1, n);
      console.log(
        `${variant} c=${concurrency} ${n} window ${w}: ${ir === undefined ? '(no callgrind)' : Math.round(ir / per)} ` +
          `cpu ${((cpu.user + cpu.system) / per).toFixed(2)}us/req (user ${(cpu.user / per).toFixed(2)}) ` +
          `heap ${gc === undefined ? '?' : Math.round((h1 - h0) / per)} B/req ` +
          `gc: ${gcs.minor} scavenges ${((gcs.minorMs * 1000) / per).toFixed(2)}us/req, ` +
          `${gcs.major} mark-compacts ${((gcs.majorMs * 1000) / per).toFixed(2)}us/req; ${openSockets()} sockets; threads us/req: ${[
            ...t1,
          ]
            .map(([k, v]) => [k, ((v - (t0.get(k) ?? 0)) * 10_000) / per] as const)
            .filter(([, us]) => us > 0)
            .map(([k, us]) => `${k} ${us.toFixed(2)}`)
            .join(', ')}; ` +
          `client syscalls ${((io1.r - io0.r) / per).toFixed(2)} read / ${((io1.w - io0.w) / per).toFixed(2)} write per request, ` +
          `TCP segments ${((seg1 - seg0) / per).toFixed(2)}/req (host), server cpu ${(((s1.ticks - s0.ticks) * 10_000) / per).toFixed(2)}us/req, ` +
          `context switches per request: server ${((s1.vol - s0.vol) / per).toFixed(2)} voluntary ` +
          `${((s1.invol - s0.invol) / per).toFixed(2)} preempted, client (main thread) ${((me1.vol - me0.vol) / per).toFixed(2)} / ` +
          `${((me1.invol - me0.invol) / per).toFixed(2)}`,
      );
    }
} finally {
  gcObserver.disconnect();
  await pool.close();
  await mesh?.close();
  child.kill();
}
