import { describe, expect, it } from 'vitest';
import { type EndpointState, type ServiceRuntime, slowStartFactor } from '../src/index.js';
import { countPicks, ep, runtime } from './lb-helpers.js';

function clock(start = 0) {
  const c = { t: start, now: () => c.t };
  return c;
}

function shareOf(rt: ServiceRuntime, id: string, n = 20_000): number {
  let hits = 0;
  for (let i = 0; i < n; i++) {
    const r = rt.pick({ attempt: 0 });
    if (r.kind === 'pick' && r.endpoint.id === id) hits++;
  }
  return hits / n;
}

describe('slow start', () => {
  const C = '10.0.0.1:1002';

  it('ramps a new endpoint’s weight over the window (Envoy formula) with a fake clock', () => {
    const c = clock(100_000);
    const rt = runtime(
      { lb: 'weighted_round_robin', balancing: { slowStart: { window: '10s', minWeightPercent: 10 } } },
      { now: c.now },
    );
    rt.applyUpdate({ endpoints: [ep(1000), ep(1001)] });
    c.t = 200_000; // the first two are long out of their window
    rt.applyUpdate({ endpoints: [ep(1000), ep(1001), ep(1002)] });
    expect(shareOf(rt, C)).toBeCloseTo(0.1 / 2.1, 2);
    c.t += 5000; // pick() notices the pending ramp step and rebuilds by itself
    expect(shareOf(rt, C)).toBeCloseTo(0.5 / 2.5, 2);
    c.t += 2500;
    expect(shareOf(rt, C)).toBeCloseTo(0.75 / 2.75, 2);
    c.t += 2500;
    expect(shareOf(rt, C)).toBeCloseTo(1 / 3, 2);
  });

  it('aggression bends the curve and minWeightPercent floors it', () => {
    const cfg = { windowMs: 10_000, aggression: 2, minWeightPercent: 10 };
    expect(slowStartFactor(2500, cfg)).toBeCloseTo(0.5, 5);
    expect(slowStartFactor(0, { ...cfg, aggression: 1 })).toBeCloseTo(0.1, 5);
    expect(slowStartFactor(0, { ...cfg, aggression: 1, minWeightPercent: 50 })).toBeCloseTo(0.5, 5);
    expect(slowStartFactor(10_000, cfg)).toBe(1);
    expect(slowStartFactor(0, { ...cfg, windowMs: 0 })).toBe(1);
  });

  it('starts again when active health checks bring an endpoint back', () => {
    const c = clock(0);
    const rt = runtime(
      { lb: 'weighted_round_robin', balancing: { slowStart: { window: '10s' } } },
      { now: c.now },
    );
    rt.applyUpdate({ endpoints: [ep(1000), ep(1001)] });
    c.t = 60_000;
    const st = rt.endpoint('10.0.0.1:1001') as EndpointState;
    st.activeHealth = 'unhealthy';
    rt.rebuild();
    expect(shareOf(rt, st.id, 100)).toBe(0);
    c.t = 70_000;
    st.activeHealth = 'healthy';
    rt.rebuild();
    expect(st.lbWeight).toBeCloseTo(0.1, 5);
    expect(shareOf(rt, st.id)).toBeCloseTo(0.1 / 1.1, 2);
  });
});

