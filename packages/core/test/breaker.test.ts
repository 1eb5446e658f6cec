import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  type BreakerPermit,
  CircuitBreaker,
  DEFAULT_BREAKER,
  ErrorCodes,
  MeshEvents,
  parseConfig,
  Thresholds,
} from '../src/index.js';

/** opossum settles permits through promises: let its microtasks run. */
async function flush() {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

describe('circuit breaker', () => {
  const breakers: CircuitBreaker[] = [];
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    for (const b of breakers.splice(0)) b.close();
    vi.useRealTimers();
  });

  function make(overrides: Partial<typeof DEFAULT_BREAKER> = {}) {
    const events = new MeshEvents();
    const states: string[] = [];
    events.on('breaker', (e) => states.push(e.state));
    const b = new CircuitBreaker('svc', { ...DEFAULT_BREAKER, ...overrides }, events);
    breakers.push(b);
    return { b, states };
  }

  async function run(b: CircuitBreaker, verdicts: Array<'success' | 'failure' | 'ignore'>) {
    for (const v of verdicts) b.tryAcquire()?.done(v);
    await flush();
  }

  it('stays closed below the volume threshold, then opens above the error rate and fails fast', async () => {
    const { b, states } = make({ volumeThreshold: 10, errorThresholdPercentage: 50 });
    await run(b, Array(9).fill('failure'));
    expect(b.state).toBe('closed');
    await run(b, ['success', 'failure']);
    expect(b.state).toBe('open');
    expect(states).toEqual(['open']);
    expect(b.tryAcquire()).toBeUndefined();
    const err = b.openError();
    expect(err.code).toBe(ErrorCodes.CIRCUIT_OPEN);
    expect(err.service).toBe('svc');
    expect(b.stats().rejected).toBe(1);
  });

  it("the pipeline's permits (`acquire`) count as `tryAcquire`'s: the closed breaker is its own permit", async () => {
    const a = make({ volumeThreshold: 10, errorThresholdPercentage: 50 });
    const t = make({ volumeThreshold: 10, errorThresholdPercentage: 50 });
    const verdicts: Array<'success' | 'failure' | 'ignore'> = [
      ...Array(5).fill('failure'),
      'ignore',
      'success',
      ...Array(4).fill('failure'),
    ];
    for (const v of verdicts) {
      const p = a.b.acquire();
      // Closed: nothing is made per attempt.
      if (a.b.state === 'closed') expect(p).toBe(a.b);
      p?.done(v);
      t.b.tryAcquire()?.done(v);
      await flush();
      expect(a.b.stats()).toEqual(t.b.stats());
    }
    expect(a.b.state).toBe('open');
    expect(a.b.acquire()).toBeUndefined();
    expect(a.states).toEqual(t.states);
  });

  it('does not count ignored outcomes (cancellations) as failures', async () => {
    const { b } = make({ volumeThreshold: 5 });
    await run(b, [...Array(20).fill('ignore'), 'failure', 'failure']);
    expect(b.state).toBe('closed');
  });

  it('half-open lets exactly one probe through under concurrency, and a passing probe closes it', async () => {
    const { b, states } = make({ volumeThreshold: 2, resetTimeoutMs: 5_000 });
    await run(b, ['failure', 'failure']);
    expect(b.state).toBe('open');
    vi.advanceTimersByTime(5_000);
    expect(b.state).toBe('half_open');
    const permits = Array.from({ length: 100 }, () => b.tryAcquire());
    const admitted = permits.filter((p): p is BreakerPermit => p !== undefined);
    expect(admitted).toHaveLength(1);
    expect(admitted[0]?.probe).toBe(true);
    // Still exactly one while the probe is out, even across ticks.
    await flush();
    expect(b.tryAcquire()).toBeUndefined();
    admitted[0]?.done('success');
    await flush();
    expect(b.state).toBe('closed');
    expect(states).toEqual(['open', 'half_open', 'closed']);
    expect(b.tryAcquire()).toBeDefined();
  });

  it('a failing probe re-opens it for another reset timeout', async () => {
    const { b, states } = make({ volumeThreshold: 1, resetTimeoutMs: 1_000 });
    await run(b, ['failure']);
    vi.advanceTimersByTime(1_000);
    const probe = b.tryAcquire();
    expect(probe?.probe).toBe(true);
    probe?.done('failure');
    await flush();
    expect(b.state).toBe('open');
    expect(b.tryAcquire()).toBeUndefined();
    vi.advanceTimersByTime(1_000);
    expect(b.state).toBe('half_open');
    expect(states).toEqual(['open', 'half_open', 'open', 'half_open']);
  });

  it('an inconclusive (cancelled) probe neither closes it nor lets a flood in', async () => {
    const { b } = make({ volumeThreshold: 1, resetTimeoutMs: 1_000 });
    await run(b, ['failure']);
    vi.advanceTimersByTime(1_000);
    b.tryAcquire()?.done('ignore');
    await flush();
    expect(b.state).toBe('open');
    vi.advanceTimersByTime(1_000);
    const again = [b.tryAcquire(), b.tryAcquire(), b.tryAcquire()].filter(Boolean);
    expect(again).toHaveLength(1);
  });

  it("closed: counts permits in opossum's rolling window, and they roll out of it", () => {
    const { b } = make({ volumeThreshold: 100, windowMs: 10_000, buckets: 10 });
    for (let i = 0; i < 3; i++) b.tryAcquire()?.done('success');
    expect(b.stats().fires).toBe(3);
    vi.advanceTimersByTime(5_000);
    for (let i = 0; i < 2; i++) b.tryAcquire()?.done('success');
    expect(b.stats().fires).toBe(5);
    // The first three leave with their bucket; the last two are still in the window.
    vi.advanceTimersByTime(5_500);
    expect(b.stats().fires).toBe(2);
    vi.advanceTimersByTime(5_000);
    expect(b.stats().fires).toBe(0);
  });

  it('settles a permit once; later calls are ignored', async () => {
    const { b } = make({ volumeThreshold: 1 });
    const p = b.tryAcquire();
    p?.done('success');
    p?.done('failure');
    await flush();
    expect(b.state).toBe('closed');
    expect(b.stats().failures).toBe(0);
  });

  it('closed: counts permits straight into the window and opens synchronously at the threshold', () => {
    const { b, states } = make({ volumeThreshold: 4, errorThresholdPercentage: 50 });
    for (const v of ['success', 'success', 'failure', 'failure'] as const) b.tryAcquire()?.done(v);
    // 2 of 4 failed: 50% is not above the threshold.
    expect(b.state).toBe('closed');
    expect(b.stats()).toMatchObject({ fires: 4, failures: 2 });
    b.tryAcquire()?.done('failure');
    // 3 of 5: open at once, without waiting for a microtask.
    expect(b.state).toBe('open');
    expect(states).toEqual(['open']);
    expect(b.tryAcquire()).toBeUndefined();
  });

  it('an attempt admitted while closed that ends after the breaker left closed decides nothing', async () => {
    const { b, states } = make({ volumeThreshold: 2, errorThresholdPercentage: 40, resetTimeoutMs: 1_000 });
    const early = b.tryAcquire();
    const late = b.tryAcquire();
    await run(b, ['failure', 'failure']);
    expect(b.state).toBe('open');
    vi.advanceTimersByTime(1_000);
    expect(b.state).toBe('half_open');
    early?.done('success');
    late?.done('failure');
    await flush();
    expect(b.state).toBe('half_open');
    // The probe still decides.
    const probe = b.tryAcquire();
    expect(probe?.probe).toBe(true);
    probe?.done('success');
    await flush();
    expect(b.state).toBe('closed');
    expect(states).toEqual(['open', 'half_open', 'closed']);
  });

  it('is configured per service with defaults, and can be turned off', () => {
    const cfg = parseConfig({
      defaults: { circuitBreaker: { errorThresholdPercentage: 25, resetTimeout: '2s' } },
      services: { a: ['127.0.0.1:1'], b: { endpoints: ['127.0.0.1:2'], circuitBreaker: false } },
    });
    expect(cfg.services.a?.circuitBreaker).toMatchObject({
      errorThresholdPercentage: 25,
      resetTimeoutMs: 2_000,
      volumeThreshold: 20,
    });
    expect(cfg.services.b?.circuitBreaker).toBeUndefined();
    expect(parseConfig({}).defaults.circuitBreaker).toEqual(DEFAULT_BREAKER);
    expect(() => parseConfig({ defaults: { circuitBreaker: { errorThreshold: 5 } } })).toThrow(
      /defaults\.circuitBreaker\.errorThreshold: unknown field/,
    );
  });
});

