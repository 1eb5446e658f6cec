import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type AttemptEvent,
  type EndpointState,
  ErrorCodes,
  Mesh,
  MeshError,
  type Outcome,
  parseConfig,
} from '@meshlet/core';
import { afterEach, describe, expect, it } from 'vitest';
import {
  AdminStats,
  bucketValue,
  clusters,
  LatencyWindow,
  latencyBucket,
  RateSeries,
  StatsClock,
} from '../src/index.js';

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

describe('latency window', () => {
  it('puts every latency in a bucket whose value is within 4.9 % of it', () => {
    let worst = 0;
    let worstAt = 0;
    for (let v = 0.0157; v < 250_000; v *= 1.00037) {
      const err = Math.abs(bucketValue(latencyBucket(v)) - v) / v;
      if (err > worst) {
        worst = err;
        worstAt = v;
      }
    }
    expect(worst, `at ${worstAt} ms`).toBeLessThan(0.049);
    expect(worst).toBeGreaterThan(0.04); // the sweep did reach the buckets' edges
    // Monotonic: a larger latency never lands in a lower bucket.
    let backwards: number | undefined;
    for (let v = 0.0157, prev = 0; v < 250_000 && backwards === undefined; v *= 1.0011) {
      const b = latencyBucket(v);
      if (b < prev) backwards = v;
      prev = b;
    }
    expect(backwards).toBeUndefined();
    expect(latencyBucket(0)).toBe(0);
    expect(latencyBucket(-1)).toBe(0);
    expect(latencyBucket(Number.NaN)).toBe(0);
    expect(latencyBucket(1e9)).toBe(latencyBucket(3e5));
  });

  it('gives nearest-rank quantiles over the last two sub-windows', () => {
    const clock = new StatsClock(0);
    const w = new LatencyWindow(clock, 1);
    expect(w.summary()).toEqual({ count: 0, p50: undefined, p99: undefined, kinds: [0] });
    for (let i = 1; i <= 1000; i++) w.record(i, i % 10 === 0 ? 0 : -1);
    const s = w.summary();
    expect(s.count).toBe(1000);
    expect(s.kinds).toEqual([100]);
    expect(Math.abs((s.p50 as number) - 500) / 500).toBeLessThan(0.045);
    expect(Math.abs((s.p99 as number) - 990) / 990).toBeLessThan(0.045);

    clock.tick(30); // the first sub-window becomes the older one: still counted
    for (let i = 0; i < 1000; i++) w.record(2, -1);
    expect(w.summary().count).toBe(2000);
    expect(w.summary().p50 as number).toBeCloseTo(bucketValue(latencyBucket(2)));
    clock.tick(30); // now the first thousand are gone
    expect(w.summary()).toMatchObject({ count: 1000, kinds: [0] });
    expect(w.summary().p99 as number).toBeCloseTo(bucketValue(latencyBucket(2)));
    clock.tick(120);
    expect(w.summary().count).toBe(0);
  });

  it('keeps per-second counts of the last minute, oldest first, without the current second', () => {
    const clock = new StatsClock(0);
    const r = new RateSeries(clock);
    r.add(false);
    r.add(true);
    clock.tick();
    r.add(false);
    expect(r.series().a.slice(-2)).toEqual([0, 2]);
    expect(r.series().b.slice(-2)).toEqual([0, 1]);
    clock.tick();
    expect(r.series().a.slice(-3)).toEqual([0, 2, 1]);
    expect(r.series().a).toHaveLength(59);
    clock.tick(57);
    expect(r.series().a.slice(0, 2)).toEqual([2, 1]);
    clock.tick();
    expect(r.series().a.slice(0, 2)).toEqual([1, 0]);
    clock.tick(100);
    expect(r.series().a.every((n) => n === 0)).toBe(true);
  });
});

/** A mesh (no traffic) whose endpoint states the tests set by hand, and its admin recorder. */
async function mesh(
  services: Record<string, unknown>,
): Promise<{ mesh: Mesh; stats: AdminStats; clock: StatsClock }> {
  const m = new Mesh(parseConfig({ services }, { env: {} }));
  cleanup.push(() => m.close());
  await m.ready();
  const clock = new StatsClock(0);
  const stats = new AdminStats(m, clock);
  cleanup.push(() => stats.close());
  return { mesh: m, stats, clock };
}

function attempts(mesh: Mesh, st: EndpointState, outcome: Outcome, n: number, error?: Error): void {
  for (let i = 0; i < n; i++) {
    const e: AttemptEvent = {
      service: st.service,
      endpoint: st,
      attempt: 0,
      durationMs: 3,
      outcome,
      status: outcome === 'http_error' ? 503 : 200,
      error,
      retryReason: undefined,
      transport: 'http',
      verdict:
        outcome === 'success'
          ? 'success'
          : outcome === 'http_error'
            ? 'gateway_error'
            : outcome === 'cancelled'
              ? 'ignore'
              : 'local_failure',
    };
    mesh.events.emit('attempt', e);
  }
}

