/**
 * `mesh.dispatcher.request` at concurrency 1 in parts, request by request (`alternate()`): raw
 * undici, the mesh with the defaults, the mesh with one feature off at a time or all of them off,
 * and a thin dispatcher (route lookup and a forwarding handler over the same kind of endpoint pool,
 * no call pipeline), each against raw, with a second raw pool as the control. Which part of the
 * mesh's cost at c=1 is its features and which its pipeline (docs/benchmarks.md, 2026-12-07
 * evening):
 *
 *   node --conditions=meshlet-source --import tsx test/bench/support/alternate-parts.ts \
 *     raw,mesh,alloff,bare,thin,control 30000
 *
 * Arguments: the variants (the first is the reference; see `VARIANTS`), requests per variant
 * (30,000), warm-up requests per variant (30,000: V8 optimizes the mesh's functions after 10,000
 * to 28,000). Every variant runs in this one process, so each run's figures compare with each
 * other, not with another run's (another run's JIT placement differs by ±1 µs).
 */
import { type Dispatcher, Pool } from 'undici';
import { createMesh, type Mesh } from '../../../packages/meshlet/src/index.js';
import { alternate, signed, type Variant, warmUp } from './ab.js';
import { startServerProcess } from './server.js';
import { thinDispatcher } from './thin.js';

const names = (process.argv[2] ?? 'raw,mesh,alloff,bare,thin,control').split(',');
const requests = Number(process.argv[3] ?? 30_000);
const warm = Number(process.argv[4] ?? 30_000);

const server = await startServerProcess();
const ep = `127.0.0.1:${server.port}`;
const pools: Pool[] = [];
const pool = (): Pool => {
  const p = new Pool(server.origin, { keepAliveTimeout: 4_000, connectTimeout: 10_000 });
  pools.push(p);
  return p;
};
const meshes: Mesh[] = [];
const thins: Dispatcher[] = [];
const FEATURES_OFF = { circuitBreaker: false, outlierDetection: false, retry: false };
async function mesh(service: object, telemetry: object): Promise<Mesh> {
  const m = await createMesh({ services: { bench: { endpoints: [ep], ...service } }, telemetry });
  meshes.push(m);
  await m.ready();
  return m;
}

const through = (d: Dispatcher) => async () => {
  const r = await d.request({ origin: 'http://bench', method: 'GET', path: '/items/42' });
  await r.body.arrayBuffer();
};
const direct = (p: Pool) => async () => {
  const r = await p.request({ method: 'GET', path: '/items/42' });
  await r.body.arrayBuffer();
};

/** Each variant, built only when asked for. */
const VARIANTS: Record<string, () => Promise<Variant['send']>> = {
  raw: async () => direct(pool()),
  control: async () => direct(pool()),
  mesh: async () => through((await mesh({}, {})).dispatcher),
  nometrics: async () => through((await mesh({}, { metrics: false })).dispatcher),
  nobreaker: async () => through((await mesh({ circuitBreaker: false }, {})).dispatcher),
  nooutlier: async () => through((await mesh({ outlierDetection: false }, {})).dispatcher),
  noretry: async () => through((await mesh({ retry: false }, {})).dispatcher),
  // the defaults with tracing off, or with round robin instead of peak-EWMA
  notracing: async () => through((await mesh({}, { tracing: false })).dispatcher),
  rr: async () => through((await mesh({ lb: 'round_robin' }, {})).dispatcher),
  // the three policies and metrics off
  alloff: async () => through((await mesh(FEATURES_OFF, { metrics: false })).dispatcher),
  // and tracing off, round robin instead of peak-EWMA
  bare: async () =>
    through(
      (await mesh({ ...FEATURES_OFF, lb: 'round_robin' }, { metrics: false, tracing: false })).dispatcher,
    ),
  // an endpoint pool as the mesh makes it (origin `http://bench`, dialing the endpoint), no pipeline
  thin: async () => {
    const d = thinDispatcher('http://bench', server.port);
    thins.push(d);
    return through(d);
  },
};

try {
  const variants: Variant[] = [];
  for (const name of names) {
    const make = VARIANTS[name];
    if (make === undefined)
      throw new Error(`unknown variant "${name}" (known: ${Object.keys(VARIANTS).join(', ')})`);
    variants.push({ name, send: await make() });
  }
  await warmUp(variants, warm, 1);
  const st = await alternate(variants, requests);
  const first = st[names[0] as string];
  console.log(
    `${names[0]}: cpu ${first?.cpuUs.toFixed(2)}us latency ${first?.latencyUs.toFixed(2)}us per request (${requests} each, Node ${process.version})`,
  );
  for (const name of names.slice(1)) {
    const s = st[name];
    if (s === undefined) continue;
    console.log(
      `${name.padEnd(10)} cpu ${signed(s.cpuDiff.mean, 2)} ± ${(2 * s.cpuDiff.se).toFixed(2)}us (${(1 + s.cpuDiff.mean / (first?.cpuUs ?? 1)).toFixed(3)}x), ` +
        `latency ${signed(s.latencyDiff.mean, 2)} ± ${(2 * s.latencyDiff.se).toFixed(2)}us`,
    );
  }
} finally {
  for (const m of meshes) await m.close();
  for (const p of pools) await p.close();
  for (const d of thins) await d.close();
  await server.close();
}
