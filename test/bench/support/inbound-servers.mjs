/**
 * Express and Fastify servers for the `servers` benchmark, one per child process, so that their
 * CPU is measured apart from the load generator's.
 *
 * Plain JavaScript, run by plain `node`, with meshlet loaded from the packages' `dist` (what
 * `pnpm build` makes): as a service runs it. `MESHLET_BENCH_SERVER_FROM_SOURCE=1` loads the
 * TypeScript sources instead (the parent then starts the process under tsx with
 * `--conditions=meshlet-source`): the two differ in more than the code's text (docs/benchmarks.md,
 * "The servers suite from dist").
 *
 * argv[3] = `express` or `fastify`, argv[2] = the variant:
 * - `bare`: the bare framework;
 * - `empty`: the bare framework with one middleware / `onRequest` hook that does nothing;
 * - `als` (Express only): the bare app run inside a plain `AsyncLocalStorage.run` holding a
 *   number, as meshlet's deadline context is, with no meshlet code;
 * - `spin`: the bare framework with a hot arithmetic loop per request (before the app; Fastify: an
 *   `onRequest` hook) that took `MESHLET_BENCH_SPIN_NS` ns (default 2000) in a tight loop at
 *   start-up: a known cost, to read what the harness makes of it (a loop this small stays in the
 *   caches; meshlet's step touches far more code and data per request);
 * - `loaded`: the bare framework in a process that has loaded meshlet (core, the adapters, TLS,
 *   telemetry) and made a mesh with telemetry installed, as `full` does, but serves requests
 *   without it: what loading meshlet does to the framework's own code, apart from what meshlet
 *   does per request;
 * - `core`: meshlet's inbound middleware/plugin over a core `Mesh` without telemetry (the
 *   admission step with path normalization, a 20-rule ALLOW policy walked to its last rule, the
 *   caller's deadline from a trusted network, probes);
 * - `full`: the same over a mesh with `@meshlet/telemetry` installed, as `createMesh()` does
 *   (+ server metrics, spans through the no-op tracer);
 * - `handler` (Express only): `full` through `meshHandler`, in front of the app instead of as its
 *   first layer.
 *
 * The policy and the deadline trust come from the parent (`MESHLET_BENCH_INBOUND`, JSON
 * `{ policies, deadlines }`: `POLICY_20` and `BENCH_DEADLINES` of `admission.ts`).
 *
 * Reports `{ ports: { 'express.bare': n } }` over IPC and answers `{ cpu: id }` with
 * `{ cpu: id, us, userUs, heapUsed }` (this process' CPU so far, µs). Exits when the parent goes
 * away. Also importable in process (`servers-callgrind.ts`): exports `port` and `meshlet`.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createServer } from 'node:http';
import express from 'express';
import Fastify from 'fastify';
import { spin, spinIterations } from './spin.mjs';

const VARIANTS = ['bare', 'empty', 'als', 'spin', 'loaded', 'core', 'full', 'handler'];
const variant = VARIANTS.includes(process.argv[2] ?? '') ? process.argv[2] : 'bare';
const framework = process.argv[3] === 'fastify' ? 'fastify' : 'express';
const fromSource = process.env.MESHLET_BENCH_SERVER_FROM_SOURCE === '1';

/** One meshlet package, as the process loads it: its dist, or its sources under tsx. */
const load = (name) =>
  import(
    new URL(`../../../packages/${name}/${fromSource ? 'src/index.ts' : 'dist/index.js'}`, import.meta.url)
      .href
  );

// The meshlet packages are loaded only by processes that use them: a bare one stays bare.
const usesMeshlet = variant === 'loaded' || variant === 'core' || variant === 'full' || variant === 'handler';
/**
 * `MESHLET_BENCH_LOADED_IMPORTS` (attribution runs, `loaded` only): instead of meshlet, the
 * `loaded` process loads what this comma list names, in order, and serves the bare framework:
 * `<package>` (a meshlet package's dist, e.g. `tls`), `<package>:<module>` (a module as that
 * meshlet package resolves it: `tls:undici`, `telemetry:prom-client`, `core:node:zlib`),
 * `ballast=<n>` (n small objects kept alive: heap without code) or `functions=<n>` (n small
 * functions compiled and called once: code without a library). What loading a given library does
 * to the framework's own requests (docs/benchmarks.md, "What loading a library does to bare
 * Express").
 */
const LOADED_IMPORTS = variant === 'loaded' ? process.env.MESHLET_BENCH_LOADED_IMPORTS : undefined;
if (LOADED_IMPORTS !== undefined) await loadForAttribution(LOADED_IMPORTS.split(','));

