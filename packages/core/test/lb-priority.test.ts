import { describe, expect, it } from 'vitest';
import {
  DEFAULT_BALANCING,
  type Endpoint,
  EndpointState,
  isMeshErrorCode,
  planPicker,
  type ServiceRuntime,
} from '../src/index.js';
import { countPicks, ep, runtime } from './lb-helpers.js';

/** `healthy` of `total` endpoints at `priority`, ports from `base`. */
function level(priority: number, healthy: number, total: number, base: number): Endpoint[] {
  return Array.from({ length: total }, (_, i) =>
    ep(base + i, { priority, health: i < healthy ? 'healthy' : 'unhealthy' }),
  );
}

function sharesBy(rt: ServiceRuntime, key: (port: number) => string, n = 40_000): Map<string, number> {
  const counts = countPicks(rt.picker, n);
  const out = new Map<string, number>();
  for (const st of rt.endpoints) {
    const k = key(st.endpoint.port);
    out.set(k, (out.get(k) ?? 0) + (counts.get(st.id) ?? 0) / n);
  }
  return out;
}

const byPriority = (port: number) => (port < 2000 ? 'P0' : 'P1');

/** A balancer that records every host set it is given (one per locality and priority). */
function recordingBalancer() {
  const seen: (readonly EndpointState[])[] = [];
  const balancer = {
    update(set: readonly EndpointState[]) {
      seen.push(set);
      return { pick: () => ({ kind: 'queue' }) as const };
    },
  };
  return { seen, balancer };
}

describe('priority failover with the overprovisioning factor (Envoy table, panic threshold 50%)', () => {
  const cases: Array<[number, number, number, number, number, boolean]> = [
    // [P0 healthy, P0 total, P1 healthy, P1 total, expected P0 load %, panic]
    [18, 25, 25, 25, 100, false],
    [5, 10, 10, 10, 70, false],
    [1, 4, 4, 4, 35, false],
    [1, 20, 13, 20, 7.1428, true],
  ];
  for (const [h0, t0, h1, t1, load0, panic] of cases) {
    it(`P0 ${h0}/${t0} healthy, P1 ${h1}/${t1} → P0 takes ${load0}%`, () => {
      const rt = runtime({});
      rt.applyUpdate({ endpoints: [...level(0, h0, t0, 1000), ...level(1, h1, t1, 2000)] });
      expect(rt.priorityLoad.get(0)).toBeCloseTo(load0, 2);
      expect(rt.priorityLoad.get(1)).toBeCloseTo(100 - load0, 2);
      expect(rt.panic).toBe(panic);
      const shares = sharesBy(rt, byPriority);
      expect(Math.abs((shares.get('P0') ?? 0) - load0 / 100)).toBeLessThan(0.015);
    });
  }

  it('sends nothing to unhealthy hosts of a priority that is not in panic', () => {
    const rt = runtime({});
    rt.applyUpdate({ endpoints: [...level(0, 5, 10, 1000), ...level(1, 10, 10, 2000)] });
    const counts = countPicks(rt.picker, 5000);
    for (let p = 1005; p < 1010; p++) expect(counts.get(`10.0.0.1:${p}`)).toBeUndefined();
  });

  it('a priority in panic balances over all its hosts, healthy or not', () => {
    const rt = runtime({});
    rt.applyUpdate({ endpoints: [...level(0, 1, 20, 1000), ...level(1, 13, 20, 2000)] });
    const counts = countPicks(rt.picker, 40_000);
    // P0 (7% of traffic) is in panic: its unhealthy hosts get traffic too.
    expect(counts.get('10.0.0.1:1019') ?? 0).toBeGreaterThan(0);
    // P1 is not: its unhealthy hosts get none.
    expect(counts.get('10.0.0.1:2019')).toBeUndefined();
  });

  it('total panic spreads by host count over every host and emits a panic event', () => {
    const rt = runtime({});
    const events: boolean[] = [];
    rt.events.on('panic', (e) => events.push(e.panic));
    rt.applyUpdate({ endpoints: [...level(0, 1, 4, 1000), ...level(1, 1, 4, 2000)] });
    expect(rt.panic).toBe(true);
    expect(events).toEqual([true]);
    expect(rt.priorityLoad.get(0)).toBe(50);
    const counts = countPicks(rt.picker, 8000);
    expect(counts.size).toBe(8);
    rt.applyUpdate({ endpoints: [...level(0, 4, 4, 1000), ...level(1, 1, 4, 2000)] });
    expect(rt.panic).toBe(false);
    expect(events).toEqual([true, false]);
  });

  it('panic threshold 0 disables panic: no healthy host fails fast', () => {
    const rt = runtime({ panicThreshold: 0 });
    rt.applyUpdate({ endpoints: level(0, 0, 3, 1000) });
    const r = rt.pick({ attempt: 0 });
    expect(r.kind).toBe('fail');
    if (r.kind === 'fail') expect(isMeshErrorCode(r.error, 'MESHLET_ERR_NO_HEALTHY_ENDPOINT')).toBe(true);
  });

  it('degraded hosts take traffic only when healthy ones fall short', () => {
    const rt = runtime({});
    const eps = [
      ...Array.from({ length: 4 }, (_, i) => ep(1000 + i, { health: i < 3 ? 'healthy' : 'unhealthy' })),
      ...Array.from({ length: 4 }, (_, i) => ep(1100 + i, { health: 'degraded' })),
    ];
    rt.applyUpdate({ endpoints: eps });
    // 3 healthy of 8: 52.5% healthy load; degraded 4/8 × 1.4 = 70% covers the remaining 47.5%.
    const shares = sharesBy(rt, (p) => (p < 1100 ? 'healthy' : 'degraded'));
    expect(Math.abs((shares.get('healthy') ?? 0) - 0.525)).toBeLessThan(0.015);
  });

  it('draining hosts serve only when nothing else is left', () => {
    const rt = runtime({});
    rt.applyUpdate({ endpoints: [ep(1000, { health: 'draining' }), ep(1001)] });
    expect(countPicks(rt.picker, 200).get('10.0.0.1:1000')).toBeUndefined();
    rt.applyUpdate({ endpoints: [ep(1000, { health: 'draining' })] });
    expect(countPicks(rt.picker, 10).get('10.0.0.1:1000')).toBe(10);
  });
});

