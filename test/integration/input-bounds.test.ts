import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeApiServer } from '../../packages/kubernetes/test/fake-apiserver.js';
import { createMesh, ErrorCodes } from '../../packages/meshlet/src/index.js';
import { opensslCa, opensslLeaf, tempDir, writePlainDir } from '../../packages/tls/test/helpers.js';

let cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});

/** Nine levels of nine aliases each: 9^9 nodes once expanded. */
const ALIAS_BOMB = [
  'a: &a ["x","x","x","x","x","x","x","x","x"]',
  ...'bcdefghi'.split('').map((c, i) => `${c}: &${c} [${Array(9).fill(`*${'abcdefghi'[i]}`).join(',')}]`),
  '',
].join('\n');

describe('createMesh refuses bad input at the edge with coded errors', () => {
  it('a YAML alias bomb in a config file is MESHLET_ERR_CONFIG naming the file, not a raw ReferenceError', async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const file = join(t.dir, 'mesh.yaml');
    writeFileSync(file, `services: {}\n${ALIAS_BOMB}`);
    const err = await createMesh(file).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCodes.CONFIG, details: { source: file } });
    expect((err as Error).message).toMatch(/cannot be loaded: .*alias/i);
  });

  it('a YAML alias bomb in a kubeconfig is a coded error naming the file', async () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const file = join(t.dir, 'kubeconfig');
    writeFileSync(file, `apiVersion: v1\nkind: Config\n${ALIAS_BOMB}`);
    const err = await createMesh({ kubernetes: { kubeconfig: file, inCluster: false } }).catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: ErrorCodes.DISCOVERY });
    expect((err as Error).message).toContain(file);
    expect((err as Error).message).toMatch(/alias/i);
  });

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

describe('unknown Kubernetes names through createMesh', () => {
  it('100 unknown *.svc.cluster.local names: runtimes, watches and metric series are closed when idle', async () => {
    const api = await new FakeApiServer().start();
    cleanups.push(() => api.stop());
    let now = 0;
    const registry = new Registry();
    const mesh = await createMesh(
      {
        idleServiceTimeout: '1m',
        kubernetes: {
          apiServer: api.url,
          inCluster: false,
          namespace: 'default',
          maxRequestsPerSecond: 1000,
        },
      },
      { telemetry: { registry }, now: () => now, env: {} },
    );
    cleanups.push(() => mesh.close());
    const results = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        mesh.fetch(`http://nope-${i}.default.svc.cluster.local:8080/`).then(
          (r) => r.status,
          (e: Error) => (e.cause as { code?: string } | undefined)?.code,
        ),
      ),
    );
    expect(new Set(results)).toEqual(new Set(['MESHLET_ERR_NO_HEALTHY_ENDPOINT']));
    const series = async () =>
      (await registry.metrics()).split('\n').filter((l) => l.startsWith('meshlet_endpoints{')).length;
    expect(await series()).toBe(100 * 6);
    now += 61_000;
    expect(mesh.sweepIdle()).toBe(100);
    expect(mesh.services()).toEqual([]);
    const k8s = mesh.snapshot().extensions.kubernetes as { watches: object };
    expect(Object.keys(k8s.watches)).toEqual([]);
    expect(await series()).toBe(0);
  });
});
