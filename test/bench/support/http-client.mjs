// A keep-alive HTTP client for callgrind runs of servers (`servers-callgrind.ts`), in its own
// process so that only the server is traced. On `{ port, n, path, headers }` over IPC it sends n
// sequential GET requests (one connection), reads each body, and answers `{ done: n, errors }`.
import { Pool } from 'undici';

let pool;
process.on('message', async (m) => {
  pool ??= new Pool(`http://127.0.0.1:${m.port}`, { connections: 1 });
  let errors = 0;
  for (let i = 0; i < m.n; i++) {
    const res = await pool.request({ method: 'GET', path: m.path, headers: m.headers });
    await res.body.arrayBuffer();
    if (res.statusCode !== 200) errors++;
  }
  process.send({ done: m.n, errors });
});
process.on('disconnect', () => process.exit(0));
