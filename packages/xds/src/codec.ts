import { clampTimer } from '@meshlet/core';
import type * as protobuf from 'protobufjs';
import { lookupType, resourceRoot, TO_OBJECT } from './protos.js';

/** A decoded protobuf message as the translator reads it (proto3 field names in lowerCamelCase). */
export type Msg = Record<string, unknown>;

/** An error in a resource, naming the field path. */
export class XdsDecodeError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(field ? `${field}: ${message}` : message);
    this.name = 'XdsDecodeError';
  }
}

function typeNameOf(typeUrl: string): string {
  const i = typeUrl.lastIndexOf('/');
  return i >= 0 ? typeUrl.slice(i + 1) : typeUrl;
}

/** Decodes the bytes of an `Any` of type `typeUrl` into a plain object. */
export function decodeAny(typeUrl: string, value: Uint8Array): Msg {
  let type: protobuf.Type;
  try {
    type = lookupType(typeNameOf(typeUrl));
  } catch {
    throw new XdsDecodeError('', `unknown resource type ${typeUrl}`);
  }
  let msg: protobuf.Message;
  try {
    msg = type.decode(value);
  } catch (err) {
    throw new XdsDecodeError('', `cannot decode ${type.fullName.slice(1)}: ${(err as Error).message}`);
  }
  return expandAny(type.toObject(msg, TO_OBJECT)) as Msg;
}

/**
 * Replaces every nested `Any` (`{ type_url, value: bytes }`) of a known type by its decoded form
 * with an `@type` key (proto3 JSON's representation). protobufjs' own Any handling assumes
 * snake_case field names, so it is done here.
 */
function expandAny(v: unknown): unknown {
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) v[i] = expandAny(v[i]);
    return v;
  }
  if (typeof v !== 'object' || v === null || v instanceof Uint8Array) return v;
  const o = v as Msg;
  if (typeof o.type_url === 'string' && o.value instanceof Uint8Array) {
    let inner: protobuf.Type | undefined;
    try {
      inner = resourceRoot().lookupType(typeNameOf(o.type_url));
    } catch {
      inner = undefined;
    }
    if (inner) {
      const decoded = expandAny(inner.toObject(inner.decode(o.value), TO_OBJECT)) as Msg;
      return { '@type': o.type_url, ...decoded };
    }
    return v;
  }
  for (const k in o) {
    const x = o[k];
    if (typeof x === 'object' && x !== null) o[k] = expandAny(x);
  }
  return o;
}

/**
 * Decodes without converting to plain objects: the protobufjs message itself (enums as numbers,
 * unset fields read as their defaults). The EDS hot path uses it for large assignments; readers
 * must accept numeric enums.
 */
export function decodeMessage(typeUrl: string, value: Uint8Array): Msg {
  let type: protobuf.Type;
  try {
    type = lookupType(typeNameOf(typeUrl));
  } catch {
    throw new XdsDecodeError('', `unknown resource type ${typeUrl}`);
  }
  try {
    return type.decode(value) as unknown as Msg;
  } catch (err) {
    throw new XdsDecodeError('', `cannot decode ${type.fullName.slice(1)}: ${(err as Error).message}`);
  }
}

/** Encodes a plain object (as `decodeAny` returns, or proto-JSON) into the bytes of `typeUrl`. */
export function encodeMessage(typeUrl: string, obj: Msg): Uint8Array {
  const type = lookupType(typeNameOf(typeUrl));
  const unknown: string[] = [];
  const ready = normalize(type, obj, '', unknown);
  if (unknown.length > 0)
    throw new XdsDecodeError(unknown[0] as string, `unknown field of ${type.fullName.slice(1)}`);
  return type.encode(type.fromObject(ready)).finish();
}

/**
 * Parses a proto-JSON object (Envoy's snake_case `/config_dump` or lowerCamelCase CSDS / proto3
 * JSON) of message type `typeName` into the same plain form `decodeAny` produces. Fields these
 * protos do not know (a newer Envoy's) are skipped, as the binary decoder skips them, and their
 * paths are pushed to `unknownFields` when given; unknown `@type`s inside `Any`s stay opaque.
 * Values of the wrong shape are errors naming the path.
 */
export function fromJson(typeName: string, json: unknown, unknownFields?: string[]): Msg {
  const type = lookupType(typeName);
  if (typeof json !== 'object' || json === null) throw new XdsDecodeError('', 'must be an object');
  const ready = normalize(type, json as Msg, '', unknownFields);
  let msg: protobuf.Message;
  try {
    msg = type.fromObject(ready);
  } catch (err) {
    throw new XdsDecodeError('', (err as Error).message);
  }
  return expandAny(type.toObject(msg, TO_OBJECT)) as Msg;
}

const camelCache = new Map<string, string>();
function camel(key: string): string {
  let c = camelCache.get(key);
  if (c === undefined) {
    c = key.replace(/_([a-z0-9])/g, (_m, ch: string) => ch.toUpperCase());
    camelCache.set(key, c);
  }
  return c;
}

