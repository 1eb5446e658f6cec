import { isDeepStrictEqual } from 'node:util';
import { Mesh, parseConfig } from '@meshlet/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type EdsState, peekClusterName, translateEndpointsIncremental } from '../src/eds.js';
import {
  decodeMessage,
  EDS_TYPE,
  type EndpointsUpdate,
  encodeMessage,
  fromJson,
  type Msg,
  translateEndpoints,
} from '../src/index.js';
import { lookupType } from '../src/protos.js';
import { discoveryUpdateOf } from '../src/resolver.js';
import { gatewayFixtureResources, jsonFixtureResources } from './fixture-loader.js';

// ---- a tiny protobuf writer, to lay out messages as encoders may (field order, unknown fields) ----

function varint(n: number): number[] {
  const out: number[] = [];
  let v = n >>> 0;
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  out.push(v);
  return out;
}

function lenField(field: number, payload: Uint8Array): Uint8Array {
  return Buffer.concat([Buffer.from(varint((field << 3) | 2)), Buffer.from(varint(payload.length)), payload]);
}

/** Unknown fields of every wire type (field numbers no Envoy message here uses). */
function unknownField(kind: number): Uint8Array {
  switch (kind % 4) {
    case 0:
      return Buffer.from([...varint((901 << 3) | 0), ...varint(300)]);
    case 1:
      return Buffer.from([...varint((902 << 3) | 1), 1, 2, 3, 4, 5, 6, 7, 8]);
    case 2:
      return lenField(903, Buffer.from('opaque'));
    default:
      return Buffer.from([...varint((904 << 3) | 5), 9, 9, 9, 9]);
  }
}

const encode = (type: string, obj: Msg) => lookupType(type).encode(lookupType(type).fromObject(obj)).finish();

// ---- the model the generators build ------------------------------------------------------------

interface LbeModel {
  address: string;
  port: number;
  health: number;
  weight: number | undefined;
  hostname: string | undefined;
  metadata: boolean;
  pipe: boolean;
  unknown: number | undefined;
}

interface LleModel {
  region: string;
  zone: string;
  weight: number | undefined;
  priority: number;
  lbes: LbeModel[];
  /** Write lb_endpoints after the other fields (protobuf allows any order). */
  endpointsLast: boolean;
  unknown: number | undefined;
}

interface ClaModel {
  localities: LleModel[];
  drop: number | undefined;
  unknown: number | undefined;
}

function encodeLbe(m: LbeModel): Uint8Array {
  const obj: Msg = {
    endpoint: m.pipe
      ? { address: { pipe: { path: '/var/run/x.sock' } } }
      : {
          address: { socketAddress: { address: m.address, portValue: m.port } },
          ...(m.hostname === undefined ? {} : { hostname: m.hostname }),
        },
    healthStatus: m.health,
  };
  if (m.weight !== undefined) obj.loadBalancingWeight = { value: m.weight };
  if (m.metadata)
    obj.metadata = {
      filterMetadata: { istio: { fields: { workload: { stringValue: `w-${m.address}` } } } },
    };
  const bytes = encode('envoy.config.endpoint.v3.LbEndpoint', obj);
  return m.unknown === undefined ? bytes : Buffer.concat([bytes, unknownField(m.unknown)]);
}

function encodeLle(m: LleModel): Uint8Array {
  const head: Msg = { priority: m.priority };
  if (m.region !== '' || m.zone !== '') head.locality = { region: m.region, zone: m.zone };
  if (m.weight !== undefined) head.loadBalancingWeight = { value: m.weight };
  const headBytes = encode('envoy.config.endpoint.v3.LocalityLbEndpoints', head);
  const lbes = m.lbes.map((l) => lenField(2, encodeLbe(l)));
  const parts = m.endpointsLast ? [headBytes, ...lbes] : [...lbes, headBytes];
  if (m.unknown !== undefined) parts.splice(m.unknown % (parts.length + 1), 0, unknownField(m.unknown));
  return Buffer.concat(parts);
}

