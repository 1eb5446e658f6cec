import {
  type ClientReadableStream,
  credentials,
  Metadata,
  makeGenericClientConstructor,
  Server,
  ServerCredentials,
  type ServerWritableStream,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { type Mesh, runWithDeadline } from '@meshlet/core';
import { afterEach, describe, expect, it } from 'vitest';
import { createMeshClient, meshClientOptions, meshInterceptor, pooledChannelCount } from '../src/index.js';
import {
  EchoClient,
  type EchoClientType,
  echo,
  meshFor,
  startEchoServer,
  stopServer,
  type TestServer,
} from './helpers.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function servers(n: number): Promise<TestServer[]> {
  const list: TestServer[] = [];
  for (let i = 0; i < n; i++) {
    const s = await startEchoServer(`s${i}`);
    cleanups.push(() => stopServer(s));
    list.push(s);
  }
  return list;
}

async function mesh(svc: Record<string, unknown>, opts: { name?: string } = {}): Promise<Mesh> {
  const m = await meshFor(svc, opts);
  cleanups.push(() => m.close());
  return m;
}

const eps = (list: TestServer[]) => list.map((s) => `127.0.0.1:${s.port}`);

describe('mesh: resolver and per-call balancing', () => {
  it('spreads the calls of ONE channel over every server (per call, not per connection)', async () => {
    const list = await servers(3);
    await mesh({ echo: { endpoints: eps(list), lb: 'round_robin' } });
    const client = new EchoClient('mesh:///echo', credentials.createInsecure());
    cleanups.push(() => client.close());
    // 30 concurrent calls on one channel, from the very first one
    await Promise.all(Array.from({ length: 30 }, (_, i) => echo(client, { text: `${i}` })));
    expect(list.map((s) => s.calls)).toEqual([10, 10, 10]);
    for (let i = 0; i < 30; i++) await echo(client, { text: `${i}` });
    expect(list.map((s) => s.calls)).toEqual([20, 20, 20]);
  });

  it('resolves host:port targets and services declared with a port', async () => {
    const list = await servers(2);
    await mesh({ 'echo:9090': { endpoints: eps(list), lb: 'round_robin' } });
    const client = new EchoClient('mesh:///echo:9090', credentials.createInsecure());
    cleanups.push(() => client.close());
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) seen.add((await echo(client, { text: 'x' })).server);
    expect([...seen].sort()).toEqual(['s0', 's1']);
  });

  it('feeds every call into the runtime: in-flight count, attempts, latency estimate, attempt events', async () => {
    const list = await servers(3);
    const m = await mesh({ echo: { endpoints: eps(list), lb: 'round_robin' } });
    const events: Array<[string, number | undefined]> = [];
    m.events.on('attempt', (e) => events.push([e.transport, e.status]));
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    for (let i = 0; i < 30; i++) await echo(client, { text: 'x' });
    const rt = m.service('echo');
    expect(rt?.endpoints.map((e) => e.attempts)).toEqual([10, 10, 10]);
    expect(rt?.endpoints.map((e) => e.attempts).reduce((a, b) => a + b, 0)).toBe(30);
    expect(rt?.endpoints.every((e) => e.active === 0 && e.ewmaMs > 0)).toBe(true);
    expect(events).toHaveLength(30);
    expect(events.every(([t, st]) => t === 'grpc' && st === status.OK)).toBe(true);
  });

  it('lets peak_ewma steer each call away from an endpoint with a high latency estimate', async () => {
    const list = await servers(3);
    const m = await mesh({ echo: { endpoints: eps(list), lb: 'peak_ewma' } });
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    for (let i = 0; i < 6; i++) await echo(client, { text: 'warm' });
    for (const s of list) s.calls = 0;
    const slow = m.service('echo')?.endpoints[0];
    if (!slow) throw new Error('no endpoint');
    slow.ewmaMs = 60_000; // as if it had just answered in a minute
    slow.ewmaStamp = m.now();
    for (let i = 0; i < 20; i++) await echo(client, { text: 'x' });
    expect((list[0] as TestServer).calls).toBe(0);
    expect((list[1] as TestServer).calls + (list[2] as TestServer).calls).toBe(20);
  });

  it('ring_hash on a metadata key sends the same key to the same server', async () => {
    const list = await servers(4);
    await mesh({
      echo: { endpoints: eps(list), lb: { policy: 'ring_hash', hashPolicy: [{ header: 'x-user' }] } },
    });
    const client = new EchoClient('mesh:///echo', credentials.createInsecure());
    cleanups.push(() => client.close());
    const { Metadata } = await import('@grpc/grpc-js');
    const call = (user: string) =>
      new Promise<string>((resolve, reject) => {
        const md: Metadata = new Metadata();
        md.set('x-user', user);
        (client as unknown as { echo: (...a: unknown[]) => void }).echo(
          { text: 'x' },
          md,
          (err: Error | null, res?: { server: string }) => (err ? reject(err) : resolve(res?.server ?? '')),
        );
      });
    for (const user of ['alice', 'bob', 'carol']) {
      const first = await call(user);
      for (let i = 0; i < 5; i++) expect(await call(user)).toBe(first);
    }
  });

  it('fails with UNAVAILABLE for services the mesh does not know', async () => {
    await mesh({ other: { endpoints: ['127.0.0.1:1'] } });
    const client = new EchoClient('mesh:///nope', credentials.createInsecure());
    cleanups.push(() => client.close());
    await expect(echo(client, { text: 'x' })).rejects.toMatchObject({ code: status.UNAVAILABLE });
  });

  it('marks endpoints whose subchannel is in TRANSIENT_FAILURE unhealthy and avoids them', async () => {
    const list = await servers(1);
    const dead = await startEchoServer('dead');
    const deadPort = dead.port;
    await stopServer(dead);
    const m = await mesh({
      echo: { endpoints: [...eps(list), `127.0.0.1:${deadPort}`], lb: 'round_robin', panicThreshold: 0 },
    });
    const healthEvents: boolean[] = [];
    const unhealthy = new Promise<void>((resolve) =>
      m.events.on('health', (e) => {
        healthEvents.push(e.healthy);
        if (!e.healthy) resolve();
      }),
    );
    const client = new EchoClient('mesh:///echo', credentials.createInsecure());
    cleanups.push(() => client.close());
    await echo(client, { text: 'warm' });
    await unhealthy;
    expect(m.service('echo')?.endpoint(`127.0.0.1:${deadPort}`)?.activeHealth).toBe('unhealthy');
    for (let i = 0; i < 6; i++) expect((await echo(client, { text: 'x' })).server).toBe('s0');
  });

  it('uses one pooled channel per target and closes it with the last client and with the mesh', async () => {
    const list = await servers(1);
    const m = await mesh({ echo: { endpoints: eps(list) } });
    const a = createMeshClient(EchoClient, 'mesh:///echo');
    const b = createMeshClient(EchoClient, 'mesh:///echo');
    await echo(a, { text: 'x' });
    await echo(b, { text: 'x' });
    expect(pooledChannelCount(m)).toBe(1);
    a.close();
    expect(pooledChannelCount(m)).toBe(1);
    await echo(b, { text: 'still works' });
    b.close();
    expect(pooledChannelCount(m)).toBe(0);
    const c = createMeshClient(EchoClient, 'mesh:///echo');
    await echo(c, { text: 'x' });
    expect(pooledChannelCount(m)).toBe(1);
    await m.close();
    expect(pooledChannelCount(m)).toBe(0);
  });

  it('chooses the mesh: the newest by default, a named one with mesh://<name>/', async () => {
    const [one] = await servers(1);
    const [two] = await servers(1);
    await mesh({ echo: { endpoints: eps([one as TestServer]) } }, { name: 'first' });
    const second = await mesh({ echo: { endpoints: eps([two as TestServer]) } }, { name: 'second' });
    const byDefault = createMeshClient(EchoClient, 'mesh:///echo');
    const named = createMeshClient(EchoClient, 'mesh://first/echo');
    cleanups.push(() => byDefault.close());
    cleanups.push(() => named.close());
    expect((await echo(byDefault, { text: 'x' })).server).toBe(two?.name);
    expect((await echo(named, { text: 'x' })).server).toBe(one?.name);
    await second.close();
    const after = new EchoClient('mesh:///echo', credentials.createInsecure());
    cleanups.push(() => after.close());
    expect((await echo(after, { text: 'x' })).server).toBe(one?.name);
  });
});

