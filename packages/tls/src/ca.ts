import { createPrivateKey, X509Certificate as NodeX509, randomBytes, webcrypto } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCodes, MeshError } from '@meshlet/core';
import type * as X509 from '@peculiar/x509';
import { detectLayout, LAYOUT_FILES, type TlsLayout } from './material.js';
import { parseSpiffeId, spiffeIdOf } from './pem.js';

type X509Crypto = NonNullable<Parameters<typeof X509.X509CertificateGenerator.createSelfSigned>[1]>;

let x509Module: Promise<typeof X509> | undefined;
/**
 * @peculiar/x509 needs a Reflect metadata polyfill; it is loaded (with the polyfill) only when a
 * development-CA function is first called, so importing @meshlet/tls has no global side effect.
 */
function loadX509(): Promise<typeof X509> {
  x509Module ??= import('reflect-metadata').then(() => import('@peculiar/x509'));
  return x509Module;
}
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
type SignAlg = webcrypto.Algorithm | webcrypto.EcdsaParams;
const crypto = webcrypto;
const x509Crypto = webcrypto as unknown as X509Crypto;
const EC_ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };

/** A PEM certificate and its PKCS#8 PEM private key. */
export interface PemPair {
  readonly cert: string;
  readonly key: string;
}

export interface CreateCaOptions {
  /** Subject common name (default `meshlet development CA`). */
  commonName?: string;
  /** Lifetime in ms (default 365 days). */
  ttlMs?: number;
  /** Start of validity (default now minus one minute, for clock skew). */
  notBefore?: Date;
}

export interface IssueOptions {
  /** The issuing CA. */
  ca: PemPair;
  /** The workload's SPIFFE ID, written as the URI SAN (`spiffe://cluster.local/ns/default/sa/reviews`). */
  spiffeId: string;
  /** Extra DNS SANs. */
  dnsNames?: readonly string[];
  /** Lifetime in ms (default 24 hours; short-lived, like Istio's workload certificates). */
  ttlMs?: number;
  notBefore?: Date;
}

function toPem(der: ArrayBuffer, label: string): string {
  const b64 = Buffer.from(der).toString('base64');
  return `-----BEGIN ${label}-----\n${b64.replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END ${label}-----\n`;
}

async function generateKeys(): Promise<CryptoKeyPair> {
  return (await crypto.subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function exportKey(key: CryptoKey): Promise<string> {
  return toPem(await crypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

/** Imports any PEM private key Node can read (PKCS#8, SEC1 EC, PKCS#1 RSA) for signing. */
async function importSigningKey(pem: string): Promise<{ key: CryptoKey; alg: SignAlg }> {
  let ko: ReturnType<typeof createPrivateKey>;
  try {
    ko = createPrivateKey(pem);
  } catch (err) {
    throw new MeshError(
      ErrorCodes.TLS,
      `the CA key cannot be read: ${(err as Error).message}`,
      { reason: 'malformed_key' },
      { cause: err },
    );
  }
  const der = ko.export({ type: 'pkcs8', format: 'der' });
  if (ko.asymmetricKeyType === 'ec') {
    const curve = ko.asymmetricKeyDetails?.namedCurve;
    const namedCurve = curve === 'secp384r1' ? 'P-384' : curve === 'secp521r1' ? 'P-521' : 'P-256';
    const hash = namedCurve === 'P-384' ? 'SHA-384' : namedCurve === 'P-521' ? 'SHA-512' : 'SHA-256';
    const key = await crypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve }, false, ['sign']);
    return { key, alg: { name: 'ECDSA', hash } as SignAlg };
  }
  if (ko.asymmetricKeyType === 'rsa') {
    const alg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
    const key = await crypto.subtle.importKey('pkcs8', der, alg, false, ['sign']);
    return { key, alg };
  }
  throw new MeshError(
    ErrorCodes.TLS,
    `CA keys of type ${ko.asymmetricKeyType} are not supported (use EC or RSA)`,
    {
      reason: 'unsupported_key',
    },
  );
}

function withNewline(pem: string): string {
  return pem.endsWith('\n') ? pem : `${pem}\n`;
}

function serial(): string {
  const b = randomBytes(16);
  b[0] = (b[0] as number) & 0x7f; // positive
  return b.toString('hex');
}

function validity(notBefore: Date | undefined, ttlMs: number): { notBefore: Date; notAfter: Date } {
  const nb = notBefore ?? new Date(Date.now() - 60_000);
  return { notBefore: nb, notAfter: new Date(nb.getTime() + ttlMs) };
}

/** Creates a self-signed development CA (EC P-256). */
export async function createCa(options: CreateCaOptions = {}): Promise<PemPair> {
  const x509 = await loadX509();
  const keys = await generateKeys();
  const name = `CN=${options.commonName ?? 'meshlet development CA'}, O=meshlet`;
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: serial(),
      name,
      ...validity(options.notBefore, options.ttlMs ?? 365 * 86_400_000),
      signingAlgorithm: EC_ALG,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as never, false, x509Crypto),
      ],
    },
    x509Crypto,
  );
  return { cert: withNewline(cert.toString('pem')), key: await exportKey(keys.privateKey) };
}