function view(m: Mesh, stats: AdminStats) {
  return clusters(m, {
    scrape: async () => ({ contentType: '', body: '' }),
    metrics: undefined,
    adminStats: stats,
  });
}

describe('admin verdicts', () => {
  it('ranks endpoint evidence: ejection, active checks, discovery, recent failures, penalties', async () => {
    const { mesh: m, stats } = await mesh({
      s: {
        endpoints: [
          '127.0.0.1:1001',
          '127.0.0.1:1002',
          { address: '127.0.0.1', port: 1003, health: 'draining' },
          '127.0.0.1:1004',
          '127.0.0.1:1005',
          '127.0.0.1:1006',
          '127.0.0.1:1007',
          { address: '127.0.0.1', port: 1008, health: 'degraded' },
        ],
        panicThreshold: 0,
      },
    });
    const rt = m.service('s');
    const eps = rt?.endpoints ?? [];
    const [ejected, checkFails, draining, failing, flaky, penalized, fine, degraded] = eps as EndpointState[];
    if (!ejected || !checkFails || !failing || !flaky || !penalized || !fine || !draining || !degraded)
      throw new Error('missing endpoints');
    ejected.ejectedUntil = m.now() + 5_000;
    ejected.ejectionCount = 2;
    checkFails.activeHealth = 'unhealthy';
    attempts(m, failing, 'connect_failure', 3, new Error('connect ECONNREFUSED 127.0.0.1:1004'));
    attempts(m, failing, 'success', 1);
    attempts(m, flaky, 'success', 19);
    attempts(m, flaky, 'http_error', 1);
    penalized.penaltyUntil = m.now() + 2_000;
    attempts(m, fine, 'success', 5);
    attempts(m, fine, 'cancelled', 5); // the caller's doing: says nothing about the endpoint
    const doc = view(m, stats);
    const s = doc.services[0];
    const by = Object.fromEntries((s?.endpoints ?? []).map((e) => [e.port, e]));
    expect(by[1001]?.state).toBe('ejected');
    expect(by[1001]?.reasons[0]).toMatch(
      /^ejected by outlier detection for (4\.\d|5\.0)s more \(ejection 2\)$/,
    );
    expect(by[1002]?.state).toBe('unhealthy');
    expect(by[1002]?.reasons).toEqual(['active health checks fail']);
    expect(by[1003]?.state).toBe('draining');
    expect(by[1004]?.state).toBe('failing');
    expect(by[1004]?.reasons).toEqual([
      '3 of 4 attempts in the last minute failed (3 could not connect)',
      'last failure: connect ECONNREFUSED 127.0.0.1:1004',
    ]);
    expect(by[1004]?.recent).toMatchObject({ count: 4, failures: 3, connectFailures: 3 });
    expect(by[1005]?.state).toBe('degraded');
    expect(by[1005]?.reasons[0]).toBe('1 of 20 attempts in the last minute failed');
    expect(by[1006]?.state).toBe('degraded');
    expect(by[1006]?.reasons[0]).toMatch(/^asked to be avoided \(429\/503 with Retry-After\)/);
    expect(by[1007]?.state).toBe('healthy');
    expect(by[1007]?.recent.count).toBe(5);
    expect(by[1008]?.state).toBe('degraded');
    expect(s?.health).toBe('degraded');
    expect(s?.reasons.slice(0, 2)).toEqual([
      '4 of 8 endpoints not healthy (1 ejected, 1 unhealthy, 1 failing, 1 draining)',
      '3 of 8 endpoints degraded',
    ]);
    expect(s?.endpointCounts.byState).toMatchObject({
      ejected: 1,
      unhealthy: 1,
      draining: 1,
      failing: 1,
      degraded: 3,
      healthy: 1,
    });
  });

  it('says a service is down when no endpoint is healthy, and in panic', async () => {
    const { mesh: m, stats } = await mesh({ s: ['127.0.0.1:1001', '127.0.0.1:1002'] });
    const rt = m.service('s');
    for (const st of rt?.endpoints ?? []) st.activeHealth = 'unhealthy';
    rt?.rebuild();
    const s = view(m, stats).services[0];
    expect(s?.panic).toBe(true);
    expect(s?.health).toBe('down');
    expect(s?.reasons).toEqual([
      'no healthy endpoint (2 unhealthy)',
      'panic mode: too few healthy endpoints, balancing over all of them',
    ]);
  });

  it('says a service is down while its breaker is open, and shows no breaker as off', async () => {
    const { mesh: m, stats } = await mesh({
      s: { endpoints: ['127.0.0.1:1001'], circuitBreaker: { volumeThreshold: 2 } },
      t: { endpoints: ['127.0.0.1:1002'], circuitBreaker: false },
    });
    const breaker = m.service('s')?.resilience.breaker;
    for (let i = 0; i < 3; i++) breaker?.tryAcquire()?.done('failure');
    expect(breaker?.state).toBe('open');
    const doc = view(m, stats);
    expect(doc.services[0]).toMatchObject({ breaker: 'open', health: 'down' });
    expect(doc.services[0]?.reasons).toContain('circuit breaker open: requests fail fast');
    expect(doc.services[1]?.breaker).toBe('off');
    expect(doc.health.state).toBe('down');
    expect(doc.health.problems).toEqual(['s: down (circuit breaker open: requests fail fast)']);
  });

  it('tells idle from healthy, and counts failed requests against the service', async () => {
    const { mesh: m, stats } = await mesh({ s: ['127.0.0.1:1001'] });
    expect(view(m, stats).services[0]).toMatchObject({
      health: 'idle',
      reasons: ['no requests in the last minute'],
    });
    expect(view(m, stats).services[0]?.endpoints[0]?.state).toBe('idle');
    const req = (outcome: Outcome) =>
      stats.onRequest({
        service: 's',
        method: 'GET',
        path: '/',
        durationMs: 4,
        outcome,
        status: 200,
        attempts: 1,
        endpoint: undefined,
        error: undefined,
        transport: 'http',
      });
    for (let i = 0; i < 9; i++) req('success');
    req('timeout');
    const s = view(m, stats).services[0];
    expect(s?.health).toBe('degraded');
    expect(s?.reasons).toEqual(['1 of 10 requests in the last minute failed']);
    expect(s?.recent).toMatchObject({ count: 10, errors: 1 });
    expect(s?.recent.p50Ms).toBeCloseTo(bucketValue(latencyBucket(4)), 3);
  });

  it('reports stale discovery, missing discovery and a pending one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshlet-admin-health-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'eps.yaml');
    writeFileSync(file, "['127.0.0.1:1001']\n");
    const { mesh: m, stats } = await mesh({
      f: { file },
      gone: { file: join(dir, 'missing.yaml') },
    });
    const failed = new Promise<void>((resolve) =>
      m.events.on('discoveryError', (e) => e.service === 'f' && resolve()),
    );
    rmSync(file);
    await failed;
    const pending = m.ensureService({
      key: 'pending',
      discoveryType: 'test',
      createSource: () => ({ start() {}, close() {} }),
    });
    expect(pending.discovery.hasData).toBe(false);
    const doc = view(m, stats);
    const by = Object.fromEntries(doc.services.map((s) => [s.name, s]));
    expect(by.f?.discovery.stale).toBe(true);
    expect(by.f?.health).toBe('degraded');
    expect(by.f?.reasons[0]).toMatch(
      /^discovery failing since \d{4}-.*: cannot read endpoints file .* using the last good endpoints$/,
    );
    expect(by.gone?.health).toBe('down');
    expect(by.gone?.reasons[0]).toMatch(
      /^discovery fails and no endpoints are known: cannot read endpoints file/,
    );
    expect(by.pending).toMatchObject({
      health: 'waiting',
      reasons: ['waiting for the first discovery answer'],
    });
  });
});

