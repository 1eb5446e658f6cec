import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { endpointSchema } from './discovery/endpoints.js';
import type { DiscoveryFactory } from './discovery/types.js';
import { formatDuration } from './duration.js';
import { type ConfigIssue, MeshConfigError } from './errors.js';
import type { LbSelection } from './lb/types.js';
import { discoverySources, loadBalancers } from './registry.js';
import {
  DEFAULT_RESILIENCE,
  parseResiliencePolicy,
  type ResiliencePolicy,
  resilienceFields,
} from './resilience/policy.js';
import { type Fields, JsonEmitter, type JsonSchema, type Schema, s, taggedJson } from './schema.js';
import type { UpstreamSecurity } from './upstream-tls.js';
import { describe, expectObject, isPlainObject, join } from './validate.js';
import { loadYaml } from './yaml.js';

/** Conditions under which a failed attempt is retried (Envoy's `retry_on` names). */
export type RetryCondition =
  /** Could not connect (refused, unreachable, connect timeout, TLS handshake failure). */
  | 'connect-failure'
  /** The connection was reset/closed before any response byte arrived. */
  | 'reset'
  /** HTTP/2 REFUSED_STREAM (the server never processed the request). */
  | 'refused-stream'
  /** Any 5xx response. */
  | '5xx'
  /** 502, 503 and 504 responses, plus connect failures. */
  | 'gateway-error'
  /** Responses whose status is in `statusCodes`. */
  | 'retriable-status-codes'
  /** The per-try timeout fired. */
  | 'per-try-timeout'
  /** gRPC calls answered with that status (Envoy's gRPC `retry_on` names; HTTP calls never match). */
  | 'cancelled'
  | 'deadline-exceeded'
  | 'resource-exhausted'
  | 'internal'
  | 'unavailable';

export const RETRY_CONDITIONS: readonly RetryCondition[] = [
  'connect-failure',
  'reset',
  'refused-stream',
  '5xx',
  'gateway-error',
  'retriable-status-codes',
  'per-try-timeout',
  'cancelled',
  'deadline-exceeded',
  'resource-exhausted',
  'internal',
  'unavailable',
];

/** The gRPC status code of each gRPC retry condition. */
export const GRPC_RETRY_CODES: Readonly<Partial<Record<RetryCondition, number>>> = Object.freeze({
  cancelled: 1,
  'deadline-exceeded': 4,
  'resource-exhausted': 8,
  internal: 13,
  unavailable: 14,
});

export interface RetryBudgetPolicy {
  /** Retries allowed as a percentage of requests in the window (Linkerd/Finagle: 20). */
  readonly percent: number;
  /** Retries always allowed per second, whatever the request rate (10). */
  readonly minPerSecond: number;
  /** The sliding window over which requests are counted, in ms (10s). */
  readonly windowMs: number;
}

export interface RetryPolicy {
  /** Retries after the first attempt (Istio's default: 2). 0 disables retries. */
  readonly maxRetries: number;
  readonly on: ReadonlySet<RetryCondition>;
  /** Statuses retried under `retriable-status-codes` (default [503]). */
  readonly statusCodes: readonly number[];
  /** Exponential backoff with full jitter: base and cap (Envoy: 25ms, 250ms). */
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  /** Retry non-idempotent methods (POST, PATCH) too. Default false. */
  readonly nonIdempotent: boolean;
  /**
   * Bytes of a streamed request body kept so that the request can be sent again (Envoy's
   * `per_request_buffer_limit_bytes`, Linkerd's 64 KiB): a body that outgrows it is not replayed.
   * Default 65536.
   */
  readonly bufferLimitBytes: number;
  readonly budget: RetryBudgetPolicy;
  /**
   * gRPC status codes the user listed (an xDS route's `retry_on`: `cancelled`, `deadline-exceeded`,
   * `internal`, `resource-exhausted`, `unavailable`; a gRPC client's `retry.codes`): they replace
   * the gRPC conditions of `on`, and are retried whatever the method's idempotency (the user said
   * the code means "not processed"). Undefined: `on`'s gRPC conditions, for idempotent methods only.
   */
  readonly grpcCodes?: readonly number[] | undefined;
}

export interface ConnectionPolicy {
  /** Connections per endpoint (undici Pool `connections`); 0 = unlimited. Default 0. */
  readonly maxPerEndpoint: number;
  /** Connect timeout in ms (10s). */
  readonly connectTimeoutMs: number;
  /** Idle keep-alive timeout in ms (4s, undici's default). */
  readonly keepAliveTimeoutMs: number;
}

