import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ErrorCodes, isMeshErrorCode } from '../src/index.js';
import { FakeCall, runtimes, service } from './call-helpers.js';

/**
 * The pipeline's load-aware parts against a scripted transport: what it does with an answer an
 * overloaded server shed (`x-meshlet-shed`), and how adaptive concurrency admits attempts.
 */
describe('the call pipeline under load', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    for (const rt of runtimes.splice(0)) rt.close();
    vi.useRealTimers();
  });

  describe('a shed answer', () => {
    it('goes elsewhere at once, whatever the method, and backs the endpoint off without counting against it', () => {
      const { rt, retries, attempts } = service({
        lb: 'round_robin',
        circuitBreaker: { volumeThreshold: 1 },
      });
      const call = new FakeCall(rt, 'http', false, 'POST');
      call.begin();
      const shedding = call.last;
      call.connected(shedding);
      // 503, Retry-After: 1 s, shed: the pipeline retries (refused-stream, Istio's default policy).
      expect(call.response(shedding, 503, 1000, true)).toBe(false);
      expect(call.complete(shedding)).toBe(false);
      expect(retries).toMatchObject([{ reason: 'refused-stream', allowed: true }]);
      // The retry waits the usual jittered backoff (<= 25 ms), not the Retry-After.
      vi.advanceTimersByTime(25);
      expect(call.sent).toHaveLength(2);
      expect(call.last.endpoint).not.toBe(shedding.endpoint);
      expect(call.answer(200)).toBe(true);
      // Not a failure of the endpoint: no gateway error for the breaker, outlier detection or the
      // balancer, no failure count; but it is avoided for its Retry-After.
      expect(attempts[0]).toMatchObject({ outcome: 'overloaded', status: 503, verdict: 'ignore' });
      expect(shedding.endpoint.failures).toBe(0);
      expect(shedding.endpoint.failRate).toBe(0);
      expect(rt.resilience.breaker?.stats()).toMatchObject({ state: 'closed', failures: 0 });
      expect(shedding.endpoint.penaltyUntil).toBe(Date.now() - 25 + 1000);
      for (let i = 0; i < 6; i++) {
        const c = new FakeCall(rt, 'http', true);
        c.begin();
        expect(c.last.endpoint).not.toBe(shedding.endpoint);
        c.answer(200);
      }
    });

    it('differs from a plain 503 with Retry-After, a gateway error retried after the Retry-After', () => {
      const { rt, retries, attempts } = service({ lb: 'round_robin' });
      const call = new FakeCall(rt, 'http', true);
      call.begin();
      const first = call.last;
      call.connected(first);
      expect(call.response(first, 503, 1000)).toBe(false);
      call.complete(first);
      expect(retries).toMatchObject([{ reason: '503', allowed: true }]);
      vi.advanceTimersByTime(999);
      expect(call.sent).toHaveLength(1);
      vi.advanceTimersByTime(1);
      expect(call.sent).toHaveLength(2);
      expect(attempts[0]).toMatchObject({ outcome: 'http_error', verdict: 'gateway_error' });
      expect(first.endpoint.failures).toBe(1);
    });

    it('is delivered as it is when no retry is allowed, still not an endpoint failure', () => {
      const { rt, requests, attempts } = service({ retry: false });
      const call = new FakeCall(rt, 'http', true);
      call.begin();
      const a = call.last;
      call.connected(a);
      expect(call.response(a, 503, 1000, true)).toBe(true);
      expect(call.complete(a)).toBe(true);
      expect(requests).toMatchObject([{ outcome: 'overloaded', status: 503, attempts: 1 }]);
      expect(attempts[0]).toMatchObject({ verdict: 'ignore' });
      expect(a.endpoint.penaltyUntil).toBe(Date.now() + 1000);
    });

    it('penalizes a gRPC shed (RESOURCE_EXHAUSTED) too, unless the penalty box is off', () => {
      const { rt } = service({ retry: false });
      const call = new FakeCall(rt, 'grpc', true);
      call.begin();
      call.connected(call.last);
      call.response(call.last, 8, 2000, true);
      call.complete(call.last);
      expect(call.last.endpoint.penaltyUntil).toBe(Date.now() + 2000);
      const off = service({ retry: false, balancing: { penalty: false } }).rt;
      const c2 = new FakeCall(off, 'grpc', true);
      c2.begin();
      c2.connected(c2.last);
      c2.response(c2.last, 8, 2000, true);
      c2.complete(c2.last);
      expect(c2.last.endpoint.penaltyUntil).toBe(0);
    });
  });

  describe('adaptive concurrency', () => {
    // A fixed minRTT: the limit starts at the floor (3) without a measurement.
    const limited = { adaptiveConcurrency: { minLimit: 3, minRtt: { fixed: '5ms' } }, lb: 'round_robin' };

    it('caps the attempts in flight to a slow endpoint and sends the excess elsewhere', () => {
      const { rt } = service(limited, 2);
      const [slow, fast] = rt.endpoints;
      const calls: FakeCall[] = [];
      for (let i = 0; i < 20; i++) {
        const c = new FakeCall(rt, 'http', true);
        c.begin();
        calls.push(c);
        // The fast endpoint answers at once; the slow one never does.
        if (c.last.endpoint === fast) c.answer(200);
      }
      expect(slow?.active).toBe(3);
      expect(slow?.concurrency).toMatchObject({ inFlight: 3, limit: 3 });
      expect(calls.filter((c) => c.last.endpoint === fast)).toHaveLength(17);
      // Round robin without the limiter would have sent the slow endpoint half of them.
      const { rt: plain } = service({ lb: 'round_robin' }, 2);
      let toSlow = 0;
      for (let i = 0; i < 20; i++) {
        const c = new FakeCall(plain, 'http', true);
        c.begin();
        if (c.last.endpoint === plain.endpoints[0]) toSlow++;
        else c.answer(200);
      }
      expect(toSlow).toBe(10);
    });

    it('lets a call wait briefly when every endpoint is at its limit, then fails it without sending', async () => {
      const { rt, requests } = service(
        { ...limited, adaptiveConcurrency: { ...limited.adaptiveConcurrency, maxWait: '40ms' } },
        1,
      );
      const calls = Array.from({ length: 5 }, () => {
        const c = new FakeCall(rt, 'http', true);
        c.begin();
        return c;
      });
      expect(calls.map((c) => c.sent.length)).toEqual([1, 1, 1, 0, 0]);
      expect(rt.resilience.concurrency?.waiting).toBe(2);
      // One attempt ends: the oldest waiting call goes (on the next tick).
      calls[0]?.answer(200);
      await vi.advanceTimersByTimeAsync(0);
      expect(calls.map((c) => c.sent.length)).toEqual([1, 1, 1, 1, 0]);
      // The last one waits out its 40 ms and fails with OVERLOADED, having sent nothing.
      await vi.advanceTimersByTimeAsync(40);
      expect(isMeshErrorCode(calls[4]?.delivered, ErrorCodes.OVERLOADED)).toBe(true);
      expect(calls[4]?.delivered?.message).toMatch(/adaptive concurrency limit/);
      expect(requests.at(-1)).toMatchObject({ outcome: 'overloaded', attempts: 0 });
      expect(rt.resilience.concurrency?.waiting).toBe(0);
      // never below the floor: three in flight still
      expect(rt.endpoints[0]?.concurrency?.inFlight).toBe(3);
    });

    it('adds the client’s own event-loop stall during a wait to the wait', async () => {
      const stall = { ms: 0, stalledMs: (span: number) => Math.min(stall.ms, span), acquire: () => () => {} };
      const { rt } = service(
        { ...limited, adaptiveConcurrency: { ...limited.adaptiveConcurrency, maxWait: '40ms' } },
        1,
        { localStalls: stall },
      );
      const calls = Array.from({ length: 4 }, () => {
        const c = new FakeCall(rt, 'http', true);
        c.begin();
        return c;
      });
      expect(calls[3]?.sent).toHaveLength(0);
      // 30 of the 40 ms the loop could not run (the answer that frees a slot may be unread yet):
      // the call waits 30 ms more instead of failing.
      stall.ms = 30;
      await vi.advanceTimersByTimeAsync(40);
      expect(calls[3]?.delivered).toBeUndefined();
      expect(rt.resilience.concurrency?.waiting).toBe(1);
      stall.ms = 0;
      calls[0]?.answer(200);
      await vi.advanceTimersByTimeAsync(0);
      expect(calls[3]?.sent).toHaveLength(1);
      // Without a stall the wait ends on time (the test above): here a second waiter fails after
      // its own 40 ms.
      const next = new FakeCall(rt, 'http', true);
      next.begin();
      await vi.advanceTimersByTimeAsync(40);
      expect(isMeshErrorCode(next.delivered, ErrorCodes.OVERLOADED)).toBe(true);
    });

    it('does not wait past the call’s deadline, and a cancelled waiter leaves the queue', async () => {
      const { rt } = service({ ...limited, timeout: '10ms' }, 1);
      for (let i = 0; i < 3; i++) new FakeCall(rt, 'http', true).begin();
      const late = new FakeCall(rt, 'http', true);
      late.begin();
      const cancelled = new FakeCall(rt, 'http', true);
      cancelled.begin();
      cancelled.cancel();
      expect(isMeshErrorCode(cancelled.delivered, ErrorCodes.CANCELLED)).toBe(true);
      expect(rt.resilience.concurrency?.waiting).toBe(1);
      await vi.advanceTimersByTimeAsync(10);
      expect(isMeshErrorCode(late.delivered, ErrorCodes.TIMEOUT)).toBe(true);
      expect(late.sent).toHaveLength(0);
      expect(rt.resilience.concurrency?.waiting).toBe(0);
    });

    it('learns from latency: a limit that grows for a fast endpoint', () => {
      const { rt } = service(limited, 1);
      const ep = rt.endpoints[0];
      for (let round = 0; round < 30; round++) {
        const batch = Array.from({ length: 20 }, () => {
          const c = new FakeCall(rt, 'http', true);
          c.begin();
          return c;
        });
        vi.advanceTimersByTime(4); // answers in 4 ms, under the fixed 5 ms minRTT
        for (const c of batch) if (c.sent.length > 0) c.answer(200);
      }
      expect(ep?.concurrency?.limit).toBeGreaterThan(3);
      expect(ep?.concurrency?.inFlight).toBe(0);
    });
  });
});
