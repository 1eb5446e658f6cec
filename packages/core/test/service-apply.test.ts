import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type Endpoint,
  type EndpointState,
  MeshEvents,
  makeEndpoint,
  parseConfig,
  ServiceRuntime,
  segmentedUpdate,
} from '../src/index.js';

const runtime = () => {
  const events = new MeshEvents();
  const removed: string[] = [];
  events.on('endpointRemoved', (e) => removed.push(e.endpoint.id));
  const rt = new ServiceRuntime('svc', parseConfig({}).defaults, 'static', events, () => 0);
  return { rt, removed };
};

const ep = (i: number, weight = 1, zone = 'a') =>
  makeEndpoint({ address: `10.0.0.${i}`, port: 80, weight, locality: { zone } });

describe('ServiceRuntime.applyUpdate (diff)', () => {
  it('keeps every state and the picker when the same endpoint objects come again', () => {
    const { rt } = runtime();
    const eps = Array.from({ length: 50 }, (_, i) => ep(i));
    rt.applyUpdate({ endpoints: eps });
    const states = rt.endpoints;
    const picker = rt.picker;
    (states[3] as { active: number }).active = 2;
    rt.applyUpdate({ endpoints: [...eps] });
    expect(rt.endpoints).toBe(states);
    expect(rt.picker).toBe(picker);
    expect(rt.endpoint('10.0.0.3:80')?.active).toBe(2);
  });

  it('a one-endpoint change keeps the state of every endpoint and rebuilds the picker', () => {
    const { rt, removed } = runtime();
    const eps = Array.from({ length: 50 }, (_, i) => ep(i));
    rt.applyUpdate({ endpoints: eps });
    const before = [...rt.endpoints];
    const picker = rt.picker;
    const next = [...eps];
    next[17] = ep(17, 1, 'b'); // another zone
    rt.applyUpdate({ endpoints: next });
    expect(rt.endpoints).toEqual(before);
    expect(rt.endpoints.every((s, i) => s === before[i])).toBe(true);
    expect(rt.endpoint('10.0.0.17:80')?.endpoint.locality.zone).toBe('b');
    expect(rt.picker).not.toBe(picker);
    expect(removed).toEqual([]);
  });

  it('a weight-only change updates lbWeight in place for policies that read it live, else rebuilds', () => {
    const eps = Array.from({ length: 50 }, (_, i) => ep(i));
    const next = [...eps];
    next[17] = ep(17, 5);
    // peak_ewma (the default) divides by lbWeight when it picks: no new picker needed.
    const { rt } = runtime();
    rt.applyUpdate({ endpoints: eps });
    const picker = rt.picker;
    const st = rt.endpoint('10.0.0.17:80');
    rt.applyUpdate({ endpoints: next });
    expect(rt.picker).toBe(picker);
    expect(st?.endpoint.weight).toBe(5);
    expect(st?.lbWeight).toBe(5);
    // weighted_round_robin builds its schedule from the weights: a new picker.
    const events = new MeshEvents();
    const wrr = new ServiceRuntime(
      'svc',
      parseConfig({ defaults: { lb: 'weighted_round_robin' } }).defaults,
      'static',
      events,
      () => 0,
    );
    wrr.applyUpdate({ endpoints: eps });
    const wrrPicker = wrr.picker;
    wrr.applyUpdate({ endpoints: next });
    expect(wrr.picker).not.toBe(wrrPicker);
    expect(wrr.endpoint('10.0.0.17:80')?.lbWeight).toBe(5);
    const counts = new Map<string, number>();
    for (let i = 0; i < 540; i++) {
      const r = wrr.pick({ attempt: 0 });
      if (r.kind === 'pick') counts.set(r.endpoint.id, (counts.get(r.endpoint.id) ?? 0) + 1);
    }
    expect(counts.get('10.0.0.17:80')).toBe(50); // 5 of every 54
  });

  it('equal endpoints in new objects change nothing; reordering keeps states', () => {
    const { rt } = runtime();
    rt.applyUpdate({ endpoints: [ep(1), ep(2), ep(3)] });
    const [a, b, c] = rt.endpoints;
    const picker = rt.picker;
    rt.applyUpdate({ endpoints: [ep(1), ep(2), ep(3)] });
    expect(rt.picker).toBe(picker);
    rt.applyUpdate({ endpoints: [ep(3), ep(1), ep(2)] });
    expect(rt.endpoints).toEqual([c, a, b]);
    expect(rt.endpoints[0]).toBe(c);
  });

  it('duplicates: the first occurrence wins (same object or same id)', () => {
    const { rt, removed } = runtime();
    const one = ep(1);
    rt.applyUpdate({ endpoints: [one, ep(2), one, ep(2, 9)] });
    expect(rt.endpoints.map((s) => [s.id, s.endpoint.weight])).toEqual([
      ['10.0.0.1:80', 1],
      ['10.0.0.2:80', 1],
    ]);
    const [s1, s2] = rt.endpoints;
    rt.applyUpdate({ endpoints: [one, one] });
    expect(rt.endpoints).toEqual([s1]);
    expect(removed).toEqual(['10.0.0.2:80']);
    rt.applyUpdate({ endpoints: [ep(2, 3), one, ep(2, 4)] });
    expect(rt.endpoints[1]).toBe(s1);
    expect(rt.endpoints[0]).not.toBe(s2);
    expect(rt.endpoints[0]?.endpoint.weight).toBe(3);
  });

  it('a source that mutates and re-sends the same array is diffed correctly', () => {
    const { rt, removed } = runtime();
    const arr: Endpoint[] = [ep(1), ep(2), ep(3)];
    rt.applyUpdate({ endpoints: arr });
    const [s1, , s3] = rt.endpoints;
    arr[1] = ep(4);
    rt.applyUpdate({ endpoints: arr });
    expect(rt.endpoints.map((s) => s.id)).toEqual(['10.0.0.1:80', '10.0.0.4:80', '10.0.0.3:80']);
    expect(rt.endpoints[0]).toBe(s1);
    expect(rt.endpoints[2]).toBe(s3);
    expect(removed).toEqual(['10.0.0.2:80']);
  });

  it('matches a straightforward model for random sequences of updates', () => {
    // A pool of endpoint objects: 6 ids, 2 attribute variants each, so updates mix reused objects,
    // equal objects, changed attributes, duplicates, reorders, additions and removals.
    const pool = Array.from({ length: 6 }, (_, i) => [ep(i, 1), ep(i, 2, 'b')]).flat();
    const update = fc.array(fc.nat(pool.length - 1), { maxLength: 10 });
    fc.assert(
      fc.property(fc.array(update, { minLength: 1, maxLength: 8 }), (updates) => {
        const { rt, removed } = runtime();
        let prev = new Map<string, unknown>();
        let expectedRemoved: string[] = [];
        for (const u of updates) {
          const eps = u.map((i) => pool[i] as Endpoint);
          const first = new Map<string, Endpoint>();
          for (const e of eps) if (!first.has(e.id)) first.set(e.id, e);
          const before = new Map(rt.endpoints.map((s) => [s.id, s]));
          rt.applyUpdate({ endpoints: eps });
          expectedRemoved = [...expectedRemoved, ...[...before.keys()].filter((id) => !first.has(id))];
          expect(rt.endpoints.map((s) => s.id)).toEqual([...first.keys()]);
          for (const s of rt.endpoints) {
            expect(s.endpoint).toStrictEqual(first.get(s.id));
            expect(rt.endpoint(s.id)).toBe(s);
            // State survives while the id stays.
            if (before.has(s.id)) expect(s).toBe(before.get(s.id));
          }
          expect(removed.slice().sort()).toEqual(expectedRemoved.slice().sort());
          for (const id of before.keys()) if (!first.has(id)) expect(rt.endpoint(id)).toBeUndefined();
          prev = new Map(rt.endpoints.map((s) => [s.id, s]));
        }
        expect(prev.size).toBe(rt.endpoints.length);
      }),
      { numRuns: 300 },
    );
  });
});

