import {
  type ConfigIssue,
  checkConfig,
  checkKeys,
  describe,
  expectObject,
  join,
  optBoolean,
  optNumber,
  optString,
  parseDuration,
  registerMeshSection,
  type ServicePolicy,
} from '@meshlet/core';

/** The policy keys a per-service override may set (the same as in `services.<name>`). */
const POLICY_FIELDS: Record<string, keyof ServicePolicy> = {
  lb: 'lb',
  timeout: 'timeoutMs',
  perTryTimeout: 'perTryTimeoutMs',
  retry: 'retry',
  panicThreshold: 'panicThreshold',
  identity: 'identity',
  connection: 'connection',
};

/** Per-service settings under `kubernetes.services.<name>` (`name` is `svc` or `svc.namespace`). */
export interface KubernetesServiceOverride {
  /**
   * The EndpointSlice port to use, by name or number, whatever port the URL names. By default the
   * URL's port is mapped through the Service's ports (as kube-proxy does).
   */
  readonly port: string | number | undefined;
  /** Prefer endpoints whose `hints.forZones` name the local zone (default: the mesh-wide setting). */
  readonly zoneAware: boolean | undefined;
  /** Policy fields given for this service (lb, timeout, retry, …), applied over the mesh defaults. */
  readonly policy: Partial<ServicePolicy> | undefined;
}

export interface KubernetesSettings {
  /** API server URL; overrides in-cluster and kubeconfig discovery of the server. */
  readonly apiServer: string | undefined;
  /** Path of a kubeconfig file (default `$KUBECONFIG`, then `~/.kube/config`). */
  readonly kubeconfig: string | undefined;
  /** The kubeconfig context to use (default: its `current-context`). */
  readonly context: string | undefined;
  /** `auto` (default): in-cluster credentials when present, else kubeconfig. */
  readonly inCluster: boolean | 'auto';
  /** Directory of the service-account token, `ca.crt` and `namespace` files. */
  readonly serviceAccountDir: string;
  /** The namespace of unqualified names (default: the pod's namespace, else `default`). */
  readonly namespace: string | undefined;
  /** Further namespaces whose `svc.namespace` names the mesh claims. */
  readonly namespaces: readonly string[];
  /** Cluster DNS domain (`cluster.local`). */
  readonly clusterDomain: string;
  /** The local zone for zone-preferred routing (default: `local.zone`, then `$MESHLET_ZONE`). */
  readonly zone: string | undefined;
  /** Route to endpoints hinted for the local zone when every endpoint has hints (default true). */
  readonly zoneAware: boolean;
  /** Server-side watch timeout (`timeoutSeconds`), in ms (default 5m). */
  readonly watchTimeoutMs: number;
  /** A watch with no event or bookmark for this long is restarted (default 2m). */
  readonly stallTimeoutMs: number;
  /** Timeout of a list or get request, in ms (default 30s). */
  readonly requestTimeoutMs: number;
  /** How often the service-account token file is re-read, in ms (default 1m). */
  readonly tokenRefreshMs: number;
  /** Reconnect backoff after an error: base and cap, in ms (default 500ms, 30s; full jitter). */
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  /** Requests per second to the API server, all watches together (default 10; burst 20). */
  readonly maxRequestsPerSecond: number;
  /**
   * The largest watch event read, in bytes (`maxEventSize`, default 4 MiB): a longer line fails the
   * watch with a coded error and the watch restarts from a fresh list.
   */
  readonly maxEventBytes: number;
  /**
   * A Service the API server answered 404 for is taken as absent this long (`notFoundTtl`, 30s):
   * requests to it fail at once, and it is looked up again only then, on its own request budget
   * (`notFoundRequestsPerSecond`, 1), never the one real services use.
   */
  readonly notFoundTtlMs: number;
  readonly notFoundRequestsPerSecond: number;
  /** Per-service overrides keyed by `svc` (own namespace) or `svc.namespace`. */
  readonly services: Readonly<Record<string, KubernetesServiceOverride>>;
}

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export const DEFAULT_SETTINGS: KubernetesSettings = Object.freeze({
  apiServer: undefined,
  kubeconfig: undefined,
  context: undefined,
  inCluster: 'auto',
  serviceAccountDir: SERVICE_ACCOUNT_DIR,
  namespace: undefined,
  namespaces: Object.freeze([]),
  clusterDomain: 'cluster.local',
  zone: undefined,
  zoneAware: true,
  watchTimeoutMs: 300_000,
  stallTimeoutMs: 120_000,
  requestTimeoutMs: 30_000,
  tokenRefreshMs: 60_000,
  backoffBaseMs: 500,
  backoffMaxMs: 30_000,
  maxRequestsPerSecond: 10,
  maxEventBytes: 4 * 1024 * 1024,
  notFoundTtlMs: 30_000,
  notFoundRequestsPerSecond: 1,
  services: Object.freeze({}),
});

