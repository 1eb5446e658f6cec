import { makeEndpoint, orcaLoadReport, processLoad } from '@meshlet/core';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { clusters } from '../src/admin-health.js';
import { type Backend, run, sample, startBackend, startMesh, type TestMesh } from './helpers.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function setup(telemetry: unknown, options = {}, backends = 1): Promise<{ m: TestMesh; b: Backend[] }> {
  const b: Backend[] = [];
  for (let i = 0; i < backends; i++) {
    const x = await startBackend();
    cleanup.push(() => x.close());
    b.push(x);
  }
  const m = await startMesh(
    {
      local: { workload: 'productpage', namespace: 'bookinfo' },
      services: { reviews: { endpoints: b.map((x) => x.address), lb: 'round_robin' } },
      telemetry,
    },
    options,
  );
  cleanup.push(() => m.close());
  return { m, b };
}

describe('request metrics', () => {
  it('counts logical requests and attempts with OpenTelemetry names and outcome labels', async () => {
    const { m, b } = await setup({});
    (b[0] as Backend).statuses = [503, 200, 404];
    expect((await m.fetch('http://reviews/a')).status).toBe(200); // 503 retried, then 200
    expect((await m.fetch('http://reviews/b', { method: 'POST', body: 'x' })).status).toBe(404);
    const text = (await m.telemetry.scrape()).body;
    expect(
      sample(text, 'http_client_requests_total', {
        service: 'reviews',
        http_request_method: 'GET',
        http_response_status_code: '200',
        status_class: '2xx',
        outcome: 'success',
      }),
    ).toBe(1);
    expect(
      sample(text, 'http_client_request_duration_seconds_count', {
        service: 'reviews',
        http_request_method: 'POST',
        http_response_status_code: '404',
        status_class: '4xx',
      }),
    ).toBe(1);
    // Three attempts: 503 (retried), 200, 404.
    expect(
      sample(text, 'meshlet_client_attempts_total', { service: 'reviews', http_response_status_code: '503' }),
    ).toBe(1);
    expect(
      sample(text, 'meshlet_client_attempts_total', { service: 'reviews', http_response_status_code: '200' }),
    ).toBe(1);
    expect(sample(text, 'meshlet_retries_total', { service: 'reviews', reason: '503' })).toBe(1);
    expect(sample(text, 'meshlet_endpoints', { service: 'reviews', state: 'healthy' })).toBe(1);
    expect(sample(text, 'meshlet_discovery_updates_total', { service: 'reviews', source: 'static' })).toBe(1);
    expect(
      sample(text, 'meshlet_discovery_last_update_age_seconds', { service: 'reviews' }),
    ).toBeGreaterThanOrEqual(0);
    expect(sample(text, 'meshlet_ready', {})).toBe(1);
    expect(text).not.toContain('istio_requests_total');
  });

  it('counts each series right when services and statuses alternate (the per-service caches)', async () => {
    const { m } = await setup({});
    const reviews = m.mesh.service('reviews');
    const metrics = m.telemetry.metrics;
    if (!reviews || !metrics) throw new Error('no runtime');
    const ep = reviews.endpoints[0];
    if (!ep) throw new Error('no endpoint');
    // What the call listener hands over, for two services, in an order that defeats any cache
    // that would not key on the service and the series.
    const order: Array<[string, number]> = [
      ['reviews', 200],
      ['ratings', 200],
      ['reviews', 503],
      ['reviews', 503],
      ['reviews', 200],
      ['ratings', 404],
      ['ratings', 200],
    ];
    for (const [service, status] of order) {
      const outcome = status >= 500 ? 'http_error' : 'success';
      metrics.onCall(service, 'GET', '/', 2, outcome, status, 'http');
      reviews.hooks.attemptEnded(
        { ...reviews, name: service } as typeof reviews,
        ep,
        0,
        2,
        outcome,
        status,
        undefined,
        undefined,
        'http',
        'success',
      );
    }
    const text = (await m.telemetry.scrape()).body;
    for (const [service, status, n] of [
      ['reviews', 200, 2],
      ['reviews', 503, 2],
      ['ratings', 200, 2],
      ['ratings', 404, 1],
    ] as const) {
      const labels = { service, http_response_status_code: String(status) };
      expect(sample(text, 'http_client_requests_total', labels)).toBe(n);
      expect(sample(text, 'meshlet_client_attempts_total', labels)).toBe(n);
    }
  });

  it('labels connect failures and missing endpoints by outcome', async () => {
    const { m, b } = await setup({});
    const dead = b[0] as Backend;
    await dead.close();
    await expect(m.fetch('http://reviews/')).rejects.toThrow();
    const rt = m.mesh.service('reviews');
    rt?.applyUpdate({ endpoints: [] });
    await expect(m.fetch('http://reviews/')).rejects.toThrow();
    const text = (await m.telemetry.scrape()).body;
    expect(
      sample(text, 'http_client_requests_total', { outcome: 'connect_failure', status_class: 'none' }),
    ).toBe(1);
    expect(sample(text, 'http_client_requests_total', { outcome: 'no_endpoint' })).toBe(1);
  });

  it('records inbound requests as Istio destination series, one per status and protocol', async () => {
    const { m } = await setup({ metrics: { naming: 'istio' } });
    const serve = (status: number | undefined, grpc: boolean) =>
      m.telemetry.server
        .start({
          method: 'POST',
          path: '/x',
          route: '/x',
          header: () => undefined,
          transport: grpc ? 'grpc' : 'http',
        })
        .end(status);
    serve(200, false);
    serve(200, false);
    serve(503, false);
    serve(0, true);
    serve(14, true);
    serve(undefined, false);
    const text = (await m.telemetry.scrape()).body;
    const dest = { reporter: 'destination', destination_workload: 'productpage' };
    expect(
      sample(text, 'istio_requests_total', { ...dest, request_protocol: 'http', response_code: '200' }),
    ).toBe(2);
    expect(
      sample(text, 'istio_requests_total', { ...dest, request_protocol: 'http', response_code: '503' }),
    ).toBe(1);
    expect(
      sample(text, 'istio_requests_total', { ...dest, request_protocol: 'http', response_code: '0' }),
    ).toBe(1);
    expect(
      sample(text, 'istio_requests_total', { ...dest, request_protocol: 'grpc', grpc_response_status: '0' }),
    ).toBe(1);
    expect(
      sample(text, 'istio_requests_total', { ...dest, request_protocol: 'grpc', grpc_response_status: '14' }),
    ).toBe(1);
  });

  it('emits Istio-compatible series in istio mode', async () => {
    const { m } = await setup({ metrics: { naming: 'istio' } });
    await m.fetch('http://reviews/');
    const text = (await m.telemetry.scrape()).body;
    const labels = {
      reporter: 'source',
      source_workload: 'productpage',
      source_workload_namespace: 'bookinfo',
      destination_service: 'reviews',
      destination_service_name: 'reviews',
      response_code: '200',
      response_flags: '-',
      request_protocol: 'http',
    };
    expect(sample(text, 'istio_requests_total', labels)).toBe(1);
    expect(sample(text, 'istio_request_duration_milliseconds_count', labels)).toBe(1);
    expect(sample(text, 'istio_request_duration_milliseconds_bucket', { ...labels, le: '+Inf' })).toBe(1);
    expect(text).not.toContain('http_client_requests_total');
  });

  it('passes promtool check metrics, lint included', async () => {
    const { m } = await setup({ metrics: { perEndpoint: true } });
    await m.fetch('http://reviews/');
    m.telemetry.setCertificateExpiry(
      'workload',
      new Date('2030-01-01T00:00:00Z'),
      'spiffe://cluster.local/ns/a/sa/b',
    );
    m.mesh.events.emit('breaker', { service: 'reviews', state: 'half_open' });
    const text = (await m.telemetry.scrape()).body;
    expect(text).toContain('meshlet_endpoint_attempts_total{');
    const r = await run('promtool', ['check', 'metrics'], text);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toBe('');
  });

  it("istio mode parses in promtool; its only lint finding is Istio's own millisecond unit", async () => {
    const { m } = await setup({ metrics: { naming: 'both' } });
    await m.fetch('http://reviews/');
    const r = await run('promtool', ['check', 'metrics'], (await m.telemetry.scrape()).body);
    const findings = r.out.trim().split('\n');
    expect(findings).toEqual([
      'istio_request_duration_milliseconds use base unit "seconds" instead of "milliseconds"',
    ]);
  });

  it('adds default process metrics only when asked', async () => {
    const { m } = await setup({ metrics: { defaultMetrics: true } });
    const text = (await m.telemetry.scrape()).body;
    expect(text).toContain('process_cpu_user_seconds_total');
  });

  it('accepts the caller registry, and registering twice is safe', async () => {
    const registry = new Registry();
    const one = await setup({}, { registry });
    const two = await setup({}, { registry });
    await one.m.fetch('http://reviews/');
    await two.m.fetch('http://reviews/');
    const text = await registry.metrics();
    expect(sample(text, 'http_client_requests_total', { service: 'reviews', outcome: 'success' })).toBe(2);
    expect(text).not.toContain('process_cpu_user_seconds_total'); // default metrics only when asked
  });

  it('reports breaker state, ejections, panic, budget exhaustion, discovery errors and certificate expiry', async () => {
    const { m } = await setup({});
    const ev = m.mesh.events;
    ev.emit('breaker', { service: 'reviews', state: 'open' });
    ev.emit('ejection', {
      service: 'reviews',
      endpoint: 'x',
      ejected: true,
      reason: '5xx',
      durationMs: 30000,
    });
    ev.emit('panic', { service: 'reviews', panic: true, usable: 0, total: 1 });
    ev.emit('retry', { service: 'reviews', attempt: 1, reason: '503', allowed: false, denial: 'budget' });
    m.mesh.service('reviews')?.applyError(new Error('dns down'));
    ev.emit('log', {
      level: 'info',
      scope: 'tls',
      message: 'certificate loaded',
      data: {
        certificate: {
          name: 'workload',
          notAfter: '2031-05-01T00:00:00Z',
          identity: 'spiffe://td/ns/x/sa/y',
        },
      },
    });
    const text = (await m.telemetry.scrape()).body;
    expect(sample(text, 'meshlet_circuit_breaker_state', { service: 'reviews', state: 'open' })).toBe(1);
    expect(sample(text, 'meshlet_circuit_breaker_state', { service: 'reviews', state: 'closed' })).toBe(0);
    expect(sample(text, 'meshlet_circuit_breaker_transitions_total', { state: 'open' })).toBe(1);
    expect(sample(text, 'meshlet_outlier_ejections_total', { service: 'reviews' })).toBe(1);
    expect(sample(text, 'meshlet_panic_mode_entered_total', { service: 'reviews' })).toBe(1);
    expect(sample(text, 'meshlet_retry_budget_exhausted_total', { service: 'reviews' })).toBe(1);
    expect(sample(text, 'meshlet_retries_denied_total', { cause: 'budget' })).toBe(1);
    expect(sample(text, 'meshlet_discovery_errors_total', { service: 'reviews', source: 'static' })).toBe(1);
    expect(sample(text, 'meshlet_certificate_expiry_timestamp_seconds', { certificate: 'workload' })).toBe(
      Date.parse('2031-05-01T00:00:00Z') / 1000,
    );
  });
});

