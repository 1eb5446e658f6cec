import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { isMeshError } from '@meshlet/core';
import {
  createCa,
  issueWorkloadCertificate,
  type PemPair,
  rotateCertDirectory,
  writeCertDirectory,
} from './ca.js';
import { TLS_LAYOUTS, type TlsLayout } from './material.js';
import { parseSpiffeId } from './pem.js';

/** Streams and environment for `runCertsCommand` (structurally the CLI's `CliIo`). */
export interface CertsIo {
  readonly stdout: { write(s: string): unknown };
  readonly stderr: { write(s: string): unknown };
  readonly cwd?: string | undefined;
  readonly env?: NodeJS.ProcessEnv | undefined;
}

export const CERTS_USAGE = `Usage: meshlet certs <init|issue|rotate> [options]

Development certificates with SPIFFE identities (never use the development CA in production).

  meshlet certs init [--ca-dir DIR] [--ttl 8760h] [--force]
      Creates a CA (ca.crt, ca.key) in DIR (default: $MESHLET_CA_DIR or .meshlet/ca).
  meshlet certs issue --spiffe spiffe://cluster.local/ns/default/sa/reviews --out DIR
                      [--ca-dir DIR] [--ttl 24h] [--dns NAME]... [--layout kubernetes|spiffe]
      Issues a workload key and certificate with the SPIFFE ID as URI SAN and writes tls.crt,
      tls.key and ca.crt (or svid.pem, svid_key.pem, bundle.pem with --layout spiffe, or
      cert-chain.pem, key.pem, root-cert.pem with --layout istio) into DIR, atomically (..data).
  meshlet certs rotate DIR [--ca-dir DIR] [--ttl 24h]
      Issues a fresh certificate for the same SPIFFE ID and swaps it into DIR atomically.
`;

class CertsUsageError extends Error {}

function ttlOf(raw: string | undefined, def: number): number {
  if (raw === undefined) return def;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(raw.trim());
  if (!m) throw new CertsUsageError(`--ttl must be a duration such as 90s, 30m, 24h or 365d, got "${raw}"`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'ms'] as number;
  const ms = Number(m[1]) * unit;
  if (ms <= 0) throw new CertsUsageError('--ttl must be positive');
  return ms;
}

async function fileExists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

async function loadCa(caDir: string): Promise<PemPair> {
  try {
    return {
      cert: await readFile(join(caDir, 'ca.crt'), 'utf8'),
      key: await readFile(join(caDir, 'ca.key'), 'utf8'),
    };
  } catch {
    throw new CertsUsageError(
      `no CA in ${caDir} (ca.crt, ca.key): run \`meshlet certs init\` first or pass --ca-dir`,
    );
  }
}

/**
 * `meshlet certs …`: `argv` holds the arguments after `certs`. Resolves with the exit code
 * (0 success, 1 failure, 2 usage error); never throws.
 */
export async function runCertsCommand(argv: readonly string[], io: CertsIo): Promise<number> {
  const cwd = io.cwd ?? process.cwd();
  const env = io.env ?? process.env;
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(cwd, p));
  const [sub, ...rest] = argv;
  try {
    const { values, positionals } = parseArgs({
      args: rest,
      allowPositionals: true,
      options: {
        'ca-dir': { type: 'string' },
        ttl: { type: 'string' },
        force: { type: 'boolean' },
        spiffe: { type: 'string' },
        out: { type: 'string' },
        dns: { type: 'string', multiple: true },
        layout: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (sub === undefined || sub === 'help' || values.help) {
      io.stdout.write(CERTS_USAGE);
      return sub === undefined ? 2 : 0;
    }
    const caDir = abs(values['ca-dir'] ?? env.MESHLET_CA_DIR ?? join('.meshlet', 'ca'));
    switch (sub) {
      case 'init': {
        if (!values.force && (await fileExists(join(caDir, 'ca.crt')))) {
          throw new CertsUsageError(`a CA already exists in ${caDir} (use --force to replace it)`);
        }
        const ca = await createCa({ ttlMs: ttlOf(values.ttl, 365 * 86_400_000) });
        await mkdir(caDir, { recursive: true, mode: 0o700 });
        await writeFile(join(caDir, 'ca.crt'), ca.cert, { mode: 0o644 });
        await writeFile(join(caDir, 'ca.key'), ca.key, { mode: 0o600 });
        const c = new X509Certificate(ca.cert);
        io.stdout.write(
          `created CA in ${caDir}\n  subject  ${c.subject.replace(/\n/g, ', ')}\n  expires  ${new Date(c.validTo).toISOString()}\n`,
        );
        return 0;
      }
      case 'issue': {
        const spiffe = values.spiffe;
        if (!spiffe || !parseSpiffeId(spiffe) || parseSpiffeId(spiffe)?.path === '') {
          throw new CertsUsageError(
            `--spiffe must be a workload SPIFFE ID such as spiffe://cluster.local/ns/default/sa/reviews, got ${spiffe === undefined ? 'nothing' : `"${spiffe}"`}`,
          );
        }
        if (!values.out) throw new CertsUsageError('--out DIR is required');
        const layout = (values.layout ?? 'kubernetes') as TlsLayout;
        if (!TLS_LAYOUTS.includes(layout)) {
          throw new CertsUsageError(
            `--layout must be one of ${TLS_LAYOUTS.join(', ')}, got "${values.layout}"`,
          );
        }
        const ca = await loadCa(caDir);
        const issued = await issueWorkloadCertificate({
          ca,
          spiffeId: spiffe,
          ttlMs: ttlOf(values.ttl, 86_400_000),
          ...(values.dns ? { dnsNames: values.dns } : {}),
        });
        const out = abs(values.out);
        await writeCertDirectory(out, { ...issued, ca: ca.cert }, layout);
        const c = new X509Certificate(issued.cert);
        io.stdout.write(`issued ${spiffe} into ${out}\n  expires  ${new Date(c.validTo).toISOString()}\n`);
        return 0;
      }
      case 'rotate': {
        const dir = positionals[0];
        if (!dir)
          throw new CertsUsageError('rotate needs the certificate directory: meshlet certs rotate DIR');
        const ca = await loadCa(caDir);
        const issued = await rotateCertDirectory(abs(dir), { ca, ttlMs: ttlOf(values.ttl, 86_400_000) });
        const c = new X509Certificate(issued.cert);
        io.stdout.write(
          `rotated ${abs(dir)}\n  serial   ${c.serialNumber}\n  expires  ${new Date(c.validTo).toISOString()}\n`,
        );
        return 0;
      }
      default:
        throw new CertsUsageError(`unknown certs command "${sub}"`);
    }
  } catch (err) {
    const usage =
      err instanceof CertsUsageError ||
      String((err as { code?: unknown })?.code).startsWith('ERR_PARSE_ARGS');
    const msg = isMeshError(err) ? `${err.code}: ${err.message}` : (err as Error).message;
    io.stderr.write(`meshlet certs: ${msg}\n${usage ? `\n${CERTS_USAGE}` : ''}`);
    return usage ? 2 : 1;
  }
}

/** The `meshlet certs` command, shaped for the CLI's command table (`registerCommand(certsCommand)`). */
export const certsCommand = {
  name: 'certs',
  summary: 'development CA and workload certificates with SPIFFE IDs (init, issue, rotate)',
  usage: CERTS_USAGE,
  run: runCertsCommand,
} as const;
