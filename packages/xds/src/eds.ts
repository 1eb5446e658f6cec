import { concatSegments, type Endpoint, endpointId, type Locality } from '@meshlet/core';
import type * as protobuf from 'protobufjs';
import { decodeMessage, type Msg } from './codec.js';
import { EDS_TYPE, lookupType } from './protos.js';
import {
  checkPriorities,
  HEALTH_BY_NUMBER,
  type LocalityFrame,
  lbEndpointOut,
  NO_METADATA,
  reframeEndpoint,
  translateDrops,
  translateEndpoints,
  translateLbEndpoint,
} from './translate.js';
import type { DropOverload, EndpointsUpdate } from './types.js';

/**
 * Incremental EDS: a `ClusterLoadAssignment` is re-sent whole on every change (state of the world,
 * and delta xDS too, which is per resource), so a one-endpoint change to a 10,000-endpoint
 * assignment would otherwise decode and translate 10,000 endpoints again. Instead the previous
 * version's bytes are kept, the new bytes are scanned at the wire level (tags, varints and
 * length-delimited slices; no full decode), and every `LocalityLbEndpoints` / `LbEndpoint`
 * sub-message whose bytes did not change reuses the endpoint translated last time (the very same
 * frozen object, which lets `ServiceRuntime.applyUpdate` match it without a lookup). Only changed
 * `LbEndpoint`s are read: the common shape straight from the wire, any other (metadata, pipes,
 * unknown fields, invalid values) with protobufjs and the translator's own per-endpoint function,
 * so the result is exactly what `translateEndpoints(decodeMessage(bytes))` gives. Anything the
 * scanner does not expect (a known field with another wire type, groups, truncation) and every
 * invalid resource fall back to that full decode, which then reports the error as before.
 */

/** The translated state of one version of an EDS resource: the base of the next diff. */
export interface EdsState {
  readonly bytes: Buffer;
  readonly update: EndpointsUpdate;
  readonly localities: readonly LocalityState[];
  /** The `policy` sub-message's bytes (undefined when absent). */
  readonly policy: Buffer | undefined;
}

/** One `LocalityLbEndpoints` as translated, with where its `LbEndpoint`s sit in its bytes. */
export interface LocalityState {
  readonly bytes: Buffer;
  /** Dropped: a `load_balancing_weight` of 0 (gRPC semantics); nothing else is kept then. */
  readonly dropped: boolean;
  readonly frame: LocalityFrame;
  /** Start and end offsets (in `bytes`) of each `lb_endpoints` entry (the first `perEntry.length`). */
  readonly starts: Int32Array;
  readonly ends: Int32Array;
  /** The endpoint of each entry (null: a unix pipe, skipped), and each entry's own weight. */
  readonly perEntry: readonly (Endpoint | null)[];
  /** `load_balancing_weight` values: uint32, at least 1. */
  readonly ownWeights: Uint32Array;
  /** The non-null entries, in order. */
  readonly endpoints: readonly Endpoint[];
}

/** Thrown by the scanner on anything unexpected: the caller falls back to the full decode. */
class Fallback extends Error {}
const FALLBACK = new Fallback('fallback to the full decode');

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;

