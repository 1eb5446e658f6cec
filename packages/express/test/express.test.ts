import { Agent, createServer, request as httpRequest, type Server } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import {
  currentDeadline,
  type InboundRequestInfo,
  type InboundTelemetry,
  Mesh,
  ORCA_FORMAT_HEADER,
  ORCA_HEADER,
  parseConfig,
  parseOrcaHeader,
  processLoad,
  SHED_HEADER,
  startDraining,
} from '@meshlet/core';
import { createAuthorizer } from '@meshlet/tls';
import express from 'express';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  DEADLINE_HEADER,
  gracefulShutdown,
  type MeshMiddlewareOptions,
  meshHandler,
  meshMiddleware,
} from '../src/index.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function newMesh(): Promise<Mesh> {
  const mesh = new Mesh(parseConfig({}));
  cleanups.push(() => mesh.close());
  await mesh.ready();
  return mesh;
}

/**
 * The two ways of putting the mesh in front of an app: as its first layer (`meshMiddleware`) or as
 * its server's request listener (`meshHandler`). `mount` does the one the running block tests.
 */
type Form = 'middleware' | 'handler';
let form: Form = 'middleware';
const handlerOptions = new WeakMap<express.Express, MeshMiddlewareOptions>();
function mount(app: express.Express, options: MeshMiddlewareOptions = {}): void {
  if (form === 'middleware') app.use(meshMiddleware(options));
  else handlerOptions.set(app, options);
}