describe('thresholds', () => {
  it('fails fast past max requests and max pending, and bounds active retries', () => {
    const t = new Thresholds('svc', {
      maxConnections: 10,
      maxPendingRequests: 2,
      maxRequests: 3,
      maxRetries: 1,
    });
    expect(t.enter()).toBeUndefined();
    expect(t.enter()).toBeUndefined();
    expect(t.enter()).toBe('max_pending_requests');
    t.connected();
    expect(t.enter()).toBeUndefined();
    expect(t.enter()).toBe('max_requests');
    expect(t.overloadedError('max_requests').code).toBe(ErrorCodes.OVERLOADED);
    t.leave(false);
    t.leave(true);
    t.leave(true);
    expect(t.stats()).toMatchObject({ requests: 0, pending: 0 });
    expect(t.startRetry()).toBe(true);
    expect(t.startRetry()).toBe(false);
    t.endRetry();
    expect(t.startRetry()).toBe(true);
    expect(t.stats().overflows).toEqual({ max_requests: 1, max_pending_requests: 1, max_retries: 1 });
  });

  it('defaults to unlimited like Istio and validates config', () => {
    expect(parseConfig({}).defaults.thresholds.maxRequests).toBe(4_294_967_295);
    const cfg = parseConfig({ defaults: { thresholds: { maxRequests: 5 } } });
    expect(cfg.defaults.thresholds).toMatchObject({ maxRequests: 5, maxRetries: 4_294_967_295 });
    expect(() => parseConfig({ defaults: { thresholds: { maxRequests: 0 } } })).toThrow(
      /defaults\.thresholds\.maxRequests: must be >= 1/,
    );
  });
});
