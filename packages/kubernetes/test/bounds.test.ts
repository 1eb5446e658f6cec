import { ErrorCodes, isMeshErrorCode, Mesh, type MeshEventMap, parseConfig } from '@meshlet/core';
import { afterEach, describe, expect, it } from 'vitest';
import { NdjsonParser } from '../src/client.js';
import type { KubernetesSettings } from '../src/config.js';
import { KubernetesDiscovery } from '../src/discovery.js';
import { parseSlice } from '../src/slices.js';
import { FakeApiServer, makeSlice } from './fake-apiserver.js';
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
  kubernetes: Record<string, unknown>,
  init: (s: FakeApiServer) => void,
): Promise<{ server: FakeApiServer; mesh: Mesh; discovery: KubernetesDiscovery }> {
  server = await new FakeApiServer().start();
  init(server);
  const made = await meshWith(plainAccess(server.url), kubernetes);
  mesh = made.mesh;
  return { server, mesh: made.mesh, discovery: made.discovery };
}

function badSlice(): Record<string, unknown> {
  const slice = reviewsSlice('reviews-bad', [
    { ip: '10.1.0.1', pod: 'reviews-1' },
    { ip: 'not-an-ip', pod: 'reviews-2' },
    { ip: '10.1.0.3', pod: 'reviews-3' },
  ]);
  (slice.ports as Array<Record<string, unknown>>).push({ name: 'neg', port: -5, protocol: 'TCP' });
  (slice.ports as Array<Record<string, unknown>>).push({ name: 'big', port: 70000, protocol: 'TCP' });
  return slice;
}

describe('EndpointSlice validation', () => {
  it('parseSlice drops bad addresses and ports, naming each field', () => {
    const s = parseSlice(badSlice());
    expect(s?.endpoints.map((e) => e.address)).toEqual(['10.1.0.1', '10.1.0.3']);
    expect(s?.ports.map((p) => p.name)).toEqual(['http', 'admin']);
    expect(s?.problems).toEqual([
      'ports[2].port: -5 is not a port number (1-65535)',
      'ports[3].port: 70000 is not a port number (1-65535)',
      'endpoints[1].addresses[0]: "not-an-ip" is not an IPv4 address',
    ]);
    const v6 = parseSlice(
      makeSlice({
        name: 's6',
        service: 'x',
        addressType: 'IPv6',
        ports: [{ port: 80 }],
        endpoints: [{ ip: '10.0.0.1' }, { ip: 'fd00::1' }],
      }),
    );
    expect(v6?.endpoints.map((e) => e.address)).toEqual(['fd00::1']);
    expect(v6?.problems).toEqual(['endpoints[0].addresses[0]: "10.0.0.1" is not an IPv6 address']);
    const fq = parseSlice(
      makeSlice({
        name: 'sf',
        service: 'x',
        addressType: 'FQDN',
        ports: [{ port: 80 }],
        endpoints: [{ ip: 'db.example.com' }, { ip: 'a b' }],
      }),
    );
    expect(fq?.endpoints.map((e) => e.address)).toEqual(['db.example.com']);
  });

  it('bad entries never reach a pool: the valid ones are used and a coded discovery error names the slice and field', async () => {
    const { mesh: m } = await setup({}, (s) => {
      s.setService(reviewsService());
      s.applySlice(badSlice());
    });
    const errors: Array<MeshEventMap['discoveryError']> = [];
    m.events.on('discoveryError', (e) => errors.push(e));
    const rt = m.resolve('reviews.default.svc.cluster.local', 8080);
    await rt?.whenDiscovered();
    expect(rt?.endpoints.map((e) => e.id).sort()).toEqual(['10.1.0.1:9376', '10.1.0.3:9376']);
    await new Promise((r) => setImmediate(r));
    const err = errors[0]?.error;
    expect(isMeshErrorCode(err, ErrorCodes.DISCOVERY)).toBe(true);
    expect(err?.message).toMatch(
      /EndpointSlice default\/reviews-bad: .*endpoints\[1\]\.addresses\[0\]: "not-an-ip" is not an IPv4 address/,
    );
    expect(err?.message).toMatch(/ports\[2\]\.port: -5/);
    // Reported once per slice version, not on every publish.
    const count = errors.length;
    server?.applySlice(reviewsSlice('reviews-ok', pods('reviews', 7, 7)));
    await nextEvent(m, 'endpoints', (e) => e.service.startsWith('reviews'));
    expect(errors.length).toBe(count);
  });
});