async function loadForAttribution(specs) {
  const { createRequire } = await import('node:module');
  for (const spec of specs) {
    const [what, n] = spec.split('=');
    if (what === 'ballast' && n !== undefined) {
      globalThis.meshletBenchBallast = Array.from({ length: Number(n) }, (_, k) => ({
        k,
        s: `x${k}`,
        a: [k],
      }));
    } else if (what === 'functions' && n !== undefined) {
      const src = Array.from(
        { length: Number(n) },
        (_, k) => `function f${k}(o) { return o.a${k % 50} + ${k}; } f${k}({ a${k % 50}: 1 });`,
      );
      // One function body whose inner functions V8 compiles one by one as each is called.
      new Function(src.join('\n'))();
    } else {
      const i = spec.indexOf(':');
      const pkg = i < 0 ? spec : spec.slice(0, i);
      const dir = new URL(`../../../packages/${pkg}/`, import.meta.url);
      await import(
        i < 0
          ? new URL('dist/index.js', dir).href
          : createRequire(new URL('package.json', dir)).resolve(spec.slice(i + 1))
      );
    }
  }
}

/**
 * The loaded meshlet packages (core, express, fastify, telemetry, tls: the suite's `SERVER_PACKAGES`,
 * whose dist it rebuilds when stale), or undefined.
 */
export const meshlet =
  usesMeshlet && LOADED_IMPORTS === undefined
    ? Object.assign(
        {},
        ...(await Promise.all(['core', 'express', 'fastify', 'telemetry', 'tls'].map((p) => load(p)))),
      )
    : undefined;

let mesh;
let inbound;
if (meshlet !== undefined) {
  const given = process.env.MESHLET_BENCH_INBOUND;
  if (given === undefined)
    throw new Error('MESHLET_BENCH_INBOUND (the policies and deadline trust) is not set');
  const { policies, deadlines } = JSON.parse(given);
  inbound = { authorizer: meshlet.createAuthorizer(policies), deadlines };
  mesh = new meshlet.Mesh(meshlet.parseConfig({}));
  // What createMesh() gives the inbound side: a mesh with @meshlet/telemetry installed.
  if (variant !== 'core') await meshlet.installTelemetry(mesh, { admin: false });
  await mesh.ready();
}
/** `spin`: iterations of the hot loop that took `MESHLET_BENCH_SPIN_NS` in a tight loop. */
const spinN = variant === 'spin' ? spinIterations(Number(process.env.MESHLET_BENCH_SPIN_NS ?? 2000)) : 0;

/** Whether requests go through meshlet (`loaded` only loads it). */
const meshed = variant === 'core' || variant === 'full' || variant === 'handler';

async function listen(server) {
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  server.keepAliveTimeout = 60_000;
  return server.address().port;
}

function listenExpress() {
  const app = express();
  if (meshed && variant !== 'handler') app.use(meshlet.meshMiddleware({ mesh, ...inbound }));
  // `empty`: the bare framework with one middleware that does nothing (what any middleware costs).
  else if (variant === 'empty') app.use((_req, _res, next) => next());
  app.get('/items/:id', (req, res) => {
    res.json({ id: req.params.id });
  });
  if (variant === 'handler') return listen(createServer(meshlet.meshHandler(app, { mesh, ...inbound })));
  if (variant === 'spin')
    return listen(
      createServer((req, res) => {
        spin(spinN);
        app(req, res);
      }),
    );
  if (variant === 'als') {
    const storage = new AsyncLocalStorage();
    return listen(createServer((req, res) => storage.run(performance.now() + 5000, () => app(req, res))));
  }
  return listen(createServer(app));
}

async function listenFastify() {
  const app = Fastify();
  if (meshed) await app.register(meshlet.meshPlugin, { mesh, drain: false, ...inbound });
  else if (variant === 'empty') app.addHook('onRequest', (_req, _reply, next) => next());
  else if (variant === 'spin')
    app.addHook('onRequest', (_req, _reply, next) => {
      spin(spinN);
      next();
    });
  app.get('/items/:id', async (req) => ({ id: req.params.id }));
  await app.listen({ port: 0, host: '127.0.0.1' });
  app.server.keepAliveTimeout = 60_000;
  return app.server.address().port;
}

/** The port this process serves on. */
export const port = framework === 'express' ? await listenExpress() : await listenFastify();

if (process.send !== undefined) {
  process.on('message', (msg) => {
    if (msg?.cpu === undefined) return;
    const u = process.cpuUsage();
    process.send?.({
      cpu: msg.cpu,
      us: u.user + u.system,
      userUs: u.user,
      heapUsed: process.memoryUsage().heapUsed,
    });
  });
  process.on('disconnect', () => process.exit(0));
  process.send({ ports: { [`${framework}.${variant}`]: port } });
}
