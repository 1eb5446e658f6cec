import { isAbsolute, resolve } from 'node:path';
import type { SecureVersion } from 'node:tls';
import { type ConfigIssue, registerMeshSection, registerServiceSection, s } from '@meshlet/core';
import { authorizationSchema, parseAuthorizationSection } from './authz/policy.js';
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

const tlsObject = s.object(
  {
    dir: s.string({
      required: 'must be the certificate directory, got undefined',
      doc: 'The mounted certificate directory (relative to the config file): certificate, key and trust bundle.',
    }),
    layout: s.enum(TLS_LAYOUTS, {
      defaultText: 'detected from the file names',
      doc: 'Force a layout: `kubernetes` (tls.crt, tls.key, ca.crt), `spiffe` (svid.pem, …) or `istio` (cert-chain.pem, …).',
    }),
    watch: s.boolean({ default: true, doc: 'Watch the directory for changes (rotation).' }),
    debounce: s.duration({
      default: '100ms',
      doc: 'Quiet period after the last change before re-reading (a swap touches several names).',
    }),
    pollInterval: s.duration({
      default: '60s',
      doc: 'Also re-read on this period, in case a change notification was lost; 0 = never.',
    }),
    warnBefore: s.duration({
      defaultText: "a fifth of the certificate's lifetime",
      doc: 'Warn this long before the certificate in use expires.',
    }),
    minVersion: s.enum(['TLSv1.2', 'TLSv1.3'] as const, {
      default: 'TLSv1.2',
      doc: 'Lowest TLS version; TLS 1.3 is always preferred when both sides have it.',
    }),
    requireSpiffeId: s.boolean({
      default: true,
      doc: 'The certificate must carry exactly one workload SPIFFE ID; `false` for encryption-only certificates.',
    }),
  },
  { name: 'TlsInput', doc: 'mTLS from mounted certificate files, rotated in place (docs/security.md).' },
);

/** `tls`: a directory, `{ dir, ... }`, or `false` (plaintext). */
export const tlsSchema = s.union([s.literal(false), s.string(), tlsObject], {
  defaultText: 'off (plaintext)',
  doc: 'mTLS from a mounted certificate directory: its path, `{ dir, ... }`, or `false` for plaintext.',
});

/** Parses a `tls` object; returns undefined (with issues) when unusable. */
export function parseTlsSettings(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
  baseDir: string,
): TlsSettings | undefined {
  const obj = typeof raw === 'string' ? { dir: raw } : raw;
  const o = tlsObject.parse(obj, path, issues);
  if (!o || o.dir === undefined) return undefined;
  return Object.freeze({
    dir: isAbsolute(o.dir) ? o.dir : resolve(baseDir, o.dir),
    layout: o.layout,
    watch: o.watch,
    debounceMs: o.debounce,
    pollIntervalMs: o.pollInterval,
    warnBeforeMs: o.warnBefore,
    minVersion: o.minVersion,
    requireSpiffeId: o.requireSpiffeId,
  });
}

let registered = false;

/** Registers the `tls` (mesh and service level) and `authorization` config sections. Idempotent. */
export function registerTlsConfig(): void {
  if (registered) return;
  registered = true;
  registerMeshSection<TlsSettings | false | undefined>({
    name: 'tls',
    schema: tlsSchema,
    parse(raw, path, issues, baseDir) {
      if (raw === false) return false;
      return parseTlsSettings(raw, path, issues, baseDir);
    },
  });
  registerServiceSection<ServiceTlsSetting | undefined>({
    name: 'tls',
    schema: tlsSchema.with({
      defaultText: 'the mesh-wide `tls`',
      doc: "This service's own certificate directory (`{ dir, ... }` or its path), or `false` for plaintext.",
    }),
    parse(raw, path, issues, baseDir) {
      if (raw === false) return false;
      return parseTlsSettings(raw, path, issues, baseDir);
    },
  });
  registerMeshSection({
    name: 'authorization',
    schema: authorizationSchema,
    parse: (raw, path, issues) => parseAuthorizationSection(raw, path, issues),
  });
}
