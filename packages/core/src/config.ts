import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { parseDuration } from './duration.js';
import { type ConfigIssue, MeshConfigError } from './errors.js';
import type { LbSelection } from './lb/types.js';
import { discoverySources, loadBalancers } from './registry.js';
import {
  DEFAULT_RESILIENCE,
  parseResiliencePolicy,
  RESILIENCE_KEYS,
  type ResiliencePolicy,
} from './resilience/policy.js';
import {
  checkKeys,
  describe,
  expectObject,
  isPlainObject,
  join,
  optBoolean,
  optNumber,
  optString,
} from './validate.js';

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
  | 'per-try-timeout';

export const RETRY_CONDITIONS: readonly RetryCondition[] = [
  'connect-failure',
  'reset',
  'refused-stream',
  '5xx',
  'gateway-error',
  'retriable-status-codes',
  'per-try-timeout',
];

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
  readonly budget: RetryBudgetPolicy;
  /**
   * gRPC status codes retried by gRPC transports, when a route says (xDS `retry_on`: `cancelled`,
   * `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable`); undefined: the client's.
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
  /** Deadline for the whole call, retries included, in ms; 0 = none. Default 15s (Envoy's). */
  readonly timeoutMs: number;
  /** Timeout for one attempt in ms; 0 = only the overall deadline. Default 0. */
  readonly perTryTimeoutMs: number;
  readonly retry: RetryPolicy;
  /** Below this percentage of usable endpoints, balance over all of them (Envoy: 50). */
  readonly panicThreshold: number;
  /** Expected peer SPIFFE ID (exact) or trust domain (`spiffe://td`), checked under mTLS. */
  readonly identity: string | undefined;
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

export interface MeshConfig {
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

export const DEFAULT_RETRY: RetryPolicy = Object.freeze({
  maxRetries: 2,
  on: new Set<RetryCondition>(['connect-failure', 'refused-stream', 'reset', 'retriable-status-codes']),
  statusCodes: Object.freeze([503]),
  backoffBaseMs: 25,
  backoffMaxMs: 250,
  nonIdempotent: false,
  budget: Object.freeze({ percent: 20, minPerSecond: 10, windowMs: 10_000 }),
});

const NO_RETRY: RetryPolicy = Object.freeze({
  ...DEFAULT_RETRY,
  maxRetries: 0,
  on: new Set<RetryCondition>(),
});

export const DEFAULT_POLICY: ServicePolicy = Object.freeze({
  // `config: undefined` means the policy's defaults (every built-in accepts it).
  lb: Object.freeze({ policy: 'peak_ewma', config: undefined }) as LbSelection,
  timeoutMs: 15_000,
  perTryTimeoutMs: 0,
  retry: DEFAULT_RETRY,
  panicThreshold: 50,
  identity: undefined,
  connection: Object.freeze({ maxPerEndpoint: 0, connectTimeoutMs: 10_000, keepAliveTimeoutMs: 4_000 }),
  extensions: Object.freeze({}),
  ...DEFAULT_RESILIENCE,
});

/** Overridden by a later issue's policy: the default LB is chosen at registration time. */
let defaultLbPolicy = 'least_request';
/** Makes `name` the policy used when a service names none. */
export function setDefaultLoadBalancer(name: string): void {
  defaultLbPolicy = name;
}

const POLICY_KEYS = [
  'lb',
  'timeout',
  'perTryTimeout',
  'retry',
  'panicThreshold',
  'identity',
  'connection',
  ...RESILIENCE_KEYS,
];

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

function parseRetry(raw: unknown, path: string, issues: ConfigIssue[]): RetryPolicy {
  if (raw === false) return NO_RETRY;
  const obj = expectObject(raw, path, issues);
  if (!obj) return DEFAULT_RETRY;
  checkKeys(obj, ['attempts', 'on', 'backoff', 'nonIdempotent', 'budget'], path, issues);
  const maxRetries = optNumber(obj, 'attempts', path, issues, DEFAULT_RETRY.maxRetries, {
    min: 0,
    max: 10,
    integer: true,
  });
  let on = DEFAULT_RETRY.on;
  let statusCodes = DEFAULT_RETRY.statusCodes;
  if (obj.on !== undefined) {
    const list =
      typeof obj.on === 'string'
        ? obj.on
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean)
        : obj.on;
    if (!Array.isArray(list)) {
      issues.push({
        path: join(path, 'on'),
        message: `must be a list or comma-separated string, got ${describe(obj.on)}`,
      });
    } else {
      const conds = new Set<RetryCondition>();
      const codes: number[] = [];
      list.forEach((item: unknown, i: number) => {
        const p = `${join(path, 'on')}[${i}]`;
        const asNum =
          typeof item === 'number'
            ? item
            : typeof item === 'string' && /^\d{3}$/.test(item)
              ? Number(item)
              : NaN;
        if (Number.isInteger(asNum) && asNum >= 100 && asNum <= 599) {
          codes.push(asNum);
          conds.add('retriable-status-codes');
        } else if (typeof item === 'string' && (RETRY_CONDITIONS as readonly string[]).includes(item)) {
          conds.add(item as RetryCondition);
        } else {
          issues.push({
            path: p,
            message: `must be an HTTP status code or one of ${RETRY_CONDITIONS.join(', ')}, got ${describe(item)}`,
          });
        }
      });
      on = conds;
      statusCodes =
        codes.length > 0 ? codes : conds.has('retriable-status-codes') ? DEFAULT_RETRY.statusCodes : [];
    }
  }
  let backoffBaseMs = DEFAULT_RETRY.backoffBaseMs;
  let backoffMaxMs = DEFAULT_RETRY.backoffMaxMs;
  if (obj.backoff !== undefined) {
    const b = expectObject(obj.backoff, join(path, 'backoff'), issues);
    if (b) {
      checkKeys(b, ['base', 'max'], join(path, 'backoff'), issues);
      if (b.base !== undefined)
        backoffBaseMs = parseDuration(b.base, join(path, 'backoff.base'), issues) ?? backoffBaseMs;
      if (b.max !== undefined)
        backoffMaxMs = parseDuration(b.max, join(path, 'backoff.max'), issues) ?? 10 * backoffBaseMs;
      else backoffMaxMs = Math.max(backoffBaseMs * 10, backoffMaxMs);
      if (backoffMaxMs < backoffBaseMs) {
        issues.push({ path: join(path, 'backoff.max'), message: 'must be >= backoff.base' });
      }
    }
  }
  let budget = DEFAULT_RETRY.budget;
  if (obj.budget !== undefined) {
    const b = expectObject(obj.budget, join(path, 'budget'), issues);
    if (b) {
      const bp = join(path, 'budget');
      checkKeys(b, ['percent', 'minPerSecond', 'window'], bp, issues);
      budget = Object.freeze({
        percent: optNumber(b, 'percent', bp, issues, budget.percent, { min: 0, max: 1000 }),
        minPerSecond: optNumber(b, 'minPerSecond', bp, issues, budget.minPerSecond, { min: 0 }),
        windowMs:
          b.window === undefined
            ? budget.windowMs
            : (parseDuration(b.window, join(bp, 'window'), issues) ?? budget.windowMs),
      });
    }
  }
  return Object.freeze({
    maxRetries,
    on,
    statusCodes: Object.freeze(statusCodes),
    backoffBaseMs,
    backoffMaxMs,
    nonIdempotent: optBoolean(obj, 'nonIdempotent', path, issues, false),
    budget,
  });
}

