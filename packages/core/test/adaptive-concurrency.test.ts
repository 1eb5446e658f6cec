import { describe, expect, it } from 'vitest';
import {
  AdaptiveConcurrency,
  type AdaptiveConcurrencyConfig,
  type ConfigIssue,
  DEFAULT_ADAPTIVE_CONCURRENCY,
  type EndpointConcurrency,
  type EndpointState,
  EventLoopLag,
  Mesh,
  parseAdaptiveConcurrency,
  parseConfig,
  processEventLoopLag,
} from '../src/index.js';
import { states } from './lb-helpers.js';

function parse(raw: unknown): { config: AdaptiveConcurrencyConfig; issues: ConfigIssue[] } {
  const issues: ConfigIssue[] = [];
  return { config: parseAdaptiveConcurrency(raw, 'adaptiveConcurrency', issues), issues };
}

describe('adaptive concurrency: config', () => {
  it('has Envoy’s gradient-controller defaults, with a floor of 1 (per client, not per server)', () => {
    expect(parse(true).config).toBe(DEFAULT_ADAPTIVE_CONCURRENCY);
    expect(parse({}).config).toEqual(DEFAULT_ADAPTIVE_CONCURRENCY);
    expect(DEFAULT_ADAPTIVE_CONCURRENCY).toEqual({
      sampleWindowMs: 100,
      percentile: 50,
      minLimit: 1,
      maxLimit: 1000,
      maxWaitMs: 50,
      minRtt: {
        intervalMs: 60_000,
        jitterPercent: 15,
        requests: 50,
        bufferPercent: 25,
        concurrency: 1,
        fixedMs: undefined,
      },
    });
  });

  it('parses every option and reports bad ones by path', () => {
    const { config, issues } = parse({
      sampleWindow: '250ms',
      percentile: 90,
      minLimit: 5,
      maxLimit: 200,
      maxWait: '20ms',
      minRtt: { interval: '30s', jitter: 10, requests: 20, buffer: 50, concurrency: 'live', fixed: '15ms' },
    });
    expect(issues).toEqual([]);
    expect(config).toEqual({
      sampleWindowMs: 250,
      percentile: 90,
      minLimit: 5,
      maxLimit: 200,
      maxWaitMs: 20,
      minRtt: {
        intervalMs: 30_000,
        jitterPercent: 10,
        requests: 20,
        bufferPercent: 50,
        concurrency: 'live',
        fixedMs: 15,
      },
    });
    const bad = parse({
      sampleWindow: 'often',
      percentile: 101,
      minLimit: 0,
      maxLimit: 2.5,
      extra: 1,
      minRtt: { interval: '10ms', concurrency: 0, requests: -1, jitter: 'x' },
    }).issues.map((i) => i.path);
    expect(bad.sort()).toEqual([
      'adaptiveConcurrency.extra',
      'adaptiveConcurrency.maxLimit',
      'adaptiveConcurrency.minLimit',
      'adaptiveConcurrency.minRtt.concurrency',
      'adaptiveConcurrency.minRtt.interval',
      'adaptiveConcurrency.minRtt.jitter',
      'adaptiveConcurrency.minRtt.requests',
      'adaptiveConcurrency.percentile',
      'adaptiveConcurrency.sampleWindow',
    ]);
    expect(parse({ minLimit: 10, maxLimit: 5 }).issues).toEqual([
      { path: 'adaptiveConcurrency.maxLimit', message: 'must be >= minLimit (10), got 5' },
    ]);
    expect(parse('on').issues[0]?.path).toBe('adaptiveConcurrency');
  });
});