/** Everything that governs how requests to a service are sent. `defaults` holds the same fields. */
export interface ServicePolicy extends ResiliencePolicy {
  readonly lb: LbSelection;
  /**
   * Deadline for the whole call, retries included, in ms; 0 = none. Default 0: Istio turns the
   * route timeout off by default, so streams and long downloads are not cut.
   */
  readonly timeoutMs: number;
  /** Timeout for one attempt in ms; 0 = only the overall deadline. Default 0. */
  readonly perTryTimeoutMs: number;
  readonly retry: RetryPolicy;
  /** Below this percentage of usable endpoints, balance over all of them (Envoy: 50). */
  readonly panicThreshold: number;
  /** Expected peer SPIFFE ID (exact) or trust domain (`spiffe://td`), checked under mTLS. */
  readonly identity: string | undefined;
  /**
   * Transport security a control plane decided for the service's hops (xDS UpstreamTlsContext,
   * gRFC A29): per endpoint mTLS or plaintext, certificate-provider instances, accepted peer
   * names. When set, it replaces the mesh's `tls` and `identity` for this service.
   */
  readonly upstreamSecurity?: UpstreamSecurity | undefined;
  readonly connection: ConnectionPolicy;
  /** Service-level sections registered by other packages (keyed by section name). */
  readonly extensions: Readonly<Record<string, unknown>>;
}

export interface DiscoverySelection {
  readonly type: string;
  readonly config: unknown;
}

export interface ServiceConfig extends ServicePolicy {
  readonly name: string;
  readonly discovery: DiscoverySelection;
}

export interface LocalConfig {
  readonly region: string;
  readonly zone: string;
  readonly subZone: string;
  /** This workload's name and namespace, for telemetry and identity. */
  readonly workload: string;
  readonly namespace: string;
}

/**
 * A validated, normalized mesh config: what `parseConfig` returns and `mesh.config` holds (durations
 * in ms, defaults filled, policies resolved). The input a user writes is `MeshConfig`.
 */
export interface ParsedMeshConfig {
  readonly services: Readonly<Record<string, ServiceConfig>>;
  readonly defaults: ServicePolicy;
  /** Hosts the mesh does not know go to a plain undici Agent (true) or fail (false). Default true. */
  readonly passthrough: boolean;
  /** Time `ready()` waits for every discovery source's first answer, in ms (10s). */
  readonly readyTimeoutMs: number;
  /**
   * Services and routes created on demand for undeclared names (Kubernetes, xDS) are closed after
   * this long without a request (`idleServiceTimeout`, 5m; 0 keeps them for the mesh's life).
   */
  readonly idleServiceTimeoutMs: number;
  readonly local: LocalConfig;
  /** Mesh-level sections registered by other packages (`tls`, `admin`, `kubernetes`, …). */
  readonly extensions: Readonly<Record<string, unknown>>;
  /** Directory relative paths are resolved against. */
  readonly baseDir: string;
  /** The file the config came from, if any. */
  readonly source: string | undefined;
}

/** A config section contributed by another package, at mesh level or service level. */
export interface ConfigSection<T = unknown> {
  readonly name: string;
  /**
   * The section's schema: its editors' JSON Schema and its generated TypeScript type. Without one
   * the section is typed `unknown` and any value passes the JSON Schema (only `parse` checks it).
   */
  readonly schema?: Schema<unknown, unknown, boolean> | undefined;
  parse(raw: unknown, path: string, issues: ConfigIssue[], baseDir: string): T;
}

const meshSections = new Map<string, ConfigSection>();
const serviceSections = new Map<string, ConfigSection>();

/** Registers a top-level config key (e.g. `tls`, `admin`). Idempotent per name. */
export function registerMeshSection<T>(section: ConfigSection<T>): void {
  meshSections.set(section.name, section as ConfigSection);
}

/** Registers a service-level config key, valid in `defaults` and every `services.<name>`. */
export function registerServiceSection<T>(section: ConfigSection<T>): void {
  serviceSections.set(section.name, section as ConfigSection);
}

/** The registered sections (for the schema generator and `meshlet validate`). */
export function configSections(level: 'mesh' | 'service'): ReadonlyMap<string, ConfigSection> {
  return level === 'mesh' ? meshSections : serviceSections;
}

function sectionFields(sections: ReadonlyMap<string, ConfigSection>): Fields {
  const out: Record<string, Schema<unknown, unknown, boolean>> = {};
  for (const [name, section] of sections) {
    out[name] =
      section.schema ??
      s.custom<unknown, unknown>(
        {
          ts: 'unknown',
          json: {},
          parse: (raw, path, issues, baseDir) => section.parse(raw, path, issues, baseDir),
        },
        { doc: `The \`${name}\` section (registered without a schema).`, defaultText: 'none' },
      );
  }
  return out;
}

