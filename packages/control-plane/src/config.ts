import {
  type ConfigIssue,
  checkKeys,
  describe,
  type Endpoint,
  expectObject,
  isPlainObject,
  join,
  loadBalancers,
  MeshConfigError,
  optNumber,
  optString,
  parseDuration,
  parseEndpointList,
} from '@meshlet/core';
import { compileSafeRegex } from '@meshlet/xds';
import { type CpInbound, parseInbound } from './inbound.js';

/** A header matcher of a control-plane route. Exactly one of the match keys is given. */
export interface CpHeaderMatch {
  readonly name: string;
  readonly exact?: string | undefined;
  readonly prefix?: string | undefined;
  readonly suffix?: string | undefined;
  readonly contains?: string | undefined;
  readonly regex?: string | undefined;
  readonly present?: boolean | undefined;
  readonly invert: boolean;
}

export interface CpRetry {
  readonly on: readonly string[];
  readonly attempts: number;
  readonly perTryTimeoutMs: number | undefined;
}

export interface CpFault {
  readonly delayMs: number | undefined;
  readonly delayPercent: number;
  readonly abortStatus: number | undefined;
  readonly abortPercent: number;
}

export interface CpRoute {
  readonly match: {
    readonly prefix?: string | undefined;
    readonly path?: string | undefined;
    readonly regex?: string | undefined;
    readonly caseSensitive: boolean;
    readonly headers: readonly CpHeaderMatch[];
  };
  /** Target clusters with weights (a single `cluster` is weight 1). */
  readonly clusters: ReadonlyArray<{ readonly name: string; readonly weight: number }>;
  readonly timeoutMs: number | undefined;
  readonly retry: CpRetry | undefined;
  readonly hashHeaders: readonly string[];
  readonly fault: CpFault | undefined;
}

export interface CpService {
  readonly name: string;
  readonly endpoints: readonly Endpoint[];
  readonly lb: { readonly policy: string; readonly options: Readonly<Record<string, unknown>> };
  readonly identity: string | undefined;
  /**
   * How callers secure their hops to the service (Istio's DestinationRule `tls.mode`):
   * `ISTIO_MUTUAL` (mTLS to every endpoint, certificates from the clients' bootstrap
   * certificate-provider instance `default`), `AUTO` (Istio's auto-mTLS: mTLS to endpoints labelled
   * `tlsMode: istio`, plaintext to the rest) or `DISABLE`. Default: `ISTIO_MUTUAL` with an
   * `identity`, else `DISABLE`.
   */
  readonly tlsMode: 'ISTIO_MUTUAL' | 'AUTO' | 'DISABLE';
  /** `lrs_server: self` on the cluster: clients report its load (default: the top-level `loadReporting`). */
  readonly loadReporting: boolean;
  readonly connectTimeoutMs: number | undefined;
  readonly circuitBreakers: Readonly<Record<string, number>> | undefined;
  readonly outlierDetection: Readonly<Record<string, number>> | undefined;
  /** Whether the service gets a listener (`listener: false` makes it a cluster only). */
  readonly listener: boolean;
  readonly routes: readonly CpRoute[];
  /** Its workloads' servers: inbound listeners, mTLS mode, authorization policies (`inbound`, `mtls`, `authorization`). */
  readonly inbound: CpInbound | undefined;
}

export interface ControlPlaneConfig {
  readonly services: Readonly<Record<string, CpService>>;
  /** `loadReporting`: clusters name the control plane as their LRS server, reports asked every `intervalMs`. */
  readonly loadReporting: { readonly enabled: boolean; readonly intervalMs: number };
}

/** The LRS reporting interval the control plane asks for by default. */
export const DEFAULT_LOAD_REPORTING_INTERVAL_MS = 10_000;
const TLS_MODES = ['ISTIO_MUTUAL', 'AUTO', 'DISABLE'] as const;

const SERVICE_KEYS = [
  'endpoints',
  'lb',
  'identity',
  'tlsMode',
  'loadReporting',
  'connectTimeout',
  'circuitBreakers',
  'outlierDetection',
  'listener',
  'routes',
  'inbound',
  'mtls',
  'authorization',
];
const ROUTE_KEYS = ['match', 'cluster', 'weighted', 'timeout', 'retry', 'hash', 'fault'];
const MATCHERS = ['exact', 'prefix', 'suffix', 'contains', 'regex', 'present'] as const;
const CB_KEYS = ['maxConnections', 'maxPendingRequests', 'maxRequests', 'maxRetries'];
const OD_KEYS = [
  'consecutive5xx',
  'consecutiveGatewayFailure',
  'interval',
  'baseEjectionTime',
  'maxEjectionPercent',
];
const LB_POLICIES = [
  'round_robin',
  'least_request',
  'ring_hash',
  'maglev',
  'random',
  'peak_ewma',
  'client_side_weighted_round_robin',
];