describe('adaptive concurrency: admission', () => {
  it('pins the limit while measuring minRTT, then follows the gradient', () => {
    let t = 0;
    const ac = new AdaptiveConcurrency(
      parse({ minLimit: 3, minRtt: { requests: 5, concurrency: 3 } }).config,
      () => t,
      () => 0.5,
    );
    const ep = states(1)[0] as EndpointState;
    expect(ac.wouldAdmit(ep)).toBe(true);
    expect(ep.concurrency).toBeUndefined(); // asking creates no state
    expect([ac.tryAcquire(ep), ac.tryAcquire(ep), ac.tryAcquire(ep), ac.tryAcquire(ep)]).toEqual([
      true,
      true,
      true,
      false,
    ]);
    const s = ep.concurrency;
    expect(s?.measuring).toBe(true);
    expect(s?.refused).toBe(1);
    expect(ac.wouldAdmit(ep)).toBe(false);
    // Fast failures and cancellations say nothing about latency: not sampled.
    ac.release(ep, 0.1, 'connect_failure');
    ac.release(ep, 0.1, 'cancelled');
    expect(s?.seen).toBe(0);
    for (let i = 0; i < 5; i++) {
      ac.tryAcquire(ep);
      t += 1;
      ac.release(ep, 10 + i, 'success'); // 10..14 ms: median 12
    }
    expect(s?.measuring).toBe(false);
    expect(s?.minRttMs).toBe(12);
    expect(s?.limit).toBe(3); // back to the limit before measuring (the floor at start)
    // Next measurement: interval + jitter × random = 60 s + 15% × 0.5 × 60 s.
    expect(s?.nextMeasurement).toBe(t + 60_000 + 4500);
    expect(s?.inFlight).toBe(1);
  });

  it('uses a fixed minRTT without measuring, and does not pin in live mode', () => {
    const fixed = new AdaptiveConcurrency(parse({ minRtt: { fixed: '20ms' } }).config, () => 0);
    const a = states(1)[0] as EndpointState;
    fixed.tryAcquire(a);
    expect(a.concurrency?.measuring).toBe(false);
    expect(a.concurrency?.minRttMs).toBe(20);
    const live = new AdaptiveConcurrency(
      parse({ minLimit: 8, minRtt: { concurrency: 'live' } }).config,
      () => 0,
    );
    const b = states(1)[0] as EndpointState;
    for (let i = 0; i < 8; i++) expect(live.tryAcquire(b)).toBe(true);
    expect(b.concurrency?.measuring).toBe(true);
    expect(live.tryAcquire(b)).toBe(false);
  });

  it('re-measures minRTT on schedule and after five windows at the floor', () => {
    let t = 0;
    const ac = new AdaptiveConcurrency(
      parse({ minRtt: { fixed: undefined, requests: 2, interval: '10s', jitter: 0 } }).config,
      () => t,
    );
    const ep = states(1)[0] as EndpointState;
    const call = (rtt: number) => {
      ac.tryAcquire(ep);
      t += 1;
      ac.release(ep, rtt, 'success');
    };
    call(10);
    call(10);
    const s = ep.concurrency;
    expect(s?.measurements).toBe(1);
    // Latency 10× the minimum: the limit sits at the floor; after 5 windows a new measurement.
    for (let w = 0; w < 5; w++) {
      t += 100;
      call(100);
    }
    expect(s?.measuring).toBe(true);
    call(100);
    call(100);
    expect(s?.minRttMs).toBe(100);
    expect(s?.measurements).toBe(2);
    // On schedule: 10 s after the measurement ended.
    t += 10_000;
    call(100);
    expect(s?.measuring).toBe(true);
  });
});

function p99(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(0.99 * (s.length - 1))] as number;
}

describe('adaptive concurrency: under load (simulated, fake clock)', () => {
  const phases = [
    { ms: 4000, serviceMs: 10 }, // 4 workers × 100/s = 400/s of capacity for 300/s offered
    { ms: 4000, serviceMs: 40 }, // the endpoint slows to 100/s: latency rises with concurrency
    { ms: 4000, serviceMs: 10 }, // and recovers
  ];

  it('lowers the limit when latency rises with concurrency, recovers, and never goes below the floor', () => {
    let t = 0;
    // Envoy's server-side floors (3), which this simulation of one caller was written for.
    const ac = new AdaptiveConcurrency(
      parse({ minLimit: 3, minRtt: { concurrency: 3 } }).config,
      () => t,
      () => 0.5,
    );
    const { trace, ep } = simulate(ac, phases, 0.3, (now) => {
      t = now;
    });
    const inPhase = (p: number, from: number) => trace.filter((x) => x.phase === p && x.t >= from);
    const limits = (xs: typeof trace) => xs.map((x) => x.limit);
    // Healthy (minRTT 10 ms, ~3 in flight): the limit has room above what is needed, and no more
    // (the caller-limited guard keeps it from climbing towards maxLimit).
    const healthy = limits(inPhase(0, 1000));
    expect(Math.min(...healthy)).toBeGreaterThanOrEqual(6);
    expect(Math.max(...healthy)).toBeLessThanOrEqual(12);
    // Slow: latency rose with concurrency; the limit fell to the floor, minRTT was measured again
    // (40 ms) and the limit settled near the 4 workers, keeping latency near the endpoint's own
    // instead of a growing queue.
    const slow = inPhase(1, 6000);
    expect(Math.max(...limits(slow))).toBeLessThanOrEqual(12);
    expect(p99(slow.map((x) => x.rtt))).toBeLessThan(200);
    expect(ep.concurrency?.measurements).toBeGreaterThanOrEqual(2);
    // Recovered: the limit grows back as latency falls.
    expect(Math.max(...limits(inPhase(2, 9000)))).toBeGreaterThan(Math.max(...limits(slow)));
    // Never below the floor.
    expect(Math.min(...limits(trace))).toBeGreaterThanOrEqual(3);
    // Without a limiter the same slow phase queues without bound.
    const { trace: unlimited } = simulate(undefined, phases, 0.3, () => {});
    expect(p99(unlimited.filter((x) => x.phase === 1 && x.t >= 6000).map((x) => x.rtt))).toBeGreaterThan(
      2000,
    );
  });
});

