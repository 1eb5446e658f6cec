import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { AttemptFailures } from '../src/extend.js';
import {
  type CallHook,
  MeshEvents,
  makeEndpoint,
  parseConfig,
  runWithDeadline,
  ServiceRuntime,
} from '../src/index.js';
import { type FakeAttempt, FakeCall, runtimes, service } from './call-helpers.js';

describe('the call pipeline', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    for (const rt of runtimes.splice(0)) rt.close();
    vi.useRealTimers();
  });

  it('retries a request that never left the client whatever its method, on another endpoint', () => {
    const { rt, retries, requests } = service();
    const call = new FakeCall(rt, 'http', false, 'POST');
    call.begin();
    const first = call.last.endpoint;
    call.fail(AttemptFailures.connect, false);
    expect(retries).toMatchObject([{ reason: 'connect-failure', allowed: true, attempt: 1 }]);
    vi.runOnlyPendingTimers(); // the backoff
    expect(call.sent).toHaveLength(2);
    expect(call.last.endpoint).not.toBe(first);
    expect(call.answer(200)).toBe(true);
    expect(requests).toMatchObject([{ outcome: 'success', status: 200, attempts: 2, transport: 'http' }]);
    expect(call.delivered).toBeUndefined();
  });

  it("does not retry a request that may have been processed unless idempotent, nor a reset by Istio's default", () => {
    const { rt, retries } = service();
    const post = new FakeCall(rt, 'http', false, 'POST');
    post.begin();
    post.fail(AttemptFailures.reset);
    expect(post.delivered?.message).toBe('maybe-processed');
    const get = new FakeCall(rt, 'http', true);
    get.begin();
    get.fail(AttemptFailures.reset);
    expect(get.sent).toHaveLength(1);
    expect(get.delivered).toBeDefined();
    expect(retries).toEqual([]);

    const { rt: rt2, retries: r2 } = service({ retry: { on: ['reset'] } });
    const again = new FakeCall(rt2, 'http', true);
    again.begin();
    again.fail(AttemptFailures.reset);
    vi.runOnlyPendingTimers();
    expect(again.sent).toHaveLength(2);
    expect(r2.map((r) => r.reason)).toEqual(['reset']);
    // A body that cannot be replayed stops it, even for an idempotent request.
    const oneShot = new FakeCall(rt2, 'http', true);
    oneShot.replay = false;
    oneShot.begin();
    oneShot.fail(AttemptFailures.reset);
    expect(oneShot.sent).toHaveLength(1);
    expect(oneShot.delivered).toBeDefined();
  });

  it('decides a retriable status before committing, reads it away, then retries; a committed call is never retried', () => {
    const { rt, retries, attempts } = service();
    const call = new FakeCall(rt, 'http', true);
    call.begin();
    const a = call.last;
    call.connected(a);
    expect(call.response(a, 503)).toBe(false);
    expect(a.retryReason).toBe('503');
    expect(call.complete(a)).toBe(false); // read away; the retry is scheduled
    expect(attempts[0]).toMatchObject({ status: 503, retryReason: '503', verdict: 'gateway_error' });
    vi.runOnlyPendingTimers();
    const b = call.last;
    call.connected(b);
    expect(call.response(b, 200)).toBe(true);
    expect(call.committed).toBe(true);
    // A reset in the middle of the body is delivered, not retried.
    call.failed(b, AttemptFailures.reset, new Error('reset mid-body'));
    expect(call.delivered?.message).toBe('reset mid-body');
    expect(call.sent).toHaveLength(2);
    expect(retries.map((r) => r.reason)).toEqual(['503']);
  });

  it('keeps a retry decided on a status when reading that response away fails', () => {
    const { rt, retries } = service();
    const call = new FakeCall(rt, 'http', true);
    call.begin();
    const a = call.last;
    call.connected(a);
    expect(call.response(a, 503)).toBe(false);
    call.failed(a, AttemptFailures.reset, new Error('reset while reading away'));
    expect(call.delivered).toBeUndefined();
    vi.runOnlyPendingTimers();
    expect(call.sent).toHaveLength(2);
    expect(call.answer(200)).toBe(true);
    expect(retries.map((r) => r.reason)).toEqual(['503']);
    expect(rt.resilience.thresholds.retries).toBe(0);
  });

  it('gives a caller error back as it is: no retry, nothing counted against the endpoint or the breaker', () => {
    const { rt, retries, attempts } = service();
    for (let i = 0; i < 100; i++) {
      const call = new FakeCall(rt, 'http', true);
      call.begin();
      const err = new Error('invalid header');
      call.failed(call.last, AttemptFailures.caller, err);
      expect(call.delivered).toBe(err);
      expect(call.sent).toHaveLength(1);
    }
    expect(retries).toEqual([]);
    expect(attempts.every((a) => a.verdict === 'ignore')).toBe(true);
    expect(rt.resilience.breaker?.stats()).toMatchObject({ state: 'closed', failures: 0 });
    for (const ep of rt.endpoints) {
      expect(ep.failures).toBe(0);
      expect(ep.failRate).toBe(0);
      expect(ep.active).toBe(0);
    }
    expect(rt.resilience.thresholds.stats()).toMatchObject({ requests: 0, pending: 0, retries: 0 });
  });

  it("a caller's deadline expiring is not the endpoint's failure; the mesh's own timeout is", async () => {
    const { rt, attempts } = service();
    const caller = runWithDeadline(Date.now() + 50, () => {
      const c = new FakeCall(rt, 'http', true);
      c.begin();
      return c;
    });
    caller.connected(caller.last);
    vi.advanceTimersByTime(50);
    expect(caller.aborted).toHaveLength(1);
    const [att, reason] = caller.aborted[0] as [FakeAttempt, Error];
    expect(reason).toMatchObject({ code: 'MESHLET_ERR_TIMEOUT' });
    // The transport reports the abort however it saw it; the pipeline knows why it aborted.
    caller.failed(att, AttemptFailures.reset, new Error('aborted'));
    expect(caller.delivered).toBe(reason);
    expect(attempts.at(-1)).toMatchObject({ outcome: 'timeout', verdict: 'ignore' });
    expect(att.endpoint.failures).toBe(0);

    const { rt: rt2, attempts: a2 } = service({ timeout: '80ms' });
    const own = new FakeCall(rt2, 'http', true);
    own.begin();
    own.connected(own.last);
    vi.advanceTimersByTime(80);
    own.failed(own.last, AttemptFailures.reset, new Error('aborted'));
    expect(own.delivered).toMatchObject({ code: 'MESHLET_ERR_TIMEOUT' });
    expect(a2.at(-1)).toMatchObject({ outcome: 'timeout', verdict: 'local_failure' });
  });

  it('fails at once, sending nothing, when the deadline has already passed', () => {
    const { rt, requests } = service();
    const call = runWithDeadline(Date.now() - 1, () => {
      const c = new FakeCall(rt, 'http', true);
      c.begin();
      return c;
    });
    expect(call.sent).toHaveLength(0);
    expect(call.delivered).toMatchObject({ code: 'MESHLET_ERR_TIMEOUT' });
    expect(requests).toMatchObject([{ outcome: 'timeout', attempts: 0 }]);
  });

  it('composes the deadline once: the earliest of the caller, the inbound request and the timeout', () => {
    const { rt } = service({ timeout: '1s' });
    const a = new FakeCall(rt, 'http', true);
    a.begin();
    expect(a.attemptBudgetMs()).toBe(1000);
    const b = runWithDeadline(Date.now() + 300, () => {
      const c = new FakeCall(rt, 'http', true);
      c.begin(Date.now() + 500);
      return c;
    });
    expect(b.attemptBudgetMs()).toBe(300);
    const c = new FakeCall(rt, 'http', true);
    c.begin(Date.now() + 200);
    expect(c.attemptBudgetMs()).toBe(200);
    const { rt: none } = service();
    const d = new FakeCall(none, 'http', true);
    d.begin();
    expect(d.attemptBudgetMs()).toBe(Number.POSITIVE_INFINITY);
    // A deadline farther than a timer holds is clamped to what it holds (it would fire at once).
    const far = new FakeCall(none, 'http', true);
    far.begin(Date.now() + 2 ** 40);
    expect(far.attemptBudgetMs()).toBe(2_147_483_647);
  });

  it('aborts an attempt at its per-try timeout and retries it when asked', () => {
    const { rt, retries, attempts } = service({ perTryTimeout: '100ms', retry: { on: ['per-try-timeout'] } });
    const call = new FakeCall(rt, 'http', true);
    call.begin();
    call.connected(call.last);
    vi.advanceTimersByTime(100);
    const [att, reason] = call.aborted[0] as [FakeAttempt, Error];
    expect(reason).toMatchObject({ code: 'MESHLET_ERR_PER_TRY_TIMEOUT' });
    call.failed(att, AttemptFailures.cancelled, reason);
    expect(attempts[0]).toMatchObject({ outcome: 'timeout', verdict: 'local_failure' });
    expect(retries.map((r) => r.reason)).toEqual(['per-try-timeout']);
    vi.runOnlyPendingTimers();
    expect(call.sent).toHaveLength(2);
  });

  it('a caller cancelling during the backoff gets its reason and gives the retry slot back', () => {
    const { rt } = service();
    const call = new FakeCall(rt, 'http', true);
    call.begin();
    call.answer(503);
    expect(rt.resilience.thresholds.retries).toBe(1);
    const reason = new Error('mine');
    call.cancel(reason);
    expect(call.delivered).toBe(reason);
    expect(rt.resilience.thresholds.retries).toBe(0);
    vi.runOnlyPendingTimers();
    expect(call.sent).toHaveLength(1);
  });

  it('refuses a retry past the deadline, into an open breaker or beyond the budget', () => {
    const { rt, retries } = service({ timeout: '100ms', retry: { backoff: { base: '1s', max: '1s' } } });
    const call = new FakeCall(rt, 'http', true);
    call.begin();
    // Full jitter: the backoff is uniform in [0, 1s); past a 100ms deadline nearly always.
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
    expect(call.answer(503)).toBe(true);
    vi.restoreAllMocks();
    expect(retries).toMatchObject([{ allowed: false, denial: 'deadline' }]);

    const { rt: b, retries: rb } = service({ retry: { budget: { percent: 0, minPerSecond: 0 } } });
    const c2 = new FakeCall(b, 'http', true);
    c2.begin();
    expect(c2.answer(503)).toBe(true);
    expect(rb).toMatchObject([{ allowed: false, denial: 'budget' }]);
  });

  it('gRPC statuses: UNAVAILABLE is retried (default policy) and counted; application errors are answers', () => {
    const { rt, retries, attempts } = service({ circuitBreaker: { volumeThreshold: 5 } });
    for (let i = 0; i < 100; i++) {
      const call = new FakeCall(rt, 'grpc', false, 'POST');
      call.begin();
      expect(call.answer(i % 2 === 0 ? 2 : 12)).toBe(true); // UNKNOWN, UNIMPLEMENTED
    }
    expect(retries).toEqual([]);
    expect(rt.resilience.breaker?.state).toBe('closed');
    expect(attempts.every((a) => a.verdict === 'success')).toBe(true);
    const call = new FakeCall(rt, 'grpc', true, 'POST');
    call.begin();
    expect(call.answer(14)).toBe(false);
    expect(retries.map((r) => r.reason)).toEqual(['unavailable']);
    expect(attempts.at(-1)).toMatchObject({ verdict: 'gateway_error', outcome: 'reset' });
  });

  it('gRPC codes the user listed are retried whatever the method, and replace the policy conditions', () => {
    const { rt, retries } = service();
    const listed = { ...rt.policy, retry: { ...rt.policy.retry, grpcCodes: [13] } };
    const post = new FakeCall(rt, 'grpc', false, 'POST', listed);
    post.begin();
    expect(post.answer(13)).toBe(false); // INTERNAL, listed: retried although not idempotent
    expect(retries.map((r) => r.reason)).toEqual(['internal']);
    vi.runOnlyPendingTimers();
    expect(post.answer(14)).toBe(true); // UNAVAILABLE is no longer a condition of this call
    expect(post.sent).toHaveLength(2);
    // Without listed codes, a status that may follow processing is retried for idempotent calls only.
    const plain = new FakeCall(rt, 'grpc', false, 'POST');
    plain.begin();
    expect(plain.answer(14)).toBe(true);
  });

  it('a call routed at start takes its service, policy and idempotency then, and reports the code it delivers', () => {
    const { rt, requests } = service({ circuitBreaker: { volumeThreshold: 1, errorThresholdPercentage: 1 } });
    const call = new FakeCall(undefined, 'grpc', false, 'POST');
    call.route(rt, undefined, true);
    call.begin();
    expect(call.service).toBe(rt);
    expect(call.policy).toBe(rt.policy);
    expect(call.answer(14)).toBe(false); // idempotent: retried
    // Too late to reroute or to change idempotency.
    const other = service().rt;
    call.route(other, other.policy);
    expect(call.service).toBe(rt);
    // The breaker opened on the gateway error: the retry is refused, the call fails fast with a
    // mesh error, whose gRPC code the transport gives for the request event (not the last answer's).
    call.statusOfErrors = 8;
    vi.runOnlyPendingTimers();
    expect(call.delivered).toMatchObject({ code: 'MESHLET_ERR_CIRCUIT_OPEN' });
    expect(requests.at(-1)).toMatchObject({ status: 8, outcome: 'circuit_open', transport: 'grpc' });
  });

  it('measures latency from when the attempt had a connection, not from dispatch', () => {
    const { rt } = service({}, 1);
    const call = new FakeCall(rt, 'http', true);
    call.begin();
    vi.advanceTimersByTime(400); // connection setup (TCP, TLS)
    const a = call.last;
    call.connected(a);
    vi.advanceTimersByTime(5);
    call.response(a, 200);
    call.complete(a);
    expect(a.endpoint.ewmaMs).toBe(5);
    // An attempt that never had a connection says nothing about latency.
    const b = new FakeCall(rt, 'http', true);
    b.begin();
    vi.advanceTimersByTime(1000);
    b.failed(b.last, AttemptFailures.caller, new Error('bad'));
    expect(a.endpoint.ewmaMs).toBeLessThan(6);
  });

  it('reports to the outbound observer: start, every attempt, end', () => {
    const { rt } = service();
    const seen: string[] = [];
    rt.hooks.callHook = {
      start(info) {
        seen.push(`start ${info.transport} ${info.method} ${info.path} ${info.authority}`);
        return {
          headers: ['traceparent', 'x'],
          attemptEnd: (_ep, n, outcome, status, _d, _e, reason) =>
            seen.push(`attempt ${n} ${outcome} ${status} ${reason}`),
          end: (outcome, status, attempts) => seen.push(`end ${outcome} ${status} ${attempts}`),
        };
      },
    } satisfies CallHook;
    const call = new FakeCall(rt, 'http', true);
    call.begin();
    expect(call.extraHeaders).toEqual(['traceparent', 'x']);
    call.answer(503);
    vi.runOnlyPendingTimers();
    call.answer(200);
    expect(seen).toEqual([
      'start http GET /x svc',
      'attempt 0 http_error 503 503',
      'attempt 1 success 200 undefined',
      'end success 200 2',
    ]);
  });

  it('waits for discovery before the first pick, bounded by the deadline', async () => {
    const events = new MeshEvents();
    const config = parseConfig({ services: { svc: { endpoints: ['127.0.0.1:1'], timeout: '1s' } } });
    const rt = new ServiceRuntime('svc', config.services.svc as never, 'static', events, () => Date.now());
    runtimes.push(rt);
    const call = new FakeCall(rt, 'http', true);
    call.begin();
    expect(call.sent).toHaveLength(0);
    rt.applyUpdate({ endpoints: [makeEndpoint({ address: '10.0.0.1', port: 1000 })] });
    await vi.advanceTimersByTimeAsync(0);
    expect(call.sent).toHaveLength(1);
    const late = new FakeCall(
      (() => {
        const r = new ServiceRuntime('late', config.services.svc as never, 'static', events, () =>
          Date.now(),
        );
        runtimes.push(r);
        return r;
      })(),
      'http',
      true,
    );
    late.begin();
    await vi.advanceTimersByTimeAsync(1000);
    expect(late.delivered).toMatchObject({ code: 'MESHLET_ERR_TIMEOUT' });
  });
});
