import { createServer } from 'node:net';
import {
  CDS_TYPE,
  type ClusterUpdate,
  EDS_TYPE,
  LDS_TYPE,
  type ListenerUpdate,
  parseBootstrap,
  RDS_TYPE,
  XdsClient,
} from '@meshlet/xds';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type ControlPlane,
  parseControlPlaneConfig,
  type ResourceSet,
  resourcesFromConfig,
  startControlPlane,
} from '../src/index.js';

let cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

async function until(fn: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A port nothing listens on. */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

function client(servers: string[], opts: { resourceTimeoutMs?: number } = {}): XdsClient {
  const c = new XdsClient(
    parseBootstrap(
      {
        xds_servers: servers.map((s) => ({ server_uri: s, channel_creds: [{ type: 'insecure' }] })),
        node: { id: 'n1' },
      },
      'test',
    ),
    { backoff: { baseMs: 20, maxMs: 100 }, ...opts },
  );
  cleanup.push(() => c.close());
  return c;
}

async function cp(config: unknown, port = 0): Promise<ControlPlane> {
  const s = await startControlPlane({ config, port });
  cleanup.push(() => s.close());
  return s;
}

const CONFIG = {
  services: {
    reviews: { endpoints: ['127.0.0.1:9001', '127.0.0.1:9002'], lb: 'least_request' },
    ratings: { endpoints: ['127.0.0.1:9101'] },
  },
};

function status(c: XdsClient, type: string, name: string) {
  return c.dump().resources.find((r) => r.type === type && r.name === name);
}

describe('XdsClient against the meshlet control plane', () => {
  it('subscribes LDS→RDS→CDS→EDS, ACKs every type with the served version', async () => {
    const server = await cp(CONFIG);
    const c = client([server.address]);
    const got: string[] = [];
    c.watch<ListenerUpdate>(LDS_TYPE, 'reviews', {
      onUpdate: (l) => {
        got.push(`lds:${l.rdsName}`);
        c.watch(RDS_TYPE, l.rdsName as string, { onUpdate: () => got.push('rds') });
      },
    });
    c.watch<ClusterUpdate>(CDS_TYPE, 'reviews', {
      onUpdate: (cl) => {
        got.push(`cds:${cl.lb.policy}`);
        c.watch(EDS_TYPE, cl.edsServiceName as string, { onUpdate: () => got.push('eds') });
      },
    });
    await until(() => got.length === 4, 'four resources');
    expect(got.sort()).toEqual(['cds:least_request', 'eds', 'lds:reviews', 'rds']);
    await until(
      () => Object.values(server.clients()[0]?.types ?? {}).filter((t) => t.acked === '1').length === 4,
      'acks',
    );
    const st = server.clients()[0];
    expect(st?.node).toBe('n1');
    expect(st?.types.listener).toMatchObject({ acked: '1', nack: undefined, names: ['reviews'] });
    expect(c.dump().resources.every((r) => r.status === 'ACKED' && r.version === '1')).toBe(true);
  });

  it('NACKs an invalid resource with a detailed message and keeps the last good one', async () => {
    const server = await cp(CONFIG);
    const c = client([server.address]);
    const updates: ClusterUpdate[] = [];
    const errors: string[] = [];
    c.watch<ClusterUpdate>(CDS_TYPE, 'reviews', {
      onUpdate: (u) => updates.push(u),
      onError: (e) => errors.push(e.message),
    });
    c.watch<ClusterUpdate>(CDS_TYPE, 'ratings', { onUpdate: (u) => updates.push(u) });
    await until(() => updates.length === 2, 'clusters');
    // Version 2: `reviews` gets an lb_policy this client does not support; `ratings` changes validly.
    const set = resourcesFromConfig(parseControlPlaneConfig(CONFIG)) as Required<ResourceSet>;
    const clusters = set.clusters.map((cl) =>
      cl.name === 'reviews'
        ? { ...cl, lbPolicy: 'CLUSTER_PROVIDED' }
        : { ...cl, connectTimeout: { seconds: 3 } },
    );
    server.setResources({ ...set, clusters });
    await until(() => errors.length === 1, 'nack');
    expect(errors[0]).toMatch(/cluster "reviews": lb_policy: CLUSTER_PROVIDED is not supported/);
    const reviews = status(c, 'cluster', 'reviews');
    expect(reviews).toMatchObject({ status: 'NACKED', version: '1', failedVersion: '2' });
    expect(reviews?.error).toMatch(/CLUSTER_PROVIDED/);
    // The last good value stays; the valid resource of the same response is applied (gRPC semantics).
    expect(c.get<ClusterUpdate>(CDS_TYPE, 'reviews')?.lb.policy).toBe('least_request');
    expect(c.get<ClusterUpdate>(CDS_TYPE, 'ratings')?.connectTimeoutMs).toBe(3000);
    expect(c.dump().versions.cluster).toBe('1'); // a NACK repeats the last accepted version
    await until(() => server.clients()[0]?.types.cluster?.nacks === 1, 'server saw the nack');
    expect(server.clients()[0]?.types.cluster?.nack).toMatch(/cluster "reviews": lb_policy/);
    // Fixing it ACKs again.
    server.setConfig(CONFIG);
    await until(() => status(c, 'cluster', 'reviews')?.status === 'ACKED', 'fixed');
    expect(c.dump().versions.cluster).toBe('3');
  });

  it('reports removed LDS/CDS resources at once and unanswered ones when the timer fires', async () => {
    const server = await cp(CONFIG);
    const c = client([server.address], { resourceTimeoutMs: 200 });
    let gone = 0;
    let missing = 0;
    c.watch(CDS_TYPE, 'ratings', { onUpdate: () => {}, onDoesNotExist: () => gone++ });
    c.watch(EDS_TYPE, 'nope', { onUpdate: () => {}, onDoesNotExist: () => missing++ });
    await until(() => status(c, 'cluster', 'ratings')?.status === 'ACKED', 'ratings');
    server.setConfig({ services: { reviews: CONFIG.services.reviews } });
    await until(() => gone === 1, 'removal');
    expect(status(c, 'cluster', 'ratings')).toMatchObject({ status: 'DOES_NOT_EXIST' });
    expect(c.get(CDS_TYPE, 'ratings')).toBeUndefined();
    await until(() => missing === 1, 'does-not-exist timer');
    expect(status(c, 'endpoints', 'nope')?.status).toBe('DOES_NOT_EXIST');
  });

  it('falls back to the second server when the first is unreachable (gRFC A71)', async () => {
    const dead = await deadPort();
    const server = await cp(CONFIG);
    const c = client([`127.0.0.1:${dead}`, server.address]);
    let got = 0;
    c.watch(LDS_TYPE, 'reviews', { onUpdate: () => got++ });
    await until(() => got === 1, 'listener via the fallback server');
    expect(c.dump()).toMatchObject({ server: server.address, connected: true });
    expect(c.dump().streams).toBeGreaterThanOrEqual(2);
  });

  it('accepts an older version from a restarted server on a new stream, and resubscribes', async () => {
    const first = await cp(CONFIG);
    const port = first.port;
    for (let i = 0; i < 4; i++) first.setConfig(CONFIG); // version 5
    const c = client([first.address]);
    const seen: ClusterUpdate[] = [];
    c.watch<ClusterUpdate>(CDS_TYPE, 'reviews', { onUpdate: (u) => seen.push(u) });
    await until(() => c.dump().versions.cluster === '5', 'version 5');
    await first.close();
    // The new server starts over at version "1" with different content; the client presents "5".
    const second = await cp(
      {
        services: {
          reviews: { ...CONFIG.services.reviews, lb: 'round_robin' },
          ratings: CONFIG.services.ratings,
        },
      },
      port,
    );
    await until(() => c.dump().versions.cluster === '1', 'version 1 from the new server', 15_000);
    expect(seen.at(-1)?.lb.policy).toBe('round_robin');
    await until(() => second.clients()[0]?.types.cluster?.acked === '1', 'ack on the new stream');
    expect(second.clients()[0]?.types.cluster?.names).toEqual(['reviews']);
  });
});