async function listen(app: express.Express): Promise<{ server: Server; base: string; port: number }> {
  const options = handlerOptions.get(app);
  const server = await new Promise<Server>((resolve) => {
    if (options === undefined) {
      const s = app.listen(0, '127.0.0.1', () => resolve(s));
    } else {
      const s = createServer(meshHandler(app, options)).listen(0, '127.0.0.1', () => resolve(s));
    }
  });
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  const port = (server.address() as AddressInfo).port;
  return { server, base: `http://127.0.0.1:${port}`, port };
}

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe.each([
  ['meshMiddleware', 'middleware'],
  ['meshHandler', 'handler'],
] as const)('%s', (_name, f) => {
  beforeEach(() => {
    form = f;
  });
  afterEach(() => {
    form = 'middleware';
  });

  it('serves liveness and readiness; readiness fails while draining', async () => {
    const mesh = await newMesh();
    const app = express();
    mount(app, { mesh });
    const { base } = await listen(app);
    expect(await get(`${base}/healthz`)).toEqual({ status: 200, body: { status: 'alive' } });
    expect(await get(`${base}/ready`)).toEqual({ status: 200, body: { status: 'ready' } });
    startDraining(mesh);
    expect(await get(`${base}/ready`)).toEqual({ status: 503, body: { status: 'not_ready' } });
    expect((await get(`${base}/healthz`)).status).toBe(200);
  });

  it('is not ready before the mesh is', async () => {
    const mesh = new Mesh(parseConfig({ services: { slow: { endpoints: ['127.0.0.1:1'] } } }));
    cleanups.push(() => mesh.close());
    const app = express();
    mount(app, { mesh, readinessPath: '/readyz' });
    const { base } = await listen(app);
    // static discovery answers at once but ready() has not been awaited yet: isReady is false
    const first = await get(`${base}/readyz`);
    await mesh.ready();
    const second = await get(`${base}/readyz`);
    expect([first.status, second.status]).toEqual([503, 200]);
  });

  it('enforces the authorization policy with a 403 and a coded body', async () => {
    const authorizer = createAuthorizer([
      {
        name: 'deny-mallory',
        action: 'DENY',
        rules: [{ when: [{ key: 'request.headers[x-user]', values: ['mallory'] }] }],
      },
    ]);
    const app = express();
    mount(app, { authorizer });
    app.get('/data', (_req, res) => {
      res.json({ ok: true });
    });
    const { base } = await listen(app);
    expect(await get(`${base}/data`, { 'x-user': 'alice' })).toEqual({ status: 200, body: { ok: true } });
    const denied = await get(`${base}/data`, { 'x-user': 'mallory' });
    expect(denied.status).toBe(403);
    expect(denied.body).toMatchObject({ error: { code: 'MESHLET_ERR_FORBIDDEN', policy: 'deny-mallory' } });
  });

  it('refuses a request (500) when the inbound step throws, never reaching the handler', async () => {
    const app = express();
    mount(app, {
      authorizer: () => {
        throw new Error('policy store unavailable');
      },
    });
    let reached = 0;
    app.get('/x', (_req, res) => {
      reached++;
      res.json({});
    });
    const { base } = await listen(app);
    const warned = new Promise<string>((resolve) => process.once('warning', (w) => resolve(w.message)));
    const res = await fetch(`${base}/x`);
    expect(res.status).toBe(500);
    const body = await res.text();
    expect(reached).toBe(0);
    // the handler form says why (the middleware form leaves it to Express's final handler)
    if (form === 'handler') {
      expect(body).toBe('Internal Server Error');
      expect(await warned).toMatch(/policy store unavailable/);
    }
  });

  it("runs handlers in the deadline context of a trusted caller's x-meshlet-deadline-ms / x-request-timeout", async () => {
    const app = express();
    mount(app, { deadlines: { trustedNetworks: ['127.0.0.0/8', '::1'] } });
    app.get('/d', async (_req, res) => {
      await new Promise((r) => setTimeout(r, 5));
      const d = currentDeadline();
      res.json({ left: d === undefined ? null : d - Date.now() });
    });
    const { base } = await listen(app);
    const a = await get(`${base}/d`, { [DEADLINE_HEADER]: '2000' });
    expect(a.body.left).toBeGreaterThan(1_000);
    expect(a.body.left).toBeLessThanOrEqual(2_000);
    const b = await get(`${base}/d`, { 'x-request-timeout': '800' });
    expect(b.body.left).toBeLessThanOrEqual(800);
    expect((await get(`${base}/d`)).body.left).toBeNull();
    expect((await get(`${base}/d`, { [DEADLINE_HEADER]: 'soon' })).body.left).toBeNull();
  });

  it("ignores an untrusted caller's deadline header and clamps a trusted one to the service's timeout", async () => {
    const seen = async (options: MeshMiddlewareOptions, headers: Record<string, string>) => {
      const app = express();
      mount(app, options);
      app.get('/d', (_req, res) => {
        const d = currentDeadline();
        res.json({ left: d === undefined ? null : d - Date.now() });
      });
      const { base } = await listen(app);
      return (await get(`${base}/d`, headers)).body.left as number | null;
    };
    // a plaintext peer is no mesh peer: its header is ignored, the service's own timeout applies
    expect(await seen({}, { [DEADLINE_HEADER]: '2000' })).toBeNull();
    const own = await seen({ timeoutMs: 300 }, { [DEADLINE_HEADER]: '1' });
    expect(own).toBeGreaterThan(200);
    expect(own).toBeLessThanOrEqual(300);
    // trusted: honoured, but never beyond the service's timeout, nor beyond what a timer holds
    const trusted = { deadlines: { trustedNetworks: ['127.0.0.0/8', '::1'] } };
    expect(await seen({ ...trusted, timeoutMs: 300 }, { [DEADLINE_HEADER]: '60000' })).toBeLessThanOrEqual(
      300,
    );
    const huge = await seen(trusted, { [DEADLINE_HEADER]: '1e308' });
    expect(huge).toBeGreaterThan(2 ** 31 - 1 - 1_000);
    expect(huge).toBeLessThanOrEqual(2 ** 31 - 1);
  });

  it('hands Express the normalized path (req.url), keeps the received one in req.originalUrl', async () => {
    const app = express();
    mount(app, { escapedSlashes: 'UNESCAPE_AND_REDIRECT' });
    app.get('/files/:name', (req, res) => {
      res.json({ url: req.url, originalUrl: req.originalUrl, name: req.params.name });
    });
    const { port } = await listen(app);
    const { rawHttp, rawRequest } = await import('../../../test/helpers/raw-http.js');
    const r = await rawHttp(port, rawRequest('GET', '/docs/../files/%61.txt?x=1#frag'));
    expect(JSON.parse(r.body)).toEqual({
      url: '/files/a.txt?x=1',
      originalUrl: '/docs/../files/%61.txt?x=1#frag',
      name: 'a.txt',
    });
    // UNESCAPE_AND_REDIRECT: a 307 to the unescaped path
    const redirect = await rawHttp(port, rawRequest('GET', '/files/a%2Fb?q'));
    expect([redirect.status, redirect.headers.location]).toEqual([307, '/files/a/b?q']);
    // mounted below the root, a path not in normal form cannot be handed on: 400
    const mounted = express();
    const api = express.Router();
    const seen: string[] = [];
    const record = (a: { path?: string | undefined }) => {
      seen.push(a.path ?? '');
      return { allowed: true, reason: '' };
    };
    api.use(meshMiddleware({ authorizer: record }));
    api.get('/x', (_req, res) => {
      res.json({ ok: true });
    });
    mounted.use('/api', api);
    const other = await listen(mounted);
    const below = await rawHttp(other.port, rawRequest('GET', '/api/./x'));
    expect(below.status).toBe(400);
    expect(JSON.parse(below.body)).toMatchObject({ error: { code: 'MESHLET_ERR_BAD_REQUEST' } });
    expect((await rawHttp(other.port, rawRequest('GET', '/api/x?q=1'))).status).toBe(200);
    expect(seen).toContain('/api/x'); // the policy saw the whole path
  });

  it('reports every request to telemetry with its status and matched route template, never the raw path', async () => {
    const ended: Array<{ info: InboundRequestInfo; status: number; route: string | undefined }> = [];
    let inside = false;
    const telemetry: InboundTelemetry = {
      start(info) {
        return {
          run: (fn) => {
            inside = true;
            try {
              return fn();
            } finally {
              inside = false;
            }
          },
          end: (status, _error, route) => ended.push({ info, status, route }),
        };
      },
    };
    const app = express();
    mount(app, { telemetry });
    let sawSpan = false;
    let closeListeners = 0;
    app.get('/x', (_req, res) => {
      sawSpan = inside;
      // One listener ends the span and counts the request out of the load sampler.
      closeListeners = res.listenerCount('close');
      res.status(201).json({});
    });
    const api = express.Router();
    api.get('/items/:id', (req, res) => {
      res.json({ id: req.params.id });
    });
    app.use('/api', api);
    const { base } = await listen(app);
    await get(`${base}/x`);
    await get(`${base}/api/items/42`);
    await get(`${base}/missing`).catch(() => undefined);
    await new Promise((r) => setImmediate(r));
    expect(sawSpan).toBe(true);
    expect(closeListeners).toBe(1);
    expect(ended.map((e) => [e.info.method, e.info.path, e.status, e.route ?? e.info.route])).toEqual([
      ['GET', '/x', 201, '/x'],
      ['GET', '/api/items/42', 200, '/api/items/:id'],
      ['GET', '/missing', 404, undefined],
    ]);
  });
});

