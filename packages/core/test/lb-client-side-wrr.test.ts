import { describe, expect, it } from 'vitest';
import {
  type ClientSideWrrConfig,
  type ConfigIssue,
  clientSideWeightedRoundRobin as cswrr,
  DEFAULT_CLIENT_SIDE_WRR,
  EndpointLoad,
  type EndpointState,
  loadBalancers,
  orcaLoadReport,
  parseConfig,
} from '../src/index.js';
import { countPicks, ep, runtime, states } from './lb-helpers.js';

function parse(raw: Record<string, unknown>): { config: ClientSideWrrConfig; issues: ConfigIssue[] } {
  const issues: ConfigIssue[] = [];
  return { config: cswrr.parseConfig(raw, 'lb', issues), issues };
}

/** A report of `qps` requests a second at `util` event-loop (application) utilization. */
function report(qps: number, util: number, extra: Parameters<typeof orcaLoadReport>[0] = {}) {
  return orcaLoadReport({ rpsFractional: qps, applicationUtilization: util, ...extra });
}

function setLoad(ep: EndpointState, qps: number, util: number, at: number) {
  if (ep.load === undefined) ep.load = new EndpointLoad();
  ep.load.record(report(qps, util), at);
}

function shares(counts: Map<string, number>, eps: readonly EndpointState[], n: number): number[] {
  return eps.map((e) => (counts.get(e.id) ?? 0) / n);
}

/** A policy on a hand-driven clock (what `ServiceRuntime` passes as `LbContext.clock`). */
function policy(raw: Record<string, unknown> = {}) {
  const clock = { ms: 0 };
  const lb = cswrr.create(parse(raw).config, { now: () => clock.ms, clock });
  return { clock, lb };
}

describe('client_side_weighted_round_robin: config', () => {
  it('has A58’s defaults and is registered under the name Envoy’s xDS extension uses', () => {
    expect(parse({}).config).toEqual(DEFAULT_CLIENT_SIDE_WRR);
    expect(DEFAULT_CLIENT_SIDE_WRR).toEqual({
      enableOobLoadReport: false,
      oobReportingPeriodMs: 10_000,
      blackoutPeriodMs: 10_000,
      weightExpirationPeriodMs: 180_000,
      weightUpdatePeriodMs: 1000,
      errorUtilizationPenalty: 1,
    });
    expect(loadBalancers.get('client_side_weighted_round_robin')).toBe(cswrr);
    const config = parseConfig({
      services: {
        svc: {
          endpoints: ['127.0.0.1:1'],
          lb: {
            policy: 'client_side_weighted_round_robin',
            blackoutPeriod: '5s',
            errorUtilizationPenalty: 2,
          },
        },
      },
    });
    expect(config.services.svc?.lb.config).toMatchObject({
      blackoutPeriodMs: 5000,
      errorUtilizationPenalty: 2,
    });
  });

  it('parses every option and reports bad ones by path', () => {
    const { config, issues } = parse({
      enableOobLoadReport: true,
      oobReportingPeriod: '2s',
      blackoutPeriod: 0,
      weightExpirationPeriod: '1m',
      weightUpdatePeriod: '10ms',
      errorUtilizationPenalty: 0.5,
    });
    expect(issues).toEqual([]);
    expect(config).toEqual({
      enableOobLoadReport: true,
      oobReportingPeriodMs: 2000,
      blackoutPeriodMs: 0,
      weightExpirationPeriodMs: 60_000,
      weightUpdatePeriodMs: 100, // A58: raised to 100 ms
      errorUtilizationPenalty: 0.5,
    });
    const bad = parse({
      errorUtilizationPenalty: -1,
      blackoutPeriod: 'soon',
      weightExpirationPeriod: 0,
      enableOobLoadReport: 'yes',
      weight: 1,
    }).issues.map((i) => i.path);
    expect(bad.sort()).toEqual([
      'lb.blackoutPeriod',
      'lb.enableOobLoadReport',
      'lb.errorUtilizationPenalty',
      'lb.weight',
      'lb.weightExpirationPeriod',
    ]);
  });
});