describe('interceptor: retries and deadlines', () => {
  it('retries UNAVAILABLE on another server within the budget', async () => {
    const list = await servers(2);
    (list[0] as TestServer).failWith = status.UNAVAILABLE;
    const m = await mesh({ echo: { endpoints: eps(list), lb: 'round_robin' } });
    const retries: boolean[] = [];
    m.events.on('retry', (e) => retries.push(e.allowed));
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    for (let i = 0; i < 6; i++) expect((await echo(client, { text: 'x' })).server).toBe('s1');
    expect(retries.length).toBeGreaterThan(0);
    expect(retries.every(Boolean)).toBe(true);
  });

  it.each(['random', 'peak_ewma'])(
    'a retry avoids every server already tried, not only the last one (%s)',
    async (lb) => {
      // Two servers answer UNAVAILABLE, one answers: with 2 retries every call must reach it.
      const list = await servers(3);
      (list[0] as TestServer).failWith = status.UNAVAILABLE;
      (list[1] as TestServer).failWith = status.UNAVAILABLE;
      await mesh({
        echo: {
          endpoints: eps(list),
          lb,
          outlierDetection: false,
          circuitBreaker: false,
          retry: { attempts: 2, budget: { percent: 100, minPerSecond: 1000 } },
        },
      });
      const client = createMeshClient(EchoClient, 'mesh:///echo');
      cleanups.push(() => client.close());
      for (let i = 0; i < 40; i++) expect((await echo(client, { text: 'x' })).server).toBe('s2');
      // No call went to a failing server twice: at most two of its three attempts failed.
      expect((list[0] as TestServer).calls + (list[1] as TestServer).calls).toBeLessThanOrEqual(80);
    },
  );

  it('does not retry codes outside the list, and honours retry: false', async () => {
    const list = await servers(1);
    (list[0] as TestServer).failWith = status.INTERNAL;
    await mesh({ echo: { endpoints: eps(list) } });
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    await expect(echo(client, { text: 'x' })).rejects.toMatchObject({ code: status.INTERNAL });
    expect((list[0] as TestServer).calls).toBe(1);
    (list[0] as TestServer).failWith = status.UNAVAILABLE;
    const noRetry = createMeshClient(EchoClient, 'mesh:///echo', { retry: false });
    cleanups.push(() => noRetry.close());
    await expect(echo(noRetry, { text: 'x' })).rejects.toMatchObject({ code: status.UNAVAILABLE });
    expect((list[0] as TestServer).calls).toBe(2);
    const custom = createMeshClient(EchoClient, 'mesh:///echo', { retry: { codes: [status.INTERNAL] } });
    cleanups.push(() => custom.close());
    (list[0] as TestServer).failWith = status.INTERNAL;
    await expect(echo(custom, { text: 'x' })).rejects.toMatchObject({ code: status.INTERNAL });
    expect((list[0] as TestServer).calls).toBe(5); // 1 + 2 retries
  });

  it('stops retrying when the retry budget is exhausted', async () => {
    const list = await servers(1);
    (list[0] as TestServer).failWith = status.UNAVAILABLE;
    const m = await mesh({
      echo: { endpoints: eps(list), retry: { attempts: 3, budget: { percent: 0, minPerSecond: 0 } } },
    });
    const denials: string[] = [];
    m.events.on('retry', (e) => {
      if (!e.allowed) denials.push(e.denial ?? '');
    });
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    await expect(echo(client, { text: 'x' })).rejects.toMatchObject({ code: status.UNAVAILABLE });
    expect((list[0] as TestServer).calls).toBe(1);
    expect(denials).toEqual(['budget']);
  });

  it('propagates the inbound deadline in scope as grpc-timeout and fails with DEADLINE_EXCEEDED', async () => {
    const list = await servers(1);
    await mesh({ echo: { endpoints: eps(list) } });
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    const reply = await runWithDeadline(Date.now() + 5_000, () => echo(client, { text: 'x' }));
    const ms = (reply.deadline ?? 0) - Date.now();
    expect(ms).toBeLessThanOrEqual(5_000);
    expect(ms).toBeGreaterThan(1_000);
    await expect(
      runWithDeadline(Date.now() + 50, () => echo(client, { text: 'slow', delayMs: 2_000 })),
    ).rejects.toMatchObject({ code: status.DEADLINE_EXCEEDED });
  });

  it('applies the service timeout as the default deadline', async () => {
    const list = await servers(1);
    await mesh({ echo: { endpoints: eps(list), timeout: '100ms' } });
    const client = new EchoClient(
      'mesh:///echo',
      credentials.createInsecure(),
      meshClientOptions('mesh:///echo'),
    );
    cleanups.push(() => client.close());
    await expect(echo(client, { text: 'slow', delayMs: 2_000 })).rejects.toMatchObject({
      code: status.DEADLINE_EXCEEDED,
    });
  });

  it('enforces the service timeout in the client (no timer per call); explicit deadlines travel', async () => {
    const list = await servers(1);
    await mesh({ echo: { endpoints: eps(list), timeout: '200ms' } });
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    // Only the service timeout: ended by the client's sweeper, not sent as grpc-timeout.
    expect((await echo(client, { text: 'x' })).deadline).toBeUndefined();
    await expect(echo(client, { text: 'slow', delayMs: 3_000 })).rejects.toMatchObject({
      code: status.DEADLINE_EXCEEDED,
      details: expect.stringContaining('service timeout'),
    });
    // A caller's deadline (or the inbound request's) is sent.
    const withDeadline = await echo(client, { text: 'x' }, { deadline: Date.now() + 5_000 });
    expect(withDeadline.deadline).toBeGreaterThan(Date.now());
    // The call keeps working afterwards.
    expect((await echo(client, { text: 'x' })).server).toBe('s0');
  });

  it('opens the service breaker on failing calls and then fails fast without sending', async () => {
    const list = await servers(1);
    (list[0] as TestServer).failWith = status.INTERNAL;
    const m = await mesh({
      echo: {
        endpoints: eps(list),
        circuitBreaker: { volumeThreshold: 3, errorThresholdPercentage: 50, resetTimeout: '60s' },
      },
    });
    const states: string[] = [];
    m.events.on('breaker', (e) => states.push(e.state));
    const client = createMeshClient(EchoClient, 'mesh:///echo', { retry: false });
    cleanups.push(() => client.close());
    // INTERNAL from the handler is the application's answer: the breaker does not count it.
    for (let i = 0; i < 5; i++)
      await expect(echo(client, { text: 'x' })).rejects.toMatchObject({ code: status.INTERNAL });
    expect(states).toEqual([]);
    // UNAVAILABLE is the endpoint's: six of eleven calls exceed the 50% threshold.
    (list[0] as TestServer).failWith = status.UNAVAILABLE;
    for (let i = 0; i < 6; i++)
      await expect(echo(client, { text: 'x' })).rejects.toMatchObject({ code: status.UNAVAILABLE });
    expect(states).toEqual(['open']);
    const sent = (list[0] as TestServer).calls;
    await expect(echo(client, { text: 'x' })).rejects.toMatchObject({
      code: status.UNAVAILABLE,
      details: expect.stringContaining('MESHLET_ERR_CIRCUIT_OPEN'),
    });
    expect((list[0] as TestServer).calls).toBe(sent);
  });

  it('ends a call cancelled while it waits to be retried with CANCELLED', async () => {
    const list = await servers(1);
    (list[0] as TestServer).failWith = status.UNAVAILABLE;
    const m = await mesh({ echo: { endpoints: eps(list), retry: { backoff: { base: '5s', max: '10s' } } } });
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    // make sure the backoff is long: jitter may pick anything below base, so wait for the retry event
    const retrying = new Promise<void>((resolve) => m.events.on('retry', () => resolve()));
    const result = new Promise<{ code: number }>((resolve) => {
      const call = (client as unknown as { echo: (...a: unknown[]) => { cancel(): void } }).echo(
        { text: 'x' },
        (err: { code: number } | null) => resolve(err ?? { code: status.OK }),
      );
      retrying.then(() => call.cancel());
    });
    const { code } = await result;
    expect([status.CANCELLED, status.UNAVAILABLE]).toContain(code);
    expect((list[0] as TestServer).calls).toBeLessThanOrEqual(2);
  });
});

