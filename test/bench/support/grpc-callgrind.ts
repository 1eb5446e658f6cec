/**
 * Client instructions per gRPC unary call under callgrind (repeatable whatever the machine's load):
 * N echo calls at concurrency C through one variant to the benchmark server (`grpc-servers.mjs`,
 * its own process, not traced), after a warm-up; only the measured calls are counted
 * (`callgrind_control --zero` before a window of N calls, `--dump` after it), in W windows:
 *
 *   node --conditions=meshlet-source --import tsx test/bench/support/grpc-callgrind.ts mesh 20 1 20  # warm tsx's cache
 *   mkdir -p /tmp/cg && CALLGRIND_OUT=/tmp/cg/g valgrind --tool=callgrind --separate-threads=yes \
 *     --callgrind-out-file=/tmp/cg/g.%p --smc-check=all-non-file node --perf-basic-prof \
 *     --conditions=meshlet-source --import tsx test/bench/support/grpc-callgrind.ts mesh 3000 10 5000
 *
 * counts the main thread (`<file>.1-01`; V8's helper threads vary by more than a call costs) with
 * V8's compiler and scavenges on their usual threads; run the variants side by side in the same
 * minutes and compare. `--perf-basic-prof` names JIT code: callgrind lists V8's generated code as
 * `???:0x…`, which `/tmp/perf-<pid>.map` resolves. For bytes allocated per call, run it with
 * `node --expose-gc --single-threaded --no-memory-reducer --min-semi-space-size=256
 * --max-semi-space-size=256` (natively is enough): `gc()` before each window and a young
 * generation larger than a window allocates keep collections out of it, and the heap's growth is
 * printed. Do not compare instruction counts of such runs: single-threaded, TurboFan compiles
 * land in the windows, and the `gc()` makes the next window recompile what it flushed
 * (docs/benchmarks.md, 2026-12-06, gRPC unary per call).
 *
 * Arguments: variant, N, concurrency C, warm-up calls, windows W. Variants: `raw` (a grpc-js
 * client to `127.0.0.1:port`, pick_first), `mesh` (`createMeshClient(EchoClient, 'mesh:///bench')`
 * on `createMesh` with the defaults, telemetry included, as `suites/grpc.ts`), `mesh-bare` (the
 * same with metrics off), `plain` (a plain grpc-js client on `mesh:///bench`: meshlet's resolver and
 * picker, no `MeshCall`). A `-beside` suffix (`raw-beside`, `mesh-beside`) runs the warm-up through both
 * a raw and a mesh client in the same process and measures the named one, as `pnpm bench` does
 * (its raw and mesh rounds share one process): grpc-js's and Node's shared code (EventEmitter,
 * streams, grpc-js's call classes) then sees both kinds of calls, which makes some of its sites
 * polymorphic for both variants. Prints per window `<variant> c=<C> <N> window <w>: <instructions per
 * call> cpu … heap … B/call`. Run it under `node --cpu-prof` instead of valgrind for a profile of
 * the same loop (`cpuprofile-groups.mjs`).
 *
 * `HEAP_SAMPLE=<bytes>` (natively, not under valgrind): which functions allocate a call's bytes —
 * the inspector's sampling heap profiler, one sample every <bytes> (128–256), with the objects that
 * scavenges and mark-compacts collected included, over all windows; prints the sampled bytes per
 * call and the top allocating functions (self, bytes per call; `HEAP_TOP`, default 40). Sampling
 * and inlining make each line an estimate (an inlined callee's bytes are its caller's): compare
 * variants over the same N, and trust differences of tens of bytes per call only when they repeat.
 */
import { fork } from 'node:child_process';
import { Session } from 'node:inspector/promises';
import { type Client, credentials } from '@grpc/grpc-js';
import { createMeshClient } from '../../../packages/grpc/src/index.js';
import { EchoClient, echo } from '../../../packages/grpc/test/helpers.js';
import { createMesh } from '../../../packages/meshlet/src/index.js';
import { control, lastDumpInstructions } from './callgrind-control.js';

const named = process.argv[2] ?? 'mesh';
const beside = named.endsWith('-beside');
const variant = beside ? named.slice(0, -'-beside'.length) : named;
const n = Number(process.argv[3] ?? 4000);
const concurrency = Number(process.argv[4] ?? 1);
const warm = Number(process.argv[5] ?? 4000);
const windows = Number(process.argv[6] ?? 1);
const underCallgrind = process.env.CALLGRIND_OUT !== undefined;