const WRAPPERS = new Set([
  '.google.protobuf.DoubleValue',
  '.google.protobuf.FloatValue',
  '.google.protobuf.Int64Value',
  '.google.protobuf.UInt64Value',
  '.google.protobuf.Int32Value',
  '.google.protobuf.UInt32Value',
  '.google.protobuf.BoolValue',
  '.google.protobuf.StringValue',
  '.google.protobuf.BytesValue',
]);

function parseDurationText(text: string, path: string): Msg {
  const m = /^(-)?(\d+)(?:\.(\d{1,9}))?s$/.exec(text);
  if (!m) throw new XdsDecodeError(path, `"${text}" is not a duration (e.g. "1.5s")`);
  const sign = m[1] ? -1 : 1;
  return { seconds: sign * Number(m[2]), nanos: sign * Number((m[3] ?? '').padEnd(9, '0')) };
}

function toValue(v: unknown): Msg {
  if (v === null || v === undefined) return { nullValue: 'NULL_VALUE' };
  if (typeof v === 'number') return { numberValue: v };
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  return { structValue: toStruct(v as Msg) };
}

function toStruct(obj: Msg): Msg {
  const fields: Msg = {};
  for (const [k, v] of Object.entries(obj)) fields[k] = toValue(v);
  return { fields };
}

function isAlreadyStruct(v: unknown): boolean {
  if (typeof v !== 'object' || v === null) return false;
  const keys = Object.keys(v);
  return keys.length === 1 && keys[0] === 'fields' && typeof (v as Msg).fields === 'object';
}

/** Converts one field value of proto-JSON into what protobufjs' `fromObject` accepts. */
function convert(field: protobuf.Field, v: unknown, path: string, unknown?: string[]): unknown {
  const rt = field.resolvedType;
  if (rt === null || !('fields' in rt)) return v; // scalar or enum: protobufjs accepts names and numbers
  const t = rt as protobuf.Type;
  const full = t.fullName;
  if (full === '.google.protobuf.Duration' || full === '.google.protobuf.Timestamp') {
    if (typeof v === 'string') {
      if (full === '.google.protobuf.Timestamp') {
        const ms = Date.parse(v);
        if (Number.isNaN(ms)) throw new XdsDecodeError(path, `"${v}" is not a timestamp`);
        return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
      }
      return parseDurationText(v, path);
    }
    return v;
  }
  if (WRAPPERS.has(full)) {
    if (typeof v === 'object' && v !== null && 'value' in v) return v;
    if (full === '.google.protobuf.BytesValue' && typeof v === 'string') return { value: v };
    return { value: v };
  }
  if (full === '.google.protobuf.Struct') return isAlreadyStruct(v) ? v : toStruct((v ?? {}) as Msg);
  if (full === '.google.protobuf.Value') return toValue(v);
  if (full === '.google.protobuf.ListValue') return { values: Array.isArray(v) ? v.map(toValue) : [] };
  if (full === '.google.protobuf.Any') {
    if (typeof v !== 'object' || v === null) throw new XdsDecodeError(path, 'must be an object');
    const any = v as Msg;
    const url = (any['@type'] ?? any.typeUrl ?? any.type_url) as string | undefined;
    if (typeof url !== 'string') throw new XdsDecodeError(path, 'Any without @type');
    if (!('@type' in any)) return { type_url: url, value: any.value ?? new Uint8Array() };
    let inner: protobuf.Type | undefined;
    try {
      inner = resourceRoot().lookupType(typeNameOf(url));
    } catch {
      inner = undefined;
    }
    if (!inner) return { type_url: url, value: new Uint8Array() }; // an extension this client does not know
    const { '@type': _t, ...rest } = any;
    // Encoded here: protobufjs' Any wrapper only works with snake_case field names.
    return {
      type_url: url,
      value: inner.encode(inner.fromObject(normalize(inner, rest, path, unknown))).finish(),
    };
  }
  if (typeof v !== 'object' || v === null) {
    throw new XdsDecodeError(path, `must be an object (${full.slice(1)})`);
  }
  return normalize(t, v as Msg, path, unknown);
}

/** protoc's JSON name of a field: underscores dropped, the next letter upper-cased. */
function jsonName(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_m, ch: string) => ch.toUpperCase());
}

const fieldIndex = new WeakMap<protobuf.Type, Map<string, protobuf.Field>>();
function fieldByJsonKey(type: protobuf.Type, key: string): protobuf.Field | undefined {
  let idx = fieldIndex.get(type);
  if (!idx) {
    idx = new Map();
    for (const f of Object.values(type.fields)) {
      idx.set(f.name, f);
      idx.set(jsonName(f.name), f);
      idx.set(jsonName(f.name).toLowerCase(), f);
    }
    fieldIndex.set(type, idx);
  }
  return idx.get(key) ?? idx.get(camel(key)) ?? idx.get(key.replace(/_/g, '').toLowerCase());
}

