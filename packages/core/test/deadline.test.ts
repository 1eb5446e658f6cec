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

  it('reads digits as Number() does, and other forms through Number()', () => {
    // The digit-by-digit fast path must agree with the definition (Number, finite, >= 0, clamped).
    const reference = (v: string) => {
      if (v.length === 0 || v.length > 12) return undefined;
      const ms = Number(v);
      return Number.isFinite(ms) && ms >= 0 ? 1_000 + Math.min(ms, 2 ** 31 - 1) : undefined;
    };
    const alphabet = '0123456789 .e+-x_a';
    let seed = 7;
    const rnd = (n: number) => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed % n;
    };
    const cases = [
      '0',
      '007',
      '5000',
      '999999999999',
      '2147483648',
      ' 50',
      '50 ',
      '1e3',
      '0x10',
      '1.5',
      '+7',
    ];
    for (let i = 0; i < 3_000; i++) {
      let v = '';
      const len = rnd(14);
      for (let j = 0; j < len; j++) v += alphabet[i % 3 === 0 ? rnd(10) : rnd(alphabet.length)];
      cases.push(v);
    }
    for (const v of cases) expect([v, parseDeadlineHeader(v, 1_000)]).toEqual([v, reference(v)]);
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