/** A forward-only reader of protobuf wire format over one Buffer (one instance per scan level). */
class Wire {
  buf: Buffer;
  pos: number;
  end: number;
  constructor(buf: Buffer, pos: number, end: number) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }

  /**
   * A varint of at most 5 bytes (any uint32), read as protobufjs' `uint32()` does. Longer forms
   * (which protobufjs reads in its own way) fall back to the full decode.
   */
  varint(): number {
    const buf = this.buf;
    let x = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      if (this.pos >= this.end) throw FALLBACK;
      const b = buf[this.pos++] as number;
      x |= (b & 0x7f) << shift;
      if (b < 0x80) return x >>> 0;
    }
    throw FALLBACK;
  }

  /** Skips a varint of any length (as protobufjs' `skipType(0)`). */
  skipVarint(): void {
    const buf = this.buf;
    for (;;) {
      if (this.pos >= this.end) throw FALLBACK;
      if ((buf[this.pos++] as number) < 0x80) return;
    }
  }

  /** Reads a length prefix and returns the end of the length-delimited value (`pos` is its start). */
  lenEnd(): number {
    const len = this.varint();
    const e = this.pos + len;
    if (len > 0x7fffffff || e > this.end) throw FALLBACK;
    return e;
  }

  skip(wireType: number): void {
    switch (wireType) {
      case VARINT:
        this.skipVarint();
        return;
      case I64:
        this.pos += 8;
        break;
      case LEN:
        this.pos = this.lenEnd();
        return;
      case I32:
        this.pos += 4;
        break;
      default:
        throw FALLBACK; // groups (deprecated) and invalid wire types: protobufjs decides
    }
    if (this.pos > this.end) throw FALLBACK;
  }

  string(end: number): string {
    return this.buf.toString('utf8', this.pos, end);
  }
}

const SCALAR_WIRE: Readonly<Record<string, number>> = {
  double: I64,
  float: I32,
  int32: VARINT,
  uint32: VARINT,
  sint32: VARINT,
  fixed32: I32,
  sfixed32: I32,
  int64: VARINT,
  uint64: VARINT,
  sint64: VARINT,
  fixed64: I64,
  sfixed64: I64,
  bool: VARINT,
  string: LEN,
  bytes: LEN,
};
const PACKABLE = 16;

/**
 * The wire type each known field of `type` must have (| PACKABLE for repeated scalars, which
 * may also come packed). A known field with another wire type is left to protobufjs (fallback).
 */
function wireTable(typeName: string): ReadonlyMap<number, number> {
  const type = lookupType(typeName);
  const table = new Map<number, number>();
  for (const f of type.fieldsArray) {
    f.resolve();
    const scalar = SCALAR_WIRE[f.type];
    let wt: number;
    if (f.map || scalar === LEN) wt = LEN;
    else if (scalar !== undefined) wt = f.repeated ? scalar | PACKABLE : scalar;
    else if (f.resolvedType !== null && !('fields' in f.resolvedType))
      wt = f.repeated ? VARINT | PACKABLE : VARINT;
    else wt = LEN;
    table.set(f.id, wt);
  }
  return table;
}

let tables:
  | {
      cla: ReadonlyMap<number, number>;
      lle: ReadonlyMap<number, number>;
      locality: ReadonlyMap<number, number>;
    }
  | undefined;
function wireTables() {
  tables ??= {
    cla: wireTable('envoy.config.endpoint.v3.ClusterLoadAssignment'),
    lle: wireTable('envoy.config.endpoint.v3.LocalityLbEndpoints'),
    locality: wireTable('envoy.config.core.v3.Locality'),
  };
  return tables;
}

/** Skips a field this scanner does not read, after checking a known field's wire type. */
function skipField(w: Wire, table: ReadonlyMap<number, number>, field: number, wt: number): void {
  const expected = table.get(field);
  if (expected !== undefined && wt !== (expected & 7) && !((expected & PACKABLE) !== 0 && wt === LEN))
    throw FALLBACK;
  w.skip(wt);
}

/** Byte equality of two ranges (native compare for long ranges, a loop for short ones). */
function sameRange(a: Buffer, as: number, ae: number, b: Buffer, bs: number, be: number): boolean {
  const n = ae - as;
  if (n !== be - bs) return false;
  if (n > 48) return a.compare(b, bs, be, as, ae) === 0;
  for (let i = 0; i < n; i++) if (a[as + i] !== b[bs + i]) return false;
  return true;
}