describe('peak_ewma', () => {
  /** Sequential requests on a fake clock; `latency(port)` gives each endpoint's response time. */
  function drive(rt: ServiceRuntime, c: { t: number }, n: number, latency: (port: number) => number) {
    const counts = new Map<number, number>();
    for (let i = 0; i < n; i++) {
      const r = rt.pick({ attempt: 0 });
      if (r.kind !== 'pick') throw new Error(r.kind);
      const st = r.endpoint;
      const start = rt.startAttempt(st);
      c.t += latency(st.endpoint.port);
      rt.endAttempt(st, start, 0, 'success', 200, undefined, undefined, 'http');
      counts.set(st.endpoint.port, (counts.get(st.endpoint.port) ?? 0) + 1);
    }
    return counts;
  }

  it('prefers fast endpoints and recovers after a slow one turns fast', () => {
    const c = clock(1000);
    const rt = runtime({ lb: 'peak_ewma' }, { now: c.now });
    rt.applyUpdate({ endpoints: [ep(1000), ep(1001), ep(1002)] });
    let slow = true;
    const latency = (port: number) => (port === 1002 && slow ? 200 : 10);
    drive(rt, c, 500, latency); // warm up
    const during = drive(rt, c, 3000, latency);
    expect((during.get(1002) ?? 0) / 3000).toBeLessThan(0.02);
    slow = false;
    drive(rt, c, 9000, latency); // ~90 s of traffic: the old peak decays, a probe finds it fast
    const after = drive(rt, c, 6000, latency);
    expect(Math.abs((after.get(1002) ?? 0) / 6000 - 1 / 3)).toBeLessThan(0.05);
  });

  it('costs never-observed endpoints like an average one: neither starved nor flooded', () => {
    const c = clock(1000);
    const rt = runtime({ lb: 'peak_ewma' }, { now: c.now });
    rt.applyUpdate({ endpoints: [ep(1000), ep(1001)] });
    // The fleet answers in 2 ms, far below the 30 ms default RTT.
    drive(rt, c, 200, () => 2);
    rt.applyUpdate({ endpoints: [ep(1000), ep(1001), ep(1002)] });
    const counts = drive(rt, c, 3000, () => 2);
    const share = (counts.get(1002) ?? 0) / 3000;
    expect(share).toBeGreaterThan(0.25);
    expect(share).toBeLessThan(0.42);
  });

  it('counts requests in flight: a stalled endpoint stops getting traffic before it answers', () => {
    const c = clock(1000);
    const rt = runtime({ lb: 'peak_ewma' }, { now: c.now });
    rt.applyUpdate({ endpoints: [ep(1000), ep(1001)] });
    drive(rt, c, 100, () => 10);
    const stalled = rt.endpoint('10.0.0.1:1000') as EndpointState;
    stalled.active = 20; // 20 requests stuck, no latency observed yet
    const counts = countPicks(rt.picker, 1000);
    expect(counts.get(stalled.id)).toBeUndefined();
  });

  it('gives a server that took one latency spike its traffic back within a few rounds, at any rate (concurrency 1)', () => {
    // Three equal servers answering in 0.8–1.2 ms, called one at a time: the whole run lasts
    // well under a second of the fake clock, far less than the 10 s decay. One server answers its
    // 10th call in `spike` ms (a GC pause, a descheduled process).
    const run = (spike: number, seed: number) => {
      const c = clock(1000);
      const rt = runtime({ lb: 'peak_ewma' }, { now: c.now });
      rt.applyUpdate({ endpoints: [ep(1000), ep(1001), ep(1002)] });
      let x = seed;
      const jitter = () => {
        x = (x * 1103515245 + 12345) % 2147483648; // deterministic: no luck involved
        return 0.8 + (0.4 * x) / 2147483648;
      };
      let call = 0;
      let calls1002 = 0;
      let spikedAt = -1;
      let backAt = -1; // the first call after the spike that went to the spiked server
      const counts = drive(rt, c, 300, (port) => {
        call++;
        if (port !== 1002) return jitter();
        calls1002++;
        if (calls1002 === 10) {
          spikedAt = call;
          return spike;
        }
        if (spikedAt > 0 && backAt < 0) backAt = call;
        return jitter();
      });
      return { counts, gap: backAt - spikedAt };
    };
    for (const spike of [40, 300]) {
      for (const seed of [1, 2, 3]) {
        const { counts, gap } = run(spike, seed);
        // Avoided for a few rounds (the span, 4 × 3 samples, doubled for a sample over twice
        // the baseline), then back; Finagle's time decay alone kept it out for the whole run.
        expect(gap).toBeGreaterThan(3);
        expect(gap).toBeLessThanOrEqual(40);
        // Each server keeps at least 15% of the 300 calls (issue 13), the spiked one included.
        for (const port of [1000, 1001, 1002]) expect(counts.get(port) ?? 0).toBeGreaterThanOrEqual(45);
      }
    }
  });

  /**
   * Sequences seen in `pnpm bench -- --only grpc`'s balance scenario (three equal loopback gRPC
   * servers answering in ~0.3 ms, 300 sequential calls; traced with the estimates after each
   * attempt): each server must keep at least 15% of the calls (issue 13).
   */
  describe('three equal servers at concurrency 1 keep their share after what a quiet machine does', () => {
    const loopback = (seed: number) => {
      let x = seed;
      return () => {
        x = (x * 1103515245 + 12345) % 2147483648; // deterministic: no luck involved
        return 0.28 + (0.07 * x) / 2147483648;
      };
    };
    const run = (latency: (call: number, port: number, nth: number) => number | undefined, seed: number) => {
      const c = clock(1000);
      const rt = runtime({ lb: 'peak_ewma' }, { now: c.now });
      rt.applyUpdate({ endpoints: [ep(1000), ep(1001), ep(1002)] });
      const jitter = loopback(seed);
      const nth = new Map<number, number>();
      let call = 0;
      return drive(rt, c, 300, (port) => {
        const k = (nth.get(port) ?? 0) + 1;
        nth.set(port, k);
        return latency(++call, port, k) ?? jitter();
      });
    };

    it.each([1, 2, 3, 4, 5])(
      "a GC pause of this process in a server's second call (the one that seeds its baseline) (seed %i)",
      (seed) => {
        // Seen: s1 answered its first call in 0.30 ms and its second in 15.9 ms (a 14.9 ms
        // scavenge in the client), which became its baseline: 2 calls of 300.
        const counts = run((_call, port, nth) => (port === 1001 && nth === 2 ? 15.9 : undefined), seed);
        for (const port of [1000, 1001, 1002]) expect(counts.get(port) ?? 0).toBeGreaterThanOrEqual(45);
      },
    );

    it.each([1, 2, 3, 4, 5])(
      'a loaded stretch that slows every server, then one long answer (seed %i)',
      (seed) => {
        // Seen: calls 10–50 answered in 1–3 ms by every server (another process took the
        // CPUs), s1's own samples were each over twice its 0.33 ms baseline, five in a row,
        // then one took 25 ms: its peak was to fade over 12 × 2^5 samples, and s1 got 11 calls.
        let wobble = seed;
        const counts = run((call, port) => {
          if (call === 42) return 25;
          if (call < 10 || call > 50) return undefined;
          wobble = (wobble * 7 + port) % 11;
          return 1 + wobble / 5;
        }, seed);
        for (const port of [1000, 1001, 1002]) expect(counts.get(port) ?? 0).toBeGreaterThanOrEqual(45);
      },
    );
  });

  it('keeps a server that stays slow out: each probe confirms it and raises its baseline', () => {
    const c = clock(1000);
    const rt = runtime({ lb: 'peak_ewma' }, { now: c.now });
    rt.applyUpdate({ endpoints: [ep(1000), ep(1001), ep(1002)] });
    drive(rt, c, 300, () => 1); // warm: every server answers in 1 ms
    const slow = drive(rt, c, 3000, (port) => (port === 1002 ? 40 : 1));
    // Probes only: the 40x slower server gets a few of the 3,000 calls (about 3 s of traffic).
    expect(slow.get(1002) ?? 0).toBeGreaterThan(0);
    expect((slow.get(1002) ?? 0) / 3000).toBeLessThan(0.01);
  });

  it('failures raise the estimate but never lower it', () => {
    const c = clock(1000);
    const rt = runtime({ lb: 'peak_ewma' }, { now: c.now });
    rt.applyUpdate({ endpoints: [ep(1000)] });
    const st = rt.endpoint('10.0.0.1:1000') as EndpointState;
    let s = rt.startAttempt(st);
    c.t += 100;
    rt.endAttempt(st, s, 0, 'success', 200, undefined, undefined, 'http');
    s = rt.startAttempt(st);
    c.t += 1;
    rt.endAttempt(st, s, 0, 'http_error', 503, undefined, undefined, 'http');
    expect(st.ewmaMs).toBe(100);
  });
});

