import { isAbsolute, resolve } from 'node:path';
import {
  type ConfigIssue,
  checkKeys,
  describe,
  isPlainObject,
  join,
  type Mesh,
  parseDuration,
  registerMeshSection,
} from '@meshlet/core';
import { type Bootstrap, bootstrapFromEnv, parseBootstrap, readBootstrapFile } from './bootstrap.js';
import { XdsClient } from './client.js';
import { DEFAULT_MAX_PROGRAM_SIZE } from './regex.js';
import { XdsResolver } from './resolver.js';

/** The `xds:` section of a mesh config. Every key is optional. */
export interface XdsSettings {
  /** The gRPC bootstrap: a file path or the bootstrap object itself (default: from the environment). */
  readonly bootstrap: Bootstrap | undefined;
  /** Resource-does-not-exist timer in ms (`resourceTimeout`, default 15s). */
  readonly resourceTimeoutMs: number;
  /** Reconnect backoff bounds in ms (`backoff: { base: 1s, max: 30s }`). */
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  /** Hosts xDS claims (`hosts`, default `['*']`). */
  readonly hosts: readonly string[];
  /** `enabled: false` turns xDS off even with a bootstrap in the environment. */
  readonly enabled: boolean;
  /** `protocol`: `sotw` (default, state-of-the-world ADS) or `delta` (incremental ADS). */
  readonly protocol: 'sotw' | 'delta';
  /** `regex.maxProgramSize`: largest RE2 program of a `safe_regex` (default 100, Envoy's); larger ones are NACKed. */
  readonly maxRegexProgramSize: number;
}

function parseXdsSettings(raw: unknown, path: string, issues: ConfigIssue[], baseDir: string): XdsSettings {
  const out = {
    bootstrap: undefined as Bootstrap | undefined,
    resourceTimeoutMs: 15_000,
    backoffBaseMs: 1_000,
    backoffMaxMs: 30_000,
    hosts: ['*'] as readonly string[],
    enabled: true,
    protocol: 'sotw' as 'sotw' | 'delta',
    maxRegexProgramSize: DEFAULT_MAX_PROGRAM_SIZE,
  };
  if (raw === null || raw === true) return out;
  if (!isPlainObject(raw)) {
    issues.push({ path, message: `must be an object, got ${describe(raw)}` });
    return out;
  }
  checkKeys(
    raw,
    ['bootstrap', 'servers', 'node', 'resourceTimeout', 'backoff', 'hosts', 'enabled', 'protocol', 'regex'],
    path,
    issues,
  );
  const collect = (fn: () => Bootstrap): Bootstrap | undefined => {
    try {
      return fn();
    } catch (err) {
      const list = (err as { issues?: ConfigIssue[] }).issues;
      if (list)
        for (const i of list)
          issues.push({ path: join(join(path, 'bootstrap'), i.path), message: i.message });
      else issues.push({ path: join(path, 'bootstrap'), message: (err as Error).message });
      return undefined;
    }
  };
  if (typeof raw.bootstrap === 'string') {
    const file = isAbsolute(raw.bootstrap) ? raw.bootstrap : resolve(baseDir, raw.bootstrap);
    out.bootstrap = collect(() => readBootstrapFile(file));
  } else if (raw.bootstrap !== undefined) {
    out.bootstrap = collect(() => parseBootstrap(raw.bootstrap, `${path}.bootstrap`, baseDir));
  } else if (raw.servers !== undefined) {
    // Shorthand: `servers: ['host:port', …]` (insecure), `node: { id, … }`.
    if (!Array.isArray(raw.servers) || raw.servers.some((s) => typeof s !== 'string')) {
      issues.push({ path: join(path, 'servers'), message: 'must be a list of "host:port" strings' });
    } else {
      out.bootstrap = collect(() =>
        parseBootstrap(
          {
            xds_servers: (raw.servers as string[]).map((s) => ({
              server_uri: s,
              channel_creds: [{ type: 'insecure' }],
            })),
            node: raw.node ?? { id: 'meshlet' },
          },
          `${path}.servers`,
          baseDir,
        ),
      );
    }
  }
  const dur = (key: string, def: number, v: unknown) =>
    v === undefined ? def : (parseDuration(v, join(path, key), issues) ?? def);
  out.resourceTimeoutMs = dur('resourceTimeout', out.resourceTimeoutMs, raw.resourceTimeout);
  if (raw.backoff !== undefined) {
    if (!isPlainObject(raw.backoff))
      issues.push({ path: join(path, 'backoff'), message: 'must be { base, max }' });
    else {
      checkKeys(raw.backoff, ['base', 'max'], join(path, 'backoff'), issues);
      out.backoffBaseMs = dur('backoff.base', out.backoffBaseMs, raw.backoff.base);
      out.backoffMaxMs = dur('backoff.max', out.backoffMaxMs, raw.backoff.max);
    }
  }
  if (raw.hosts !== undefined) {
    if (!Array.isArray(raw.hosts) || raw.hosts.some((h) => typeof h !== 'string'))
      issues.push({ path: join(path, 'hosts'), message: 'must be a list of host names or patterns' });
    else out.hosts = raw.hosts as string[];
  }
  if (raw.protocol !== undefined) {
    if (raw.protocol !== 'sotw' && raw.protocol !== 'delta')
      issues.push({ path: join(path, 'protocol'), message: 'must be "sotw" or "delta"' });
    else out.protocol = raw.protocol;
  }
  if (raw.regex !== undefined) {
    const rp = join(path, 'regex');
    if (!isPlainObject(raw.regex)) issues.push({ path: rp, message: 'must be { maxProgramSize }' });
    else {
      checkKeys(raw.regex, ['maxProgramSize'], rp, issues);
      const v = raw.regex.maxProgramSize;
      if (v !== undefined) {
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
          issues.push({
            path: join(rp, 'maxProgramSize'),
            message: `must be a positive integer, got ${describe(v)}`,
          });
        else out.maxRegexProgramSize = v;
      }
    }
  }
  if (raw.enabled !== undefined) {
    if (typeof raw.enabled !== 'boolean')
      issues.push({ path: join(path, 'enabled'), message: 'must be a boolean' });
    else out.enabled = raw.enabled;
  }
  return Object.freeze(out);
}

