import { ErrorCodes, isMeshErrorCode } from '@meshlet/core';
import { afterEach, describe, expect, it } from 'vitest';
import { CertificateSource } from '../src/index.js';
import { opensslCa, opensslLeaf, tempDir, writePlainDir } from './helpers.js';

let cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});

function certDir(opts: { spiffeId?: string; dns?: string[] }): string {
  const { dir, cleanup } = tempDir();
  cleanups.push(cleanup);
  const ca = opensslCa(dir, 'ca');
  const leaf = opensslLeaf(ca, 'leaf', opts);
  const out = tempDir();
  cleanups.push(out.cleanup);
  return writePlainDir(out.dir, { cert: leaf.cert, key: leaf.key, ca: ca.cert });
}

describe('a workload certificate must carry a SPIFFE ID', () => {
  it('a certificate whose SAN has no SPIFFE URI is MESHLET_ERR_TLS naming the file', () => {
    const dir = certDir({ dns: ['reviews.default.svc'] });
    let err: unknown;
    try {
      new CertificateSource({ dir, watch: false });
    } catch (e) {
      err = e;
    }
    expect(isMeshErrorCode(err, ErrorCodes.TLS)).toBe(true);
    expect((err as Error).message).toContain(`${dir}/tls.crt has no SPIFFE ID`);
    expect((err as { details: { reason: string } }).details.reason).toBe('no_spiffe_id');
  });

  it('a trust-domain-only ID (no workload path) is refused; a workload ID is accepted', () => {
    expect(
      () => new CertificateSource({ dir: certDir({ spiffeId: 'spiffe://example.org' }), watch: false }),
    ).toThrow(/invalid workload SPIFFE ID "spiffe:\/\/example.org"/);
    const ok = new CertificateSource({
      dir: certDir({ spiffeId: 'spiffe://example.org/ns/a/sa/b' }),
      watch: false,
    });
    cleanups.push(() => ok.close());
    expect(ok.current.spiffeId).toBe('spiffe://example.org/ns/a/sa/b');
  });
});