function parseConnection(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
  base: ConnectionPolicy,
): ConnectionPolicy {
  const obj = expectObject(raw, path, issues);
  if (!obj) return base;
  checkKeys(obj, ['maxPerEndpoint', 'connectTimeout', 'keepAliveTimeout'], path, issues);
  return Object.freeze({
    maxPerEndpoint: optNumber(obj, 'maxPerEndpoint', path, issues, base.maxPerEndpoint, {
      min: 0,
      integer: true,
    }),
    connectTimeoutMs:
      obj.connectTimeout === undefined
        ? base.connectTimeoutMs
        : (parseDuration(obj.connectTimeout, join(path, 'connectTimeout'), issues) ?? base.connectTimeoutMs),
    keepAliveTimeoutMs:
      obj.keepAliveTimeout === undefined
        ? base.keepAliveTimeoutMs
        : (parseDuration(obj.keepAliveTimeout, join(path, 'keepAliveTimeout'), issues) ??
          base.keepAliveTimeoutMs),
  });
}

/** Parses policy fields of `obj` on top of `base` (each field given replaces the base's). */
function parsePolicy(
  obj: Record<string, unknown>,
  path: string,
  issues: ConfigIssue[],
  base: ServicePolicy,
  baseDir: string,
): ServicePolicy {
  const lb = obj.lb === undefined ? base.lb : parseLb(obj.lb, join(path, 'lb'), issues);
  const timeoutMs =
    obj.timeout === undefined
      ? base.timeoutMs
      : (parseDuration(obj.timeout, join(path, 'timeout'), issues) ?? base.timeoutMs);
  const perTryTimeoutMs =
    obj.perTryTimeout === undefined
      ? base.perTryTimeoutMs
      : (parseDuration(obj.perTryTimeout, join(path, 'perTryTimeout'), issues) ?? base.perTryTimeoutMs);
  const retry = obj.retry === undefined ? base.retry : parseRetry(obj.retry, join(path, 'retry'), issues);
  const panicThreshold = optNumber(obj, 'panicThreshold', path, issues, base.panicThreshold, {
    min: 0,
    max: 100,
  });
  let identity = base.identity;
  if (obj.identity !== undefined) {
    const id = optString(obj, 'identity', path, issues);
    if (id !== undefined && !id.startsWith('spiffe://')) {
      issues.push({
        path: join(path, 'identity'),
        message: `must be a SPIFFE ID or trust domain (spiffe://…), got "${id}"`,
      });
    } else {
      identity = id;
    }
  }
  const connection =
    obj.connection === undefined
      ? base.connection
      : parseConnection(obj.connection, join(path, 'connection'), issues, base.connection);
  const extensions: Record<string, unknown> = { ...base.extensions };
  for (const [name, section] of serviceSections) {
    if (obj[name] !== undefined)
      extensions[name] = section.parse(obj[name], join(path, name), issues, baseDir);
  }
  return Object.freeze({
    lb,
    timeoutMs,
    perTryTimeoutMs,
    retry,
    panicThreshold,
    identity,
    connection,
    extensions: Object.freeze(extensions),
    ...parseResiliencePolicy(obj, path, issues, base),
  });
}