describe('slow-backend scenario on a fake clock (10 in flight, 1 of 10 backends 16x slower, 200 ms deadline)', () => {
  /** Closed loop: each completion sends the next request. Returns requests the slow backend got. */
  function simulate(policy: string): { total: number; slow: number } {
    const c = clock(0);
    const rt = runtime({ lb: policy }, { now: c.now });
    rt.applyUpdate({ endpoints: Array.from({ length: 10 }, (_, i) => ep(1000 + i)) });
    const inflight: Array<{ end: number; st: EndpointState; start: number; timeout: boolean }> = [];
    let total = 0;
    let slow = 0;
    const send = () => {
      const r = rt.pick({ attempt: 0 });
      if (r.kind !== 'pick') throw new Error(r.kind);
      const st = r.endpoint;
      const isSlow = st.endpoint.port === 1009 && c.t >= 1000 && c.t < 16_000;
      const latency = (isSlow ? 400 : 25) * (0.8 + Math.random() * 0.4);
      inflight.push({
        end: c.t + Math.min(latency, 200),
        st,
        start: rt.startAttempt(st),
        timeout: latency > 200,
      });
      total++;
      if (isSlow) slow++;
    };
    for (let w = 0; w < 10; w++) send();
    while (c.t < 31_000) {
      inflight.sort((a, b) => a.end - b.end);
      const e = inflight.shift() as (typeof inflight)[number];
      c.t = e.end;
      rt.endAttempt(e.st, e.start, 0, e.timeout ? 'timeout' : 'success', 200, undefined, undefined, 'http');
      send();
    }
    return { total, slow };
  }

  it('peak_ewma sends the slow backend a handful of requests, least_request many times more', () => {
    const pe = simulate('peak_ewma');
    const lr = simulate('least_request');
    expect(pe.total).toBeGreaterThan(10_000);
    // Each request the slow backend gets misses the deadline: peak_ewma's are the first few
    // before its estimate is raised, and at most a probe or two as it decays.
    expect(pe.slow).toBeLessThan(20);
    expect(pe.slow / pe.total).toBeLessThan(0.001);
    expect(lr.slow).toBeGreaterThan(5 * pe.slow);
  });
});

