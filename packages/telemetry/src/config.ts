import {
  type ConfigIssue,
  checkKeys,
  describe,
  expectObject,
  join,
  optBoolean,
  optEnum,
  optNumber,
  optString,
  registerMeshSection,
} from '@meshlet/core';

export type MetricsNaming = 'otel' | 'istio' | 'both';
export type Propagation = 'w3c' | 'b3' | 'b3multi';

export interface MetricsConfig {
  /** Record metrics (default true). */
  readonly enabled: boolean;
  /** `otel` (OpenTelemetry HTTP names), `istio` (istio_* names) or `both` (default `otel`). */
  readonly naming: MetricsNaming;
  /** Per-endpoint series (attempts, latency, load), removed when an endpoint leaves (default false). */
  readonly perEndpoint: boolean;
  /** Attach trace/span ids as exemplars to duration buckets (OpenMetrics only; default false). */
  readonly exemplars: boolean;
  /** Register prom-client's default process metrics too (default false). */
  readonly defaultMetrics: boolean;
  /** Histogram buckets in seconds (default: OpenTelemetry's HTTP duration buckets). */
  readonly buckets: readonly number[];
}

export interface TracingConfig {
  /** Create spans and propagate context (default true; a no-op while no tracer provider is set). */
  readonly enabled: boolean;
  /** Formats injected on outbound requests and accepted on inbound ones (default `['w3c']`). */
  readonly propagation: readonly Propagation[];
  /** One child span per attempt under the request's span, instead of span events (default false). */
  readonly attemptSpans: boolean;
}

export interface AccessLogConfig {
  /** Write an access log line per request (default false). */
  readonly enabled: boolean;
  /** Fraction of successful requests logged, 0..1 (default 1). */
  readonly sampleRate: number;
  /** Log every failed request whatever the sample rate (default true). */
  readonly alwaysLogErrors: boolean;
  /** Where lines go when no sink is passed in code: `stdout`, `stderr` or a file path (default `stdout`). */
  readonly output: string;
}

export interface TelemetryConfig {
  readonly metrics: MetricsConfig;
  readonly tracing: TracingConfig;
  readonly accessLog: AccessLogConfig;
}

export interface AdminConfig {
  /** Port of the admin HTTP server; 0 picks a free one. */
  readonly port: number;
  /** Address to bind (default `127.0.0.1`: the admin page is not for the network). */
  readonly host: string;
}

/** OpenTelemetry's recommended buckets for `http.*.request.duration`, in seconds. */
export const DEFAULT_BUCKETS: readonly number[] = Object.freeze([
  0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
]);

export const DEFAULT_TELEMETRY: TelemetryConfig = Object.freeze({
  metrics: Object.freeze({
    enabled: true,
    naming: 'otel' as MetricsNaming,
    perEndpoint: false,
    exemplars: false,
    defaultMetrics: false,
    buckets: DEFAULT_BUCKETS,
  }),
  tracing: Object.freeze({
    enabled: true,
    propagation: Object.freeze(['w3c'] as Propagation[]),
    attemptSpans: false,
  }),
  accessLog: Object.freeze({ enabled: false, sampleRate: 1, alwaysLogErrors: true, output: 'stdout' }),
});

const PROPAGATIONS: readonly Propagation[] = ['w3c', 'b3', 'b3multi'];

function parseMetrics(raw: unknown, path: string, issues: ConfigIssue[]): MetricsConfig {
  const d = DEFAULT_TELEMETRY.metrics;
  if (typeof raw === 'boolean') return { ...d, enabled: raw };
  const o = expectObject(raw, path, issues);
  if (!o) return d;
  checkKeys(o, ['enabled', 'naming', 'perEndpoint', 'exemplars', 'defaultMetrics', 'buckets'], path, issues);
  let buckets = d.buckets;
  if (o.buckets !== undefined) {
    const b = o.buckets;
    if (
      !Array.isArray(b) ||
      b.length === 0 ||
      !b.every((x, i) => typeof x === 'number' && x > 0 && Number.isFinite(x) && (i === 0 || x > b[i - 1]))
    ) {
      issues.push({
        path: join(path, 'buckets'),
        message: `must be a non-empty increasing list of positive numbers (seconds), got ${describe(b)}`,
      });
    } else {
      buckets = Object.freeze([...(b as number[])]);
    }
  }
  return Object.freeze({
    enabled: optBoolean(o, 'enabled', path, issues, d.enabled),
    naming: optEnum(o, 'naming', path, issues, ['otel', 'istio', 'both'] as const, d.naming),
    perEndpoint: optBoolean(o, 'perEndpoint', path, issues, d.perEndpoint),
    exemplars: optBoolean(o, 'exemplars', path, issues, d.exemplars),
    defaultMetrics: optBoolean(o, 'defaultMetrics', path, issues, d.defaultMetrics),
    buckets,
  });
}