describe('cardinality', () => {
  it('keeps per-endpoint series only for current endpoints while endpoints churn', async () => {
    const { m, b } = await setup({ metrics: { perEndpoint: true } }, {}, 1);
    const rt = m.mesh.service('reviews');
    if (!rt) throw new Error('no runtime');
    const live = (b[0] as Backend).address;
    const [host, port] = live.split(':') as [string, string];
    for (let round = 0; round < 50; round++) {
      // Each round: the live backend plus 5 fresh (fake) endpoints that never take traffic but
      // get attempts recorded through the attempt event, as a real churn would.
      const fake = Array.from({ length: 5 }, (_, i) =>
        makeEndpoint({ address: '127.0.0.2', port: 20000 + round * 5 + i, health: 'draining' }),
      );
      rt.applyUpdate({ endpoints: [makeEndpoint({ address: host, port: Number(port) }), ...fake] });
      for (const st of rt.endpoints) {
        if (st.endpoint.address !== '127.0.0.2') continue;
        rt.endAttempt(st, rt.startAttempt(st), 0, 'success', 200, undefined, undefined, 'http');
      }
      await m.fetch('http://reviews/');
    }
    const text = (await m.telemetry.scrape()).body;
    const series = (name: string) => text.split('\n').filter((l) => l.startsWith(`${name}{`)).length;
    // 6 current endpoints at most; never the 250 that came and went.
    expect(series('meshlet_endpoint_active_requests')).toBe(6);
    expect(series('meshlet_endpoint_attempt_duration_seconds_count')).toBeLessThanOrEqual(6);
    expect(series('meshlet_endpoint_attempts_total')).toBeLessThanOrEqual(6);
    expect(text).not.toContain('127.0.0.2:20000');
    expect(text).toContain(`endpoint="${live}"`);
    // Request series are bounded by service x method x status x outcome, not by endpoints.
    expect(series('http_client_requests_total')).toBe(1);
  });
});

