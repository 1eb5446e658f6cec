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

const adminObject = s.object(
  {
    port: s.integer({
      min: 0,
      max: 65535,
      required: 'is required (0 picks a free port)',
      doc: 'Port of the admin HTTP server; 0 picks a free one.',
    }),
    host: s.string({
      default: '127.0.0.1',
      doc: 'Address to bind (the admin page is not for the network).',
    }),
  },
  {
    name: 'AdminInput',
    doc: 'The admin server: `/` (HTML), `/metrics`, `/config_dump`, `/healthz`, `/ready`.',
  },
);

/** Parses the `admin` section. */
export function parseAdminConfig(raw: unknown, path: string, issues: ConfigIssue[]): AdminConfig {
  const o = adminObject.parse(raw, path, issues);
  return Object.freeze({ port: o?.port ?? 0, host: o?.host ?? '127.0.0.1' });
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