/**
 * Istio's default retry policy (`DefaultPolicy()` in istio/pilot's route/retry package): 2 retries on
 * `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` with 503, to
 * another host than the ones tried. Resets are not retried by default.
 */
export const DEFAULT_RETRY: RetryPolicy = Object.freeze({
  maxRetries: 2,
  on: new Set<RetryCondition>([
    'connect-failure',
    'refused-stream',
    'unavailable',
    'cancelled',
    'retriable-status-codes',
  ]),
  // Not frozen: every HTTP answer scans it (`Call`), and on Node 20 an element read of a frozen
  // array from optimized code is a generic keyed-load IC call (~90 instructions; a plain array's
  // is a few). `readonly` in its type, like the rest of the policy.
  statusCodes: [503],
  backoffBaseMs: 25,
  backoffMaxMs: 250,
  nonIdempotent: false,
  bufferLimitBytes: 65_536,
  budget: Object.freeze({ percent: 20, minPerSecond: 10, windowMs: 10_000 }),
});

const NO_RETRY: RetryPolicy = Object.freeze({
  ...DEFAULT_RETRY,
  maxRetries: 0,
  on: new Set<RetryCondition>(),
});

const DEFAULT_CONNECTION: ConnectionPolicy = Object.freeze({
  maxPerEndpoint: 0,
  connectTimeoutMs: 10_000,
  keepAliveTimeoutMs: 4_000,
});

export const DEFAULT_POLICY: ServicePolicy = Object.freeze({
  // `config: undefined` means the policy's defaults (every built-in accepts it).
  lb: Object.freeze({ policy: 'peak_ewma', config: undefined }) as LbSelection,
  timeoutMs: 0,
  perTryTimeoutMs: 0,
  retry: DEFAULT_RETRY,
  panicThreshold: 50,
  identity: undefined,
  connection: DEFAULT_CONNECTION,
  extensions: Object.freeze({}),
  ...DEFAULT_RESILIENCE,
});

/** Overridden by a later issue's policy: the default LB is chosen at registration time. */
let defaultLbPolicy = 'least_request';
/** Makes `name` the policy used when a service names none. */
export function setDefaultLoadBalancer(name: string): void {
  defaultLbPolicy = name;
}

function parseLb(raw: unknown, path: string, issues: ConfigIssue[]): LbSelection {
  let name: string | undefined;
  let options: Record<string, unknown> = {};
  if (typeof raw === 'string') {
    name = raw;
  } else if (isPlainObject(raw)) {
    if (typeof raw.policy !== 'string') {
      issues.push({ path: join(path, 'policy'), message: `must name a policy, got ${describe(raw.policy)}` });
      return { policy: defaultLbPolicy, config: undefined };
    }
    name = raw.policy;
    const { policy: _p, ...rest } = raw;
    options = rest;
  } else {
    issues.push({ path, message: `must be a policy name or { policy, ...options }, got ${describe(raw)}` });
    return { policy: defaultLbPolicy, config: undefined };
  }
  const factory = loadBalancers.lookup(name, typeof raw === 'string' ? path : join(path, 'policy'), issues);
  if (!factory) return { policy: defaultLbPolicy, config: undefined };
  return Object.freeze({ policy: name, config: factory.parseConfig(options, path, issues) });
}

/** `lb`: a registered policy's name, or `{ policy, ...options }` (LbPolicies in the generated types). */
const lbSchema = s.custom<unknown, LbSelection>(
  {
    ts: (e) => {
      e.use('LbInput');
      return 'LbInput';
    },
    json: (e) =>
      e.ref('LbInput', () => ({
        description: 'A load-balancing policy: its name, or { policy, ...options }.',
        anyOf: [
          { enum: loadBalancers.names() },
          ...loadBalancers.names().map((n) => taggedJson(e, 'policy', n, loadBalancers.get(n)?.schema)),
        ],
      })),
    accepts: (raw) => typeof raw === 'string' || isPlainObject(raw),
    parse: parseLb,
  },
  {
    doc: 'The load-balancing policy: a name or `{ policy, ...options }` (docs/load-balancing.md).',
    default: 'peak_ewma',
  },
);

const RETRY_ON_ITEM_MESSAGE = `must be an HTTP status code or one of ${RETRY_CONDITIONS.join(', ')}`;

