import { readFileSync } from 'node:fs';
import { ErrorCodes, isMeshErrorCode, type Mesh, type ServiceRuntime } from '@meshlet/core';
import { afterEach, describe, expect, it } from 'vitest';
import type { KubernetesDiscovery } from '../src/discovery.js';
import { FakeApiServer, makeService, makeSlice } from './fake-apiserver.js';
import { meshWith, nextEmit, nextEvent, plainAccess, pods, reviewsService, reviewsSlice } from './harness.js';

let server: FakeApiServer | undefined;
let mesh: Mesh | undefined;

afterEach(async () => {
  await mesh?.close();
  mesh = undefined;
  await server?.stop();
  server = undefined;
});

async function setup(
  kubernetes: Record<string, unknown> = {},
  init: (s: FakeApiServer) => void = (s) => {
    s.setService(reviewsService());
    s.applySlice(reviewsSlice('reviews-abc', pods('reviews', 1, 3)));
  },
  rest: Record<string, unknown> = {},
): Promise<{ server: FakeApiServer; mesh: Mesh; discovery: KubernetesDiscovery }> {
  server = await new FakeApiServer().start();
  init(server);
  const made = await meshWith(plainAccess(server.url), kubernetes, rest);
  mesh = made.mesh;
  return { server, mesh: made.mesh, discovery: made.discovery };
}

/** Resolves once the client has a watch open (at once if it already has). */
async function watchOpen(s: FakeApiServer): Promise<void> {
  if (s.openWatches > 0) return;
  await nextEmit(s, 'watch');
}

function ids(rt: ServiceRuntime): string[] {
  return rt.endpoints.map((s) => s.id).sort();
}

function picked(rt: ServiceRuntime, n: number): Set<string> {
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) {
    const r = rt.pick({ attempt: 0 });
    if (r.kind === 'pick') seen.add(r.endpoint.id);
  }
  return seen;
}

async function resolved(m: Mesh, host: string, port?: number): Promise<ServiceRuntime> {
  const rt = m.resolve(host, port);
  if (!rt) throw new Error(`${host} was not claimed`);
  await rt.whenDiscovered();
  return rt;
}

