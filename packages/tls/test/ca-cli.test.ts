import { execFileSync } from 'node:child_process';
import { lstatSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { isMeshError } from '@meshlet/core';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import {
  CertificateSource,
  createCa,
  issueWorkloadCertificate,
  runCertsCommand,
  validateMaterial,
} from '../src/index.js';
import { tempDir } from './helpers.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

function io() {
  let out = '';
  let err = '';
  return {
    io: {
      stdout: { write: (s: string) => (out += s) },
      stderr: { write: (s: string) => (err += s) },
      cwd: tmp.dir,
      env: {},
    },
    out: () => out,
    err: () => err,
  };
}

describe('meshlet certs', () => {
  it('init, issue and rotate produce files openssl accepts, with the SPIFFE ID as URI SAN', async () => {
    const a = io();
    expect(await runCertsCommand(['init', '--ca-dir', 'ca'], a.io)).toBe(0);
    expect(a.out()).toContain('created CA');
    const again = io();
    expect(await runCertsCommand(['init', '--ca-dir', 'ca'], again.io)).toBe(2);
    expect(again.err()).toContain('already exists');

    const b = io();
    const id = 'spiffe://cluster.local/ns/default/sa/reviews';
    expect(
      await runCertsCommand(
        [
          'issue',
          '--ca-dir',
          'ca',
          '--spiffe',
          id,
          '--out',
          'reviews',
          '--ttl',
          '1h',
          '--dns',
          'reviews.local',
        ],
        b.io,
      ),
    ).toBe(0);
    const dir = join(tmp.dir, 'reviews');
    expect(lstatSync(join(dir, '..data')).isSymbolicLink()).toBe(true);
    expect(readlinkSync(join(dir, 'tls.crt'))).toBe(join('..data', 'tls.crt'));
    const text = execFileSync('openssl', ['x509', '-in', join(dir, 'tls.crt'), '-noout', '-text'], {
      encoding: 'utf8',
    });
    expect(text).toContain(`URI:${id}`);
    expect(text).toContain('DNS:reviews.local');
    expect(text).toMatch(/TLS Web Server Authentication, TLS Web Client Authentication/);
    const verify = execFileSync('openssl', ['verify', '-CAfile', join(dir, 'ca.crt'), join(dir, 'tls.crt')], {
      encoding: 'utf8',
    });
    expect(verify).toContain(': OK');
    // openssl can use the key too.
    execFileSync('openssl', ['pkey', '-in', join(dir, 'tls.key'), '-noout']);

    const src = new CertificateSource({ dir, watch: false });
    const before = src.current.serialNumber;
    expect(src.current.notAfter.getTime() - src.current.notBefore.getTime()).toBe(3_600_000);
    const c = io();
    expect(await runCertsCommand(['rotate', 'reviews', '--ca-dir', 'ca'], c.io)).toBe(0);
    await src.reload();
    expect(src.current.serialNumber).not.toBe(before);
    expect(src.current.spiffeId).toBe(id);
    expect(readFileSync(join(dir, 'ca.crt'), 'utf8')).toBe(
      readFileSync(join(tmp.dir, 'ca', 'ca.crt'), 'utf8'),
    );
  });

  it('writes the SPIFFE layout on request', async () => {
    const r = io();
    expect(
      await runCertsCommand(
        ['issue', '--ca-dir', 'ca', '--spiffe', 'spiffe://td/x', '--out', 'svid', '--layout', 'spiffe'],
        r.io,
      ),
    ).toBe(0);
    expect(new CertificateSource({ dir: join(tmp.dir, 'svid'), watch: false }).current.layout).toBe('spiffe');
  });

  it('reports usage errors with exit code 2', async () => {
    for (const argv of [
      [],
      ['issue', '--spiffe', 'http://x', '--out', 'o'],
      ['issue', '--spiffe', 'spiffe://td/x'],
      ['issue', '--ca-dir', 'nowhere', '--spiffe', 'spiffe://td/x', '--out', 'o'],
      ['rotate'],
      ['frob'],
      ['init', '--ttl', 'forever'],
      ['init', '--bogus'],
    ]) {
      const r = io();
      expect(await runCertsCommand(argv, r.io)).toBe(2);
    }
  });
});

describe('development CA', () => {
  it('signs with RSA CAs made elsewhere and refuses non-workload IDs', async () => {
    const dir = tempDir();
    try {
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'rsa:2048',
          '-nodes',
          '-keyout',
          'ca.key',
          '-out',
          'ca.crt',
          '-days',
          '1',
          '-subj',
          '/CN=rsa',
          '-addext',
          'basicConstraints=critical,CA:TRUE',
          '-addext',
          'keyUsage=critical,keyCertSign',
        ],
        { cwd: dir.dir, stdio: 'ignore' },
      );
      const ca = {
        cert: readFileSync(join(dir.dir, 'ca.crt'), 'utf8'),
        key: readFileSync(join(dir.dir, 'ca.key'), 'utf8'),
      };
      const leaf = await issueWorkloadCertificate({ ca, spiffeId: 'spiffe://td/ns/a/sa/b' });
      expect(validateMaterial({ ...leaf, ca: ca.cert }).spiffeId).toBe('spiffe://td/ns/a/sa/b');
      await expect(issueWorkloadCertificate({ ca, spiffeId: 'spiffe://td' })).rejects.toMatchObject({
        code: 'MESHLET_ERR_TLS',
      });
    } finally {
      dir.cleanup();
    }
  });

  it('certificate parsing never crashes on malformed input: only MESHLET_ERR_TLS (property-based)', async () => {
    const ca = await createCa();
    const leaf = await issueWorkloadCertificate({ ca, spiffeId: 'spiffe://td/w' });
    const mutate = (pem: string) =>
      fc
        .tuple(fc.nat({ max: pem.length - 1 }), fc.nat({ max: 64 }), fc.string({ maxLength: 8 }))
        .map(([at, del, ins]) => pem.slice(0, at) + ins + pem.slice(at + del));
    const text = fc.oneof(
      fc.string(),
      mutate(leaf.cert),
      mutate(ca.cert),
      fc.constant(''),
      fc.constant('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----'),
    );
    const key = fc.oneof(fc.string(), mutate(leaf.key), fc.constant(leaf.key));
    fc.assert(
      fc.property(text, key, text, (cert, k, bundle) => {
        try {
          validateMaterial({ cert, key: k, ca: bundle });
        } catch (err) {
          expect(isMeshError(err) && err.code === 'MESHLET_ERR_TLS').toBe(true);
        }
      }),
      { numRuns: 300 },
    );
  });
});
