import { describe, expect, it } from 'vitest';
import { targetVerdict, verdictText } from './support/ab.js';

describe('targetVerdict: a ratio against its target, at the resolution of the run', () => {
  it('reads a throughput floor: met, missed, or within what the control reads', () => {
    // control at 1.02: the run reads ±0.02 when nothing differs
    expect(targetVerdict(0.98, 0.95, 1.02)).toBe('met');
    expect(targetVerdict(0.92, 0.95, 0.98)).toBe('missed');
    expect(targetVerdict(0.96, 0.95, 1.02)).toBe('unresolved');
    expect(targetVerdict(0.94, 0.95, 1.02)).toBe('unresolved');
    // the servers suite's Express run of 2026-12-07: full 0.955x with the control at 1.289x
    expect(targetVerdict(0.955, 0.95, 1.289)).toBe('unresolved');
    expect(targetVerdict(0.79, 0.95, 1.002)).toBe('missed');
  });

  it('reads a CPU ceiling the other way round', () => {
    expect(targetVerdict(1.02, 1.05, 1.01, false)).toBe('met');
    expect(targetVerdict(1.12, 1.05, 0.98, false)).toBe('missed');
    expect(targetVerdict(1.06, 1.05, 0.97, false)).toBe('unresolved');
  });

  it('without a control reads the ratio as it is; a control that is not a number resolves nothing', () => {
    expect(targetVerdict(0.951, 0.95, undefined)).toBe('met');
    expect(targetVerdict(0.949, 0.95, undefined)).toBe('missed');
    expect(targetVerdict(0.99, 0.95, Number.NaN)).toBe('unresolved');
  });

  it('says it in the summary line', () => {
    expect(verdictText('met', 'BELOW 0.95x', 1.01)).toBe('ok');
    expect(verdictText('missed', 'BELOW 0.95x', 1.01)).toBe('BELOW 0.95x');
    expect(verdictText('unresolved', 'BELOW 0.95x', 1.2894)).toBe('unresolved: control 1.289x');
  });
});
