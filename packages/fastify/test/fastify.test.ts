import { Agent, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  currentDeadline,
  type InboundRequestInfo,
  type InboundTelemetry,
  isServing,
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
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DEADLINE_HEADER, type MeshFastifyOptions, meshPlugin } from '../src/index.js';

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

async function start(
  options: MeshFastifyOptions,
  routes: (app: FastifyInstance) => void,
): Promise<{ app: FastifyInstance; base: string; port: number }> {
  const app = Fastify();
  await app.register(meshPlugin, { drain: false, ...options });
  routes(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  cleanups.push(() => app.close());
  const port = (app.server.address() as AddressInfo).port;
  return { app, base: `http://127.0.0.1:${port}`, port };
}

async function get(url: string, headers: Record<string, string> = {}, body?: string) {
  const res = await fetch(url, {
    method: body === undefined ? 'GET' : 'POST',
    headers: body === undefined ? headers : { ...headers, 'content-type': 'application/json' },
    body,
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('meshPlugin', () => {
  it('serves liveness and readiness; readiness fails while draining', async () => {
    const mesh = await newMesh();
    const { base } = await start({ mesh }, () => {});
    expect(await get(`${base}/healthz`)).toEqual({ status: 200, body: { status: 'alive' } });
    expect(await get(`${base}/ready`)).toEqual({ status: 200, body: { status: 'ready' } });
    startDraining(mesh);
    expect(await get(`${base}/ready`)).toEqual({ status: 503, body: { status: 'not_ready' } });
  });

  it('enforces the authorization policy with a 403 and a coded body', async () => {
    const authorizer = createAuthorizer([
      {
        name: 'deny-mallory',
        action: 'DENY',
        rules: [{ when: [{ key: 'request.headers[x-user]', values: ['mallory'] }] }],
      },
    ]);
    const { base } = await start({ authorizer }, (app) => {
      app.get('/data', async () => ({ ok: true }));
    });
    expect(await get(`${base}/data`, { 'x-user': 'alice' })).toEqual({ status: 200, body: { ok: true } });
    const denied = await get(`${base}/data`, { 'x-user': 'mallory' });
    expect(denied.status).toBe(403);
    expect(denied.body).toMatchObject({ error: { code: 'MESHLET_ERR_FORBIDDEN', policy: 'deny-mallory' } });
  });

  it("runs handlers (after body parsing too) in the deadline context of a trusted caller's header", async () => {
    const { base } = await start({ deadlines: { trustedNetworks: ['127.0.0.0/8', '::1'] } }, (app) => {
      const left = () => {
        const d = currentDeadline();
        return { left: d === undefined ? null : d - Date.now() };
      };
      app.get('/d', async () => {
        await new Promise((r) => setTimeout(r, 5));
        return left();
      });
      app.post('/d', async () => {
        await new Promise((r) => setTimeout(r, 5));
        return left();
      });
    });
    const a = await get(`${base}/d`, { [DEADLINE_HEADER]: '2000' });
    expect(a.body.left).toBeGreaterThan(1_000);
    expect(a.body.left).toBeLessThanOrEqual(2_000);
    const b = await get(
      `${base}/d`,
      { 'x-request-timeout': '900' },
      JSON.stringify({ big: 'x'.repeat(100_000) }),
    );
    expect(b.body.left).toBeGreaterThan(0);
    expect(b.body.left).toBeLessThanOrEqual(900);
    expect((await get(`${base}/d`)).body.left).toBeNull();
  });

  it('reports every request to telemetry with its status, the handler inside the span', async () => {
    const ended: Array<{ info: InboundRequestInfo; status: number }> = [];
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
          end: (status) => ended.push({ info, status }),
        };
      },
    };
    let sawSpan = false;
    let closeListeners = 0;
    const { base } = await start({ telemetry }, (app) => {
      app.get('/items/:id', async (_req, reply) => {
        sawSpan = inside;
        // One listener ends the span and counts the request out of the load sampler.
        closeListeners = reply.raw.listenerCount('close');
        reply.code(202);
        return {};
      });
    });
    await get(`${base}/items/7`);
    await get(`${base}/no/such/path`).catch(() => undefined);
    await vi.waitFor(() => expect(ended).toHaveLength(2));
    expect(sawSpan).toBe(true);
    expect(closeListeners).toBe(1);
    // The route template, never the raw path (a 404 has no route: metric series stay bounded).
    expect(ended.map((e) => [e.info.route, e.info.path, e.status])).toEqual([
      ['/items/:id', '/items/7', 202],
      [undefined, '/no/such/path', 404],
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
  it('answers a request for the load report, counts requests, and sheds early with Retry-After while probes pass', async () => {
    const ran: string[] = [];
    const { port, base } = await start(
      { telemetry: false, overload: { maxEventLoopDelay: '100ms', maxUtilization: 1 } },
      (app) => {
        app.get('/block', async () => {
          ran.push('/block');
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 400);
          return { ok: true };
        });
        app.get('/x', async () => {
          ran.push('/x');
          return { inFlight: processLoad().inFlight };
        });
      },
    );
    const asked = await fetch(`${base}/x`, { headers: { [ORCA_FORMAT_HEADER]: 'text' } });
    expect(((await asked.json()) as { inFlight: number }).inFlight).toBeGreaterThanOrEqual(1);
    const report = parseOrcaHeader(asked.headers.get(ORCA_HEADER) ?? '');
    expect(report.ok).toBe(true);
    ran.length = 0;
    const { rawPipelined, rawRequest } = await import('../../../test/helpers/raw-http.js');
    const res = await rawPipelined(port, [
      rawRequest('GET', '/block', ['Host: x'], false),
      rawRequest('GET', '/x', ['Host: x'], false),
      rawRequest('GET', '/healthz', ['Host: x'], false),
      rawRequest('GET', '/ready', ['Host: x']),
    ]);
    expect(res.map((r) => r.status)).toEqual([200, 503, 200, 200]);
    expect(ran).toEqual(['/block']);
    expect(res[1]?.headers).toMatchObject({ 'retry-after': '1', [SHED_HEADER]: 'event-loop-delay' });
    expect(JSON.parse(res[1]?.body ?? '')).toMatchObject({ error: { code: 'MESHLET_ERR_OVERLOADED' } });
  });
});

describe('graceful drain', () => {
  it('on SIGTERM: readiness first, in-flight requests finish, keep-alive closed, server and mesh closed', async () => {
    const mesh = await newMesh();
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let inFlight = 0;
    let arrived: () => void = () => {};
    const allArrived = new Promise<void>((r) => {
      arrived = r;
    });
    const { app, port } = await start({ mesh, drain: { signals: ['SIGUSR2'], timeoutMs: 5_000 } }, (a) => {
      a.get('/work', async () => {
        if (++inFlight === 30) arrived();
        await gate;
        return { ok: true };
      });
    });
    const agent = new Agent({ keepAlive: true, maxSockets: 40 });
    cleanups.push(() => agent.destroy());
    const calls: Promise<{ status: number; connection: string | undefined }>[] = [];
    for (let i = 0; i < 30; i++) calls.push(call(port, agent, '/work'));
    await allArrived;
    const meshClosed = new Promise<void>((resolve) => mesh.onClose(() => resolve()));
    process.emit('SIGUSR2', 'SIGUSR2');
    expect(isServing(mesh)).toBe(false);
    await new Promise((r) => setTimeout(r, 20));
    release();
    const results = await Promise.all(calls);
    await meshClosed;
    expect(results.map((r) => r.status)).toEqual(new Array(30).fill(200));
    expect(results.every((r) => r.connection === 'close')).toBe(true);
    expect(app.server.listening).toBe(false);
  });
});
