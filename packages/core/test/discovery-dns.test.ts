import { afterEach, describe, expect, it } from 'vitest';
import { type FakeDnsServer, startDnsServer } from '../../../test/helpers/dns.js';
import { nextEvent } from '../../../test/helpers/events.js';
import { Mesh, parseConfig } from '../src/index.js';

describe('DNS discovery (against a real DNS server on loopback)', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function setup(dns: Record<string, unknown>): Promise<{ server: FakeDnsServer; mesh: Mesh }> {
    const server = await startDnsServer({
      A: { 'ratings.test': ['10.1.0.1', '10.1.0.2'], 'a.test': ['10.2.0.1'], 'b.test': ['10.2.0.2'] },
      AAAA: { 'ratings.test': ['fd00::1'] },
      SRV: {
        '_http._tcp.ratings.test': [
          { target: 'a.test', port: 8081, weight: 3, priority: 0 },
          { target: 'b.test', port: 8082, weight: 1, priority: 1 },
        ],
      },
    });
    cleanups.push(() => server.close());
    const mesh = new Mesh(
      parseConfig({
        services: { ratings: { dns: { servers: [server.address], timeout: '300ms', tries: 1, ...dns } } },
      }),
    );
    cleanups.push(() => mesh.close());
    return { server, mesh };
  }

  const ids = (mesh: Mesh) =>
    mesh
      .service('ratings')
      ?.endpoints.map((e) => e.id)
      .sort() ?? [];

  it('resolves A and AAAA records into endpoints', async () => {
    const { mesh } = await setup({ name: 'ratings.test:8080' });
    await mesh.ready();
    expect(ids(mesh)).toEqual(['10.1.0.1:8080', '10.1.0.2:8080', '[fd00::1]:8080']);
  });

  it('resolves one family when asked', async () => {
    const { mesh } = await setup({ name: 'ratings.test', port: 80, recordType: 'A' });
    await mesh.ready();
    expect(ids(mesh)).toEqual(['10.1.0.1:80', '10.1.0.2:80']);
  });

  it('resolves SRV records with their ports, weights and priorities', async () => {
    const { mesh } = await setup({ name: '_http._tcp.ratings.test', recordType: 'SRV' });
    await mesh.ready();
    expect(ids(mesh)).toEqual(['10.2.0.1:8081', '10.2.0.2:8082']);
    const a = mesh.service('ratings')?.endpoint('10.2.0.1:8081')?.endpoint;
    const b = mesh.service('ratings')?.endpoint('10.2.0.2:8082')?.endpoint;
    expect(a?.weight).toBe(3);
    expect(b?.priority).toBe(1);
  });

  it('skips SRV records with port 0 (RFC 2782: not available) instead of making an endpoint of them', async () => {
    const { server, mesh } = await setup({ name: '_http._tcp.ratings.test', recordType: 'SRV' });
    server.records.SRV = {
      '_http._tcp.ratings.test': [
        { target: 'a.test', port: 0, weight: 1, priority: 0 },
        { target: 'b.test', port: 8082, weight: 1, priority: 0 },
      ],
    };
    await mesh.ready();
    expect(ids(mesh)).toEqual(['10.2.0.2:8082']);
  });

  it('re-resolves periodically and applies changes', async () => {
    const { server, mesh } = await setup({
      name: 'ratings.test:8080',
      recordType: 'A',
      refreshInterval: '50ms',
      respectTtl: false,
    });
    await mesh.ready();
    const changed = nextEvent(mesh.events, 'endpoints', (e) => e.added === 1);
    server.records.A = { 'ratings.test': ['10.1.0.1', '10.1.0.3'] };
    const ev = await changed;
    expect(ev.removed).toBe(1);
    expect(ids(mesh)).toEqual(['10.1.0.1:8080', '10.1.0.3:8080']);
  });

  it('keeps the last good answer when the resolver fails, and recovers', async () => {
    const { server, mesh } = await setup({
      name: 'ratings.test:8080',
      recordType: 'A',
      refreshInterval: '50ms',
      respectTtl: false,
    });
    await mesh.ready();
    const failed = nextEvent(mesh.events, 'discoveryError');
    server.failing = true;
    const err = await failed;
    expect(err.error.message).toContain('DNS A lookup of "ratings.test" failed');
    expect(ids(mesh)).toEqual(['10.1.0.1:8080', '10.1.0.2:8080']);
    expect(mesh.snapshot().services.ratings?.discovery.lastError).toContain(
      'keeping the last good endpoints',
    );
    // NXDOMAIN (the name vanished) also keeps the last good answer.
    server.failing = false;
    server.records.A = {};
    await nextEvent(mesh.events, 'discoveryError');
    expect(ids(mesh)).toEqual(['10.1.0.1:8080', '10.1.0.2:8080']);
    const recovered = nextEvent(mesh.events, 'endpoints');
    server.records.A = { 'ratings.test': ['10.1.0.9'] };
    await recovered;
    expect(ids(mesh)).toEqual(['10.1.0.9:8080']);
  });

  it('reports a resolver that never answers, and ready() still resolves', async () => {
    const { server, mesh } = await setup({ name: 'ratings.test:8080', recordType: 'A' });
    server.failing = true;
    const err = await nextEvent(mesh.events, 'discoveryError');
    expect(err.error.message).toContain('failed');
    await mesh.ready();
    expect(mesh.service('ratings')?.picker.pick({ attempt: 0 }).kind).toBe('fail');
  });

  it('validates its options by path', () => {
    expect(() =>
      parseConfig({ services: { r: { dns: { name: 'x.test', servers: ['not-an-ip'], recordType: 'MX' } } } }),
    ).toThrowError(
      /services\.r\.dns\.recordType: must be one of[\s\S]*services\.r\.dns\.servers\[0\]: must be an IP address/,
    );
  });
});
