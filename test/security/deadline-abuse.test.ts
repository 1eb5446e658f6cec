/**
 * Issue 14, finding 2: one client could open the breaker for everyone. 40 requests carrying
 * `x-meshlet-deadline-ms: 1` to an Express service whose handler calls an upstream through the
 * mesh made every outbound call time out at once; the timeouts counted against the (healthy)
 * upstream, the breaker opened and the next ordinary requests failed with
 * MESHLET_ERR_CIRCUIT_OPEN. A caller's deadline is now honoured only from trusted peers, and its
 * expiry is the caller's: never a breaker failure or an outlier signal.
 */
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { meshMiddleware } from '../../packages/express/src/index.js';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';
import { rawHttp, rawRequest } from '../helpers/raw-http.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function listen(server: HttpServer): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  cleanups.push(() => server.closeAllConnections());
  return (server.address() as AddressInfo).port;
}

/** An upstream that answers every request after 20 ms, and the Express service calling it. */
async function setup(inbound?: Record<string, unknown>): Promise<{ mesh: Mesh; port: number }> {
  const upstream = createServer((_req, res) => {
    setTimeout(() => res.end('ok'), 20);
  });
  const upPort = await listen(upstream);
  const mesh = await createMesh({
    services: { up: { endpoints: [`127.0.0.1:${upPort}`] } },
    ...(inbound ? { inbound } : {}),
  });
  cleanups.push(() => mesh.close());
  await mesh.ready();
  const app = express();
  app.use(meshMiddleware({ mesh }));
  app.get('/work', async (_req, res) => {
    try {
      const r = await mesh.fetch('http://up/');
      res.status(r.status).send(await r.text());
    } catch (err) {
      const code = ((err as Error).cause as { code?: string } | undefined)?.code ?? 'error';
      res.status(504).send(code);
    }
  });
  return { mesh, port: await listen(createServer(app)) };
}

async function abuseThenServe(mesh: Mesh, port: number) {
  const abusive = [];
  for (let i = 0; i < 40; i++) {
    abusive.push(rawHttp(port, rawRequest('GET', '/work', ['Host: svc', 'x-meshlet-deadline-ms: 1'])));
  }
  await Promise.all(abusive);
  const after = [];
  for (let i = 0; i < 10; i++) after.push(await rawHttp(port, rawRequest('GET', '/work')));
  const up = mesh.snapshot().services.up;
  return {
    statuses: after.map((r) => r.status),
    bodies: after.map((r) => r.body),
    breaker: (up?.resilience.breaker as { state: string } | undefined)?.state,
    ejected: up?.endpoints.filter((e) => e.ejected).length,
    usable: up?.endpoints.length,
  };
}

describe('a caller cannot open the breaker for everyone with its deadline header', () => {
  it('an untrusted caller: its 1 ms deadline is ignored, the breaker stays closed, the next 10 succeed', async () => {
    const { mesh, port } = await setup();
    const r = await abuseThenServe(mesh, port);
    expect(r.breaker).toBe('closed');
    expect(r.ejected).toBe(0);
    expect(r.usable).toBe(1);
    expect(r.statuses, r.bodies.join(',')).toEqual(new Array(10).fill(200));
  });

  it("a trusted caller: its 1 ms deadline bounds its own calls, but their expiry is the caller's, not the upstream's", async () => {
    const { mesh, port } = await setup({ deadlines: { trustedNetworks: ['127.0.0.0/8', '::1'] } });
    const r = await abuseThenServe(mesh, port);
    expect(r.breaker).toBe('closed');
    expect(r.ejected).toBe(0);
    expect(r.statuses, r.bodies.join(',')).toEqual(new Array(10).fill(200));
  });
});
