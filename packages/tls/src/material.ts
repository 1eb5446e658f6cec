import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { readFile, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCodes, MeshError } from '@meshlet/core';
import { parseSpiffeId, splitPemCertificates, uriSans } from './pem.js';

/** The mounted-directory layouts meshlet reads. */
export type TlsLayout = 'kubernetes' | 'spiffe' | 'istio';

/** Every layout, in the order `detectLayout` tries them. */
export const TLS_LAYOUTS: readonly TlsLayout[] = ['kubernetes', 'spiffe', 'istio'];

export const LAYOUT_FILES: Readonly<Record<TlsLayout, { cert: string; key: string; ca: string }>> = {
  /** A Kubernetes TLS Secret (cert-manager adds `ca.crt`). */
  kubernetes: { cert: 'tls.crt', key: 'tls.key', ca: 'ca.crt' },
  /** The SPIFFE CSI driver / spiffe-helper layout. */
  spiffe: { cert: 'svid.pem', key: 'svid_key.pem', ca: 'bundle.pem' },
  /**
   * Istio's workload certificate files (`/var/lib/istio/data` of a proxyless pod, written by the
   * Istio agent and named by its gRPC bootstrap's `file_watcher` certificate provider;
   * `/etc/certs` of older mounted-secret setups).
   */
  istio: { cert: 'cert-chain.pem', key: 'key.pem', ca: 'root-cert.pem' },
};

/** Validated certificate material: PEM text plus what was learnt from it. */
export interface TlsMaterial {
  readonly dir: string;
  readonly layout: TlsLayout;
  /** The workload certificate followed by any intermediates (PEM). */
  readonly cert: string;
  readonly key: string;
  /** The trust bundle: one or more CA certificates (PEM). */
  readonly ca: string;
  /** The workload's SPIFFE ID (URI SAN), when it has one. */
  readonly spiffeId: string | undefined;
  readonly subject: string;
  readonly issuer: string;
  readonly serialNumber: string;
  readonly fingerprint256: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Number of CA certificates in the bundle. */
  readonly caCount: number;
  /** When this material was loaded (ms since epoch). */
  readonly loadedAt: number;
}

export interface RawMaterial {
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
}

function tlsError(message: string, details: Record<string, unknown>, cause?: unknown): MeshError {
  return new MeshError(ErrorCodes.TLS, message, details, cause === undefined ? undefined : { cause });
}

/** Which layout a directory holds, or undefined when it has neither. */
export function detectLayout(dir: string): TlsLayout | undefined {
  for (const layout of TLS_LAYOUTS) if (existsSync(join(dir, LAYOUT_FILES[layout].cert))) return layout;
  return undefined;
}

/**
 * The directory to read files from: Kubernetes' atomic writer keeps each generation in a
 * timestamped directory behind the `..data` symlink, so reading through its resolved path gives
 * one consistent generation even while a swap happens.
 */
function generationDirSync(dir: string): string {
  const data = join(dir, '..data');
  try {
    return realpathSync(data);
  } catch {
    return dir;
  }
}

async function generationDir(dir: string): Promise<string> {
  try {
    return await realpath(join(dir, '..data'));
  } catch {
    return dir;
  }
}

function layoutOrThrow(dir: string, layout: TlsLayout | undefined): TlsLayout {
  const l = layout ?? detectLayout(dir);
  if (!l) {
    throw tlsError(
      `no certificates in ${dir}: expected tls.crt, tls.key and ca.crt (Kubernetes), svid.pem, svid_key.pem and bundle.pem (SPIFFE) or cert-chain.pem, key.pem and root-cert.pem (Istio)`,
      { dir, reason: 'missing' },
    );
  }
  return l;
}

function readErr(dir: string, file: string, err: unknown): MeshError {
  return tlsError(
    `cannot read ${join(dir, file)}: ${(err as Error).message}`,
    { dir, file, reason: 'unreadable' },
    err,
  );
}

/** Reads the files of a directory synchronously (startup). */
export function readMaterialSync(dir: string, layout?: TlsLayout): { layout: TlsLayout; raw: RawMaterial } {
  const l = layoutOrThrow(dir, layout);
  const files = LAYOUT_FILES[l];
  const gen = generationDirSync(dir);
  const read = (f: string) => {
    try {
      return readFileSync(join(gen, f), 'utf8');
    } catch (err) {
      throw readErr(dir, f, err);
    }
  };
  return { layout: l, raw: { cert: read(files.cert), key: read(files.key), ca: read(files.ca) } };
}

