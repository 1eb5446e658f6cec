import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type Endpoint,
  type EndpointState,
  MeshEvents,
  makeEndpoint,
  parseConfig,
  ServiceRuntime,
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