/** Length of the common prefix of two buffers (chunks compared natively, growing then shrinking). */
function commonPrefix(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  let c = 256;
  let grow = true;
  while (c >= 32) {
    if (i + c <= n && a.compare(b, i, i + c, i, i + c) === 0) {
      i += c;
      if (grow && c < 65536) c *= 2;
    } else {
      grow = false;
      c >>= 1;
    }
  }
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/** Length of the common suffix of two buffers, at most `max`. */
function commonSuffix(a: Buffer, b: Buffer, max: number): number {
  const al = a.length;
  const bl = b.length;
  let i = 0;
  let c = 256;
  let grow = true;
  while (c >= 32) {
    if (i + c <= max && a.compare(b, bl - i - c, bl - i, al - i - c, al - i) === 0) {
      i += c;
      if (grow && c < 65536) c *= 2;
    } else {
      grow = false;
      c >>= 1;
    }
  }
  while (i < max && a[al - 1 - i] === b[bl - 1 - i]) i++;
  return i;
}

export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** True when two byte strings are equal (no copies). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a === b || (a.length === b.length && asBuffer(a).equals(b));
}

/**
 * The `cluster_name` of an encoded `ClusterLoadAssignment` without decoding the rest (its last
 * occurrence, as a decoder keeps), or undefined when the bytes are not what the scanner expects.
 */
export function peekClusterName(bytes: Uint8Array): string | undefined {
  return peekName(bytes, wireTables().cla);
}

const NO_TABLE: ReadonlyMap<number, number> = new Map();

/**
 * The name of any of the four resource types (field 1, a string, in `Listener`,
 * `RouteConfiguration`, `Cluster` and `ClusterLoadAssignment`) without decoding the rest: to name
 * a resource that is refused before decoding (too large).
 */
export function peekResourceName(bytes: Uint8Array): string | undefined {
  return peekName(bytes, NO_TABLE);
}

function peekName(bytes: Uint8Array, table: ReadonlyMap<number, number>): string | undefined {
  const buf = asBuffer(bytes);
  const w = new Wire(buf, 0, buf.length);
  let name: string | undefined;
  try {
    while (w.pos < w.end) {
      const tag = w.varint();
      const field = tag >>> 3;
      if (field === 0) return undefined;
      if (field === 1 && (tag & 7) === LEN) {
        const e = w.lenEnd();
        name = w.string(e);
        w.pos = e;
      } else {
        skipField(w, table, field, tag & 7);
      }
    }
  } catch {
    return undefined;
  }
  return name;
}

let lbEndpointType: protobuf.Type | undefined;
let policyType: protobuf.Type | undefined;

function decodeLbEndpoint(buf: Buffer, start: number, end: number): Msg {
  lbEndpointType ??= lookupType('envoy.config.endpoint.v3.LbEndpoint');
  try {
    return lbEndpointType.decode(buf.subarray(start, end)) as unknown as Msg;
  } catch {
    throw FALLBACK; // the full decode words the error
  }
}

function decodePolicy(buf: Buffer): Msg {
  policyType ??= lookupType('envoy.config.endpoint.v3.ClusterLoadAssignment.Policy');
  try {
    return policyType.decode(buf) as unknown as Msg;
  } catch {
    throw FALLBACK;
  }
}

/**
 * Reads an `LbEndpoint` of the common shape straight from the wire: a socket address with a port,
 * optionally a hostname, a health status and a weight (>= 1); nothing else (no metadata, pipe,
 * endpoint name, health-check config, additional addresses or unknown fields, no repeated
 * sub-message). Returns undefined for anything else, and for anything invalid, which the caller
 * then decodes with protobufjs and translates with `translateLbEndpoint` (the one source of truth
 * for errors and the other shapes). What it returns is what that path would return.
 */