describe('locality-weighted balancing', () => {
  it('splits traffic by locality weight × availability', () => {
    const rt = runtime({ lb: 'round_robin' });
    const a = (i: number, health: 'healthy' | 'unhealthy' = 'healthy') =>
      ep(1000 + i, { locality: { zone: 'a' }, localityWeight: 1, health });
    const b = (i: number, health: 'healthy' | 'unhealthy' = 'healthy') =>
      ep(2000 + i, { locality: { zone: 'b' }, localityWeight: 3, health });
    rt.applyUpdate({ endpoints: [a(0), a(1), b(0), b(1)] });
    let shares = sharesBy(rt, (p) => (p < 2000 ? 'a' : 'b'));
    expect(Math.abs((shares.get('a') ?? 0) - 0.25)).toBeLessThan(0.015);
    // Half of b down: availability min(1, 1.4 × 0.5) = 0.7 → b's effective weight 2.1 against 1.
    rt.applyUpdate({ endpoints: [a(0), a(1), b(0), b(1, 'unhealthy')] });
    shares = sharesBy(rt, (p) => (p < 2000 ? 'a' : 'b'));
    expect(Math.abs((shares.get('a') ?? 0) - 1 / 3.1)).toBeLessThan(0.015);
  });

  it('gives each locality its hosts in discovery order, whether they come in one run or several', () => {
    const { seen, balancer } = recordingBalancer();
    // Zone a in three runs (a b a a c b a), zone b in two, c in one; one unhealthy a in a run.
    const zones = ['a', 'b', 'a', 'a', 'c', 'b', 'a'];
    const all = zones.map(
      (zone, i) =>
        new EndpointState(
          'svc',
          ep(1000 + i, {
            locality: { zone },
            localityWeight: 1,
            health: i === 2 ? 'unhealthy' : 'healthy',
          }),
          0,
        ),
    );
    const plan = planPicker({
      all,
      now: 0,
      panicThreshold: 0,
      config: DEFAULT_BALANCING,
      local: undefined,
      balancer,
      filter: undefined,
    });
    expect(plan.picker).toBeDefined();
    const ports = seen.map((set) => set.map((st) => st.endpoint.port));
    expect(ports).toEqual([[1000, 1003, 1006], [1001, 1005], [1004]]);
  });

  it('reuses the previous plan’s host array of a locality whose hosts did not change', () => {
    const { seen, balancer } = recordingBalancer();
    const make = (zone: string, i: number) =>
      new EndpointState('svc', ep(1000 + i, { locality: { zone }, localityWeight: 1 }), 0);
    const all = ['a', 'b', 'a', 'b', 'c'].map(make);
    const plan = (eps: readonly EndpointState[], prev: ReadonlyMap<string, EndpointState[]>) => {
      seen.length = 0;
      const hostArrays = { prev, next: new Map<string, EndpointState[]>() };
      planPicker({
        all: eps,
        now: 0,
        panicThreshold: 0,
        config: DEFAULT_BALANCING,
        local: undefined,
        balancer,
        filter: undefined,
        hostArrays,
      });
      return { sets: [...seen], next: hostArrays.next };
    };
    const first = plan(all, new Map());
    // The same hosts again: every locality keeps its array.
    const second = plan(all, first.next);
    expect(second.sets).toHaveLength(3);
    for (let i = 0; i < 3; i++) expect(second.sets[i]).toBe(first.sets[i]);
    // One host of b replaced: b gets a new array with the new host, a and c keep theirs.
    const replaced = [...all];
    replaced[3] = make('b', 9);
    const third = plan(replaced, second.next);
    expect(third.sets[0]).toBe(first.sets[0]);
    expect(third.sets[2]).toBe(first.sets[2]);
    expect(third.sets[1]).not.toBe(first.sets[1]);
    expect(third.sets[1]?.map((st) => st.endpoint.port)).toEqual([1001, 1009]);
    expect(first.sets[1]?.map((st) => st.endpoint.port)).toEqual([1001, 1003]);
    // Only the last plan's arrays are kept.
    expect([...third.next.values()]).toEqual(third.sets);
  });

  it('a weight change within a locality whose hosts are unchanged reaches the balancer', () => {
    const rt = runtime({ lb: 'weighted_round_robin' });
    const a = (i: number, weight: number) =>
      ep(1000 + i, { locality: { zone: 'a' }, localityWeight: 1, weight });
    const b = (i: number) => ep(2000 + i, { locality: { zone: 'b' }, localityWeight: 1 });
    rt.applyUpdate({ endpoints: [a(0, 1), a(1, 1), b(0)] });
    let counts = countPicks(rt.picker, 40_000);
    const ratio = () => (counts.get('10.0.0.1:1001') ?? 0) / (counts.get('10.0.0.1:1000') ?? 1);
    expect(Math.abs(ratio() - 1)).toBeLessThan(0.1);
    rt.applyUpdate({ endpoints: [a(0, 1), a(1, 3), b(0)] });
    counts = countPicks(rt.picker, 40_000);
    expect(Math.abs(ratio() - 3)).toBeLessThan(0.3);
  });

  it('takes locality weights from config when discovery gives none', () => {
    const rt = runtime({ balancing: { localityWeights: { 'r/a/': 9, 'r/b/': 1 } } });
    rt.applyUpdate({
      endpoints: [
        ep(1000, { locality: { region: 'r', zone: 'a' } }),
        ep(2000, { locality: { region: 'r', zone: 'b' } }),
      ],
    });
    const shares = sharesBy(rt, (p) => (p < 2000 ? 'a' : 'b'));
    expect(Math.abs((shares.get('a') ?? 0) - 0.9)).toBeLessThan(0.015);
  });
});