const KEYS = [
  'apiServer',
  'kubeconfig',
  'context',
  'inCluster',
  'serviceAccountDir',
  'namespace',
  'namespaces',
  'clusterDomain',
  'zone',
  'zoneAware',
  'watchTimeout',
  'stallTimeout',
  'requestTimeout',
  'tokenRefresh',
  'backoff',
  'maxRequestsPerSecond',
  'maxEventSize',
  'notFoundTtl',
  'notFoundRequestsPerSecond',
  'services',
];

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function duration(
  obj: Record<string, unknown>,
  key: string,
  path: string,
  issues: ConfigIssue[],
  def: number,
  min = 1,
): number {
  if (obj[key] === undefined) return def;
  const v = parseDuration(obj[key], join(path, key), issues);
  if (v === undefined) return def;
  if (v < min) {
    issues.push({ path: join(path, key), message: `must be at least ${min}ms` });
    return def;
  }
  return v;
}

function parseOverride(raw: unknown, path: string, issues: ConfigIssue[]): KubernetesServiceOverride {
  const obj = expectObject(raw, path, issues) ?? {};
  checkKeys(obj, ['port', 'zoneAware', ...Object.keys(POLICY_FIELDS)], path, issues);
  let port: string | number | undefined;
  if (obj.port !== undefined) {
    if (typeof obj.port === 'string' && obj.port.length > 0) {
      port = /^\d+$/.test(obj.port) ? Number(obj.port) : obj.port;
    } else {
      port = optNumber(obj, 'port', path, issues, 0, { min: 1, max: 65535, integer: true }) || undefined;
    }
  }
  const policyRaw: Record<string, unknown> = {};
  for (const key of Object.keys(POLICY_FIELDS)) if (obj[key] !== undefined) policyRaw[key] = obj[key];
  let policy: Partial<ServicePolicy> | undefined;
  if (Object.keys(policyRaw).length > 0) {
    // The core parser validates policy fields; its paths are rewritten to this section's.
    const res = checkConfig({ defaults: policyRaw });
    for (const i of res.issues) {
      issues.push({ path: i.path.replace(/^defaults/, path), message: i.message });
    }
    if (res.config && res.issues.length === 0) {
      const parsed = res.config.defaults;
      const out: Record<string, unknown> = {};
      for (const [key, field] of Object.entries(POLICY_FIELDS)) {
        if (policyRaw[key] !== undefined) out[field] = parsed[field];
      }
      policy = Object.freeze(out) as Partial<ServicePolicy>;
    }
  }
  return Object.freeze({
    port,
    zoneAware: obj.zoneAware === undefined ? undefined : optBoolean(obj, 'zoneAware', path, issues, true),
    policy,
  });
}