let registered = false;
/** Registers the `xds:` mesh config section (idempotent; done on import of `@meshlet/xds`). */
export function registerXdsConfig(): void {
  if (registered) return;
  registered = true;
  registerMeshSection<XdsSettings>({ name: 'xds', parse: parseXdsSettings });
}

export interface SetupXdsOptions {
  /** Environment searched for a bootstrap (default `process.env`). */
  env?: NodeJS.ProcessEnv;
}

/**
 * Turns xDS on for a mesh when the config has an `xds:` section with a bootstrap, or the
 * environment has `GRPC_XDS_BOOTSTRAP` / `GRPC_XDS_BOOTSTRAP_CONFIG`. Returns the resolver (or
 * undefined when xDS stays off). Adds `snapshot().extensions.xds`.
 */
export function setupXds(mesh: Mesh, options: SetupXdsOptions = {}): XdsResolver | undefined {
  const settings = mesh.config.extensions.xds as XdsSettings | undefined;
  if (settings && !settings.enabled) return undefined;
  const bootstrap = settings?.bootstrap ?? bootstrapFromEnv(options.env ?? process.env);
  if (!bootstrap) return undefined;
  let resolver: XdsResolver | undefined;
  const client = new XdsClient(bootstrap, {
    resourceTimeoutMs: settings?.resourceTimeoutMs ?? 15_000,
    backoff: { baseMs: settings?.backoffBaseMs ?? 1_000, maxMs: settings?.backoffMaxMs ?? 30_000 },
    protocol: settings?.protocol ?? 'sotw',
    maxRegexProgramSize: settings?.maxRegexProgramSize ?? DEFAULT_MAX_PROGRAM_SIZE,
    onEvent: (e) => {
      // Emitted once per client: the server does not implement DeltaAggregatedResources.
      if (e.kind === 'protocolFallback')
        mesh.events.emit('log', {
          level: 'warn',
          scope: 'xds',
          message: `xDS: ${e.error}; using state-of-the-world ADS from now on`,
        });
      if (e.kind === 'disconnected') resolver?.onConnectivityChange();
      if (mesh.events.wants('discoveryError') && e.kind === 'nack') {
        mesh.events.emit('discoveryError', { service: 'xds', source: 'xds', error: new Error(e.error) });
      }
    },
  });
  resolver = new XdsResolver(mesh, client, { hosts: settings?.hosts ?? ['*'] });
  mesh.addResolver(resolver);
  mesh.addSnapshotSection('xds', () => ({ bootstrap: bootstrap.source, ...client.dump() }));
  return resolver;
}
