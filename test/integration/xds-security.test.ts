/**
 * xDS-managed client security (gRFC A29) and load reporting, end to end with real TLS: a bare
 * `createMesh()` with istio-agent's gRPC bootstrap (its `default` file_watcher certificate
 * provider, paths rewritten to temporary files) and meshlet's control plane serving Clusters in
 * the shape istiod's proxyless generator builds (pilot/pkg/networking/grpcgen: cds.go `applyTLS`
 * and grpcgen.go `buildCommonTLSContext`: an UpstreamTlsContext naming provider instance `default`
 * with certificate names `default` / `ROOTCA`, in the current and the deprecated fields, exact SAN
 * matchers), and Istio's auto-mTLS (transport_socket_matches on `tlsMode: istio`, a raw_buffer
 * socket for the rest, as the sidecar cluster builder emits it).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import {
  parseControlPlaneConfig,
  resourcesFromConfig,
  startControlPlane,
} from '../../packages/control-plane/src/index.js';
import { meshClientOptions } from '../../packages/grpc/src/index.js';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';
import { createCa, getMeshTls } from '../../packages/tls/src/index.js';
import { startNamed, until } from './xds/helpers.js';
import {
  istioAgentBootstrap,
  mtlsGrpcServer,
  mtlsHttpServer,
  TD,
  who,
  writeIstioCerts,
} from './xds/security-helpers.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function certDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-istio-certs-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Fetches http://reviews/ until its mTLS endpoint answered (the split between endpoints is random). */
async function viaMtls(w: { mesh: Mesh; reviews: { seen: unknown[] } }): Promise<void> {
  const before = w.reviews.seen.length;
  for (let i = 0; i < 100 && w.reviews.seen.length === before; i++)
    await (await w.mesh.fetch('http://reviews/')).text();
  expect(w.reviews.seen.length).toBe(before + 1);
}

async function failure(p: Promise<unknown>): Promise<{ code?: string; message?: string; details?: unknown }> {
  try {
    await p;
  } catch (err) {
    const e = err as { code?: string; cause?: { code?: string } };
    return e.code?.startsWith('MESHLET_') ? (e as never) : ((e.cause ?? e) as never);
  }
  throw new Error('expected a failure');
}

/** The world of one test: a CA, servers, a control plane and a mesh made from the bootstrap alone. */
async function world(options: { loadReporting?: boolean } = {}) {
  const ca = await createCa();
  const dir = certDir();
  const firstSerial = await writeIstioCerts(dir, ca, `${TD}/frontend`);
  const reviews = await mtlsHttpServer(ca, 'reviews-mtls', `${TD}/reviews`, cleanups);
  const plain = await startNamed('reviews-plain');
  cleanups.push(() => plain.close());
  const ratings = await mtlsGrpcServer(ca, 'ratings', `${TD}/ratings`, cleanups);
  const cp = await startControlPlane({
    config: {
      ...(options.loadReporting ? { loadReporting: { interval: '200ms' } } : {}),
      services: {
        // Auto-mTLS: the sidecar-injected endpoint (tlsMode: istio) gets mTLS, the other plaintext.
        reviews: {
          tlsMode: 'AUTO',
          identity: `${TD}/reviews`,
          endpoints: [
            { address: '127.0.0.1', port: reviews.port, metadata: { tlsMode: 'istio' }, zone: 'z1' },
            { address: '127.0.0.1', port: plain.port, zone: 'z2' },
          ],
        },
        // ISTIO_MUTUAL, as grpcgen builds it.
        ratings: { identity: `${TD}/ratings`, endpoints: [`127.0.0.1:${ratings.port}`] },
        // Servers whose identity the SAN matchers do not accept.
        'impostor-http': { identity: `${TD}/ratings`, endpoints: [`127.0.0.1:${reviews.port}`] },
        'impostor-grpc': { identity: `${TD}/reviews`, endpoints: [`127.0.0.1:${ratings.port}`] },
      },
    },
  });
  cleanups.push(() => cp.close());
  const logs: string[] = [];
  const mesh = await createMesh(
    {},
    { env: { GRPC_XDS_BOOTSTRAP_CONFIG: istioAgentBootstrap(cp.address, dir) } },
  );
  cleanups.push(() => mesh.close());
  mesh.events.on('log', (e) => logs.push(`${e.level} ${e.scope} ${e.message}`));
  return { ca, dir, firstSerial, reviews, plain, ratings, cp, mesh, logs };
}