/** Issues a workload certificate with a SPIFFE URI SAN, signed by `ca` (usable as server and client). */
export async function issueWorkloadCertificate(options: IssueOptions): Promise<PemPair> {
  if (!parseSpiffeId(options.spiffeId) || parseSpiffeId(options.spiffeId)?.path === '') {
    throw new MeshError(
      ErrorCodes.TLS,
      `"${options.spiffeId}" is not a workload SPIFFE ID (spiffe://trust-domain/path)`,
      {
        reason: 'invalid_spiffe_id',
      },
    );
  }
  const x509 = await loadX509();
  const caCert = new x509.X509Certificate(options.ca.cert);
  const { key: signingKey, alg } = await importSigningKey(options.ca.key);
  const keys = await generateKeys();
  const sans: { type: 'url' | 'dns'; value: string }[] = [{ type: 'url', value: options.spiffeId }];
  for (const d of options.dnsNames ?? []) sans.push({ type: 'dns', value: d });
  const cn = options.spiffeId.split('/').pop() ?? 'workload';
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: serial(),
      subject: `CN=${cn}, O=meshlet`,
      issuer: caCert.subject,
      ...validity(options.notBefore, options.ttlMs ?? 86_400_000),
      signingAlgorithm: alg,
      publicKey: keys.publicKey,
      signingKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
          true,
        ),
        new x509.ExtendedKeyUsageExtension(
          [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
          false,
        ),
        new x509.SubjectAlternativeNameExtension(sans, true),
        await x509.AuthorityKeyIdentifierExtension.create(caCert, false, x509Crypto),
      ],
    },
    x509Crypto,
  );
  return { cert: withNewline(cert.toString('pem')), key: await exportKey(keys.privateKey) };
}

export interface CertFiles {
  readonly cert: string;
  readonly key: string;
  /** The trust bundle (one CA, or old and new CAs during a rollover). */
  readonly ca: string;
}

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * Writes certificate files the way Kubernetes' atomic writer does: into a new hidden generation
 * directory, then swaps the `..data` symlink to it in one `rename`, so a reader sees either the
 * old or the new set, never a mix. The visible names (`tls.crt`, …) are symlinks through `..data`.
 * Older generations are removed.
 */
export async function writeCertDirectory(
  dir: string,
  files: CertFiles,
  layout: TlsLayout = 'kubernetes',
): Promise<void> {
  await mkdir(dir, { recursive: true });
  const names = LAYOUT_FILES[layout];
  const gen = `..${new Date().toISOString().replace(/[:.]/g, '_')}.${randomBytes(4).toString('hex')}`;
  const genPath = join(dir, gen);
  await mkdir(genPath, { mode: 0o755 });
  await writeFile(join(genPath, names.cert), files.cert, { mode: 0o644 });
  await writeFile(join(genPath, names.key), files.key, { mode: 0o600 });
  await writeFile(join(genPath, names.ca), files.ca, { mode: 0o644 });
  const tmp = join(dir, '..data_tmp');
  await rm(tmp, { force: true });
  await symlink(gen, tmp);
  await rename(tmp, join(dir, '..data'));
  for (const name of [names.cert, names.key, names.ca]) {
    const link = join(dir, name);
    if (!(await exists(link))) await symlink(join('..data', name), link);
  }
  for (const entry of await readdir(dir)) {
    if (entry.startsWith('..') && entry !== gen && entry !== '..data' && entry !== '..data_tmp') {
      await rm(join(dir, entry), { recursive: true, force: true });
    }
  }
}

export interface RotateOptions {
  /** The issuing CA. */
  ca: PemPair;
  /** The trust bundle to write (default: the CA certificate). */
  bundle?: string;
  ttlMs?: number;
  /** SPIFFE ID of the new certificate (default: the one of the current certificate). */
  spiffeId?: string;
}

/** Issues a new certificate for the workload whose files are in `dir` and swaps it in atomically. */
export async function rotateCertDirectory(dir: string, options: RotateOptions): Promise<PemPair> {
  const layout: TlsLayout = detectLayout(dir) ?? 'kubernetes';
  let spiffeId = options.spiffeId;
  if (!spiffeId) {
    const current = await readFile(join(dir, LAYOUT_FILES[layout].cert), 'utf8');
    spiffeId = spiffeIdOf({ subjectAltName: new NodeX509(current).subjectAltName });
    if (!spiffeId) {
      throw new MeshError(ErrorCodes.TLS, `the certificate in ${dir} has no SPIFFE ID; give one`, {
        dir,
        reason: 'no_spiffe_id',
      });
    }
  }
  const issued = await issueWorkloadCertificate({
    ca: options.ca,
    spiffeId,
    ...(options.ttlMs ? { ttlMs: options.ttlMs } : {}),
  });
  await writeCertDirectory(dir, { ...issued, ca: options.bundle ?? options.ca.cert }, layout);
  return issued;
}
