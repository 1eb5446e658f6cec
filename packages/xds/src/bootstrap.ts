import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { type ConfigIssue, MeshConfigError } from '@meshlet/core';

/** Channel credentials for one xDS server (gRPC bootstrap `channel_creds`). */
export type ChannelCreds =
  | { readonly type: 'insecure' }
  | {
      readonly type: 'tls';
      /** PEM files (gRPC's file_watcher plugin config); re-read on every (re)connect. */
      readonly caFile: string | undefined;
      readonly certFile: string | undefined;
      readonly keyFile: string | undefined;
    };

export interface XdsServer {
  /** A gRPC target: `host:port`, `dns:///host:port`, `unix:///path`. */
  readonly uri: string;
  readonly creds: ChannelCreds;
  /** `server_features`: `ignore_resource_deletion` keeps LDS/CDS resources the server stops sending. */
  readonly ignoreResourceDeletion: boolean;
  /** `server_features`: `delta_ads` speaks incremental (delta) ADS to this server (default: state of the world). */
  readonly delta?: boolean;
  /**
   * `max_xds_message_size` (gRFC A70): the largest ADS response accepted from this server, in
   * bytes (default 4 MiB, gRPC's receive limit). A larger one fails the stream with
   * RESOURCE_EXHAUSTED, which counts as a failure for the reconnect backoff.
   */
  readonly maxMessageSize?: number;
  /**
   * `max_xds_resource_size` (gRFC A70): the largest single resource, in bytes (default 4 MiB). A
   * larger one is NACKed by name; the rest of the response is used.
   */
  readonly maxResourceSize?: number;
}

/** gRPC's default receive limit, and gRFC A70's default for both bootstrap limits. */
export const DEFAULT_MAX_XDS_MESSAGE_SIZE = 4 * 1024 * 1024;

export interface XdsNode {
  readonly id: string;
  readonly cluster: string;
  readonly metadata: Record<string, unknown>;
  readonly locality: { readonly region: string; readonly zone: string; readonly subZone: string };
}

/**
 * A `certificate_providers` instance of the bootstrap (gRFC A29): where a Cluster's (or
 * Listener's) TLS context finds its certificates, by instance name. Only the `file_watcher`
 * plugin exists (PEM files re-read every `refresh_interval`).
 */
export interface CertificateProviderInstance {
  readonly plugin: 'file_watcher';
  /** The identity certificate chain (PEM); given with `privateKeyFile` or not at all. */
  readonly certificateFile: string | undefined;
  readonly privateKeyFile: string | undefined;
  /** The root certificates that verify peers (PEM). */
  readonly caCertificateFile: string | undefined;
  /** `refresh_interval` in ms (default 10 minutes, gRPC's). */
  readonly refreshIntervalMs: number;
}

/** gRPC's default `file_watcher` refresh interval. */
export const DEFAULT_CERTIFICATE_REFRESH_MS = 600_000;

export interface Bootstrap {
  /** Servers in order of preference: the next is used when the previous is unreachable (gRFC A71). */
  readonly servers: readonly XdsServer[];
  readonly node: XdsNode;
  /** `certificate_providers`: instances by name (empty when the bootstrap has none). */
  readonly certificateProviders: Readonly<Record<string, CertificateProviderInstance>>;
  /** Where it came from (`GRPC_XDS_BOOTSTRAP=/path`, `GRPC_XDS_BOOTSTRAP_CONFIG`, `config`). */
  readonly source: string;
  /**
   * `server_listener_resource_name_template` (gRFC A36): the name of a server's inbound listener,
   * `%s` replaced by its listening address (`xds.istio.io/grpc/lds/inbound/%s`). Without it servers
   * are not managed by the control plane.
   */
  readonly serverListenerTemplate?: string | undefined;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseCreds(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
  baseDir: string,
): ChannelCreds | undefined {
  if (!Array.isArray(raw) || raw.length === 0) {
    issues.push({ path, message: 'must be a non-empty list of { type, config? }' });
    return undefined;
  }
  const seen: string[] = [];
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i] as unknown;
    if (!isObj(c) || typeof c.type !== 'string') {
      issues.push({ path: `${path}[${i}]`, message: 'must be { type, config? }' });
      return undefined;
    }
    seen.push(c.type);
    // gRPC uses the first credential type it supports.
    if (c.type === 'insecure') return { type: 'insecure' };
    if (c.type === 'tls') {
      const cfg = isObj(c.config) ? c.config : {};
      const file = (k: string): string | undefined => {
        const v = cfg[k];
        if (v === undefined) return undefined;
        if (typeof v !== 'string') {
          issues.push({ path: `${path}[${i}].config.${k}`, message: 'must be a file path' });
          return undefined;
        }
        return isAbsolute(v) ? v : resolve(baseDir, v);
      };
      const certFile = file('certificate_file');
      const keyFile = file('private_key_file');
      if ((certFile === undefined) !== (keyFile === undefined)) {
        issues.push({
          path: `${path}[${i}].config`,
          message: 'certificate_file and private_key_file must be given together',
        });
      }
      return { type: 'tls', caFile: file('ca_certificate_file'), certFile, keyFile };
    }
  }
  issues.push({
    path,
    message: `no supported channel credentials (got ${seen.join(', ')}; supported: insecure, tls)`,
  });
  return undefined;
}

