import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeApiServer, makeService, makeSlice } from '../../packages/kubernetes/test/fake-apiserver.js';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';

/**
 * Kubernetes discovery end to end: `createMesh({ kubernetes })` against the fake API server, and
 * traffic through `mesh.fetch` to "pods" that are HTTP servers on 127.0.0.2…127.0.0.11 (one
 * loopback address per pod, all on the same port, as pods share a container port).
 */

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups.length = 0;
});

async function listen(server: Server, host: string, port: number): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return (server.address() as AddressInfo).port;
}

/** Ten pod servers answering with their own IP; returns the shared port. */
async function startPods(count: number): Promise<number> {
  const handler: Parameters<typeof createServer>[1] = (req, res) => {
    res.end(req.socket.localAddress);
  };
  for (let attempt = 0; attempt < 5; attempt++) {
    const servers: Server[] = [];
    try {
      const first = createServer(handler);
      servers.push(first);
      const port = await listen(first, '127.0.0.2', 0);
      for (let i = 3; i < 2 + count; i++) {
        const s = createServer(handler);
        servers.push(s);
        await listen(s, `127.0.0.${i}`, port);
      }
      cleanups.push(async () => {
        await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
      });
      return port;
    } catch {
      await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    }
  }
  throw new Error('could not bind the pod servers');
}

function podList(from: number, to: number, extra: Record<string, unknown> = {}) {
  const eps = [];
  for (let i = from; i <= to; i++)
    eps.push({ ip: `127.0.0.${i + 1}`, pod: `reviews-${i}`, zone: 'a', ...extra });
  return eps;
}

function slice(port: number, endpoints: ReturnType<typeof podList>) {
  return makeSlice({ name: 'reviews-x7k2p', service: 'reviews', ports: [{ name: 'http', port }], endpoints });
}

async function start(): Promise<{ mesh: Mesh; api: FakeApiServer; podPort: number }> {
  const podPort = await startPods(10);
  const api = await new FakeApiServer().start();
  cleanups.push(() => api.stop());
  api.setService(makeService('reviews', [{ name: 'http', port: 8080, targetPort: 'http' }]));
  api.applySlice(slice(podPort, podList(1, 3)));
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-kube-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const kubeconfig = join(dir, 'config');
  writeFileSync(
    kubeconfig,
    `apiVersion: v1
kind: Config
current-context: test
clusters: [{ name: fake, cluster: { server: "${api.url}" } }]
contexts: [{ name: test, context: { cluster: fake, user: dev, namespace: default } }]
users: [{ name: dev, user: { token: dev-token } }]
`,
  );
  const mesh = await createMesh({ defaults: { lb: 'round_robin' }, kubernetes: { kubeconfig } });
  cleanups.push(() => mesh.close());
  return { mesh, api, podPort };
}

async function hits(mesh: Mesh, url: string, n: number): Promise<Map<string, number>> {
  const seen = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const res = await mesh.fetch(url);
    expect(res.status).toBe(200);
    const ip = await res.text();
    seen.set(ip, (seen.get(ip) ?? 0) + 1);
  }
  return seen;
}

describe('Kubernetes discovery through createMesh and mesh.fetch', () => {
  it('scale 3 -> 10: new pods receive traffic once the watch event is applied; terminating pods are drained', async () => {
    const { mesh, api, podPort } = await start();
    const url = 'http://reviews.default.svc.cluster.local:8080/';
    expect([...(await hits(mesh, url, 9)).keys()].sort()).toEqual(['127.0.0.2', '127.0.0.3', '127.0.0.4']);

    const scaled = new Promise<void>((resolve) => {
      const off = mesh.events.on('endpoints', (e) => {
        if (e.endpoints.length === 10) {
          off();
          resolve();
        }
      });
    });
    api.applySlice(slice(podPort, podList(1, 10)));
    await scaled;
    expect((await hits(mesh, url, 20)).size).toBe(10);

    // Scale down to 7: three pods terminate but still serve; they get no new requests.
    const draining = new Promise<void>((resolve) => {
      const off = mesh.events.on('endpoints', (e) => {
        if (e.endpoints.filter((x) => x.health === 'draining').length === 3) {
          off();
          resolve();
        }
      });
    });
    api.applySlice(
      slice(podPort, [
        ...podList(1, 7),
        ...podList(8, 10, { ready: false, serving: true, terminating: true }),
      ]),
    );
    await draining;
    const after = await hits(mesh, 'http://reviews.default:8080/', 21);
    expect([...after.keys()].sort()).toEqual(
      podList(1, 7)
        .map((p) => p.ip)
        .sort(),
    );

    const snap = mesh.snapshot();
    expect(snap.services['reviews.default.svc.cluster.local:8080']?.discovery.type).toBe('kubernetes');
    expect(snap.extensions.kubernetes).toMatchObject({ namespace: 'default' });
  });

  it('leaves external hosts to the passthrough and keeps declared services first', async () => {
    const podPort = await startPods(2);
    const api = await new FakeApiServer().start();
    cleanups.push(() => api.stop());
    const dir = mkdtempSync(join(tmpdir(), 'meshlet-kube-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(
      join(dir, 'config'),
      `current-context: t\nclusters: [{ name: c, cluster: { server: "${api.url}" } }]\ncontexts: [{ name: t, context: { cluster: c } }]\n`,
    );
    const mesh = await createMesh({
      services: { 'reviews.default': { endpoints: [`127.0.0.3:${podPort}`] } },
      kubernetes: { kubeconfig: join(dir, 'config') },
    });
    cleanups.push(() => mesh.close());
    // Declared in the config: not a Kubernetes lookup.
    expect(await (await mesh.fetch(`http://reviews.default:${podPort}/`)).text()).toBe('127.0.0.3');
    // Not a cluster name: passthrough to the real address.
    expect(await (await mesh.fetch(`http://127.0.0.2:${podPort}/`)).text()).toBe('127.0.0.2');
    expect(api.requests.filter((r) => r.path.includes('endpointslices'))).toEqual([]);
  });
});
