/**
 * The mesh's own instructions per request, without a network: `MeshDispatcher.dispatch` of a GET
 * against the stub pool of `stub-pool.ts` (answers synchronously), with `createMesh` defaults
 * (telemetry's metrics on; `BARE=1`: off), the loop yielding to the event loop every 1,000
 * dispatches. Three measured windows of N dispatches after 50,000 warm-up ones; under callgrind
 * only the windows are counted (main thread):
 *
 *   mkdir -p /tmp/cg && CALLGRIND_OUT=/tmp/cg/s valgrind --tool=callgrind --separate-threads=yes \
 *     --callgrind-out-file=/tmp/cg/s.%p --smc-check=all-non-file node --perf-basic-prof \
 *     --conditions=meshlet-source --import tsx test/bench/support/stub-callgrind.ts 20000 ['{"retry":false}']
 *
 * `--perf-basic-prof` writes `/tmp/perf-<pid>.map`, which names the JIT code in the dumps. On a
 * machine shared with sessions whose processes run in other PID namespaces but share `/tmp`, a
 * process of theirs with the same pid overwrites that file (seen: a map naming another checkout's
 * files): give the run a private `/tmp` (as root: `unshare -m --propagation private sh -c 'mount
 * --bind <dir> /tmp && …'`; docs/benchmarks.md, fifth pass).
 *
 * The optional JSON is merged into the service's config (a policy turned off, as the fetch
 * suite's stub variants). Natively it prints CPU per dispatch instead, and with `--expose-gc`
 * the heap's growth per dispatch (bytes allocated: `gc()` before each window, and a young
 * generation larger than a window allocates, so that nothing is collected inside it):
 *
 *   node --expose-gc --single-threaded --no-memory-reducer --min-semi-space-size=256 \
 *     --max-semi-space-size=256 --conditions=meshlet-source --import tsx \
 *     test/bench/support/stub-callgrind.ts 20000
 */
import { createMesh } from '../../../packages/meshlet/src/index.js';
import { control, lastDumpInstructions } from './callgrind-control.js';
import { sinkHandler, stubPool } from './stub-pool.js';

const n = Number(process.argv[2] ?? 100_000);
const extra = JSON.parse(process.argv[3] ?? '{}') as Record<string, unknown>;
const mesh = await createMesh({
  services: { bench: { endpoints: ['127.0.0.1:9'], ...extra } },
  ...(process.env.BARE ? { telemetry: { metrics: { enabled: false } } } : {}),
});
await mesh.ready();
mesh.dispatcher.poolFor = () => stubPool;
const d = mesh.dispatcher;
const opts = { origin: 'http://bench', method: 'GET', path: '/items/42' } as const;
const underCallgrind = process.env.CALLGRIND_OUT !== undefined;

async function batch(count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    d.dispatch(opts, sinkHandler as unknown as Parameters<typeof d.dispatch>[1]);
    if (i % 1000 === 999) await new Promise((r) => setImmediate(r));
  }
}

await batch(50_000);
const gc = (globalThis as { gc?: () => void }).gc;
for (let w = 0; w < 3; w++) {
  gc?.();
  const h0 = process.memoryUsage().heapUsed;
  if (underCallgrind) await control('--zero');
  const c0 = process.cpuUsage();
  await batch(n);
  const c = process.cpuUsage(c0);
  const bytes = gc === undefined ? '' : `, heap +${Math.round((process.memoryUsage().heapUsed - h0) / n)} B`;
  if (underCallgrind) await control(`--dump=w${w}`);
  const ir = underCallgrind ? lastDumpInstructions() : undefined;
  console.log(
    `stub window ${w}: ${ir === undefined ? '-' : Math.round(ir / n)} instructions, ` +
      `cpu ${(((c.user + c.system) * 1000) / n).toFixed(0)} ns per dispatch${bytes}`,
  );
}
await mesh.close();