function encodeCla(m: ClaModel): Uint8Array {
  const parts: Uint8Array[] = [lenField(1, Buffer.from('big'))];
  for (const l of m.localities) parts.push(lenField(2, encodeLle(l)));
  if (m.drop !== undefined)
    parts.push(
      lenField(
        4,
        encode('envoy.config.endpoint.v3.ClusterLoadAssignment.Policy', {
          dropOverloads: [{ category: 'lb', dropPercentage: { numerator: m.drop, denominator: 2 } }],
        }),
      ),
    );
  if (m.unknown !== undefined) parts.splice(1 + (m.unknown % parts.length), 0, unknownField(m.unknown));
  return Buffer.concat(parts);
}

// Small value sets, so that edits collide with existing values (same address, same locality).
const lbeArb: fc.Arbitrary<LbeModel> = fc.record({
  address: fc.constantFrom('10.0.0.1', '10.0.0.2', '10.0.0.3', 'db.internal', '::1', 'fe80::2', ''),
  port: fc.constantFrom(8000, 8001, 8002, 0, 70000),
  health: fc.integer({ min: 0, max: 6 }),
  weight: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }),
  hostname: fc.option(fc.constantFrom('a.example', ''), { nil: undefined }),
  metadata: fc.boolean(),
  pipe: fc.nat(9).map((x) => x === 0),
  unknown: fc.option(fc.nat(7), { nil: undefined }),
});

const lleArb: fc.Arbitrary<LleModel> = fc.record({
  region: fc.constantFrom('', 'us'),
  zone: fc.constantFrom('', 'a', 'b'),
  weight: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }),
  priority: fc.integer({ min: 0, max: 2 }),
  lbes: fc.array(lbeArb, { maxLength: 6 }),
  endpointsLast: fc.boolean(),
  unknown: fc.option(fc.nat(7), { nil: undefined }),
});

const claArb: fc.Arbitrary<ClaModel> = fc.record({
  localities: fc.array(lleArb, { maxLength: 4 }),
  drop: fc.option(fc.nat(1_000_000), { nil: undefined }),
  unknown: fc.option(fc.nat(7), { nil: undefined }),
});

type Edit =
  | { kind: 'addLocality'; at: number; lle: LleModel }
  | { kind: 'removeLocality'; at: number }
  | { kind: 'swapLocalities'; a: number; b: number }
  | { kind: 'addEndpoint'; loc: number; at: number; lbe: LbeModel }
  | { kind: 'removeEndpoint'; loc: number; at: number }
  | { kind: 'swapEndpoints'; loc: number; a: number; b: number }
  | { kind: 'endpointWeight'; loc: number; at: number; weight: number | undefined }
  | { kind: 'endpointHealth'; loc: number; at: number; health: number }
  | { kind: 'endpointPort'; loc: number; at: number; port: number }
  | { kind: 'endpointAddress'; loc: number; at: number; address: string }
  | { kind: 'endpointHostname'; loc: number; at: number; hostname: string | undefined }
  | { kind: 'endpointMetadata'; loc: number; at: number }
  | { kind: 'localityWeight'; loc: number; weight: number | undefined }
  | { kind: 'localityZone'; loc: number; zone: string }
  | { kind: 'priority'; loc: number; priority: number }
  | { kind: 'drop'; drop: number | undefined }
  | { kind: 'unknown'; loc: number; at: number; unknown: number | undefined };