/** A segmented update whose flat list must not be read (the runtime reads the parts). */
const parts = (segments: readonly (readonly Endpoint[])[], version?: string) => ({
  get endpoints(): readonly Endpoint[] {
    throw new Error('the flat endpoints list was read');
  },
  segments,
  version,
});

const locality = (zone: string, from: number, n: number, priority = 0, weight = 1) =>
  Object.freeze(
    Array.from({ length: n }, (_, j) =>
      makeEndpoint({ address: `10.0.0.${from + j}`, port: 80, weight, priority, locality: { zone } }),
    ),
  );

describe('ServiceRuntime.applyUpdate with segments (per-locality parts)', () => {
  it('an unchanged part keeps its states without reading the flat list; a changed one is diffed', () => {
    const { rt, removed } = runtime();
    const a = locality('a', 0, 20);
    const b = locality('b', 20, 20);
    const c = locality('c', 40, 20);
    rt.applyUpdate(parts([a, b, c], 'v1'));
    expect(rt.endpoints.map((s) => s.id)).toEqual([...a, ...b, ...c].map((e) => e.id));
    const before = [...rt.endpoints];
    (rt.endpoint('10.0.0.3:80') as { active: number }).active = 4;
    (rt.endpoint('10.0.0.45:80') as { active: number }).active = 2;
    const picker = rt.picker;
    // Locality b changes: endpoint 25 re-weighted, 30 removed, 99 added at its end.
    const b2 = Object.freeze([
      ...b.slice(0, 5),
      makeEndpoint({ address: '10.0.0.25', port: 80, weight: 7, locality: { zone: 'b' } }),
      ...b.slice(6, 10),
      ...b.slice(11),
      makeEndpoint({ address: '10.0.0.99', port: 80, locality: { zone: 'b' } }),
    ]);
    rt.applyUpdate(parts([a, b2, c], 'v2'));
    expect(rt.discovery.version).toBe('v2');
    expect(rt.endpoints.map((s) => s.id)).toEqual([...a, ...b2, ...c].map((e) => e.id));
    for (const s of rt.endpoints) if (s.id !== '10.0.0.99:80') expect(before).toContain(s);
    expect(rt.endpoints.slice(0, 20)).toEqual(before.slice(0, 20));
    expect(rt.endpoint('10.0.0.3:80')?.active).toBe(4);
    expect(rt.endpoint('10.0.0.45:80')?.active).toBe(2);
    expect(rt.endpoint('10.0.0.25:80')?.endpoint.weight).toBe(7);
    expect(rt.endpoint('10.0.0.25:80')).toBe(before[25]);
    expect(rt.endpoint('10.0.0.30:80')).toBeUndefined();
    expect(removed).toEqual(['10.0.0.30:80']);
    expect(rt.picker).not.toBe(picker);
    // Nothing changed at all: the same list and picker.
    const all = rt.endpoints;
    const picker2 = rt.picker;
    rt.applyUpdate(parts([a, b2, c], 'v3'));
    expect(rt.endpoints).toBe(all);
    expect(rt.picker).toBe(picker2);
  });

  it('a removed part removes its endpoints; parts may move, be re-split or come flat', () => {
    const { rt, removed } = runtime();
    const a = locality('a', 0, 5);
    const b = locality('b', 5, 5);
    const c = locality('c', 10, 5);
    rt.applyUpdate(parts([a, b, c]));
    const sa = rt.endpoints.slice(0, 5);
    const sc = rt.endpoints.slice(10, 15);
    rt.applyUpdate(parts([a, c]));
    expect(removed).toEqual(b.map((e) => e.id));
    expect(rt.endpoints).toEqual([...sa, ...sc]);
    expect(rt.endpoints.every((s, i) => s === [...sa, ...sc][i])).toBe(true);
    // Moved (c first), then the same endpoints as one flat list, then as parts again.
    rt.applyUpdate(parts([c, a]));
    expect(rt.endpoints.map((s) => s.id)).toEqual([...c, ...a].map((e) => e.id));
    rt.applyUpdate({ endpoints: [...a, ...c] });
    expect(rt.endpoints.map((s) => s.id)).toEqual([...a, ...c].map((e) => e.id));
    rt.applyUpdate(parts([a.slice(0, 2), a.slice(2), c]));
    expect(rt.endpoints.map((s) => s.id)).toEqual([...a, ...c].map((e) => e.id));
    expect(rt.endpoints.slice(0, 5).every((s, i) => s === sa[i])).toBe(true);
    expect(removed).toEqual(b.map((e) => e.id));
    // An empty update removes everything.
    rt.applyUpdate(parts([]));
    expect(rt.endpoints).toEqual([]);
    expect(removed.length).toBe(15);
  });

  it('an endpoint in two parts is listed once (the first wins), whichever part is reused', () => {
    const { rt } = runtime();
    const a = locality('a', 0, 3);
    const b = locality('b', 3, 3);
    rt.applyUpdate(parts([a, b]));
    // b now also lists endpoint 1 (in zone b): a, the reused part, wins.
    const b2 = Object.freeze([
      ...b,
      makeEndpoint({ address: '10.0.0.1', port: 80, locality: { zone: 'b' } }),
    ]);
    rt.applyUpdate(parts([a, b2]));
    expect(rt.endpoints.map((s) => s.id)).toEqual([...a, ...b].map((e) => e.id));
    expect(rt.endpoint('10.0.0.1:80')?.endpoint.locality.zone).toBe('a');
    // The changed part first: it wins over the reused one.
    rt.applyUpdate(parts([b2, a]));
    expect(rt.endpoints.map((s) => s.id)).toEqual([
      '10.0.0.3:80',
      '10.0.0.4:80',
      '10.0.0.5:80',
      '10.0.0.1:80',
      '10.0.0.0:80',
      '10.0.0.2:80',
    ]);
    expect(rt.endpoint('10.0.0.1:80')?.endpoint.locality.zone).toBe('b');
    rt.applyUpdate(parts([a, b]));
    expect(rt.endpoints.map((s) => s.id)).toEqual([...a, ...b].map((e) => e.id));
    expect(rt.endpoint('10.0.0.1:80')?.endpoint.locality.zone).toBe('a');
  });

  it('priorities still fail over when a part of priority 0 turns unhealthy', () => {
    const { rt } = runtime();
    const p0 = locality('a', 0, 4, 0);
    const p1 = locality('b', 4, 4, 1);
    rt.applyUpdate(parts([p0, p1]));
    expect(rt.priorityLoad.get(0)).toBe(100);
    const down = Object.freeze(p0.map((e) => Object.freeze({ ...e, health: 'unhealthy' as const })));
    rt.applyUpdate(parts([down, p1]));
    expect(rt.priorityLoad.get(0) ?? 0).toBe(0);
    expect(rt.priorityLoad.get(1)).toBe(100);
    const picked = new Set<string>();
    for (let i = 0; i < 50; i++) {
      const r = rt.pick({ attempt: 0 });
      if (r.kind === 'pick') picked.add(r.endpoint.id);
    }
    expect([...picked].every((id) => p1.some((e) => e.id === id))).toBe(true);
    rt.applyUpdate(parts([p0, p1]));
    expect(rt.priorityLoad.get(0)).toBe(100);
  });

  it('segmentedUpdate builds the flat list once, on first read; the endpoints event reads it lazily', () => {
    const a = locality('a', 0, 3);
    const b = locality('b', 3, 3);
    const u = segmentedUpdate([a, b], 'v');
    expect(u.endpoints).toEqual([...a, ...b]);
    expect(u.endpoints).toBe(u.endpoints);
    expect(segmentedUpdate([a]).endpoints).toBe(a);
    const { rt } = runtime();
    let seen: readonly Endpoint[] | undefined;
    rt.events.on('endpoints', (e) => {
      seen = e.endpoints;
    });
    rt.applyUpdate(u);
    expect(seen).toEqual([...a, ...b]);
  });

  it('matches the flat path for random sequences of parts (reused, changed, duplicated, moved)', () => {
    // A pool of parts: objects reused by identity across updates, with overlapping ids.
    const pool = [
      locality('a', 0, 3),
      locality('b', 3, 3),
      locality('c', 6, 3),
      locality('a', 0, 3, 0, 2),
      locality('b', 2, 4),
      locality('d', 9, 2, 1),
    ];
    // Now and then an update of the same endpoints comes flat (as another source would send it).
    const update = fc.tuple(fc.array(fc.nat(pool.length - 1), { maxLength: 5 }), fc.nat(4));
    fc.assert(
      fc.property(fc.array(update, { minLength: 1, maxLength: 8 }), (updates) => {
        const seg = runtime();
        const flat = runtime();
        for (const [u, asFlat] of updates) {
          const segments = u.map((i) => pool[i] as readonly Endpoint[]);
          const before = new Map(seg.rt.endpoints.map((s) => [s.id, s]));
          seg.rt.applyUpdate(asFlat === 0 ? { endpoints: segments.flat() } : parts(segments));
          flat.rt.applyUpdate({ endpoints: segments.flat() });
          expect(seg.rt.endpoints.map((s) => [s.id, s.endpoint])).toEqual(
            flat.rt.endpoints.map((s) => [s.id, s.endpoint]),
          );
          for (const s of seg.rt.endpoints) {
            expect(s.endpoint).toBe(flat.rt.endpoint(s.id)?.endpoint);
            expect(seg.rt.endpoint(s.id)).toBe(s);
            if (before.has(s.id)) expect(s).toBe(before.get(s.id));
          }
          expect(seg.removed).toEqual(flat.removed);
          expect(seg.rt.priorityLoad).toEqual(flat.rt.priorityLoad);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('what transports tell a service, and watch of it', () => {
  it('reportConnectivity: an endpoint is out of rotation while any reporter says it is unreachable', () => {
    const { rt } = runtime();
    const health: Array<[string, boolean, string]> = [];
    rt.events.on('health', (e) => health.push([e.endpoint, e.healthy, e.reason]));
    rt.applyUpdate({ endpoints: [ep(1), ep(2)] });
    const [a, b] = rt.endpoints as [EndpointState, EndpointState];
    const picked = (): string => {
      const r = rt.pick({ attempt: 0 });
      return r.kind === 'pick' ? r.endpoint.id : r.kind;
    };
    const picks = () => new Set(Array.from({ length: 50 }, picked));
    // Two channels report the same endpoint: it comes back only when both say so.
    rt.reportConnectivity(a, false, 'connection refused');
    rt.reportConnectivity(a, false, 'connection refused');
    expect(a.unreachable).toBe(2);
    expect(a.activeHealth).toBe('unknown'); // health checks' verdict is their own
    expect(picks()).toEqual(new Set([b.id]));
    rt.reportConnectivity(a, true, 'READY');
    expect(picks()).toEqual(new Set([b.id]));
    rt.reportConnectivity(a, true, 'READY');
    expect(picks()).toEqual(new Set([a.id, b.id]));
    // One event per change of the endpoint's state, not per report.
    expect(health).toEqual([
      [a.id, false, 'connection refused'],
      [a.id, true, 'READY'],
    ]);
  });

  it('watchEndpoints: runs after a change of the set, after a discovery error, and when the service closes', () => {
    const { rt } = runtime();
    const seen: string[] = [];
    const stop = rt.watchEndpoints((r) => seen.push(r.closed ? 'closed' : `${r.endpoints.length}`));
    rt.applyUpdate({ endpoints: [ep(1)] });
    rt.applyUpdate({ endpoints: [ep(1)] }); // nothing changed
    rt.applyUpdate({ endpoints: [ep(1), ep(2)] });
    rt.applyError(new Error('api server down'));
    rt.close();
    expect(seen).toEqual(['1', '2', '2', 'closed']);
    stop();
  });
});
