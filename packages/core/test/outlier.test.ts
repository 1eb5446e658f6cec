import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  type EndpointState,
  type MeshEventMap,
  MeshEvents,
  makeEndpoint,
  type Outcome,
  parseConfig,
  ServiceRuntime,
} from '../src/index.js';

type Ejection = MeshEventMap['ejection'];

const runtimes: ServiceRuntime[] = [];

function makeRuntime(n: number, defaults: Record<string, unknown> = {}) {
  const events = new MeshEvents();
  const policy = parseConfig({ defaults }).defaults;
  const rt = new ServiceRuntime('svc', policy, 'static', events, () => Date.now());
  runtimes.push(rt);
  rt.applyUpdate({
    endpoints: Array.from({ length: n }, (_, i) => makeEndpoint({ address: '127.0.0.1', port: 9000 + i })),
    version: '1',
  });
  const ejections: Ejection[] = [];
  events.on('ejection', (e) => ejections.push(e));
  return { rt, events, ejections, eps: rt.endpoints };
}

function attempt(rt: ServiceRuntime, ep: EndpointState, outcome: Outcome, status?: number) {
  const start = rt.startAttempt(ep);
  rt.endAttempt(ep, start, 0, outcome, status, undefined, undefined, 'http');
}

function picked(rt: ServiceRuntime, n = 400): Set<string> {
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) {
    const r = rt.pick({ attempt: 0 });
    if (r.kind === 'pick') seen.add(r.endpoint.id);
  }
  return seen;
}

