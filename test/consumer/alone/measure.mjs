// The cost of meshlet in an application that installed nothing but meshlet: wall and CPU time
// (the latter less disturbed by other load) and the resident memory added. Printed for the report;
// timings are never asserted. MEASURE (one fresh process each) says what is measured:
//   import       `import 'meshlet'` (default)
//   mesh-fetch   `import 'meshlet'` + `createMesh` + the first `mesh.fetch` to a loopback server
//   undici-fetch raw undici beside it: `import 'undici'` + the first `fetch` to the same server
// so that loading parts of meshlet's dependencies when first needed is seen to save, not to move,
// their cost.
import { once } from 'node:events';
import { createServer } from 'node:http';

const mode = process.env.MEASURE ?? 'import';
let server;
let url;
if (mode !== 'import') {
  server = createServer((_req, res) => res.end('hello')).listen(0, '127.0.0.1');
  await once(server, 'listening');
  url = `127.0.0.1:${server.address().port}`;
}
const rss0 = process.memoryUsage().rss;
const cpu0 = process.cpuUsage();
const t0 = performance.now();
let close = async () => {};
if (mode === 'import') {
  await import('meshlet');
} else if (mode === 'mesh-fetch') {
  const { createMesh } = await import('meshlet');
  const mesh = await createMesh({ services: { echo: { endpoints: [url] } } });
  if ((await (await mesh.fetch('http://echo/')).text()) !== 'hello') throw new Error('mesh.fetch');
  close = () => mesh.close();
} else if (mode === 'undici-fetch') {
  const { fetch } = await import('undici');
  if ((await (await fetch(`http://${url}/`)).text()) !== 'hello') throw new Error('fetch');
} else {
  throw new Error(`MEASURE=${mode}?`);
}
const ms = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
const rss = (process.memoryUsage().rss - rss0) / 1048576;
await close();
server?.close();
console.log(
  JSON.stringify({
    mode,
    ms: Number(ms.toFixed(1)),
    cpuMs: Number(((cpu.user + cpu.system) / 1000).toFixed(1)),
    rssMB: Number(rss.toFixed(1)),
  }),
);
process.exit(0);
