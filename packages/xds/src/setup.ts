import { isAbsolute, resolve } from 'node:path';
import {
  type ConfigIssue,
  isPlainObject,
  join,
  type ParsedMeshConfig,
  registerMeshSection,
  s,
} from '@meshlet/core';
import { type Bootstrap, bootstrapFromEnv, parseBootstrap, readBootstrapFile } from './bootstrap.js';
// The constant only: this module is `@meshlet/xds/config`'s, which must not load the regex engine.
import { DEFAULT_MAX_PROGRAM_SIZE } from './regex-size.js';

/** The default drain grace time of connections made under an older listener version (A36: 10 minutes). */
export const DEFAULT_DRAIN_GRACE_MS = 600_000;

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
  /**
   * `server.enabled`: servers follow their inbound listeners (gRFC A36) when the bootstrap has a
   * `server_listener_resource_name_template` (default true).
   */
  readonly serverEnabled: boolean;
  /** `server.drainGrace`: how long connections of an older listener version may finish (default 10m, A36's). */
  readonly drainGraceMs: number;
}

const xdsObject = s.object(
  {
    bootstrap: s.union(
      [
        s.string(),
        s.custom<Record<string, unknown>, unknown>({
          ts: '{ readonly [key: string]: unknown }',
          json: { type: 'object', description: 'A gRPC xDS bootstrap (gRFC A27): xds_servers, node, …' },
          accepts: isPlainObject,
          parse: (raw) => raw,
        }),
      ],
      {
        defaultText: '`$GRPC_XDS_BOOTSTRAP` or `$GRPC_XDS_BOOTSTRAP_CONFIG`',
        doc: 'The gRPC xDS bootstrap: a file path (relative to the config file) or the bootstrap object itself.',
      },
    ),
    servers: s.array(s.string(), {
      message: 'must be a list of "host:port" strings',
      defaultText: 'none',
      doc: 'Shorthand for a bootstrap: xDS servers as `host:port` (insecure), with `node`.',
    }),
    node: s.custom<Record<string, unknown>, unknown>(
      { ts: '{ readonly [key: string]: unknown }', json: { type: 'object' }, parse: (raw) => raw },
      {
        default: { id: 'meshlet' },
        doc: 'With `servers`: the node sent to the control plane (`{ id, cluster, metadata, … }`).',
      },
    ),
    resourceTimeout: s.duration({ default: '15s', doc: 'Resource-does-not-exist timer.' }),
    backoff: s.object(
      {
        base: s.duration({ default: '1s', doc: 'First reconnect delay (full jitter).' }),
        max: s.duration({ default: '30s', doc: 'Cap of the reconnect delay.' }),
      },
      {
        name: 'XdsBackoffInput',
        doc: 'Reconnect backoff of the ADS stream.',
        defaultText: '{ base: 1s, max: 30s }',
      },
    ),
    hosts: s.array(s.string(), {
      message: 'must be a list of host names or patterns',
      default: ['*'],
      doc: 'Hosts xDS claims (listener names; `*` for all).',
    }),
    enabled: s.boolean({
      default: true,
      doc: '`false` turns xDS off even with a bootstrap in the environment.',
    }),
    protocol: s.enum(['sotw', 'delta'] as const, {
      default: 'sotw',
      doc: '`sotw` (state-of-the-world ADS) or `delta` (incremental ADS).',
    }),
    regex: s.object(
      {
        maxProgramSize: s.integer({
          min: 1,
          default: DEFAULT_MAX_PROGRAM_SIZE,
          doc:
            "The largest RE2 program a `safe_regex` may compile to (Envoy's default); a larger one is NACKed. " +
            "A resource's own `google_re2.max_program_size` wins.",
        }),
      },
      {
        name: 'XdsRegexInput',
        doc: 'Limits on the regular expressions of xDS resources.',
        defaultText: '{ maxProgramSize: 100 }',
      },
    ),
    server: s.object(
      {
        enabled: s.boolean({
          default: true,
          doc:
            'Servers (Express, Fastify, gRPC) follow their inbound listeners (gRFC A36) when the bootstrap has a ' +
            '`server_listener_resource_name_template`; `false` leaves them to the local config.',
        }),
        drainGrace: s.duration({
          default: '10m',
          doc: 'How long connections made under an older listener version may finish their requests (A36).',
        }),
      },
      {
        name: 'XdsServerInput',
        doc: 'Inbound listeners from the control plane (docs/xds.md, "Servers").',
        defaultText: '{ enabled: true, drainGrace: 10m }',
      },
    ),
  },
  {
    name: 'XdsInput',
    doc: 'xDS (docs/xds.md): a bootstrap turns it on; `http://NAME/` then resolves through listener NAME.',
  },
);