describe('client_side_weighted_round_robin: weights (gRFC A58)', () => {
  it('weighs by qps / utilization, preferring application_utilization over cpu_utilization', () => {
    const l = new EndpointLoad();
    const rules = { ...DEFAULT_CLIENT_SIDE_WRR, blackoutPeriodMs: 0 };
    l.record(report(100, 0.5), 0);
    expect(l.weightAt(0, rules)).toBe(200);
    l.record(orcaLoadReport({ rpsFractional: 100, cpuUtilization: 0.25 }), 1);
    expect(l.weightAt(1, rules)).toBe(400);
    l.record(orcaLoadReport({ rpsFractional: 100, cpuUtilization: 0.25, applicationUtilization: 0.8 }), 2);
    expect(l.weightAt(2, rules)).toBe(125);
    // The error penalty: 100 / (0.5 + 10/100 × 1).
    l.record(report(100, 0.5, { eps: 10 }), 3);
    expect(l.weightAt(3, rules)).toBeCloseTo(100 / 0.6, 9);
    expect(l.weightAt(3, { ...rules, errorUtilizationPenalty: 0 })).toBe(200);
  });

  it('ignores reports without a rate or a utilization (they neither set nor refresh the weight)', () => {
    const l = new EndpointLoad();
    const rules = { ...DEFAULT_CLIENT_SIDE_WRR, blackoutPeriodMs: 0 };
    l.record(report(0, 0.5), 0);
    l.record(report(100, 0), 0);
    expect([l.reports, l.weightAt(0, rules)]).toEqual([2, 0]);
    l.record(report(100, 0.5), 10);
    l.record(report(0, 0.9), 170_000); // does not refresh last_update_time
    expect(l.weightAt(179_000, rules)).toBe(200);
    expect(l.weightAt(180_010, rules)).toBe(0);
  });

  it('applies the blackout period, the expiration, and the blackout again after expiry', () => {
    const l = new EndpointLoad();
    const rules = DEFAULT_CLIENT_SIDE_WRR;
    l.record(report(100, 0.5), 1000);
    expect(l.weightAt(1000, rules)).toBe(0);
    l.record(report(100, 0.5), 6000);
    expect(l.weightAt(10_999, rules)).toBe(0);
    expect(l.weightAt(11_000, rules)).toBe(200);
    // No report for 3 minutes: expired; the next report starts a new blackout.
    expect(l.weightAt(6000 + 180_000, rules)).toBe(0);
    l.record(report(100, 0.5), 200_000);
    expect(l.weightAt(205_000, rules)).toBe(0);
    expect(l.weightAt(210_000, rules)).toBe(200);
    l.restartBlackout(); // a new connection: the blackout starts again with the next report
    l.record(report(100, 0.5), 211_000);
    expect(l.weightAt(215_000, rules)).toBe(0);
    expect(l.weightAt(221_000, rules)).toBe(200);
  });
});