describe('meshMiddleware on Express 4', () => {
  // Express 4 (the peer range's floor) keeps its router in `_router`; its `router` getter throws.
  const express4 = createRequire(import.meta.url)('express4') as typeof express;

  it('admits, refuses and reports the route of a request through a mounted router', async () => {
    const ended: Array<[string, number, string | undefined]> = [];
    const telemetry: InboundTelemetry = {
      start(info) {
        return {
          run: (fn) => fn(),
          end: (status, _error, route) => ended.push([info.path, status, route ?? info.route]),
        };
      },
    };
    const app = express4();
    app.use(
      meshMiddleware({
        telemetry,
        authorizer: (a) => ({ allowed: !a.path?.startsWith('/api/admin'), reason: 'DENY /api/admin' }),
      }),
    );
    const api = express4.Router();
    api.get('/items/:id', (req, res) => {
      res.json({ id: req.params.id });
    });
    api.get('/admin', (_req, res) => {
      res.json({ reached: true });
    });
    app.use('/api', api);
    const { base, port } = await listen(app);
    expect(await (await fetch(`${base}/api/items/42`)).json()).toEqual({ id: '42' });
    const { rawHttp, rawRequest } = await import('../../../test/helpers/raw-http.js');
    const denied = await rawHttp(port, rawRequest('GET', '/api/ADMIN/'));
    expect(denied.status).toBe(403);
    await new Promise((r) => setImmediate(r));
    // Express 4's layers do not give the mount pattern: the route's own path stands alone.
    expect(ended).toEqual([
      ['/api/items/42', 200, '/items/:id'],
      ['/api/ADMIN/', 403, undefined], // refused before routing: no route
    ]);
  });
});

