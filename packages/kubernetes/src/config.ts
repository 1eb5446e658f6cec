import {
  type ConfigIssue,
  checkConfig,
  expectObject,
  type Fields,
  formatDuration,
  join,
  policySchema,
  registerMeshSection,
  type ServicePolicy,
  s,
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

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const D = DEFAULT_SETTINGS;

const policyOverrideFields: Fields = Object.fromEntries(
  Object.keys(POLICY_FIELDS).map((k) => {
    const field = (policySchema.fields as Fields)[k] as Fields[string];
    return [k, field.with({ ...field.meta, defaultText: `the mesh \`defaults.${k}\`` })];
  }),
);

const overrideObject = s.object(
  {
    port: s.union([s.string(), s.integer({ min: 1, max: 65535 })], {
      defaultText: "the URL's port, mapped through the Service",
      doc: 'The EndpointSlice port to use, by name (`grpc`) or number (`9090`).',
    }),
    zoneAware: s.boolean({
      defaultText: 'the mesh-wide `zoneAware`',
      doc: 'Honour `hints.forZones` for this service.',
    }),
    ...policyOverrideFields,
  },
  {
    name: 'KubernetesServiceInput',
    doc: 'Per-service settings: the slice port, zone hints, and policy fields over the mesh `defaults`.',
  },
);

const overrideRecord = s.record(overrideObject, {
  keyPattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)?$',
});

const dur = (def: number, doc: string, min = 1) => s.duration({ min, default: formatDuration(def), doc });

const kubernetesObject = s.object(
  {
    apiServer: s.string({
      pattern: /^https?:\/\/[^/]+/,
      patternMessage: 'must be an http(s):// URL',
      defaultText: 'from the cluster or kubeconfig',
      doc: 'API server URL (`https://…` or `http://…`).',
    }),
    kubeconfig: s.string({
      defaultText: '`$KUBECONFIG`, then `~/.kube/config`',
      doc: 'kubeconfig file for out-of-cluster access.',
    }),
    context: s.string({ defaultText: "the kubeconfig's `current-context`", doc: 'kubeconfig context.' }),
    inCluster: s.union([s.boolean(), s.literal('auto')], {
      message: 'must be true, false or "auto"',
      default: 'auto',
      doc: '`true`: use the service-account credentials; `false`: never; `auto`: when in a cluster.',
    }),
    serviceAccountDir: s.string({
      default: SERVICE_ACCOUNT_DIR,
      doc: 'Where `token`, `ca.crt` and `namespace` are read.',
    }),
    namespace: s.string({
      pattern: DNS_LABEL,
      patternMessage: 'is not a valid namespace name',
      defaultText: "the service account's, else the kubeconfig context's, else `local.namespace`",
      doc: 'The namespace of `reviews`-style single-label names.',
    }),
    namespaces: s.array(s.string({ pattern: DNS_LABEL, patternMessage: 'is not a namespace name' }), {
      message: 'must be a list of namespace names',
      default: [],
      doc: 'More namespaces whose `svc.namespace` names are claimed.',
    }),
    clusterDomain: s.string({
      default: D.clusterDomain,
      doc: 'The cluster DNS domain in `svc.ns.svc.<domain>`.',
    }),
    zone: s.string({
      defaultText: '`local.zone` (`$MESHLET_ZONE`)',
      doc: 'The local zone for `hints.forZones`.',
    }),
    zoneAware: s.boolean({
      default: D.zoneAware,
      doc: 'Honour `hints.forZones` when the local zone is known.',
    }),
    watchTimeout: dur(
      D.watchTimeoutMs,
      'Server-side watch duration (`timeoutSeconds`, jittered to 1x–1.5x).',
      1000,
    ),
    stallTimeout: dur(D.stallTimeoutMs, 'A watch silent this long (no event, no bookmark) is restarted.'),
    requestTimeout: dur(
      D.requestTimeoutMs,
      "Timeout of a get or list request (and of a watch's response headers).",
    ),
    tokenRefresh: dur(D.tokenRefreshMs, 'How often token files are re-read.'),
    backoff: s.object(
      {
        base: dur(D.backoffBaseMs, 'First reconnect delay after an error (full jitter).'),
        max: s.duration({
          min: 1,
          defaultText: `${formatDuration(D.backoffMaxMs)} (at least base)`,
          doc: 'Cap of the reconnect delay (must be >= base).',
        }),
      },
      {
        name: 'KubernetesBackoffInput',
        doc: 'Reconnect backoff after errors.',
        defaultText: '{ base: 500ms, max: 30s }',
      },
    ),
    maxRequestsPerSecond: s.number({
      min: 0.1,
      default: D.maxRequestsPerSecond,
      doc: 'Requests per second to the API server, all watches together (burst: twice that).',
    }),
    maxEventSize: s.integer({
      min: 1024,
      default: D.maxEventBytes,
      doc: 'The largest watch event read, in bytes; a longer one fails the watch with a coded error and the watch restarts from a fresh list.',
    }),
    notFoundTtl: dur(
      D.notFoundTtlMs,
      'A Service the API server answered 404 for is taken as absent this long: requests to it fail at once, and it is looked up again only then.',
    ),
    notFoundRequestsPerSecond: s.number({
      min: 0.01,
      default: D.notFoundRequestsPerSecond,
      doc: 'Lookups per second of Services taken as absent: their own budget, never the one real services use.',
    }),
    services: s.custom<unknown, Record<string, KubernetesServiceOverride>>(
      { ts: (e) => overrideRecord.ts(e), json: (e) => overrideRecord.json(e), parse: parseOverrides },
      { default: {}, doc: 'Per-service overrides; the name is `svc` (own namespace) or `svc.namespace`.' },
    ),
  },
  { name: 'KubernetesInput', doc: 'EndpointSlice discovery (docs/kubernetes.md); `{}` turns it on.' },
);