/** Reads the files of a directory without blocking the event loop (rotation). */
export async function readMaterial(
  dir: string,
  layout?: TlsLayout,
): Promise<{ layout: TlsLayout; raw: RawMaterial }> {
  const l = layoutOrThrow(dir, layout);
  const files = LAYOUT_FILES[l];
  const gen = await generationDir(dir);
  const read = async (f: string) => {
    try {
      return await readFile(join(gen, f), 'utf8');
    } catch (err) {
      throw readErr(dir, f, err);
    }
  };
  const [cert, key, ca] = await Promise.all([read(files.cert), read(files.key), read(files.ca)]);
  return { layout: l, raw: { cert, key, ca } };
}

/**
 * The files of a certificate-provider instance (an xDS bootstrap's `file_watcher`): the identity
 * certificate chain and key, the root certificates, or all three.
 */
export interface MaterialFiles {
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
  readonly ca?: string | undefined;
}

function fileErr(label: string, file: string, err: unknown): MeshError {
  return tlsError(
    `${label}: cannot read ${file}: ${(err as Error).message}`,
    { dir: label, file, reason: 'unreadable' },
    err,
  );
}

/** Reads a certificate provider's files synchronously (startup); a part not configured reads as ''. */
export function readFilesSync(label: string, files: MaterialFiles): RawMaterial {
  const read = (f: string | undefined) => {
    if (f === undefined) return '';
    try {
      return readFileSync(f, 'utf8');
    } catch (err) {
      throw fileErr(label, f, err);
    }
  };
  return { cert: read(files.cert), key: read(files.key), ca: read(files.ca) };
}

/** Reads a certificate provider's files without blocking the event loop (rotation). */
export async function readFiles(label: string, files: MaterialFiles): Promise<RawMaterial> {
  const read = async (f: string | undefined) => {
    if (f === undefined) return '';
    try {
      return await readFile(f, 'utf8');
    } catch (err) {
      throw fileErr(label, f, err);
    }
  };
  const [cert, key, ca] = await Promise.all([read(files.cert), read(files.key), read(files.ca)]);
  return { cert, key, ca };
}

function parseAll(text: string, what: string, dir: string): X509Certificate[] {
  const blocks = splitPemCertificates(text);
  if (blocks.length === 0)
    throw tlsError(`${what} in ${dir} holds no PEM certificate`, { dir, reason: 'no_certificate' });
  return blocks.map((pem, i) => {
    try {
      return new X509Certificate(pem);
    } catch (err) {
      throw tlsError(
        `${what} in ${dir}: certificate #${i + 1} cannot be parsed: ${(err as Error).message}`,
        { dir, reason: 'malformed_certificate' },
        err,
      );
    }
  });
}

function issuedBy(child: X509Certificate, parent: X509Certificate): boolean {
  try {
    return child.checkIssued(parent) && child.verify(parent.publicKey);
  } catch {
    return false;
  }
}

/**
 * Validates material: the key matches the certificate, the certificate chains (through the
 * intermediates that follow it) to a CA of the bundle, and it is within its validity period.
 * Throws a `MESHLET_ERR_TLS` MeshError whose `details.reason` says what is wrong.
 */