/** One `retry.on` entry: a condition name or a status code (a number or a 3-digit string). */
const retryOnItem = s.custom<RetryCondition | number, RetryCondition | number>({
  ts: `${RETRY_CONDITIONS.map((c) => JSON.stringify(c)).join(' | ')} | number`,
  json: {
    anyOf: [
      { enum: [...RETRY_CONDITIONS] },
      { type: 'integer', minimum: 100, maximum: 599 },
      { type: 'string', pattern: '^\\d{3}$' },
    ],
  },
  parse(item, path, issues) {
    const asNum =
      typeof item === 'number'
        ? item
        : typeof item === 'string' && /^\d{3}$/.test(item)
          ? Number(item)
          : Number.NaN;
    if (Number.isInteger(asNum) && asNum >= 100 && asNum <= 599) return asNum;
    if (typeof item === 'string' && (RETRY_CONDITIONS as readonly string[]).includes(item))
      return item as RetryCondition;
    issues.push({ path, message: `${RETRY_ON_ITEM_MESSAGE}, got ${describe(item)}` });
    return undefined;
  },
});

export const retrySchema = s.object(
  {
    attempts: s.integer({
      min: 0,
      max: 10,
      default: DEFAULT_RETRY.maxRetries,
      doc: "Retries after the first attempt (Istio's default); 0 disables retries.",
    }),
    on: s.array(retryOnItem, {
      commaSeparated: true,
      message: 'must be a list or comma-separated string',
      default: 'connect-failure,refused-stream,unavailable,cancelled,503',
      doc:
        "Conditions retried (Envoy's `retry_on` names) and status codes: `connect-failure`, `reset`, " +
        '`refused-stream`, `5xx`, `gateway-error`, `retriable-status-codes`, `per-try-timeout`, `503`, …; ' +
        'for gRPC calls `unavailable`, `cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`. ' +
        "The default is Istio's: resets are not retried.",
    }),
    backoff: s.object(
      {
        base: s.duration({
          default: formatDuration(DEFAULT_RETRY.backoffBaseMs),
          doc: "First backoff; exponential with full jitter (Envoy's).",
        }),
        max: s.duration({
          defaultText: `${formatDuration(DEFAULT_RETRY.backoffMaxMs)}, or 10 × base when only base is given`,
          doc: 'The backoff cap (must be >= base).',
        }),
      },
      {
        name: 'RetryBackoffInput',
        doc: 'Exponential backoff with full jitter between attempts.',
        defaultText: '{ base: 25ms, max: 250ms }',
      },
    ),
    nonIdempotent: s.boolean({
      default: false,
      doc: 'Also retry POST, PATCH and other non-idempotent methods after they may have reached the server.',
    }),
    bufferLimit: s.integer({
      min: 0,
      max: 1_073_741_824,
      default: DEFAULT_RETRY.bufferLimitBytes,
      doc:
        "Bytes of a streamed request body kept so that it can be sent again (Envoy's " +
        "per_request_buffer_limit_bytes, Linkerd's 64 KiB); a longer body is not replayed.",
    }),
    budget: s.object(
      {
        percent: s.number({
          min: 0,
          max: 1000,
          default: DEFAULT_RETRY.budget.percent,
          doc: 'Retries may be at most this share (%) of requests in the window (Linkerd, Finagle).',
        }),
        minPerSecond: s.number({
          min: 0,
          default: DEFAULT_RETRY.budget.minPerSecond,
          doc: 'Retries always allowed per second, whatever the traffic.',
        }),
        window: s.duration({
          default: formatDuration(DEFAULT_RETRY.budget.windowMs),
          doc: 'The sliding window of the budget.',
        }),
      },
      {
        name: 'RetryBudgetInput',
        doc: 'The retry budget: retries as a share of requests.',
        defaultText: '{ percent: 20, minPerSecond: 10, window: 10s }',
      },
    ),
  },
  { name: 'RetryInput', doc: "Retries (Istio's defaults), within a retry budget; `false` disables them." },
);

function parseRetry(raw: unknown, path: string, issues: ConfigIssue[]): RetryPolicy {
  if (raw === false) return NO_RETRY;
  const o = retrySchema.parse(raw, path, issues);
  if (!o) return DEFAULT_RETRY;
  const on = new Set<RetryCondition>();
  const codes: number[] = [];
  for (const item of o.on) {
    if (typeof item === 'number') {
      codes.push(item);
      on.add('retriable-status-codes');
    } else on.add(item);
  }
  const statusCodes =
    codes.length > 0 ? codes : on.has('retriable-status-codes') ? DEFAULT_RETRY.statusCodes : [];
  let backoffBaseMs = DEFAULT_RETRY.backoffBaseMs;
  let backoffMaxMs = DEFAULT_RETRY.backoffMaxMs;
  if (o.backoff) {
    backoffBaseMs = o.backoff.base;
    backoffMaxMs = o.backoff.max ?? Math.max(backoffBaseMs * 10, DEFAULT_RETRY.backoffMaxMs);
    if (backoffMaxMs < backoffBaseMs) {
      issues.push({ path: join(path, 'backoff.max'), message: 'must be >= backoff.base' });
    }
  }
  const b = o.budget;
  return Object.freeze({
    maxRetries: o.attempts,
    on,
    statusCodes, // not frozen: see DEFAULT_RETRY
    backoffBaseMs,
    backoffMaxMs,
    nonIdempotent: o.nonIdempotent,
    bufferLimitBytes: o.bufferLimit,
    budget: b
      ? Object.freeze({ percent: b.percent, minPerSecond: b.minPerSecond, windowMs: b.window })
      : DEFAULT_RETRY.budget,
  });
}

