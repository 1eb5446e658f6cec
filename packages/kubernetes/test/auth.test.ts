import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, isMeshErrorCode, Mesh, parseConfig } from '@meshlet/core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { resolveAccess, TokenSource } from '../src/auth.js';
import { parseKubernetesSettings } from '../src/config.js';
import { KubernetesDiscovery } from '../src/discovery.js';
import { setupKubernetes } from '../src/setup.js';
import { FakeApiServer } from './fake-apiserver.js';
import { nextEmit, nextEvent, pods, reviewsService, reviewsSlice } from './harness.js';

let server: FakeApiServer | undefined;
let mesh: Mesh | undefined;
const dirs: string[] = [];

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'meshlet-k8s-'));
  dirs.push(d);
  return d;
}

afterEach(async () => {
  await mesh?.close();
  mesh = undefined;
  await server?.stop();
  server = undefined;
});

afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function watchOpen(s: FakeApiServer): Promise<void> {
  if (s.openWatches > 0) return;
  await nextEmit(s, 'watch');
}

/** A service-account directory as the kubelet mounts it. */
function serviceAccount(token: string): string {
  const dir = tempDir();
  writeFileSync(join(dir, 'token'), token);
  writeFileSync(join(dir, 'namespace'), 'default');
  return dir;
}

async function inClusterMesh(dir: string, srv: FakeApiServer, extra: Record<string, unknown> = {}) {
  const config = parseConfig({
    defaults: { lb: 'round_robin' },
    kubernetes: {
      inCluster: true,
      serviceAccountDir: dir,
      apiServer: srv.url,
      backoff: { base: '10ms', max: '50ms' },
      ...extra,
    },
  });
  const m = new Mesh(config);
  const discovery = await setupKubernetes(m, {
    env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: '1' },
  });
  return { mesh: m, discovery };
}

describe('in-cluster service-account auth', () => {
  it('re-reads the token file once the refresh period has passed', () => {
    const dir = serviceAccount('t1');
    let now = 0;
    const ts = new TokenSource({ file: join(dir, 'token'), refreshMs: 60_000, now: () => now });
    expect(ts.get()).toBe('t1');
    writeFileSync(join(dir, 'token'), 't2\n');
    now = 59_999;
    expect(ts.get()).toBe('t1');
    now = 60_000;
    expect(ts.get()).toBe('t2');
    expect(ts.reads).toBe(2);
    // A rotation in progress (file briefly missing) keeps the last token.
    rmSync(join(dir, 'token'));
    now = 200_000;
    expect(ts.get()).toBe('t2');
  });

  it('token rotation: a 401 re-reads the token and retries, and no 401 reaches the caller', async () => {
    server = await new FakeApiServer({ tokens: ['t1'] }).start();
    server.setService(reviewsService());
    server.applySlice(reviewsSlice('reviews-abc', pods('reviews', 1, 3)));
    const dir = serviceAccount('t1');
    const made = await inClusterMesh(dir, server);
    mesh = made.mesh;
    const errors: Error[] = [];
    mesh.events.on('discoveryError', (e) => errors.push(e.error));
    const rt = mesh.resolve('reviews', 8080);
    await rt?.whenDiscovered();
    expect(rt?.endpoints).toHaveLength(3);
    await watchOpen(server);
    // The kubelet writes a new bound token; the old one expires at once.
    writeFileSync(join(dir, 'token'), 't2');
    server.tokens = new Set(['t2']);
    const from = server.requests.length;
    const resumed = nextEmit(server, 'watch');
    server.endWatches();
    await resumed;
    const update = nextEvent(mesh, 'endpoints', (e) => e.endpoints.length === 4);
    server.applySlice(reviewsSlice('reviews-abc', pods('reviews', 1, 4)));
    await update;
    expect(errors).toEqual([]);
    // One 401 (the first request with the old token), retried at once with the new one.
    const after = server.requests.slice(from).map((r) => `${r.status}:${r.token}`);
    expect(after[0]).toBe('401:t1');
    expect(after.slice(1).every((x) => x === '200:t2')).toBe(true);
    expect(after.length).toBeGreaterThan(1);
    expect(made.discovery?.client.stats.unauthorizedRetries).toBe(1);
  });

  it('an expired token that is not replaced surfaces as a coded 401 discovery error', async () => {
    server = await new FakeApiServer({ tokens: ['valid'] }).start();
    server.setService(reviewsService());
    const made = await inClusterMesh(serviceAccount('expired'), server);
    mesh = made.mesh;
    const err = nextEvent(mesh, 'discoveryError');
    mesh.resolve('reviews', 8080);
    const e = (await err).error;
    expect(isMeshErrorCode(e, ErrorCodes.DISCOVERY)).toBe(true);
    expect(e.message).toMatch(/HTTP 401.*credentials were rejected/);
  });

  it('claims svc.namespace names for the namespaces the API server lists', async () => {
    server = await new FakeApiServer().start();
    server.namespaces.add('payments');
    const made = await inClusterMesh(serviceAccount('t'), server);
    mesh = made.mesh;
    expect(made.discovery?.parseHost('ledger.payments')).toEqual({
      service: 'ledger',
      namespace: 'payments',
    });
    expect(made.discovery?.parseHost('ledger.elsewhere')).toBeUndefined();
  });

  it('keeps the configured namespaces when listing namespaces is forbidden', async () => {
    server = await new FakeApiServer().start();
    server.forbidden.add('namespaces');
    const made = await inClusterMesh(serviceAccount('t'), server, { namespaces: ['shop'] });
    mesh = made.mesh;
    expect([...(made.discovery?.knownNamespaces ?? [])].sort()).toEqual(['default', 'shop']);
  });

  it('stays off without a kubernetes section outside a cluster, and is on inside one', async () => {
    const m = new Mesh(parseConfig({}));
    try {
      const dir = serviceAccount('t');
      expect(await setupKubernetes(m, { env: {}, serviceAccountDir: dir })).toBeUndefined();
      // KUBERNETES_SERVICE_HOST without a mounted token is not "in a cluster" either.
      expect(
        await setupKubernetes(m, {
          env: { KUBERNETES_SERVICE_HOST: '10.96.0.1' },
          serviceAccountDir: tempDir(),
        }),
      ).toBeUndefined();
      const d = await setupKubernetes(m, {
        env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: '9' },
        serviceAccountDir: dir,
      });
      expect(d?.client.access).toMatchObject({
        inCluster: true,
        server: 'https://127.0.0.1:9',
        source: 'in-cluster',
      });
      // In a cluster, single-label names in the pod's namespace are claimed.
      expect(m.resolve('reviews', 8080)?.name).toBe('reviews.default.svc.cluster.local:8080');
    } finally {
      await m.close();
    }
  });
});