/** Validates the `kubernetes:` section of the mesh config. */
export function parseKubernetesSettings(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
): KubernetesSettings {
  const obj = raw === null || raw === true ? {} : expectObject(raw, path, issues);
  if (!obj) return DEFAULT_SETTINGS;
  checkKeys(obj, KEYS, path, issues);
  const apiServer = optString(obj, 'apiServer', path, issues);
  if (apiServer !== undefined && !/^https?:\/\/[^/]+/.test(apiServer)) {
    issues.push({ path: join(path, 'apiServer'), message: `must be an http(s):// URL, got "${apiServer}"` });
  }
  let inCluster: boolean | 'auto' = 'auto';
  if (obj.inCluster !== undefined) {
    if (obj.inCluster === 'auto' || typeof obj.inCluster === 'boolean') inCluster = obj.inCluster;
    else
      issues.push({
        path: join(path, 'inCluster'),
        message: `must be true, false or "auto", got ${describe(obj.inCluster)}`,
      });
  }
  const namespace = optString(obj, 'namespace', path, issues);
  if (namespace !== undefined && !DNS_LABEL.test(namespace)) {
    issues.push({ path: join(path, 'namespace'), message: `"${namespace}" is not a valid namespace name` });
  }
  const namespaces: string[] = [];
  if (obj.namespaces !== undefined) {
    if (!Array.isArray(obj.namespaces)) {
      issues.push({ path: join(path, 'namespaces'), message: `must be a list of namespace names` });
    } else {
      obj.namespaces.forEach((n: unknown, i: number) => {
        if (typeof n === 'string' && DNS_LABEL.test(n)) namespaces.push(n);
        else
          issues.push({
            path: join(join(path, 'namespaces'), i),
            message: `is not a namespace name: ${describe(n)}`,
          });
      });
    }
  }
  let backoffBaseMs = DEFAULT_SETTINGS.backoffBaseMs;
  let backoffMaxMs = DEFAULT_SETTINGS.backoffMaxMs;
  if (obj.backoff !== undefined) {
    const bp = join(path, 'backoff');
    const b = expectObject(obj.backoff, bp, issues);
    if (b) {
      checkKeys(b, ['base', 'max'], bp, issues);
      backoffBaseMs = duration(b, 'base', bp, issues, backoffBaseMs);
      backoffMaxMs = duration(b, 'max', bp, issues, Math.max(backoffMaxMs, backoffBaseMs));
      if (backoffMaxMs < backoffBaseMs)
        issues.push({ path: join(bp, 'max'), message: 'must be >= backoff.base' });
    }
  }
  const services: Record<string, KubernetesServiceOverride> = {};
  if (obj.services !== undefined) {
    const sp = join(path, 'services');
    const s = expectObject(obj.services, sp, issues);
    if (s) {
      for (const [name, value] of Object.entries(s)) {
        const labels = name.split('.');
        if (labels.length > 2 || !labels.every((l) => DNS_LABEL.test(l))) {
          issues.push({ path: join(sp, name), message: `must be "service" or "service.namespace"` });
        }
        services[name] = parseOverride(value, join(sp, name), issues);
      }
    }
  }
  const clusterDomain = optString(obj, 'clusterDomain', path, issues) ?? DEFAULT_SETTINGS.clusterDomain;
  return Object.freeze({
    apiServer,
    kubeconfig: optString(obj, 'kubeconfig', path, issues),
    context: optString(obj, 'context', path, issues),
    inCluster,
    serviceAccountDir:
      optString(obj, 'serviceAccountDir', path, issues) ?? DEFAULT_SETTINGS.serviceAccountDir,
    namespace,
    namespaces: Object.freeze(namespaces),
    clusterDomain: clusterDomain.replace(/^\.|\.$/g, ''),
    zone: optString(obj, 'zone', path, issues),
    zoneAware: optBoolean(obj, 'zoneAware', path, issues, DEFAULT_SETTINGS.zoneAware),
    watchTimeoutMs: duration(obj, 'watchTimeout', path, issues, DEFAULT_SETTINGS.watchTimeoutMs, 1000),
    stallTimeoutMs: duration(obj, 'stallTimeout', path, issues, DEFAULT_SETTINGS.stallTimeoutMs),
    requestTimeoutMs: duration(obj, 'requestTimeout', path, issues, DEFAULT_SETTINGS.requestTimeoutMs),
    tokenRefreshMs: duration(obj, 'tokenRefresh', path, issues, DEFAULT_SETTINGS.tokenRefreshMs),
    backoffBaseMs,
    backoffMaxMs,
    maxRequestsPerSecond: optNumber(
      obj,
      'maxRequestsPerSecond',
      path,
      issues,
      DEFAULT_SETTINGS.maxRequestsPerSecond,
      {
        min: 0.1,
      },
    ),
    maxEventBytes: optNumber(obj, 'maxEventSize', path, issues, DEFAULT_SETTINGS.maxEventBytes, {
      min: 1024,
      integer: true,
    }),
    notFoundTtlMs: duration(obj, 'notFoundTtl', path, issues, DEFAULT_SETTINGS.notFoundTtlMs),
    notFoundRequestsPerSecond: optNumber(
      obj,
      'notFoundRequestsPerSecond',
      path,
      issues,
      DEFAULT_SETTINGS.notFoundRequestsPerSecond,
      { min: 0.01 },
    ),
    services: Object.freeze(services),
  });
}

let registered = false;
/** Registers the `kubernetes:` mesh config section (idempotent). */
export function registerKubernetesSection(): void {
  if (registered) return;
  registered = true;
  registerMeshSection<KubernetesSettings>({ name: 'kubernetes', parse: parseKubernetesSettings });
}