export const connectionSchema = s.object(
  {
    maxPerEndpoint: s.integer({
      min: 0,
      default: DEFAULT_CONNECTION.maxPerEndpoint,
      doc: 'Connections per endpoint (undici Pool `connections`); 0 = unlimited.',
    }),
    connectTimeout: s.duration({
      default: formatDuration(DEFAULT_CONNECTION.connectTimeoutMs),
      doc: 'TCP and TLS connect timeout.',
    }),
    keepAliveTimeout: s.duration({
      default: formatDuration(DEFAULT_CONNECTION.keepAliveTimeoutMs),
      doc: "Idle keep-alive timeout (undici's default).",
    }),
  },
  {
    name: 'ConnectionInput',
    doc: 'Connection pool settings of each endpoint.',
    defaultText: 'the default of each field',
  },
);

function parseConnection(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
  base: ConnectionPolicy,
): ConnectionPolicy {
  const o = connectionSchema.given(raw, path, issues);
  if (!o) return base;
  return Object.freeze({
    maxPerEndpoint: o.maxPerEndpoint ?? base.maxPerEndpoint,
    connectTimeoutMs: o.connectTimeout ?? base.connectTimeoutMs,
    keepAliveTimeoutMs: o.keepAliveTimeout ?? base.keepAliveTimeoutMs,
  });
}

/**
 * The policy fields of `defaults` and of every service. A field a service gives replaces the
 * `defaults` value (objects such as `connection` and `circuitBreaker` field by field).
 */
export const policySchema = s.object(
  {
    lb: lbSchema,
    timeout: s.duration({
      default: formatDuration(DEFAULT_POLICY.timeoutMs),
      doc:
        'Deadline for the whole call, retries and backoff included; 0 = none (the default: Istio ' +
        'turns the route timeout off, so streams and long downloads are never cut). Expiry fails ' +
        'the call with MESHLET_ERR_TIMEOUT and aborts the request on the wire.',
    }),
    perTryTimeout: s.duration({
      default: DEFAULT_POLICY.perTryTimeoutMs,
      doc: 'Timeout of one attempt (MESHLET_ERR_PER_TRY_TIMEOUT); 0 = only the overall deadline.',
    }),
    retry: s.union([s.literal(false), retrySchema], {
      doc: "Retries (Istio's defaults: two, on connect-failure, refused-stream, reset and 503); `false` disables them.",
      defaultText: '{ attempts: 2 }',
    }),
    panicThreshold: s.number({
      min: 0,
      max: 100,
      default: DEFAULT_POLICY.panicThreshold,
      doc:
        'Below this percentage of usable endpoints in a priority level, balance over all its endpoints ' +
        "(Envoy's panic mode).",
    }),
    identity: s.string({
      pattern: /^spiffe:\/\//,
      patternMessage: 'must be a SPIFFE ID or trust domain (spiffe://…)',
      defaultText: 'none',
      doc: 'Expected peer SPIFFE ID (`spiffe://td/ns/x/sa/y`) or trust domain (`spiffe://td`) under mTLS.',
    }),
    connection: connectionSchema,
    ...resilienceFields,
  },
  {
    name: 'PolicyInput',
    doc: 'How requests to a service are sent. A field a service leaves out comes from `defaults`.',
    extensions: [{ ts: 'ServiceSections', fields: () => sectionFields(serviceSections) }],
  },
);

/** Parses policy fields of `obj` on top of `base` (each field given replaces the base's). */
function parsePolicy(
  obj: Record<string, unknown>,
  path: string,
  issues: ConfigIssue[],
  base: ServicePolicy,
  baseDir: string,
): ServicePolicy {
  const field = <K extends keyof typeof policySchema.fields & string>(key: K) =>
    policySchema.field(obj, key, path, issues, baseDir);
  const extensions: Record<string, unknown> = { ...base.extensions };
  for (const [name, section] of serviceSections) {
    if (obj[name] !== undefined)
      extensions[name] = section.parse(obj[name], join(path, name), issues, baseDir);
  }
  return Object.freeze({
    lb: field('lb') ?? base.lb,
    timeoutMs: field('timeout') ?? base.timeoutMs,
    perTryTimeoutMs: field('perTryTimeout') ?? base.perTryTimeoutMs,
    retry: obj.retry === undefined ? base.retry : parseRetry(obj.retry, join(path, 'retry'), issues),
    panicThreshold: field('panicThreshold') ?? base.panicThreshold,
    identity: field('identity') ?? base.identity,
    connection:
      obj.connection === undefined
        ? base.connection
        : parseConnection(obj.connection, join(path, 'connection'), issues, base.connection),
    extensions: Object.freeze(extensions),
    ...parseResiliencePolicy(obj, path, issues, base),
  });
}

