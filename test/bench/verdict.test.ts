import { describe, expect, it } from 'vitest';
import {
  alternate,
  alternationResolution,
  blockPairedDiff,
  readAlternation,
  targetVerdict,
  verdictText,
} from './support/ab.js';

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

describe('blockPairedDiff and alternate: concurrency 1, request by request', () => {
  it('reads the mean difference of paired requests and its standard error from blocks', () => {
    // b drifts (a machine getting slower); a is b plus 2, plus noise of ±1 alternating by block
    const b = Array.from({ length: 4000 }, (_, i) => 40 + i / 100);
    const a = b.map((x, i) => x + 2 + (Math.floor(i / 1000) % 2 === 0 ? 1 : -1));
    const d = blockPairedDiff(a, b);
    expect(d.blocks).toBe(4);
    expect(d.mean).toBeCloseTo(2, 10);
    // block means 3, 1, 3, 1: sample sd 2/sqrt(3), over sqrt(4)
    expect(d.se).toBeCloseTo(2 / Math.sqrt(3) / 2, 10);
    // a collection on one request of a pair (5 ms) is left out with the 1% at each end
    const gc = [...a];
    gc[1500] = 5000;
    expect(blockPairedDiff(gc, b).mean).toBeCloseTo(2, 10);
    // fewer than two blocks: no spread, nothing to read
    expect(blockPairedDiff(a.slice(0, 1500), b.slice(0, 1500)).mean).toBeNaN();
  });

  it('resolves a ratio by the control and two standard errors', () => {
    const res = alternationResolution(
      { mean: 2, se: 0.2, blocks: 30 },
      { mean: -0.3, se: 0.2, blocks: 30 },
      40,
    );
    expect(res).toBeCloseTo(0.7 / 40, 10);
    // 1.05 allowed on 40us: +2us; +1.0us with a resolution of 0.7us is met, +2.8 missed, +1.6 open
    expect(targetVerdict(1 + 1.0 / 40, 1.05, 1 + res, false)).toBe('met');
    expect(targetVerdict(1 + 2.8 / 40, 1.05, 1 + res, false)).toBe('missed');
    expect(targetVerdict(1 + 1.6 / 40, 1.05, 1 + res, false)).toBe('unresolved');
  });

  it('sends each variant the same number of requests, taking turns, and pairs them', async () => {
    const log: string[] = [];
    const variant = (name: string) => ({
      name,
      send: async () => {
        log.push(name);
      },
    });
    const st = await alternate([variant('raw'), variant('mesh'), variant('control')], 2000);
    expect(log).toHaveLength(6000);
    // turns of three, the first of each turn rotating
    expect(log.slice(0, 9)).toEqual([
      'raw',
      'mesh',
      'control',
      'mesh',
      'control',
      'raw',
      'control',
      'raw',
      'mesh',
    ]);
    expect(st.mesh?.requests).toBe(2000);
    expect(st.mesh?.cpuDiff.blocks).toBe(2);
    expect(Number.isFinite(st.mesh?.latencyUs)).toBe(true);
    expect(st.raw?.cpuDiff.mean).toBe(0);
  });
});

describe('readAlternation', () => {
  const diff = (mean: number, se = 0.1) => ({ mean, se, blocks: 30 });
  const stats = (cpuUs: number, latencyUs: number, cpu: number, lat: number) => ({
    requests: 30_000,
    cpuUs,
    latencyUs,
    cpuDiff: diff(cpu),
    latencyDiff: diff(lat),
  });

  it('judges throughput (inverse latency) and CPU at the alternation resolution', () => {
    const r = readAlternation(
      { raw: stats(40, 60, 0, 0), mesh: stats(44, 62, 4, 2), control: stats(40.2, 60.1, 0.2, 0.1) },
      0.95,
      1.05,
    );
    expect(r.results.cpuPerRequestRatio).toBe(1.1);
    expect(r.results.throughputRatio).toBe(0.968);
    // cpu: +4us against +2 allowed, resolution (0.2 + 0.2) / 40 = 1%: missed
    expect(r.text).toContain('cpu > 1.05x');
    // throughput 0.968 against 0.95, resolution (0.1 + 0.2) / 60 = 0.5%: met
    expect(r.text).toContain('[throughput ok, cpu > 1.05x]');
  });

  it('without a control reads the ratios as they are, and judges CPU only with a target', () => {
    const r = readAlternation({ raw: stats(40, 60, 0, 0), mesh: stats(41, 66, 1, 6) }, 0.95);
    expect(r.text).toContain('[throughput < 0.95x]');
    expect(r.results.controlVsRaw).toBeUndefined();
  });
});