function normalize(type: protobuf.Type, obj: Msg, path: string, unknown?: string[]): Msg {
  const out: Msg = {};
  for (const [key, v] of Object.entries(obj)) {
    if (key === '@type') {
      out[key] = v;
      continue;
    }
    const field = fieldByJsonKey(type, key);
    const p = path ? `${path}.${key}` : key;
    if (!field && type.oneofs?.[key] !== undefined) continue; // the virtual oneof key of decoded objects
    if (!field) {
      unknown?.push(p);
      continue;
    }
    if (v === null || v === undefined) continue;
    field.resolve();
    if (field.map) {
      const m: Msg = {};
      for (const [mk, mv] of Object.entries((v ?? {}) as Msg))
        m[mk] = convert(field, mv, `${p}.${mk}`, unknown);
      out[field.name] = m;
    } else if (field.repeated) {
      if (!Array.isArray(v)) throw new XdsDecodeError(p, 'must be a list');
      out[field.name] = v.map((item: unknown, i: number) => convert(field, item, `${p}[${i}]`, unknown));
    } else {
      out[field.name] = convert(field, v, p, unknown);
    }
  }
  return out;
}

// ---- helpers for reading decoded messages ----------------------------------------------------

/** The message type of a decoded `Any` (`envoy.config.listener.v3.Listener`), or ''. */
export function typeOf(any: unknown): string {
  const t = str(msg(any)?.['@type']) ?? str(msg(any)?.type_url) ?? '';
  return t.slice(t.lastIndexOf('/') + 1);
}

export function msg(v: unknown): Msg | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Msg) : undefined;
}

export function list(v: unknown): Msg[] {
  return Array.isArray(v) ? (v.filter((x) => typeof x === 'object' && x !== null) as Msg[]) : [];
}

export function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/**
 * A number from a scalar or a wrapper (`{ value }`). A wrapper present without `value` holds 0:
 * proto3 encoders (Go's, C++'s, protobufjs') do not write a zero scalar, so `UInt32Value{0}` is
 * an empty message on the wire.
 */
export function num(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && v !== '' && !Number.isNaN(Number(v))) return Number(v);
  const m = msg(v);
  if (m) return 'value' in m ? num(m.value) : 0;
  return undefined;
}

/** A boolean from a scalar or a `BoolValue` wrapper (present without `value`: false, as for `num`). */
export function bool(v: unknown): boolean | undefined {
  if (typeof v === 'boolean') return v;
  const m = msg(v);
  if (m) return typeof m.value === 'boolean' ? m.value : false;
  return undefined;
}

/** The largest `google.protobuf.Duration` (10,000 years, as the proto defines it). */
const MAX_DURATION_SECONDS = 315_576_000_000;

/**
 * Milliseconds of a `Duration` (`{ seconds, nanos }` or `"1.5s"`), read at `field` (for errors).
 * A negative or out-of-range duration is an error (a NACK, as Envoy's validation rejects it); a
 * valid one longer than a timer can hold (a 30-day route timeout) is clamped to `MAX_TIMER_MS`
 * (about 24.8 days): Envoy accepts such values, so NACKing them would reject a resource Envoy
 * takes, and a timer of 24.8 days is as good as "never" for a request.
 */
export function durationMs(v: unknown, field = ''): number | undefined {
  if (v === undefined || v === null) return undefined;
  let seconds: number;
  let nanos: number;
  if (typeof v === 'string') {
    const d = parseDurationText(v, field);
    seconds = d.seconds as number;
    nanos = d.nanos as number;
  } else {
    const m = msg(v);
    if (!m) return undefined;
    seconds = num(m.seconds) ?? 0;
    nanos = num(m.nanos) ?? 0;
  }
  if (!Number.isFinite(seconds) || !Number.isFinite(nanos) || Math.abs(nanos) > 999_999_999)
    throw new XdsDecodeError(field, 'is not a valid duration');
  if (seconds < 0 || nanos < 0) throw new XdsDecodeError(field, 'must not be negative');
  if (seconds > MAX_DURATION_SECONDS)
    throw new XdsDecodeError(field, `is out of range (at most ${MAX_DURATION_SECONDS}s)`);
  const ms = seconds * 1000 + nanos / 1e6;
  return clampTimer(ms);
}

/** Converts a decoded `Struct` back to plain JSON. */
export function structToJson(v: unknown): Record<string, unknown> {
  const m = msg(v);
  const out: Record<string, unknown> = {};
  const fields = msg(m?.fields);
  if (!fields) return out;
  for (const [k, fv] of Object.entries(fields)) out[k] = valueToJson(fv);
  return out;
}

function valueToJson(v: unknown): unknown {
  const m = msg(v);
  if (!m) return undefined;
  // A protobufjs message (not a plain object): the `kind` oneof names the field that is set.
  if (typeof m.kind === 'string')
    return m.kind === 'structValue'
      ? structToJson(m.structValue)
      : m.kind === 'listValue'
        ? list(msg(m.listValue)?.values).map(valueToJson)
        : m.kind === 'nullValue'
          ? null
          : m[m.kind];
  if ('stringValue' in m) return m.stringValue;
  if ('numberValue' in m) return m.numberValue;
  if ('boolValue' in m) return m.boolValue;
  if ('structValue' in m) return structToJson(m.structValue);
  if ('listValue' in m) return list(msg(m.listValue)?.values).map(valueToJson);
  return null;
}
