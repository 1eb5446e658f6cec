import * as grpc from '@grpc/grpc-js';
import {
  adsService,
  CDS_TYPE,
  type ClusterUpdate,
  deltaAdsMethod,
  EDS_TYPE,
  type EndpointsUpdate,
  LDS_TYPE,
  type ListenerUpdate,
  type Msg,
  parseBootstrap,
  RDS_TYPE,
  type ResourceType,
  XdsClient,
  type XdsClientEvent,
} from '@meshlet/xds';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type ControlPlane,
  type ControlPlaneEvent,
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
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface Opts {
  protocol?: 'sotw' | 'delta';
  features?: string[];
  resourceTimeoutMs?: number;
  events?: XdsClientEvent[];
}

function client(server: string, opts: Opts = {}): XdsClient {
  const c = new XdsClient(
    parseBootstrap(
      {
        xds_servers: [
          {
            server_uri: server,
            channel_creds: [{ type: 'insecure' }],
            server_features: opts.features ?? [],
          },
        ],
        node: { id: opts.protocol ?? 'n1' },
      },
      'test',
    ),
    {
      backoff: { baseMs: 20, maxMs: 100 },
      resourceTimeoutMs: opts.resourceTimeoutMs ?? 60_000,
      ...(opts.protocol ? { protocol: opts.protocol } : {}),
      onEvent: (e) => opts.events?.push(e),
    },
  );
  cleanup.push(() => c.close());
  return c;
}

async function cp(
  config: unknown,
  opts: { port?: number; delta?: boolean; events?: ControlPlaneEvent[] } = {},
): Promise<ControlPlane> {
  const s = await startControlPlane({
    config,
    port: opts.port ?? 0,
    ...(opts.delta === undefined ? {} : { delta: opts.delta }),
    onEvent: (e) => opts.events?.push(e),
  });
  cleanup.push(() => s.close());
  return s;
}

const CONFIG = {
  services: {
    reviews: { endpoints: ['127.0.0.1:9001', '127.0.0.1:9002'], lb: 'least_request' },
    ratings: { endpoints: ['127.0.0.1:9101'] },
  },
};

/** Watches LDS→RDS and CDS→EDS for each service, as the resolver does. */
function watchAll(c: XdsClient, services: string[]): { names: Map<ResourceType, Set<string>> } {
  const names = new Map<ResourceType, Set<string>>([
    [LDS_TYPE, new Set()],
    [RDS_TYPE, new Set()],
    [CDS_TYPE, new Set()],
    [EDS_TYPE, new Set()],
  ]);
  const add = (t: ResourceType, n: string, onUpdate: (v: never) => void = () => {}) => {
    if (names.get(t)?.has(n)) return;
    names.get(t)?.add(n);
    c.watch(t, n, { onUpdate });
  };
  for (const s of services) {
    add(LDS_TYPE, s, (l: ListenerUpdate) => add(RDS_TYPE, l.rdsName as string));
    add(CDS_TYPE, s, (cl: ClusterUpdate) => add(EDS_TYPE, cl.edsServiceName ?? cl.name));
  }
  return { names };
}

function status(c: XdsClient, type: string, name: string) {
  return c.dump().resources.find((r) => r.type === type && r.name === name);
}

const acked = (c: XdsClient, n: number) => () =>
  c.dump().resources.filter((r) => r.status === 'ACKED').length === n;

const responses = (events: ControlPlaneEvent[]) =>
  events.flatMap((e) => (e.kind === 'deltaResponse' ? [e] : []));

/**
 * An ADS server that accepts every stream (response headers), then fails it with
 * PERMISSION_DENIED: a server that is reachable but not usable, as a primary.
 */