function parseTracing(raw: unknown, path: string, issues: ConfigIssue[]): TracingConfig {
  const d = DEFAULT_TELEMETRY.tracing;
  if (typeof raw === 'boolean') return { ...d, enabled: raw };
  const o = expectObject(raw, path, issues);
  if (!o) return d;
  checkKeys(o, ['enabled', 'propagation', 'attemptSpans'], path, issues);
  let propagation = d.propagation;
  if (o.propagation !== undefined) {
    const list =
      typeof o.propagation === 'string'
        ? o.propagation
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean)
        : o.propagation;
    if (
      !Array.isArray(list) ||
      list.length === 0 ||
      !list.every((p) => typeof p === 'string' && (PROPAGATIONS as readonly string[]).includes(p))
    ) {
      issues.push({
        path: join(path, 'propagation'),
        message: `must be one or more of ${PROPAGATIONS.join(', ')}, got ${describe(o.propagation)}`,
      });
    } else {
      propagation = Object.freeze([...new Set(list as Propagation[])]);
    }
  }
  return Object.freeze({
    enabled: optBoolean(o, 'enabled', path, issues, d.enabled),
    propagation,
    attemptSpans: optBoolean(o, 'attemptSpans', path, issues, d.attemptSpans),
  });
}

function parseAccessLog(raw: unknown, path: string, issues: ConfigIssue[]): AccessLogConfig {
  const d = DEFAULT_TELEMETRY.accessLog;
  if (typeof raw === 'boolean') return { ...d, enabled: raw };
  const o = expectObject(raw, path, issues);
  if (!o) return d;
  checkKeys(o, ['enabled', 'sampleRate', 'alwaysLogErrors', 'output'], path, issues);
  return Object.freeze({
    // Giving an accessLog object turns it on unless it says otherwise.
    enabled: optBoolean(o, 'enabled', path, issues, true),
    sampleRate: optNumber(o, 'sampleRate', path, issues, d.sampleRate, { min: 0, max: 1 }),
    alwaysLogErrors: optBoolean(o, 'alwaysLogErrors', path, issues, d.alwaysLogErrors),
    output: optString(o, 'output', path, issues) ?? d.output,
  });
}

/** Parses the `telemetry` section (exported for tests and for `meshlet validate`). */
export function parseTelemetryConfig(raw: unknown, path: string, issues: ConfigIssue[]): TelemetryConfig {
  const o = expectObject(raw, path, issues);
  if (!o) return DEFAULT_TELEMETRY;
  checkKeys(o, ['metrics', 'tracing', 'accessLog'], path, issues);
  return Object.freeze({
    metrics:
      o.metrics === undefined
        ? DEFAULT_TELEMETRY.metrics
        : parseMetrics(o.metrics, join(path, 'metrics'), issues),
    tracing:
      o.tracing === undefined
        ? DEFAULT_TELEMETRY.tracing
        : parseTracing(o.tracing, join(path, 'tracing'), issues),
    accessLog:
      o.accessLog === undefined
        ? DEFAULT_TELEMETRY.accessLog
        : parseAccessLog(o.accessLog, join(path, 'accessLog'), issues),
  });
}

/** Parses the `admin` section. */
export function parseAdminConfig(raw: unknown, path: string, issues: ConfigIssue[]): AdminConfig {
  const o = expectObject(raw, path, issues);
  if (!o) return { port: 0, host: '127.0.0.1' };
  checkKeys(o, ['port', 'host'], path, issues);
  if (o.port === undefined)
    issues.push({ path: join(path, 'port'), message: 'is required (0 picks a free port)' });
  return Object.freeze({
    port: optNumber(o, 'port', path, issues, 0, { min: 0, max: 65535, integer: true }),
    host: optString(o, 'host', path, issues) ?? '127.0.0.1',
  });
}

let registered = false;
/** Registers the `telemetry` and `admin` config sections (idempotent; done on import of the package). */
export function registerTelemetryConfig(): void {
  if (registered) return;
  registered = true;
  registerMeshSection<TelemetryConfig>({ name: 'telemetry', parse: parseTelemetryConfig });
  registerMeshSection<AdminConfig>({ name: 'admin', parse: parseAdminConfig });
}
