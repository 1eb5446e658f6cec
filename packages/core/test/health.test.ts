import { createServer, type Server } from 'node:http';
import { type AddressInfo, createServer as createTcpServer } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  ActiveHealthChecker,
  type EndpointState,
  healthCheckers,
  httpHealthChecker,
  type MeshEventMap,
  MeshEvents,
  makeEndpoint,
  parseConfig,
  parseHealthCheckPolicy,
  registerHealthChecker,
  ServiceRuntime,
  tcpHealthChecker,
} from '../src/index.js';

/** A scripted checker: each endpoint answers from its own queue (healthy when empty). */
const script = new Map<number, boolean[]>();
const checkedAt: Array<{ port: number; at: number }> = [];
registerHealthChecker({
  name: 'scripted',
  parseConfig: () => ({}),
  create: () => ({
    async check(target) {
      checkedAt.push({ port: target.port, at: Date.now() });
      const q = script.get(target.port);
      const healthy = q?.shift() ?? true;
      return { healthy, reason: healthy ? 'ok' : 'scripted failure' };
    },
  }),
});

const runtimes: ServiceRuntime[] = [];
function makeRuntime(n: number, healthCheck: Record<string, unknown>, outlier: unknown = false) {
  const events = new MeshEvents();
  const policy = parseConfig({ defaults: { healthCheck, outlierDetection: outlier } }).defaults;
  const rt = new ServiceRuntime('svc', policy, 'static', events, () => Date.now());
  runtimes.push(rt);
  const health: Array<MeshEventMap['health']> = [];
  events.on('health', (e) => health.push(e));
  rt.applyUpdate({
    endpoints: Array.from({ length: n }, (_, i) => makeEndpoint({ address: '127.0.0.1', port: 9000 + i })),
  });
  return { rt, health, eps: rt.endpoints };
}

function picks(rt: ServiceRuntime): Set<string> {
  const s = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const r = rt.pick({ attempt: 0 });
    if (r.kind === 'pick') s.add(r.endpoint.id);
  }
  return s;
}

