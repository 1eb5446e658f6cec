/**
 * What a gRPC unary call puts on the wire and costs the server, per call, raw grpc-js against
 * `createMeshClient` in one process as `suites/grpc.ts` runs them (both clients made and warmed
 * in the same process, the echo server `grpc-servers.mjs` in its own): counts that do not depend
 * on the machine's load, read from the kernel around windows of N calls at concurrency C:
 *
 *   node --conditions=meshlet-source --import tsx test/bench/support/grpc-wire.ts 20000 50 5000 4
 *
 * Arguments: calls per window N, concurrency C, warm-up calls per variant, windows per variant
 * (run in ABBA order: raw, mesh, mesh, raw, …). Per window and process (client = this one,
 * server = the child), divided by N: `syscr`/`syscw` (read- and write-class system calls,
 * `/proc/<pid>/io`: read/readv and write/writev — what libuv uses for TCP), `rchar`/`wchar` (their
 * bytes: the HTTP/2 bytes of a call in each direction, plus the IPC channel's few), voluntary and
 * involuntary context switches (`/proc/<pid>/status`: a voluntary one is a wait in epoll with
 * nothing to do), and CPU (client: `process.cpuUsage`; server: `/proc/<pid>/stat`, 10 ms ticks).
 * Each window also prints the client's event-loop idle and active time per call
 * (`performance.eventLoopUtilization`; wall time, usable on a quiet machine only). The client's
 * garbage-collection pauses are summed per window too (`PerformanceObserver` `gc`
 * entries: scavenges and mark-compacts, main-thread pause time per call — wall time, so it grows
 * with the load; the counts do not). After the windows it lists the TCP connections to the server
 * (`ss`), by client port, with the bytes each carried, so connections per variant can be told
 * apart. The system calls are counted by the kernel, not by `strace`: ptrace slows each call by
 * microseconds, which changes how many HTTP/2 frames a write batches at concurrency 50 — the very
 * thing measured. Frames are not counted one by one; the bytes per call are (a frame more per
 * call would add its 9-byte header, and HPACK makes the header blocks the same bytes each time).
 *
 * `WIRE_FRAMES=1`: the clients reach the server through a TCP relay in the server's process that
 * counts the HTTP/2 frames each way by type (DATA, HEADERS, WINDOW_UPDATE, PING, …), printed per
 * call for each window (the relay costs the server process CPU and adds a hop: use it for the
 * frame counts, not for the other figures).
 * `WIRE_SESSION=1`: the server child reports, per HTTP/2 session, the streams it served (and the
 * most in flight at once) and the settings its client sent (max concurrent streams, window sizes,
 * frame size), so the channel options each client's connection was made with can be compared.
 * `WIRE_VARIANTS=raw,plain,mesh` (default `raw,mesh`): `plain` is a plain grpc-js client on
 * `mesh:///bench` (meshlet's resolver and picker, no `MeshCall`). `WIRE_PROFILE=1`: a CPU profile
 * of each window (see below), compared per function with the first variant's (`WIRE_TOP` lines).
 */
import { execFileSync, fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { constants, PerformanceObserver, performance } from 'node:perf_hooks';
import { type Client, credentials } from '@grpc/grpc-js';
import { createMeshClient } from '../../../packages/grpc/src/index.js';
import { EchoClient, echo } from '../../../packages/grpc/test/helpers.js';
import { createMesh } from '../../../packages/meshlet/src/index.js';

const n = Number(process.argv[2] ?? 20_000);
const concurrency = Number(process.argv[3] ?? 50);
const warm = Number(process.argv[4] ?? 5_000);
const windows = Number(process.argv[5] ?? 4);

const child = fork(new URL('./grpc-servers.mjs', import.meta.url), ['1', '0', '1'], {
  execArgv: [],
  env: { ...process.env },
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
});
const ports = await new Promise<number[]>((resolve) =>
  child.once('message', (m) => resolve((m as { ports: number[] }).ports)),
);
const serverPid = child.pid as number;
const target = `127.0.0.1:${ports[0]}`;
// `WIRE_METRICS=0`: the mesh without telemetry's metrics (what they cost a call).
const mesh = await createMesh({
  services: { bench: { endpoints: [target] } },
  ...(process.env.WIRE_METRICS === '0' ? { telemetry: { metrics: { enabled: false } } } : {}),
});
await mesh.ready();
// `WIRE_VARIANTS` (default `raw,mesh`): also `plain` (a plain grpc-js client on `mesh:///bench`:
// meshlet's resolver and picker, no `MeshCall`).
const names = (process.env.WIRE_VARIANTS ?? 'raw,mesh').split(',');
const makers: Record<string, () => Client> = {
  raw: () => new EchoClient(target, credentials.createInsecure()),
  mesh: () => createMeshClient(EchoClient, 'mesh:///bench'),
  plain: () => new EchoClient('mesh:///bench', credentials.createInsecure()),
};
const clients: Record<string, Client> = {};
for (const name of names) clients[name] = (makers[name] as () => Client)();

async function run(c: Client, count: number): Promise<void> {
  let left = count;
  const worker = async () => {
    while (left-- > 0) await echo(c, { text: 'x' });
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

interface Sample {
  syscr: number;
  syscw: number;
  rchar: number;
  wchar: number;
  vcs: number;
  ivcs: number;
  cpuUs: number;
}

// The client's garbage-collection pauses (main thread), by kind, summed over each window.
const gcPause = { minor: 0, major: 0, minorCount: 0, majorCount: 0 };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const kind = (e as { detail?: { kind?: number } }).detail?.kind;
    if (kind === constants.NODE_PERFORMANCE_GC_MINOR) {
      gcPause.minor += e.duration;
      gcPause.minorCount++;
    } else {
      gcPause.major += e.duration;
      gcPause.majorCount++;
    }
  }
}).observe({ entryTypes: ['gc'] });