function dur(v: unknown, path: string, issues: ConfigIssue[]): number | undefined {
  return v === undefined ? undefined : parseDuration(v, path, issues);
}

function parseNumbers(
  raw: unknown,
  keys: string[],
  durations: string[],
  path: string,
  issues: ConfigIssue[],
): Record<string, number> | undefined {
  if (raw === undefined) return undefined;
  const o = expectObject(raw, path, issues);
  if (!o) return undefined;
  checkKeys(o, keys, path, issues);
  const out: Record<string, number> = {};
  for (const k of keys) {
    if (o[k] === undefined) continue;
    if (durations.includes(k)) {
      const d = dur(o[k], join(path, k), issues);
      if (d !== undefined) out[k] = d;
    } else {
      out[k] = optNumber(o, k, path, issues, 0, { min: 0, integer: true });
    }
  }
  return out;
}

function parseRetry(raw: unknown, path: string, issues: ConfigIssue[]): CpRetry | undefined {
  if (raw === undefined) return undefined;
  const o = expectObject(raw, path, issues);
  if (!o) return undefined;
  checkKeys(o, ['on', 'attempts', 'perTryTimeout'], path, issues);
  const on =
    typeof o.on === 'string'
      ? o.on.split(',').map((s) => s.trim())
      : Array.isArray(o.on)
        ? o.on.map(String)
        : ['5xx'];
  return {
    on,
    attempts: optNumber(o, 'attempts', path, issues, 1, { min: 0, max: 10, integer: true }),
    perTryTimeoutMs: dur(o.perTryTimeout, join(path, 'perTryTimeout'), issues),
  };
}

function parsePercent(o: Record<string, unknown>, path: string, issues: ConfigIssue[]): number {
  return optNumber(o, 'percent', path, issues, 100, { min: 0, max: 100 });
}

function parseFault(raw: unknown, path: string, issues: ConfigIssue[]): CpFault | undefined {
  if (raw === undefined) return undefined;
  const o = expectObject(raw, path, issues);
  if (!o) return undefined;
  checkKeys(o, ['delay', 'abort'], path, issues);
  let delayMs: number | undefined;
  let delayPercent = 0;
  let abortStatus: number | undefined;
  let abortPercent = 0;
  if (o.delay !== undefined) {
    const d = expectObject(o.delay, join(path, 'delay'), issues);
    if (d) {
      checkKeys(d, ['fixed', 'percent'], join(path, 'delay'), issues);
      delayMs = dur(d.fixed, join(path, 'delay.fixed'), issues);
      if (delayMs === undefined) issues.push({ path: join(path, 'delay.fixed'), message: 'is required' });
      delayPercent = parsePercent(d, join(path, 'delay'), issues);
    }
  }
  if (o.abort !== undefined) {
    const a = expectObject(o.abort, join(path, 'abort'), issues);
    if (a) {
      checkKeys(a, ['status', 'percent'], join(path, 'abort'), issues);
      abortStatus = optNumber(a, 'status', join(path, 'abort'), issues, 503, {
        min: 200,
        max: 599,
        integer: true,
      });
      abortPercent = parsePercent(a, join(path, 'abort'), issues);
    }
  }
  return { delayMs, delayPercent, abortStatus, abortPercent };
}

function parseHeaders(raw: unknown, path: string, issues: ConfigIssue[]): CpHeaderMatch[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) {
    issues.push({
      path,
      message: 'must be a list of { name, exact|prefix|suffix|contains|regex|present, invert? }',
    });
    return [];
  }
  return raw.flatMap((h: unknown, i: number) => {
    const p = `${path}[${i}]`;
    const o = expectObject(h, p, issues);
    if (!o) return [];
    checkKeys(o, ['name', ...MATCHERS, 'invert'], p, issues);
    const name = optString(o, 'name', p, issues);
    if (!name) {
      issues.push({ path: join(p, 'name'), message: 'is required' });
      return [];
    }
    const given = MATCHERS.filter((m) => o[m] !== undefined);
    if (given.length > 1)
      issues.push({ path: p, message: `gives more than one match (${given.join(', ')})` });
    if (o.regex !== undefined) checkRegex(o.regex, join(p, 'regex'), issues);
    return [
      {
        name,
        exact: optString(o, 'exact', p, issues),
        prefix: optString(o, 'prefix', p, issues),
        suffix: optString(o, 'suffix', p, issues),
        contains: optString(o, 'contains', p, issues),
        regex: optString(o, 'regex', p, issues),
        present: given.length === 0 ? true : typeof o.present === 'boolean' ? o.present : undefined,
        invert: o.invert === true,
      },
    ];
  });
}

