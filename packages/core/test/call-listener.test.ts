import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { AttemptFailures } from '../src/extend.js';
import {
  type AttemptEvent,
  type CallListener,
  MeshEvents,
  makeEndpoint,
  parseConfig,
  type RequestEvent,
  ServiceRuntime,
} from '../src/index.js';
import { FakeCall, runtimes, service } from './call-helpers.js';

/**
 * Core's call listener (`RuntimeHooks.addCallListener`, `Mesh.addCallListener`): what telemetry
 * records its metrics from. It must be told exactly what the `attempt` and `request` events carry,
 * without the events being built when nobody listens to them.
 */
describe('the call listener', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    for (const rt of runtimes.splice(0)) rt.close();
    vi.useRealTimers();
  });

  /** Rebuilds the events' objects from what the listener was given. */
  function record(): { listener: CallListener; attempts: AttemptEvent[]; requests: RequestEvent[] } {
    const attempts: AttemptEvent[] = [];
    const requests: RequestEvent[] = [];
    const listener: CallListener = {
      attemptEnd(rt, endpoint, attempt, durationMs, outcome, status, error, retryReason, transport, verdict) {
        attempts.push({
          service: rt.name,
          endpoint,
          attempt,
          durationMs,
          outcome,
          status,
          error,
          retryReason,
          transport,
          verdict,
        });
      },
      callEnd(call, durationMs, outcome, status, attempts, endpoint, error) {
        requests.push({
          service: call.service.name,
          method: call.method,
          path: call.path,
          durationMs,
          outcome,
          status,
          attempts,
          endpoint,
          error,
          transport: call.transport,
        });
      },
    };
    return { listener, attempts, requests };
  }

  it('is given the values the attempt and request events carry: retries, failures, gRPC codes', () => {
    const { rt, attempts, requests } = service();
    const seen = record();
    rt.hooks.addCallListener(seen.listener);
    // HTTP: a 503 retried, then a reset (not retried by default: Istio's): the call ends with
    // the reset and the last status it saw.
    const a = new FakeCall(rt, 'http', true);
    a.begin();
    vi.advanceTimersByTime(7);
    a.answer(503);
    vi.runOnlyPendingTimers();
    vi.advanceTimersByTime(3);
    a.fail(AttemptFailures.reset);
    // A call that fails: a caller error (no retry).
    const b = new FakeCall(rt, 'http', false, 'POST');
    b.begin();
    b.failed(b.last, AttemptFailures.caller, new Error('bad header'));
    // gRPC: UNAVAILABLE then OK; a call that ends with a code of its own.
    const c = new FakeCall(rt, 'grpc', true, 'POST');
    c.begin();
    c.answer(14);
    vi.runOnlyPendingTimers();
    c.answer(0);
    // Attempts a transport reports to the runtime itself (the gRPC balancer's).
    const ep = a.last.endpoint;
    rt.endAttempt(ep, rt.startAttempt(ep), 2, 'reset', 14, undefined, undefined, 'grpc');

    expect(attempts).toHaveLength(6);
    expect(requests).toHaveLength(3);
    expect(seen.attempts).toEqual(attempts);
    expect(seen.requests).toEqual(requests);
    expect(requests.map((r) => [r.outcome, r.status, r.attempts, r.transport])).toEqual([
      ['reset', 503, 2, 'http'],
      ['error', undefined, 1, 'http'],
      ['success', 0, 2, 'grpc'],
    ]);
    expect(requests[0]?.durationMs).toBeGreaterThanOrEqual(10);
  });

  it('is told even when nobody listens to the events, and the events are not built then', () => {
    const events = new MeshEvents();
    const config = parseConfig({ services: { svc: { endpoints: ['127.0.0.1:1'] } } });
    const rt = new ServiceRuntime('svc', config.services.svc as never, 'static', events, () => Date.now());
    runtimes.push(rt);
    rt.applyUpdate({ endpoints: [makeEndpoint({ address: '10.0.0.1', port: 1000 })] });
    const seen = record();
    const remove = rt.hooks.addCallListener(seen.listener);
    const emitRequest = vi.spyOn(events.requests, 'emit');
    const emitAttempt = vi.spyOn(events.attempts, 'emit');
    const call = new FakeCall(rt, 'http', true);
    call.begin();
    call.answer(200);
    expect(seen.attempts.map((e) => [e.service, e.outcome, e.status])).toEqual([['svc', 'success', 200]]);
    expect(seen.requests.map((e) => [e.method, e.path, e.outcome, e.attempts])).toEqual([
      ['GET', '/x', 'success', 1],
    ]);
    expect(emitRequest).not.toHaveBeenCalled();
    expect(emitAttempt).not.toHaveBeenCalled();
    // Removed: told nothing more.
    remove();
    const again = new FakeCall(rt, 'http', true);
    again.begin();
    again.answer(200);
    expect(seen.attempts).toHaveLength(1);
    expect(seen.requests).toHaveLength(1);
  });

  it('a listener that throws is isolated: the call goes on and the other listeners are told', () => {
    const { rt, requests } = service();
    const warn = vi.spyOn(process, 'emitWarning').mockImplementation(() => {});
    const seen = record();
    rt.hooks.addCallListener({
      attemptEnd() {
        throw new Error('metrics broke');
      },
      callEnd() {
        throw new Error('metrics broke');
      },
    });
    rt.hooks.addCallListener(seen.listener);
    const call = new FakeCall(rt, 'http', true);
    call.begin();
    expect(call.answer(200)).toBe(true);
    expect(seen.attempts).toHaveLength(1);
    expect(seen.requests).toHaveLength(1);
    expect(requests).toHaveLength(1);
    expect(warn).toHaveBeenCalledTimes(2);
    expect(String(warn.mock.calls[0]?.[0])).toContain('call listener threw: metrics broke');
    warn.mockRestore();
  });
});