describe('client_side_weighted_round_robin: picking', () => {
  it('splits picks in proportion to the weights (static stride schedule)', () => {
    const { clock, lb } = policy({ blackoutPeriod: 0 });
    const eps = states(4);
    [0.2, 0.4, 0.8, 0.8].forEach((u, i) => {
      setLoad(eps[i] as EndpointState, 100, u, 0);
    });
    const picker = lb.update(eps);
    clock.ms = 1;
    const n = 80_000;
    const got = shares(countPicks(picker, n), eps, n);
    const w = [500, 250, 125, 125];
    const sum = w.reduce((a, b) => a + b, 0);
    got.forEach((g, i) => {
      expect(g).toBeCloseTo((w[i] as number) / sum, 2);
    });
    // Interleaved, not bursty: the heaviest endpoint never gets more than a few picks in a row.
    let run = 0;
    let longest = 0;
    let prev: string | undefined;
    for (let i = 0; i < 2000; i++) {
      const r = picker.pick({ attempt: 0 });
      const id = r.kind === 'pick' ? r.endpoint.id : '';
      run = id === prev ? run + 1 : 1;
      prev = id;
      longest = Math.max(longest, run);
    }
    expect(longest).toBeLessThanOrEqual(4);
  });

  it('gives endpoints that report nothing the mean weight once two or more report', () => {
    const { lb } = policy({ blackoutPeriod: 0 });
    const eps = states(3);
    setLoad(eps[0] as EndpointState, 100, 1, 0); // 100
    setLoad(eps[1] as EndpointState, 300, 1, 0); // 300; eps[2] silent → mean 200
    const n = 60_000;
    const got = shares(countPicks(lb.update(eps), n), eps, n);
    expect(got[0]).toBeCloseTo(1 / 6, 2);
    expect(got[1]).toBeCloseTo(3 / 6, 2);
    expect(got[2]).toBeCloseTo(2 / 6, 2);
    expect(eps[2]?.load).toBeUndefined();
    expect(eps[0]?.load?.weight).toBe(100);
  });

  it('caps a weight at 10× the mean and floors it at 1% of it', () => {
    const { lb } = policy({ blackoutPeriod: 0 });
    const eps = states(12);
    setLoad(eps[0] as EndpointState, 1e6, 0.01, 0); // 1e8: far above the others
    for (let i = 1; i < 11; i++) setLoad(eps[i] as EndpointState, 100, 1, 0); // 100 each
    setLoad(eps[11] as EndpointState, 0.001, 1, 0); // 0.001: far below
    const n = 200_000;
    const got = shares(countPicks(lb.update(eps), n), eps, n);
    const mean = (1e8 + 10 * 100 + 0.001) / 12;
    // Scaled: max = 10 × mean → 65535; others 100 → tiny but above the 1% floor? No: the floor is
    // 1% of the scaled mean, which is above 100/max; all small ones get the floor.
    const maxW = 10 * mean;
    const scale = 65535 / maxW;
    const floor = Math.max(1, Math.round(Math.round(scale * mean) * 0.01));
    const small = Math.max(floor, Math.round(100 * scale));
    const tiny = Math.max(floor, Math.round(0.001 * scale));
    const total = 65535 + 10 * small + tiny;
    expect(got[0]).toBeCloseTo(65535 / total, 2);
    expect(got[11]).toBeGreaterThan(0);
    expect(got[11]).toBeCloseTo(tiny / total, 3);
  });

  it('falls back to peak-EWMA while fewer than two endpoints have a usable weight', () => {
    const { clock, lb } = policy(); // blackout 10 s
    const eps = states(2);
    const [fast, slow] = eps as [EndpointState, EndpointState];
    // Latency estimates: the slow one is 100× slower; both observed at t=0.
    fast.ewmaMs = 1;
    slow.ewmaMs = 100;
    // Reports say the slow one has far more capacity (a deliberately contrary signal).
    setLoad(fast, 100, 0.9, 0);
    setLoad(slow, 1000, 0.1, 0);
    const picker = lb.update(eps);
    // In the blackout: peak-EWMA's P2C over two endpoints always takes the cheaper (the fast one).
    let counts = countPicks(picker, 1000);
    expect(counts.get(fast.id)).toBe(1000);
    // After the blackout, with fresh reports: the weights (111 vs 10000) decide.
    clock.ms = 10_000;
    setLoad(fast, 100, 0.9, 10_000);
    setLoad(slow, 1000, 0.1, 10_000);
    clock.ms = 11_000;
    counts = countPicks(picker, 10_100);
    expect((counts.get(slow.id) ?? 0) / 10_100).toBeCloseTo(10_000 / 10_111, 2);
  });

  it('falls back when only one endpoint reports, and keeps its schedule between updates', () => {
    const { clock, lb } = policy({ blackoutPeriod: 0, weightUpdatePeriod: '1s' });
    const eps = states(3);
    setLoad(eps[0] as EndpointState, 100, 0.5, 0);
    const picker = lb.update(eps);
    // peak-EWMA with nothing observed: never-observed endpoints with nothing in flight cost 0,
    // so the spread is uniform.
    const first = shares(countPicks(picker, 30_000), eps, 30_000);
    for (const s of first) expect(s).toBeCloseTo(1 / 3, 1);
    // A second endpoint reports: the schedule changes only when the update period has passed.
    setLoad(eps[1] as EndpointState, 300, 0.5, 10);
    clock.ms = 999;
    let got = shares(countPicks(picker, 30_000), eps, 30_000);
    for (const s of got) expect(s).toBeCloseTo(1 / 3, 1);
    clock.ms = 1000;
    got = shares(countPicks(picker, 60_000), eps, 60_000);
    // 200 : 600 : mean 400
    expect(got[0]).toBeCloseTo(200 / 1200, 2);
    expect(got[1]).toBeCloseTo(600 / 1200, 2);
    expect(got[2]).toBeCloseTo(400 / 1200, 2);
  });

  it('returns to the fallback when weights expire', () => {
    const { clock, lb } = policy({ blackoutPeriod: 0, weightExpirationPeriod: '10s' });
    const eps = states(2);
    const [a, b] = eps as [EndpointState, EndpointState];
    setLoad(a, 100, 0.1, 0); // 1000
    setLoad(b, 100, 1, 0); // 100
    a.ewmaMs = 50; // peak-EWMA would prefer b
    b.ewmaMs = 1;
    const picker = lb.update(eps);
    const weighted = countPicks(picker, 11_000);
    expect((weighted.get(a.id) ?? 0) / 11_000).toBeCloseTo(10 / 11, 2);
    clock.ms = 10_000;
    const fallback = countPicks(picker, 1000);
    expect(fallback.get(b.id)).toBe(1000);
  });

  it('works through ServiceRuntime.reportLoad', () => {
    let t = 0;
    const rt = runtime(
      { lb: { policy: 'client_side_weighted_round_robin', blackoutPeriod: '1s' } },
      { now: () => t },
    );
    rt.applyUpdate({ endpoints: [ep(1000), ep(1001)] });
    const [a, b] = rt.endpoints as [EndpointState, EndpointState];
    rt.reportLoad(a, report(100, 0.2), 0);
    rt.reportLoad(b, report(100, 0.8), 0);
    t = 1500;
    rt.reportLoad(a, report(100, 0.2)); // default `now`: the runtime's clock
    rt.reportLoad(b, report(100, 0.8));
    expect(a.load?.reportedAt).toBe(1500);
    // The runtime's clock moved with the reports, so the picker refreshes on its next pick.
    const counts = countPicks(rt.picker, 10_000);
    expect((counts.get(a.id) ?? 0) / 10_000).toBeCloseTo(0.8, 2);
    expect(a.load?.weight).toBe(500);
  });
});