describe('xDS security from the bootstrap and the control plane (Istio shape)', () => {
  it('the bootstrap’s default provider is the mesh’s certificate: auto-mTLS to tlsMode: istio, plaintext to the rest', async () => {
    const w = await world();
    expect(getMeshTls(w.mesh)?.meshSource?.current.spiffeId).toBe(`${TD}/frontend`);
    // The two endpoints are in two localities of equal weight: traffic splits at random.
    const answers: string[] = [];
    for (let i = 0; i < 20; i++) answers.push(await (await w.mesh.fetch('http://reviews/')).text());
    const mtls = answers.filter((a) => a === 'reviews-mtls').length;
    expect(mtls).toBeGreaterThan(0);
    expect(answers.filter((a) => a === 'reviews-plain')).toHaveLength(20 - mtls);
    // The mTLS endpoint saw our workload certificate, from the provider's files; the other, plaintext.
    expect(w.reviews.seen.map((s) => s.principal)).toEqual(Array(mtls).fill(`${TD}/frontend`));
    expect(w.plain.hits).toBe(20 - mtls);
  });

  it('gRPC on mesh:///NAME does mTLS with the provider’s certificate', async () => {
    const w = await world();
    const client = new grpc.Client(
      'mesh:///ratings',
      grpc.credentials.createInsecure(),
      meshClientOptions('mesh:///ratings'),
    );
    cleanups.push(() => client.close());
    expect(await who(client)).toBe('ratings');
    expect(w.ratings.callers).toEqual([`${TD}/frontend`]);
  });

  it('a server the SAN matchers do not accept is refused: fetch MESHLET_ERR_PEER_IDENTITY, gRPC UNAVAILABLE', async () => {
    const w = await world();
    const err = await failure(w.mesh.fetch('http://impostor-http/'));
    expect(err.code).toBe('MESHLET_ERR_PEER_IDENTITY');
    expect(err.message).toContain(`URI:${TD}/reviews`);
    expect(err.message).toContain(`exact "${TD}/ratings"`);
    expect(w.reviews.seen).toHaveLength(0); // no request reached it, in TLS or in plaintext
    const client = new grpc.Client(
      'mesh:///impostor-grpc',
      grpc.credentials.createInsecure(),
      meshClientOptions('mesh:///impostor-grpc', { retry: false }),
    );
    cleanups.push(() => client.close());
    const e = (await who(client).catch((x: unknown) => x)) as grpc.ServiceError;
    expect(e.code).toBe(grpc.status.UNAVAILABLE);
    expect(e.details).toContain('MESHLET_ERR_PEER_IDENTITY');
    expect(w.ratings.callers).toHaveLength(0);
  });

  it('rotated provider files: new handshakes use the new certificate; corrupted ones: the last good is kept, logged', async () => {
    const w = await world();
    await viaMtls(w);
    expect(w.reviews.seen.at(-1)?.serial).toBe(w.firstSerial);
    const source = getMeshTls(w.mesh)?.provider('default');
    const next = await writeIstioCerts(w.dir, w.ca, `${TD}/frontend`);
    await source?.reload();
    expect(source?.current.serialNumber).toBe(next);
    await viaMtls(w);
    expect(w.reviews.seen.at(-1)?.serial).toBe(next);
    // Corrupted: kept, and said.
    writeFileSync(join(w.dir, 'cert-chain.pem'), 'not a certificate');
    await source?.reload();
    expect(source?.current.serialNumber).toBe(next);
    expect(source?.status().rejections).toBe(1);
    await until(() =>
      w.logs.some((l) => /^warn tls new certificates in certificate_providers\.default rejected/.test(l)),
    );
    await viaMtls(w);
    expect(w.reviews.seen.at(-1)?.serial).toBe(next);
  });

  it('the control plane gone: the last good security config stays (mTLS, SAN checks)', async () => {
    const w = await world();
    await (await w.mesh.fetch('http://reviews/')).text();
    await w.mesh.fetch('http://impostor-http/').catch(() => {});
    await w.cp.close();
    // Both endpoints still answer, each as its last good cluster config says (the balancer, not
    // round robin, picks: call until both have answered, at most 40 calls).
    const answers = new Set<string>();
    for (let i = 0; i < 40 && answers.size < 2; i++)
      answers.add(await (await w.mesh.fetch('http://reviews/')).text());
    expect(answers).toEqual(new Set(['reviews-mtls', 'reviews-plain']));
    expect(w.reviews.seen.every((s) => s.principal === `${TD}/frontend`)).toBe(true);
    expect((await failure(w.mesh.fetch('http://impostor-http/'))).code).toBe('MESHLET_ERR_PEER_IDENTITY');
  });

  it('provider files missing at start: createMesh rejects with MESHLET_ERR_TLS naming the instance', async () => {
    const dir = certDir();
    const err = await failure(
      createMesh({}, { env: { GRPC_XDS_BOOTSTRAP_CONFIG: istioAgentBootstrap('127.0.0.1:1', dir) } }),
    );
    expect(err.code).toBe('MESHLET_ERR_TLS');
    expect(err.message).toMatch(/^certificate_providers\.default: cannot read .*cert-chain\.pem/);
  });

  it('a cluster naming a provider instance the bootstrap lacks is NACKed naming it', async () => {
    const ca = await createCa();
    const dir = certDir();
    await writeIstioCerts(dir, ca, `${TD}/frontend`);
    const set = resourcesFromConfig(
      parseControlPlaneConfig({ services: { spire: { endpoints: ['127.0.0.1:1'] } } }),
    );
    const cp = await startControlPlane({
      resources: {
        ...set,
        clusters: [
          {
            ...set.clusters?.[0],
            transportSocket: {
              name: 'envoy.transport_sockets.tls',
              typedConfig: {
                '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
                commonTlsContext: {
                  tlsCertificateProviderInstance: { instanceName: 'spiffe' },
                  validationContext: { caCertificateProviderInstance: { instanceName: 'default' } },
                },
              },
            },
          },
        ],
      },
    });
    cleanups.push(() => cp.close());
    const mesh = await createMesh(
      {},
      { env: { GRPC_XDS_BOOTSTRAP_CONFIG: istioAgentBootstrap(cp.address, dir) } },
    );
    cleanups.push(() => mesh.close());
    await mesh.fetch('http://spire/').catch(() => {});
    await until(() => cp.clients().some((c) => c.types.cluster?.nack !== undefined));
    const nack = cp.clients().find((c) => c.types.cluster?.nack)?.types.cluster?.nack;
    expect(nack).toContain(
      'cluster "spire": transport_socket.typed_config.common_tls_context.tls_certificate_provider_instance.instance_name: certificate provider instance "spiffe" is not in the bootstrap\'s certificate_providers (it has default)',
    );
  });
});

