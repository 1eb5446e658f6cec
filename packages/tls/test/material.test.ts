import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isMeshErrorCode } from '@meshlet/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CertificateSource,
  createCa,
  detectLayout,
  type ExpiryEvent,
  issueWorkloadCertificate,
  matchesIdentity,
  type PemPair,
  parseSpiffeId,
  spiffeIdOf,
  validateMaterial,
  verifyPeerIdentity,
  writeCertDirectory,
} from '../src/index.js';
import { tempDir } from './helpers.js';

const ID = 'spiffe://cluster.local/ns/default/sa/reviews';
let ca: PemPair;
let other: PemPair;
let leaf: PemPair;
let tmp: ReturnType<typeof tempDir>;

beforeAll(async () => {
  tmp = tempDir();
  ca = await createCa();
  other = await createCa({ commonName: 'other' });
  leaf = await issueWorkloadCertificate({ ca, spiffeId: ID, ttlMs: 3_600_000 });
});
afterAll(() => tmp.cleanup());

function reasonOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    expect(isMeshErrorCode(err, 'MESHLET_ERR_TLS')).toBe(true);
    return (err as { details: { reason?: string } }).details.reason;
  }
  throw new Error('expected a MESHLET_ERR_TLS error');
}

describe('validateMaterial', () => {
  it('accepts a matching key, a chain to the bundle and a valid period; reads the SPIFFE ID', () => {
    const m = validateMaterial({ cert: leaf.cert, key: leaf.key, ca: ca.cert });
    expect(m.spiffeId).toBe(ID);
    expect(m.notAfter.getTime() - m.notBefore.getTime()).toBe(3_600_000);
    expect(m.caCount).toBe(1);
  });

  it('names what is wrong', () => {
    const stranger = { cert: leaf.cert, key: other.key, ca: ca.cert };
    expect(reasonOf(() => validateMaterial(stranger))).toBe('key_mismatch');
    expect(reasonOf(() => validateMaterial({ cert: leaf.cert, key: leaf.key, ca: other.cert }))).toBe(
      'untrusted_chain',
    );
    expect(
      reasonOf(() =>
        validateMaterial({ cert: leaf.cert, key: leaf.key, ca: ca.cert }, { now: Date.now() + 7_200_000 }),
      ),
    ).toBe('expired');
    expect(
      reasonOf(() =>
        validateMaterial({ cert: leaf.cert, key: leaf.key, ca: ca.cert }, { now: Date.now() - 7_200_000 }),
      ),
    ).toBe('not_yet_valid');
    expect(reasonOf(() => validateMaterial({ cert: 'nope', key: leaf.key, ca: ca.cert }))).toBe(
      'no_certificate',
    );
    expect(reasonOf(() => validateMaterial({ cert: leaf.cert, key: 'nope', ca: ca.cert }))).toBe(
      'malformed_key',
    );
    const broken = leaf.cert.replace(/\n[A-Za-z0-9+/]{10}/, '\nAAAAAAAAAA');
    expect(reasonOf(() => validateMaterial({ cert: broken, key: leaf.key, ca: ca.cert }))).toMatch(
      /malformed_certificate|key_mismatch|untrusted_chain/,
    );
  });

  it('accepts a bundle with the old and the new CA (rollover), even without a newline between blocks', () => {
    const m = validateMaterial({ cert: leaf.cert, key: leaf.key, ca: `${other.cert.trim()}${ca.cert}` });
    expect(m.caCount).toBe(2);
  });
});

describe('SPIFFE identities', () => {
  it('parses and matches exact IDs and trust domains', () => {
    expect(parseSpiffeId(ID)).toEqual({ trustDomain: 'cluster.local', path: '/ns/default/sa/reviews' });
    expect(parseSpiffeId('spiffe://Bad/x')).toBeUndefined();
    expect(parseSpiffeId('spiffe://td/a/../b')).toBeUndefined();
    expect(matchesIdentity(ID, ID)).toBe(true);
    expect(matchesIdentity(ID, `${ID}x`)).toBe(false);
    expect(matchesIdentity('spiffe://cluster.local', ID)).toBe(true);
    expect(matchesIdentity('spiffe://cluster.local/', ID)).toBe(true);
    expect(matchesIdentity('spiffe://cluster.localx', ID)).toBe(false);
    expect(matchesIdentity('spiffe://cluster.local', undefined)).toBe(false);
  });

  it('reads the URI SAN and builds coded errors', () => {
    expect(spiffeIdOf({ subjectaltname: `DNS:a.b, URI:${ID}` })).toBe(ID);
    expect(spiffeIdOf({ subjectaltname: 'DNS:a.b' })).toBeUndefined();
    expect(verifyPeerIdentity(ID, { subjectaltname: `URI:${ID}` })).toBeUndefined();
    expect(verifyPeerIdentity(undefined, undefined)).toBeUndefined();
    const err = verifyPeerIdentity(
      ID,
      { subjectaltname: 'URI:spiffe://cluster.local/ns/x/sa/y' },
      { service: 'reviews' },
    );
    expect(err?.code).toBe('MESHLET_ERR_PEER_IDENTITY');
    expect(err?.message).toContain('service "reviews"');
    expect(verifyPeerIdentity(ID, { subjectaltname: 'DNS:x' })?.details.actual).toBeUndefined();
  });
});

