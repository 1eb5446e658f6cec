import {
  type Client,
  credentials,
  makeClientConstructor,
  ServerCredentials,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { currentDeadline, type InboundAttributes, type Mesh, startDraining } from '@meshlet/core';
import { service as healthService } from 'grpc-health-check';
import { afterEach, describe, expect, it } from 'vitest';
import { createMeshClient, createMeshServer, type MeshServer } from '../src/index.js';
import { EchoClient, type EchoReply, type EchoRequest, echo, echoDefinition, meshFor } from './helpers.js';

const HealthClient = makeClientConstructor(healthService, 'grpc.health.v1.Health');
type Health = Client & {
  check(req: { service: string }, cb: (err: ServiceError | null, res?: { status: string }) => void): void;
  watch(req: { service: string }): NodeJS.EventEmitter & { cancel(): void };
};

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function listen(ms: MeshServer): Promise<number> {
  const port = await new Promise<number>((resolve, reject) =>
    ms.server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  cleanups.push(() => ms.server.forceShutdown());
  return port;
}

function check(client: Health, service = ''): Promise<string> {
  return new Promise((resolve, reject) =>
    client.check({ service }, (err, res) => (err ? reject(err) : resolve(res?.status ?? ''))),
  );
}

async function meshWith(services: Record<string, unknown> = {}): Promise<Mesh> {
  const m = await meshFor(services);
  cleanups.push(() => m.close());
  return m;
}

describe('grpc.health.v1 Health service (checked with grpc-health-check)', () => {
  it('reports SERVING while the mesh is ready, NOT_SERVING when draining; Watch streams the change', async () => {
    const mesh = await meshWith();
    const ms = createMeshServer({ mesh });
    const port = await listen(ms);
    const client = new HealthClient(`127.0.0.1:${port}`, credentials.createInsecure()) as unknown as Health;
    cleanups.push(() => client.close());
    expect(await check(client)).toBe('SERVING');
    await expect(check(client, 'no.such.Service')).rejects.toMatchObject({ code: status.NOT_FOUND });
    ms.health?.setStatus('test.Echo', 'SERVING');
    expect(await check(client, 'test.Echo')).toBe('SERVING');

    const stream = client.watch({ service: '' });
    cleanups.push(() => stream.cancel());
    const seen: string[] = [];
    const notServing = new Promise<void>((resolve) =>
      stream.on('data', (m: { status: string }) => {
        seen.push(m.status);
        if (m.status === 'NOT_SERVING') resolve();
        else startDraining(mesh);
      }),
    );
    stream.on('error', () => {});
    await notServing;
    expect(seen).toEqual(['SERVING', 'NOT_SERVING']);
    expect(await check(client)).toBe('NOT_SERVING');
    expect(await check(client, 'test.Echo')).toBe('NOT_SERVING');
  });
});

describe('server interceptor', () => {
  it('runs handlers with the call deadline in scope and denies with PERMISSION_DENIED', async () => {
    const seen: InboundAttributes[] = [];
    const ms = createMeshServer({
      deadlines: { trustedNetworks: ['127.0.0.0/8', '::1'] },
      authorizer: (a) => {
        seen.push(a);
        const ok = a.headers?.['x-user'] === 'alice';
        return { allowed: ok, reason: ok ? 'allowed' : 'no ALLOW policy matched' };
      },
    });
    ms.server.addService(echoDefinition, {
      Echo: (call: { request: EchoRequest }, cb: (e: null, r: EchoReply) => void) => {
        setTimeout(() => cb(null, { text: call.request.text, server: 'x', deadline: currentDeadline() }), 1);
      },
    });
    const port = await listen(ms);
    const client = new EchoClient(`127.0.0.1:${port}`, credentials.createInsecure());
    cleanups.push(() => client.close());
    const { Metadata } = await import('@grpc/grpc-js');
    const call = (user: string, deadline: number) =>
      new Promise<EchoReply>((resolve, reject) => {
        const md = new Metadata();
        md.set('x-user', user);
        (client as unknown as { echo: (...a: unknown[]) => void }).echo(
          { text: 'x' },
          md,
          { deadline },
          (err: Error | null, res?: EchoReply) => (err ? reject(err) : resolve(res as EchoReply)),
        );
      });
    const deadline = Date.now() + 3_000;
    const reply = await call('alice', deadline);
    expect(reply.deadline).toBeDefined();
    expect(Math.abs((reply.deadline ?? 0) - deadline)).toBeLessThan(1_000);
    await expect(call('mallory', deadline)).rejects.toMatchObject({
      code: status.PERMISSION_DENIED,
      details: 'MESHLET_ERR_FORBIDDEN: no ALLOW policy matched',
    });
    expect(seen.map((a) => a.path)).toEqual(['/test.Echo/Echo', '/test.Echo/Echo']);
    expect(seen[0]?.sourceIp).toBe('127.0.0.1');
    expect(seen[0]?.host).toBe(`127.0.0.1:${port}`);
  });
});

describe('graceful drain', () => {
  it('loses no call under load: health fails first, in-flight calls finish, then the server stops', async () => {
    const mesh = await meshWith();
    const ms = createMeshServer({ mesh });
    let inFlight = 0;
    ms.server.addService(echoDefinition, {
      Echo: (call: { request: EchoRequest }, cb: (e: null, r: EchoReply) => void) => {
        inFlight++;
        setTimeout(() => {
          inFlight--;
          cb(null, { text: call.request.text, server: 'drained' });
        }, 30);
      },
    });
    const port = await listen(ms);
    const client = new EchoClient(`127.0.0.1:${port}`, credentials.createInsecure());
    cleanups.push(() => client.close());
    const health = new HealthClient(`127.0.0.1:${port}`, credentials.createInsecure()) as unknown as Health;
    cleanups.push(() => health.close());
    expect(await check(health)).toBe('SERVING');
    const calls: Promise<EchoReply>[] = [];
    for (let i = 0; i < 50; i++) calls.push(echo(client, { text: String(i) }));
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (inFlight >= 50) {
          clearInterval(t);
          resolve();
        }
      }, 2);
    });
    const drained = ms.drain({ timeoutMs: 5_000 });
    const results = await Promise.allSettled(calls);
    await drained;
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(50);
    await expect(echo(client, { text: 'late' }, { deadline: Date.now() + 500 })).rejects.toMatchObject({
      code: expect.any(Number),
    });
  });

  it('lets a mesh client fail over when the server it used drains (retry on UNAVAILABLE)', async () => {
    const servers: MeshServer[] = [];
    const ports: number[] = [];
    for (let i = 0; i < 2; i++) {
      const ms = createMeshServer();
      ms.server.addService(echoDefinition, {
        Echo: (call: { request: EchoRequest }, cb: (e: null, r: EchoReply) => void) =>
          cb(null, { text: call.request.text, server: `s${i}` }),
      });
      servers.push(ms);
      ports.push(await listen(ms));
    }
    await meshWith({ echo: { endpoints: ports.map((p) => `127.0.0.1:${p}`), lb: 'round_robin' } });
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    for (let i = 0; i < 4; i++) await echo(client, { text: 'x' });
    await servers[0]?.drain({ timeoutMs: 1_000 });
    for (let i = 0; i < 10; i++) expect((await echo(client, { text: 'x' })).server).toBe('s1');
  });
});
