import { afterEach, describe, expect, it } from 'vitest';
import {
  type ControlPlane,
  parseControlPlaneConfig,
  type ResourceSet,
  resourcesFromConfig,
  startControlPlane,
} from '../../packages/control-plane/src/index.js';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';
import { bootstrapJson, type NamedServer, startNamed, until } from './xds/helpers.js';

let cleanup: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

async function servers(...names: string[]): Promise<NamedServer[]> {
  const out = await Promise.all(names.map(startNamed));
  for (const s of out) cleanup.push(() => s.close());
  return out;
}

async function meshFor(cp: ControlPlane, extra: Record<string, unknown> = {}): Promise<Mesh> {
  const mesh = await createMesh(extra, { env: { GRPC_XDS_BOOTSTRAP_CONFIG: bootstrapJson([cp.address]) } });
  cleanup.push(() => mesh.close());
  return mesh;
}

async function body(mesh: Mesh, url: string, init?: Parameters<Mesh['fetch']>[1]): Promise<string> {
  const res = await mesh.fetch(url, init);
  return res.text();
}

describe('xDS routing through mesh.fetch', () => {
  it('resolves http://NAME/ through the listener NAME to the cluster endpoints', async () => {
    const [a, b] = await servers('a', 'b');
    const cp = await startControlPlane({
      config: { services: { reviews: { endpoints: [a?.address, b?.address] } } },
    });
    cleanup.push(() => cp.close());
    const mesh = await meshFor(cp);
    const seen = new Set<string>();
    for (let i = 0; i < 20; i++) seen.add(await body(mesh, 'http://reviews/x'));
    expect([...seen].sort()).toEqual(['a', 'b']);
    const snap = mesh.snapshot();
    const xds = snap.extensions.xds as {
      resources: Array<{ type: string; name: string; status: string; version: string }>;
    };
    expect(xds.resources.map((r) => `${r.type}/${r.name}/${r.status}`).sort()).toEqual([
      'cluster/reviews/ACKED',
      'endpoints/reviews/ACKED',
      'listener/reviews/ACKED',
      'route_config/reviews/ACKED',
    ]);
    expect(snap.services.reviews?.endpoints.map((e) => e.port).sort()).toEqual([a?.port, b?.port].sort());
  });

  it('routes by header and path, splits by weight, and follows config pushes', async () => {
    const [v1, v2, admin] = await servers('v1', 'v2', 'admin');
    const config = {
      services: {
        'reviews-v1': { endpoints: [v1?.address], listener: false },
        'reviews-v2': { endpoints: [v2?.address], listener: false },
        'reviews-admin': { endpoints: [admin?.address], listener: false },
        reviews: {
          routes: [
            { match: { prefix: '/admin' }, cluster: 'reviews-admin' },
            { match: { headers: [{ name: 'x-user', exact: 'alice' }] }, cluster: 'reviews-v2' },
            { match: { prefix: '/' }, weighted: { 'reviews-v1': 80, 'reviews-v2': 20 } },
          ],
        },
      },
    };
    const cp = await startControlPlane({ config });
    cleanup.push(() => cp.close());
    const mesh = await meshFor(cp);
    expect(await body(mesh, 'http://reviews/admin/x')).toBe('admin');
    expect(await body(mesh, 'http://reviews/x', { headers: { 'x-user': 'alice' } })).toBe('v2');
    const counts: Record<string, number> = { v1: 0, v2: 0 };
    const n = 400;
    for (let i = 0; i < n; i++) {
      const b = await body(mesh, 'http://reviews/x');
      counts[b] = (counts[b] ?? 0) + 1;
    }
    // 80/20 within ±7 points (binomial sd at n=400 is 2 points).
    expect((counts.v1 ?? 0) / n).toBeGreaterThan(0.73);
    expect((counts.v1 ?? 0) / n).toBeLessThan(0.87);
    // A push moves all traffic to v2.
    cp.setConfig({
      services: {
        ...config.services,
        reviews: { routes: [{ match: { prefix: '/' }, cluster: 'reviews-v2' }] },
      },
    });
    await until(async () => (await body(mesh, 'http://reviews/x')) === 'v2', 5_000, 'route push');
    for (let i = 0; i < 10; i++) expect(await body(mesh, 'http://reviews/x')).toBe('v2');
  });

  it('aggregate clusters fail over from the first child to the next; unused names are unsubscribed', async () => {
    const [p, sec] = await servers('primary', 'secondary');
    const build = (primaryHealth: string) => {
      const set = resourcesFromConfig(
        parseControlPlaneConfig({
          services: {
            primary: {
              endpoints: [{ address: '127.0.0.1', port: p?.port, health: primaryHealth }],
              listener: false,
            },
            secondary: { endpoints: [sec?.address], listener: false },
            front: { routes: [{ cluster: 'primary' }] },
          },
        }),
      ) as Required<ResourceSet>;
      // `front` routes to an aggregate cluster [primary, secondary].
      const routes = set.routes.map((r) =>
        JSON.parse(JSON.stringify(r).replaceAll('"cluster":"primary"', '"cluster":"agg"')),
      );
      const agg = {
        name: 'agg',
        clusterType: {
          name: 'envoy.clusters.aggregate',
          typedConfig: {
            '@type': 'type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig',
            clusters: ['primary', 'secondary'],
          },
        },
        lbPolicy: 'ROUND_ROBIN',
      };
      return { ...set, routes, clusters: [...set.clusters, agg] };
    };
    const cp = await startControlPlane({ resources: build('healthy') });
    cleanup.push(() => cp.close());
    const mesh = await meshFor(cp);
    for (let i = 0; i < 5; i++) expect(await body(mesh, 'http://front/')).toBe('primary');
    cp.setResources(build('unhealthy'));
    await until(async () => (await body(mesh, 'http://front/')) === 'secondary', 5_000, 'failover');
    for (let i = 0; i < 5; i++) expect(await body(mesh, 'http://front/')).toBe('secondary');
    // The client watches exactly what the routes need.
    const types = cp.clients()[0]?.types;
    expect(types?.cluster?.names).toEqual(['agg', 'primary', 'secondary']);
    expect(types?.endpoints?.names).toEqual(['primary', 'secondary']);
  });
});
