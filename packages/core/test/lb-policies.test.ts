import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  isConfigError,
  leastRequest,
  maglev,
  parseConfig,
  peakEwma,
  random,
  ringHash,
  roundRobin,
  weightedRoundRobin,
} from '../src/index.js';
import { chiSquare, chiSquareCritical, countPicks, states } from './lb-helpers.js';

const N = 60_000;

describe('distribution of every policy (chi-square, p = 0.001)', () => {
  // The policies draw from Math.random; a seeded generator makes each run the same draw, so a
  // p = 0.001 test fails for a skewed policy, not once in a thousand runs by chance.
  beforeEach(() => {
    let seed = 0x9e3779b9;
    vi.spyOn(Math, 'random').mockImplementation(() => {
      // mulberry32
      seed = (seed + 0x6d2b79f5) | 0;
      let t = seed;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    });
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });
  const uniform = [
    ['round_robin', () => roundRobin.create(undefined)],
    ['weighted_round_robin', () => weightedRoundRobin.create(undefined)],
    ['random', () => random.create(undefined)],
    ['least_request', () => leastRequest.create(leastRequest.parseConfig({}, 'lb', []))],
    ['peak_ewma', () => peakEwma.create(peakEwma.parseConfig({}, 'lb', []), { now: () => 0 })],
    ['ring_hash', () => ringHash.create(ringHash.parseConfig({ minRingSize: 4096 }, 'lb', []))],
    ['maglev', () => maglev.create(maglev.parseConfig({}, 'lb', []))],
  ] as const;
  for (const [name, make] of uniform) {
    it(`${name} spreads equal endpoints evenly`, () => {
      const eps = states(10);
      const picker = make().update(eps);
      const counts = countPicks(picker, N);
      const observed = eps.map((e) => counts.get(e.id) ?? 0);
      if (name === 'ring_hash') {
        // A ring's arcs are only approximately equal (≈ 410 points a host): explicit bounds.
        for (const o of observed) expect(Math.abs(o / N - 0.1)).toBeLessThan(0.02);
      } else {
        expect(
          chiSquare(
            observed,
            eps.map(() => 1),
          ),
        ).toBeLessThan(chiSquareCritical(9));
      }
    });
  }

  const weighted = [
    ['weighted_round_robin', () => weightedRoundRobin.create(undefined)],
    ['random', () => random.create(undefined)],
    ['ring_hash', () => ringHash.create(ringHash.parseConfig({ minRingSize: 16384 }, 'lb', []))],
    ['maglev', () => maglev.create(maglev.parseConfig({}, 'lb', []))],
  ] as const;
  for (const [name, make] of weighted) {
    it(`${name} honours weights 1:2:3:4`, () => {
      const eps = states(4, (i) => ({ weight: i + 1 }));
      const picker = make().update(eps);
      const counts = countPicks(picker, N);
      const observed = eps.map((e) => counts.get(e.id) ?? 0);
      const shares = observed.map((o) => o / N);
      // Explicit bounds: every share within 1.5 points of weight / 10.
      shares.forEach((s, i) => {
        expect(Math.abs(s - (i + 1) / 10)).toBeLessThan(0.015);
      });
      if (name !== 'ring_hash' && name !== 'maglev') {
        // Exact samplers pass the chi-square test; consistent hashing is only approximately fair.
        expect(chiSquare(observed, [1, 2, 3, 4])).toBeLessThan(chiSquareCritical(3));
      }
    });
  }

  it('weighted_round_robin interleaves smoothly (no run longer than the weight ratio)', () => {
    const eps = states(2, (i) => ({ weight: i === 0 ? 1 : 3 }));
    const picker = weightedRoundRobin.create(undefined).update(eps);
    const seq: string[] = [];
    for (let i = 0; i < 400; i++) {
      const r = picker.pick({ attempt: 0 });
      if (r.kind === 'pick') seq.push(r.endpoint.id);
    }
    let run = 0;
    let longest = 0;
    for (let i = 0; i < seq.length; i++) {
      run = i > 0 && seq[i] === seq[i - 1] ? run + 1 : 1;
      longest = Math.max(longest, run);
    }
    expect(longest).toBeLessThanOrEqual(4);
    expect(seq.filter((s) => s === eps[0]?.id).length).toBe(100);
  });

  it('least_request and peak_ewma avoid an endpoint with requests in flight', () => {
    for (const factory of [leastRequest, peakEwma]) {
      const eps = states(3);
      (eps[0] as (typeof eps)[0]).active = 50;
      const lb = factory.create(factory.parseConfig({}, 'lb', []) as never, { now: () => 0 });
      const counts = countPicks(lb.update(eps), 3000);
      // P2C: the busy endpoint wins only when it is sampled twice, which P2C never does.
      expect(counts.get(eps[0]?.id as string) ?? 0).toBe(0);
    }
  });
});

