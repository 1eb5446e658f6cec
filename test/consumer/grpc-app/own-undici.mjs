// An application with its own undici (8, the major Node 26 bundles) next to meshlet's undici 7:
// undici 8's request, fetch, stream and interceptors (redirect, retry, cache) with
// `mesh.dispatcher` get what they get from a plain undici 8 Agent, the response headers included
// (undici 8 reads them from its handler's controller, `rawHeaders`). Node >= 22.19 (undici 8's
// engines).
import { once } from 'node:events';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { Writable } from 'node:stream';
import { Agent, fetch, interceptors, request, stream } from 'undici';
import { check } from './lib.mjs';

const { createMesh } = await import('meshlet');
const own = createRequire(import.meta.url)('undici/package.json').version;
check(own.startsWith('8.'), `the application's own undici is 8 (${own})`);

let flaky = 0;
const server = createServer((req, res) => {
  if (req.url === '/redirect') {
    res.writeHead(302, { location: '/moved' });
    res.end();
    return;
  }
  // Every other request fails with 500 (a status the mesh does not retry by default).
  if (req.url === '/flaky' && flaky++ % 2 === 0) {
    res.writeHead(500);
    res.end('failed');
    return;
  }
  if (req.url === '/cached') res.setHeader('cache-control', 'max-age=60');
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    res.setHeader('x-from', 'echo');
    if (req.url === '/trailers') {
      res.writeHead(200, { trailer: 'x-t' });
      res.write('a');
      res.addTrailers({ 'x-t': 'tv' });
      res.end('b');
      return;
    }
    res.end(`${req.method} ${req.url} ${body}`);
  });
}).listen(0, '127.0.0.1');
await once(server, 'listening');
const port = server.address().port;
const mesh = await createMesh({ services: { echo: { endpoints: [`127.0.0.1:${port}`] } } });
const agent = new Agent();

/** The same calls through `dispatcher` to `base`. */
async function calls(dispatcher, base) {
  const r = await request(`${base}/r`, { dispatcher, method: 'POST', body: 'x' });
  const viaRequest = [r.statusCode, r.headers['x-from'], await r.body.text()];
  const t = await request(`${base}/trailers`, { dispatcher });
  const viaTrailers = [t.headers['x-from'], await t.body.text(), { ...t.trailers }];
  const f = await fetch(`${base}/f`, { dispatcher, method: 'PUT', body: 'y' });
  const viaFetch = [f.status, f.headers.get('x-from'), await f.text()];
  const chunks = [];
  await stream(
    `${base}/s`,
    { dispatcher, opaque: chunks },
    ({ opaque }) =>
      new Writable({
        write(c, _e, cb) {
          opaque.push(String(c));
          cb();
        },
      }),
  );
  // undici 8's own interceptors composed on the dispatcher (the retry interceptor retries by
  // throwing from its completion callback).
  flaky = 0;
  const composed = dispatcher.compose(
    interceptors.redirect({ maxRedirections: 2 }),
    interceptors.retry({ statusCodes: [500], minTimeout: 1, maxRetries: 2 }),
    interceptors.cache(),
  );
  const viaInterceptors = [];
  for (const path of ['/redirect', '/flaky', '/cached', '/cached']) {
    const c = await request(`${base}${path}`, { dispatcher: composed });
    viaInterceptors.push([
      path,
      c.statusCode,
      c.headers['x-from'],
      c.headers.age !== undefined,
      await c.body.text(),
    ]);
  }
  return {
    request: viaRequest,
    trailers: viaTrailers,
    fetch: viaFetch,
    stream: chunks.join(''),
    interceptors: viaInterceptors,
  };
}
const raw = JSON.stringify(await calls(agent, `http://127.0.0.1:${port}`));
const meshed = JSON.stringify(await calls(mesh.dispatcher, 'http://echo'));
check(raw.includes('"echo"'), `control: a plain undici 8 Agent gets the headers (${raw})`);
check(
  meshed === raw,
  `undici 8's request, fetch, stream and interceptors through mesh.dispatcher as through an Agent (${meshed})`,
);
await mesh.close();
await agent.close();
server.close();