/** A proto-JSON `Duration` (`"900s"`, `"1.5s"`) in ms, or undefined when it is not one. */
function protoDurationMs(v: unknown): number | undefined {
  if (typeof v !== 'string') return undefined;
  const m = /^(\d+)(?:\.(\d{1,9}))?s$/.exec(v.trim());
  if (!m) return undefined;
  return Number(m[1]) * 1000 + Number(`0.${m[2] ?? '0'}`) * 1000;
}

function parseCertificateProviders(
  raw: unknown,
  issues: ConfigIssue[],
  baseDir: string,
): Record<string, CertificateProviderInstance> {
  const out: Record<string, CertificateProviderInstance> = {};
  if (raw === undefined || raw === null) return out;
  if (!isObj(raw)) {
    issues.push({ path: 'certificate_providers', message: 'must be an object of instances by name' });
    return out;
  }
  for (const [name, inst] of Object.entries(raw)) {
    const p = `certificate_providers.${name}`;
    if (!isObj(inst) || typeof inst.plugin_name !== 'string') {
      issues.push({ path: `${p}.plugin_name`, message: 'must be a plugin name (file_watcher)' });
      continue;
    }
    if (inst.plugin_name !== 'file_watcher') {
      issues.push({
        path: `${p}.plugin_name`,
        message: `unknown certificate provider plugin "${inst.plugin_name}" (supported: file_watcher)`,
      });
      continue;
    }
    const cfg = inst.config;
    if (!isObj(cfg)) {
      issues.push({ path: `${p}.config`, message: 'must be an object' });
      continue;
    }
    const file = (k: string): string | undefined => {
      const v = cfg[k];
      if (v === undefined) return undefined;
      if (typeof v !== 'string' || v === '') {
        issues.push({ path: `${p}.config.${k}`, message: 'must be a file path' });
        return undefined;
      }
      return isAbsolute(v) ? v : resolve(baseDir, v);
    };
    const certificateFile = file('certificate_file');
    const privateKeyFile = file('private_key_file');
    const caCertificateFile = file('ca_certificate_file');
    if ((cfg.certificate_file === undefined) !== (cfg.private_key_file === undefined))
      issues.push({
        path: `${p}.config`,
        message: 'certificate_file and private_key_file must be given together',
      });
    if (cfg.certificate_file === undefined && cfg.ca_certificate_file === undefined)
      issues.push({
        path: `${p}.config`,
        message: 'needs certificate_file and private_key_file, or ca_certificate_file, or all three',
      });
    let refreshIntervalMs = DEFAULT_CERTIFICATE_REFRESH_MS;
    if (cfg.refresh_interval !== undefined) {
      const ms = protoDurationMs(cfg.refresh_interval);
      if (ms === undefined || ms <= 0 || ms > 2 ** 31 - 1)
        issues.push({
          path: `${p}.config.refresh_interval`,
          message: `must be a positive duration such as "600s", got ${JSON.stringify(cfg.refresh_interval)}`,
        });
      else refreshIntervalMs = ms;
    }
    out[name] = Object.freeze({
      plugin: 'file_watcher',
      certificateFile,
      privateKeyFile,
      caCertificateFile,
      refreshIntervalMs,
    });
  }
  return out;
}

/**
 * Validates a gRPC xDS bootstrap object (the JSON of `GRPC_XDS_BOOTSTRAP`). Unknown keys are
 * ignored, as gRPC does (real files carry `authorities`, `server_listener_resource_name_template`, stray keys).
 * `certificate_providers` are validated: a bad instance is an error naming it (as in gRPC).
 */