describe('policy config is validated with field paths', () => {
  function issuesOf(lb: unknown): string[] {
    try {
      parseConfig({ services: { a: { endpoints: ['127.0.0.1:1'], lb } } });
      return [];
    } catch (err) {
      if (!isConfigError(err)) throw err;
      return err.issues.map((i) => `${i.path}: ${i.message}`);
    }
  }

  it('accepts every policy by name and with options', () => {
    for (const name of [
      'round_robin',
      'weighted_round_robin',
      'random',
      'least_request',
      'peak_ewma',
      'ring_hash',
      'maglev',
    ])
      expect(issuesOf(name)).toEqual([]);
    expect(issuesOf({ policy: 'peak_ewma', decay: '5s', defaultRtt: '20ms' })).toEqual([]);
    expect(
      issuesOf({
        policy: 'ring_hash',
        minRingSize: 2048,
        maxRingSize: 65536,
        hashPolicy: [{ header: 'x-user' }, { cookie: 'sid' }],
      }),
    ).toEqual([]);
    expect(issuesOf({ policy: 'maglev', tableSize: 131071, hashPolicy: { sourceIp: true } })).toEqual([]);
  });

  it('names each bad field', () => {
    expect(issuesOf({ policy: 'ring_hash', minRingSize: 0 })).toEqual([
      expect.stringMatching(/^services\.a\.lb\.minRingSize: must be >= 1/),
    ]);
    expect(issuesOf({ policy: 'ring_hash', minRingSize: 4096, maxRingSize: 1024 })[0]).toMatch(
      /^services\.a\.lb\.maxRingSize: must be >= minRingSize/,
    );
    expect(issuesOf({ policy: 'maglev', tableSize: 65536 })[0]).toMatch(
      /^services\.a\.lb\.tableSize: must be a prime/,
    );
    expect(issuesOf({ policy: 'maglev', hashPolicy: [{ header: 'a', cookie: 'b' }] })[0]).toMatch(
      /^services\.a\.lb\.hashPolicy\[0\]: must give exactly one/,
    );
    expect(issuesOf({ policy: 'peak_ewma', decay: 'soon' })[0]).toMatch(
      /^services\.a\.lb\.decay: must be a duration/,
    );
    expect(issuesOf({ policy: 'weighted_round_robin', weights: 1 })[0]).toMatch(
      /^services\.a\.lb\.weights: unknown field/,
    );
    expect(issuesOf('fastest')[0]).toMatch(/^services\.a\.lb: unknown load-balancing policy "fastest"/);
  });

  it('makes peak_ewma the default for services that name no policy', () => {
    const config = parseConfig({ services: { a: { endpoints: ['127.0.0.1:1'] } } });
    expect(config.services.a?.lb.policy).toBe('peak_ewma');
    expect(config.services.a?.lb.config).toEqual({ decayMs: 10_000, defaultRttMs: 30, failurePenalty: 10 });
    expect(config.defaults.lb.policy).toBe('peak_ewma');
  });

  it('validates the balancing section with field paths', () => {
    let issues: string[] = [];
    try {
      parseConfig({
        services: {
          a: {
            endpoints: ['127.0.0.1:1'],
            balancing: {
              slowStart: { window: 'x', aggression: 0 },
              penalty: { statuses: [99] },
              zoneAware: { size: 1 },
            },
          },
        },
      });
    } catch (err) {
      if (!isConfigError(err)) throw err;
      issues = err.issues.map((i) => i.path);
    }
    expect(issues).toEqual([
      'services.a.balancing.zoneAware.size',
      'services.a.balancing.slowStart.window',
      'services.a.balancing.slowStart.aggression',
      'services.a.balancing.penalty.statuses[0]',
    ]);
  });
});