const SERVICE_NAME_RE = /^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(:\d{1,5})?$/;

/** The registered discovery types' shorthand keys (`endpoints`, `dns`, `file`, …), by key. */
function discoveryShorthands(): Map<string, DiscoveryFactory<unknown>> {
  const out = new Map<string, DiscoveryFactory<unknown>>();
  for (const name of discoverySources.names()) {
    const f = discoverySources.get(name);
    if (f?.shorthand) out.set(f.shorthand, f);
  }
  return out;
}

function shorthandFields(): Fields {
  const out: Record<string, Schema<unknown, unknown, boolean>> = {};
  for (const [key, f] of discoveryShorthands()) {
    out[key] =
      f.shorthandSchema ??
      s.custom<unknown, unknown>(
        { ts: 'unknown', json: {}, parse: (raw) => raw },
        { doc: `Endpoints from the \`${f.name}\` discovery type.`, defaultText: 'none' },
      );
  }
  return out;
}

/** `discovery: { type, ...options }`: any registered discovery type (DiscoveryTypes in the types). */
const discoverySchema = s.custom<unknown, unknown>(
  {
    ts: (e) => {
      e.use('DiscoveryInput');
      return 'DiscoveryInput';
    },
    json: (e) =>
      e.ref('DiscoveryInput', () => ({
        description: 'A registered discovery type and its options.',
        anyOf: discoverySources.names().map((n) => taggedJson(e, 'type', n, discoverySources.get(n)?.schema)),
      })),
    accepts: isPlainObject,
    parse: (raw) => raw,
  },
  {
    doc: 'Endpoints from a registered discovery type: `{ type, ...options }` (the general form of the shorthands).',
    defaultText: 'none',
  },
);

export const serviceSchema = s.object(
  { discovery: discoverySchema },
  {
    name: 'ServiceInput',
    doc:
      'A service this process calls, addressed as `http://NAME/`. It takes exactly one source of ' +
      'endpoints: `endpoints`, `dns`, `file` or `discovery`.',
    extensions: [
      {
        ts: 'PolicyInput',
        fields: () => policySchema.allFields(),
        declare: (e) => policySchema.ts(e),
      },
      { ts: 'DiscoveryShorthands', fields: shorthandFields },
    ],
  },
);

function parseService(
  name: string,
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
  defaults: ServicePolicy,
  baseDir: string,
): ServiceConfig | undefined {
  if (!SERVICE_NAME_RE.test(name)) {
    issues.push({
      path,
      message: `"${name}" is not a valid service name (a DNS-style host name, optionally with :port)`,
    });
  }
  // `reviews: ['127.0.0.1:9001']` is short for `reviews: { endpoints: [...] }`.
  const obj = Array.isArray(raw) ? { endpoints: raw } : expectObject(raw, path, issues);
  if (!obj) return undefined;
  const shorthands = discoveryShorthands();
  serviceSchema.checkKeys(obj, path, issues);
  const policy = parsePolicy(obj, path, issues, defaults, baseDir);

  const given: string[] = [];
  if (obj.discovery !== undefined) given.push('discovery');
  for (const key of shorthands.keys()) if (obj[key] !== undefined) given.push(key);
  if (given.length === 0) {
    issues.push({
      path,
      message: `has no endpoints: give one of ${[...shorthands.keys(), 'discovery'].join(', ')}`,
    });
    return undefined;
  }
  if (given.length > 1) {
    issues.push({ path, message: `gives more than one discovery (${given.join(', ')}); choose one` });
    return undefined;
  }
  const key = given[0] as string;
  let type: string;
  let config: unknown;
  if (key === 'discovery') {
    const d = expectObject(obj.discovery, join(path, 'discovery'), issues);
    if (!d) return undefined;
    if (typeof d.type !== 'string') {
      issues.push({
        path: join(path, 'discovery.type'),
        message: `must name a discovery type, got ${describe(d.type)}`,
      });
      return undefined;
    }
    type = d.type;
    const { type: _t, ...rest } = d;
    const factory = discoverySources.lookup(type, join(path, 'discovery.type'), issues);
    if (!factory) return undefined;
    config = factory.parseConfig(rest, join(path, 'discovery'), issues, baseDir);
  } else {
    const factory = shorthands.get(key) as DiscoveryFactory<unknown>;
    type = factory.name;
    // Problems inside the shorthand keep its key in their path (`services.x.dns.name`).
    const at = join(path, key);
    config = factory.parseShorthand
      ? factory.parseShorthand(obj[key], at, issues, baseDir)
      : factory.parseConfig(factory.fromShorthand?.(obj[key]) ?? { [key]: obj[key] }, at, issues, baseDir);
  }
  return Object.freeze({ ...policy, name, discovery: Object.freeze({ type, config }) });
}