export function parseBootstrap(raw: unknown, source: string, baseDir = process.cwd()): Bootstrap {
  const issues: ConfigIssue[] = [];
  if (!isObj(raw))
    throw new MeshConfigError([{ path: '', message: 'the xDS bootstrap must be a JSON object' }], source);
  const servers: XdsServer[] = [];
  if (!Array.isArray(raw.xds_servers) || raw.xds_servers.length === 0) {
    issues.push({ path: 'xds_servers', message: 'must be a non-empty list' });
  } else {
    raw.xds_servers.forEach((s: unknown, i: number) => {
      const p = `xds_servers[${i}]`;
      if (!isObj(s) || typeof s.server_uri !== 'string' || s.server_uri === '') {
        issues.push({ path: `${p}.server_uri`, message: 'is required' });
        return;
      }
      const creds = parseCreds(s.channel_creds, `${p}.channel_creds`, issues, baseDir);
      const features = Array.isArray(s.server_features) ? s.server_features : [];
      const size = (key: string): number | undefined => {
        const v = s[key];
        if (v === undefined) return undefined;
        // A protobuf message is at most 2 GiB: no limit above that makes sense.
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 2 ** 31 - 1) {
          issues.push({ path: `${p}.${key}`, message: 'must be a number of bytes between 1 and 2147483647' });
          return undefined;
        }
        return v;
      };
      const maxMessageSize = size('max_xds_message_size');
      const maxResourceSize = size('max_xds_resource_size');
      if (creds) {
        servers.push({
          uri: s.server_uri,
          creds,
          ignoreResourceDeletion: features.includes('ignore_resource_deletion'),
          ...(features.includes('delta_ads') ? { delta: true } : {}),
          ...(maxMessageSize !== undefined ? { maxMessageSize } : {}),
          ...(maxResourceSize !== undefined ? { maxResourceSize } : {}),
        });
      }
    });
  }
  const n = isObj(raw.node) ? raw.node : {};
  const loc = isObj(n.locality) ? n.locality : {};
  const s = (v: unknown) => (typeof v === 'string' ? v : '');
  const node: XdsNode = {
    id: s(n.id),
    cluster: s(n.cluster),
    metadata: isObj(n.metadata) ? n.metadata : {},
    locality: { region: s(loc.region), zone: s(loc.zone), subZone: s(loc.sub_zone ?? loc.subZone) },
  };
  const certificateProviders = Object.freeze(
    parseCertificateProviders(raw.certificate_providers, issues, baseDir),
  );
  const template = raw.server_listener_resource_name_template;
  if (template !== undefined && (typeof template !== 'string' || template === ''))
    issues.push({ path: 'server_listener_resource_name_template', message: 'must be a non-empty string' });
  if (issues.length > 0) throw new MeshConfigError(issues, source);
  return {
    servers,
    node,
    certificateProviders,
    source,
    ...(typeof template === 'string' ? { serverListenerTemplate: template } : {}),
  };
}

/**
 * The bootstrap from the environment, as gRPC looks for it: `GRPC_XDS_BOOTSTRAP` (a file), then
 * `GRPC_XDS_BOOTSTRAP_CONFIG` (inline JSON). Undefined when neither is set.
 */
export function bootstrapFromEnv(env: NodeJS.ProcessEnv = process.env): Bootstrap | undefined {
  const file = env.GRPC_XDS_BOOTSTRAP;
  if (file) return readBootstrapFile(file);
  const inline = env.GRPC_XDS_BOOTSTRAP_CONFIG;
  if (inline) {
    let raw: unknown;
    try {
      raw = JSON.parse(inline);
    } catch (err) {
      throw new MeshConfigError(
        [{ path: '', message: `GRPC_XDS_BOOTSTRAP_CONFIG is not JSON: ${(err as Error).message}` }],
        'GRPC_XDS_BOOTSTRAP_CONFIG',
      );
    }
    return parseBootstrap(raw, 'GRPC_XDS_BOOTSTRAP_CONFIG');
  }
  return undefined;
}

export function readBootstrapFile(file: string): Bootstrap {
  const abs = resolve(file);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(abs, 'utf8'));
  } catch (err) {
    throw new MeshConfigError(
      [{ path: '', message: `cannot read the xDS bootstrap: ${(err as Error).message}` }],
      abs,
    );
  }
  return parseBootstrap(raw, abs, resolve(abs, '..'));
}
