import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { issueWorkloadCertificate, writeCertDirectory } from '../src/index.js';

/** A temporary directory removed by the returned cleanup. */
export function tempDir(prefix = 'meshlet-tls-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * A temporary Kubernetes-layout certificate directory holding a workload certificate for
 * `spiffeId` issued by `ca` (meshlet's own CA code); `cleanups` gets its removal.
 */
export async function issuedWorkloadDir(
  ca: { cert: string; key: string },
  spiffeId: string,
  cleanups: Array<() => unknown>,
): Promise<string> {
  const { dir, cleanup } = tempDir('meshlet-workload-');
  cleanups.push(cleanup);
  const leaf = await issueWorkloadCertificate({ ca, spiffeId });
  await writeCertDirectory(dir, { cert: leaf.cert, key: leaf.key, ca: ca.cert });
  return dir;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

export interface OpensslCa {
  readonly dir: string;
  readonly cert: string;
  readonly key: string;
  readonly certPath: string;
  readonly keyPath: string;
}

/** A CA made by the openssl CLI (EC P-256, or RSA with `rsa: true`). */
export function opensslCa(dir: string, name: string, opts: { rsa?: boolean } = {}): OpensslCa {
  const keyPath = join(dir, `${name}.key`);
  const certPath = join(dir, `${name}.crt`);
  const keyArgs = opts.rsa
    ? ['-newkey', 'rsa:2048']
    : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];
  openssl(
    [
      'req',
      '-x509',
      ...keyArgs,
      '-nodes',
      '-keyout',
      keyPath,
      '-out',
      certPath,
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  return { dir, certPath, keyPath, cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8') };
}

export interface OpensslLeaf {
  readonly cert: string;
  readonly key: string;
  readonly certPath: string;
  readonly keyPath: string;
}

/**
 * A workload certificate signed by `ca` with the openssl CLI; `days: -1` makes an expired one.
 * `sans`: the subject alternative names as lines of an openssl `[alt]` section (`URI.1=…`,
 * `DNS.1=…`: values may hold spaces and commas), instead of `spiffeId` and `dns`.
 */
export function opensslLeaf(
  ca: OpensslCa,
  name: string,
  opts: { spiffeId?: string; days?: number; dns?: string[]; sans?: readonly string[] } = {},
): OpensslLeaf {
  const dir = ca.dir;
  const keyPath = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const certPath = join(dir, `${name}.crt`);
  const ext = join(dir, `${name}.ext`);
  openssl(
    [
      'req',
      '-new',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      keyPath,
      '-out',
      csr,
      '-subj',
      `/CN=${name}`,
    ],
    dir,
  );
  const sans = [
    ...(opts.spiffeId ? [`URI:${opts.spiffeId}`] : []),
    ...(opts.dns ?? []).map((d) => `DNS:${d}`),
  ];
  const base = 'extendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n';
  writeFileSync(
    ext,
    opts.sans !== undefined
      ? `subjectAltName=@alt\n${base}[alt]\n${opts.sans.join('\n')}\n`
      : `${sans.length ? `subjectAltName=${sans.join(',')}\n` : ''}${base}`,
  );
  openssl(
    [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca.certPath,
      '-CAkey',
      ca.keyPath,
      '-CAcreateserial',
      '-days',
      String(opts.days ?? 1),
      '-extfile',
      ext,
      '-out',
      certPath,
    ],
    dir,
  );
  return { certPath, keyPath, cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8') };
}

/** Writes a Kubernetes-layout directory (plain files, no `..data`). */
export function writePlainDir(dir: string, files: { cert: string; key: string; ca: string }): string {
  writeFileSync(join(dir, 'tls.crt'), files.cert);
  writeFileSync(join(dir, 'tls.key'), files.key);
  writeFileSync(join(dir, 'ca.crt'), files.ca);
  return dir;
}
