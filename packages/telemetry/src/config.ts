import { resolve } from 'node:path';
import { type ConfigIssue, describe, registerMeshSection, type Schema, s } from '@meshlet/core';

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
  /**
   * The most series one metric keeps (default 2000, OpenTelemetry's cardinality limit); new label
   * sets beyond it are counted in `meshlet_metric_series_dropped_total` and recorded in the metric's
   * `otel_metric_overflow="true"` series.
   */
  readonly maxSeries: number;
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
  /** `json` (meshlet's flat fields) or `ecs` (Elastic Common Schema) (default `json`). */
  readonly format: 'json' | 'ecs';
}

export interface TelemetryConfig {
  readonly metrics: MetricsConfig;
  readonly tracing: TracingConfig;
  readonly accessLog: AccessLogConfig;
}

/** Where the admin server's bearer token comes from. */
export type AdminToken =
  | { readonly value: string; readonly file?: undefined }
  /** A file holding the token (a mounted Kubernetes Secret), re-read when it changes. */
  | { readonly file: string; readonly value?: undefined };

export interface AdminConfig {
  /** Port of the admin HTTP server; 0 picks a free one. */
  readonly port: number;
  /** Address to bind (default `127.0.0.1`: the admin page is not for the network). */
  readonly host: string;
  /**
   * Bearer token required on every path but `/healthz` and `/ready` (default: none). A string, or
   * `{ file }` naming a file that holds it (resolved against the config's directory).
   */
  readonly token: AdminToken | undefined;
  /** Connections open at once; more are closed at accept (default 64). */
  readonly maxConnections: number;
  /** Connections open at once from one client IP address (default 16). */
  readonly maxConnectionsPerClient: number;
  /** Time a client has to send the request headers, from the connection or request start (default 5s). */
  readonly headersTimeoutMs: number;
  /** Time a client has to send the whole request; also the socket idle timeout (default 10s). */
  readonly requestTimeoutMs: number;
  /** Idle time after a response before a keep-alive connection is closed (default 5s). */
  readonly keepAliveTimeoutMs: number;
}

/** The admin server's defaults (every field but `port`, which `admin:` must give). */
export const DEFAULT_ADMIN: Omit<AdminConfig, 'port'> = Object.freeze({
  host: '127.0.0.1',
  token: undefined,
  maxConnections: 64,
  maxConnectionsPerClient: 16,
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
});

/** The characters of an RFC 6750 `b64token`, and the shortest token accepted. */
const TOKEN_RE = /^[A-Za-z0-9\-._~+/]+=*$/;
export const MIN_ADMIN_TOKEN_LENGTH = 16;

/** Why `token` cannot be a bearer token, or undefined when it can. */
export function adminTokenProblem(token: string): string | undefined {
  if (token.length < MIN_ADMIN_TOKEN_LENGTH)
    return `must be at least ${MIN_ADMIN_TOKEN_LENGTH} characters long (got ${token.length})`;
  if (!TOKEN_RE.test(token))
    return 'must use only the characters of an RFC 6750 bearer token (A-Z a-z 0-9 - . _ ~ + / and trailing =)';
  return undefined;
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
    maxSeries: 2000,
  }),
  tracing: Object.freeze({
    enabled: true,
    propagation: Object.freeze(['w3c'] as Propagation[]),
    attemptSpans: false,
  }),
  accessLog: Object.freeze({
    enabled: false,
    sampleRate: 1,
    alwaysLogErrors: true,
    output: 'stdout',
    format: 'json' as const,
  }),
});

const PROPAGATIONS: readonly Propagation[] = ['w3c', 'b3', 'b3multi'];
const T = DEFAULT_TELEMETRY;

const metricsObject = s.object(
  {
    enabled: s.boolean({ default: T.metrics.enabled, doc: 'Record metrics.' }),
    naming: s.enum(['otel', 'istio', 'both'] as const, {
      default: T.metrics.naming,
      doc: '`otel` (OpenTelemetry HTTP semantic conventions), `istio` (istio_* names) or `both`.',
    }),
    perEndpoint: s.boolean({
      default: T.metrics.perEndpoint,
      doc: 'Per-endpoint series (attempts, latency, load), removed when an endpoint leaves.',
    }),
    exemplars: s.boolean({
      default: T.metrics.exemplars,
      doc: 'Attach trace and span ids as exemplars to duration buckets (OpenMetrics only).',
    }),
    defaultMetrics: s.boolean({
      default: T.metrics.defaultMetrics,
      doc: "Register prom-client's default process metrics too.",
    }),
    buckets: s.custom<readonly number[], readonly number[]>(
      {
        ts: 'readonly number[]',
        json: { type: 'array', items: { type: 'number', exclusiveMinimum: 0 }, minItems: 1 },
        parse(b, path, issues) {
          if (
            !Array.isArray(b) ||
            b.length === 0 ||
            !b.every(
              (x, i) => typeof x === 'number' && x > 0 && Number.isFinite(x) && (i === 0 || x > b[i - 1]),
            )
          ) {
            issues.push({
              path,
              message: `must be a non-empty increasing list of positive numbers (seconds), got ${describe(b)}`,
            });
            return undefined;
          }
          return Object.freeze([...(b as number[])]);
        },
      },
      {
        default: [...DEFAULT_BUCKETS],
        doc: "Histogram buckets in seconds (OpenTelemetry's HTTP duration buckets).",
      },
    ),
    maxSeries: s.integer({
      min: 1,
      default: T.metrics.maxSeries,
      doc:
        "The most series one metric keeps (OpenTelemetry's cardinality limit); new label sets beyond it are " +
        'counted in `meshlet_metric_series_dropped_total` and recorded in the metric\'s `otel_metric_overflow="true"` series.',
    }),
  },
  {
    name: 'MetricsInput',
    doc: 'Prometheus metrics (prom-client); `true`/`false` is short for `{ enabled }`.',
  },
);

