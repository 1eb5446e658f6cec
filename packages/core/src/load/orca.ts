/**
 * The ORCA load report (gRFC A51; `xds.data.orca.v3.OrcaLoadReport` in cncf/xds) as a plain
 * immutable object. Field names are the proto3 JSON names (lowerCamelCase) of the proto fields:
 *
 * | field | proto field (number) | rule (the proto's `validate.rules`) |
 * |---|---|---|
 * | `cpuUtilization` | `cpu_utilization` (1) | >= 0 (may exceed 1 over a soft limit) |
 * | `memUtilization` | `mem_utilization` (2) | 0..1 |
 * | `requestCost` | `request_cost` (4), map | finite |
 * | `utilization` | `utilization` (5), map | 0..1 |
 * | `rpsFractional` | `rps_fractional` (6) | >= 0 |
 * | `eps` | `eps` (7) | >= 0 |
 * | `namedMetrics` | `named_metrics` (8), map | finite |
 * | `applicationUtilization` | `application_utilization` (9) | >= 0 (may exceed 1) |
 *
 * The deprecated integer `rps` (3) is read past and never written (`rps_fractional` replaces it).
 * Unset scalar fields are 0, as in proto3; maps are null-prototype objects, so a metric named
 * `__proto__` from an untrusted report is an ordinary key.
 */
export interface OrcaLoadReport {
  readonly cpuUtilization: number;
  readonly memUtilization: number;
  readonly applicationUtilization: number;
  readonly rpsFractional: number;
  readonly eps: number;
  readonly requestCost: Readonly<Record<string, number>>;
  readonly utilization: Readonly<Record<string, number>>;
  readonly namedMetrics: Readonly<Record<string, number>>;
}

/** What `orcaLoadReport()` takes: any subset of the fields; maps as records or `Map`s. */
export interface OrcaLoadReportInit {
  readonly cpuUtilization?: number | undefined;
  readonly memUtilization?: number | undefined;
  readonly applicationUtilization?: number | undefined;
  readonly rpsFractional?: number | undefined;
  readonly eps?: number | undefined;
  readonly requestCost?: OrcaMetricMap | undefined;
  readonly utilization?: OrcaMetricMap | undefined;
  readonly namedMetrics?: OrcaMetricMap | undefined;
}

export type OrcaMetricMap = Readonly<Record<string, number>> | ReadonlyMap<string, number>;

/** Bounds on untrusted reports (parsing) and on reports a server builds. */
export interface OrcaLimits {
  /** Longest header value (after the format prefix is included), in bytes/characters. Default 4096. */
  readonly maxHeaderBytes: number;
  /** Most map entries (`request_cost` + `utilization` + `named_metrics` together). Default 64. */
  readonly maxEntries: number;
  /** Longest metric name (map key), in characters. Default 128. */
  readonly maxNameLength: number;
}

export const DEFAULT_ORCA_LIMITS: OrcaLimits = Object.freeze({
  maxHeaderBytes: 4096,
  maxEntries: 64,
  maxNameLength: 128,
});

/** The HTTP response header (and gRPC trailer) names of per-call reports. */
export const ORCA_HEADER = 'endpoint-load-metrics';
/** The binary header: a base64 protobuf `OrcaLoadReport` (gRPC's per-call trailer, Envoy's legacy form). */
export const ORCA_BIN_HEADER = 'endpoint-load-metrics-bin';
/**
 * The request header by which a client asks for `endpoint-load-metrics` on the response, naming
 * the form (`TEXT`, `JSON`, `BIN`): the ORCA HTTP convention (as Triton and vLLM serve it).
 */
export const ORCA_FORMAT_HEADER = 'endpoint-load-metrics-format';

/** The scalar fields, in proto field-number order, with their proto names and numbers. */
export const ORCA_SCALARS = Object.freeze([
  { key: 'cpuUtilization', proto: 'cpu_utilization', field: 1, max: Number.POSITIVE_INFINITY },
  { key: 'memUtilization', proto: 'mem_utilization', field: 2, max: 1 },
  { key: 'rpsFractional', proto: 'rps_fractional', field: 6, max: Number.POSITIVE_INFINITY },
  { key: 'eps', proto: 'eps', field: 7, max: Number.POSITIVE_INFINITY },
  {
    key: 'applicationUtilization',
    proto: 'application_utilization',
    field: 9,
    max: Number.POSITIVE_INFINITY,
  },
] as const);

/** The map fields, in proto field-number order. `unit`: values must lie in 0..1. */
export const ORCA_MAPS = Object.freeze([
  { key: 'requestCost', proto: 'request_cost', field: 4, unit: false },
  { key: 'utilization', proto: 'utilization', field: 5, unit: true },
  { key: 'namedMetrics', proto: 'named_metrics', field: 8, unit: false },
] as const);

export type OrcaScalarKey = (typeof ORCA_SCALARS)[number]['key'];
export type OrcaMapKey = (typeof ORCA_MAPS)[number]['key'];

const EMPTY_MAP: Readonly<Record<string, number>> = Object.freeze(Object.create(null));

