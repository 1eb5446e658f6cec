/**
 * Client instructions per HTTP request under callgrind (repeatable whatever the machine's load):
 * N sequential requests through one variant to the benchmark server (its own process, not traced),
 * after a warm-up. Run one variant with two request counts and subtract, so start-up, module
 * loading and most JIT compilation cancel out:
 *
 *   for n in 2000 6000; do
 *     valgrind --tool=callgrind --callgrind-out-file=/dev/null --smc-check=all-non-file \
 *       node --conditions=meshlet-source --import tsx test/bench/support/http-callgrind.ts mesh-request $n
 *   done   # (second "Collected" - first) / 4,000 = instructions per request
 *
 * Variants: `raw-request` (undici `Pool.request`), `mesh-request` (`mesh.dispatcher.request`),
 * `raw-fetch` (undici `fetch` with the pool as dispatcher), `mesh-fetch` (`mesh.fetch`). The mesh
 * is `createMesh` with the defaults (as in suites/fetch.ts); `mesh-request-bare` and
 * `mesh-fetch-bare` turn metrics off. Run it under `node --cpu-prof`
 * instead of valgrind for a profile of the same loop (`cpuprofile-groups.mjs`).
 */
import { fork } from 'node:child_process';
import { Pool, fetch as undiciFetch } from 'undici';
import { createMesh } from '../../../packages/meshlet/src/index.js';

const variant = process.argv[2] ?? 'mesh-request';
const n = Number(process.argv[3] ?? 2000);
const warm = Number(process.argv[4] ?? 3000);

const child = fork(new URL('./http-server.mjs', import.meta.url), [], {
  execArgv: [],
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
});
const port = await new Promise<number>((resolve) =>
  child.once('message', (m) => resolve((m as { port: number }).port)),
);
const origin = `http://127.0.0.1:${port}`;
const pool = new Pool(origin, { connections: 1 });
// `…-bare`: the mesh with metrics off (what telemetry costs per request, by difference).
const bare = variant.endsWith('-bare');
const mesh = variant.startsWith('mesh')
  ? await createMesh({
      services: { bench: { endpoints: [`127.0.0.1:${port}`] } },
      ...(bare ? { telemetry: { metrics: { enabled: false } } } : {}),
    })
  : undefined;
if (mesh) await mesh.ready();

async function once(): Promise<void> {
  switch (bare ? variant.slice(0, -5) : variant) {
    case 'raw-request': {
      const r = await pool.request({ origin, path: '/', method: 'GET' });
      await r.body.text();
      return;
    }
    case 'mesh-request': {
      const r = await (mesh as NonNullable<typeof mesh>).dispatcher.request({
        origin: 'http://bench',
        path: '/',
        method: 'GET',
      });
      await r.body.text();
      return;
    }
    case 'raw-fetch': {
      const r = await undiciFetch(`${origin}/`, { dispatcher: pool });
      await r.text();
      return;
    }
    case 'mesh-fetch': {
      const r = await (mesh as NonNullable<typeof mesh>).fetch('http://bench/');
      await r.text();
      return;
    }
    default:
      throw new Error(`unknown variant ${variant}`);
  }
}

try {
  for (let i = 0; i < warm; i++) await once();
  for (let i = 0; i < n; i++) await once();
} finally {
  await pool.close();
  await mesh?.close();
  child.kill();
}