let simpleOwnWeight = 1;
function readSimpleLbEndpoint(w: Wire, st: number, en: number, frame: LocalityFrame): Endpoint | undefined {
  const buf = w.buf;
  w.pos = st;
  w.end = en;
  let seen = 0;
  let health = 0;
  let weight = 1;
  let address = '';
  let port = 0;
  let hostname = '';
  while (w.pos < en) {
    const tag = w.varint();
    if (tag === ((2 << 3) | VARINT)) {
      health = w.varint();
    } else if (tag === ((1 << 3) | LEN) && (seen & 1) === 0) {
      seen |= 1;
      const endpointEnd = w.lenEnd();
      while (w.pos < endpointEnd) {
        const t = w.varint();
        if (t === ((1 << 3) | LEN) && (seen & 2) === 0) {
          seen |= 2;
          const addressEnd = w.lenEnd();
          if (w.pos >= addressEnd || buf[w.pos] !== ((1 << 3) | LEN)) return undefined; // not a socket address
          w.pos++;
          const saEnd = w.lenEnd();
          if (saEnd !== addressEnd) return undefined; // more than one field in the Address
          while (w.pos < saEnd) {
            const u = w.varint();
            if (u === ((2 << 3) | LEN)) {
              const e = w.lenEnd();
              address = w.string(e);
              w.pos = e;
            } else if (u === ((3 << 3) | VARINT)) {
              port = w.varint();
            } else if (u === ((1 << 3) | VARINT) || u === ((6 << 3) | VARINT)) {
              w.skipVarint(); // protocol, ipv4_compat: not read by the translator
            } else {
              return undefined;
            }
          }
        } else if (t === ((3 << 3) | LEN)) {
          const e = w.lenEnd();
          hostname = w.string(e);
          w.pos = e;
        } else {
          return undefined;
        }
      }
    } else if (tag === ((4 << 3) | LEN) && (seen & 4) === 0) {
      seen |= 4;
      const e = w.lenEnd();
      if (w.pos >= e || buf[w.pos] !== ((1 << 3) | VARINT)) return undefined;
      w.pos++;
      weight = w.varint();
      if (w.pos !== e) return undefined;
    } else {
      return undefined;
    }
  }
  if ((seen & 2) === 0 || address === '' || port < 1 || port > 65535 || weight < 1) return undefined;
  simpleOwnWeight = weight;
  return Object.freeze({
    id: address.indexOf(':') < 0 ? `${address}:${port}` : endpointId(address, port),
    address,
    port,
    weight,
    localityWeight: frame.locWeight,
    locality: frame.locality,
    priority: frame.priority,
    health: HEALTH_BY_NUMBER[health] ?? 'unknown',
    metadata: NO_METADATA,
    hostname: hostname || undefined,
    name: hostname || undefined,
  });
}

const NO_ENTRIES: readonly (Endpoint | null)[] = Object.freeze([]);
const NO_ENDPOINTS: readonly Endpoint[] = Object.freeze([]);
const NO_DROPS: readonly DropOverload[] = Object.freeze([]);
const NO_OFFSETS = new Int32Array(0);
const NO_WEIGHTS = new Uint32Array(0);
const DROPPED_FRAME: LocalityFrame = Object.freeze({
  locality: Object.freeze({ region: '', zone: '', subZone: '' }),
  locWeight: 0,
  priority: 0,
});

/** The scanned (not yet translated) form of one `LocalityLbEndpoints`. */
interface ScannedLocality {
  region: string;
  zone: string;
  subZone: string;
  /** The wrapper's value when `load_balancing_weight` is present (0 when it is empty). */
  locWeight: number | undefined;
  priority: number;
  /** Offsets of the `lb_endpoints` entries: the first `count` of these arrays. */
  count: number;
  starts: Int32Array;
  ends: Int32Array;
}

/**
 * `expected`: how many `lb_endpoints` entries to size the offset arrays for (the same locality's
 * count last time; otherwise one per 16 bytes, more than an entry of the common shape takes).
 */