const child = fork(new URL('./grpc-servers.mjs', import.meta.url), ['1', '0', '1'], {
  execArgv: [],
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
});
const ports = await new Promise<number[]>((resolve) =>
  child.once('message', (m) => resolve((m as { ports: number[] }).ports)),
);
const target = `127.0.0.1:${ports[0]}`;
const mesh =
  variant.startsWith('raw') && !beside
    ? undefined
    : await createMesh({
        services: { bench: { endpoints: [target] } },
        ...(variant.endsWith('-bare') ? { telemetry: { metrics: { enabled: false } } } : {}),
      });
await mesh?.ready();
const clientOf = (v: string): Client =>
  v === 'raw'
    ? new EchoClient(target, credentials.createInsecure())
    : v === 'plain'
      ? new EchoClient('mesh:///bench', credentials.createInsecure())
      : createMeshClient(EchoClient, 'mesh:///bench');
const client = clientOf(variant);
const other: Client | undefined = beside ? clientOf(variant === 'raw' ? 'mesh' : 'raw') : undefined;

async function runOn(c: Client, count: number): Promise<void> {
  let left = count;
  const worker = async () => {
    while (left-- > 0) await echo(c, { text: 'x' });
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}
const run = (count: number) => runOn(client, count);

if (other !== undefined) {
  // As the suite's ABBA rounds: both clients warm up in turns.
  for (let i = 0; i < 4; i++) {
    await runOn(i % 3 === 0 ? client : other, Math.ceil(warm / 4));
  }
} else await run(warm);
// With the flags of the header's allocation recipe, no garbage collection falls inside a window.
const gc = (globalThis as { gc?: () => void }).gc;
const sampleEvery = Number(process.env.HEAP_SAMPLE ?? 0);
const session = sampleEvery > 0 ? new Session() : undefined;
if (session !== undefined) {
  session.connect();
  await session.post('HeapProfiler.startSampling', {
    samplingInterval: sampleEvery,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
}
for (let w = 0; w < windows; w++) {
  gc?.();
  if (underCallgrind) await control('--zero');
  const h0 = process.memoryUsage().heapUsed;
  const c0 = process.cpuUsage();
  await run(n);
  const cpu = process.cpuUsage(c0);
  const h1 = process.memoryUsage().heapUsed;
  if (underCallgrind) await control(`--dump=window${w}`);
  const ir = underCallgrind ? lastDumpInstructions() : undefined;
  console.log(
    `${named} c=${concurrency} ${n} window ${w}: ${ir === undefined ? '(no callgrind)' : Math.round(ir / Math.max(1, n))} ` +
      `cpu ${((cpu.user + cpu.system) / n).toFixed(1)}us/call heap ${gc === undefined ? '?' : Math.round((h1 - h0) / n)} B/call`,
  );
}
if (session !== undefined) {
  const { profile } = (await session.post('HeapProfiler.stopSampling')) as { profile: { head: SampleNode } };
  session.disconnect();
  printAllocations(profile.head, n * windows, Number(process.env.HEAP_TOP ?? 40));
}
client.close();
other?.close();
await mesh?.close();
child.kill();
process.exit(0);

interface SampleNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: SampleNode[];
}

/** Sampled bytes per call, then the top allocating functions (self) by bytes per call. */
function printAllocations(head: SampleNode, calls: number, top: number): void {
  const byFn = new Map<string, number>();
  let total = 0;
  const walk = (node: SampleNode) => {
    const f = node.callFrame;
    const where = f.url.replace(/^.*node_modules\//, '').replace(/^.*\/(packages|test)\//, '$1/');
    const key = `${f.functionName || '(anonymous)'} ${where}:${f.lineNumber + 1}`;
    byFn.set(key, (byFn.get(key) ?? 0) + node.selfSize);
    total += node.selfSize;
    for (const c of node.children) walk(c);
  };
  walk(head);
  console.log(`${named} c=${concurrency}: ${Math.round(total / calls)} B/call sampled over ${calls} calls`);
  for (const [k, v] of [...byFn].sort((a, b) => b[1] - a[1]).slice(0, top))
    console.log(`${String(Math.round(v / calls)).padStart(7)}  ${k}`);
}