describe('outlier detection', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    for (const rt of runtimes.splice(0)) rt.close();
    vi.useRealTimers();
  });

  it('is on by default with Envoy defaults and ejects a host after 5 consecutive gateway errors', () => {
    const { rt, eps, ejections } = makeRuntime(4);
    const dead = eps[0] as EndpointState;
    for (let i = 0; i < 4; i++) attempt(rt, dead, 'connect_failure');
    expect(dead.isEjected(Date.now())).toBe(false);
    attempt(rt, dead, 'connect_failure');
    expect(dead.isEjected(Date.now())).toBe(true);
    expect(ejections).toEqual([
      {
        service: 'svc',
        endpoint: dead.id,
        ejected: true,
        reason: 'consecutive_gateway_failure',
        durationMs: 30_000,
      },
    ]);
    expect(picked(rt).has(dead.id)).toBe(false);
  });

  it('ejects on consecutive 5xx; a success resets the count', () => {
    const { rt, eps, ejections } = makeRuntime(4, { outlierDetection: { consecutive5xx: 3 } });
    const ep = eps[1] as EndpointState;
    attempt(rt, ep, 'http_error', 503);
    attempt(rt, ep, 'http_error', 503);
    attempt(rt, ep, 'success', 200);
    attempt(rt, ep, 'http_error', 503);
    attempt(rt, ep, 'http_error', 502);
    expect(ep.isEjected(Date.now())).toBe(false);
    attempt(rt, ep, 'http_error', 504);
    expect(ep.isEjected(Date.now())).toBe(true);
    expect(ejections[0]?.reason).toBe('consecutive_5xx');
  });

  it('counts 4xx as success and ignores cancelled attempts', () => {
    const { rt, eps } = makeRuntime(4, { outlierDetection: { consecutive5xx: 2 } });
    const ep = eps[0] as EndpointState;
    attempt(rt, ep, 'http_error', 503);
    attempt(rt, ep, 'success', 404);
    attempt(rt, ep, 'http_error', 503);
    attempt(rt, ep, 'cancelled');
    expect(ep.isEjected(Date.now())).toBe(false);
    attempt(rt, ep, 'http_error', 503);
    expect(ep.isEjected(Date.now())).toBe(true);
  });

  it('a 500 from the application is an answer: it resets both counts and never ejects', () => {
    const { rt, eps, ejections } = makeRuntime(4, {
      outlierDetection: { consecutiveGatewayFailure: 2, consecutive5xx: 2 },
    });
    const ep = eps[0] as EndpointState;
    attempt(rt, ep, 'http_error', 503);
    attempt(rt, ep, 'http_error', 500);
    attempt(rt, ep, 'http_error', 502);
    expect(ep.isEjected(Date.now())).toBe(false);
    for (let i = 0; i < 100; i++) attempt(rt, ep, 'http_error', i % 2 === 0 ? 500 : 501);
    expect(ejections).toEqual([]);
    attempt(rt, ep, 'http_error', 504);
    attempt(rt, ep, 'http_error', 504);
    expect(ejections[0]?.reason).toBe('consecutive_gateway_failure');
  });

  it('in split mode counts local-origin failures apart from HTTP errors', () => {
    const { rt, eps, ejections } = makeRuntime(4, {
      outlierDetection: {
        splitExternalLocalOriginErrors: true,
        consecutiveLocalOriginFailure: 3,
        consecutive5xx: 3,
        consecutiveGatewayFailure: 3,
      },
    });
    const ep = eps[0] as EndpointState;
    attempt(rt, ep, 'connect_failure');
    attempt(rt, ep, 'reset');
    attempt(rt, ep, 'http_error', 503); // a response: the connection worked, local count resets
    attempt(rt, ep, 'http_error', 503);
    attempt(rt, ep, 'timeout');
    attempt(rt, ep, 'connect_failure');
    expect(ep.isEjected(Date.now())).toBe(false);
    attempt(rt, ep, 'reset');
    expect(ejections.map((e) => e.reason)).toEqual(['consecutive_local_origin_failure']);
  });

  it('returns hosts after base × multiplier (capped), and the multiplier decays while healthy', () => {
    const { rt, eps, ejections } = makeRuntime(4, {
      outlierDetection: {
        consecutiveGatewayFailure: 1,
        baseEjectionTime: '10s',
        maxEjectionTime: '25s',
        interval: '100s',
      },
    });
    const ep = eps[2] as EndpointState;
    attempt(rt, ep, 'connect_failure');
    expect(ep.ejectionCount).toBe(1);
    vi.advanceTimersByTime(9_999);
    expect(picked(rt).has(ep.id)).toBe(false);
    vi.advanceTimersByTime(1);
    expect(ep.isEjected(Date.now())).toBe(false);
    expect(picked(rt).has(ep.id)).toBe(true);
    expect(ejections[1]).toMatchObject({ endpoint: ep.id, ejected: false, reason: 'ejection_time_elapsed' });
    // Ejected again before any sweep: twice as long, then capped by maxEjectionTime.
    attempt(rt, ep, 'connect_failure');
    expect(ejections.at(-1)?.durationMs).toBe(20_000);
    vi.advanceTimersByTime(20_000);
    attempt(rt, ep, 'connect_failure');
    expect(ejections.at(-1)?.durationMs).toBe(25_000);
    expect(ep.ejectionCount).toBe(3);
    // Each sweep (every 100s) that finds it in rotation decays the multiplier by one.
    vi.advanceTimersByTime(300_000);
    expect(ep.ejectionCount).toBe(0);
    attempt(rt, ep, 'connect_failure');
    expect(ejections.at(-1)?.durationMs).toBe(10_000);
  });

  it('honours max ejection percent, but always allows the first ejection', () => {
    const { rt, eps } = makeRuntime(4, { outlierDetection: { consecutiveGatewayFailure: 1 } });
    attempt(rt, eps[0] as EndpointState, 'connect_failure');
    attempt(rt, eps[1] as EndpointState, 'connect_failure');
    expect(eps.map((e) => e.isEjected(Date.now()))).toEqual([true, false, false, false]);

    const b = makeRuntime(4, { outlierDetection: { consecutiveGatewayFailure: 1, maxEjectionPercent: 50 } });
    for (const ep of b.eps) attempt(b.rt, ep, 'connect_failure');
    expect(b.eps.map((e) => e.isEjected(Date.now()))).toEqual([true, true, false, false]);

    // 20 hosts at the default 10%: two at once; a third waits until one returns.
    const c = makeRuntime(20, {
      outlierDetection: { consecutiveGatewayFailure: 1, baseEjectionTime: '10s' },
    });
    for (const ep of c.eps.slice(0, 3)) attempt(c.rt, ep, 'connect_failure');
    expect(c.eps.filter((e) => e.isEjected(Date.now()))).toHaveLength(2);
    vi.advanceTimersByTime(10_000);
    attempt(c.rt, c.eps[2] as EndpointState, 'connect_failure');
    expect((c.eps[2] as EndpointState).isEjected(Date.now())).toBe(true);
  });

  it('ejects the only host of a service, and the panic threshold keeps routing to it', () => {
    const { rt, eps, ejections } = makeRuntime(1, { outlierDetection: { consecutiveGatewayFailure: 2 } });
    const only = eps[0] as EndpointState;
    attempt(rt, only, 'connect_failure');
    attempt(rt, only, 'connect_failure');
    expect(ejections).toHaveLength(1);
    expect(rt.panic).toBe(true);
    expect(picked(rt, 5)).toEqual(new Set([only.id]));
  });

  it('ejects a host whose success rate is far below the others at the interval sweep', () => {
    const { rt, eps, ejections } = makeRuntime(6, {
      outlierDetection: {
        successRateRequestVolume: 20,
        successRateMinimumHosts: 5,
        interval: '10s',
        consecutive5xx: 1000,
        consecutiveGatewayFailure: 1000,
        maxEjectionPercent: 50,
      },
    });
    eps.forEach((ep, i) => {
      for (let k = 0; k < 40; k++) {
        // Host 3 fails every other request (alternating, so no consecutive rule fires).
        attempt(
          rt,
          ep,
          i === 3 && k % 2 === 0 ? 'http_error' : 'success',
          i === 3 && k % 2 === 0 ? 503 : 200,
        );
      }
    });
    expect(ejections).toHaveLength(0);
    vi.advanceTimersByTime(10_000);
    expect(ejections.map((e) => [e.endpoint, e.reason])).toEqual([[eps[3]?.id, 'success_rate']]);
  });

  it('success rate needs enough hosts with enough requests', () => {
    const { rt, eps, ejections } = makeRuntime(4, {
      outlierDetection: {
        successRateRequestVolume: 20,
        consecutive5xx: 1000,
        consecutiveGatewayFailure: 1000,
      },
    });
    eps.forEach((ep, i) => {
      for (let k = 0; k < 40; k++)
        attempt(rt, ep, i === 0 && k % 2 ? 'http_error' : 'success', i === 0 && k % 2 ? 503 : 200);
    });
    vi.advanceTimersByTime(10_000);
    expect(ejections).toHaveLength(0); // 4 hosts < successRateMinimumHosts (5)
  });

  it('ejects on failure percentage when enforced', () => {
    const { rt, eps, ejections } = makeRuntime(4, {
      outlierDetection: {
        enforcingFailurePercentage: 100,
        enforcingSuccessRate: 0,
        failurePercentageThreshold: 40,
        failurePercentageMinimumHosts: 3,
        failurePercentageRequestVolume: 10,
        consecutive5xx: 1000,
        consecutiveGatewayFailure: 1000,
        maxEjectionPercent: 100,
      },
    });
    eps.forEach((ep, i) => {
      // Hosts 0 and 1 fail 50% and 40%; hosts 2 and 3 fail 10%.
      const failEvery = i === 0 ? 2 : i === 1 ? 2.5 : 10;
      for (let k = 0; k < 20; k++) {
        const fail = Math.floor((k + 1) / failEvery) > Math.floor(k / failEvery);
        attempt(rt, ep, fail ? 'http_error' : 'success', fail ? 503 : 200);
      }
    });
    vi.advanceTimersByTime(10_000);
    expect(ejections.map((e) => [e.endpoint, e.reason])).toEqual([
      [eps[0]?.id, 'failure_percentage'],
      [eps[1]?.id, 'failure_percentage'],
    ]);
  });

  it('can be turned off', () => {
    const { rt, eps, ejections } = makeRuntime(4, { outlierDetection: false });
    for (let i = 0; i < 20; i++) attempt(rt, eps[0] as EndpointState, 'connect_failure');
    expect(ejections).toHaveLength(0);
    expect(rt.resilience.outlier).toBeUndefined();
  });

  it('follows config reloads (turned off, then on again)', () => {
    const { rt, eps, ejections } = makeRuntime(4);
    rt.setPolicy({ ...rt.policy, outlierDetection: undefined });
    for (let i = 0; i < 10; i++) attempt(rt, eps[0] as EndpointState, 'connect_failure');
    expect(ejections).toHaveLength(0);
    rt.setPolicy(parseConfig({ defaults: { outlierDetection: { consecutiveGatewayFailure: 2 } } }).defaults);
    attempt(rt, eps[0] as EndpointState, 'connect_failure');
    attempt(rt, eps[0] as EndpointState, 'connect_failure');
    expect(ejections).toHaveLength(1);
  });

  it('stops its timers on close', () => {
    const { rt } = makeRuntime(4);
    attempt(rt, rt.endpoints[0] as EndpointState, 'connect_failure');
    expect(vi.getTimerCount()).toBeGreaterThan(0);
    rt.close();
    runtimes.splice(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('rejects invalid options naming the field', () => {
    const bad = () =>
      parseConfig({ defaults: { outlierDetection: { maxEjectionPercent: 120, interval: 'soon' } } });
    expect(bad).toThrow(/defaults\.outlierDetection\.maxEjectionPercent: must be <= 100/);
    expect(bad).toThrow(/defaults\.outlierDetection\.interval: must be a duration/);
    expect(() => parseConfig({ defaults: { outlierDetection: { consecutive5x: 3 } } })).toThrow(
      /defaults\.outlierDetection\.consecutive5x: unknown field/,
    );
  });
});