function scanLocality(buf: Buffer, expected: number): ScannedLocality {
  const w = new Wire(buf, 0, buf.length);
  const { lle, locality } = wireTables();
  const out: ScannedLocality = {
    region: '',
    zone: '',
    subZone: '',
    locWeight: undefined,
    priority: 0,
    count: 0,
    starts: new Int32Array(16 + expected),
    ends: new Int32Array(16 + expected),
  };
  while (w.pos < w.end) {
    const tag = w.varint();
    const field = tag >>> 3;
    const wt = tag & 7;
    if (field === 0) throw FALLBACK;
    if (field === 2 && wt === LEN) {
      const e = w.lenEnd();
      if (out.count === out.starts.length) {
        const grown = new Int32Array(out.count * 2);
        grown.set(out.starts);
        out.starts = grown;
        const grownEnds = new Int32Array(out.count * 2);
        grownEnds.set(out.ends);
        out.ends = grownEnds;
      }
      out.starts[out.count] = w.pos;
      out.ends[out.count] = e;
      out.count++;
      w.pos = e;
    } else if (field === 1 && wt === LEN) {
      // Locality: a repeated occurrence replaces the previous one (as protobufjs decodes it).
      const e = w.lenEnd();
      out.region = '';
      out.zone = '';
      out.subZone = '';
      const outer = w.end;
      w.end = e;
      while (w.pos < e) {
        const t = w.varint();
        const f = t >>> 3;
        if (f === 0) throw FALLBACK;
        if (f >= 1 && f <= 3 && (t & 7) === LEN) {
          const se = w.lenEnd();
          const s = w.string(se);
          if (f === 1) out.region = s;
          else if (f === 2) out.zone = s;
          else out.subZone = s;
          w.pos = se;
        } else {
          skipField(w, locality, f, t & 7);
        }
      }
      w.end = outer;
    } else if (field === 3 && wt === LEN) {
      // UInt32Value: a repeated occurrence replaces the previous one.
      const e = w.lenEnd();
      let value = 0;
      const outer = w.end;
      w.end = e;
      while (w.pos < e) {
        const t = w.varint();
        if (t >>> 3 === 0) throw FALLBACK;
        if (t >>> 3 === 1) {
          if ((t & 7) !== VARINT) throw FALLBACK;
          value = w.varint();
        } else {
          w.skip(t & 7);
        }
      }
      w.end = outer;
      out.locWeight = value;
    } else if (field === 5 && wt === VARINT) {
      out.priority = w.varint();
    } else {
      skipField(w, lle, field, wt);
    }
  }
  return out;
}

function sameLocalityValues(l: Locality, s: ScannedLocality): boolean {
  return l.zone === s.zone && l.region === s.region && l.subZone === s.subZone;
}

/** What one incremental translation knows of the previous version, with lazily built indexes. */
class Diff {
  readonly olds: readonly LocalityState[];
  #byBytesLength: Map<number, LocalityState[]> | undefined;
  #byPlace: Map<string, LocalityState> | undefined;
  constructor(olds: readonly LocalityState[]) {
    this.olds = olds;
  }

  /** An old locality with exactly these bytes (moved within the list), if any. */
  sameBytes(buf: Buffer, s: number, e: number): LocalityState | undefined {
    if (this.#byBytesLength === undefined) {
      this.#byBytesLength = new Map();
      for (const o of this.olds) {
        const list = this.#byBytesLength.get(o.bytes.length);
        if (list) list.push(o);
        else this.#byBytesLength.set(o.bytes.length, [o]);
      }
    }
    const candidates = this.#byBytesLength.get(e - s);
    if (candidates === undefined) return undefined;
    // Bounded: many localities of one length that all differ are decoded rather than searched.
    const n = Math.min(candidates.length, 8);
    for (let i = 0; i < n; i++) {
      const o = candidates[i] as LocalityState;
      if (sameRange(buf, s, e, o.bytes, 0, o.bytes.length)) return o;
    }
    return undefined;
  }