describe('load awareness in metrics, the admin view and snapshot()', () => {
  it("shows each endpoint's reported load, weight and concurrency limit, and the process' own load", async () => {
    const b = await startBackend();
    cleanup.push(() => b.close());
    const m = await startMesh({
      services: {
        reviews: {
          endpoints: [b.address],
          lb: { policy: 'client_side_weighted_round_robin', blackoutPeriod: 0 },
          adaptiveConcurrency: { minRtt: { fixed: '5ms' } },
        },
      },
      telemetry: { metrics: { perEndpoint: true } },
    });
    cleanup.push(() => m.close());
    const rt = m.mesh.service('reviews');
    const ep = rt?.endpoints[0];
    if (rt === undefined || ep === undefined) throw new Error('no endpoint');
    rt.reportLoad(ep, orcaLoadReport({ applicationUtilization: 0.7, rpsFractional: 40, eps: 2 }));
    // (what the policy's picker writes when it refreshes its schedule)
    if (ep.load) ep.load.weight = 50;
    expect((await m.fetch('http://reviews/x')).status).toBe(200); // the limiter admits: state made
    processLoad().requestShed();
    const text = (await m.telemetry.scrape()).body;
    const l = { service: 'reviews', endpoint: ep.id };
    expect(sample(text, 'meshlet_endpoint_reported_utilization', l)).toBe(0.7);
    expect(sample(text, 'meshlet_endpoint_reported_rps', l)).toBe(40);
    expect(sample(text, 'meshlet_endpoint_load_weight', l)).toBe(50);
    // A fixed minRTT: no measurement, the limit starts at the floor (1) and grows with the gradient.
    expect(sample(text, 'meshlet_endpoint_concurrency_limit', l)).toBe(ep.concurrency?.limit);
    expect(ep.concurrency?.limit).toBe(1);
    expect(sample(text, 'meshlet_endpoint_concurrency_refused_total', l)).toBe(0);
    expect(sample(text, 'meshlet_server_load', { figure: 'event_loop_utilization' })).toBeGreaterThanOrEqual(
      0,
    );
    expect(sample(text, 'meshlet_server_requests_shed_total', {})).toBeGreaterThanOrEqual(1);
    const check = await run('promtool', ['check', 'metrics'], text);
    expect(check.out).not.toMatch(/error/i);
    const view = clusters(m.mesh, { scrape: m.telemetry.scrape, metrics: undefined, adminStats: undefined });
    expect(view.services[0]?.endpoints[0]).toMatchObject({
      load: { utilization: 0.7, rps: 40, eps: 2, weight: 50, reports: 1 },
      concurrency: { limit: 1, inFlight: 0, minRttMs: 5, measuring: false, refused: 0 },
    });
    expect(m.mesh.snapshot().services.reviews?.endpoints[0]).toMatchObject({
      load: { utilization: 0.7, rps: 40, eps: 2, weight: 50 },
      concurrency: { limit: 1, inFlight: 0, minRttMs: 5, refused: 0 },
      penaltyMs: 0,
    });
  });
});