describe('EndpointSlice list and watch', () => {
  it('lists with a label selector, then watches from the list resourceVersion with bookmarks', async () => {
    const { server, mesh } = await setup();
    const watchReq = nextEmit<{ resourceVersion: string }>(server, 'watch');
    const rt = await resolved(mesh, 'reviews.default.svc.cluster.local', 8080);
    // Port 8080 is the Service port named "http"; the slices' "http" port is 9376.
    expect(ids(rt)).toEqual(['10.1.0.1:9376', '10.1.0.2:9376', '10.1.0.3:9376']);
    expect((await watchReq).resourceVersion).toBe(server.resourceVersion);
    const list = server.requests.find((r) => r.path.endsWith('/endpointslices') && !r.watch);
    expect(list?.query.get('labelSelector')).toBe('kubernetes.io/service-name=reviews');
    const watch = server.requests.find((r) => r.watch);
    expect(watch?.query.get('allowWatchBookmarks')).toBe('true');
    const timeout = Number(watch?.query.get('timeoutSeconds'));
    expect(timeout).toBeGreaterThanOrEqual(300);
    expect(timeout).toBeLessThanOrEqual(450);
    expect(rt.endpoints[0]?.endpoint.metadata).toMatchObject({ pod: 'reviews-1', slice: 'reviews-abc' });
    expect(rt.endpoints[0]?.endpoint.locality.zone).toBe('a');
  });

  it('maps another Service port by number, and shares one watch across ports and callers', async () => {
    const { server, mesh, discovery } = await setup();
    const http = await resolved(mesh, 'reviews.default', 8080);
    const admin = await resolved(mesh, 'reviews.default.svc.cluster.local', 9090);
    const again = await resolved(mesh, 'reviews', 8080);
    expect(again).toBe(http);
    expect(ids(admin)).toEqual(['10.1.0.1:9901', '10.1.0.2:9901', '10.1.0.3:9901']);
    await watchOpen(server);
    expect(server.requests.filter((r) => r.watch).length).toBe(1);
    expect(discovery.watch('default', 'reviews')?.subscriberCount).toBe(2);
  });

  it('reports a port the Service does not have as a coded discovery error', async () => {
    const { mesh } = await setup();
    const err = nextEvent(mesh, 'discoveryError');
    const rt = await resolved(mesh, 'reviews.default', 7777);
    const e = (await err).error;
    expect(isMeshErrorCode(e, ErrorCodes.DISCOVERY)).toBe(true);
    expect(e.message).toMatch(/has no port 7777.*http=8080/);
    const r = rt.pick({ attempt: 0 });
    expect(r.kind).toBe('fail');
  });

  it('scale 3 -> 10: the new pods are picked as soon as the MODIFIED event is applied', async () => {
    const { server, mesh } = await setup();
    const rt = await resolved(mesh, 'reviews.default', 8080);
    expect(picked(rt, 30).size).toBe(3);
    const update = nextEvent(mesh, 'endpoints', (e) => e.endpoints.length === 10);
    server.applySlice(reviewsSlice('reviews-abc', pods('reviews', 1, 10)));
    const ev = await update;
    expect(ev.added).toBe(7);
    expect(picked(rt, 30).size).toBe(10);
  });

  it('merges several slices and drops the endpoints of a deleted slice', async () => {
    const { server, mesh } = await setup();
    const rt = await resolved(mesh, 'reviews.default', 8080);
    let update = nextEvent(mesh, 'endpoints', (e) => e.endpoints.length === 5);
    server.applySlice(reviewsSlice('reviews-def', pods('reviews', 4, 5)));
    await update;
    expect(ids(rt)).toHaveLength(5);
    update = nextEvent(mesh, 'endpoints', (e) => e.endpoints.length === 2);
    server.deleteSlice('default', 'reviews-abc');
    await update;
    expect(ids(rt)).toEqual(['10.1.0.4:9376', '10.1.0.5:9376']);
  });

  it('scale down: terminating pods are drained (no new picks) and then removed', async () => {
    const { server, mesh } = await setup();
    const rt = await resolved(mesh, 'reviews.default', 8080);
    const draining = nextEvent(mesh, 'endpoints', (e) => e.endpoints.some((x) => x.health === 'draining'));
    server.applySlice(
      reviewsSlice('reviews-abc', [
        ...pods('reviews', 1, 1),
        ...pods('reviews', 2, 3, { ready: false, serving: true, terminating: true }),
      ]),
    );
    await draining;
    expect(rt.endpoints.map((s) => s.endpoint.health).sort()).toEqual(['draining', 'draining', 'healthy']);
    expect([...picked(rt, 30)]).toEqual(['10.1.0.1:9376']);
    // The last ready pod goes too: the still-serving terminating ones take traffic meanwhile.
    const onlyDraining = nextEvent(mesh, 'endpoints', (e) =>
      e.endpoints.every((x) => x.health === 'draining'),
    );
    server.applySlice(
      reviewsSlice('reviews-abc', pods('reviews', 2, 3, { ready: false, serving: true, terminating: true })),
    );
    await onlyDraining;
    expect(picked(rt, 30)).toEqual(new Set(['10.1.0.2:9376', '10.1.0.3:9376']));
    const removed = nextEvent(mesh, 'endpoints', (e) => e.endpoints.length === 1);
    server.applySlice(reviewsSlice('reviews-abc', pods('reviews', 4, 4)));
    await removed;
    expect(ids(rt)).toEqual(['10.1.0.4:9376']);
  });

  it('410 Expired ERROR event: relists once and publishes only the real difference', async () => {
    const { server, mesh, discovery } = await setup();
    const rt = await resolved(mesh, 'reviews.default', 8080);
    await watchOpen(server);
    const updates: Array<{ added: number; removed: number; n: number }> = [];
    mesh.events.on('endpoints', (e) =>
      updates.push({ added: e.added, removed: e.removed, n: e.endpoints.length }),
    );
    const stateBefore = rt.endpoints.map((s) => s);
    // Nothing changed while the watch was expired: the relist publishes nothing.
    let relisted = nextEmit(server, 'watch');
    server.expireWatches();
    await relisted;
    const w = discovery.watch('default', 'reviews');
    expect(w?.stats.gone).toBe(1);
    expect(w?.stats.relists).toBe(1);
    expect(updates).toEqual([]);
    // Endpoint state (load, health) survives the relist.
    expect(rt.endpoints.every((s, i) => s === stateBefore[i])).toBe(true);
    // One pod added while the client could not see it: exactly one addition, no duplicates.
    server.applySliceSilently(reviewsSlice('reviews-abc', pods('reviews', 1, 4)));
    const applied = nextEvent(mesh, 'endpoints');
    relisted = nextEmit(server, 'watch');
    server.expireWatches();
    await Promise.all([applied, relisted]);
    expect(updates).toEqual([{ added: 1, removed: 0, n: 4 }]);
    expect(w?.stats.relists).toBe(2);
    expect(ids(rt)).toEqual(['10.1.0.1:9376', '10.1.0.2:9376', '10.1.0.3:9376', '10.1.0.4:9376']);
  });

  it('HTTP 410 on a watch request also relists once', async () => {
    const { server, mesh, discovery } = await setup();
    server.goneAsHttp = true;
    const rt = await resolved(mesh, 'reviews.default', 8080);
    await watchOpen(server);
    server.applySliceSilently(reviewsSlice('reviews-abc', pods('reviews', 1, 2)));
    server.compact();
    const applied = nextEvent(mesh, 'endpoints');
    server.endWatches();
    const ev = await applied;
    expect(ev).toMatchObject({ added: 0, removed: 1 });
    expect(server.requests.some((r) => r.watch && r.status === 410)).toBe(true);
    expect(discovery.watch('default', 'reviews')?.stats.relists).toBe(1);
    expect(ids(rt)).toHaveLength(2);
  });

  it('follows bookmarks: a watch resumed after a normal end starts at the bookmark version', async () => {
    const { server, mesh, discovery } = await setup();
    await resolved(mesh, 'reviews.default', 8080);
    await watchOpen(server);
    // Changes to other services move the resourceVersion; the bookmark carries it.
    server.applySlice(makeSlice({ name: 'other-1', service: 'other', ports: [{ port: 80 }], endpoints: [] }));
    server.bookmark();
    const rv = server.resourceVersion;
    const resumed = nextEmit<{ resourceVersion: string }>(server, 'watch');
    // The stream delivers the bookmark before its end, in order.
    server.endWatches();
    expect((await resumed).resourceVersion).toBe(rv);
    expect(discovery.watch('default', 'reviews')?.stats.bookmarks).toBe(1);
  });

  it('re-reads the Service when a watch ends: a changed port mapping is applied', async () => {
    const { server, mesh } = await setup();
    const rt = await resolved(mesh, 'reviews.default', 8080);
    await watchOpen(server);
    expect(ids(rt)[0]).toBe('10.1.0.1:9376');
    // Port 8080 now fronts the pods' "admin" port.
    server.setService(makeService('reviews', [{ name: 'admin', port: 8080, targetPort: 'admin' }]));
    const update = nextEvent(mesh, 'endpoints', (e) => e.endpoints[0]?.port === 9901);
    server.endWatches();
    await update;
    expect(ids(rt)).toEqual(['10.1.0.1:9901', '10.1.0.2:9901', '10.1.0.3:9901']);
  });

  it('restarts a watch that goes silent (watchdog), resuming from the last version', async () => {
    const { server, mesh, discovery } = await setup({ stallTimeout: '150ms' });
    server.stallWatches = true;
    const firstWatch = nextEmit<{ stalled: boolean }>(server, 'watch');
    const rt = await resolved(mesh, 'reviews.default', 8080);
    expect((await firstWatch).stalled).toBe(true);
    const secondWatch = nextEmit<{ stalled: boolean; resourceVersion: string }>(server, 'watch');
    server.stallWatches = false;
    const second = await secondWatch;
    expect(second.stalled).toBe(false);
    expect(discovery.watch('default', 'reviews')?.stats.stalls).toBe(1);
    expect(discovery.watch('default', 'reviews')?.stats.lists).toBe(1);
    const update = nextEvent(mesh, 'endpoints', (e) => e.endpoints.length === 4);
    server.applySlice(reviewsSlice('reviews-abc', pods('reviews', 1, 4)));
    await update;
    expect(ids(rt)).toHaveLength(4);
  });

  it('API server restart: keeps the last endpoints while it is down, then resumes', async () => {
    const { server, mesh } = await setup();
    const rt = await resolved(mesh, 'reviews.default', 8080);
    await watchOpen(server);
    const down = nextEvent(mesh, 'discoveryError');
    await server.stop();
    const err = (await down).error;
    expect(isMeshErrorCode(err, ErrorCodes.DISCOVERY)).toBe(true);
    expect(picked(rt, 10).size).toBe(3);
    expect(mesh.snapshot().services['reviews.default.svc.cluster.local:8080']?.discovery.lastError).toMatch(
      /kubernetes/,
    );
    server.applySliceSilently(reviewsSlice('reviews-abc', pods('reviews', 1, 3)));
    const back = nextEmit(server, 'watch');
    await server.restart();
    await back;
    const update = nextEvent(mesh, 'endpoints', (e) => e.endpoints.length === 5);
    server.applySlice(reviewsSlice('reviews-abc', pods('reviews', 1, 5)));
    await update;
    expect(picked(rt, 20).size).toBe(5);
  });

  it('pod IP reused by a new pod: the old pod is retired and a fresh endpoint takes its place', async () => {
    const { server, mesh } = await setup();
    const rt = await resolved(mesh, 'reviews.default', 8080);
    const old = rt.endpoint('10.1.0.2:9376');
    expect(old?.endpoint.metadata.pod).toBe('reviews-2');
    if (old) old.failures = 7;
    const removed = nextEvent(mesh, 'endpointRemoved', (e) => e.endpoint.id === '10.1.0.2:9376');
    const added = nextEvent(mesh, 'endpoints', (e) =>
      e.endpoints.some((x) => x.metadata.pod === 'reviews-new'),
    );
    server.applySlice(
      reviewsSlice('reviews-abc', [
        ...pods('reviews', 1, 1),
        { ip: '10.1.0.2', pod: 'reviews-new', podUid: 'uid-new', zone: 'a' },
        ...pods('reviews', 3, 3),
      ]),
    );
    expect((await removed).endpoint).toBe(old);
    await added;
    const fresh = rt.endpoint('10.1.0.2:9376');
    expect(fresh).not.toBe(old);
    expect(fresh?.failures).toBe(0);
    expect(fresh?.endpoint.metadata).toMatchObject({ pod: 'reviews-new', podUid: 'uid-new' });
  });

  it('403 without RBAC surfaces as a clear coded discovery error', async () => {
    const { server, mesh } = await setup();
    server.forbidden.add('endpointslices');
    const err = nextEvent(mesh, 'discoveryError');
    const rt = await resolved(mesh, 'reviews.default', 8080);
    const e = (await err).error;
    expect(isMeshErrorCode(e, ErrorCodes.DISCOVERY)).toBe(true);
    expect((e as { details?: Record<string, unknown> }).details).toMatchObject({
      status: 403,
      reason: 'Forbidden',
    });
    expect(e.message).toMatch(/cannot list resource "endpointslices".*RBAC permission/);
    const r = rt.pick({ attempt: 0 });
    expect(r.kind === 'fail' && r.error.message).toMatch(/RBAC/);
  });

  it('an error storm is held to the request-rate bound (the limiter delays requests past the burst)', async () => {
    const { server, mesh, discovery } = await setup({
      maxRequestsPerSecond: 4,
      backoff: { base: '1ms', max: '2ms' },
    });
    server.forbidden.add('endpointslices');
    let errors = 0;
    const enough = new Promise<void>((resolve) => {
      mesh.events.on('discoveryError', () => {
        if (++errors === 6) resolve();
      });
    });
    mesh.resolve('reviews.default', 8080);
    await enough;
    // 6 failed cycles of (get service, list) = 12 requests, past the burst of 8.
    expect(discovery.client.stats.requests).toBeGreaterThanOrEqual(12);
    expect(discovery.client.stats.rateLimitedMs).toBeGreaterThan(0);
  });

  it('429 Too Many Requests: reported with its Retry-After, then the watch proceeds', async () => {
    const { server, mesh } = await setup();
    server.throttleNext = 1;
    const err = nextEvent(mesh, 'discoveryError');
    const rt = mesh.resolve('reviews.default', 8080);
    const e = (await err).error as Error & { details?: Record<string, unknown> };
    expect(e.details).toMatchObject({ status: 429, reason: 'TooManyRequests', retryAfterMs: 1000 });
    const listed = nextEvent(mesh, 'endpoints');
    await listed;
    expect(rt?.endpoints).toHaveLength(3);
  });

  it('zone-preferred routing uses the local zone when every endpoint is hinted', async () => {
    const { server, mesh } = await setup({ zone: 'b' }, (s) => {
      s.setService(reviewsService());
      s.applySlice(
        reviewsSlice('reviews-abc', [
          { ip: '10.1.0.1', zone: 'a', forZones: ['a'] },
          { ip: '10.1.0.2', zone: 'b', forZones: ['b'] },
          { ip: '10.1.0.3', zone: 'c', forZones: ['c'] },
        ]),
      );
    });
    const rt = await resolved(mesh, 'reviews.default', 8080);
    expect(picked(rt, 20)).toEqual(new Set(['10.1.0.2:9376']));
    // A new endpoint without hints: hints are ignored (kube-proxy semantics).
    const update = nextEvent(mesh, 'endpoints', (e) => e.endpoints.length === 4);
    server.applySlice(
      makeSlice({
        name: 'reviews-x',
        service: 'reviews',
        ports: [{ name: 'http', port: 9376 }],
        endpoints: [{ ip: '10.1.0.4' }],
      }),
    );
    await update;
    expect(picked(rt, 40).size).toBe(4);
  });

  it('serves the real kind-cluster kube-dns slice (v1beta1 topology) through the watch', async () => {
    const list = JSON.parse(
      readFileSync(
        new URL('./fixtures/victoriametrics-kind-cluster-endpointslicelist-v1beta1.json', import.meta.url),
        'utf8',
      ),
    ) as { items: Array<Record<string, unknown>> };
    const { mesh } = await setup({}, (s) => {
      s.setService(
        makeService(
          'kube-dns',
          [
            { name: 'dns', port: 53 },
            { name: 'dns-tcp', port: 53 },
            { name: 'metrics', port: 9153 },
          ],
          'kube-system',
        ),
      );
      for (const item of list.items) s.applySlice(item);
    });
    const rt = await resolved(mesh, 'kube-dns.kube-system.svc.cluster.local', 9153);
    expect(ids(rt)).toEqual(['10.244.0.3:9153', '10.244.0.4:9153']);
    expect(rt.endpoints.map((s) => s.endpoint.metadata.pod).every((p) => p?.startsWith('coredns-'))).toBe(
      true,
    );
  });

  it('close() aborts the open watch and leaves no request in flight', async () => {
    const { server, mesh: m } = await setup();
    await resolved(m, 'reviews.default', 8080);
    await watchOpen(server);
    expect(server.openWatches).toBe(1);
    const closed = nextEmit(server, 'watchClosed');
    await m.close();
    mesh = undefined;
    await closed;
    expect(server.openWatches).toBe(0);
  });

  it('parses watch events split across chunks', async () => {
    const { server, mesh } = await setup();
    server.splitWrites = true;
    const rt = await resolved(mesh, 'reviews.default', 8080);
    const update = nextEvent(mesh, 'endpoints', (e) => e.endpoints.length === 6);
    server.applySlice(reviewsSlice('reviews-abc', pods('reviews', 1, 6)));
    await update;
    expect(ids(rt)).toHaveLength(6);
  });
});