const tracingObject = s.object(
  {
    enabled: s.boolean({
      default: T.tracing.enabled,
      doc: 'Create spans and propagate context (a no-op while no tracer provider is set).',
    }),
    propagation: s.array(s.enum(PROPAGATIONS), {
      commaSeparated: true,
      nonEmpty: true,
      message: `must be one or more of ${PROPAGATIONS.join(', ')}`,
      default: ['w3c'],
      doc: 'Formats injected on outbound requests and accepted on inbound ones: `w3c`, `b3`, `b3multi`.',
    }),
    attemptSpans: s.boolean({
      default: T.tracing.attemptSpans,
      doc: "One child span per attempt under the request's span, instead of span events.",
    }),
  },
  { name: 'TracingInput', doc: 'Tracing (@opentelemetry/api); `true`/`false` is short for `{ enabled }`.' },
);

const accessLogObject = s.object(
  {
    enabled: s.boolean({
      default: true,
      doc: 'Write an access log line per request (giving the object turns it on).',
    }),
    sampleRate: s.number({
      min: 0,
      max: 1,
      default: T.accessLog.sampleRate,
      doc: 'Fraction of successful requests logged, 0..1.',
    }),
    alwaysLogErrors: s.boolean({
      default: T.accessLog.alwaysLogErrors,
      doc: 'Log every failed request whatever the sample rate.',
    }),
    output: s.string({
      default: T.accessLog.output,
      doc: 'Where lines go when no sink is passed in code: `stdout`, `stderr` or a file path.',
    }),
    format: s.enum(['json', 'ecs'] as const, {
      default: T.accessLog.format,
      doc:
        "`json`: meshlet's flat fields; `ecs`: Elastic Common Schema lines (`@timestamp`, `event.duration` in ns, " +
        '`http.*`, `url.*`, `trace.id`, …) that Kibana reads without an ingest pipeline.',
    }),
  },
  { name: 'AccessLogInput', doc: 'Access logs as JSON lines; `true`/`false` is short for `{ enabled }`.' },
);

/** `metrics: true|false|{...}` and the like: a boolean is short for `{ enabled }`. */
function toggle<O extends { enabled: boolean }>(
  object: Schema<unknown, O, boolean>,
  def: O,
  doc: string,
): Schema<unknown, O, false> {
  return s
    .union([s.boolean(), object], { doc, defaultText: def.enabled ? 'on' : 'off' })
    .to((v) => (typeof v === 'boolean' ? { ...def, enabled: v } : v)) as Schema<unknown, O, false>;
}

const metricsSchema = toggle(
  metricsObject.to((o): MetricsConfig => Object.freeze({ ...o, buckets: o.buckets ?? DEFAULT_BUCKETS })),
  T.metrics,
  'Prometheus metrics (prom-client).',
);
const tracingSchema = toggle(
  tracingObject.to(
    (o): TracingConfig =>
      Object.freeze({
        enabled: o.enabled,
        propagation: Object.freeze([...new Set(o.propagation)]),
        attemptSpans: o.attemptSpans,
      }),
  ),
  T.tracing,
  'Tracing through @opentelemetry/api.',
);
const accessLogSchema = toggle(
  accessLogObject.to((o): AccessLogConfig => Object.freeze({ ...o })),
  T.accessLog,
  'Access logs (docs/telemetry.md).',
);

const telemetryObject = s.object(
  { metrics: metricsSchema, tracing: tracingSchema, accessLog: accessLogSchema },
  { name: 'TelemetryInput', doc: 'Metrics, tracing and access logs (docs/telemetry.md).' },
);

/** Parses the `telemetry` section (exported for tests and for `meshlet validate`). */
export function parseTelemetryConfig(raw: unknown, path: string, issues: ConfigIssue[]): TelemetryConfig {
  const o = telemetryObject.parse(raw, path, issues);
  if (!o) return DEFAULT_TELEMETRY;
  return Object.freeze({
    metrics: o.metrics ?? T.metrics,
    tracing: o.tracing ?? T.tracing,
    accessLog: o.accessLog ?? T.accessLog,
  });
}

