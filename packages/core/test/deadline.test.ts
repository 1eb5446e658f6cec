import { describe, expect, it } from 'vitest';
import {
  currentDeadline,
  effectiveTimeout,
  inboundDeadline,
  parseDeadlineHeader,
  remainingTime,
  runWithDeadline,
} from '../src/index.js';

describe('deadline context', () => {
  it('is undefined outside a request and follows async work inside one', async () => {
    expect(currentDeadline()).toBeUndefined();
    expect(remainingTime()).toBeUndefined();
    const seen = await runWithDeadline(5_000, async () => {
      await new Promise((r) => setTimeout(r, 1));
      return [currentDeadline(), remainingTime(4_000)];
    });
    expect(seen).toEqual([5_000, 1_000]);
    expect(currentDeadline()).toBeUndefined();
  });

  it('nests: the inner deadline wins inside its scope', () => {
    runWithDeadline(10_000, () => {
      runWithDeadline(2_000, () => expect(currentDeadline()).toBe(2_000));
      expect(currentDeadline()).toBe(10_000);
    });
  });

  it('shortens a configured timeout to what is left, never below 1 ms', () => {
    expect(effectiveTimeout(15_000, 0)).toBe(15_000);
    runWithDeadline(1_000, () => {
      expect(effectiveTimeout(15_000, 0)).toBe(1_000);
      expect(effectiveTimeout(300, 0)).toBe(300);
      expect(effectiveTimeout(0, 0)).toBe(1_000);
      expect(effectiveTimeout(15_000, 999.5)).toBe(1);
      expect(effectiveTimeout(15_000, 5_000)).toBe(1);
    });
  });

  it('parses header values in milliseconds and rejects anything else', () => {
    expect(parseDeadlineHeader('250', 1_000)).toBe(1_250);
    expect(parseDeadlineHeader(['0', '9'], 1_000)).toBe(1_000);
    for (const bad of [undefined, '', '-5', 'soon', '1e400', '9999999999999']) {
      expect(parseDeadlineHeader(bad, 1_000)).toBeUndefined();
    }
  });

  it('reads an inbound deadline: meshlet header first, then x-request-timeout, then the default', () => {
    expect(inboundDeadline({ 'x-meshlet-deadline-ms': '200', 'x-request-timeout': '900' }, 0, 1_000)).toBe(
      1_200,
    );
    expect(inboundDeadline({ 'x-request-timeout': '900' }, 0, 1_000)).toBe(1_900);
    expect(inboundDeadline({ 'x-request-timeout': 'bogus' }, 50, 1_000)).toBe(1_050);
    expect(inboundDeadline({}, 0, 1_000)).toBeUndefined();
  });
});