function parseOverride(raw: unknown, path: string, issues: ConfigIssue[]): KubernetesServiceOverride {
  const obj = expectObject(raw, path, issues) ?? {};
  overrideObject.checkKeys(obj, path, issues);
  let port = overrideObject.field(obj, 'port', path, issues);
  if (typeof port === 'string' && /^\d+$/.test(port)) port = Number(port);
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
  return Object.freeze({ port, zoneAware: overrideObject.field(obj, 'zoneAware', path, issues), policy });
}

function parseOverrides(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
): Record<string, KubernetesServiceOverride> | undefined {
  const s = expectObject(raw, path, issues);
  if (!s) return undefined;
  const services: Record<string, KubernetesServiceOverride> = {};
  for (const [name, value] of Object.entries(s)) {
    const labels = name.split('.');
    if (labels.length > 2 || !labels.every((l) => DNS_LABEL.test(l))) {
      issues.push({ path: join(path, name), message: 'must be "service" or "service.namespace"' });
    }
    services[name] = parseOverride(value, join(path, name), issues);
  }
  return services;
}

/** Validates the `kubernetes:` section of the mesh config. */
export function parseKubernetesSettings(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
): KubernetesSettings {
  const obj = raw === null || raw === true ? {} : raw;
  const o = kubernetesObject.parse(obj, path, issues);
  if (!o) return DEFAULT_SETTINGS;
  const backoffBaseMs = o.backoff?.base ?? D.backoffBaseMs;
  const backoffMaxMs = o.backoff
    ? (o.backoff.max ?? Math.max(D.backoffMaxMs, backoffBaseMs))
    : D.backoffMaxMs;
  if (backoffMaxMs < backoffBaseMs)
    issues.push({ path: join(path, 'backoff.max'), message: 'must be >= backoff.base' });
  return Object.freeze({
    apiServer: o.apiServer,
    kubeconfig: o.kubeconfig,
    context: o.context,
    inCluster: o.inCluster,
    serviceAccountDir: o.serviceAccountDir,
    namespace: o.namespace,
    namespaces: Object.freeze(o.namespaces),
    clusterDomain: o.clusterDomain.replace(/^\.|\.$/g, ''),
    zone: o.zone,
    zoneAware: o.zoneAware,
    watchTimeoutMs: o.watchTimeout,
    stallTimeoutMs: o.stallTimeout,
    requestTimeoutMs: o.requestTimeout,
    tokenRefreshMs: o.tokenRefresh,
    backoffBaseMs,
    backoffMaxMs,
    maxRequestsPerSecond: o.maxRequestsPerSecond,
    maxEventBytes: o.maxEventSize,
    notFoundTtlMs: o.notFoundTtl,
    notFoundRequestsPerSecond: o.notFoundRequestsPerSecond,
    services: Object.freeze({ ...o.services }),
  });
}

let registered = false;
/** Registers the `kubernetes:` mesh config section (idempotent). */
export function registerKubernetesSection(): void {
  if (registered) return;
  registered = true;
  registerMeshSection<KubernetesSettings>({
    name: 'kubernetes',
    schema: s.union([s.literal(true), kubernetesObject], {
      defaultText: 'on in a cluster (in-cluster credentials), else off',
      doc: kubernetesObject.meta.doc,
    }),
    parse: parseKubernetesSettings,
  });
}