/** The report with every field unset (all zero, empty maps). */
export const EMPTY_ORCA_REPORT: OrcaLoadReport = Object.freeze({
  cpuUtilization: 0,
  memUtilization: 0,
  applicationUtilization: 0,
  rpsFractional: 0,
  eps: 0,
  requestCost: EMPTY_MAP,
  utilization: EMPTY_MAP,
  namedMetrics: EMPTY_MAP,
});

/** Checks one scalar against the proto's rules; returns what is wrong, or undefined. */
export function checkScalar(name: string, value: number, max: number): string | undefined {
  if (typeof value !== 'number' || !Number.isFinite(value))
    return `${name} must be a finite number, got ${value}`;
  if (value < 0) return `${name} must be >= 0, got ${value}`;
  if (value > max) return `${name} must be <= ${max}, got ${value}`;
  return undefined;
}

/** Checks one map entry; returns what is wrong, or undefined. */
export function checkEntry(
  map: string,
  name: string,
  value: number,
  unit: boolean,
  limits: OrcaLimits,
): string | undefined {
  if (name.length === 0) return `${map} has an empty metric name`;
  if (name.length > limits.maxNameLength)
    return `${map} metric name is longer than ${limits.maxNameLength} characters`;
  if (typeof value !== 'number' || !Number.isFinite(value))
    return `${map}.${name} must be a finite number, got ${value}`;
  if (unit && (value < 0 || value > 1)) return `${map}.${name} must be within 0..1, got ${value}`;
  return undefined;
}

/**
 * A mutable report under construction, shared by the decoders: scalars and maps are filled field by
 * field, entries counted against the limits, and `finish()` freezes it.
 */
export class ReportBuilder {
  cpuUtilization = 0;
  memUtilization = 0;
  applicationUtilization = 0;
  rpsFractional = 0;
  eps = 0;
  requestCost: Record<string, number> | undefined;
  utilization: Record<string, number> | undefined;
  namedMetrics: Record<string, number> | undefined;
  entries = 0;

  /** Sets a map entry (a later value for the same name replaces it, as protobuf maps do). */
  setEntry(map: OrcaMapKey, name: string, value: number): void {
    let m = this[map];
    if (m === undefined) {
      m = Object.create(null) as Record<string, number>;
      this[map] = m;
    }
    if (!(name in m)) this.entries++;
    m[name] = value;
  }

  /** Validates every field against the proto's rules and the limits; returns the first problem. */
  check(limits: OrcaLimits): string | undefined {
    for (const s of ORCA_SCALARS) {
      const problem = checkScalar(s.proto, this[s.key], s.max);
      if (problem) return problem;
    }
    if (this.entries > limits.maxEntries)
      return `too many metrics (${this.entries}; at most ${limits.maxEntries})`;
    for (const m of ORCA_MAPS) {
      const map = this[m.key];
      if (map === undefined) continue;
      for (const name in map) {
        const problem = checkEntry(m.proto, name, map[name] as number, m.unit, limits);
        if (problem) return problem;
      }
    }
    return undefined;
  }

  finish(): OrcaLoadReport {
    const freeze = (m: Record<string, number> | undefined) =>
      m === undefined ? EMPTY_MAP : Object.freeze(m);
    return Object.freeze({
      cpuUtilization: this.cpuUtilization,
      memUtilization: this.memUtilization,
      applicationUtilization: this.applicationUtilization,
      rpsFractional: this.rpsFractional,
      eps: this.eps,
      requestCost: freeze(this.requestCost),
      utilization: freeze(this.utilization),
      namedMetrics: freeze(this.namedMetrics),
    });
  }
}

/**
 * Builds a validated, frozen report from `init` (unset fields are 0 / empty). Throws a `RangeError`
 * naming the field when a value breaks the proto's rules or the limits: this is for reports a
 * server builds from its own numbers; untrusted reports go through the parsers, which never throw.
 */
export function orcaLoadReport(
  init: OrcaLoadReportInit,
  limits: OrcaLimits = DEFAULT_ORCA_LIMITS,
): OrcaLoadReport {
  const b = new ReportBuilder();
  for (const s of ORCA_SCALARS) {
    const v = init[s.key];
    if (v !== undefined) b[s.key] = v;
  }
  for (const m of ORCA_MAPS) {
    const src = init[m.key];
    if (src === undefined) continue;
    const entries = src instanceof Map ? src.entries() : Object.entries(src);
    for (const [name, value] of entries) b.setEntry(m.key, name, value);
  }
  const problem = b.check(limits);
  if (problem !== undefined) throw new RangeError(`invalid ORCA load report: ${problem}`);
  return b.finish();
}

/** The outcome of parsing an untrusted report: the report, or why it was ignored. */
export type OrcaParseResult =
  | { readonly ok: true; readonly report: OrcaLoadReport }
  | { readonly ok: false; readonly error: string };

export function parseFailure(error: string): OrcaParseResult {
  return { ok: false, error };
}

export function parseSuccess(report: OrcaLoadReport): OrcaParseResult {
  return { ok: true, report };
}