export function validateMaterial(
  raw: RawMaterial,
  options: {
    dir?: string;
    layout?: TlsLayout;
    now?: number;
    requireSpiffeId?: boolean;
    /** A certificate provider's material may be roots only (no cert and key) or an identity only (no CA). */
    partial?: boolean;
  } = {},
): TlsMaterial {
  const dir = options.dir ?? '(inline)';
  const now = options.now ?? Date.now();
  if (options.partial && raw.cert === '' && raw.key === '') return rootsOnly(raw, dir, options.layout, now);
  if (options.partial && raw.ca === '') return identityOnly(raw, dir, options.layout, now);
  const chain = parseAll(raw.cert, 'the certificate file', dir);
  const bundle = parseAll(raw.ca, 'the CA bundle', dir);
  const leaf = chain[0] as X509Certificate;
  let key: KeyObject;
  try {
    key = createPrivateKey(raw.key);
  } catch (err) {
    throw tlsError(
      `the private key in ${dir} cannot be parsed: ${(err as Error).message}`,
      { dir, reason: 'malformed_key' },
      err,
    );
  }
  let matches = false;
  try {
    matches = leaf.checkPrivateKey(key);
  } catch {
    matches = false;
  }
  if (!matches) {
    throw tlsError(`the private key in ${dir} does not match its certificate (${leaf.subject})`, {
      dir,
      reason: 'key_mismatch',
    });
  }
  const notBefore = new Date(leaf.validFrom);
  const notAfter = new Date(leaf.validTo);
  if (now > notAfter.getTime()) {
    throw tlsError(`the certificate in ${dir} expired at ${notAfter.toISOString()}`, {
      dir,
      reason: 'expired',
      notAfter: notAfter.toISOString(),
    });
  }
  if (now < notBefore.getTime()) {
    throw tlsError(`the certificate in ${dir} is not valid before ${notBefore.toISOString()}`, {
      dir,
      reason: 'not_yet_valid',
      notBefore: notBefore.toISOString(),
    });
  }
  // Walk leaf → intermediates → a CA of the bundle.
  let current = leaf;
  let trusted = false;
  const intermediates = chain.slice(1);
  for (let depth = 0; depth < 10 && !trusted; depth++) {
    if (bundle.some((ca) => issuedBy(current, ca))) {
      trusted = true;
      break;
    }
    if (bundle.some((ca) => ca.fingerprint256 === current.fingerprint256)) {
      trusted = true;
      break;
    }
    const next = intermediates.find((c) => issuedBy(current, c));
    if (!next) break;
    current = next;
  }
  if (!trusted) {
    throw tlsError(
      `the certificate in ${dir} (issuer ${leaf.issuer.replace(/\n/g, ', ')}) does not chain to a CA of its bundle`,
      {
        dir,
        reason: 'untrusted_chain',
      },
    );
  }
  const layout = options.layout ?? 'kubernetes';
  const spiffeIds = uriSans(leaf.subjectAltName).filter((u) => u.startsWith('spiffe://'));
  if (options.requireSpiffeId !== false) checkSpiffeId(spiffeIds, dir, layout);
  return Object.freeze({
    dir,
    layout,
    cert: raw.cert,
    key: raw.key,
    ca: raw.ca,
    spiffeId: spiffeIds[0],
    subject: leaf.subject,
    issuer: leaf.issuer,
    serialNumber: leaf.serialNumber,
    fingerprint256: leaf.fingerprint256,
    notBefore,
    notAfter,
    caCount: bundle.length,
    loadedAt: now,
  });
}

/** Material of roots only (a provider with `ca_certificate_file` alone): the bundle must parse. */
function rootsOnly(raw: RawMaterial, dir: string, layout: TlsLayout | undefined, now: number): TlsMaterial {
  const bundle = parseAll(raw.ca, 'the CA bundle', dir);
  const first = bundle[0] as X509Certificate;
  return Object.freeze({
    dir,
    layout: layout ?? 'kubernetes',
    cert: '',
    key: '',
    ca: raw.ca,
    spiffeId: undefined,
    subject: first.subject,
    issuer: first.issuer,
    serialNumber: first.serialNumber,
    fingerprint256: first.fingerprint256,
    notBefore: new Date(first.validFrom),
    notAfter: new Date(first.validTo),
    caCount: bundle.length,
    loadedAt: now,
  });
}

/** Material of an identity only (no CA file): the key must match a certificate valid now. */
function identityOnly(
  raw: RawMaterial,
  dir: string,
  layout: TlsLayout | undefined,
  now: number,
): TlsMaterial {
  const withItself = validateMaterial(
    { cert: raw.cert, key: raw.key, ca: splitPemCertificates(raw.cert).at(-1) ?? '' },
    { dir, layout, now, requireSpiffeId: false },
  );
  return Object.freeze({ ...withItself, ca: '', caCount: 0 });
}

/**
 * An X.509-SVID carries exactly one URI SAN, a workload SPIFFE ID (`spiffe://trust-domain/path`):
 * meshlet's mTLS identifies workloads by it (peers' `identity` and authorization `principals`), so
 * a workload certificate without one is refused rather than used silently without an identity
 * (`tls.requireSpiffeId: false` allows it, for encryption only).
 */
function checkSpiffeId(ids: readonly string[], dir: string, layout: TlsLayout): void {
  const file = dir === '(inline)' ? 'the certificate' : join(dir, LAYOUT_FILES[layout].cert);
  const fix = 'issue it with a URI SAN spiffe://trust-domain/path, or set tls.requireSpiffeId: false';
  if (ids.length === 0)
    throw tlsError(`${file} has no SPIFFE ID (no spiffe:// URI SAN): ${fix}`, {
      dir,
      file,
      reason: 'no_spiffe_id',
    });
  if (ids.length > 1)
    throw tlsError(
      `${file} has ${ids.length} SPIFFE IDs (${ids.join(', ')}); an X.509-SVID has exactly one`,
      {
        dir,
        file,
        reason: 'several_spiffe_ids',
      },
    );
  const id = parseSpiffeId(ids[0] as string);
  if (id === undefined || id.path === '')
    throw tlsError(`${file} has an invalid workload SPIFFE ID ${JSON.stringify(ids[0])}: ${fix}`, {
      dir,
      file,
      reason: 'invalid_spiffe_id',
    });
}
