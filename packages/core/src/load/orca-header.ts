import type { EndpointState } from '../endpoint-state.js';
import { findHeader, type HeaderInput } from '../lb/hash.js';
import { EndpointLoad } from './endpoint-load.js';
import {
  DEFAULT_ORCA_LIMITS,
  ORCA_BIN_HEADER,
  ORCA_HEADER,
  ORCA_MAPS,
  ORCA_SCALARS,
  type OrcaLimits,
  type OrcaLoadReport,
  type OrcaMapKey,
  type OrcaParseResult,
  type OrcaScalarKey,
  parseFailure,
  parseSuccess,
  ReportBuilder,
} from './orca.js';
import { decodeOrcaLoadReport, encodeOrcaLoadReport } from './orca-proto.js';

/**
 * The `endpoint-load-metrics` response header (the ORCA specification in cncf/xds, as Envoy reads
 * it since 1.33): one header whose value starts with a format word and a space.
 *
 *     endpoint-load-metrics: TEXT cpu_utilization=0.3, mem_utilization=0.8, named_metrics.queue=12
 *     endpoint-load-metrics: JSON {"cpu_utilization": 0.3, "named_metrics": {"queue": 12}}
 *     endpoint-load-metrics: BIN CZqZmZmZmbk/MQAAAAAAAABAQg4KA2ZvbxGamZmZmZm5P0IOCgNiYXIRmpmZmZmZyT8=
 *     endpoint-load-metrics-bin: CZqZmZmZmbk/MQAAAAAAAABAQg4KA2ZvbxGamZmZmZm5P0IOCgNiYXIRmpmZmZmZyT8=
 *
 * TEXT is the report flattened to comma-separated `name=value` pairs, map entries as
 * `<map>.<name>` (`named_metrics.`, `utilization.`, `request_cost.`); JSON is the proto3 JSON form;
 * BIN (and the older `endpoint-load-metrics-bin` header gRPC uses, which wins when both are sent,
 * as in Envoy) is the base64 protobuf.
 *
 * Parsing follows Envoy's `orca_parser.cc` strictly: an unknown format word, an unknown field, a
 * duplicate name, an empty name or value, a value that is not a finite number, an unknown JSON
 * field, or a value outside the proto's rules rejects the whole header. On top of that, a header
 * longer than `maxHeaderBytes` or with more than `maxEntries` map entries is rejected before any
 * work proportional to its size. The parsers never throw: a bad header is reported and ignored,
 * never an error on the request path.
 */

export type OrcaHeaderFormat = 'text' | 'json' | 'binary';

const NUMBER_RE = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;
/** Metric names TEXT can carry: visible ASCII without the separators `,` and `=`. */
const TEXT_NAME_RE = /^[\x21-\x2b\x2d-\x3c\x3e-\x7e]+$/;

const SCALAR_BY_PROTO: Record<string, OrcaScalarKey> = Object.create(null);
const SCALAR_BY_JSON: Record<string, OrcaScalarKey> = Object.create(null);
for (const s of ORCA_SCALARS) {
  SCALAR_BY_PROTO[s.proto] = s.key;
  SCALAR_BY_JSON[s.proto] = s.key;
  SCALAR_BY_JSON[s.key] = s.key;
}
const MAP_BY_PREFIX: Record<string, OrcaMapKey> = Object.create(null);
const MAP_BY_JSON: Record<string, OrcaMapKey> = Object.create(null);
for (const m of ORCA_MAPS) {
  MAP_BY_PREFIX[`${m.proto}.`] = m.key;
  MAP_BY_JSON[m.proto] = m.key;
  MAP_BY_JSON[m.key] = m.key;
}

/** True when `name` can be written in the TEXT form (visible ASCII, no `,` or `=`). */
export function isTextSafeName(name: string): boolean {
  return TEXT_NAME_RE.test(name);
}