/**
 * A deterministic queueing simulation on a fake clock (1 ms steps): an endpoint with 4 workers,
 * each taking `serviceMs` per request, FIFO; requests arrive at a fixed rate; the limiter (on the
 * same clock) admits or diverts each (a diverted request would go to another endpoint).
 */
function simulate(
  ac: AdaptiveConcurrency | undefined,
  phases: ReadonlyArray<{ ms: number; serviceMs: number }>,
  ratePerMs: number,
  setNow: (t: number) => void,
) {
  const ep = states(1)[0] as EndpointState;
  const servers = 4;
  const free = new Float64Array(servers);
  const done: Array<{ end: number; rtt: number }> = [];
  const trace: Array<{ t: number; phase: number; limit: number; rtt: number }> = [];
  let t = 0;
  let acc = 0;
  let phaseEnd = 0;
  for (let p = 0; p < phases.length; p++) {
    const phase = phases[p] as { ms: number; serviceMs: number };
    phaseEnd += phase.ms;
    for (; t < phaseEnd; t++) {
      setNow(t);
      while (done.length > 0 && (done[0] as { end: number }).end <= t) {
        const d = done.shift() as { end: number; rtt: number };
        ac?.release(ep, d.rtt, 'success');
        trace.push({ t, phase: p, limit: ep.concurrency?.limit ?? Number.POSITIVE_INFINITY, rtt: d.rtt });
      }
      acc += ratePerMs;
      for (; acc >= 1; acc--) {
        if (ac !== undefined && !ac.tryAcquire(ep)) continue;
        let k = 0;
        for (let i = 1; i < servers; i++) if ((free[i] as number) < (free[k] as number)) k = i;
        const start = Math.max(t, free[k] as number);
        free[k] = start + phase.serviceMs;
        const end = start + phase.serviceMs;
        let at = done.length; // keep `done` sorted by end time
        while (at > 0 && (done[at - 1] as { end: number }).end > end) at--;
        done.splice(at, 0, { end, rtt: end - t });
      }
    }
  }
  return { ep, trace };
}

/** A stall source on a fake clock: the test says how long the loop was stalled in the last span. */
function fakeStalls() {
  const f = {
    stalled: 0,
    asked: [] as number[],
    holders: 0,
    stalledMs(spanMs: number): number {
      f.asked.push(spanMs);
      return Math.min(f.stalled, spanMs);
    },
    acquire(): () => void {
      f.holders++;
      return () => {
        f.holders--;
      };
    },
  };
  return f;
}