describe('watch stream bounds', () => {
  it('the parser reads each byte once and refuses a line above the limit before buffering it all', () => {
    const p = new NdjsonParser(64 * 1024);
    const line = `${JSON.stringify({ type: 'ADDED', object: { pad: 'x'.repeat(60_000) } })}\n`;
    const bytes = Buffer.from(line.repeat(4));
    for (let i = 0; i < bytes.length; i += 1000) p.push(bytes.subarray(i, i + 1000));
    expect(p.bytesScanned).toBe(bytes.length);
    // A 50 MB line: refused once the limit is passed (here after ~64 KiB), never held whole.
    const big = new NdjsonParser(64 * 1024);
    const chunk = Buffer.alloc(16 * 1024, 0x61);
    let fed = 0;
    let error: unknown;
    try {
      for (; fed < 50e6; fed += chunk.length) big.push(chunk);
    } catch (e) {
      error = e;
    }
    expect((error as Error)?.name).toBe('WatchEventTooLargeError');
    expect(fed).toBeLessThanOrEqual(64 * 1024 + chunk.length);
  });

  it('an event above maxEventSize fails the watch with a coded error and the watch restarts from a list', async () => {
    const {
      server: s,
      mesh: m,
      discovery,
    } = await setup({ maxEventSize: 64 * 1024 }, (srv) => {
      srv.setService(reviewsService());
      srv.applySlice(reviewsSlice('reviews-abc', pods('reviews', 1, 2)));
    });
    const rt = m.resolve('reviews.default.svc.cluster.local', 8080);
    await rt?.whenDiscovered();
    if (s.openWatches === 0) await nextEmit(s, 'watch');
    const huge = reviewsSlice('reviews-huge', pods('reviews', 5, 5));
    (huge.metadata as Record<string, unknown>).annotations = { blob: 'x'.repeat(200_000) };
    const failed = nextEvent(m, 'discoveryError');
    s.applySlice(huge);
    const e = (await failed).error;
    expect(isMeshErrorCode(e, ErrorCodes.DISCOVERY)).toBe(true);
    expect(e.message).toMatch(
      /a watch event is larger than 65536 bytes \(kubernetes.maxEventSize\); the watch restarts from a fresh list/,
    );
    const watch = discovery.watch('default', 'reviews');
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if ((watch?.stats.relists ?? 0) >= 1) {
          clearInterval(t);
          resolve();
        }
      }, 5);
    });
    // The list (not a replay of the same watch event) brings the slice in.
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (rt?.endpoints.some((x) => x.id === '10.1.0.5:9376')) {
          clearInterval(t);
          resolve();
        }
      }, 5);
    });
    expect(rt?.endpoints.map((x) => x.id).sort()).toEqual([
      '10.1.0.1:9376',
      '10.1.0.2:9376',
      '10.1.0.5:9376',
    ]);
  });
});

describe('unknown names are bounded', () => {
  async function fakeClockMesh(kubernetes: Record<string, unknown>) {
    server = await new FakeApiServer().start();
    server.setService(reviewsService());
    server.applySlice(reviewsSlice('reviews-abc', pods('reviews', 1, 2)));
    let now = 0;
    const config = parseConfig({
      idleServiceTimeout: '1m',
      kubernetes: { backoff: { base: '10ms', max: '50ms' }, maxRequestsPerSecond: 1000, ...kubernetes },
    });
    const m = new Mesh(config, { now: () => now });
    const discovery = new KubernetesDiscovery(
      { settings: config.extensions.kubernetes as KubernetesSettings, access: plainAccess(server.url) },
      m,
    );
    m.onClose(() => discovery.close());
    m.addResolver(discovery);
    mesh = m;
    return { mesh: m, discovery, advance: (ms: number) => (now += ms) };
  }

  it('300 unknown Services: one 404 each, retries only on the not-found budget, closed when idle', async () => {
    const {
      mesh: m,
      discovery,
      advance,
    } = await fakeClockMesh({ notFoundTtl: '20ms', notFoundRequestsPerSecond: 50 });
    const unknown = Array.from({ length: 300 }, (_, i) =>
      m.resolve(`made-up-${i}.default.svc.cluster.local`, 8080),
    );
    await Promise.all(unknown.map((rt) => rt?.whenDiscovered()));
    for (const rt of unknown) expect(rt?.discovery.lastError).toMatch(/does not exist \(HTTP 404\)/);
    const main = () => discovery.client.stats.requests - discovery.client.stats.notFoundRequests;
    // One look-up each on the main budget; later ones (after the TTL) on the not-found budget.
    expect(main()).toBe(300);
    // The TTL (20 ms) passes: the names are looked up again, each on the not-found budget.
    await until(() => discovery.client.stats.notFoundRequests >= 20, 'look-ups after the TTL');
    // A real Service answers at once, its requests on the main budget, none of it spent by the retries.
    expect(main()).toBe(300);
    const reviews = m.resolve('reviews.default.svc.cluster.local', 8080);
    await reviews?.whenDiscovered();
    expect(reviews?.endpoints.length).toBe(2);
    expect(main()).toBeLessThanOrEqual(303); // service, list, watch
    const release = m.retain(reviews as NonNullable<typeof reviews>);
    // No request for a minute: the 300 runtimes and their watches are closed, their names forgotten.
    advance(61_000);
    expect(m.sweepIdle()).toBe(300);
    expect(m.services().map((s) => s.name)).toEqual(['reviews.default.svc.cluster.local:8080']);
    expect(Object.keys(discovery.snapshot().watches as object)).toEqual(['default/reviews']);
    // Their watches are closed (a closed watch's loop has ended: nothing retries for those names).
    expect(discovery.watch('default', 'made-up-0')).toBeUndefined();
    release();
  });

  it('a name found absent is remembered for its TTL: asked again, it fails at once without a request', async () => {
    const { mesh: m, discovery, advance } = await fakeClockMesh({ notFoundTtl: '1h' });
    const host = 'ghost.default.svc.cluster.local';
    await m.resolve(host, 8080)?.whenDiscovered();
    expect(discovery.client.stats.requests).toBe(1);
    advance(61_000);
    expect(m.sweepIdle()).toBe(1);
    const again = m.resolve(host, 8080);
    await again?.whenDiscovered();
    expect(again?.discovery.lastError).toMatch(/ghost does not exist/);
    expect(discovery.client.stats.requests).toBe(1);
    expect(discovery.snapshot().notFound).toBe(1);
  });
});

async function until(fn: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