describe('zone-aware routing', () => {
  const zone = (z: string, base: number, healthy = 2) =>
    Array.from({ length: 2 }, (_, i) =>
      ep(base + i, { locality: { region: 'r', zone: z }, health: i < healthy ? 'healthy' : 'unhealthy' }),
    );
  const byZone = (p: number) => (p < 2000 ? 'a' : p < 3000 ? 'b' : 'c');

  it('keeps all traffic in the local zone while it has its share of capacity', () => {
    const rt = runtime({ lb: 'round_robin' }, { local: { region: 'r', zone: 'a' } });
    rt.applyUpdate({ endpoints: [...zone('a', 1000), ...zone('b', 2000), ...zone('c', 3000)] });
    expect(sharesBy(rt, byZone, 3000).get('a')).toBe(1);
  });

  it('spills the local zone’s missing capacity to zones with spare capacity', () => {
    const rt = runtime({ lb: 'round_robin' }, { local: { region: 'r', zone: 'a' } });
    rt.applyUpdate({ endpoints: [...zone('a', 1000, 1), ...zone('b', 2000), ...zone('c', 3000)] });
    // Local holds 1/5 of healthy capacity against 1/3 of callers: 60% stays, 40% spills evenly.
    const shares = sharesBy(rt, byZone);
    expect(Math.abs((shares.get('a') ?? 0) - 0.6)).toBeLessThan(0.015);
    expect(Math.abs((shares.get('b') ?? 0) - 0.2)).toBeLessThan(0.015);
  });

  it('is off below minClusterSize and for hash policies', () => {
    const small = runtime(
      { lb: 'round_robin', balancing: { zoneAware: { minClusterSize: 7 } } },
      { local: { region: 'r', zone: 'a' } },
    );
    small.applyUpdate({ endpoints: [...zone('a', 1000), ...zone('b', 2000), ...zone('c', 3000)] });
    expect(Math.abs((sharesBy(small, byZone).get('a') ?? 0) - 1 / 3)).toBeLessThan(0.015);
    const hashed = runtime({ lb: 'maglev' }, { local: { region: 'r', zone: 'a' } });
    hashed.applyUpdate({ endpoints: [...zone('a', 1000), ...zone('b', 2000), ...zone('c', 3000)] });
    expect(Math.abs((sharesBy(hashed, byZone).get('a') ?? 0) - 1 / 3)).toBeLessThan(0.02);
  });
});