/**
 * A regex the clients will compile as `safe_regex`: RE2 syntax within the default program-size
 * limit (clients NACK anything else, so it is refused here, naming the field).
 */
function checkRegex(v: unknown, path: string, issues: ConfigIssue[]): void {
  if (typeof v !== 'string') return; // optString reports the type
  try {
    compileSafeRegex(v);
  } catch (err) {
    issues.push({ path, message: (err as Error).message });
  }
}

function parseRoute(raw: unknown, path: string, issues: ConfigIssue[], service: string): CpRoute | undefined {
  const o = expectObject(raw, path, issues);
  if (!o) return undefined;
  checkKeys(o, ROUTE_KEYS, path, issues);
  const m = o.match === undefined ? {} : expectObject(o.match, join(path, 'match'), issues);
  if (!m) return undefined;
  const mp = join(path, 'match');
  checkKeys(m, ['prefix', 'path', 'regex', 'caseSensitive', 'headers'], mp, issues);
  const pathKeys = ['prefix', 'path', 'regex'].filter((k) => m[k] !== undefined);
  if (m.regex !== undefined) checkRegex(m.regex, join(mp, 'regex'), issues);
  if (pathKeys.length > 1)
    issues.push({ path: mp, message: `gives more than one of ${pathKeys.join(', ')}` });
  let clusters: Array<{ name: string; weight: number }> = [];
  if (o.cluster !== undefined && o.weighted !== undefined) {
    issues.push({ path, message: 'gives both cluster and weighted; choose one' });
  } else if (o.weighted !== undefined) {
    const w = expectObject(o.weighted, join(path, 'weighted'), issues);
    if (w) {
      clusters = Object.entries(w).map(([name, weight]) => {
        if (typeof weight !== 'number' || !Number.isInteger(weight) || weight < 0)
          issues.push({
            path: join(join(path, 'weighted'), name),
            message: `must be a weight >= 0, got ${describe(weight)}`,
          });
        return { name, weight: Number(weight) };
      });
      if (clusters.reduce((a, c) => a + c.weight, 0) <= 0)
        issues.push({ path: join(path, 'weighted'), message: 'the weights must add up to more than 0' });
    }
  } else {
    const c = o.cluster === undefined ? service : optString(o, 'cluster', path, issues);
    if (c) clusters = [{ name: c, weight: 1 }];
  }
  const hash: string[] = [];
  if (o.hash !== undefined) {
    if (!Array.isArray(o.hash))
      issues.push({ path: join(path, 'hash'), message: 'must be a list of { header }' });
    else
      o.hash.forEach((h: unknown, i: number) => {
        if (isPlainObject(h) && typeof h.header === 'string') hash.push(h.header);
        else issues.push({ path: `${join(path, 'hash')}[${i}]`, message: 'must be { header: NAME }' });
      });
  }
  return {
    match: {
      prefix: optString(m, 'prefix', mp, issues) ?? (pathKeys.length === 0 ? '/' : undefined),
      path: optString(m, 'path', mp, issues),
      regex: optString(m, 'regex', mp, issues),
      caseSensitive: m.caseSensitive !== false,
      headers: parseHeaders(m.headers, join(mp, 'headers'), issues),
    },
    clusters,
    timeoutMs: dur(o.timeout, join(path, 'timeout'), issues),
    retry: parseRetry(o.retry, join(path, 'retry'), issues),
    hashHeaders: hash,
    fault: parseFault(o.fault, join(path, 'fault'), issues),
  };
}

