import { describe, expect, it } from 'vitest';
import {
  buildMaglevTable,
  computeRequestHash,
  EndpointState,
  HashRing,
  maglev,
  murmur3,
  parseHashPolicy,
  ringHash,
} from '../src/index.js';
import { ep, runtime, states } from './lb-helpers.js';

const KEYS = 100_000;
const ids = (n: number) => Array.from({ length: n }, (_, i) => `10.1.${i >> 8}.${i & 255}:8080`);

/** Owner id of every key hash under a lookup. */
function owners(lookup: (h: number) => string): string[] {
  const out: string[] = [];
  for (let k = 0; k < KEYS; k++) out.push(lookup(murmur3(`user-${k}`)));
  return out;
}

function movement(before: string[], after: string[], removed: string) {
  let ownedByRemoved = 0;
  let movedOthers = 0;
  for (let k = 0; k < KEYS; k++) {
    if (before[k] === removed) {
      ownedByRemoved++;
      expect(after[k]).not.toBe(removed);
    } else if (before[k] !== after[k]) movedOthers++;
  }
  return { ownedByRemoved: ownedByRemoved / KEYS, movedOthers: movedOthers / KEYS };
}

describe('consistent hashing: removing one host moves only its share of keys', () => {
  for (const n of [5, 10, 50]) {
    it(`ring_hash with ${n} hosts`, () => {
      const all = ids(n);
      const rest = all.filter((_, i) => i !== 2);
      const r1 = new HashRing(
        all,
        all.map(() => 1),
        1024,
        8_388_608,
      );
      const r2 = new HashRing(
        rest,
        rest.map(() => 1),
        1024,
        8_388_608,
      );
      const m = movement(
        owners((h) => all[r1.lookup(h)] as string),
        owners((h) => rest[r2.lookup(h)] as string),
        all[2] as string,
      );
      expect(m.movedOthers).toBe(0);
      expect(m.ownedByRemoved).toBeGreaterThan(0.4 / n);
      expect(m.ownedByRemoved).toBeLessThan(1.8 / n);
    });

    it(`maglev with ${n} hosts`, () => {
      const all = ids(n);
      const rest = all.filter((_, i) => i !== 2);
      const t1 = buildMaglevTable(
        all,
        all.map(() => 1),
        65537,
      );
      const t2 = buildMaglevTable(
        rest,
        rest.map(() => 1),
        65537,
      );
      const m = movement(
        owners((h) => all[t1[h % 65537] as number] as string),
        owners((h) => rest[t2[h % 65537] as number] as string),
        all[2] as string,
      );
      // Maglev trades a little disruption for perfect balance; the paper measures a few percent.
      expect(m.ownedByRemoved).toBeGreaterThan(0.9 / n);
      expect(m.ownedByRemoved).toBeLessThan(1.1 / n);
      expect(m.movedOthers).toBeLessThan(0.03);
    });
  }

  it('the maglev table gives every host its weighted share of slots', () => {
    const all = ids(4);
    const t = buildMaglevTable(all, [1, 1, 2, 4], 65537);
    const slots = [0, 0, 0, 0];
    for (const o of t) slots[o] = (slots[o] as number) + 1;
    expect(slots.reduce((a, b) => a + b, 0)).toBe(65537);
    expect(Math.abs((slots[3] as number) / 65537 - 0.5)).toBeLessThan(0.01);
    expect(Math.abs((slots[0] as number) / 65537 - 0.125)).toBeLessThan(0.01);
  });

  it('a ring keeps its resolution when a host goes (points per weight unit are a power of two)', () => {
    const ten = new HashRing(ids(10), Array(10).fill(1), 1024, 8_388_608);
    const nine = new HashRing(ids(9), Array(9).fill(1), 1024, 8_388_608);
    expect(ten.hashes.length).toBe(1280);
    expect(nine.hashes.length).toBe(1152);
    const capped = new HashRing(ids(10), Array(10).fill(1), 1_000_000, 5000);
    expect(capped.hashes.length).toBeLessThanOrEqual(5000);
  });
});

describe('request hash', () => {
  const rules = parseHashPolicy(
    [{ header: 'X-User' }, { cookie: 'sid' }, { sourceIp: true }],
    'lb.hashPolicy',
    [],
  );

  it('uses the first rule that yields a value: header, then cookie, then source IP', () => {
    expect(computeRequestHash(rules, { 'x-user': 'alice' })).toBe(murmur3('alice'));
    expect(computeRequestHash(rules, { 'X-User': 'alice' })).toBe(murmur3('alice'));
    expect(computeRequestHash(rules, ['X-User', 'alice', 'cookie', 'sid=s1'])).toBe(murmur3('alice'));
    expect(computeRequestHash(rules, new Map([['cookie', 'a=1; sid=s1; b=2']]))).toBe(murmur3('s1'));
    expect(computeRequestHash(rules, {}, '192.0.2.7')).toBe(murmur3('192.0.2.7'));
  });

  it('is random when no rule matches, so unkeyed requests spread', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 50; i++) seen.add(computeRequestHash(rules, {}));
    expect(seen.size).toBeGreaterThan(45);
  });

  it('sticks a key to one endpoint through ServiceRuntime, and only hash policies compute one', () => {
    for (const policy of ['ring_hash', 'maglev']) {
      const rt = runtime({ lb: { policy, hashPolicy: [{ header: 'x-user' }] } });
      rt.applyUpdate({ endpoints: [ep(1), ep(2), ep(3), ep(4)] });
      const hash = rt.requestHash({ 'x-user': 'bob' });
      expect(hash).toBe(murmur3('bob'));
      const first = rt.pick({ attempt: 0, hash });
      for (let i = 0; i < 20; i++) expect(rt.pick({ attempt: 0, hash })).toBe(first);
    }
    expect(runtime({ lb: 'peak_ewma' }).requestHash({ 'x-user': 'bob' })).toBeUndefined();
  });
});

describe('hash policies reuse their ring or table across rebuilds that do not change it', () => {
  for (const factory of [ringHash, maglev]) {
    it(`${factory.name}`, () => {
      const lb = factory.create(undefined as never);
      const eps = states(5);
      const first = lb.update(eps);
      expect(lb.update([...eps])).toBe(first);
      // Same ids but a new EndpointState (removed and re-added): a new picker with the new state.
      const replaced = [...eps];
      replaced[0] = new EndpointState('svc', ep(1000), 0);
      const second = lb.update(replaced);
      expect(second).not.toBe(first);
      let sawNew = false;
      for (let h = 0; h < 5000 && !sawNew; h++) {
        const r = second.pick({ attempt: 0, hash: murmur3(String(h)) });
        if (r.kind === 'pick' && r.endpoint === replaced[0]) sawNew = true;
        if (r.kind === 'pick') expect(r.endpoint).not.toBe(eps[0]);
      }
      expect(sawNew).toBe(true);
    });
  }
});