describe('peak_ewma failure penalty (an endpoint that fails fast must not look fast)', () => {
  /**
   * Closed loop on a fake clock, `concurrency` requests in flight over three endpoints that answer
   * in ~5 ms; endpoint 1002 answers 10% of its requests with a 503 at once (0.3 ms). Returns the
   * attempts each endpoint got.
   */
  function simulate(config: Record<string, unknown>, concurrency: number, seconds = 60): Map<number, number> {
    const c = clock(0);
    const rt = runtime({ lb: { policy: 'peak_ewma', ...config }, outlierDetection: false }, { now: c.now });
    rt.applyUpdate({ endpoints: [ep(1000), ep(1001), ep(1002)] });
    const counts = new Map<number, number>();
    const inflight: Array<{ end: number; st: EndpointState; start: number; failed: boolean }> = [];
    let draw = 0;
    const send = () => {
      const r = rt.pick({ attempt: 0 });
      if (r.kind !== 'pick') throw new Error(r.kind);
      const st = r.endpoint;
      const port = st.endpoint.port;
      counts.set(port, (counts.get(port) ?? 0) + 1);
      // One in ten requests to the flaky endpoint fails, from a fixed cycle (no luck involved).
      const failed = port === 1002 && draw++ % 10 === 0;
      const latency = failed ? 0.3 : 5 * (0.9 + Math.random() * 0.2);
      inflight.push({ end: c.t + latency, st, start: rt.startAttempt(st), failed });
    };
    for (let w = 0; w < concurrency; w++) send();
    while (c.t < seconds * 1000) {
      inflight.sort((a, b) => a.end - b.end);
      const e = inflight.shift() as (typeof inflight)[number];
      c.t = e.end;
      const status = e.failed ? 503 : 200;
      rt.endAttempt(
        e.st,
        e.start,
        0,
        e.failed ? 'http_error' : 'success',
        status,
        undefined,
        undefined,
        'http',
      );
      send();
    }
    return counts;
  }

  it.each([1, 8])(
    'an endpoint answering one request in ten with a fast 503 gets less traffic than each healthy one (concurrency %i)',
    (concurrency) => {
      const counts = simulate({}, concurrency);
      const flaky = counts.get(1002) ?? 0;
      expect(flaky).toBeLessThan(counts.get(1000) ?? 0);
      expect(flaky).toBeLessThan(counts.get(1001) ?? 0);
      // Without the penalty the same endpoint is not avoided (it can even look faster).
      const off = simulate({ failurePenalty: 0 }, concurrency);
      const offShare = (off.get(1002) ?? 0) / [...off.values()].reduce((a, b) => a + b, 0);
      const share = flaky / [...counts.values()].reduce((a, b) => a + b, 0);
      expect(offShare).toBeGreaterThan(0.3);
      expect(share).toBeLessThan(offShare - 0.05);
    },
  );

  it('keeps the failure rate per attempt (fast failures weigh fully), fading with time', () => {
    const c = clock(1000);
    const rt = runtime({ lb: 'peak_ewma' }, { now: c.now });
    rt.applyUpdate({ endpoints: [ep(1000)] });
    const st = rt.endpoint('10.0.0.1:1000') as EndpointState;
    const once = (status: number) => {
      const s = rt.startAttempt(st);
      c.t += status === 503 ? 0.3 : 10; // the failures are fast
      rt.endAttempt(st, s, 0, status >= 500 ? 'http_error' : 'success', status, undefined, undefined, 'http');
    };
    // One attempt in ten fails: the rate is about 0.1, however fast the failures are.
    for (let i = 0; i < 1000; i++) once(i % 10 === 0 ? 503 : 200);
    expect(st.failRate).toBeGreaterThan(0.06);
    expect(st.failRate).toBeLessThan(0.14);
    c.t += 20_000; // two decay constants later, one success brings it down
    once(200);
    expect(st.failRate).toBeLessThan(0.02);
    // A 500 from the application or a 4xx is an answer: the rate does not rise.
    const before = st.failRate;
    for (let i = 0; i < 20; i++) once(i % 2 ? 500 : 404);
    expect(st.failRate).toBeLessThanOrEqual(before);
  });
});

