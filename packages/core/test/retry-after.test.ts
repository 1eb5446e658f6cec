import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseRetryAfter } from '../src/extend.js';

describe('parseRetryAfter', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('reads delay-seconds and HTTP dates (from `now`, or the wall clock when not given)', () => {
    expect(parseRetryAfter('3')).toBe(3000);
    expect(parseRetryAfter(' 0 ')).toBe(0);
    const now = Date.parse('Sun, 06 Dec 2026 13:00:00 GMT');
    expect(parseRetryAfter('Sun, 06 Dec 2026 13:00:05 GMT', now)).toBe(5000);
    expect(parseRetryAfter('Sun, 06 Dec 2026 12:59:00 GMT', now)).toBe(0);
    vi.useFakeTimers({ now });
    expect(parseRetryAfter('Sun, 06 Dec 2026 13:00:02 GMT')).toBe(2000);
  });

  it('answers undefined for no header or one it cannot read, without reading the clock', () => {
    const clock = vi.spyOn(Date, 'now');
    expect(parseRetryAfter(undefined)).toBeUndefined();
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(clock).not.toHaveBeenCalled();
    clock.mockRestore();
  });
});