const idx = fc.nat(7);
const editArb: fc.Arbitrary<Edit> = fc.oneof(
  fc.record({ kind: fc.constant('addLocality' as const), at: idx, lle: lleArb }),
  fc.record({ kind: fc.constant('removeLocality' as const), at: idx }),
  fc.record({ kind: fc.constant('swapLocalities' as const), a: idx, b: idx }),
  fc.record({ kind: fc.constant('addEndpoint' as const), loc: idx, at: idx, lbe: lbeArb }),
  fc.record({ kind: fc.constant('removeEndpoint' as const), loc: idx, at: idx }),
  fc.record({ kind: fc.constant('swapEndpoints' as const), loc: idx, a: idx, b: idx }),
  fc.record({
    kind: fc.constant('endpointWeight' as const),
    loc: idx,
    at: idx,
    weight: fc.option(fc.integer({ min: 0, max: 4 }), { nil: undefined }),
  }),
  fc.record({ kind: fc.constant('endpointHealth' as const), loc: idx, at: idx, health: fc.nat(6) }),
  fc.record({
    kind: fc.constant('endpointPort' as const),
    loc: idx,
    at: idx,
    port: fc.constantFrom(8000, 8003, 0),
  }),
  fc.record({
    kind: fc.constant('endpointAddress' as const),
    loc: idx,
    at: idx,
    address: fc.constantFrom('10.0.0.1', '10.0.0.4', '10.0.0.10', '::1', ''),
  }),
  fc.record({
    kind: fc.constant('endpointHostname' as const),
    loc: idx,
    at: idx,
    hostname: fc.option(fc.constantFrom('a.example', 'b.example', ''), { nil: undefined }),
  }),
  fc.record({ kind: fc.constant('endpointMetadata' as const), loc: idx, at: idx }),
  fc.record({
    kind: fc.constant('localityWeight' as const),
    loc: idx,
    weight: fc.option(fc.integer({ min: 0, max: 4 }), { nil: undefined }),
  }),
  fc.record({ kind: fc.constant('localityZone' as const), loc: idx, zone: fc.constantFrom('', 'a', 'c') }),
  fc.record({ kind: fc.constant('priority' as const), loc: idx, priority: fc.nat(3) }),
  fc.record({ kind: fc.constant('drop' as const), drop: fc.option(fc.nat(1000), { nil: undefined }) }),
  fc.record({
    kind: fc.constant('unknown' as const),
    loc: idx,
    at: idx,
    unknown: fc.option(fc.nat(7), { nil: undefined }),
  }),
);

function applyEdit(m: ClaModel, e: Edit): ClaModel {
  const c: ClaModel = structuredClone(m);
  const L = c.localities;
  const loc = (i: number) => (L.length === 0 ? undefined : L[i % L.length]);
  const lbe = (l: LleModel | undefined, i: number) =>
    l === undefined || l.lbes.length === 0 ? undefined : l.lbes[i % l.lbes.length];
  switch (e.kind) {
    case 'addLocality':
      L.splice(e.at % (L.length + 1), 0, e.lle);
      break;
    case 'removeLocality':
      if (L.length > 0) L.splice(e.at % L.length, 1);
      break;
    case 'swapLocalities':
      if (L.length > 1) {
        const a = e.a % L.length;
        const b = e.b % L.length;
        [L[a], L[b]] = [L[b] as LleModel, L[a] as LleModel];
      }
      break;
    case 'addEndpoint': {
      const l = loc(e.loc);
      l?.lbes.splice(e.at % (l.lbes.length + 1), 0, e.lbe);
      break;
    }
    case 'removeEndpoint': {
      const l = loc(e.loc);
      if (l && l.lbes.length > 0) l.lbes.splice(e.at % l.lbes.length, 1);
      break;
    }
    case 'swapEndpoints': {
      const l = loc(e.loc);
      if (l && l.lbes.length > 1) {
        const a = e.a % l.lbes.length;
        const b = e.b % l.lbes.length;
        [l.lbes[a], l.lbes[b]] = [l.lbes[b] as LbeModel, l.lbes[a] as LbeModel];
      }
      break;
    }
    case 'endpointWeight': {
      const x = lbe(loc(e.loc), e.at);
      if (x) x.weight = e.weight;
      break;
    }
    case 'endpointHealth': {
      const x = lbe(loc(e.loc), e.at);
      if (x) x.health = e.health;
      break;
    }
    case 'endpointPort': {
      const x = lbe(loc(e.loc), e.at);
      if (x) x.port = e.port;
      break;
    }
    case 'endpointAddress': {
      const x = lbe(loc(e.loc), e.at);
      if (x) x.address = e.address;
      break;
    }
    case 'endpointHostname': {
      const x = lbe(loc(e.loc), e.at);
      if (x) x.hostname = e.hostname;
      break;
    }
    case 'endpointMetadata': {
      const x = lbe(loc(e.loc), e.at);
      if (x) x.metadata = !x.metadata;
      break;
    }
    case 'localityWeight': {
      const l = loc(e.loc);
      if (l) l.weight = e.weight;
      break;
    }
    case 'localityZone': {
      const l = loc(e.loc);
      if (l) l.zone = e.zone;
      break;
    }
    case 'priority': {
      const l = loc(e.loc);
      if (l) l.priority = e.priority;
      break;
    }
    case 'drop':
      c.drop = e.drop;
      break;
    case 'unknown': {
      const l = loc(e.loc);
      const x = lbe(l, e.at);
      if (x) x.unknown = e.unknown;
      else if (l) l.unknown = e.unknown;
      else c.unknown = e.unknown;
      break;
    }
  }
  return c;
}

