// A minimal keep-alive HTTP server for benchmarks, run in its own process so that its CPU does not
// distort the client's measurements. Reports its port over IPC; exits when the parent goes away.
import { createServer } from 'node:http';

const body = Buffer.from('{"ok":true,"service":"bench"}');
const server = createServer((req, res) => {
  req.resume();
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 60_000;
server.headersTimeout = 65_000;
server.listen(0, '127.0.0.1', () => {
  process.send?.({ port: server.address().port });
});
process.on('disconnect', () => process.exit(0));