describe('CertificateSource', () => {
  it('detects the Kubernetes, SPIFFE and Istio layouts', async () => {
    const k = join(tmp.dir, 'k8s');
    const s = join(tmp.dir, 'spiffe');
    const i = join(tmp.dir, 'istio');
    await writeCertDirectory(k, { ...leaf, ca: ca.cert });
    await writeCertDirectory(s, { ...leaf, ca: ca.cert }, 'spiffe');
    // What the Istio agent writes for a proxyless pod (/var/lib/istio/data).
    mkdirSync(i);
    writeFileSync(join(i, 'cert-chain.pem'), leaf.cert);
    writeFileSync(join(i, 'key.pem'), leaf.key);
    writeFileSync(join(i, 'root-cert.pem'), ca.cert);
    expect(detectLayout(k)).toBe('kubernetes');
    expect(detectLayout(s)).toBe('spiffe');
    expect(detectLayout(i)).toBe('istio');
    expect(new CertificateSource({ dir: s }).current.layout).toBe('spiffe');
    const istio = new CertificateSource({ dir: i, watch: false }).current;
    expect(istio.layout).toBe('istio');
    expect(istio.spiffeId).toBe(ID);
    expect(detectLayout(tmp.dir)).toBeUndefined();
    expect(() => new CertificateSource({ dir: join(tmp.dir, 'missing') })).toThrow(/no certificates/);
  });

  it('rotates on reload, keeps the last good material on a bad write, and reports both', async () => {
    const dir = join(tmp.dir, 'rot');
    await writeCertDirectory(dir, { ...leaf, ca: ca.cert });
    const src = new CertificateSource({ dir, watch: false, pollIntervalMs: 0 });
    const events: string[] = [];
    src.on('rotate', (e) => events.push(`rotate ${e.current.serialNumber === e.previous.serialNumber}`));
    src.on('reject', (e) =>
      events.push(`reject ${(e.error as { details?: { reason?: string } }).details?.reason}`),
    );
    const first = src.current.serialNumber;
    await src.reload(); // unchanged: nothing
    const next = await issueWorkloadCertificate({ ca, spiffeId: ID });
    await writeCertDirectory(dir, { ...next, ca: ca.cert });
    await src.reload();
    const second = src.current.serialNumber;
    expect(second).not.toBe(first);
    await writeCertDirectory(dir, { cert: next.cert, key: leaf.key, ca: ca.cert }); // key from another cert
    await src.reload();
    await src.reload(); // the same bad files: reported once
    expect(src.current.serialNumber).toBe(second);
    expect(events).toEqual(['rotate false', 'reject key_mismatch']);
    const st = src.status();
    expect(st).toMatchObject({ rotations: 1, rejections: 1, spiffeId: ID });
    expect(st.lastError).toMatch(/does not match/);
    src.close();
  });

  it('reads one consistent generation through ..data', async () => {
    const dir = join(tmp.dir, 'gen');
    await writeCertDirectory(dir, { ...leaf, ca: ca.cert });
    // Simulate a torn state where the top-level names are stale but ..data is new.
    const gen = join(dir, '..manual');
    mkdirSync(gen);
    const next = await issueWorkloadCertificate({ ca, spiffeId: ID });
    writeFileSync(join(gen, 'tls.crt'), next.cert);
    writeFileSync(join(gen, 'tls.key'), next.key);
    writeFileSync(join(gen, 'ca.crt'), ca.cert);
    rmSync(join(dir, '..data'));
    symlinkSync('..manual', join(dir, '..data'));
    const src = new CertificateSource({ dir, watch: false });
    expect(src.current.fingerprint256).not.toBe('');
    expect(src.current.cert).toBe(next.cert);
  });

  it('warns before expiry (once per certificate) through the expiring event', async () => {
    const dir = join(tmp.dir, 'exp');
    await writeCertDirectory(dir, { ...leaf, ca: ca.cert });
    let now = Date.now();
    const src = new CertificateSource({
      dir,
      watch: false,
      pollIntervalMs: 0,
      warnBeforeMs: 600_000,
      now: () => now,
    });
    const seen: ExpiryEvent[] = [];
    src.on('expiring', (e) => seen.push(e));
    now = src.expiresAt.getTime() - 60_000;
    src.start();
    expect(seen).toHaveLength(1);
    expect(seen[0]?.remainingMs).toBe(60_000);
    expect(src.status().expiresInSeconds).toBe(60);
    src.close();
  });
});