/** `TEXT name=value,…`: non-zero scalars, then every map entry. Throws on a name TEXT cannot carry. */
export function formatOrcaText(report: OrcaLoadReport): string {
  const parts: string[] = [];
  for (const s of ORCA_SCALARS) {
    const v = report[s.key];
    if (v !== 0) parts.push(`${s.proto}=${v}`);
  }
  for (const m of ORCA_MAPS) {
    const map = report[m.key];
    for (const name in map) {
      if (!TEXT_NAME_RE.test(name))
        throw new RangeError(`ORCA metric name ${JSON.stringify(name)} cannot be sent in the TEXT form`);
      parts.push(`${m.proto}.${name}=${map[name]}`);
    }
  }
  return `TEXT ${parts.join(',')}`;
}

/** `JSON {…}` with proto field names; non-ASCII escaped so the value is a valid header value. */
export function formatOrcaJson(report: OrcaLoadReport): string {
  const obj: Record<string, unknown> = {};
  for (const s of ORCA_SCALARS) {
    const v = report[s.key];
    if (v !== 0) obj[s.proto] = v;
  }
  for (const m of ORCA_MAPS) {
    const map = report[m.key];
    let any = false;
    for (const _ in map) {
      any = true;
      break;
    }
    if (any) obj[m.proto] = { ...map };
  }
  const json = JSON.stringify(obj).replace(
    /[\u007f-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return `JSON ${json}`;
}

/** `BIN <base64 protobuf>`. */
export function formatOrcaBin(report: OrcaLoadReport): string {
  return `BIN ${encodeOrcaLoadReport(report).toString('base64')}`;
}

/** The `endpoint-load-metrics` header value of `report` in `format`. */
export function formatOrcaHeader(report: OrcaLoadReport, format: OrcaHeaderFormat = 'text'): string {
  return format === 'text'
    ? formatOrcaText(report)
    : format === 'json'
      ? formatOrcaJson(report)
      : formatOrcaBin(report);
}

function parseNumber(text: string): number {
  return NUMBER_RE.test(text) ? Number(text) : Number.NaN;
}

function isOws(c: number): boolean {
  return c === 0x20 || c === 0x09;
}

function trimOws(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && isOws(s.charCodeAt(a))) a++;
  while (b > a && isOws(s.charCodeAt(b - 1))) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

function parseText(body: string, limits: OrcaLimits): OrcaParseResult {
  const b = new ReportBuilder();
  const seen = new Set<string>();
  for (const raw of body.split(',')) {
    const token = trimOws(raw);
    if (token.length === 0) continue;
    const eq = token.indexOf('=');
    if (eq < 0) return parseFailure(`"${clip(token)}" is not name=value`);
    const name = trimOws(token.slice(0, eq));
    const text = trimOws(token.slice(eq + 1));
    if (name.length === 0) return parseFailure('empty metric name');
    if (text.length === 0) return parseFailure(`empty value for ${clip(name)}`);
    if (seen.has(name)) return parseFailure(`duplicate metric ${clip(name)}`);
    seen.add(name);
    const value = parseNumber(text);
    if (!Number.isFinite(value))
      return parseFailure(`value of ${clip(name)} is not a finite number: ${clip(text)}`);
    const scalar = SCALAR_BY_PROTO[name];
    if (scalar !== undefined) {
      b[scalar] = value;
      continue;
    }
    const dot = name.indexOf('.');
    const map = dot < 0 ? undefined : MAP_BY_PREFIX[name.slice(0, dot + 1)];
    if (map === undefined) return parseFailure(`unsupported metric name ${clip(name)}`);
    const key = name.slice(dot + 1);
    if (key.length === 0) return parseFailure(`empty metric name after ${name}`);
    b.setEntry(map, key, value);
    if (b.entries > limits.maxEntries)
      return parseFailure(`too many metrics (more than ${limits.maxEntries})`);
  }
  const problem = b.check(limits);
  return problem === undefined ? parseSuccess(b.finish()) : parseFailure(problem);
}

/** A proto3 JSON double: a number, or a string holding one; null means unset. NaN when neither. */
function jsonNumber(v: unknown): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'string') return parseNumber(v);
  return Number.NaN;
}

