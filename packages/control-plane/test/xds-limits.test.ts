import { Mesh, parseConfig } from '@meshlet/core';
import {
  CDS_TYPE,
  type ClusterUpdate,
  EDS_TYPE,
  LDS_TYPE,
  parseBootstrap,
  setupXds,
  XdsClient,
  type XdsClientEvent,
} from '@meshlet/xds';
import { afterEach, describe, expect, it } from 'vitest';
import { type ControlPlane, startControlPlane } from '../src/index.js';

// gRFC A70: per-server max_xds_message_size / max_xds_resource_size in the bootstrap.
let cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

async function until(fn: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function endpoints(n: number, base: number): string[] {
  return Array.from({ length: n }, (_, i) => `10.0.${Math.floor(i / 250)}.${(i % 250) + 1}:${base + i}`);
}

async function cp(config: unknown): Promise<ControlPlane> {
  const s = await startControlPlane({ config, port: 0 });
  cleanup.push(() => s.close());
  return s;
}

function client(server: string, limits: Record<string, number>, events: XdsClientEvent[]): XdsClient {
  const c = new XdsClient(
    parseBootstrap(
      {
        xds_servers: [{ server_uri: server, channel_creds: [{ type: 'insecure' }], ...limits }],
        node: { id: 'n1' },
      },
      'test',
    ),
    { backoff: { baseMs: 20, maxMs: 10_000 }, onEvent: (e) => events.push(e) },
  );
  cleanup.push(() => c.close());
  return c;
}

/** Subscribes the listener and the cluster of each service, and the cluster's endpoints. */
function watchAll(c: XdsClient, services: string[], eds: Map<string, number>): void {
  for (const s of services) {
    c.watch(LDS_TYPE, s, { onUpdate: () => {} });
    c.watch<ClusterUpdate>(CDS_TYPE, s, {
      onUpdate: (cl) =>
        c.watch<{ endpoints: readonly unknown[] }>(EDS_TYPE, cl.edsServiceName as string, {
          onUpdate: (u) => eds.set(s, u.endpoints.length),
        }),
    });
  }
}

describe('xDS message and resource size limits (gRFC A70)', () => {
  it('an oversized response fails the stream with RESOURCE_EXHAUSTED and backs off, growing, never reset', async () => {
    // 200 endpoints make an EDS response of ~5 KiB; the limit is 2 KiB. LDS, RDS and CDS fit, so
    // every stream carries good responses before the one that breaks it.
    const server = await cp({ services: { reviews: { endpoints: endpoints(200, 1000) } } });
    const events: XdsClientEvent[] = [];
    const c = client(server.address, { max_xds_message_size: 2048 }, events);
    watchAll(c, ['reviews'], new Map());
    const disconnects = () =>
      events.filter((e): e is Extract<XdsClientEvent, { kind: 'disconnected' }> => e.kind === 'disconnected');
    await until(() => disconnects().length >= 5, 'five failed streams');
    const d = disconnects().slice(0, 5);
    for (const e of d) {
      expect(e.receivedResponse).toBe(false);
      expect(e.error).toMatch(/RESOURCE_EXHAUSTED/);
      expect(e.error).toMatch(/max_xds_message_size is 2048 bytes/);
    }
    // Exponential (×1.6, ±20% jitter): each delay is larger than the one before.
    for (let i = 1; i < d.length; i++)
      expect((d[i] as { retryInMs: number }).retryInMs).toBeGreaterThan(
        (d[i - 1] as { retryInMs: number }).retryInMs,
      );
    expect(d[4]?.retryInMs).toBeGreaterThan(100);
    // One stream per failure: no tight reconnect loop.
    expect(c.dump().streams).toBeLessThanOrEqual(disconnects().length + 1);
    // What fit was applied and stays.
    expect(c.dump().resources.find((r) => r.type === 'listener')?.status).toBe('ACKED');
  });

  it('a larger max_xds_message_size lets the same response through', async () => {
    const server = await cp({ services: { reviews: { endpoints: endpoints(200, 1000) } } });
    const events: XdsClientEvent[] = [];
    const c = client(server.address, { max_xds_message_size: 64 * 1024 }, events);
    const eds = new Map<string, number>();
    watchAll(c, ['reviews'], eds);
    await until(() => eds.get('reviews') === 200, 'the endpoints');
    expect(events.some((e) => e.kind === 'disconnected')).toBe(false);
  });

  it('an oversized resource is NACKed by name while the rest of the response is used', async () => {
    const server = await cp({
      services: {
        reviews: { endpoints: endpoints(200, 1000) },
        ratings: { endpoints: endpoints(3, 2000) },
      },
    });
    const events: XdsClientEvent[] = [];
    const c = client(server.address, { max_xds_resource_size: 1024 }, events);
    const eds = new Map<string, number>();
    watchAll(c, ['reviews', 'ratings'], eds);
    await until(() => eds.get('ratings') === 3, 'the small assignment');
    await until(() => events.some((e) => e.kind === 'nack' && e.typeUrl === EDS_TYPE), 'the NACK');
    const nack = events.find((e) => e.kind === 'nack' && e.typeUrl === EDS_TYPE) as { error: string };
    expect(nack.error).toMatch(
      /^endpoints "reviews": is \d+ bytes, more than max_xds_resource_size \(1024 bytes/,
    );
    expect(nack.error).not.toMatch(/ratings/);
    expect(eds.has('reviews')).toBe(false);
    const dump = c.dump().resources;
    expect(dump.find((r) => r.type === 'endpoints' && r.name === 'reviews')?.status).toBe('NACKED');
    expect(dump.find((r) => r.type === 'endpoints' && r.name === 'ratings')?.status).toBe('ACKED');
    expect(events.some((e) => e.kind === 'disconnected')).toBe(false);
  });

  it('the bootstrap fields are validated', () => {
    expect(() =>
      parseBootstrap(
        {
          xds_servers: [
            {
              server_uri: 'x:1',
              channel_creds: [{ type: 'insecure' }],
              max_xds_message_size: -1,
              max_xds_resource_size: '4MiB',
            },
          ],
        },
        'test',
      ),
    ).toThrow(
      /xds_servers\[0\]\.max_xds_message_size: must be a number of bytes.*\n?.*max_xds_resource_size/s,
    );
  });
});

describe('xDS names seen once are not subscribed forever', () => {
  it("with hosts ['*'], 300 external names make 300 listener subscriptions that close when idle", async () => {
    const server = await cp({ services: { reviews: { endpoints: ['127.0.0.1:9001'] } } });
    let now = 0;
    const mesh = new Mesh(
      parseConfig({
        idleServiceTimeout: '1m',
        xds: { servers: [server.address], resourceTimeout: '300ms', backoff: { base: '20ms', max: '100ms' } },
      }),
      { now: () => now },
    );
    cleanup.push(() => mesh.close());
    const resolver = setupXds(mesh) as NonNullable<ReturnType<typeof setupXds>>;
    const routers = Array.from({ length: 300 }, (_, i) => mesh.router(`ext-${i}.example.com`));
    const used = mesh.router('reviews');
    await Promise.all([...routers, used].map((r) => r?.whenReady()));
    expect(routers.every((r) => r !== undefined)).toBe(true);
    const listeners = () => resolver.client.dump().resources.filter((r) => r.type === 'listener');
    expect(listeners().length).toBe(301);
    expect(routers[0]?.route({ method: 'GET', path: '/', header: () => undefined })).toMatchObject({
      code: 'MESHLET_ERR_UNKNOWN_SERVICE',
    });
    // `reviews` carries requests; the external names carry none for a minute.
    now += 30_000;
    used?.route({ method: 'GET', path: '/', header: () => undefined });
    mesh.sweepIdle();
    now += 31_000;
    used?.route({ method: 'GET', path: '/', header: () => undefined });
    // ext-0 carried the one request above (at 0 s, seen by the sweep at 30 s): idle for 31 s only.
    expect(mesh.sweepIdle()).toBe(299);
    now += 30_000;
    used?.route({ method: 'GET', path: '/', header: () => undefined });
    expect(mesh.sweepIdle()).toBe(1);
    expect(listeners().map((l) => l.name)).toEqual(['reviews']);
    expect(routers[0]?.released).toBe(true);
    expect(used?.released).toBe(false);
    // Asked again, a released name gets a fresh router (and subscription).
    const again = mesh.router('ext-0.example.com');
    expect(again).not.toBe(routers[0]);
    expect(listeners().length).toBe(2);
  });
});