describe('load reporting (LRS)', () => {
  it('reports per locality issued, succeeded, errored and in-progress requests at the interval asked', async () => {
    const w = await world({ loadReporting: true });
    for (let i = 0; i < 10; i++) await (await w.mesh.fetch('http://reviews/')).text();
    const node = 'sidecar~127.0.0.1~pod1.fake-namespace~fake-namespace.svc.cluster.local';
    await until(() => (w.cp.loadReports()[node]?.clusters.reviews?.issued ?? 0) >= 10, 8_000, 'load reports');
    const r = w.cp.loadReports()[node]?.clusters.reviews;
    expect(r).toMatchObject({ issued: 10, succeeded: 10, errors: 0, inProgress: 0, dropped: 0 });
    // Per locality, what each endpoint served (z1: the mTLS one, z2: the plaintext one). A
    // locality with nothing to report is left out of the report, as Envoy's load stats reporter
    // does: when the balancer sent all ten to one endpoint, the other locality is absent.
    const z1 = w.reviews.seen.length;
    const served = (n: number) => ({ issued: n, succeeded: n, errors: 0, inProgress: 0 });
    expect(r?.localities).toEqual({
      ...(z1 > 0 ? { '/z1/': served(z1) } : {}),
      ...(z1 < 10 ? { '/z2/': served(10 - z1) } : {}),
    });
    // Reports keep coming at the interval asked (200 ms), with nothing new to say.
    const before = w.cp.loadReports()[node]?.reports ?? 0;
    await until(() => (w.cp.loadReports()[node]?.reports ?? 0) >= before + 2, 8_000, 'more reports');
    expect(w.cp.clients().find((c) => c.node === node)?.loadReports?.clusters.reviews?.issued).toBe(10);
  });
});