// `WIRE_FRAMES=1`: the server child relays each connection through a frame counter.
type FrameCounts = { toServer: Record<string, number>; toClient: Record<string, number> };
const counting = process.env.WIRE_FRAMES === '1';
const askFrames = (): Promise<FrameCounts> =>
  new Promise((resolve) => {
    child.once('message', (m) => resolve(structuredClone((m as { frames: FrameCounts }).frames)));
    child.send({ frames: true });
  });
const frameDiff = (a: FrameCounts, b: FrameCounts) =>
  (['toServer', 'toClient'] as const)
    .map(
      (dir) =>
        `${dir} ${Object.keys(b[dir])
          .sort()
          .map((t) => `${t} ${(((b[dir][t] ?? 0) - (a[dir][t] ?? 0)) / n).toFixed(3)}`)
          .join(' ')}`,
    )
    .join('; ');

const TICK_US = 1e6 / Number(execFileSync('getconf', ['CLK_TCK']).toString().trim() || 100);

function sample(pid: number | 'self'): Sample {
  const io = readFileSync(`/proc/${pid}/io`, 'utf8');
  const field = (text: string, name: string) => Number(new RegExp(`${name}:\\s*(\\d+)`).exec(text)?.[1] ?? 0);
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  let cpuUs: number;
  if (pid === 'self') {
    const u = process.cpuUsage();
    cpuUs = u.user + u.system;
  } else {
    // Fields after the command's closing parenthesis: utime is the 14th field, stime the 15th.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    cpuUs = (Number(rest[11]) + Number(rest[12])) * TICK_US;
  }
  return {
    syscr: field(io, 'syscr'),
    syscw: field(io, 'syscw'),
    rchar: field(io, 'rchar'),
    wchar: field(io, 'wchar'),
    vcs: field(st, 'voluntary_ctxt_switches'),
    ivcs: field(st, 'nonvoluntary_ctxt_switches'),
    cpuUs,
  };
}

const per = (a: Sample, b: Sample, k: keyof Sample) => (b[k] - a[k]) / n;
const fmt = (a: Sample, b: Sample) =>
  `rd ${per(a, b, 'syscr').toFixed(3)} wr ${per(a, b, 'syscw').toFixed(3)} ` +
  `in ${per(a, b, 'rchar').toFixed(1)} B out ${per(a, b, 'wchar').toFixed(1)} B ` +
  `vcs ${per(a, b, 'vcs').toFixed(3)} ivcs ${per(a, b, 'ivcs').toFixed(3)} cpu ${per(a, b, 'cpuUs').toFixed(1)}us`;

for (const name of names) await run(clients[name] as Client, warm);