const SERVICE_NAME_RE = /^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(:\d{1,5})?$/;

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
  const shorthands = new Map<string, string>();
  for (const name of discoverySources.names()) {
    const f = discoverySources.get(name);
    if (f?.shorthand) shorthands.set(f.shorthand, name);
  }
  checkKeys(
    obj,
    [...POLICY_KEYS, ...serviceSections.keys(), 'discovery', ...shorthands.keys()],
    path,
    issues,
  );
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
  let options: Record<string, unknown>;
  let optionsPath: string;
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
    options = rest;
    optionsPath = join(path, 'discovery');
  } else {
    type = shorthands.get(key) as string;
    const f = discoverySources.get(type);
    options = f?.fromShorthand ? f.fromShorthand(obj[key]) : { [key]: obj[key] };
    optionsPath = path;
  }
  const factory = discoverySources.lookup(type, join(path, 'discovery.type'), issues);
  if (!factory) return undefined;
  const config = factory.parseConfig(options, optionsPath, issues, baseDir);
  return Object.freeze({ ...policy, name, discovery: Object.freeze({ type, config }) });
}

function parseLocal(raw: unknown, path: string, issues: ConfigIssue[], env: NodeJS.ProcessEnv): LocalConfig {
  const obj = raw === undefined ? {} : expectObject(raw, path, issues);
  const o = obj ?? {};
  checkKeys(o, ['region', 'zone', 'subZone', 'workload', 'namespace'], path, issues);
  return Object.freeze({
    region: optString(o, 'region', path, issues) ?? env.MESHLET_REGION ?? '',
    zone: optString(o, 'zone', path, issues) ?? env.MESHLET_ZONE ?? '',
    subZone: optString(o, 'subZone', path, issues) ?? '',
    workload: optString(o, 'workload', path, issues) ?? env.MESHLET_WORKLOAD ?? env.HOSTNAME ?? 'unknown',
    namespace: optString(o, 'namespace', path, issues) ?? env.POD_NAMESPACE ?? 'default',
  });
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
export function parseConfig(raw: unknown, options: ParseOptions = {}): MeshConfig {
  const { config, issues } = checkConfig(raw, options);
  if (!config || issues.length > 0) throw new MeshConfigError(issues, options.source);
  return config;
}

/** Like `parseConfig` but returns every issue instead of throwing (used by `meshlet validate`). */
export function checkConfig(
  raw: unknown,
  options: ParseOptions = {},
): { config?: MeshConfig; issues: ConfigIssue[] } {
  const issues: ConfigIssue[] = [];
  const baseDir = options.baseDir ?? process.cwd();
  const env = options.env ?? process.env;
  const root = raw === undefined || raw === null ? {} : expectObject(raw, '', issues);
  if (!root) return { issues };
  checkKeys(
    root,
    [
      'services',
      'defaults',
      'passthrough',
      'readyTimeout',
      'idleServiceTimeout',
      'local',
      ...meshSections.keys(),
    ],
    '',
    issues,
  );

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
      checkKeys(d, [...POLICY_KEYS, ...serviceSections.keys()], 'defaults', issues);
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
  const config: MeshConfig = Object.freeze({
    services: Object.freeze(services),
    defaults,
    passthrough: optBoolean(root, 'passthrough', '', issues, true),
    readyTimeoutMs:
      root.readyTimeout === undefined
        ? 10_000
        : (parseDuration(root.readyTimeout, 'readyTimeout', issues) ?? 10_000),
    idleServiceTimeoutMs:
      root.idleServiceTimeout === undefined
        ? 300_000
        : (parseDuration(root.idleServiceTimeout, 'idleServiceTimeout', issues) ?? 300_000),
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
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
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
export function loadConfig(path: string, env?: NodeJS.ProcessEnv): MeshConfig {
  const abs = resolve(path);
  return parseConfig(readConfigFile(abs), { baseDir: dirname(abs), source: abs, env: env ?? process.env });
}