function call(
  port: number,
  agent: Agent,
  path: string,
): Promise<{ status: number; connection: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('load reports and overload protection', () => {
  it('adds the load report to responses that ask for it, in the form asked for, and counts requests in flight', async () => {
    const app = express();
    app.use(meshMiddleware({ telemetry: false }));
    let inFlight = -1;
    app.get('/x', (_req, res) => {
      inFlight = processLoad().inFlight;
      res.json({ ok: true });
    });
    const { base } = await listen(app);
    const before = processLoad().inFlight;
    const plain = await fetch(`${base}/x`);
    await plain.arrayBuffer();
    expect(plain.headers.get(ORCA_HEADER)).toBeNull();
    for (const [asked, word] of [
      ['TEXT', 'TEXT '],
      ['json', 'JSON '],
      ['BIN', 'BIN '],
    ] as const) {
      const res = await fetch(`${base}/x`, { headers: { [ORCA_FORMAT_HEADER]: asked } });
      await res.arrayBuffer();
      const value = res.headers.get(ORCA_HEADER) ?? '';
      expect(value.startsWith(word)).toBe(true);
      const parsed = parseOrcaHeader(value);
      expect(parsed.ok && parsed.report.namedMetrics.in_flight).toBeGreaterThanOrEqual(0);
    }
    expect(inFlight).toBeGreaterThanOrEqual(before + 1);
    await new Promise((r) => setImmediate(r));
    expect(processLoad().inFlight).toBe(before);
  });

  it('sends reports always, or never, as configured', async () => {
    const always = express();
    always.use(meshMiddleware({ telemetry: false, loadReports: { send: 'always', format: 'json' } }));
    always.get('/x', (_req, res) => res.json({}));
    const a = await listen(always);
    const r1 = await fetch(`${a.base}/x`);
    expect(r1.headers.get(ORCA_HEADER)?.startsWith('JSON {')).toBe(true);
    const off = express();
    off.use(meshMiddleware({ telemetry: false, loadReports: false }));
    off.get('/x', (_req, res) => res.json({}));
    const b = await listen(off);
    const r2 = await fetch(`${b.base}/x`, { headers: { [ORCA_FORMAT_HEADER]: 'TEXT' } });
    expect(r2.headers.get(ORCA_HEADER)).toBeNull();
    expect(() => meshMiddleware({ overload: { maxEventLoopDelay: -1 } })).toThrow(
      /overload.maxEventLoopDelay/,
    );
  });

  it('sheds requests admitted while the event loop is behind, early and with Retry-After; probes still pass', async () => {
    const app = express();
    app.use(
      meshMiddleware({
        telemetry: false,
        overload: { maxEventLoopDelay: '100ms', maxUtilization: 1, exemptPaths: ['/livez'] },
      }),
    );
    const ran: string[] = [];
    app.get('/block', (_req, res) => {
      ran.push('/block');
      // A handler that holds the event loop: everything read in the same turn waits behind it.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 400);
      res.json({ ok: true });
    });
    for (const p of ['/x', '/y', '/livez'])
      app.get(p, (_req, res) => {
        ran.push(p);
        res.json({ ok: true });
      });
    const { port } = await listen(app);
    const { rawPipelined, rawRequest } = await import('../../../test/helpers/raw-http.js');
    const ask = ['Host: x', `${ORCA_FORMAT_HEADER}: TEXT`];
    const res = await rawPipelined(port, [
      rawRequest('GET', '/block', ask, false),
      rawRequest('GET', '/x', ask, false),
      rawRequest('GET', '/healthz', ['Host: x'], false),
      rawRequest('GET', '/ready', ['Host: x'], false),
      rawRequest('GET', '/livez', ['Host: x'], false),
      rawRequest('POST', '/y', ['Host: x', 'content-length: 0']),
    ]);
    expect(res.map((r) => r.status)).toEqual([200, 503, 200, 200, 200, 503]);
    // The shed requests never reached their handlers.
    expect(ran).toEqual(['/block', '/livez']);
    const shed = res[1];
    expect(shed?.headers['retry-after']).toBe('1');
    expect(shed?.headers[SHED_HEADER]).toBe('event-loop-delay');
    expect(JSON.parse(shed?.body ?? '')).toMatchObject({
      error: { code: 'MESHLET_ERR_OVERLOADED', message: expect.stringMatching(/event loop is \d+ms behind/) },
    });
    // …with a load report that says the loop is saturated
    const report = parseOrcaHeader(shed?.headers[ORCA_HEADER] ?? '');
    expect(report.ok && report.report.applicationUtilization).toBe(1);
    expect(res[5]?.headers[ORCA_HEADER]).toBeUndefined(); // it did not ask
  });
});

describe('gracefulShutdown', () => {
  it('drains under load losing zero requests: readiness first, in-flight finish, keep-alive closed, then stop', async () => {
    const mesh = await newMesh();
    const app = express();
    app.use(meshMiddleware({ mesh }));
    let inFlight = 0;
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let arrived: () => void = () => {};
    const allArrived = new Promise<void>((r) => {
      arrived = r;
    });
    app.get('/work', async (_req, res) => {
      if (++inFlight === 40) arrived();
      await gate;
      res.json({ ok: true });
    });
    const { server, port } = await listen(app);
    const g = gracefulShutdown(server, { mesh, signals: [], closeMesh: false, timeoutMs: 5_000 });
    cleanups.push(g.dispose);
    const agent = new Agent({ keepAlive: true, maxSockets: 50 });
    cleanups.push(() => agent.destroy());
    // an idle keep-alive connection, closed at once by the drain
    await call(port, agent, '/healthz');
    const calls: Promise<{ status: number; connection: string | undefined }>[] = [];
    for (let i = 0; i < 40; i++) calls.push(call(port, agent, '/work'));
    await allArrived;
    expect((await get(`http://127.0.0.1:${port}/ready`)).status).toBe(200);
    const drained = g.drain();
    expect(mesh.isReady).toBe(true);
    // readiness fails first
    const { isServing } = await import('@meshlet/core');
    expect(isServing(mesh)).toBe(false);
    await new Promise((r) => setTimeout(r, 20));
    release();
    const results = await Promise.all(calls);
    await drained;
    expect(results.map((r) => r.status)).toEqual(new Array(40).fill(200));
    expect(results.every((r) => r.connection === 'close')).toBe(true);
    expect(server.listening).toBe(false);
    expect(g.drainer.stats.connections).toBe(0);
  });

  it('closes keep-alive connections older than maxConnectionAgeMs after their response', async () => {
    const app = express();
    app.get('/x', (_req, res) => {
      res.json({});
    });
    const { server, port } = await listen(app);
    const g = gracefulShutdown(server, { signals: [], maxConnectionAgeMs: 0 });
    cleanups.push(g.dispose);
    const agent = new Agent({ keepAlive: true });
    cleanups.push(() => agent.destroy());
    expect((await call(port, agent, '/x')).connection).toBe('close');
  });

  it('starts on SIGTERM and closes the mesh afterwards', async () => {
    const mesh = await newMesh();
    const app = express();
    const { server } = await listen(app);
    const g = gracefulShutdown(server, { mesh, signals: ['SIGUSR2'] });
    cleanups.push(g.dispose);
    const closed = new Promise<void>((resolve) => mesh.onClose(() => resolve()));
    process.emit('SIGUSR2', 'SIGUSR2');
    await closed;
    expect(mesh.closed).toBe(true);
    expect(server.listening).toBe(false);
  });
});

describe('mTLS peer identity and HTTPS drain', () => {
  it('authorizes on the client SPIFFE ID and drains an HTTPS server without cutting requests', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const https = await import('node:https');
    const { CertificateSource, createCa, createHttpsServer, issueWorkloadCertificate, writeCertDirectory } =
      await import('@meshlet/tls');
    const ca = await createCa();
    const dirFor = async (name: string) => {
      const dir = mkdtempSync(join(tmpdir(), `meshlet-express-${name}-`));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      const leaf = await issueWorkloadCertificate({
        ca,
        spiffeId: `spiffe://cluster.local/ns/default/sa/${name}`,
      });
      await writeCertDirectory(dir, { cert: leaf.cert, key: leaf.key, ca: ca.cert });
      return new CertificateSource({ dir, watch: false });
    };
    const serverSource = await dirFor('api');
    const clientSource = await dirFor('frontend');
    const otherSource = await dirFor('intruder');
    cleanups.push(() => serverSource.close());
    cleanups.push(() => clientSource.close());
    cleanups.push(() => otherSource.close());
    const authorizer = createAuthorizer([
      {
        name: 'frontend-only',
        action: 'ALLOW',
        rules: [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/frontend'] } }] }],
      },
    ]);
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let arrived: () => void = () => {};
    const inFlight = new Promise<void>((r) => {
      arrived = r;
    });
    const app = express();
    app.use(meshMiddleware({ authorizer }));
    app.get('/slow', async (_req, res) => {
      arrived();
      await gate;
      res.json({ ok: true });
    });
    app.get('/who', (_req, res) => {
      res.json({ ok: true });
    });
    const server = createHttpsServer({ source: serverSource }, app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const g = gracefulShutdown(server, { signals: [] });
    cleanups.push(g.dispose);

    const get = (source: InstanceType<typeof CertificateSource>, path: string) =>
      new Promise<{ status: number; body: string; connection: string | undefined }>((resolve, reject) => {
        const pem = source.pem();
        const req = https.request(
          {
            host: '127.0.0.1',
            port,
            path,
            ca: pem.ca,
            cert: pem.cert,
            key: pem.key,
            checkServerIdentity: () => undefined,
            agent: false,
          },
          (res) => {
            let body = '';
            res.on('data', (c) => {
              body += c;
            });
            res.on('end', () =>
              resolve({ status: res.statusCode ?? 0, body, connection: res.headers.connection }),
            );
          },
        );
        req.on('error', reject);
        req.end();
      });
    expect((await get(clientSource, '/who')).status).toBe(200);
    const denied = await get(otherSource, '/who');
    expect(denied.status).toBe(403);
    expect(JSON.parse(denied.body)).toMatchObject({ error: { code: 'MESHLET_ERR_FORBIDDEN' } });

    const slow = get(clientSource, '/slow');
    await inFlight;
    const drained = g.drain();
    await new Promise((r) => setTimeout(r, 20));
    release();
    const res = await slow;
    await drained;
    expect(res.status).toBe(200);
    expect(res.connection).toBe('close');
    expect(server.listening).toBe(false);
  });
});