describe('inbound recording', () => {
  it('counts routes (bounded), denials (as gRPC reports them too) and keeps the last 20 denials', async () => {
    const { mesh: m, stats } = await mesh({});
    const base = {
      transport: 'http' as const,
      method: 'GET',
      durationMs: 1,
      principal: undefined,
      client: undefined,
    };
    for (let i = 0; i < 120; i++)
      stats.onInbound({ ...base, path: `/r${i}`, route: `/r${i}`, status: 200, error: undefined });
    stats.onInbound({ ...base, path: '/x', route: '/r0', status: 503, error: undefined });
    stats.onInbound({ ...base, path: '/x', route: '/r0', status: 404, error: undefined });
    for (let i = 0; i < 25; i++)
      stats.onInbound({
        ...base,
        path: `/admin/${i}`,
        route: undefined,
        status: 403,
        error: new MeshError(ErrorCodes.FORBIDDEN, `denied ${i}`),
      });
    stats.onInbound({
      ...base,
      transport: 'grpc',
      method: 'POST',
      path: '/pkg.Svc/Delete',
      route: '/pkg.Svc/Delete',
      status: 7,
      error: new Error('MESHLET_ERR_FORBIDDEN: RBAC: access denied'),
    });
    const v = view(m, stats).inbound;
    expect(v.total).toBe(148);
    expect(v.denied).toBe(26);
    expect(v.routes).toHaveLength(102); // 100 named, (other routes), (no route)
    const by = Object.fromEntries(v.routes.map((r) => [r.route, r]));
    expect(by['(other routes)']?.total).toBe(21); // 20 routes beyond the cap, and the gRPC one
    expect(by['/r0']?.recent).toMatchObject({ count: 3, clientErrors: 1, serverErrors: 1, denied: 0 });
    expect(by['(no route)']).toMatchObject({ total: 25, denied: 25 });
    expect(v.denials).toHaveLength(20);
    expect(v.denials[0]).toMatchObject({
      transport: 'grpc',
      path: '/pkg.Svc/Delete',
      reason: 'MESHLET_ERR_FORBIDDEN: RBAC: access denied',
    });
    expect(v.denials[1]?.path).toBe('/admin/24');
    expect(v.denials[19]?.path).toBe('/admin/6');
  });
});