export const localSchema = s.object(
  {
    region: s.string({ defaultText: '`$MESHLET_REGION`, else ""', doc: 'The region this process runs in.' }),
    zone: s.string({
      defaultText: '`$MESHLET_ZONE`, else ""',
      doc: 'The zone this process runs in (zone-aware routing).',
    }),
    subZone: s.string({ defaultText: '""', doc: 'The sub-zone this process runs in.' }),
    workload: s.string({
      defaultText: '`$MESHLET_WORKLOAD`, else `$HOSTNAME`, else "unknown"',
      doc: "This workload's name, for telemetry and gRPC targets (`mesh://<workload>/…`).",
    }),
    namespace: s.string({
      defaultText: '`$POD_NAMESPACE`, else "default"',
      doc: "This workload's namespace, for telemetry.",
    }),
  },
  { name: 'LocalInput', doc: 'Where this process runs and who it is.', defaultText: 'from the environment' },
);

function parseLocal(raw: unknown, path: string, issues: ConfigIssue[], env: NodeJS.ProcessEnv): LocalConfig {
  const o = raw === undefined ? undefined : localSchema.parse(raw, path, issues);
  return Object.freeze({
    region: o?.region ?? env.MESHLET_REGION ?? '',
    zone: o?.zone ?? env.MESHLET_ZONE ?? '',
    subZone: o?.subZone ?? '',
    workload: o?.workload ?? env.MESHLET_WORKLOAD ?? env.HOSTNAME ?? 'unknown',
    namespace: o?.namespace ?? env.POD_NAMESPACE ?? 'default',
  });
}

/** The root of a mesh config (`MeshConfig` in the generated types). */
export const meshSchema = s.object(
  {
    services: s.record(
      s.union([s.array(endpointSchema, { doc: 'Short for `{ endpoints: [...] }`.' }), serviceSchema]),
      {
        keyPattern: SERVICE_NAME_RE.source,
        default: {},
        doc: 'The services this process calls, by name (a DNS-style host name, optionally with `:port`).',
      },
    ),
    defaults: policySchema.with({
      defaultText: 'the built-in default of each field',
      doc: 'Policy fields applied to every service that does not set them.',
    }),
    passthrough: s.boolean({
      default: true,
      doc: 'Hosts the mesh does not know go to a plain undici Agent; `false` fails them with MESHLET_ERR_UNKNOWN_SERVICE.',
    }),
    readyTimeout: s.duration({
      default: '10s',
      doc: "How long `mesh.ready()` waits for every discovery source's first answer.",
    }),
    idleServiceTimeout: s.duration({
      default: '5m',
      doc:
        'Services and routes created on demand for undeclared names (Kubernetes, xDS) are closed after this ' +
        "long without a request; 0 keeps them for the mesh's life.",
    }),
    local: localSchema,
    $schema: s.string({
      defaultText: 'none',
      doc: 'The JSON Schema of this file, for editors (`./node_modules/meshlet/schema.json`); ignored by meshlet.',
    }),
  },
  {
    name: 'MeshConfig',
    doc:
      'A mesh config, as given to `createMesh()` or written in a YAML/JSON file. Sections of other ' +
      'packages (`tls`, `telemetry`, `admin`, `kubernetes`, `xds`, …) come from MeshSections.',
    extensions: [{ ts: 'MeshSections', fields: () => sectionFields(meshSections) }],
  },
);

/** The JSON Schema of a mesh config, with every registered section, policy and discovery type. */
export function meshConfigJsonSchema(): JsonSchema {
  const e = new JsonEmitter();
  meshSchema.json(e);
  const { MeshConfig: root, ...definitions } = e.definitions;
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: 'meshlet mesh config',
    ...root,
    definitions,
  };
}

export interface ParseOptions {
  /** Directory relative paths are resolved against (default: the file's directory or cwd). */
  baseDir?: string;
  /** The file the config came from, named in error messages. */
  source?: string;
  /** Environment for defaults (default `process.env`). */
  env?: NodeJS.ProcessEnv;
}

