import { createServer } from 'node:net';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type ControlPlane,
  parseControlPlaneConfig,
  type ResourceSet,
  resourcesFromConfig,
  startControlPlane,
} from '../../packages/control-plane/src/index.js';
import {
  type CreateMeshOptions,
  createMesh,
  isMeshErrorCode,
  type Mesh,
  type MeshConfig,
} from '../../packages/meshlet/src/index.js';
import { bootstrapJson, type NamedServer, startNamed, until } from './xds/helpers.js';

let cleanup: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function named(...names: string[]): Promise<NamedServer[]> {
  const out = await Promise.all(names.map(startNamed));
  for (const s of out) cleanup.push(() => s.close());
  return out;
}

async function plane(config: unknown, port = 0): Promise<ControlPlane> {
  const cp = await startControlPlane({ config, port });
  cleanup.push(() => cp.close());
  return cp;
}

async function mesh(
  servers: string[],
  extra: MeshConfig = {},
  options: CreateMeshOptions = {},
): Promise<Mesh> {
  const m = await createMesh(
    { xds: { backoff: { base: '20ms', max: '100ms' }, resourceTimeout: '500ms' }, ...extra },
    { env: { GRPC_XDS_BOOTSTRAP_CONFIG: bootstrapJson(servers) }, ...options },
  );
  cleanup.push(() => m.close());
  return m;
}

async function get(m: Mesh, url: string): Promise<string> {
  const res = await m.fetch(url);
  return res.text();
}

interface XdsDump {
  connected: boolean;
  resources: Array<{
    type: string;
    name: string;
    status: string;
    version?: string;
    error?: string;
    failedVersion?: string;
  }>;
}
const xdsOf = (m: Mesh) => m.snapshot().extensions.xds as XdsDump;

describe('xDS fault handling end to end', () => {
  it('keeps serving with zero failed requests while the control plane restarts, then resubscribes', async () => {
    const [a, b] = await named('a', 'b');
    const config = { services: { reviews: { endpoints: [a?.address, b?.address] } } };
    const first = await plane(config);
    const port = first.port;
    const m = await mesh([first.address]);
    expect(await get(m, 'http://reviews/')).toMatch(/^[ab]$/);
    let ok = 0;
    const failures: unknown[] = [];
    let stop = false;
    const workers = Array.from({ length: 4 }, async () => {
      while (!stop) {
        try {
          await get(m, 'http://reviews/');
          ok++;
        } catch (err) {
          failures.push(err);
        }
      }
    });
    await until(() => ok > 50, 5_000, 'traffic');
    await first.close();
    const before = ok;
    await until(() => ok > before + 100, 5_000, 'traffic while the control plane is down');
    expect(xdsOf(m).connected).toBe(false);
    const second = await plane(config, port);
    await until(() => (second.clients()[0]?.types.endpoints?.acks ?? 0) > 0, 15_000, 'resubscribed');
    const after = ok;
    await until(() => ok > after + 50, 5_000, 'traffic after the restart');
    stop = true;
    await Promise.all(workers);
    expect(failures).toEqual([]);
    expect(Object.keys(second.clients()[0]?.types ?? {}).sort()).toEqual([
      'cluster',
      'endpoints',
      'listener',
      'route_config',
    ]);
    expect(xdsOf(m).resources.every((r) => r.status === 'ACKED')).toBe(true);
  });

  it('fails fast with a coded error while unreachable at start, then connects when the server appears', async () => {
    const [a] = await named('a');
    const port = await deadPort();
    const lines: string[] = [];
    const m = await mesh(
      [`127.0.0.1:${port}`],
      {},
      { logger: pino({}, { write: (l: string) => lines.push(l) }) },
    );
    const err = await m.fetch('http://reviews/').then(
      () => undefined,
      (e: Error) => e.cause,
    );
    expect(isMeshErrorCode(err, 'MESHLET_ERR_UNKNOWN_SERVICE')).toBe(true);
    expect((err as Error).message).toMatch(/control plane is unreachable/);
    expect(lines.map((l) => JSON.parse(l))).toContainEqual(
      expect.objectContaining({
        level: 40,
        scope: 'xds',
        server: `127.0.0.1:${port}`,
        receivedResponse: false,
        msg: expect.stringMatching(/^xDS stream to 127\.0\.0\.1:\d+ failed: .*; reconnecting with backoff/),
      }),
    );
    await plane({ services: { reviews: { endpoints: [a?.address] } } }, port);
    await until(
      () =>
        get(m, 'http://reviews/').then(
          (b) => b === 'a',
          () => false,
        ),
      15_000,
      'requests to succeed once the control plane is up',
    );
    expect(xdsOf(m).connected).toBe(true);
  });

  it('shows a NACKed resource with its error in snapshot() and the log, and keeps routing with the old config', async () => {
    const [a] = await named('a');
    const config = { services: { reviews: { endpoints: [a?.address] } } };
    const cp = await plane(config);
    const lines: string[] = [];
    const m = await mesh([cp.address], {}, { logger: pino({}, { write: (l: string) => lines.push(l) }) });
    expect(await get(m, 'http://reviews/')).toBe('a');
    const set = resourcesFromConfig(parseControlPlaneConfig(config)) as Required<ResourceSet>;
    // An invalid regex in a route: RE2/JS cannot compile "(".
    const routes = set.routes.map((r) => ({
      ...r,
      virtualHosts: [
        {
          name: 'vh',
          domains: ['*'],
          routes: [{ match: { safeRegex: { regex: '(' } }, route: { cluster: 'reviews' } }],
        },
      ],
    }));
    cp.setResources({ ...set, routes });
    await until(() => xdsOf(m).resources.some((r) => r.status === 'NACKED'), 5_000, 'nack');
    const rc = xdsOf(m).resources.find((r) => r.type === 'route_config');
    expect(rc).toMatchObject({ status: 'NACKED', version: '1', failedVersion: '2' });
    expect(rc?.error).toMatch(
      /route_config "reviews": virtual_hosts\[0\]\.routes\[0\]\.match\.safe_regex\.regex: invalid regex "\("/,
    );
    for (let i = 0; i < 5; i++) expect(await get(m, 'http://reviews/')).toBe('a');
    expect(cp.clients()[0]?.types.route_config?.nack).toMatch(/invalid regex/);
    const nack = lines.map((l) => JSON.parse(l)).find((l) => /NACK/.test(l.msg));
    expect(nack).toMatchObject({
      level: 40,
      scope: 'xds',
      typeUrl: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
      version: '2',
      error: expect.stringMatching(/invalid regex/),
    });
    expect(nack.msg).toMatch(
      /^xDS NACK of RouteConfiguration version 2: .*invalid regex.*; keeping the last good version$/,
    );
  });

  it('fails requests with a coded error once a listener is removed', async () => {
    const [a] = await named('a');
    const cp = await plane({
      services: { reviews: { endpoints: [a?.address] }, other: { endpoints: [a?.address] } },
    });
    const m = await mesh([cp.address]);
    expect(await get(m, 'http://reviews/')).toBe('a');
    cp.setConfig({ services: { other: { endpoints: [a?.address] } } });
    await until(
      () => xdsOf(m).resources.some((r) => r.type === 'listener' && r.status === 'DOES_NOT_EXIST'),
      5_000,
      'removal',
    );
    const err = await m.fetch('http://reviews/').then(
      () => undefined,
      (e: Error) => e.cause,
    );
    expect(isMeshErrorCode(err, 'MESHLET_ERR_UNKNOWN_SERVICE')).toBe(true);
    expect((err as Error).message).toMatch(/listener "reviews" does not exist/);
  });
});
