import diagnosticsChannel from 'node:diagnostics_channel';
import { describe, expect, it } from 'vitest';
import { type AttemptEvent, MeshEvents, type RequestEvent } from '../src/index.js';

const request = (service: string): RequestEvent => ({
  service,
  method: 'GET',
  path: '/',
  durationMs: 1,
  outcome: 'success',
  status: 200,
  attempts: 1,
  endpoint: undefined,
  error: undefined,
  transport: 'http',
});

describe('MeshEvents slots (the call path emits through them, not by name)', () => {
  it('a listener added by name hears what the request slot emits, and is removed again', () => {
    const events = new MeshEvents();
    expect(events.requests.wanted).toBe(false);
    expect(events.wants('request')).toBe(false);
    const seen: string[] = [];
    const off = events.on('request', (e) => seen.push(e.service));
    expect(events.requests.wanted).toBe(true);
    expect(events.wants('request')).toBe(true);
    // the other events are still unwanted
    expect(events.attempts.wanted).toBe(false);
    events.requests.emit(request('a'));
    events.emit('request', request('b'));
    off();
    events.requests.emit(request('c'));
    expect(seen).toEqual(['a', 'b']);
    expect(events.requests.wanted).toBe(false);
  });

  it('a diagnostics_channel subscriber makes the attempt slot wanted and receives its events', () => {
    const events = new MeshEvents();
    const got: unknown[] = [];
    const onMessage = (m: unknown) => got.push(m);
    diagnosticsChannel.subscribe('meshlet:attempt', onMessage);
    try {
      expect(events.attempts.wanted).toBe(true);
      const e = { service: 's', attempt: 0 } as unknown as AttemptEvent;
      events.attempts.emit(e);
      expect(got).toEqual([e]);
    } finally {
      diagnosticsChannel.unsubscribe('meshlet:attempt', onMessage);
    }
    expect(events.attempts.wanted).toBe(false);
  });

  it('a throwing listener is isolated: the next listener still runs and a warning names the event', async () => {
    const events = new MeshEvents();
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      const seen: string[] = [];
      events.on('request', () => {
        throw new Error('boom');
      });
      events.on('request', (e) => seen.push(e.service));
      expect(() => events.requests.emit(request('x'))).not.toThrow();
      expect(seen).toEqual(['x']);
      // process.emitWarning is delivered on a later tick
      await new Promise((r) => setImmediate(r));
      expect(warnings.some((m) => m.includes("'request' event listener threw: boom"))).toBe(true);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('names an unknown event (from untyped code) instead of failing on it', () => {
    const events = new MeshEvents();
    const on = events.on as (name: string, l: () => void) => () => void;
    for (const name of ['requests', 'toString', '__proto__'])
      expect(() => on.call(events, name, () => {})).toThrow(/unknown mesh event ".*" \(events: .*request/);
    const wants = events.wants as (name: string) => boolean;
    expect(wants.call(events, 'toString')).toBe(false);
    expect(wants.call(events, 'nope')).toBe(false);
  });
});