describe('Retry-After penalty', () => {
  it('avoids an endpoint that answered 429/503 with Retry-After until the penalty ends', () => {
    const c = clock(0);
    const rt = runtime({ lb: 'round_robin' }, { now: c.now });
    rt.applyUpdate({ endpoints: [ep(1000), ep(1001), ep(1002)] });
    const st = rt.endpoint('10.0.0.1:1000') as EndpointState;
    rt.penalize(st, 503, 5000);
    expect(shareOf(rt, st.id, 300)).toBe(0);
    c.t = 4999;
    expect(shareOf(rt, st.id, 300)).toBe(0);
    c.t = 5000;
    expect(shareOf(rt, st.id, 300)).toBeCloseTo(1 / 3, 1);
    rt.penalize(st, 429, 1000);
    expect(shareOf(rt, st.id, 300)).toBe(0);
  });

  it('ignores other statuses and responses without Retry-After (unless a default is set), and caps it', () => {
    const c = clock(0);
    const rt = runtime({ lb: 'round_robin' }, { now: c.now });
    rt.applyUpdate({ endpoints: [ep(1000), ep(1001)] });
    const st = rt.endpoint('10.0.0.1:1000') as EndpointState;
    rt.penalize(st, 500, 5000);
    rt.penalize(st, 503, undefined);
    expect(st.penaltyUntil).toBe(0);
    rt.penalize(st, 503, 3_600_000);
    expect(st.penaltyUntil).toBe(30_000);

    const withDefault = runtime(
      { lb: 'round_robin', balancing: { penalty: { default: '2s', max: '10s' } } },
      { now: c.now },
    );
    withDefault.applyUpdate({ endpoints: [ep(1000), ep(1001)] });
    const w = withDefault.endpoint('10.0.0.1:1000') as EndpointState;
    withDefault.penalize(w, 429, undefined);
    expect(w.penaltyUntil).toBe(2000);
    const off = runtime({ lb: 'round_robin', balancing: { penalty: false } }, { now: c.now });
    off.applyUpdate({ endpoints: [ep(1000), ep(1001)] });
    const o = off.endpoint('10.0.0.1:1000') as EndpointState;
    off.penalize(o, 503, 5000);
    expect(o.penaltyUntil).toBe(0);
  });

  it('never leaves a service with nothing: when every endpoint sheds, panic mode still serves', () => {
    const c = clock(0);
    const rt = runtime({ lb: 'round_robin' }, { now: c.now });
    rt.applyUpdate({ endpoints: [ep(1000), ep(1001)] });
    for (const st of rt.endpoints) rt.penalize(st, 503, 5000);
    expect(rt.panic).toBe(true);
    expect(rt.pick({ attempt: 0 }).kind).toBe('pick');
  });
});