/**
 * Validates a raw configuration object. Returns the config, or throws `MeshConfigError`
 * (`MESHLET_ERR_CONFIG`) listing every bad field by its path. See docs/configuration.md.
 */
export function parseConfig(raw: unknown, options: ParseOptions = {}): ParsedMeshConfig {
  const { config, issues } = checkConfig(raw, options);
  if (!config || issues.length > 0) throw new MeshConfigError(issues, options.source);
  return config;
}

/** Like `parseConfig` but returns every issue instead of throwing (used by `meshlet validate`). */
export function checkConfig(
  raw: unknown,
  options: ParseOptions = {},
): { config?: ParsedMeshConfig; issues: ConfigIssue[] } {
  const issues: ConfigIssue[] = [];
  const baseDir = options.baseDir ?? process.cwd();
  const env = options.env ?? process.env;
  const root = raw === undefined || raw === null ? {} : expectObject(raw, '', issues);
  if (!root) return { issues };
  meshSchema.checkKeys(root, '', issues);
  const f = meshSchema.fields;

  let defaults: ServicePolicy = { ...DEFAULT_POLICY, lb: { policy: defaultLbPolicy, config: undefined } };
  const defLb = loadBalancers.get(defaultLbPolicy);
  if (defLb)
    defaults = {
      ...defaults,
      lb: { policy: defaultLbPolicy, config: defLb.parseConfig({}, 'defaults.lb', issues) },
    };
  if (root.defaults !== undefined) {
    const d = expectObject(root.defaults, 'defaults', issues);
    if (d) {
      policySchema.checkKeys(d, 'defaults', issues);
      defaults = parsePolicy(d, 'defaults', issues, defaults, baseDir);
    }
  }

  const services: Record<string, ServiceConfig> = {};
  if (root.services !== undefined) {
    const s = expectObject(root.services, 'services', issues);
    if (s) {
      for (const [name, value] of Object.entries(s)) {
        const svc = parseService(name, value, join('services', name), issues, defaults, baseDir);
        if (svc) services[name] = svc;
      }
    }
  }
  const extensions: Record<string, unknown> = {};
  for (const [name, section] of meshSections) {
    if (root[name] !== undefined) extensions[name] = section.parse(root[name], name, issues, baseDir);
  }
  const config: ParsedMeshConfig = Object.freeze({
    services: Object.freeze(services),
    defaults,
    passthrough: meshSchema.field(root, 'passthrough', '', issues) ?? f.passthrough.defaultValue() ?? true,
    readyTimeoutMs:
      meshSchema.field(root, 'readyTimeout', '', issues) ?? f.readyTimeout.defaultValue() ?? 10_000,
    idleServiceTimeoutMs:
      meshSchema.field(root, 'idleServiceTimeout', '', issues) ??
      f.idleServiceTimeout.defaultValue() ??
      300_000,
    local: parseLocal(root.local, 'local', issues, env),
    extensions: Object.freeze(extensions),
    baseDir,
    source: options.source,
  });
  return { config, issues };
}

/** Reads a YAML or JSON file into a raw object; syntax errors name the file, line and column. */
export function readConfigFile(path: string): unknown {
  const abs = resolve(path);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (err) {
    throw new MeshConfigError([{ path: '', message: `cannot read ${abs}: ${(err as Error).message}` }], abs);
  }
  return parseConfigText(text, abs);
}

/** Parses YAML or JSON text (JSON is YAML); errors carry the source and line numbers. */
export function parseConfigText(text: string, source: string): unknown {
  const doc = loadYaml().parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new MeshConfigError(
      doc.errors.map((e) => ({
        path: e.linePos ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : '',
        message: e.message.split('\n')[0] ?? e.message,
      })),
      source,
    );
  }
  try {
    // Aliases expand on conversion: a "billion laughs" file (aliases of aliases) would take
    // exponential time and memory. yaml stops past `maxAliasCount` expansions with a ReferenceError.
    return doc.toJS({ maxAliasCount: MAX_YAML_ALIAS_COUNT });
  } catch (err) {
    throw new MeshConfigError(
      [
        {
          path: '',
          message: `cannot be loaded: ${(err as Error).message} (at most ${MAX_YAML_ALIAS_COUNT} alias expansions)`,
        },
      ],
      source,
    );
  }
}

/** The most YAML alias expansions a config file may use (the `yaml` package's default, made explicit). */
export const MAX_YAML_ALIAS_COUNT = 100;

/** Loads and validates a config file. */
export function loadConfig(path: string, env?: NodeJS.ProcessEnv): ParsedMeshConfig {
  const abs = resolve(path);
  return parseConfig(readConfigFile(abs), { baseDir: dirname(abs), source: abs, env: env ?? process.env });
}