describe('mesh calls: the channel-level call of mesh clients', () => {
  const json = (v: unknown) => Buffer.from(JSON.stringify(v));
  const parse = (b: Buffer) => JSON.parse(b.toString());
  const streamDef = {
    Count: {
      path: '/test.Stream/Count',
      requestStream: false,
      responseStream: true,
      requestSerialize: json,
      requestDeserialize: parse,
      responseSerialize: json,
      responseDeserialize: parse,
      originalName: 'count',
    },
  };
  const StreamClient = makeGenericClientConstructor(streamDef, 'Stream');

  it('retries through meshClientOptions too (a marker interceptor tells unary calls apart)', async () => {
    const list = await servers(2);
    (list[0] as TestServer).failWith = status.UNAVAILABLE;
    const m = await mesh({ echo: { endpoints: eps(list), lb: 'round_robin' } });
    const retries: boolean[] = [];
    m.events.on('retry', (e) => retries.push(e.allowed));
    const client = new EchoClient(
      'mesh:///echo',
      credentials.createInsecure(),
      meshClientOptions('mesh:///echo'),
    );
    cleanups.push(() => client.close());
    for (let i = 0; i < 4; i++) expect((await echo(client, { text: 'x' })).server).toBe('s1');
    expect(retries.length).toBeGreaterThan(0);
    expect(retries.every(Boolean)).toBe(true);
  });

  it('meshInterceptor gives a channel meshlet did not create the same retries and request events', async () => {
    const list = await servers(2);
    (list[0] as TestServer).failWith = status.UNAVAILABLE;
    const m = await mesh({ echo: { endpoints: eps(list), lb: 'round_robin' } });
    const requests: number[] = [];
    m.events.on('request', (e) => requests.push(e.attempts));
    const rt = m.service('echo');
    if (!rt) throw new Error('no runtime');
    const client = new EchoClient('mesh:///echo', credentials.createInsecure(), {
      interceptors: [meshInterceptor(rt)],
    });
    cleanups.push(() => client.close());
    for (let i = 0; i < 4; i++) expect((await echo(client, { text: 'x' })).server).toBe('s1');
    expect(requests).toHaveLength(4);
    expect(Math.max(...requests)).toBe(2);
  });

  it('passes streamed responses through as they arrive, never retries a stream that answered, and reports it', async () => {
    const server = new Server();
    let release: (() => void) | undefined;
    let calls = 0;
    server.addService(streamDef, {
      Count: (call: ServerWritableStream<{ n: number }, { i: number }>) => {
        calls++;
        call.write({ i: 0 });
        // The rest only after the client saw the first message.
        release = () => {
          for (let i = 1; i < call.request.n; i++) call.write({ i });
          call.emit('error', { code: status.UNAVAILABLE, details: 'stream broke' });
        };
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    cleanups.push(() => stopServer(server));
    const m = await mesh({ counter: { endpoints: [`127.0.0.1:${port}`] } });
    const requests: Array<[string, number | undefined, number]> = [];
    m.events.on('request', (e) => requests.push([e.transport, e.status, e.attempts]));
    const client = createMeshClient(StreamClient, 'mesh:///counter');
    cleanups.push(() => client.close());
    const got: number[] = [];
    const code = await new Promise<number>((resolve) => {
      const stream = (
        client as unknown as { count(req: { n: number }): ClientReadableStream<{ i: number }> }
      ).count({
        n: 3,
      });
      stream.on('data', (d: { i: number }) => {
        got.push(d.i);
        if (d.i === 0) release?.();
      });
      stream.on('error', (e: ServiceError) => resolve(e.code));
    });
    expect(got).toEqual([0, 1, 2]);
    expect(code).toBe(status.UNAVAILABLE);
    expect(calls).toBe(1);
    expect(requests).toEqual([['grpc', status.UNAVAILABLE, 1]]);
  });

  it('holds a unary response back until its status, so a retried attempt is never seen', async () => {
    const list = await servers(2);
    let n = 0;
    // s0 sends response metadata first, then fails: the caller must only see s1's answer.
    const flaky = await startEchoServer('flaky', {
      handler: (call, cb) => {
        n++;
        const md = new Metadata();
        md.set('x-from', 'flaky');
        call.sendMetadata(md);
        cb({ code: status.UNAVAILABLE, details: 'flaky' });
      },
    });
    cleanups.push(() => stopServer(flaky));
    await mesh({ echo: { endpoints: [`127.0.0.1:${flaky.port}`, eps(list)[1]], lb: 'round_robin' } });
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    for (let i = 0; i < 4; i++) {
      const seen: string[] = [];
      const reply = await new Promise<{ server: string }>((resolve, reject) => {
        const c = (client as unknown as EchoClientType).echo({ text: 'x' }, {}, (err, res) =>
          err ? reject(err) : resolve(res as { server: string }),
        ) as { on(ev: 'metadata', fn: (md: Metadata) => void): void };
        c.on('metadata', (md) => seen.push(String(md.get('x-from')[0] ?? 'none')));
      });
      expect(reply.server).toBe('s1');
      expect(seen).toEqual(['none']);
    }
    expect(n).toBeGreaterThan(0);
  });
});
