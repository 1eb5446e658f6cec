import { afterEach, describe, expect, it } from 'vitest';
import { createMesh, ErrorCodes } from '../../packages/meshlet/src/index.js';
import { opensslCa, opensslLeaf, tempDir, writePlainDir } from '../../packages/tls/test/helpers.js';

let cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});

describe('createMesh refuses bad input at the edge with coded errors', () => {
  it('a workload certificate without a SPIFFE ID; requireSpiffeId: false accepts it for encryption only', async () => {
    const work = tempDir();
    cleanups.push(work.cleanup);
    const ca = opensslCa(work.dir, 'ca');
    const leaf = opensslLeaf(ca, 'leaf', { dns: ['reviews.default.svc'] });
    const out = tempDir();
    cleanups.push(out.cleanup);
    const dir = writePlainDir(out.dir, { cert: leaf.cert, key: leaf.key, ca: ca.cert });
    await expect(createMesh({ tls: { dir, watch: false } })).rejects.toMatchObject({
      code: ErrorCodes.TLS,
      message: expect.stringContaining(`${dir}/tls.crt has no SPIFFE ID`),
    });
    const m = await createMesh({ tls: { dir, watch: false, requireSpiffeId: false } });
    cleanups.push(() => m.close());
    expect(m.snapshot()).toBeDefined();
  });
});