const MAX_ADMIN_TIMEOUT_MS = 600_000;

/** A timeout of the admin server: 1 ms to 10 minutes. */
function adminTimeout(def: string, doc: string) {
  return s.duration({ default: def, doc }).to((ms, path, issues) => {
    if (ms >= 1 && ms <= MAX_ADMIN_TIMEOUT_MS) return ms;
    issues.push({ path, message: `must be between 1ms and 10m, got ${ms}ms` });
    return undefined;
  });
}

const adminTokenSchema = s.union(
  [
    s.string({ doc: 'The token itself.' }).to((value, path, issues): AdminToken | undefined => {
      const problem = adminTokenProblem(value);
      if (problem === undefined) return Object.freeze({ value });
      issues.push({ path, message: problem });
      return undefined;
    }),
    s
      .object(
        {
          file: s.string({
            required: true,
            doc: "A file holding the token (a mounted Secret), relative to the config file's directory.",
          }),
        },
        { name: 'AdminTokenFile', doc: 'A file that holds the token; looked at again when it changes.' },
      )
      .to((o, _path, _issues, baseDir): AdminToken | undefined =>
        o.file === undefined ? undefined : Object.freeze({ file: resolve(baseDir, o.file) }),
      ),
  ],
  {
    defaultText: 'none',
    doc:
      'Bearer token required on every path but /healthz and /ready: 16 or more characters of an ' +
      'RFC 6750 token, or { file } naming a file that holds it.',
  },
);

const adminObject = s.object(
  {
    port: s.integer({
      min: 0,
      max: 65535,
      required: 'is required (0 picks a free port)',
      doc: 'Port of the admin HTTP server; 0 picks a free one.',
    }),
    host: s.string({
      default: DEFAULT_ADMIN.host,
      doc: 'Address to bind (the admin page is not for the network; bind elsewhere only with a token).',
    }),
    token: adminTokenSchema,
    maxConnections: s.integer({
      min: 1,
      max: 100_000,
      default: DEFAULT_ADMIN.maxConnections,
      doc: 'Connections open at once; more are closed as they are accepted.',
    }),
    maxConnectionsPerClient: s.integer({
      min: 1,
      max: 100_000,
      defaultText: '16 (or maxConnections, if smaller)',
      doc: 'Connections open at once from one client IP address.',
    }),
    headersTimeout: adminTimeout(
      '5s',
      'Time a client has to send the request headers (a trickling client is cut off).',
    ),
    requestTimeout: adminTimeout(
      '10s',
      'Time a client has to send the whole request; also the socket idle timeout. At least headersTimeout.',
    ),
    keepAliveTimeout: adminTimeout(
      '5s',
      'Idle time after a response before a keep-alive connection is closed.',
    ),
  },
  {
    name: 'AdminInput',
    doc: 'The admin server: `/` (HTML), `/metrics`, `/clusters`, `/config_dump`, `/healthz`, `/ready`.',
  },
);

/** Parses the `admin` section. */
export function parseAdminConfig(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
  baseDir: string = process.cwd(),
): AdminConfig {
  const o = adminObject.parse(raw, path, issues, baseDir);
  const d = DEFAULT_ADMIN;
  const headersTimeoutMs = o?.headersTimeout ?? d.headersTimeoutMs;
  const requestTimeoutMs = o?.requestTimeout ?? d.requestTimeoutMs;
  if (headersTimeoutMs > requestTimeoutMs) {
    const given = raw !== null && typeof raw === 'object' && 'headersTimeout' in raw;
    issues.push({
      path: `${path}.${given ? 'headersTimeout' : 'requestTimeout'}`,
      message: `headersTimeout (${headersTimeoutMs}ms) must not exceed requestTimeout (${requestTimeoutMs}ms)`,
    });
  }
  const maxConnections = o?.maxConnections ?? d.maxConnections;
  return Object.freeze({
    port: o?.port ?? 0,
    host: o?.host ?? d.host,
    token: o?.token,
    maxConnections,
    maxConnectionsPerClient:
      o?.maxConnectionsPerClient ?? Math.min(d.maxConnectionsPerClient, maxConnections),
    headersTimeoutMs,
    requestTimeoutMs,
    keepAliveTimeoutMs: o?.keepAliveTimeout ?? d.keepAliveTimeoutMs,
  });
}

let registered = false;
/** Registers the `telemetry` and `admin` config sections (idempotent; done on import of the package). */
export function registerTelemetryConfig(): void {
  if (registered) return;
  registered = true;
  registerMeshSection<TelemetryConfig>({
    name: 'telemetry',
    schema: telemetryObject.with({
      defaultText: 'metrics and tracing on, access logs off',
      doc: telemetryObject.meta.doc,
    }),
    parse: parseTelemetryConfig,
  });
  registerMeshSection<AdminConfig>({
    name: 'admin',
    schema: adminObject.with({ defaultText: 'off', doc: adminObject.meta.doc }),
    parse: parseAdminConfig,
  });
}