// `WIRE_PROFILE=1`: a CPU profile of every window (the inspector's profiler, started and stopped
// around it, so all variants are profiled in one process with the same JIT state); self time per
// call by function is summed per variant and the functions whose time differs most from the first
// variant's are printed at the end.
interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}
const profiling = process.env.WIRE_PROFILE === '1';
const session = profiling ? new Session() : undefined;
if (session !== undefined) {
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 100 });
}
const selfUs: Record<string, Map<string, number>> = {};
const profiledCalls: Record<string, number> = {};
function addProfile(name: string, profile: Profile): void {
  const byId = new Map(profile.nodes.map((x) => [x.id, x]));
  let m = selfUs[name];
  if (m === undefined) {
    m = new Map();
    selfUs[name] = m;
  }
  profiledCalls[name] = (profiledCalls[name] ?? 0) + n;
  for (let i = 0; i < profile.samples.length; i++) {
    const cf = (byId.get(profile.samples[i] as number) as ProfileNode).callFrame;
    const where = cf.url.replace(/^.*node_modules\//, '').replace(/^.*\/(packages|test)\//, '$1/');
    const key = `${cf.functionName || '(anonymous)'} ${where}${where ? `:${cf.lineNumber + 1}` : ''}`;
    m.set(key, (m.get(key) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
}
const totals: Record<string, { c: Sample[]; s: Sample[]; gc: number[] }> = {};
for (let w = 0; w < windows * names.length; w++) {
  // ABBA…: forwards in even passes, backwards in odd ones.
  const pass = Math.floor(w / names.length);
  const i = w % names.length;
  const name = names[pass % 2 === 0 ? i : names.length - 1 - i] as string;
  const c0 = sample('self');
  const s0 = sample(serverPid);
  const f0 = counting ? await askFrames() : undefined;
  if (session !== undefined) await session.post('Profiler.start');
  const g0 = { ...gcPause };
  const elu0 = performance.eventLoopUtilization();
  const t0 = performance.now();
  await run(clients[name] as Client, n);
  const ms = performance.now() - t0;
  const elu = performance.eventLoopUtilization(elu0);
  if (session !== undefined)
    addProfile(name, ((await session.post('Profiler.stop')) as { profile: Profile }).profile);
  // PerformanceObserver delivers entries asynchronously: let the window's last ones arrive.
  await new Promise((r) => setTimeout(r, 20));
  const gc = {
    minorUs: ((gcPause.minor - g0.minor) * 1000) / n,
    majorUs: ((gcPause.major - g0.major) * 1000) / n,
    minor: gcPause.minorCount - g0.minorCount,
    major: gcPause.majorCount - g0.majorCount,
  };
  const c1 = sample('self');
  const s1 = sample(serverPid);
  if (f0 !== undefined) console.log(`  frames per call: ${frameDiff(f0, await askFrames())}`);
  let t = totals[name];
  if (t === undefined) {
    t = { c: [], s: [], gc: [] };
    totals[name] = t;
  }
  t.c.push(c0, c1);
  t.s.push(s0, s1);
  t.gc.push(gc.minorUs, gc.majorUs);
  console.log(
    `${name.padEnd(4)} c=${concurrency} w${w}: ${Math.round((n * 1000) / ms)} calls/s, ` +
      `event loop idle ${((elu.idle * 1000) / n).toFixed(1)}us/call active ${((elu.active * 1000) / n).toFixed(1)}us/call\n` +
      `  client ${fmt(c0, c1)}\n  server ${fmt(s0, s1)}\n` +
      `  client GC pauses ${gc.minorUs.toFixed(1)}us/call in ${gc.minor} scavenges, ${gc.majorUs.toFixed(1)}us/call in ${gc.major} mark-compacts`,
  );
}
// Means over the windows of each variant.
for (const [name, t] of Object.entries(totals)) {
  const mean = (xs: Sample[]) => {
    const acc: Sample = { syscr: 0, syscw: 0, rchar: 0, wchar: 0, vcs: 0, ivcs: 0, cpuUs: 0 };
    const zero: Sample = { ...acc };
    for (let i = 0; i + 1 < xs.length; i += 2)
      for (const k of Object.keys(acc) as (keyof Sample)[])
        acc[k] += ((xs[i + 1] as Sample)[k] - (xs[i] as Sample)[k]) / (xs.length / 2);
    return [zero, acc] as const;
  };
  const [cz, c] = mean(t.c);
  const [sz, s] = mean(t.s);
  let minor = 0;
  let major = 0;
  for (let i = 0; i + 1 < t.gc.length; i += 2) {
    minor += (t.gc[i] as number) / (t.gc.length / 2);
    major += (t.gc[i + 1] as number) / (t.gc.length / 2);
  }
  console.log(
    `MEAN ${name.padEnd(4)} c=${concurrency}\n  client ${fmt(cz, c)}\n  server ${fmt(sz, s)}\n` +
      `  client GC pauses ${minor.toFixed(1)}us/call scavenges, ${major.toFixed(1)}us/call mark-compacts`,
  );
}
if (profiling) {
  const base = selfUs[names[0] as string] as Map<string, number>;
  const perCall = (name: string, key: string) =>
    (selfUs[name]?.get(key) ?? 0) / (profiledCalls[name] as number);
  for (const name of names.slice(1)) {
    const other = selfUs[name] as Map<string, number>;
    const keys = [...new Set([...base.keys(), ...other.keys()])];
    const total = (v: string) => keys.reduce((a, k) => a + perCall(v, k), 0);
    console.log(
      `profile, self time per call: ${names[0]} ${total(names[0] as string).toFixed(2)}us, ${name} ${total(name).toFixed(2)}us; largest differences:`,
    );
    keys.sort(
      (a, b) =>
        Math.abs(perCall(name, b) - perCall(names[0] as string, b)) -
        Math.abs(perCall(name, a) - perCall(names[0] as string, a)),
    );
    for (const k of keys.slice(0, Number(process.env.WIRE_TOP ?? 40))) {
      const a = perCall(names[0] as string, k);
      const b = perCall(name, k);
      console.log(
        `${a.toFixed(3).padStart(8)} ${b.toFixed(3).padStart(8)} ${(b - a).toFixed(3).padStart(8)}  ${k}`,
      );
    }
  }
}
try {
  const ss = execFileSync('ss', ['-tni', 'state', 'established', `( dport = :${ports[0]} )`]).toString();
  console.log(`connections to the server:\n${ss}`);
} catch (e) {
  console.log(`ss failed: ${(e as Error).message}`);
}
if (process.env.WIRE_SESSION === '1') {
  child.send({ sessions: true });
  await new Promise((resolve) =>
    child.once('message', (m) => resolve(console.log(JSON.stringify(m, null, 1)))),
  );
}
for (const c of Object.values(clients)) c.close();
await mesh.close();
child.kill();
process.exit(0);
