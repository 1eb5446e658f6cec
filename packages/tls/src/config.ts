import { isAbsolute, resolve } from 'node:path';
import type { SecureVersion } from 'node:tls';
import {
  type ConfigIssue,
  checkKeys,
  describe,
  expectObject,
  join,
  optBoolean,
  optEnum,
  parseDuration,
  registerMeshSection,
  registerServiceSection,
} from '@meshlet/core';
import { parseAuthorizationSection } from './authz/policy.js';
import { TLS_LAYOUTS, type TlsLayout } from './material.js';

/** Parsed `tls` section (mesh-wide, or a service's override). */
export interface TlsSettings {
  /** Absolute path of the mounted certificate directory. */
  readonly dir: string;
  /** Forced layout; detected from file names when undefined. */
  readonly layout: TlsLayout | undefined;
  readonly watch: boolean;
  readonly debounceMs: number;
  readonly pollIntervalMs: number;
  /** undefined = warn when a fifth of the lifetime remains. */
  readonly warnBeforeMs: number | undefined;
  readonly minVersion: SecureVersion;
  /** The certificate must carry one workload SPIFFE ID (`requireSpiffeId`, default true). */
  readonly requireSpiffeId: boolean;
}

/** A service's `tls`: its own settings, or `false` for plaintext. */
export type ServiceTlsSetting = TlsSettings | false;

const TLS_KEYS = [
  'dir',
  'layout',
  'watch',
  'debounce',
  'pollInterval',
  'warnBefore',
  'minVersion',
  'requireSpiffeId',
];

function duration(
  obj: Record<string, unknown>,
  key: string,
  path: string,
  issues: ConfigIssue[],
  def: number,
) {
  if (obj[key] === undefined) return def;
  return parseDuration(obj[key], join(path, key), issues) ?? def;
}

/** Parses a `tls` object; returns undefined (with issues) when unusable. */
export function parseTlsSettings(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
  baseDir: string,
): TlsSettings | undefined {
  const obj = typeof raw === 'string' ? { dir: raw } : expectObject(raw, path, issues);
  if (!obj) return undefined;
  checkKeys(obj, TLS_KEYS, path, issues);
  if (typeof obj.dir !== 'string' || obj.dir.length === 0) {
    issues.push({
      path: join(path, 'dir'),
      message: `must be the certificate directory, got ${describe(obj.dir)}`,
    });
    return undefined;
  }
  const dir = isAbsolute(obj.dir) ? obj.dir : resolve(baseDir, obj.dir);
  const layout =
    obj.layout === undefined
      ? undefined
      : optEnum<TlsLayout>(obj, 'layout', path, issues, TLS_LAYOUTS, 'kubernetes');
  const warnBeforeMs =
    obj.warnBefore === undefined ? undefined : duration(obj, 'warnBefore', path, issues, 0);
  return Object.freeze({
    dir,
    layout,
    watch: optBoolean(obj, 'watch', path, issues, true),
    debounceMs: duration(obj, 'debounce', path, issues, 100),
    pollIntervalMs: duration(obj, 'pollInterval', path, issues, 60_000),
    warnBeforeMs,
    minVersion: optEnum<SecureVersion>(obj, 'minVersion', path, issues, ['TLSv1.2', 'TLSv1.3'], 'TLSv1.2'),
    requireSpiffeId: optBoolean(obj, 'requireSpiffeId', path, issues, true),
  });
}

let registered = false;

/** Registers the `tls` (mesh and service level) and `authorization` config sections. Idempotent. */
export function registerTlsConfig(): void {
  if (registered) return;
  registered = true;
  registerMeshSection<TlsSettings | false | undefined>({
    name: 'tls',
    parse(raw, path, issues, baseDir) {
      if (raw === false) return false;
      return parseTlsSettings(raw, path, issues, baseDir);
    },
  });
  registerServiceSection<ServiceTlsSetting | undefined>({
    name: 'tls',
    parse(raw, path, issues, baseDir) {
      if (raw === false) return false;
      return parseTlsSettings(raw, path, issues, baseDir);
    },
  });
  registerMeshSection({
    name: 'authorization',
    parse: (raw, path, issues) => parseAuthorizationSection(raw, path, issues),
  });
}
