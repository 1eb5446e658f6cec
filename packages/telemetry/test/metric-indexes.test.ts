import { describe, expect, it } from 'vitest';
import { METHODS, methodIndex, OUTCOMES, outcomeIndex } from '../src/metrics.js';

describe('outcome and method indexes', () => {
  it('index every outcome and method at its place in the label lists', () => {
    expect(OUTCOMES.map((o) => outcomeIndex(o))).toEqual(OUTCOMES.map((_o, i) => i));
    expect(METHODS.map((m) => methodIndex(m))).toEqual(METHODS.map((_m, i) => i));
  });

  it('put anything else in error / _OTHER, inherited property names included', () => {
    for (const x of ['', 'get', 'constructor', 'toString', '__proto__', 'hasOwnProperty', 'PROPFIND'])
      expect([x, methodIndex(x)]).toEqual([x, 0]);
    for (const x of ['', 'Success', 'constructor', 'valueOf', 'unknown'])
      expect([x, outcomeIndex(x)]).toEqual([x, OUTCOMES.indexOf('error')]);
  });

  it('reads strings made at run time (not literals) the same way', () => {
    expect(methodIndex('pat'.toUpperCase() + 'CH')).toBe(METHODS.indexOf('PATCH'));
    expect(outcomeIndex(['circuit', 'open'].join('_'))).toBe(OUTCOMES.indexOf('circuit_open'));
  });
});
