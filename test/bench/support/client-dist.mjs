/**
 * `mesh.dispatcher.request` against raw undici `Pool.request`, with meshlet loaded from its `dist`
 * in a plain `node` process: the `fetch` suite's `request` comparison as an application runs it.
 * The `fetch` suite runs in the bench runner's process, under tsx with meshlet's sources; this
 * script checks whether that setting moves the ratios (`pnpm build` first):
 *
 *   node test/bench/support/client-dist.mjs                      # plain node, meshlet's dist
 *   node --import tsx test/bench/support/client-dist.mjs          # the same code in a tsx process
 *
 * Variants `raw` (a `Pool`), `mesh` (`mesh.dispatcher.request` to a one-endpoint static service)
 * and `control` (a second `Pool`: what the run reads when nothing differs), each closed-loop at
 * c=1, 10 and 50 against the benchmark server in its own process (`http-server.mjs`), in rounds of
 * `ROUND_MS` (default 1000) alternating forward and reverse, `ROUNDS` (default 8) per concurrency
 * after a warm-up. Prints, per concurrency, the throughput ratio (median of the per-round ratios)
 * and the client CPU per request ratio (sums over the rounds) of `mesh` and `control` to `raw`.
 * Its round loop is its own, a small copy of `ab.ts`'s `runInterleaved`: that is TypeScript, and
 * this script must run without tsx.
 */
import { fork } from 'node:child_process';
import { Pool } from 'undici';

const ROUND_MS = Number(process.env.ROUND_MS ?? 1000);
const ROUNDS = Number(process.env.ROUNDS ?? 8);
const { createMesh } = await import(new URL('../../../packages/meshlet/dist/index.js', import.meta.url).href);

const server = fork(new URL('./http-server.mjs', import.meta.url), [], {
  execArgv: [],
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
});
const port = await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.once('message', (m) => resolve(m.port));
});
const origin = `http://127.0.0.1:${port}`;
const pool = new Pool(origin, { keepAliveTimeout: 4_000 });
const controlPool = new Pool(origin, { keepAliveTimeout: 4_000 });
const mesh = await createMesh({ services: { bench: { endpoints: [`127.0.0.1:${port}`] } } });
await mesh.ready();

const variants = [
  ['raw', () => pool.request({ method: 'GET', path: '/items/42' })],
  ['mesh', () => mesh.dispatcher.request({ origin: 'http://bench', method: 'GET', path: '/items/42' })],
  ['control', () => controlPool.request({ method: 'GET', path: '/items/42' })],
];

/** One closed-loop round: requests done, seconds, client CPU µs. */
async function round(send, concurrency, ms) {
  let n = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + ms;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const res = await send();
        await res.body.arrayBuffer();
        n++;
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return { n, seconds, cpuUs: cpu.user + cpu.system };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const underTsx = process.execArgv.some((a) => a.includes('tsx'));
console.log(`client from dist, ${underTsx ? 'in a tsx process' : 'plain node'}, Node ${process.version}`);
try {
  for (const c of [1, 10, 50]) {
    for (const [, send] of variants) await round(send, c, 500);
    const per = Object.fromEntries(variants.map(([name]) => [name, []]));
    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 === 0 ? variants : [...variants].reverse();
      for (const [name, send] of order) per[name].push(await round(send, c, ROUND_MS));
    }
    const rps = (x) => x.n / x.seconds;
    const cpuPer = (rs) => rs.reduce((a, x) => a + x.cpuUs, 0) / rs.reduce((a, x) => a + x.n, 0);
    const line = ['mesh', 'control'].map((v) => {
      const t = median(per[v].map((x, i) => rps(x) / rps(per.raw[i])));
      return `${v} ${t.toFixed(3)}x throughput, ${(cpuPer(per[v]) / cpuPer(per.raw)).toFixed(3)}x CPU (${cpuPer(per[v]).toFixed(1)} vs ${cpuPer(per.raw).toFixed(1)} us/req)`;
    });
    console.log(`c=${c}: ${line.join('; ')}`);
  }
} finally {
  await mesh.close();
  await pool.close();
  await controlPool.close();
  server.kill();
}
