import { type AddressInfo, connect, createServer as createNetServer } from 'node:net';
import {
  type ClientReadableStream,
  credentials,
  InterceptingCall,
  type Interceptor,
  Metadata,
  makeGenericClientConstructor,
  Server,
  ServerCredentials,
  type ServerWritableStream,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { type Mesh, runWithDeadline } from '@meshlet/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createMeshClient, meshClientOptions, meshInterceptor, pooledChannelCount } from '../src/index.js';
import {
  EchoClient,
  type EchoClientType,
  echo,
  get,
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

/** A service of one live server and one address nothing listens on any more (round robin). */
async function withDeadEndpoint(): Promise<{ list: TestServer[]; deadPort: number; m: Mesh }> {
  const list = await servers(1);
  const dead = await startEchoServer('dead');
  const deadPort = dead.port;
  await stopServer(dead);
  const m = await mesh({
    echo: { endpoints: [...eps(list), `127.0.0.1:${deadPort}`], lb: 'round_robin', panicThreshold: 0 },
  });
  return { list, deadPort, m };
}

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
    slow.ewmaMs = 60_000; // as if it typically answered in a minute
    slow.ewmaBaseMs = 60_000;
    slow.ewmaStrikes = 8; // and its probes had confirmed it eight times in a row
    slow.ewmaStamp = m.now();
    for (let i = 0; i < 20; i++) await echo(client, { text: 'x' });
    expect((list[0] as TestServer).calls).toBe(0);
    expect((list[1] as TestServer).calls + (list[2] as TestServer).calls).toBe(20);
  });

  it("measures an endpoint's latency from when the call is on a stream, not its connection setup", async () => {
    const [s0] = await servers(1);
    // Every connection to the endpoint takes 300 ms to set up (as a slow TLS handshake would).
    const relay = createNetServer((client) => {
      client.pause();
      setTimeout(() => {
        const upstream = connect((s0 as TestServer).port, '127.0.0.1', () => {
          client.pipe(upstream);
          upstream.pipe(client);
          client.resume();
        });
        const close = () => {
          client.destroy();
          upstream.destroy();
        };
        client.on('error', close).on('close', close);
        upstream.on('error', close).on('close', close);
      }, 300);
    });
    await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => relay.close(() => resolve())));
    const port = (relay.address() as AddressInfo).port;
    const m = await mesh({ echo: { endpoints: [`127.0.0.1:${port}`] } });
    const durations: number[] = [];
    m.events.on('attempt', (e) => durations.push(e.durationMs));
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    await echo(client, { text: 'x' });
    expect(durations[0]).toBeGreaterThanOrEqual(290); // the attempt, as the caller saw it
    const ewma = m.service('echo')?.endpoints[0]?.ewmaMs ?? 0;
    expect(ewma).toBeGreaterThan(0); // observed…
    expect(ewma).toBeLessThan(200); // …from the stream: the endpoint's request latency
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

  it('reports subchannels in TRANSIENT_FAILURE to the service, which keeps their endpoints out of rotation', async () => {
    const { deadPort, m } = await withDeadEndpoint();
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
    const st = m.service('echo')?.endpoint(`127.0.0.1:${deadPort}`);
    // Reported through the service (`reportConnectivity`), not written into the endpoint's health.
    expect(st?.unreachable).toBe(1);
    expect(st?.activeHealth).toBe('unknown');
    expect(m.snapshot().services.echo?.endpoints.find((e) => e.port === deadPort)?.reachable).toBe(false);
    for (let i = 0; i < 6; i++) expect((await echo(client, { text: 'x' })).server).toBe('s0');
    // Closing the channel withdraws its report.
    client.close();
    await vi.waitFor(() => expect(st?.unreachable).toBe(0));
    expect(healthEvents).toEqual([false, true]);
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

describe('retries (gRFC A6 rules, within the budget) and deadlines', () => {
  it('retries UNAVAILABLE of a method the proto marks idempotent on another server', async () => {
    const list = await servers(2);
    (list[0] as TestServer).failWith = status.UNAVAILABLE;
    const m = await mesh({ echo: { endpoints: eps(list), lb: 'round_robin' } });
    const retries: Array<[string, boolean]> = [];
    m.events.on('retry', (e) => retries.push([e.reason, e.allowed]));
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    for (let i = 0; i < 6; i++) expect((await get(client, { text: 'x' })).server).toBe('s1');
    expect(retries.length).toBeGreaterThan(0);
    expect(retries.every(([reason, allowed]) => reason === 'unavailable' && allowed)).toBe(true);
  });

  it('never retries a call that may have been processed when the method is not idempotent', async () => {
    const list = await servers(2);
    (list[0] as TestServer).failWith = status.UNAVAILABLE;
    const m = await mesh({ echo: { endpoints: eps(list), lb: 'round_robin' } });
    const retries: string[] = [];
    m.events.on('retry', (e) => retries.push(e.reason));
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    const codes: number[] = [];
    for (let i = 0; i < 6; i++)
      codes.push(
        await echo(client, { text: 'x' }).then(
          () => status.OK,
          (e: ServiceError) => e.code,
        ),
      );
    // round_robin: every other call reached s0, which processed it once and answered UNAVAILABLE.
    expect(codes.filter((c) => c === status.UNAVAILABLE)).toHaveLength((list[0] as TestServer).calls);
    expect((list[0] as TestServer).calls).toBe(3);
    expect(retries).toEqual([]);
  });

  it('retries a call that never left the client whatever the method (an endpoint that cannot be connected to)', async () => {
    const { list, deadPort, m } = await withDeadEndpoint();
    const retries: string[] = [];
    m.events.on('retry', (e) => retries.push(e.reason));
    const failures: string[] = [];
    m.events.on('attempt', (e) => {
      if (e.outcome !== 'success') failures.push(`${e.endpoint.endpoint.port}:${e.outcome}:${e.verdict}`);
    });
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    // Four calls at once, before the dead endpoint's connection failed: round_robin sends two there.
    const replies = await Promise.all([1, 2, 3, 4].map(() => echo(client, { text: 'x' })));
    expect(replies.map((r) => r.server)).toEqual(['s0', 's0', 's0', 's0']);
    expect(retries).toContain('connect-failure');
    expect(failures.length).toBeGreaterThan(0);
    expect(failures.every((f) => f === `${deadPort}:connect_failure:local_failure`)).toBe(true);
    expect((list[0] as TestServer).calls).toBe(4);
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
      for (let i = 0; i < 40; i++) expect((await get(client, { text: 'x' })).server).toBe('s2');
      // No call went to a failing server twice: at most two of its three attempts failed.
      expect((list[0] as TestServer).calls + (list[1] as TestServer).calls).toBeLessThanOrEqual(80);
    },
  );

  it('retries only the listed conditions; retry: false turns retries off; listed codes are retried for any method', async () => {
    const list = await servers(1);
    (list[0] as TestServer).failWith = status.INTERNAL;
    await mesh({ echo: { endpoints: eps(list) } });
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    await expect(get(client, { text: 'x' })).rejects.toMatchObject({ code: status.INTERNAL });
    expect((list[0] as TestServer).calls).toBe(1);
    (list[0] as TestServer).failWith = status.UNAVAILABLE;
    const noRetry = createMeshClient(EchoClient, 'mesh:///echo', { retry: false });
    cleanups.push(() => noRetry.close());
    await expect(get(noRetry, { text: 'x' })).rejects.toMatchObject({ code: status.UNAVAILABLE });
    expect((list[0] as TestServer).calls).toBe(2);
    // Codes the user lists are retried whatever the method (they say the code means "not processed").
    const custom = createMeshClient(EchoClient, 'mesh:///echo', { retry: { codes: [status.INTERNAL] } });
    cleanups.push(() => custom.close());
    (list[0] as TestServer).failWith = status.INTERNAL;
    await expect(echo(custom, { text: 'x' })).rejects.toMatchObject({ code: status.INTERNAL });
    expect((list[0] as TestServer).calls).toBe(5); // 1 + 2 retries
    // …and they replace the policy's gRPC conditions: UNAVAILABLE is no longer one for this client.
    (list[0] as TestServer).failWith = status.UNAVAILABLE;
    await expect(get(custom, { text: 'x' })).rejects.toMatchObject({ code: status.UNAVAILABLE });
    expect((list[0] as TestServer).calls).toBe(6);
  });

  it("honours grpc-js's per-call idempotentRequest and the client's idempotentMethods", async () => {
    const list = await servers(2);
    (list[0] as TestServer).failWith = status.UNAVAILABLE;
    await mesh({ echo: { endpoints: eps(list), lb: 'round_robin' } });
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    const idempotent = () => {
      const md = new Metadata({ idempotentRequest: true });
      return new Promise<{ server: string }>((resolve, reject) =>
        (client as unknown as EchoClientType).echo({ text: 'x' }, md as unknown as object, (err, res) =>
          err ? reject(err) : resolve(res as { server: string }),
        ),
      );
    };
    for (let i = 0; i < 4; i++) expect((await idempotent()).server).toBe('s1');
    const configured = createMeshClient(EchoClient, 'mesh:///echo', { idempotentMethods: ['test.Echo'] });
    cleanups.push(() => configured.close());
    for (let i = 0; i < 4; i++) expect((await echo(configured, { text: 'x' })).server).toBe('s1');
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
    await expect(get(client, { text: 'x' })).rejects.toMatchObject({ code: status.UNAVAILABLE });
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
    ).rejects.toMatchObject({
      code: status.DEADLINE_EXCEEDED,
      details: expect.stringMatching(/^Deadline exceeded after /),
    });
  });

  it('applies the service timeout to unary calls through meshClientOptions', async () => {
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
      details: expect.stringContaining('MESHLET_ERR_TIMEOUT'),
    });
    // Per-call interceptors replace the client's in grpc-js: the call is still known to be unary.
    const perCall: Interceptor = (options, nextCall) => new InterceptingCall(nextCall(options));
    await expect(
      echo(client, { text: 'slow', delayMs: 2_000 }, { interceptors: [perCall] }),
    ).rejects.toMatchObject({
      code: status.DEADLINE_EXCEEDED,
      details: expect.stringContaining('MESHLET_ERR_TIMEOUT'),
    });
  });

  it('a service timeout is the deadline of unary calls (sent as grpc-timeout); serviceTimeout: false and the caller’s deadline', async () => {
    const list = await servers(1);
    await mesh({ echo: { endpoints: eps(list), timeout: '2s' } });
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    // The server sees the service timeout as the call's deadline.
    const left = ((await echo(client, { text: 'x' })).deadline ?? 0) - Date.now();
    expect(left).toBeGreaterThan(1_000);
    expect(left).toBeLessThanOrEqual(2_000);
    // A nearer caller's deadline wins.
    const near =
      ((await echo(client, { text: 'x' }, { deadline: Date.now() + 1_000 })).deadline ?? 0) - Date.now();
    expect(near).toBeLessThanOrEqual(1_000);
    const none = createMeshClient(EchoClient, 'mesh:///echo', { serviceTimeout: false });
    cleanups.push(() => none.close());
    expect((await echo(none, { text: 'x' })).deadline).toBeUndefined();
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
    const err = await echo(client, { text: 'x' }).catch((e: ServiceError) => e);
    expect(err).toMatchObject({
      code: status.UNAVAILABLE,
      details: expect.stringContaining('MESHLET_ERR_CIRCUIT_OPEN'),
    });
    expect((err as ServiceError).metadata.get('x-meshlet-error')).toEqual(['MESHLET_ERR_CIRCUIT_OPEN']);
    expect((list[0] as TestServer).calls).toBe(sent);
  });

  it('enforces thresholds: calls over maxRequests fail fast with MESHLET_ERR_OVERLOADED', async () => {
    const list = await servers(1);
    const m = await mesh({ echo: { endpoints: eps(list), thresholds: { maxRequests: 2 } } });
    const outcomes: string[] = [];
    m.events.on('request', (e) => outcomes.push(e.outcome));
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    await echo(client, { text: 'warm' });
    const settled = await Promise.allSettled(
      [1, 2, 3, 4].map(() => echo(client, { text: 'slow', delayMs: 200 })),
    );
    const rejected = settled.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
    expect(settled.filter((r) => r.status === 'fulfilled')).toHaveLength(2);
    expect(rejected.map((r) => (r.reason as ServiceError).code)).toEqual([
      status.UNAVAILABLE,
      status.UNAVAILABLE,
    ]);
    expect((rejected[0] as PromiseRejectedResult).reason).toMatchObject({
      details: expect.stringContaining('MESHLET_ERR_OVERLOADED'),
    });
    expect(outcomes.filter((o) => o === 'overloaded')).toHaveLength(2);
    expect((list[0] as TestServer).calls).toBe(3);
    expect(m.service('echo')?.resilience.thresholds.stats()).toMatchObject({ requests: 0, pending: 0 });
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
      const call = (client as unknown as { get: (...a: unknown[]) => { cancel(): void } }).get(
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

  it('retries through meshClientOptions too (a call invocation transformer tells unary calls apart)', async () => {
    const list = await servers(2);
    (list[0] as TestServer).failWith = status.UNAVAILABLE;
    const m = await mesh({ echo: { endpoints: eps(list), lb: 'round_robin' } });
    const retries: boolean[] = [];
    m.events.on('retry', (e) => retries.push(e.allowed));
    // Without the client class, the method table (and the proto's idempotency) is not known.
    const client = new EchoClient(
      'mesh:///echo',
      credentials.createInsecure(),
      meshClientOptions('mesh:///echo', { idempotentMethods: ['/test.Echo/Echo'] }),
    );
    cleanups.push(() => client.close());
    for (let i = 0; i < 4; i++) expect((await echo(client, { text: 'x' })).server).toBe('s1');
    expect(retries.length).toBeGreaterThan(0);
    expect(retries.every(Boolean)).toBe(true);
  });

  it("keeps each method's idempotency when one client's calls alternate between methods", async () => {
    // One failing server: an idempotent call is retried (processed 1 + 2 times), another is not.
    const [s] = await servers(1);
    const server = s as TestServer;
    server.failWith = status.UNAVAILABLE;
    await mesh({ echo: { endpoints: eps([server]), retry: { backoff: { base: '1ms', max: '1ms' } } } });
    const marked = new EchoClient(
      'mesh:///echo',
      credentials.createInsecure(),
      meshClientOptions('mesh:///echo', { idempotentMethods: ['/test.Echo/Echo'] }),
    );
    // With the method table: `Get` is idempotent by its proto options, `Echo` is not.
    const table = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(
      () => marked.close(),
      () => table.close(),
    );
    const executions = async (call: () => Promise<unknown>) => {
      const before = server.calls;
      await expect(call()).rejects.toMatchObject({ code: status.UNAVAILABLE });
      return server.calls - before;
    };
    const seen: number[] = [];
    for (let i = 0; i < 2; i++) {
      seen.push(await executions(() => echo(marked, { text: 'x' })));
      seen.push(await executions(() => get(marked, { text: 'x' })));
      seen.push(await executions(() => echo(table, { text: 'x' })));
      seen.push(await executions(() => get(table, { text: 'x' })));
    }
    expect(seen).toEqual([3, 1, 1, 3, 3, 1, 1, 3]);
  });

  it('meshInterceptor runs a channel meshlet did not create on the same pipeline (retries, request events, thresholds)', async () => {
    const list = await servers(2);
    (list[0] as TestServer).failWith = status.UNAVAILABLE;
    const m = await mesh({
      echo: { endpoints: eps(list), lb: 'round_robin', thresholds: { maxRequests: 1 } },
    });
    const requests: Array<[string, number]> = [];
    m.events.on('request', (e) => requests.push([e.outcome, e.attempts]));
    const rt = m.service('echo');
    if (!rt) throw new Error('no runtime');
    const client = new EchoClient('mesh:///echo', credentials.createInsecure(), {
      interceptors: [meshInterceptor(rt, { idempotentMethods: ['/test.Echo/Echo'] })],
    });
    cleanups.push(() => client.close());
    for (let i = 0; i < 4; i++) expect((await echo(client, { text: 'x' })).server).toBe('s1');
    expect(requests).toHaveLength(4);
    expect(Math.max(...requests.map((r) => r[1]))).toBe(2);
    // Thresholds apply: a second call while one is in flight fails fast.
    const both = await Promise.allSettled([
      echo(client, { text: 'x', delayMs: 100 }),
      echo(client, { text: 'x' }),
    ]);
    expect(both.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    // retry: false still reports every call (both servers failing: one attempt each).
    (list[1] as TestServer).failWith = status.UNAVAILABLE;
    requests.length = 0;
    const plain = new EchoClient('mesh:///echo', credentials.createInsecure(), {
      interceptors: [meshInterceptor(rt, { retry: false, idempotentMethods: ['/test.Echo/Echo'] })],
    });
    cleanups.push(() => plain.close());
    for (let i = 0; i < 2; i++)
      await expect(echo(plain, { text: 'x' })).rejects.toMatchObject({ code: status.UNAVAILABLE });
    expect(requests).toEqual([
      ['reset', 1],
      ['reset', 1],
    ]);
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

  it('commits a unary call on its response headers (gRFC A6): the metadata event comes at once, nothing is replayed after', async () => {
    let n = 0;
    let release: (() => void) | undefined;
    // The server sends its headers, waits until the client saw them, then fails with UNAVAILABLE.
    const flaky = await startEchoServer('flaky', {
      handler: (call, cb) => {
        n++;
        const md = new Metadata();
        md.set('x-from', 'flaky');
        call.sendMetadata(md);
        release = () => cb({ code: status.UNAVAILABLE, details: 'flaky' });
      },
    });
    cleanups.push(() => stopServer(flaky));
    const list = await servers(1);
    await mesh({ echo: { endpoints: [`127.0.0.1:${flaky.port}`, ...eps(list)], lb: 'round_robin' } });
    const client = createMeshClient(EchoClient, 'mesh:///echo');
    cleanups.push(() => client.close());
    for (let i = 0; i < 4; i++) {
      const seen: string[] = [];
      const result = await new Promise<string>((resolve) => {
        // The idempotent method: it would be retried, were it not committed.
        const c = (client as unknown as EchoClientType).get({ text: 'x' }, {}, (err, res) =>
          resolve(err ? `error ${err.code}` : `ok ${(res as { server: string }).server}`),
        ) as { on(ev: 'metadata', fn: (md: Metadata) => void): void };
        c.on('metadata', (md) => {
          seen.push(String(md.get('x-from')[0] ?? 'none'));
          release?.();
        });
      });
      if (seen[0] === 'flaky') expect(result).toBe(`error ${status.UNAVAILABLE}`);
      else expect(result).toBe('ok s0');
      expect(seen).toHaveLength(1);
    }
    expect(n).toBe(2);
  });
});
