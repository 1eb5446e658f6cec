import { type Client, credentials, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { type ControlPlane, startControlPlane } from '../../packages/control-plane/src/index.js';
import { createMeshClient } from '../../packages/grpc/src/index.js';
import {
  EchoClient,
  type EchoReply,
  startEchoServer,
  stopServer,
  type TestServer,
} from '../../packages/grpc/test/helpers.js';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';
import { bootstrapJson, until } from './xds/helpers.js';

// gRPC clients resolve `mesh:///NAME` through the xDS listener NAME, as mesh fetch does for
// `http://NAME/`: per-call route matching on the method path and metadata, weighted clusters,
// route timeouts, retry policies and hash policies, from meshlet's own control plane.

let cleanup: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

async function servers(...names: string[]): Promise<TestServer[]> {
  const out: TestServer[] = [];
  for (const n of names) {
    const s = await startEchoServer(n);
    cleanup.push(() => stopServer(s));
    out.push(s);
  }
  return out;
}

const addr = (s: TestServer | undefined) => `127.0.0.1:${s?.port}`;

async function controlPlane(services: Record<string, unknown>): Promise<ControlPlane> {
  const cp = await startControlPlane({ config: { services } });
  cleanup.push(() => cp.close());
  return cp;
}

async function meshFor(cp: ControlPlane, config: Record<string, unknown> = {}): Promise<Mesh> {
  const mesh = await createMesh(config, { env: { GRPC_XDS_BOOTSTRAP_CONFIG: bootstrapJson([cp.address]) } });
  cleanup.push(() => mesh.close());
  return mesh;
}

type EchoFn = (
  req: { text: string; delayMs?: number },
  md: Metadata,
  opts: object,
  cb: (err: ServiceError | null, res?: EchoReply) => void,
) => unknown;

function call(
  client: Client,
  headers: Record<string, string> = {},
  req: { text: string; delayMs?: number } = { text: 'x' },
): Promise<EchoReply> {
  const md = new Metadata();
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  return new Promise((resolve, reject) => {
    (client as unknown as { echo: EchoFn }).echo(req, md, {}, (err, res) =>
      err ? reject(err) : resolve(res as EchoReply),
    );
  });
}

function meshClient(target: string): Client {
  const c = createMeshClient(EchoClient, target);
  cleanup.push(() => c.close());
  return c;
}

function plainClient(target: string): Client {
  const c = new EchoClient(target, credentials.createInsecure());
  cleanup.push(() => c.close());
  return c;
}

describe('xDS routing of mesh: gRPC channels', () => {
  it('routes by metadata and splits by weight, for mesh clients and plain grpc-js clients', async () => {
    const [v1, v2] = await servers('v1', 'v2');
    const cp = await controlPlane({
      'reviews-v1': { endpoints: [addr(v1)], listener: false },
      'reviews-v2': { endpoints: [addr(v2)], listener: false },
      reviews: {
        routes: [
          { match: { headers: [{ name: 'x-user', exact: 'alice' }] }, cluster: 'reviews-v2' },
          { match: { prefix: '/test.Echo/' }, weighted: { 'reviews-v1': 80, 'reviews-v2': 20 } },
        ],
      },
    });
    await meshFor(cp);
    for (const [kind, client] of [
      ['mesh client', meshClient('mesh:///reviews')],
      ['plain grpc-js client', plainClient('mesh:///reviews')],
    ] as const) {
      for (let i = 0; i < 10; i++) expect((await call(client, { 'x-user': 'alice' })).server).toBe('v2');
      const counts: Record<string, number> = { v1: 0, v2: 0 };
      const n = 600;
      for (let i = 0; i < n; i++) {
        const r = await call(client, { 'x-user': 'bob' });
        counts[r.server] = (counts[r.server] ?? 0) + 1;
      }
      // 80/20 within ±7 points: the binomial sd at n=600 is 1.63 points, so a fair split falls
      // outside once in ~50,000 runs (at n=300 and ±8 points, 3.5 sd, a CI run met it once: 265/35).
      const share = (counts.v1 ?? 0) / n;
      expect(share, `${kind}: ${JSON.stringify(counts)}`).toBeGreaterThan(0.73);
      expect(share, `${kind}: ${JSON.stringify(counts)}`).toBeLessThan(0.87);
    }
  });

  it('fails calls no route matches with UNAVAILABLE, and follows route pushes', async () => {
    const [a, b] = await servers('a', 'b');
    const services = {
      'svc-a': { endpoints: [addr(a)], listener: false },
      'svc-b': { endpoints: [addr(b)], listener: false },
      front: { routes: [{ match: { prefix: '/test.Echo/' }, cluster: 'svc-a' }] },
    };
    const cp = await controlPlane(services);
    await meshFor(cp);
    const client = meshClient('mesh:///front');
    expect((await call(client)).server).toBe('a');
    cp.setConfig({
      services: {
        ...services,
        front: { routes: [{ match: { prefix: '/other.Service/' }, cluster: 'svc-a' }] },
      },
    });
    await until(
      () =>
        call(client).then(
          () => false,
          (e: ServiceError) => e.code === status.UNAVAILABLE && /no route/.test(e.details),
        ),
      5_000,
      'route removed',
    );
    cp.setConfig({ services: { ...services, front: { routes: [{ cluster: 'svc-b' }] } } });
    await until(async () => (await call(client).catch(() => ({ server: '' }))).server === 'b', 5_000, 'push');
    for (let i = 0; i < 5; i++) expect((await call(client)).server).toBe('b');
  });

  it("applies the route's timeout, retry policy and hash policy, for mesh clients and plain clients", async () => {
    const [slow, flaky, good, h1, h2, h3] = await servers('slow', 'flaky', 'good', 'h1', 'h2', 'h3');
    (flaky as TestServer).failWith = status.INTERNAL;
    const cp = await controlPlane({
      slow: { endpoints: [addr(slow)], listener: false },
      flaky: { endpoints: [addr(flaky), addr(good)], lb: 'round_robin', listener: false },
      flakyNoRetry: { endpoints: [addr(flaky), addr(good)], lb: 'round_robin', listener: false },
      hashed: { endpoints: [addr(h1), addr(h2), addr(h3)], lb: 'ring_hash', listener: false },
      api: {
        routes: [
          { match: { headers: [{ name: 'x-route', exact: 'slow' }] }, cluster: 'slow', timeout: '150ms' },
          {
            match: { headers: [{ name: 'x-route', exact: 'retry' }] },
            cluster: 'flaky',
            retry: { on: ['internal'], attempts: 3 },
          },
          { match: { headers: [{ name: 'x-route', exact: 'noretry' }] }, cluster: 'flakyNoRetry' },
          {
            match: { headers: [{ name: 'x-route', exact: 'hash' }] },
            cluster: 'hashed',
            hash: [{ header: 'x-session' }],
          },
        ],
      },
    });
    await meshFor(cp);
    for (const client of [meshClient('mesh:///api'), plainClient('mesh:///api')]) {
      // Route timeout: the call's deadline, sent as grpc-timeout.
      const t0 = Date.now();
      await expect(call(client, { 'x-route': 'slow' }, { text: 'x', delayMs: 3_000 })).rejects.toMatchObject({
        code: status.DEADLINE_EXCEEDED,
      });
      expect(Date.now() - t0).toBeLessThan(2_500);
      const fast = await call(client, { 'x-route': 'slow' });
      const left = (fast.deadline ?? 0) - Date.now();
      expect(left).toBeGreaterThan(0);
      expect(left).toBeLessThanOrEqual(150);

      // Retry policy: INTERNAL is retried (on another endpoint) only where the route says so.
      for (let i = 0; i < 6; i++) expect((await call(client, { 'x-route': 'retry' })).server).toBe('good');
      let failures = 0;
      for (let i = 0; i < 6; i++) {
        await call(client, { 'x-route': 'noretry' }).catch((e: ServiceError) => {
          expect(e.code).toBe(status.INTERNAL);
          failures++;
        });
      }
      expect(failures).toBeGreaterThan(0);

      // Hash policy: the same x-session reaches the same server; sessions spread over servers.
      const bySession = new Map<string, Set<string>>();
      for (let s = 0; s < 12; s++) {
        for (let i = 0; i < 4; i++) {
          const r = await call(client, { 'x-route': 'hash', 'x-session': `user-${s}` });
          const set = bySession.get(`user-${s}`) ?? new Set<string>();
          set.add(r.server);
          bySession.set(`user-${s}`, set);
        }
      }
      for (const set of bySession.values()) expect(set.size).toBe(1);
      const used = new Set([...bySession.values()].flatMap((s) => [...s]));
      expect(used.size).toBeGreaterThan(1);
    }
  });

  it('fails calls to a listener the control plane does not have with UNAVAILABLE', async () => {
    const [s] = await servers('s');
    const cp = await controlPlane({ backend: { endpoints: [addr(s)] } });
    // The does-not-exist timer, short for the test.
    await meshFor(cp, { xds: { resourceTimeout: '300ms' } });
    expect((await call(meshClient('mesh:///backend'))).server).toBe('s');
    await expect(call(plainClient('mesh:///nosuch'))).rejects.toMatchObject({ code: status.UNAVAILABLE });
    const missing = meshClient('mesh:///nosuch');
    await expect(call(missing)).rejects.toMatchObject({
      code: status.UNAVAILABLE,
      details: expect.stringContaining('nosuch'),
    });
  });

  it('answers a fault-injection abort with the mapped gRPC status without sending the call', async () => {
    const [s] = await servers('s');
    const cp = await controlPlane({
      backend: { endpoints: [addr(s)], listener: false },
      faulty: { routes: [{ cluster: 'backend', fault: { abort: { status: 503, percent: 100 } } }] },
    });
    await meshFor(cp);
    for (const client of [meshClient('mesh:///faulty'), plainClient('mesh:///faulty')]) {
      await expect(call(client)).rejects.toMatchObject({ code: status.UNAVAILABLE });
    }
    expect((s as TestServer).calls).toBe(0);
  });

  it('applies a fault-injection delay (and an abort after it) to plain and mesh clients alike', async () => {
    const [s] = await servers('s');
    const cp = await controlPlane({
      backend: { endpoints: [addr(s)], listener: false },
      slow: { routes: [{ cluster: 'backend', fault: { delay: { fixed: '1s', percent: 100 } } }] },
      slowabort: {
        routes: [
          {
            cluster: 'backend',
            fault: { delay: { fixed: '20ms', percent: 100 }, abort: { status: 503, percent: 100 } },
          },
        ],
      },
    });
    await meshFor(cp);
    const withDeadline = (client: Client, ms: number) =>
      new Promise<EchoReply>((resolve, reject) => {
        (client as unknown as { echo: EchoFn }).echo(
          { text: 'x' },
          new Metadata(),
          { deadline: Date.now() + ms },
          (err, res) => (err ? reject(err) : resolve(res as EchoReply)),
        );
      });
    for (const client of [meshClient('mesh:///slow'), plainClient('mesh:///slow')]) {
      // The delay outlasts the deadline: the call ends DEADLINE_EXCEEDED, never sent.
      await expect(withDeadline(client, 150)).rejects.toMatchObject({ code: status.DEADLINE_EXCEEDED });
    }
    for (const client of [meshClient('mesh:///slowabort'), plainClient('mesh:///slowabort')]) {
      await expect(call(client)).rejects.toMatchObject({ code: status.UNAVAILABLE });
    }
    expect((s as TestServer).calls).toBe(0);
  });
});