async function refusingServer(): Promise<{ address: string; streams: () => number }> {
  const server = new grpc.Server();
  let streams = 0;
  const handler = (call: grpc.ServerDuplexStream<unknown, unknown>) => {
    streams++;
    call.sendMetadata(new grpc.Metadata());
    call.on('data', () => {
      call.emit('error', { code: grpc.status.PERMISSION_DENIED, details: 'node not allowed' });
    });
  };
  server.addService(
    { ...adsService().service, DeltaAggregatedResources: deltaAdsMethod() },
    {
      StreamAggregatedResources: handler,
      DeltaAggregatedResources: handler,
    },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  cleanup.push(() => server.forceShutdown());
  return { address: `127.0.0.1:${port}`, streams: () => streams };
}

describe('delta (incremental) ADS', () => {
  it('moves on to the next server when the first accepts streams and then fails them', async () => {
    const bad = await refusingServer();
    const good = await cp(CONFIG);
    const c = new XdsClient(
      parseBootstrap(
        {
          xds_servers: [
            { server_uri: bad.address, channel_creds: [{ type: 'insecure' }] },
            { server_uri: good.address, channel_creds: [{ type: 'insecure' }] },
          ],
          node: { id: 'n1' },
        },
        'test',
      ),
      { backoff: { baseMs: 20, maxMs: 100 }, resourceTimeoutMs: 60_000, protocol: 'delta' },
    );
    cleanup.push(() => c.close());
    let got = false;
    c.watch(LDS_TYPE, 'reviews', {
      onUpdate: () => {
        got = true;
      },
    });
    await until(() => got, 'the listener from the second server');
    // Headers then an error is a failed server, not a working stream to go back to at once.
    expect(bad.streams()).toBeLessThan(5);
  });

  it('translates to the same config as state of the world, with per-resource versions', async () => {
    const server = await cp(CONFIG);
    const sotw = client(server.address, { protocol: 'sotw' });
    const delta = client(server.address, { protocol: 'delta' });
    const w1 = watchAll(sotw, ['reviews', 'ratings']);
    watchAll(delta, ['reviews', 'ratings']);
    await until(acked(sotw, 8), 'sotw config');
    await until(acked(delta, 8), 'delta config');
    for (const [t, ns] of w1.names)
      for (const n of ns) expect(delta.get(t, n), `${t} ${n}`).toEqual(sotw.get(t, n));
    const d = delta.dump();
    expect(d.versions).toEqual({ listener: '1', route_config: '1', cluster: '1', endpoints: '1' });
    // Each resource carries its own version (a digest of its content), not the snapshot's.
    const versions = new Set(d.resources.map((r) => r.version));
    expect(versions.size).toBe(8);
    expect(versions.has('1')).toBe(false);
    const st = server.clients().find((s) => s.protocol === 'delta');
    expect(st?.node).toBe('delta');
    expect(st?.types.cluster).toMatchObject({ names: ['ratings', 'reviews'], acked: '1', nack: undefined });
    expect(server.clients().find((s) => s.node === 'sotw')?.protocol).toBeUndefined();
  });

  it('sends only the changed cluster assignment, and honours unsubscribe', async () => {
    const events: ControlPlaneEvent[] = [];
    const server = await cp(CONFIG, { events });
    const c = client(server.address, { protocol: 'delta' });
    const eds: EndpointsUpdate[] = [];
    watchAll(c, ['reviews', 'ratings']);
    await until(acked(c, 8), 'config');
    const edsName = (c.get<ClusterUpdate>(CDS_TYPE, 'reviews')?.edsServiceName ?? 'reviews') as string;
    c.watch<EndpointsUpdate>(EDS_TYPE, edsName, { onUpdate: (u) => eds.push(u) });
    await until(() => eds.length === 1, 'cached endpoints');
    const before = responses(events).length;
    server.setConfig({
      services: {
        ...CONFIG.services,
        reviews: { ...CONFIG.services.reviews, endpoints: ['127.0.0.1:9001'] },
      },
    });
    // setSnapshot pushes synchronously: every response of this change is already recorded.
    const sent = responses(events).slice(before);
    expect(sent.map((e) => [e.typeUrl, e.resources, e.removed])).toEqual([[EDS_TYPE, [edsName], []]]);
    await until(() => eds.length === 2, 'endpoint update');
    const st = status(c, 'endpoints', edsName);
    expect(st?.status).toBe('ACKED');
    // Unsubscribing a cluster: the server stops tracking it, and changes to it are not sent.
    const unsub = c.watch(CDS_TYPE, 'extra', { onUpdate: () => {} });
    await until(() => server.clients()[0]?.types.cluster?.names.includes('extra') === true, 'subscribed');
    unsub();
    await until(() => server.clients()[0]?.types.cluster?.names.includes('extra') === false, 'unsubscribed');
  });

  it('reports removed resources, and unknown names, as not existing at once', async () => {
    const server = await cp(CONFIG);
    const c = client(server.address, { protocol: 'delta' });
    let gone = 0;
    let missing = 0;
    c.watch(CDS_TYPE, 'ratings', { onUpdate: () => {}, onDoesNotExist: () => gone++ });
    c.watch(CDS_TYPE, 'nope', { onUpdate: () => {}, onDoesNotExist: () => missing++ });
    await until(() => status(c, 'cluster', 'ratings')?.status === 'ACKED', 'ratings');
    // The resource timer is 60s: only the server's removed_resources can do this.
    await until(() => missing === 1, 'removed_resources for an unknown name');
    server.setConfig({ services: { reviews: CONFIG.services.reviews } });
    await until(() => gone === 1, 'removal');
    expect(status(c, 'cluster', 'ratings')).toMatchObject({ status: 'DOES_NOT_EXIST', version: undefined });
    expect(c.get(CDS_TYPE, 'ratings')).toBeUndefined();
    // It comes back when the server has it again.
    server.setConfig(CONFIG);
    await until(() => status(c, 'cluster', 'ratings')?.status === 'ACKED', 'ratings back');
  });

  it('NACKs a bad resource by name, keeps the last good one and is not sent it again', async () => {
    const events: ControlPlaneEvent[] = [];
    const server = await cp(CONFIG, { events });
    const c = client(server.address, { protocol: 'delta' });
    const errors: string[] = [];
    c.watch<ClusterUpdate>(CDS_TYPE, 'reviews', {
      onUpdate: () => {},
      onError: (e) => errors.push(e.message),
    });
    c.watch<ClusterUpdate>(CDS_TYPE, 'ratings', { onUpdate: () => {} });
    await until(acked(c, 2), 'clusters');
    const good = status(c, 'cluster', 'reviews')?.version;
    const set = resourcesFromConfig(parseControlPlaneConfig(CONFIG)) as Required<ResourceSet>;
    const bad = set.clusters.map((cl) =>
      cl.name === 'reviews' ? { ...cl, lbPolicy: 'CLUSTER_PROVIDED' } : cl,
    );
    server.setResources({ ...set, clusters: bad });
    await until(() => errors.length === 1, 'nack');
    expect(errors[0]).toMatch(/cluster "reviews": lb_policy: CLUSTER_PROVIDED is not supported/);
    const st = status(c, 'cluster', 'reviews');
    expect(st).toMatchObject({ status: 'NACKED', version: good });
    expect(st?.failedVersion).toMatch(/.+/);
    expect(st?.failedVersion).not.toBe(good);
    expect(c.get<ClusterUpdate>(CDS_TYPE, 'reviews')?.lb.policy).toBe('least_request');
    expect(c.dump().versions.cluster).toBe('1');
    await until(() => server.clients()[0]?.types.cluster?.nacks === 1, 'server saw the nack');
    expect(server.clients()[0]?.types.cluster?.nack).toMatch(/cluster "reviews": lb_policy/);
    // A new snapshot changing only ratings: the rejected reviews version is not resent.
    const before = responses(events).length;
    server.setResources({
      ...set,
      clusters: bad.map((cl) => (cl.name === 'ratings' ? { ...cl, connectTimeout: { seconds: 3 } } : cl)),
    });
    expect(
      responses(events)
        .slice(before)
        .flatMap((e) => e.resources),
    ).toEqual(['ratings']);
    await until(() => c.get<ClusterUpdate>(CDS_TYPE, 'ratings')?.connectTimeoutMs === 3000, 'ratings');
    expect(errors).toHaveLength(1);
    server.setConfig(CONFIG);
    await until(() => status(c, 'cluster', 'reviews')?.status === 'ACKED', 'fixed');
  });

  it('reconnects to a restarted server with initial_resource_versions and gets nothing unchanged', async () => {
    const first = await cp(CONFIG);
    const port = first.port;
    const c = client(first.address, { protocol: 'delta' });
    const updates: string[] = [];
    watchAll(c, ['reviews', 'ratings']);
    c.watch(CDS_TYPE, 'reviews', { onUpdate: () => updates.push('reviews') });
    await until(acked(c, 8), 'config');
    const versions = Object.fromEntries(c.dump().resources.map((r) => [`${r.type}/${r.name}`, r.version]));
    const streams = c.dump().streams;
    await first.close();
    const events: ControlPlaneEvent[] = [];
    const second = await cp(CONFIG, { port, events });
    const requests = () => events.flatMap((e) => (e.kind === 'deltaRequest' ? [e] : []));
    await until(() => requests().length === 4 && c.connected, 'resubscribed', 15_000);
    expect(c.dump().streams).toBeGreaterThan(streams);
    for (const r of requests()) {
      const type = {
        [LDS_TYPE]: 'listener',
        [RDS_TYPE]: 'route_config',
        [CDS_TYPE]: 'cluster',
        [EDS_TYPE]: 'endpoints',
      }[r.typeUrl];
      expect(Object.keys(r.initialResourceVersions).length).toBe(2);
      for (const [n, v] of Object.entries(r.initialResourceVersions))
        expect(v).toBe(versions[`${type}/${n}`]);
      expect(r.subscribe.sort()).toEqual(Object.keys(r.initialResourceVersions).sort());
    }
    // Every resource was current: the server sent no response at all.
    expect(responses(events)).toEqual([]);
    expect(updates).toEqual(['reviews']);
    // A change after the restart is sent alone.
    second.setConfig({ services: { ...CONFIG.services, ratings: { endpoints: ['127.0.0.1:9102'] } } });
    expect(responses(events).map((e) => e.typeUrl)).toEqual([EDS_TYPE]);
  });

  it('falls back to state of the world once against a server without delta', async () => {
    const server = await cp(CONFIG, { delta: false });
    const events: XdsClientEvent[] = [];
    const c = client(server.address, { features: ['delta_ads'], events });
    watchAll(c, ['reviews']);
    await until(acked(c, 4), 'config over state of the world');
    expect(events.filter((e) => e.kind === 'protocolFallback')).toEqual([
      { kind: 'protocolFallback', server: server.address, error: expect.stringMatching(/UNIMPLEMENTED/) },
    ]);
    expect(server.clients()[0]?.protocol).toBeUndefined();
    expect(c.dump().resources.every((r) => r.version === '1')).toBe(true);
  });

  it('uses delta for a server with the delta_ads server feature', async () => {
    const server = await cp(CONFIG);
    const c = client(server.address, { features: ['delta_ads'] });
    watchAll(c, ['reviews']);
    await until(acked(c, 4), 'config');
    expect(server.clients()[0]?.protocol).toBe('delta');
  });

  it('serves wildcard and explicit subscriptions to a raw delta stream', async () => {
    const events: ControlPlaneEvent[] = [];
    const server = await cp(CONFIG, { events });
    const raw = new grpc.Client(server.address, grpc.credentials.createInsecure());
    cleanup.push(() => raw.close());
    const m = deltaAdsMethod();
    const call = raw.makeBidiStreamRequest(m.path, m.requestSerialize, m.responseDeserialize);
    cleanup.push(() => call.cancel());
    call.on('error', () => {});
    const got: Msg[] = [];
    call.on('data', (r: Msg) => got.push(r));
    const names = (r: Msg | undefined) => ((r?.resources ?? []) as Msg[]).map((x) => x.name);
    // A first CDS request with no names is a wildcard subscription: every cluster.
    call.write({ node: { id: 'raw' }, typeUrl: CDS_TYPE });
    await until(() => got.length === 1, 'wildcard response');
    expect(names(got[0])).toEqual(['ratings', 'reviews']);
    expect(got[0]?.systemVersionInfo).toBe('1');
    call.write({ typeUrl: CDS_TYPE, responseNonce: got[0]?.nonce });
    await until(() => server.clients()[0]?.types.cluster?.acked === '1', 'ack');
    // Leaving the wildcard for one name the client already has: nothing is sent.
    call.write({ typeUrl: CDS_TYPE, resourceNamesSubscribe: ['reviews'], resourceNamesUnsubscribe: ['*'] });
    await until(() => server.clients()[0]?.types.cluster?.names.join() === 'reviews', 'explicit');
    const before = responses(events).length;
    const ratingsChanged = {
      services: { ...CONFIG.services, ratings: { ...CONFIG.services.ratings, lb: 'least_request' } },
    };
    server.setConfig(ratingsChanged);
    expect(responses(events).slice(before)).toEqual([]);
    server.setConfig({
      services: { ...ratingsChanged.services, reviews: { ...CONFIG.services.reviews, lb: 'round_robin' } },
    });
    await until(() => got.length === 2, 'reviews change');
    expect(names(got[1])).toEqual(['reviews']);
    expect(got[1]?.removedResources).toEqual([]);
    // A NACK is recorded against that response's version.
    call.write({ typeUrl: CDS_TYPE, responseNonce: got[1]?.nonce, errorDetail: { code: 3, message: 'bad' } });
    await until(() => server.clients()[0]?.types.cluster?.nacks === 1, 'nack');
    expect(server.clients()[0]?.types.cluster).toMatchObject({ acked: '1', nack: 'bad' });
    // `*` subscribes the wildcard again: only what the client lacks (ratings changed since).
    call.write({ typeUrl: CDS_TYPE, resourceNamesSubscribe: ['*'] });
    await until(() => got.length === 3, 'wildcard again');
    expect(names(got[2])).toEqual(['ratings']);
  });
});
