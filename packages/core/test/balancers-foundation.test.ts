import { describe, expect, it } from 'vitest';
import {
  EndpointState,
  leastRequest,
  makeEndpoint,
  type Picker,
  type PickResult,
  peakEwma,
  roundRobin,
} from '../src/index.js';

function states(n: number): EndpointState[] {
  return Array.from(
    { length: n },
    (_, i) => new EndpointState('svc', makeEndpoint({ address: '10.0.0.1', port: 1000 + i }), 0),
  );
}

function pickMany(picker: Picker, n: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const r = picker.pick({ attempt: 0 });
    if (r.kind !== 'pick') throw new Error(`unexpected ${r.kind}`);
    const id = r.endpoint.id;
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

function idOf(r: PickResult): string {
  if (r.kind !== 'pick') throw new Error(`unexpected ${r.kind}`);
  return r.endpoint.id;
}

describe('EndpointState', () => {
  it('has one pick result and one slot array, created on first use and reused', () => {
    const [st] = states(1) as [EndpointState];
    const picked = st.picked;
    expect(picked).toEqual({ kind: 'pick', endpoint: st });
    expect(Object.isFrozen(picked)).toBe(true);
    expect(st.picked).toBe(picked);
    const picker = roundRobin.create(undefined).update([st]);
    expect(picker.pick({ attempt: 0 })).toBe(picked);
    const slots = st.slots;
    slots[3] = 'pool';
    expect(st.slots).toBe(slots);
    expect(st.slots[3]).toBe('pool');
    expect(states(1)[0]?.slots[3]).toBeUndefined();
  });
});

describe('round_robin', () => {
  it('visits every endpoint in turn', () => {
    const eps = states(4);
    const picker = roundRobin.create(undefined).update(eps);
    const seq = Array.from({ length: 8 }, () => idOf(picker.pick({ attempt: 0 })));
    expect(new Set(seq.slice(0, 4)).size).toBe(4);
    expect(seq.slice(4)).toEqual(seq.slice(0, 4));
  });

  it('spreads exactly evenly', () => {
    const counts = pickMany(roundRobin.create(undefined).update(states(5)), 5000);
    expect([...counts.values()]).toEqual([1000, 1000, 1000, 1000, 1000]);
  });

  it('keeps its position across picker rebuilds', () => {
    const eps = states(3);
    const lb = roundRobin.create(undefined);
    const first = idOf(lb.update(eps).pick({ attempt: 0 }));
    const second = idOf(lb.update(eps).pick({ attempt: 0 }));
    expect(second).not.toBe(first);
  });
});

describe('least_request (P2C)', () => {
  const config = leastRequest.parseConfig({}, 'lb', []);

  it('spreads evenly when loads are equal', () => {
    const counts = pickMany(leastRequest.create(config).update(states(4)), 40_000);
    for (const c of counts.values()) expect(Math.abs(c - 10_000)).toBeLessThan(600);
  });

  it('never picks the most loaded of two', () => {
    const eps = states(2);
    (eps[0] as EndpointState).active = 5;
    const counts = pickMany(leastRequest.create(config).update(eps), 1000);
    expect(counts.get((eps[1] as EndpointState).id)).toBe(1000);
  });

  it('avoids a loaded endpoint among many', () => {
    const eps = states(10);
    (eps[3] as EndpointState).active = 100;
    const counts = pickMany(leastRequest.create(config).update(eps), 10_000);
    // The loaded endpoint wins only when both choices are it, which P2C never samples twice.
    expect(counts.get((eps[3] as EndpointState).id) ?? 0).toBe(0);
  });

  it('honours weights with an active-request bias', () => {
    const eps = [
      new EndpointState('svc', makeEndpoint({ address: '10.0.0.1', port: 1, weight: 3 }), 0),
      new EndpointState('svc', makeEndpoint({ address: '10.0.0.1', port: 2, weight: 1 }), 0),
      new EndpointState('svc', makeEndpoint({ address: '10.0.0.1', port: 3, weight: 1 }), 0),
    ];
    const counts = pickMany(leastRequest.create(config).update(eps), 30_000);
    const heavy = counts.get('10.0.0.1:1') ?? 0;
    expect(heavy).toBeGreaterThan(counts.get('10.0.0.1:2') ?? 0);
    expect(heavy).toBeGreaterThan(counts.get('10.0.0.1:3') ?? 0);
  });
});

describe('peak_ewma with a never-observed endpoint', () => {
  it('sends it one probe at once, and no flood while the probe is out', () => {
    const [seen, fresh] = states(2) as [EndpointState, EndpointState];
    seen.ewmaMs = 1;
    seen.ewmaStamp = 0;
    const picker = peakEwma
      .create(peakEwma.parseConfig({}, 'lb', []), { now: () => 0, clock: { ms: 0 } })
      .update([seen, fresh]);
    expect(idOf(picker.pick({ attempt: 0 }))).toBe(fresh.id);
    fresh.active = 1; // the probe is in flight: now it costs the mean (1ms) x 2 in flight
    const counts = pickMany(picker, 100);
    expect(counts.get(seen.id)).toBe(100);
  });
});
