// Benchmark backends for the slow-backend suite, in their own process: N loopback HTTP servers on
// free ports, each answering after `baseMs` (times `factor` for the one marked slow). The parent
// marks a backend slow or healthy again over IPC: { slow: index | null }.
import { createServer } from 'node:http';

const n = Number(process.argv[2] ?? 10);
const baseMs = Number(process.argv[3] ?? 5);
const factor = Number(process.argv[4] ?? 20);
let slow = -1;

const servers = [];
for (let i = 0; i < n; i++) {
  const server = createServer((req, res) => {
    const delay = i === slow ? baseMs * factor : baseMs;
    req.resume();
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' });
      res.end('ok');
    }, delay);
  });
  server.keepAliveTimeout = 30_000;
  servers.push(server);
}
await Promise.all(servers.map((s) => new Promise((resolve) => s.listen(0, '127.0.0.1', resolve))));
process.on('message', (m) => {
  if (m && typeof m === 'object' && 'slow' in m) {
    slow = m.slow === null ? -1 : Number(m.slow);
    process.send?.({ ack: slow });
  }
});
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));
process.send?.({ ports: servers.map((s) => s.address().port) });