describe('adaptive concurrency: the client’s own event-loop stalls', () => {
  it('takes a stall off a sample, drops a sample that is half stall or more, and keeps the limit', () => {
    let t = 0;
    const stalls = fakeStalls();
    const ac = new AdaptiveConcurrency(
      parse({ minRtt: { fixed: '10ms' } }).config,
      () => t,
      () => 0.5,
      stalls,
    );
    const ep = states(1)[0] as EndpointState;
    expect(stalls.holders).toBe(0); // nothing measured before the first attempt
    ac.tryAcquire(ep);
    expect(stalls.holders).toBe(1);
    const s = ep.concurrency;
    // 30 ms measured, 10 of them the client's stall: the endpoint's share is 20 ms.
    stalls.stalled = 10;
    t = 101;
    ac.release(ep, 30, 'success');
    expect(stalls.asked).toEqual([30]);
    expect(s?.sampleRttMs).toBe(20);
    // 40 ms measured, 20 stalled: half of it is the client's, the sample says nothing.
    stalls.stalled = 20;
    ac.tryAcquire(ep);
    ac.release(ep, 40, 'success');
    expect(s?.discarded).toBe(1);
    expect(s?.count).toBe(0);
    // A timeout during a stall is not the endpoint's either; a fast failure is never asked about.
    ac.tryAcquire(ep);
    stalls.stalled = 250;
    ac.release(ep, 250, 'timeout');
    expect(s?.discarded).toBe(2);
    ac.tryAcquire(ep);
    ac.release(ep, 1, 'connect_failure');
    expect(stalls.asked).toEqual([30, 40, 250]);
    // No stall: the sample is the measured latency.
    stalls.stalled = 0;
    ac.tryAcquire(ep);
    t = 202;
    ac.release(ep, 40, 'success');
    expect(s?.sampleRttMs).toBe(40);
    expect(s?.gradient).toBeLessThan(1);
    ac.close();
    expect(stalls.holders).toBe(0);
  });

  it('does not finish a minRTT measurement on samples dropped for stalls', () => {
    const stalls = fakeStalls();
    const ac = new AdaptiveConcurrency(
      parse({ minRtt: { requests: 3 } }).config,
      () => 0,
      Math.random,
      stalls,
    );
    const ep = states(1)[0] as EndpointState;
    stalls.stalled = 100;
    for (let i = 0; i < 5; i++) {
      ac.tryAcquire(ep);
      ac.release(ep, 110, 'success');
    }
    expect(ep.concurrency?.measuring).toBe(true);
    expect(ep.concurrency?.discarded).toBe(5);
    stalls.stalled = 2;
    for (let i = 0; i < 3; i++) {
      ac.tryAcquire(ep);
      ac.release(ep, 12, 'success');
    }
    expect(ep.concurrency?.measuring).toBe(false);
    expect(ep.concurrency?.minRttMs).toBe(10);
    ac.close();
  });

  /**
   * A healthy endpoint (10 ms per request, as many in flight as it is sent) and an open-loop client
   * sending 300/s. After 2 s (minRTT measured: 10 ms) the client's own process gets the CPU 10 ms
   * of every 40 (a busy machine): nothing runs for 30 ms at a time — no heartbeat, no reads, no
   * sends — so answers are read up to 30 ms late and the arrivals of a stall go out together when
   * it ends. The process' heartbeat (`EventLoopLag`, on the same fake clock) sees each stall as an
   * overdue beat. Returns the limits after 3 s and the attempts the limiter refused.
   */
  function starvedClient(withStalls: boolean) {
    let t = 0;
    const lag = new EventLoopLag(10, 100, () => t);
    const ac = new AdaptiveConcurrency(
      parse({ minRtt: { requests: 20 } }).config,
      () => t,
      () => 0.5,
      withStalls ? lag : undefined,
    );
    const ep = states(1)[0] as EndpointState;
    const release = lag.acquire();
    const pending: Array<{ end: number; start: number }> = [];
    const limits: number[] = [];
    let lastBeat = 0;
    let due = 0;
    for (t = 0; t < 10_000; t++) {
      due += 0.3;
      if (t >= 2000 && t % 40 >= 10) continue;
      if (t - lastBeat >= 10) {
        lag.beat();
        lastBeat = t;
      }
      for (let i = pending.length - 1; i >= 0; i--) {
        const p = pending[i] as { end: number; start: number };
        if (p.end > t) continue;
        pending.splice(i, 1);
        ac.release(ep, t - p.start, 'success');
      }
      // What is over the limit would go to another endpoint.
      for (; due >= 1; due--) if (ac.tryAcquire(ep)) pending.push({ start: t, end: t + 10 });
      if (t > 3000) limits.push(ep.concurrency?.limit ?? 0);
    }
    release();
    ac.close();
    return { limits, state: ep.concurrency as EndpointConcurrency };
  }

  it('keeps a healthy endpoint’s limit while the client itself is starved (and cuts it without)', () => {
    const blind = starvedClient(false);
    const aware = starvedClient(true);
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
    // Blind to its stalls, the limiter reads them as the endpoint's queueing: the limit sits near
    // the floor and thousands of attempts are refused (they would fail or go elsewhere) although
    // the endpoint is idle. Aware of them, it keeps the limit the burst after a stall needs.
    expect(median(blind.limits)).toBeLessThanOrEqual(2);
    expect(blind.state.refused).toBeGreaterThan(1000);
    expect(median(aware.limits)).toBeGreaterThanOrEqual(8);
    expect(aware.state.refused * 5).toBeLessThan(blind.state.refused);
    expect(aware.state.discarded).toBeGreaterThan(0);
    expect(aware.state.minRttMs).toBe(10);
  });

  it('is measured by the mesh with the process’ heartbeat, from a limiter’s first use to its close', async () => {
    const config = parseConfig({
      services: { svc: { endpoints: ['127.0.0.1:1'], adaptiveConcurrency: true } },
    });
    const fake = new Mesh(config, { now: () => 0, logger: false });
    // A fake clock is not the heartbeat's: no stalls are measured against it.
    expect(fake.services()[0]?.localStalls).toBeUndefined();
    await fake.close();
    const mesh = new Mesh(config, { logger: false });
    const rt = mesh.services()[0];
    expect(rt?.localStalls).toBe(processEventLoopLag());
    const heartbeat = processEventLoopLag();
    expect(heartbeat.running).toBe(false);
    const limiter = rt?.resilience.concurrency as AdaptiveConcurrency;
    await mesh.ready();
    limiter.tryAcquire(rt?.endpoints[0] as EndpointState);
    expect(heartbeat.running).toBe(true);
    await mesh.close();
    expect(heartbeat.running).toBe(false);
  });
});