describe('active health checks (scheduling, thresholds)', () => {
  afterEach(() => {
    for (const rt of runtimes.splice(0)) rt.close();
    script.clear();
    checkedAt.length = 0;
    vi.useRealTimers();
  });

  it('marks an endpoint down after the unhealthy threshold and up after the healthy threshold', async () => {
    vi.useFakeTimers({ now: 0 });
    const { rt, eps, health } = makeRuntime(4, {
      type: 'scripted',
      interval: '1s',
      jitter: 0,
      unhealthyThreshold: 3,
      healthyThreshold: 2,
    });
    const ep = eps[1] as EndpointState;
    script.set(ep.endpoint.port, [false, false, false, false, true, true]);
    await vi.advanceTimersByTimeAsync(1_000); // every endpoint checked once (random start < 1s)
    expect(ep.activeHealth).toBe('unknown');
    expect((eps[0] as EndpointState).activeHealth).toBe('healthy');
    await vi.advanceTimersByTimeAsync(2_000);
    expect(ep.activeHealth).toBe('unhealthy');
    expect(health).toContainEqual({
      service: 'svc',
      endpoint: ep.id,
      healthy: false,
      reason: 'active health check: scripted failure',
    });
    expect(picks(rt).has(ep.id)).toBe(false);
    await vi.advanceTimersByTimeAsync(2_000); // one more failure, then the first pass
    expect(ep.activeHealth).toBe('unhealthy');
    await vi.advanceTimersByTimeAsync(1_000); // second pass
    expect(ep.activeHealth).toBe('healthy');
    expect(health.at(-1)).toMatchObject({ endpoint: ep.id, healthy: true });
    expect(picks(rt).has(ep.id)).toBe(true);
  });

  it('spreads first checks over the interval (no thundering herd) and adds jitter', async () => {
    vi.useFakeTimers({ now: 0 });
    makeRuntime(20, { type: 'scripted', interval: '10s', jitter: '2s' });
    await vi.advanceTimersByTimeAsync(10_000);
    const first = checkedAt.map((c) => c.at);
    expect(first).toHaveLength(20);
    expect(Math.max(...first)).toBeLessThan(10_000);
    expect(new Set(first.map((t) => Math.floor(t / 1000))).size).toBeGreaterThan(3);
    // Subsequent checks come every 10s plus up to 2s of jitter.
    await vi.advanceTimersByTimeAsync(12_000);
    const byPort = new Map<number, number[]>();
    for (const c of checkedAt) byPort.set(c.port, [...(byPort.get(c.port) ?? []), c.at]);
    for (const times of byPort.values()) {
      if (times.length < 2) continue;
      const gap = (times[1] as number) - (times[0] as number);
      expect(gap).toBeGreaterThanOrEqual(10_000);
      expect(gap).toBeLessThanOrEqual(12_000);
    }
  });

  it('follows endpoint changes and stops every timer on close', async () => {
    vi.useFakeTimers({ now: 0 });
    const { rt } = makeRuntime(2, { type: 'scripted', interval: '1s' });
    rt.applyUpdate({ endpoints: [makeEndpoint({ address: '127.0.0.1', port: 9100 })] });
    await vi.advanceTimersByTimeAsync(5_000);
    expect(new Set(checkedAt.filter((c) => c.at > 2_100).map((c) => c.port))).toEqual(new Set([9100]));
    rt.close();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('a passing check returns a host ejected by outlier detection', async () => {
    vi.useFakeTimers({ now: 0 });
    const { rt, eps } = makeRuntime(
      4,
      { type: 'scripted', interval: '1s', jitter: 0 },
      { consecutiveGatewayFailure: 1 },
    );
    const ep = eps[0] as EndpointState;
    const start = rt.startAttempt(ep);
    rt.endAttempt(ep, start, 0, 'connect_failure', undefined, undefined, undefined, 'http');
    expect(ep.isEjected(Date.now())).toBe(true);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(ep.isEjected(Date.now())).toBe(false);
  });

  it('follows config reloads: checks start with a new healthCheck and their verdicts clear without one', async () => {
    vi.useFakeTimers({ now: 0 });
    const events = new MeshEvents();
    const rt = new ServiceRuntime('svc', parseConfig({}).defaults, 'static', events, () => Date.now());
    runtimes.push(rt);
    rt.applyUpdate({ endpoints: [makeEndpoint({ address: '127.0.0.1', port: 9400 })] });
    expect(rt.resilience.health).toBeUndefined();
    script.set(9400, [false]);
    const withChecks = parseConfig({
      defaults: { healthCheck: { type: 'scripted', interval: '1s', unhealthyThreshold: 1 } },
    });
    rt.setPolicy(withChecks.defaults);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(rt.endpoints[0]?.activeHealth).toBe('unhealthy');
    rt.setPolicy(parseConfig({}).defaults);
    expect(rt.resilience.health).toBeUndefined();
    expect(rt.endpoints[0]?.activeHealth).toBe('unknown');
    const before = checkedAt.length;
    await vi.advanceTimersByTimeAsync(5_000);
    expect(checkedAt.length).toBe(before);
  });

  it('validates its config, naming the field', () => {
    expect(healthCheckers.names()).toEqual(expect.arrayContaining(['http', 'tcp']));
    expect(() => parseConfig({ defaults: { healthCheck: { type: 'icmp' } } })).toThrow(
      /defaults\.healthCheck\.type: unknown health checker "icmp"/,
    );
    expect(() =>
      parseConfig({ defaults: { healthCheck: { path: 'healthz', expectedStatuses: ['2xx'] } } }),
    ).toThrow(/defaults\.healthCheck\.path[\s\S]*defaults\.healthCheck\.expectedStatuses\[0\]/);
    const p = parseHealthCheckPolicy({ path: '/ready', expectedStatuses: [200, '300-302'] }, 'hc', []);
    expect(p).toMatchObject({
      type: 'http',
      intervalMs: 10_000,
      timeoutMs: 1_000,
      healthyThreshold: 2,
      unhealthyThreshold: 3,
    });
    expect(p?.config).toMatchObject({
      path: '/ready',
      expectedStatuses: [
        [200, 200],
        [300, 302],
      ],
    });
  });
});

describe('health checkers on real sockets', () => {
  const servers: Array<{ close(cb?: () => void): unknown }> = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(() => r(undefined)))));
  });

  async function listen<T extends Server | import('node:net').Server>(server: T): Promise<number> {
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    return (server.address() as AddressInfo).port;
  }

  it('http: checks the path with the host header and expected statuses', async () => {
    const seen: Array<{ url?: string; host?: string }> = [];
    let status = 200;
    const port = await listen(
      createServer((req, res) => {
        seen.push({ url: req.url, host: req.headers.host });
        res.statusCode = status;
        res.end('ok');
      }),
    );
    const checker = httpHealthChecker.create(
      httpHealthChecker.parseConfig(
        { path: '/ready', host: 'reviews.internal', expectedStatuses: ['200-204'] },
        'hc',
        [],
      ),
    );
    const target = { service: 'reviews', address: '127.0.0.1', port };
    expect(await checker.check(target, new AbortController().signal)).toEqual({
      healthy: true,
      reason: 'status 200',
    });
    status = 503;
    expect(await checker.check(target, new AbortController().signal)).toEqual({
      healthy: false,
      reason: 'status 503',
    });
    expect(seen[0]).toEqual({ url: '/ready', host: 'reviews.internal' });
  });

  it('http: a server that never answers fails by timeout; a closed port fails to connect', async () => {
    const port = await listen(createServer(() => {}));
    const checker = httpHealthChecker.create(httpHealthChecker.parseConfig({}, 'hc', []));
    const hung = await checker.check({ service: 's', address: '127.0.0.1', port }, AbortSignal.timeout(100));
    expect(hung).toEqual({ healthy: false, reason: 'timeout' });
    const closed = createTcpServer();
    const closedPort = await listen(closed);
    await new Promise((r) => closed.close(r));
    servers.pop();
    const refused = await checker.check(
      { service: 's', address: '127.0.0.1', port: closedPort },
      AbortSignal.timeout(2_000),
    );
    expect(refused).toEqual({ healthy: false, reason: 'ECONNREFUSED' });
  });

  it('tcp: healthy when a connection opens, unhealthy when refused', async () => {
    const server = createTcpServer((s) => s.destroy());
    const port = await listen(server);
    const checker = tcpHealthChecker.create({});
    expect(
      await checker.check({ service: 's', address: '127.0.0.1', port }, AbortSignal.timeout(2_000)),
    ).toEqual({
      healthy: true,
      reason: 'connected',
    });
    await new Promise((r) => server.close(r));
    servers.pop();
    expect(
      await checker.check({ service: 's', address: '127.0.0.1', port }, AbortSignal.timeout(2_000)),
    ).toEqual({
      healthy: false,
      reason: 'ECONNREFUSED',
    });
  });

  it('marks a real endpoint down when its server stops answering, through the mesh runtime', async () => {
    let healthy = true;
    const port = await listen(
      createServer((_req, res) => {
        res.statusCode = healthy ? 200 : 500;
        res.end();
      }),
    );
    const events = new MeshEvents();
    const policy = parseConfig({
      defaults: {
        healthCheck: {
          type: 'http',
          interval: '20ms',
          jitter: 0,
          unhealthyThreshold: 1,
          healthyThreshold: 1,
        },
      },
    }).defaults;
    const rt = new ServiceRuntime('svc', policy, 'static', events, () => performance.now());
    try {
      const changes: boolean[] = [];
      const next = () =>
        new Promise<void>((r) => {
          const off = events.on('health', (e) => {
            changes.push(e.healthy);
            off();
            r();
          });
        });
      let wait = next();
      rt.applyUpdate({ endpoints: [makeEndpoint({ address: '127.0.0.1', port })] });
      await wait;
      expect(rt.endpoints[0]?.activeHealth).toBe('healthy');
      wait = next();
      healthy = false;
      await wait;
      expect(rt.endpoints[0]?.activeHealth).toBe('unhealthy');
      wait = next();
      healthy = true;
      await wait;
      expect(changes).toEqual([true, false, true]);
    } finally {
      rt.close();
    }
  });

  it('ActiveHealthChecker can be driven directly with an injected random source', async () => {
    vi.useFakeTimers({ now: 0 });
    try {
      const events = new MeshEvents();
      const rt = new ServiceRuntime('svc', parseConfig({}).defaults, 'static', events, () => Date.now());
      rt.applyUpdate({ endpoints: [makeEndpoint({ address: '127.0.0.1', port: 9300 })] });
      const policy = parseHealthCheckPolicy({ type: 'scripted', interval: '1s', jitter: 0 }, 'hc', []);
      if (!policy) throw new Error('no policy');
      const hc = new ActiveHealthChecker(rt, policy, () => 0.5);
      await vi.advanceTimersByTimeAsync(499);
      expect(checkedAt).toHaveLength(0);
      await vi.advanceTimersByTimeAsync(1);
      expect(checkedAt).toHaveLength(1);
      hc.close();
      rt.close();
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      checkedAt.length = 0;
      vi.useRealTimers();
    }
  });
});
