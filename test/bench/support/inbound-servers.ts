/**
 * Express and Fastify servers for the `servers` benchmark, run in a child process (through tsx,
 * `--conditions=meshlet-source`) so that their CPU is measured apart from the load generator's.
 *
 * argv[3] (optional) = `express` or `fastify`: only that framework's servers (a process serves one
 * framework, as a service does, so the code both share is not shaped by the other's objects).
 * argv[2] = `bare`: the bare frameworks; `mesh`: each framework twice, with meshlet's inbound
 * middleware/plugin over a core `Mesh` without telemetry (`core`: authorization, probes, deadline
 * context only) and over a mesh with `@meshlet/telemetry` installed as `createMesh()` does (`full`: + server
 * metrics, spans through the no-op tracer). Bare and meshed servers live in different processes: the deadline
 * context's AsyncLocalStorage turns on promise hooks for the whole process (Node 20), which must
 * not tax the bare servers.
 *
 * Reports `{ ports: { 'express.bare': n, … } }` over IPC and answers `{ cpu: id }` with
 * `{ cpu: id, us }` (this process' user + system CPU so far, µs). Exits when the parent goes away.
 */
import type { Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Mesh as CoreMesh } from '../../../packages/core/src/index.js';

// The meshlet packages are loaded only by the `mesh` process: the bare one stays bare.
const mode = process.argv[2] === 'mesh' ? 'mesh' : 'bare';
const only = process.argv[3];
const wants = (fw: 'express' | 'fastify') => only === undefined || only === fw;
const m =
  mode === 'mesh'
    ? {
        ...(await import('../../../packages/core/src/index.js')),
        ...(await import('../../../packages/express/src/index.js')),
        ...(await import('../../../packages/fastify/src/index.js')),
        ...(await import('../../../packages/telemetry/src/index.js')),
      }
    : undefined;

async function listenExpress(mesh: CoreMesh | undefined): Promise<number> {
  const app = express();
  if (mesh && m) app.use(m.meshMiddleware({ mesh }));
  app.get('/items/:id', (req, res) => {
    res.json({ id: req.params.id });
  });
  const s = await new Promise<HttpServer>((resolve) => {
    const server = app.listen(0, '127.0.0.1', () => resolve(server));
  });
  s.keepAliveTimeout = 60_000;
  return (s.address() as AddressInfo).port;
}

async function listenFastify(mesh: CoreMesh | undefined): Promise<number> {
  const app: FastifyInstance = Fastify();
  if (mesh && m) await app.register(m.meshPlugin, { mesh, drain: false });
  app.get<{ Params: { id: string } }>('/items/:id', async (req) => ({ id: req.params.id }));
  await app.listen({ port: 0, host: '127.0.0.1' });
  app.server.keepAliveTimeout = 60_000;
  return (app.server.address() as AddressInfo).port;
}

const ports: Record<string, number> = {};
if (mode === 'bare') {
  if (wants('express')) ports['express.bare'] = await listenExpress(undefined);
  if (wants('fastify')) ports['fastify.bare'] = await listenFastify(undefined);
} else if (m) {
  const core = new m.Mesh(m.parseConfig({}));
  await core.ready();
  // What createMesh() gives the inbound side: a mesh with @meshlet/telemetry installed.
  const full = new m.Mesh(m.parseConfig({}));
  await m.installTelemetry(full, { admin: false });
  await full.ready();
  if (wants('express')) {
    ports['express.core'] = await listenExpress(core);
    ports['express.full'] = await listenExpress(full);
  }
  if (wants('fastify')) {
    ports['fastify.core'] = await listenFastify(core);
    ports['fastify.full'] = await listenFastify(full);
  }
  // Diagnostics (MESHLET_BENCH_DIAG=1, not part of the suite): a bare Fastify/Express in the mesh
  // process (the process-wide cost of the deadline context's AsyncLocalStorage on Node 20), and a
  // Fastify with three empty hooks and a request decoration (what any plugin of this shape costs).
  if (process.env.MESHLET_BENCH_DIAG) {
    ports['express.bareInMesh'] = await listenExpress(undefined);
    ports['fastify.bareInMesh'] = await listenFastify(undefined);
    const app: FastifyInstance = Fastify();
    const K = Symbol('k');
    app.decorateRequest(K, null);
    app.addHook('onRequest', (req, _r, next) => {
      (req as unknown as Record<symbol, unknown>)[K] = { a: 1 };
      next();
    });
    app.addHook('preHandler', (_q, _r, next) => next());
    app.addHook('onResponse', (_q, _r, next) => next());
    app.get<{ Params: { id: string } }>('/items/:id', async (req) => ({ id: req.params.id }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    ports['fastify.hooksOnly'] = (app.server.address() as AddressInfo).port;
  }
}

process.on('message', (msg: { cpu?: number }) => {
  if (msg.cpu === undefined) return;
  const u = process.cpuUsage();
  process.send?.({
    cpu: msg.cpu,
    us: u.user + u.system,
    userUs: u.user,
    heapUsed: process.memoryUsage().heapUsed,
  });
});
process.on('disconnect', () => process.exit(0));
process.send?.({ ports });
