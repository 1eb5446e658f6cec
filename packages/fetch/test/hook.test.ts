import { describe, expect, it } from 'vitest';
import { withHeaders as addHeaders, readHeader } from '../src/hook.js';

describe('request hook header helpers', () => {
  it('reads headers case-insensitively from every form undici accepts', () => {
    expect(readHeader({ TraceParent: 'a' }, 'traceparent')).toBe('a');
    expect(readHeader(['Host', 'x', 'traceparent', 'b'], 'traceparent')).toBe('b');
    expect(readHeader(new Map([['TRACEPARENT', 'c']]), 'traceparent')).toBe('c');
    expect(readHeader(undefined, 'traceparent')).toBeUndefined();
    expect(readHeader({ host: 'x' }, 'traceparent')).toBeUndefined();
  });

  it('adds only the headers the caller did not set, without mutating the input', () => {
    const extra = ['traceparent', '00-1-2-01', 'tracestate', 'k=v'];
    const obj = { Traceparent: 'mine', host: 'svc' };
    expect(addHeaders(obj, extra)).toEqual({ Traceparent: 'mine', host: 'svc', tracestate: 'k=v' });
    expect(obj).toEqual({ Traceparent: 'mine', host: 'svc' });
    const arr = ['host', 'svc'];
    expect(addHeaders(arr, extra)).toEqual(['host', 'svc', 'traceparent', '00-1-2-01', 'tracestate', 'k=v']);
    expect(arr).toHaveLength(2);
    expect(addHeaders(undefined, extra)).toEqual({ traceparent: '00-1-2-01', tracestate: 'k=v' });
    const same = { traceparent: 'x', tracestate: 'y' };
    expect(addHeaders(same, extra)).toBe(same);
  });
});