describe('extension filter and hash stickiness across levels', () => {
  it('narrows each endpoint set the policy sees, and is ignored when it would empty one', () => {
    const rt = runtime({ lb: 'round_robin' });
    rt.filter = (set) => set.filter((st) => st.endpoint.port % 2 === 0);
    rt.applyUpdate({ endpoints: [ep(1000), ep(1001), ep(1002), ep(1003)] });
    expect([...countPicks(rt.picker, 100).keys()].sort()).toEqual(['10.0.0.1:1000', '10.0.0.1:1002']);
    rt.filter = () => [];
    rt.rebuild();
    expect(countPicks(rt.picker, 100).size).toBe(4);
  });

  it('a hashed request keeps its priority level as well as its endpoint', () => {
    const rt = runtime({ lb: { policy: 'maglev', hashPolicy: { header: 'x-user' } } });
    rt.applyUpdate({ endpoints: [...level(0, 5, 10, 1000), ...level(1, 10, 10, 2000)] });
    for (let u = 0; u < 50; u++) {
      const hash = rt.requestHash({ 'x-user': `u${u}` });
      const first = rt.pick({ attempt: 0, hash });
      for (let i = 0; i < 5; i++) expect(rt.pick({ attempt: 0, hash })).toBe(first);
    }
    const shares = sharesBy(rt, byPriority);
    expect(Math.abs((shares.get('P0') ?? 0) - 0.7)).toBeLessThan(0.02);
  });
});