  /** An old (not dropped) locality of the same place, to diff a changed locality against. */
  samePlace(s: ScannedLocality): LocalityState | undefined {
    if (this.#byPlace === undefined) {
      this.#byPlace = new Map();
      for (const o of this.olds) {
        if (o.dropped) continue;
        const l = o.frame.locality;
        const key = `${l.region}\u0000${l.zone}\u0000${l.subZone}`;
        if (!this.#byPlace.has(key)) this.#byPlace.set(key, o);
      }
    }
    return this.#byPlace.get(`${s.region}\u0000${s.zone}\u0000${s.subZone}`);
  }
}

/** Translates one changed `LocalityLbEndpoints`, reusing what it can of the old version. */
function translateLocality(
  buf: Buffer,
  old: LocalityState | undefined,
  diff: Diff,
  lp: string,
): LocalityState {
  const s = scanLocality(buf, old !== undefined && !old.dropped ? old.perEntry.length : buf.length >> 4);
  if (s.locWeight === 0) {
    return {
      bytes: buf,
      dropped: true,
      frame: DROPPED_FRAME,
      starts: NO_OFFSETS,
      ends: NO_OFFSETS,
      perEntry: NO_ENTRIES,
      ownWeights: NO_WEIGHTS,
      endpoints: NO_ENDPOINTS,
    };
  }
  // Diff against the old locality at the same index, or else an old one of the same place.
  let base = old !== undefined && !old.dropped ? old : undefined;
  if (base === undefined || !sameLocalityValues(base.frame.locality, s)) base = diff.samePlace(s) ?? base;
  let frame: LocalityFrame;
  let sameFrame = false;
  if (
    base !== undefined &&
    sameLocalityValues(base.frame.locality, s) &&
    base.frame.locWeight === s.locWeight &&
    base.frame.priority === s.priority
  ) {
    frame = base.frame;
    sameFrame = true;
  } else {
    frame = Object.freeze({
      locality:
        base !== undefined && sameLocalityValues(base.frame.locality, s)
          ? base.frame.locality
          : Object.freeze({ region: s.region, zone: s.zone, subZone: s.subZone }),
      locWeight: s.locWeight,
      priority: s.priority,
    });
  }
  const n = s.count;
  const starts = s.starts;
  const ends = s.ends;
  const perEntry: (Endpoint | null)[] = new Array(n);
  const ownWeights = new Uint32Array(n);
  let pipes = 0;
  // Entries inside the common prefix are the old ones at the same index; entries inside the
  // common suffix are the old ones at the same distance from the end (when the offsets agree).
  let prefix = 0;
  let suffixFrom = buf.length;
  let shift = 0;
  let countShift = 0;
  const ob = base?.bytes;
  if (ob !== undefined) {
    prefix = commonPrefix(buf, ob);
    suffixFrom = buf.length - commonSuffix(buf, ob, Math.min(buf.length, ob.length) - prefix);
    shift = ob.length - buf.length;
    countShift = (base as LocalityState).perEntry.length - n;
  }
  const wire = new Wire(buf, 0, buf.length);
  for (let j = 0; j < n; j++) {
    const st = starts[j] as number;
    const en = ends[j] as number;
    let k = -1;
    if (base !== undefined && ob !== undefined) {
      const os = base.starts;
      const oe = base.ends;
      const on = base.perEntry.length;
      const c = j + countShift;
      if (en <= prefix) {
        k = j;
      } else if (st >= suffixFrom) {
        if (c >= 0 && c < on && os[c] === st + shift && oe[c] === en + shift) k = c;
      }
      // Between the two (or overlapping either): compare with the old entry at the same index,
      // then with the one at the same distance from the end (an insertion or removal before it).
      if (k < 0 && j < on && sameRange(buf, st, en, ob, os[j] as number, oe[j] as number)) k = j;
      if (
        k < 0 &&
        c !== j &&
        c >= 0 &&
        c < on &&
        sameRange(buf, st, en, ob, os[c] as number, oe[c] as number)
      )
        k = c;
    }
    let ep: Endpoint | null;
    if (k >= 0) {
      const b = base as LocalityState;
      const w = b.ownWeights[k] as number;
      ep = b.perEntry[k] as Endpoint | null;
      if (ep !== null && !sameFrame) ep = reframeEndpoint(ep, w, frame);
      ownWeights[j] = w;
    } else {
      let simple: Endpoint | undefined;
      try {
        simple = readSimpleLbEndpoint(wire, st, en, frame);
      } catch {
        simple = undefined; // malformed: protobufjs words it (the full decode, see decodeLbEndpoint)
      }
      if (simple !== undefined) {
        ep = simple;
        ownWeights[j] = simpleOwnWeight;
      } else {
        ep = translateLbEndpoint(decodeLbEndpoint(buf, st, en), frame, lp, j) ?? null;
        ownWeights[j] = ep === null ? 1 : lbEndpointOut.ownWeight;
      }
    }
    if (ep === null) pipes++;
    perEntry[j] = ep;
  }
  let endpoints: readonly Endpoint[];
  if (pipes === 0) endpoints = Object.freeze(perEntry as Endpoint[]);
  else {
    const list: Endpoint[] = [];
    for (const ep of perEntry) if (ep !== null) list.push(ep);
    endpoints = Object.freeze(list);
  }
  return { bytes: buf, dropped: false, frame, starts, ends, perEntry, ownWeights, endpoints };
}

/**
 * Translates an encoded `ClusterLoadAssignment`, reusing `prev` (the state of the previous version
 * of the same resource) for every sub-message whose bytes did not change. Returns the state to
 * pass next time, whose `update` equals `translateEndpoints(decodeMessage(EDS_TYPE, bytes))`.
 * Throws `XdsDecodeError` for an invalid resource (`prev` stays valid then).
 */
export function translateEndpointsIncremental(bytes: Uint8Array, prev: EdsState | undefined): EdsState {
  const buf = asBuffer(bytes);
  if (prev !== undefined && sameBytes(prev.bytes, buf)) return prev;
  try {
    return incremental(buf, prev);
  } catch {
    // Unexpected wire format, or an invalid resource: the full decode and translation decide
    // (and word the error exactly as they always do).
  }
  const update = translateEndpoints(decodeMessage(EDS_TYPE, buf));
  return { bytes: buf, update, localities: [], policy: undefined };
}

function incremental(buf: Buffer, prev: EdsState | undefined): EdsState {
  const w = new Wire(buf, 0, buf.length);
  const table = wireTables().cla;
  let name = '';
  const slices: number[] = [];
  let policyStart = -1;
  let policyEnd = -1;
  while (w.pos < w.end) {
    const tag = w.varint();
    const field = tag >>> 3;
    const wt = tag & 7;
    if (field === 0) throw FALLBACK;
    if ((field === 1 || field === 2 || field === 4) && wt === LEN) {
      const e = w.lenEnd();
      if (field === 1) name = w.string(e);
      else if (field === 2) slices.push(w.pos, e);
      else {
        policyStart = w.pos;
        policyEnd = e;
      }
      w.pos = e;
    } else {
      skipField(w, table, field, wt);
    }
  }
  if (!name) throw FALLBACK; // invalid: the full translation reports it
  const diff = new Diff(prev?.localities ?? []);
  const olds = diff.olds;
  const localities: LocalityState[] = [];
  const parts: (readonly Endpoint[])[] = [];
  const seenPriorities = new Set<number>();
  for (let l = 0; l < slices.length / 2; l++) {
    const s = slices[2 * l] as number;
    const e = slices[2 * l + 1] as number;
    const old = olds[l];
    let state =
      old !== undefined && sameRange(buf, s, e, old.bytes, 0, old.bytes.length)
        ? old
        : olds.length > 0
          ? diff.sameBytes(buf, s, e)
          : undefined;
    state ??= translateLocality(buf.subarray(s, e), old, diff, `endpoints[${l}]`);
    localities.push(state);
    if (state.dropped) continue;
    seenPriorities.add(state.frame.priority);
    parts.push(state.endpoints);
  }
  checkPriorities(seenPriorities, 'endpoints');
  let policy: Buffer | undefined;
  let drops = NO_DROPS;
  if (policyStart >= 0) {
    policy = buf.subarray(policyStart, policyEnd);
    drops =
      prev?.policy !== undefined && sameBytes(prev.policy, policy)
        ? prev.update.dropOverloads
        : translateDrops(decodePolicy(policy));
  }
  // The flat list only when someone reads it: the runtime reads the parts (`segments`).
  const segments = Object.freeze(parts);
  let flat: readonly Endpoint[] | undefined;
  const update: EndpointsUpdate = Object.freeze({
    name,
    get endpoints(): readonly Endpoint[] {
      flat ??= concatSegments(segments);
      return flat;
    },
    segments,
    dropOverloads: drops,
  });
  return { bytes: buf, update, localities, policy };
}