function parseJson(body: string, limits: OrcaLimits): OrcaParseResult {
  let doc: unknown;
  try {
    doc = JSON.parse(body);
  } catch (err) {
    return parseFailure(`invalid JSON: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    return parseFailure('invalid JSON: the report must be an object');
  const b = new ReportBuilder();
  const set = new Set<string>();
  for (const [field, value] of Object.entries(doc as Record<string, unknown>)) {
    const scalar = SCALAR_BY_JSON[field];
    const map = scalar === undefined ? MAP_BY_JSON[field] : undefined;
    const canonical = scalar ?? map ?? (field === 'rps' ? 'rps' : undefined);
    if (canonical === undefined) return parseFailure(`invalid JSON: unknown field ${clip(field)}`);
    if (set.has(canonical)) return parseFailure(`invalid JSON: field ${clip(field)} given twice`);
    set.add(canonical);
    if (value === null) continue;
    if (scalar !== undefined || canonical === 'rps') {
      const n = jsonNumber(value);
      if (!Number.isFinite(n)) return parseFailure(`invalid JSON: ${clip(field)} is not a finite number`);
      // The deprecated integer `rps` is accepted and ignored, as the binary decoder skips it.
      if (scalar !== undefined) b[scalar] = n;
      else if (n < 0 || !Number.isInteger(n))
        return parseFailure('invalid JSON: rps must be a whole number >= 0');
      continue;
    }
    if (typeof value !== 'object' || Array.isArray(value))
      return parseFailure(`invalid JSON: ${clip(field)} must be an object of numbers`);
    for (const [name, v] of Object.entries(value as Record<string, unknown>)) {
      const n = jsonNumber(v);
      if (!Number.isFinite(n))
        return parseFailure(`invalid JSON: ${clip(field)}.${clip(name)} is not a finite number`);
      b.setEntry(map as OrcaMapKey, name, n);
      if (b.entries > limits.maxEntries)
        return parseFailure(`too many metrics (more than ${limits.maxEntries})`);
    }
  }
  const problem = b.check(limits);
  return problem === undefined ? parseSuccess(b.finish()) : parseFailure(problem);
}

const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/** Decodes the base64 protobuf of `endpoint-load-metrics-bin` (or after `BIN `). Never throws. */
export function parseOrcaBin(value: string, limits: OrcaLimits = DEFAULT_ORCA_LIMITS): OrcaParseResult {
  const v = trimOws(value);
  if (v.length === 0) return parseFailure('empty binary ORCA report');
  if (v.length > limits.maxHeaderBytes)
    return parseFailure(`ORCA header of ${v.length} bytes exceeds the limit of ${limits.maxHeaderBytes}`);
  const padded = v.endsWith('=');
  if (!BASE64_RE.test(v) || (padded ? v.length % 4 !== 0 : v.length % 4 === 1))
    return parseFailure('binary ORCA report is not valid base64');
  return decodeOrcaLoadReport(Buffer.from(v, 'base64'), limits);
}

/**
 * Parses an `endpoint-load-metrics` header value (`TEXT …`, `JSON …` or `BIN …`). Never throws.
 */
export function parseOrcaHeader(value: string, limits: OrcaLimits = DEFAULT_ORCA_LIMITS): OrcaParseResult {
  if (value.length > limits.maxHeaderBytes)
    return parseFailure(`ORCA header of ${value.length} bytes exceeds the limit of ${limits.maxHeaderBytes}`);
  if (value.startsWith('TEXT ')) return parseText(value.slice(5), limits);
  if (value.startsWith('JSON ')) return parseJson(value.slice(5), limits);
  if (value.startsWith('BIN ')) return parseOrcaBin(value.slice(4), limits);
  const word = value.slice(0, 5);
  const space = word.indexOf(' ');
  return parseFailure(
    `unsupported ORCA header format: ${JSON.stringify(space < 0 ? word : word.slice(0, space))}`,
  );
}

/**
 * Reads the per-call report of a response from its headers (or gRPC trailers as text), in any
 * `HeaderInput` form: `endpoint-load-metrics-bin` when present (Envoy's precedence), else
 * `endpoint-load-metrics`; of a repeated header, the first. Undefined when the response carries
 * neither; `{ ok: false, error }` when it carries a bad one. Never throws.
 */
export function readOrcaReport(
  headers: HeaderInput,
  limits: OrcaLimits = DEFAULT_ORCA_LIMITS,
): OrcaParseResult | undefined {
  const bin = first(findHeader(headers, ORCA_BIN_HEADER));
  if (bin !== undefined) return parseOrcaBin(bin, limits);
  const text = first(findHeader(headers, ORCA_HEADER));
  return text === undefined ? undefined : parseOrcaHeader(text, limits);
}

/**
 * `readOrcaReport` for the responses of one endpoint, remembering the last header value it read
 * there: servers re-send the same pre-encoded value for a whole sample interval, so a response
 * whose value equals the previous one costs a string comparison instead of a parse (a bad value is
 * remembered too, and not parsed again). Transports call it per response and pass a good report
 * to `ServiceRuntime.reportLoad(ep, report)`. Never throws.
 */
export function readEndpointReport(
  ep: EndpointState,
  headers: HeaderInput,
  limits: OrcaLimits = DEFAULT_ORCA_LIMITS,
): OrcaParseResult | undefined {
  const bin = first(findHeader(headers, ORCA_BIN_HEADER));
  const value = bin ?? first(findHeader(headers, ORCA_HEADER));
  if (value === undefined) return undefined;
  return readEndpointReportValue(ep, value, bin !== undefined, limits);
}

/**
 * `readEndpointReport` for a transport that found the header itself: `value` is the
 * `endpoint-load-metrics` value, or with `binary` the base64 `endpoint-load-metrics-bin` one.
 * A value equal to the endpoint's previous one costs a comparison. Never throws.
 */
export function readEndpointReportValue(
  ep: EndpointState,
  value: string,
  binary: boolean,
  limits: OrcaLimits = DEFAULT_ORCA_LIMITS,
): OrcaParseResult {
  const load = loadOf(ep);
  if (load.lastHeader === value && load.lastHeaderBinary === binary && load.lastParse !== undefined)
    return load.lastParse;
  const result = binary ? parseOrcaBin(value, limits) : parseOrcaHeader(value, limits);
  load.lastHeader = value;
  load.lastHeaderBinary = binary;
  load.lastBytes = undefined;
  load.lastParse = result;
  return result;
}

/**
 * `readEndpointReport` for a report that came as protobuf bytes (gRPC's `endpoint-load-metrics-bin`
 * trailer, which grpc-js hands over decoded from base64): bytes equal to the endpoint's previous
 * report cost a comparison, not a parse. Never throws.
 */
export function readEndpointReportBytes(
  ep: EndpointState,
  bytes: Uint8Array,
  limits: OrcaLimits = DEFAULT_ORCA_LIMITS,
): OrcaParseResult {
  const load = loadOf(ep);
  if (load.lastParse !== undefined && load.lastBytes?.equals(bytes) === true) return load.lastParse;
  const result = decodeOrcaLoadReport(bytes, limits);
  // A copy: the caller's buffer may be a view into a larger one that is reused.
  load.lastBytes = Buffer.from(bytes);
  load.lastHeader = undefined;
  load.lastParse = result;
  return result;
}

/** The endpoint's load state, created on first use. */
function loadOf(ep: EndpointState): EndpointLoad {
  let load = ep.load;
  if (load === undefined) {
    load = new EndpointLoad();
    ep.load = load;
  }
  return load;
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** Shortens untrusted text quoted in an error message. */
function clip(s: string): string {
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}
