import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { ErrorCodes, isPlainObject, loadYaml, MeshError } from '@meshlet/core';
import type { KubernetesSettings } from './config.js';

/**
 * A bearer token source. File tokens (bound service-account tokens are rotated by the kubelet)
 * are re-read when older than `refreshMs`, and on demand after a 401.
 */
export class TokenSource {
  #token: string | undefined;
  #readAt = Number.NEGATIVE_INFINITY;
  readonly #file: string | undefined;
  readonly #refreshMs: number;
  readonly #now: () => number;
  /** How many times the file was read (for tests and the snapshot). */
  reads = 0;

  constructor(opts: {
    token?: string | undefined;
    file?: string | undefined;
    refreshMs: number;
    now?: () => number;
  }) {
    this.#token = opts.token;
    this.#file = opts.file;
    this.#refreshMs = opts.refreshMs;
    this.#now = opts.now ?? Date.now;
  }

  get file(): string | undefined {
    return this.#file;
  }

  /** The current token; re-reads the file when the cached copy is older than the refresh period. */
  get(): string | undefined {
    if (this.#file !== undefined && this.#now() - this.#readAt >= this.#refreshMs) this.#read();
    return this.#token;
  }

  /** Re-reads the file now (after a 401). Returns true when the token changed. */
  refresh(): boolean {
    if (this.#file === undefined) return false;
    const before = this.#token;
    this.#read();
    return this.#token !== before;
  }

  #read(): void {
    const file = this.#file as string;
    try {
      const t = readFileSync(file, 'utf8').trim();
      this.reads++;
      this.#readAt = this.#now();
      if (t.length > 0) this.#token = t;
    } catch (err) {
      this.#readAt = this.#now();
      if (this.#token === undefined) {
        throw new MeshError(
          ErrorCodes.DISCOVERY,
          `kubernetes: cannot read token file ${file}: ${(err as Error).message}`,
          {
            reason: 'Credentials',
          },
        );
      }
      // Keep the last token: a rotation in progress can leave the file briefly absent.
    }
  }
}

/** Where and how to reach the API server. */
export interface ClusterAccess {
  /** Base URL such as `https://10.96.0.1:443`. */
  readonly server: string;
  readonly ca: string | Buffer | undefined;
  readonly cert: string | Buffer | undefined;
  readonly key: string | Buffer | undefined;
  readonly insecureSkipTlsVerify: boolean;
  readonly token: TokenSource | undefined;
  /** Basic auth, when a kubeconfig gives a username and password. */
  readonly basic: { username: string; password: string } | undefined;
  /** Namespace from the service account or the kubeconfig context. */
  readonly namespace: string | undefined;
  readonly inCluster: boolean;
  /** `in-cluster`, `kubeconfig:<path>#<context>` or `apiServer` (for the snapshot). */
  readonly source: string;
}

function credentialsError(message: string, cause?: unknown): MeshError {
  return new MeshError(ErrorCodes.DISCOVERY, `kubernetes: ${message}`, { reason: 'Credentials' }, { cause });
}

/** True when the process runs in a pod with a mounted service-account token. */
export function inClusterAvailable(env: NodeJS.ProcessEnv, dir: string): boolean {
  return (
    typeof env.KUBERNETES_SERVICE_HOST === 'string' &&
    env.KUBERNETES_SERVICE_HOST.length > 0 &&
    existsSync(join(dir, 'token'))
  );
}

/** In-cluster access: `KUBERNETES_SERVICE_HOST/PORT`, the service-account token, CA and namespace. */
export function loadInCluster(
  settings: KubernetesSettings,
  env: NodeJS.ProcessEnv,
  now?: () => number,
): ClusterAccess {
  const dir = settings.serviceAccountDir;
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT ?? '443';
  if (!host && settings.apiServer === undefined)
    throw credentialsError('KUBERNETES_SERVICE_HOST is not set; not running in a cluster');
  const tokenFile = join(dir, 'token');
  if (!existsSync(tokenFile)) throw credentialsError(`no service-account token at ${tokenFile}`);
  const caFile = join(dir, 'ca.crt');
  const nsFile = join(dir, 'namespace');
  const hostPart = host?.includes(':') ? `[${host}]` : host;
  const token = new TokenSource({ file: tokenFile, refreshMs: settings.tokenRefreshMs, now });
  token.get(); // fail early on an unreadable token
  return {
    server: settings.apiServer ?? `https://${hostPart}:${port}`,
    ca: existsSync(caFile) ? readFileSync(caFile) : undefined,
    cert: undefined,
    key: undefined,
    insecureSkipTlsVerify: false,
    token,
    basic: undefined,
    namespace: existsSync(nsFile) ? readFileSync(nsFile, 'utf8').trim() || undefined : undefined,
    inCluster: true,
    source: 'in-cluster',
  };
}

interface Named {
  name: string;
  [key: string]: unknown;
}

function findNamed(list: unknown, name: string, what: string, file: string): Record<string, unknown> {
  if (Array.isArray(list)) {
    for (const item of list as Named[]) {
      if (isPlainObject(item) && item.name === name) {
        const inner = item[what];
        return isPlainObject(inner) ? inner : {};
      }
    }
  }
  throw credentialsError(`${file}: no ${what} named "${name}"`);
}

function str(obj: Record<string, unknown>, key: string): string | undefined {
  const v = obj[key];
  return typeof v === 'string' && v.length > 0 ? v : undefined;
}

/** Reads `<key>-data` (base64) or the file `<key>` (relative to the kubeconfig's directory). */
function material(obj: Record<string, unknown>, key: string, base: string): Buffer | undefined {
  const data = str(obj, `${key}-data`);
  if (data !== undefined) return Buffer.from(data, 'base64');
  const file = str(obj, key);
  if (file === undefined) return undefined;
  const abs = isAbsolute(file) ? file : resolve(base, file);
  try {
    return readFileSync(abs);
  } catch (err) {
    throw credentialsError(`cannot read ${key} ${abs}: ${(err as Error).message}`, err);
  }
}

/** The kubeconfig path: the setting, then the first entry of `$KUBECONFIG`, then `~/.kube/config`. */
export function kubeconfigPath(settings: KubernetesSettings, env: NodeJS.ProcessEnv): string | undefined {
  if (settings.kubeconfig !== undefined) return resolve(settings.kubeconfig);
  const fromEnv = env.KUBECONFIG?.split(process.platform === 'win32' ? ';' : ':').find((p) => p.length > 0);
  if (fromEnv !== undefined) return resolve(fromEnv);
  const home = join(homedir(), '.kube', 'config');
  return existsSync(home) ? home : undefined;
}

/**
 * Out-of-cluster access from a kubeconfig: the context's cluster (`server`,
 * `certificate-authority(-data)`, `insecure-skip-tls-verify`) and user (`token`, `tokenFile`,
 * `client-certificate(-data)` + `client-key(-data)`, `username`/`password`).
 */
export function loadKubeconfig(
  file: string,
  settings: KubernetesSettings,
  now?: () => number,
): ClusterAccess {
  let doc: unknown;
  try {
    // An alias bomb stops after 100 expansions (a coded error below, not a hang).
    doc = loadYaml().parse(readFileSync(file, 'utf8'), { maxAliasCount: 100 });
  } catch (err) {
    throw credentialsError(`cannot read kubeconfig ${file}: ${(err as Error).message}`, err);
  }
  if (!isPlainObject(doc)) throw credentialsError(`${file} is not a kubeconfig`);
  const base = dirname(file);
  const contextName = settings.context ?? str(doc, 'current-context');
  if (contextName === undefined) throw credentialsError(`${file} has no current-context`);
  const ctx = findNamed(doc.contexts, contextName, 'context', file);
  const clusterName = str(ctx, 'cluster');
  if (clusterName === undefined) throw credentialsError(`${file}: context "${contextName}" names no cluster`);
  const cluster = findNamed(doc.clusters, clusterName, 'cluster', file);
  const userName = str(ctx, 'user');
  const user = userName === undefined ? {} : findNamed(doc.users, userName, 'user', file);
  const server = settings.apiServer ?? str(cluster, 'server');
  if (server === undefined) throw credentialsError(`${file}: cluster "${clusterName}" has no server`);
  if (user.exec !== undefined || user['auth-provider'] !== undefined) {
    // Exec and auth-provider plugins run external programs; not supported, say so plainly.
    if (
      str(user, 'token') === undefined &&
      str(user, 'tokenFile') === undefined &&
      user['client-certificate-data'] === undefined &&
      user['client-certificate'] === undefined
    )
      throw credentialsError(
        `${file}: user "${userName}" uses an exec/auth-provider plugin, which meshlet does not run; use a token, tokenFile or client certificate`,
      );
  }
  const tokenFile = str(user, 'tokenFile');
  const token =
    str(user, 'token') !== undefined || tokenFile !== undefined
      ? new TokenSource({
          token: str(user, 'token'),
          file: tokenFile === undefined ? undefined : resolve(base, tokenFile),
          refreshMs: settings.tokenRefreshMs,
          now,
        })
      : undefined;
  const cert = material(user, 'client-certificate', base);
  const key = material(user, 'client-key', base);
  if ((cert === undefined) !== (key === undefined))
    throw credentialsError(`${file}: user "${userName}" needs both a client certificate and a client key`);
  const username = str(user, 'username');
  const password = str(user, 'password');
  return {
    server: server.replace(/\/+$/, ''),
    ca: material(cluster, 'certificate-authority', base),
    cert,
    key,
    insecureSkipTlsVerify: cluster['insecure-skip-tls-verify'] === true,
    token,
    basic: username !== undefined && password !== undefined ? { username, password } : undefined,
    namespace: str(ctx, 'namespace'),
    inCluster: false,
    source: `kubeconfig:${file}#${contextName}`,
  };
}

/**
 * Chooses the access: in-cluster when `inCluster` is true (or `auto` and the token is mounted),
 * else the kubeconfig, else `apiServer` alone (no credentials). Throws a `MESHLET_ERR_DISCOVERY`
 * error when nothing is configured.
 */
export function resolveAccess(
  settings: KubernetesSettings,
  env: NodeJS.ProcessEnv,
  now?: () => number,
): ClusterAccess {
  const inCluster =
    settings.inCluster === true ||
    (settings.inCluster === 'auto' && inClusterAvailable(env, settings.serviceAccountDir));
  if (inCluster) return loadInCluster(settings, env, now);
  const file = kubeconfigPath(settings, env);
  if (file !== undefined) return loadKubeconfig(file, settings, now);
  if (settings.apiServer !== undefined) {
    return {
      server: settings.apiServer.replace(/\/+$/, ''),
      ca: undefined,
      cert: undefined,
      key: undefined,
      insecureSkipTlsVerify: false,
      token: undefined,
      basic: undefined,
      namespace: undefined,
      inCluster: false,
      source: 'apiServer',
    };
  }
  throw credentialsError(
    'no cluster access: not in a cluster (KUBERNETES_SERVICE_HOST and a service-account token), no KUBECONFIG and no kubernetes.apiServer',
  );
}