function parseService(
  name: string,
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
  loadReporting: boolean,
): CpService | undefined {
  const o = Array.isArray(raw) ? { endpoints: raw } : expectObject(raw, path, issues);
  if (!o) return undefined;
  checkKeys(o, SERVICE_KEYS, path, issues);
  const endpoints =
    o.endpoints === undefined ? [] : parseEndpointList(o.endpoints, join(path, 'endpoints'), issues);
  let lb: CpService['lb'] = { policy: 'round_robin', options: {} };
  if (typeof o.lb === 'string') lb = { policy: o.lb, options: {} };
  else if (isPlainObject(o.lb) && typeof o.lb.policy === 'string') {
    const { policy, ...options } = o.lb;
    lb = { policy, options };
  } else if (o.lb !== undefined)
    issues.push({ path: join(path, 'lb'), message: 'must be a policy name or { policy, ...options }' });
  if (!LB_POLICIES.includes(lb.policy))
    issues.push({
      path: join(path, 'lb'),
      message: `unknown policy "${lb.policy}"; known: ${LB_POLICIES.join(', ')}`,
    });
  else if (lb.policy === 'client_side_weighted_round_robin')
    // Served as Envoy's typed config: its options must translate (durations, the penalty).
    loadBalancers.get(lb.policy)?.parseConfig(lb.options, join(path, 'lb'), issues);
  const identity = optString(o, 'identity', path, issues);
  if (identity !== undefined && !identity.startsWith('spiffe://'))
    issues.push({ path: join(path, 'identity'), message: 'must be a SPIFFE ID (spiffe://…)' });
  let tlsMode: CpService['tlsMode'] = identity === undefined ? 'DISABLE' : 'ISTIO_MUTUAL';
  if (o.tlsMode !== undefined) {
    if (typeof o.tlsMode === 'string' && (TLS_MODES as readonly string[]).includes(o.tlsMode))
      tlsMode = o.tlsMode as CpService['tlsMode'];
    else
      issues.push({
        path: join(path, 'tlsMode'),
        message: `must be one of ${TLS_MODES.join(', ')}, got ${describe(o.tlsMode)}`,
      });
  }
  if (o.loadReporting !== undefined && typeof o.loadReporting !== 'boolean')
    issues.push({ path: join(path, 'loadReporting'), message: 'must be true or false' });
  let routes: CpRoute[] = [];
  if (o.routes !== undefined) {
    if (!Array.isArray(o.routes))
      issues.push({ path: join(path, 'routes'), message: 'must be a list of routes' });
    else
      routes = o.routes.flatMap((r: unknown, i: number) => {
        const route = parseRoute(r, `${join(path, 'routes')}[${i}]`, issues, name);
        return route ? [route] : [];
      });
  } else {
    routes = [
      {
        match: { prefix: '/', caseSensitive: true, headers: [] },
        clusters: [{ name, weight: 1 }],
        timeoutMs: undefined,
        retry: undefined,
        hashHeaders: [],
        fault: undefined,
      },
    ];
  }
  return {
    name,
    endpoints,
    lb,
    identity,
    tlsMode,
    loadReporting: typeof o.loadReporting === 'boolean' ? o.loadReporting : loadReporting,
    connectTimeoutMs: dur(o.connectTimeout, join(path, 'connectTimeout'), issues),
    circuitBreakers: parseNumbers(o.circuitBreakers, CB_KEYS, [], join(path, 'circuitBreakers'), issues),
    outlierDetection: parseNumbers(
      o.outlierDetection,
      OD_KEYS,
      ['interval', 'baseEjectionTime'],
      join(path, 'outlierDetection'),
      issues,
    ),
    listener: o.listener !== false,
    routes,
    inbound: parseInbound(o, path, issues, identity !== undefined),
  };
}

/**
 * Validates a control-plane config (the mesh YAML: `services.<name>.{endpoints, lb, identity,
 * routes, …}`). Throws `MeshConfigError` naming every bad field. Keys the control plane does not
 * serve (mesh-level `tls`, `admin`, …) are ignored so that one file can feed both.
 */
export function parseControlPlaneConfig(raw: unknown, source?: string): ControlPlaneConfig {
  const issues: ConfigIssue[] = [];
  const root = raw === null || raw === undefined ? {} : expectObject(raw, '', issues);
  const services: Record<string, CpService> = {};
  const lr = parseLoadReporting(root?.loadReporting, issues);
  if (root?.services !== undefined) {
    const s = expectObject(root.services, 'services', issues);
    if (s) {
      for (const [name, value] of Object.entries(s)) {
        const svc = parseService(name, value, join('services', name), issues, lr.enabled);
        if (svc) services[name] = svc;
      }
    }
  }
  // Routes must name clusters that exist.
  for (const svc of Object.values(services)) {
    svc.routes.forEach((r, i) => {
      for (const c of r.clusters) {
        if (!services[c.name])
          issues.push({
            path: `services.${svc.name}.routes[${i}]`,
            message: `names unknown cluster "${c.name}"`,
          });
      }
    });
  }
  if (issues.length > 0) throw new MeshConfigError(issues, source);
  return { services, loadReporting: lr };
}

/** `loadReporting: true` or `{ interval: 10s }` (LRS: clusters name this control plane as their load-report server). */
function parseLoadReporting(raw: unknown, issues: ConfigIssue[]): ControlPlaneConfig['loadReporting'] {
  const off = { enabled: false, intervalMs: DEFAULT_LOAD_REPORTING_INTERVAL_MS };
  if (raw === undefined || raw === false) return off;
  if (raw === true) return { enabled: true, intervalMs: DEFAULT_LOAD_REPORTING_INTERVAL_MS };
  const o = expectObject(raw, 'loadReporting', issues);
  if (!o) return off;
  checkKeys(o, ['interval', 'enabled'], 'loadReporting', issues);
  const ms = dur(o.interval, 'loadReporting.interval', issues) ?? DEFAULT_LOAD_REPORTING_INTERVAL_MS;
  if (ms <= 0) issues.push({ path: 'loadReporting.interval', message: 'must be more than 0' });
  return { enabled: o.enabled !== false, intervalMs: ms };
}
