/**
 * Express and Fastify servers for the `servers` benchmark, run in a child process (through tsx,
 * `--conditions=meshlet-source`) so that their CPU is measured apart from the load generator's.
 *
 * One process serves one framework in one variant, as a service runs: argv[3] = `express` or
 * `fastify`, argv[2] = `bare` (the bare framework), `empty` (the bare framework with one
 * middleware / `onRequest` hook that does nothing: what any middleware costs), `als` (Express only:
 * the bare app run inside a plain `AsyncLocalStorage.run` holding a number, as meshlet's deadline
 * context is, and nothing of meshlet's), `core` (meshlet's inbound middleware/plugin
 * over a core `Mesh` without telemetry: the admission step with path normalization, a 20-rule
 * ALLOW policy walked to its last rule, the caller's deadline from a trusted network, probes) or
 * `full` (over a mesh with `@meshlet/telemetry` installed as `createMesh()` does: + server metrics,
 * spans through the no-op tracer) or `handler` (Express only: `full` through `meshHandler`, in front
 * of the app rather than as its first layer). Separate processes keep each variant's CPU its own: the deadline
 * context's AsyncLocalStorage turns on promise hooks for a whole process (Node 20), and garbage one
 * variant leaves must not be collected on another's time (a process shared by two variants that
 * take turns hands each one's GC debt to the other).
 *
 * Reports `{ ports: { 'express.bare': n, … } }` over IPC and answers `{ cpu: id }` with
 * `{ cpu: id, us }` (this process' user + system CPU so far, µs). Exits when the parent goes away.
 */
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Mesh as CoreMesh } from '../../../packages/core/src/index.js';

type Variant = 'bare' | 'empty' | 'als' | 'core' | 'full' | 'handler';
const variant: Variant =
  (['empty', 'als', 'core', 'full', 'handler'] as const).find((v) => v === process.argv[2]) ?? 'bare';
const framework = process.argv[3] === 'fastify' ? 'fastify' : 'express';
// The meshlet packages are loaded only by meshed processes: a bare one stays bare.
const m =
  variant === 'bare' || variant === 'empty' || variant === 'als'
    ? undefined
    : {
        ...(await import('../../../packages/core/src/index.js')),
        ...(await import('../../../packages/express/src/index.js')),
        ...(await import('../../../packages/fastify/src/index.js')),
        ...(await import('../../../packages/telemetry/src/index.js')),
        ...(await import('../../../packages/tls/src/index.js')),
        ...(await import('./admission.js')),
      };
// The admission step as a meshed service runs it: a 20-rule policy, deadlines from loopback callers.
const inbound = m && {
  authorizer: m.createAuthorizer(m.POLICY_20),
  deadlines: m.BENCH_DEADLINES,
};

async function listenExpress(mesh: CoreMesh | undefined): Promise<number> {
  const app = express();
  if (variant === 'als') {
    // `als`: bare Express behind a request listener that runs it in an AsyncLocalStorage holding a
    // number, as meshlet's deadline context does, and nothing else of meshlet's.
    const { AsyncLocalStorage } = await import('node:async_hooks');
    const storage = new AsyncLocalStorage<number>();
    app.get('/items/:id', (req, res) => {
      res.json({ id: req.params.id });
    });
    const s = createServer((req, res) => storage.run(performance.now() + 5000, () => app(req, res)));
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', () => resolve()));
    s.keepAliveTimeout = 60_000;
    return (s.address() as AddressInfo).port;
  }
  if (variant === 'handler' && mesh && m) {
    // `handler`: the same as `full`, in front of the app (`meshHandler`) instead of as its first layer.
    app.get('/items/:id', (req, res) => {
      res.json({ id: req.params.id });
    });
    const s = createServer(m.meshHandler(app, { mesh, ...inbound }));
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', () => resolve()));
    s.keepAliveTimeout = 60_000;
    return (s.address() as AddressInfo).port;
  }
  if (mesh && m) app.use(m.meshMiddleware({ mesh, ...inbound }));
  // `empty`: the bare framework with one middleware that does nothing (what any middleware costs).
  else if (variant === 'empty') app.use((_req, _res, next) => next());
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
  if (mesh && m) await app.register(m.meshPlugin, { mesh, drain: false, ...inbound });
  else if (variant === 'empty') app.addHook('onRequest', (_req, _reply, next) => next());
  app.get<{ Params: { id: string } }>('/items/:id', async (req) => ({ id: req.params.id }));
  await app.listen({ port: 0, host: '127.0.0.1' });
  app.server.keepAliveTimeout = 60_000;
  return (app.server.address() as AddressInfo).port;
}

let mesh: CoreMesh | undefined;
if (m) {
  mesh = new m.Mesh(m.parseConfig({}));
  // `full`: what createMesh() gives the inbound side, a mesh with @meshlet/telemetry installed.
  if (variant === 'full' || variant === 'handler') await m.installTelemetry(mesh, { admin: false });
  await mesh.ready();
}
export const port = framework === 'express' ? await listenExpress(mesh) : await listenFastify(mesh);
const ports: Record<string, number> = { [`${framework}.${variant}`]: port };

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