describe('kubeconfig auth with a client certificate', () => {
  let pki: string;
  beforeAll(() => {
    pki = tempDir();
    const run = (...args: string[]) => execFileSync('openssl', args, { cwd: pki, stdio: 'pipe' });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    run(
      'req',
      '-x509',
      ...ec,
      '-keyout',
      'ca.key',
      '-out',
      'ca.crt',
      '-days',
      '1',
      '-subj',
      '/CN=kubernetes-ca',
    );
    writeFileSync(join(pki, 'server.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
    run('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=kube-apiserver');
    run(
      'x509',
      '-req',
      '-in',
      'server.csr',
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      'server.crt',
      '-days',
      '1',
      '-extfile',
      'server.ext',
    );
    writeFileSync(join(pki, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
    run('req', ...ec, '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/O=meshlet/CN=meshlet-dev');
    run(
      'x509',
      '-req',
      '-in',
      'client.csr',
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      'client.crt',
      '-days',
      '1',
      '-extfile',
      'client.ext',
    );
  });

  function kubeconfig(user: string): string {
    const b64 = (f: string) => readFileSync(join(pki, f)).toString('base64');
    const file = join(pki, `kubeconfig-${Math.random().toString(36).slice(2)}`);
    writeFileSync(
      file,
      `apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: kind-dev
  cluster:
    server: ${server?.url}
    certificate-authority-data: ${b64('ca.crt')}
contexts:
- name: dev
  context:
    cluster: kind-dev
    user: dev-user
    namespace: default
users:
- name: dev-user
  user:
${user}
`,
    );
    return file;
  }

  async function tlsServer(): Promise<FakeApiServer> {
    const s = await new FakeApiServer({
      tls: {
        key: readFileSync(join(pki, 'server.key')),
        cert: readFileSync(join(pki, 'server.crt')),
        ca: readFileSync(join(pki, 'ca.crt')),
      },
    }).start();
    s.setService(reviewsService());
    s.applySlice(reviewsSlice('reviews-abc', pods('reviews', 1, 3)));
    return s;
  }

  it('authenticates with client-certificate (file) and client-key-data over the cluster CA', async () => {
    server = await tlsServer();
    const key = readFileSync(join(pki, 'client.key')).toString('base64');
    const file = kubeconfig(`    client-certificate: client.crt\n    client-key-data: ${key}`);
    const m = new Mesh(parseConfig({ kubernetes: {} }));
    mesh = m;
    const discovery = await setupKubernetes(m, { env: { KUBECONFIG: file } });
    expect(discovery?.client.access.source).toBe(`kubeconfig:${file}#dev`);
    const rt = m.resolve('reviews.default.svc.cluster.local', 8080);
    await rt?.whenDiscovered();
    expect(rt?.endpoints).toHaveLength(3);
    expect(server.requests.every((r) => r.clientCN === 'meshlet-dev')).toBe(true);
    expect(m.snapshot().extensions.kubernetes).toMatchObject({
      access: `kubeconfig:${file}#dev`,
      namespace: 'default',
    });
  });

  it('fails with a coded error when the server demands a certificate and the kubeconfig has only a token', async () => {
    server = await tlsServer();
    const file = kubeconfig('    token: abc');
    const settings = parseKubernetesSettings(
      { kubeconfig: file, backoff: { base: '10ms' } },
      'kubernetes',
      [],
    );
    const m = new Mesh(parseConfig({}));
    mesh = m;
    const d = new KubernetesDiscovery({ settings, access: resolveAccess(settings, {}) }, m);
    m.onClose(() => d.close());
    m.addResolver(d);
    const err = nextEvent(m, 'discoveryError');
    m.resolve('reviews.default', 8080);
    const e = (await err).error;
    expect(isMeshErrorCode(e, ErrorCodes.DISCOVERY)).toBe(true);
    expect(e.message).toMatch(/cannot reach the API server/);
  });

  it('rejects a kubeconfig with a certificate but no key', () => {
    server = undefined;
    const file = kubeconfig('    client-certificate: client.crt');
    const settings = parseKubernetesSettings({ kubeconfig: file }, 'kubernetes', []);
    expect(() => resolveAccess(settings, {})).toThrow(/needs both a client certificate and a client key/);
  });
});