function parseXdsSettings(raw: unknown, path: string, issues: ConfigIssue[], baseDir: string): XdsSettings {
  const o =
    xdsObject.parse(raw === null || raw === true ? {} : raw, path, issues) ?? xdsObject.parse({}, path, []);
  const out = {
    bootstrap: undefined as Bootstrap | undefined,
    resourceTimeoutMs: o?.resourceTimeout ?? 15_000,
    backoffBaseMs: o?.backoff?.base ?? 1_000,
    backoffMaxMs: o?.backoff?.max ?? 30_000,
    hosts: (o?.hosts ?? ['*']) as readonly string[],
    enabled: o?.enabled ?? true,
    protocol: o?.protocol ?? 'sotw',
    maxRegexProgramSize: o?.regex?.maxProgramSize ?? DEFAULT_MAX_PROGRAM_SIZE,
    serverEnabled: o?.server?.enabled ?? true,
    drainGraceMs: o?.server?.drainGrace ?? DEFAULT_DRAIN_GRACE_MS,
  };
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
  const bootstrap = o?.bootstrap;
  if (typeof bootstrap === 'string') {
    const file = isAbsolute(bootstrap) ? bootstrap : resolve(baseDir, bootstrap);
    out.bootstrap = collect(() => readBootstrapFile(file));
  } else if (bootstrap !== undefined) {
    out.bootstrap = collect(() => parseBootstrap(bootstrap, `${path}.bootstrap`, baseDir));
  } else if (o?.servers !== undefined) {
    // Shorthand: `servers: ['host:port', …]` (insecure), `node: { id, … }`.
    out.bootstrap = collect(() =>
      parseBootstrap(
        {
          xds_servers: (o.servers as string[]).map((srv) => ({
            server_uri: srv,
            channel_creds: [{ type: 'insecure' }],
          })),
          node: o.node,
        },
        `${path}.servers`,
        baseDir,
      ),
    );
  }
  return Object.freeze(out);
}

let registered = false;
/** Registers the `xds:` mesh config section (idempotent; done on import of `@meshlet/xds`). */
export function registerXdsConfig(): void {
  if (registered) return;
  registered = true;
  registerMeshSection<XdsSettings>({
    name: 'xds',
    schema: s.union([s.literal(true), xdsObject], {
      defaultText: 'on when the environment has a gRPC xDS bootstrap',
      doc: xdsObject.meta.doc,
    }),
    parse: parseXdsSettings,
  });
}

/**
 * The bootstrap that turns xDS on for a mesh with this config: the config's `xds:` section
 * (`bootstrap` or `servers`), else `GRPC_XDS_BOOTSTRAP` / `GRPC_XDS_BOOTSTRAP_CONFIG` in `env`;
 * undefined when xDS stays off (none, or `xds: { enabled: false }`). Reads no more than the
 * bootstrap file, and loads neither grpc-js nor protobufjs.
 */
export function xdsBootstrapFor(
  config: ParsedMeshConfig,
  env: NodeJS.ProcessEnv = process.env,
): Bootstrap | undefined {
  const settings = config.extensions.xds as XdsSettings | undefined;
  if (settings && !settings.enabled) return undefined;
  return settings?.bootstrap ?? bootstrapFromEnv(env);
}