type Outcome = { ok: true; update: EndpointsUpdate } | { ok: false; error: string };

function full(bytes: Uint8Array): Outcome {
  try {
    return { ok: true, update: translateEndpoints(decodeMessage(EDS_TYPE, bytes)) };
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

/** Translates incrementally on top of `prev` and checks the result against the full path. */
function step(bytes: Uint8Array, prev: EdsState | undefined): EdsState | undefined {
  const want = full(bytes);
  let got: Outcome;
  let state: EdsState | undefined;
  try {
    state = translateEndpointsIncremental(bytes, prev);
    got = { ok: true, update: state.update };
  } catch (err) {
    got = { ok: false, error: (err as Error).message };
  }
  if (!isDeepStrictEqual(got, want)) {
    // toEqual prints a readable diff.
    expect(got).toEqual(want);
    expect.fail('incremental and full translation differ');
  }
  // An invalid version is NACKed: the next one is diffed against the last good state.
  return state ?? prev;
}

describe('incremental EDS translation (wire-format diff)', () => {
  it('gives exactly what the full decode + translation gives, for random assignments and random edits', () => {
    fc.assert(
      fc.property(
        claArb,
        fc.array(fc.array(editArb, { minLength: 1, maxLength: 4 }), { maxLength: 4 }),
        (cla, rounds) => {
          let model = cla;
          let state = step(encodeCla(model), undefined);
          for (const edits of rounds) {
            for (const e of edits) model = applyEdit(model, e);
            state = step(encodeCla(model), state);
          }
        },
      ),
      { numRuns: 400 },
    );
  });

  it('the real EDS fixtures (Istio, Envoy Gateway) translate as the full path does, incrementally too', () => {
    const res = [
      ...jsonFixtureResources('istio-sidecar-config-dump-eds.json'),
      ...gatewayFixtureResources().filter((r) => r.type.endsWith('ClusterLoadAssignment')),
    ];
    expect(res.length).toBeGreaterThan(30);
    let prev: EdsState | undefined;
    for (const r of res) {
      const bytes = encodeMessage(EDS_TYPE, fromJson(r.type, r.json));
      const state = translateEndpointsIncremental(bytes, undefined);
      expect(state.update).toStrictEqual(translateEndpoints(decodeMessage(EDS_TYPE, bytes)));
      // Diffed against an unrelated assignment (another cluster's previous state): same answer.
      if (prev) expect(translateEndpointsIncremental(bytes, prev).update).toStrictEqual(state.update);
      expect(peekClusterName(bytes)).toBe(state.update.name);
      prev = state;
    }
  });

  const big = (weightOf: (i: number) => number, perLocality = 100): ClaModel => ({
    localities: Array.from({ length: 10 }, (_, l) => ({
      region: '',
      zone: `z${l % 3}`,
      weight: 1,
      priority: 0,
      endpointsLast: true,
      unknown: undefined,
      lbes: Array.from({ length: perLocality }, (_, j) => {
        const i = l * perLocality + j;
        return {
          address: `10.0.${i >> 8}.${i & 255}`,
          port: 8000,
          health: 1,
          weight: weightOf(i),
          hostname: undefined,
          metadata: false,
          pipe: false,
          unknown: undefined,
        };
      }),
    })),
    drop: undefined,
    unknown: undefined,
  });

  it('a one-endpoint change reuses every other endpoint object and locality; identical bytes reuse the state', () => {
    const a = translateEndpointsIncremental(encodeCla(big(() => 1)), undefined);
    const bytesB = encodeCla(big((i) => (i === 517 ? 5 : 1)));
    const b = translateEndpointsIncremental(bytesB, a);
    expect(b.update).toStrictEqual(translateEndpoints(decodeMessage(EDS_TYPE, bytesB)));
    const ea = a.update.endpoints;
    const eb = b.update.endpoints;
    expect(eb).toHaveLength(1000);
    const changed = eb.filter((e, i) => e !== ea[i]);
    expect(changed.map((e) => [e.id, e.weight])).toEqual([['10.0.2.5:8000', 5]]);
    expect(new Set(eb.map((e) => e.locality)).size).toBe(10);
    expect(eb[0]?.locality).toBe(ea[0]?.locality);
    // The same bytes again (a re-sent SotW response): the very same state, nothing translated.
    expect(translateEndpointsIncremental(Buffer.from(bytesB), b)).toBe(b);
  });

  it('gives per-locality parts, reusing the unchanged ones, which the runtime takes as they are', async () => {
    const mesh = new Mesh(parseConfig({}));
    try {
      const rt = mesh.ensureService({
        key: 'big',
        discoveryType: 'xds',
        createSource: () => ({ start: () => {}, close: () => {} }),
      });
      const removed: string[] = [];
      mesh.events.on('endpointRemoved', (e) => removed.push(e.endpoint.id));
      const a = translateEndpointsIncremental(encodeCla(big(() => 1)), undefined);
      expect(a.update.segments).toHaveLength(10);
      rt.applyUpdate(discoveryUpdateOf(a.update, '1'));
      const states = [...rt.endpoints];
      (rt.endpoint('10.0.0.7:8000') as { active: number }).active = 3;
      // One endpoint of locality 5 changes weight: only that part is a new array.
      const b = translateEndpointsIncremental(encodeCla(big((i) => (i === 517 ? 5 : 1))), a);
      const fresh = b.update.segments.map((seg, l) => seg !== a.update.segments[l]);
      expect(fresh).toEqual([false, false, false, false, false, true, false, false, false, false]);
      rt.applyUpdate(discoveryUpdateOf(b.update, '2'));
      expect(rt.endpoints.every((st, i) => st === states[i])).toBe(true);
      expect(rt.endpoint('10.0.2.5:8000')?.endpoint.weight).toBe(5);
      expect(rt.endpoint('10.0.0.7:8000')?.active).toBe(3);
      expect(rt.discovery.version).toBe('2');
      // Locality 2 removed (its 100 endpoints go), locality 5 changed back.
      const model = big(() => 1);
      model.localities.splice(2, 1);
      const c = translateEndpointsIncremental(encodeCla(model), b);
      expect(c.update.endpoints).toStrictEqual(
        translateEndpoints(decodeMessage(EDS_TYPE, encodeCla(model))).endpoints,
      );
      rt.applyUpdate(discoveryUpdateOf(c.update, '3'));
      expect(rt.endpoints).toHaveLength(900);
      expect(removed).toHaveLength(100);
      expect(removed.every((id) => rt.endpoint(id) === undefined)).toBe(true);
      expect(rt.endpoint('10.0.2.5:8000')?.endpoint.weight).toBe(1);
      expect(rt.endpoint('10.0.0.7:8000')).toBe(states[7]);
    } finally {
      await mesh.close();
    }
  });

  it('detects every kind of change to one endpoint or its locality in a large assignment', () => {
    const base = big(() => 1);
    const a = translateEndpointsIncremental(encodeCla(base), undefined);
    const lbe = (m: ClaModel) => (m.localities[5] as LleModel).lbes[17] as LbeModel;
    const edits: Record<string, (m: ClaModel) => void> = {
      address: (m) => {
        lbe(m).address = '10.9.9.9';
      },
      port: (m) => {
        lbe(m).port = 8001;
      },
      weight: (m) => {
        lbe(m).weight = 2;
      },
      health: (m) => {
        lbe(m).health = 2;
      },
      metadata: (m) => {
        lbe(m).metadata = true;
      },
      hostname: (m) => {
        lbe(m).hostname = 'a.example';
      },
      locality: (m) => {
        (m.localities[5] as LleModel).zone = 'zz';
      },
      localityWeight: (m) => {
        (m.localities[5] as LleModel).weight = 3;
      },
      priority: (m) => {
        (m.localities[5] as LleModel).priority = 1;
      },
    };
    for (const [kind, edit] of Object.entries(edits)) {
      const m = structuredClone(base);
      edit(m);
      const bytes = encodeCla(m);
      const b = translateEndpointsIncremental(bytes, a);
      expect(b.update, kind).toStrictEqual(translateEndpoints(decodeMessage(EDS_TYPE, bytes)));
      const eb = b.update.endpoints;
      const ea = a.update.endpoints;
      expect(eb[517], kind).not.toBe(ea[517]);
      // Other localities keep their endpoint objects.
      expect(eb[0], kind).toBe(ea[0]);
      expect(eb[999], kind).toBe(ea[999]);
      // And back: the change is seen in the other direction too.
      expect(translateEndpointsIncremental(encodeCla(base), b).update, kind).toStrictEqual(a.update);
    }
  });

  it('an endpoint inserted or removed in a long locality shifts the rest without re-translating them', () => {
    const one = (n: number, skip: number) => {
      const m = big(() => 1, 1000);
      m.localities = m.localities.slice(0, 1);
      const l = m.localities[0] as LleModel;
      l.lbes = l.lbes.filter((_, i) => i !== skip).slice(0, n);
      return encodeCla(m);
    };
    const a = translateEndpointsIncremental(one(1000, -1), undefined);
    const b = translateEndpointsIncremental(one(1000, 400), a); // endpoint 400 removed
    expect(b.update.endpoints).toHaveLength(999);
    const before = new Set(a.update.endpoints);
    expect(b.update.endpoints.every((e) => before.has(e))).toBe(true);
    const c = translateEndpointsIncremental(one(1000, -1), b); // and back
    const middle = new Set(b.update.endpoints);
    expect(c.update.endpoints.filter((e) => !middle.has(e)).map((e) => e.id)).toEqual(['10.0.1.144:8000']);
    expect(c.update).toStrictEqual(a.update);
  });

  it('a locality weight or priority change reframes its endpoints (same ids), others stay', () => {
    const m = big(() => 2);
    const a = translateEndpointsIncremental(encodeCla(m), undefined);
    const m2 = structuredClone(m);
    (m2.localities[3] as LleModel).weight = 3;
    (m2.localities[4] as LleModel).priority = 1;
    const bytes = encodeCla(m2);
    const b = translateEndpointsIncremental(bytes, a);
    expect(b.update).toStrictEqual(translateEndpoints(decodeMessage(EDS_TYPE, bytes)));
    const eb = b.update.endpoints;
    expect(eb[350]?.weight).toBe(2);
    expect(eb[350]?.localityWeight).toBe(3);
    expect(eb[450]?.priority).toBe(1);
    expect(eb[350]?.id).toBe(a.update.endpoints[350]?.id);
    expect(eb[350]?.locality).toBe(a.update.endpoints[350]?.locality);
    expect(eb.filter((e, i) => e !== a.update.endpoints[i])).toHaveLength(200);
  });

  it('invalid versions are errors worded as the full translation words them; the last good state stays usable', () => {
    const good = big(() => 1);
    const a = translateEndpointsIncremental(encodeCla(good), undefined);
    const bad = structuredClone(good);
    ((bad.localities[2] as LleModel).lbes[7] as LbeModel).port = 0;
    expect(() => translateEndpointsIncremental(encodeCla(bad), a)).toThrow(
      'endpoints[2].lb_endpoints[7].endpoint.address.socket_address.port_value: must be 1-65535',
    );
    const gap = structuredClone(good);
    for (const l of gap.localities) l.priority = 1;
    expect(() => translateEndpointsIncremental(encodeCla(gap), a)).toThrow(
      'endpoints: priority 0 is missing (priorities must be contiguous)',
    );
    const truncated = encodeCla(good).subarray(0, 500);
    expect(() => translateEndpointsIncremental(truncated, a)).toThrow(/cannot decode/);
    expect(() =>
      translateEndpointsIncremental(encodeCla({ ...good, localities: [] }).subarray(5), a),
    ).toThrow('cluster_name: is required');
    const next = structuredClone(good);
    ((next.localities[0] as LleModel).lbes[0] as LbeModel).health = 2;
    const b = translateEndpointsIncremental(encodeCla(next), a);
    expect(b.update.endpoints[0]?.health).toBe('unhealthy');
    expect(b.update.endpoints[1]).toBe(a.update.endpoints[1]);
  });
});
