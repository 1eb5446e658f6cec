import { lookup } from 'node:dns/promises';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { type FakeDnsServer, startDnsServer } from '../../../test/helpers/dns.js';
import { nextEvent } from '../../../test/helpers/events.js';
import { type DiscoveryUpdate, type DnsDiscoveryConfig, DnsSource, Mesh, parseConfig } from '../src/index.js';

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

  it('keeps the dns segment in the path of every problem inside dns:', () => {
    const issues = (services: Record<string, unknown>) => {
      try {
        parseConfig({ services });
        return '';
      } catch (err) {
        return (err as Error).message;
      }
    };
    const text = issues({ r: { dns: { name: 'x.test:80', tries: 0, refreshInterval: 'soon', bogus: 1 } } });
    expect(text).toContain('services.r.dns.refreshInterval: must be a duration');
    expect(text).toContain('services.r.dns.tries: must be >= 1');
    expect(text).toContain('services.r.dns.bogus: unknown field');
    expect(issues({ r: { dns: { port: 80 } } })).toContain('services.r.dns.name: is required');
    // The shorthand string is the name itself: its problems are reported at `dns`.
    expect(issues({ r: { dns: 'x.test' } })).toContain('services.r.dns: "x.test" has no port');
    expect(issues({ r: { discovery: { type: 'dns', name: 'x.test:80', recordType: 'MX' } } })).toContain(
      'services.r.discovery.recordType: must be one of A, AAAA, A+AAAA, SRV',
    );
  });
});

describe('DNS discovery with the system resolver (getaddrinfo)', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    vi.useRealTimers();
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  const dnsConfig = (dns: unknown): DnsDiscoveryConfig =>
    parseConfig({ services: { r: { dns } } }).services.r?.discovery.config as DnsDiscoveryConfig;

  it('is the default, refreshes every 5s, and gives way to dns when a DNS-protocol option asks', () => {
    expect(dnsConfig('ratings.test:80')).toMatchObject({ resolver: 'system', refreshIntervalMs: 5000 });
    expect(dnsConfig({ name: 'ratings.test:80', servers: ['127.0.0.1'] })).toMatchObject({
      resolver: 'dns',
      refreshIntervalMs: 30_000,
    });
    expect(dnsConfig({ name: '_http._tcp.ratings.test', recordType: 'SRV' }).resolver).toBe('dns');
    expect(() =>
      parseConfig({ services: { r: { dns: { name: 'a:1', resolver: 'system', timeout: '1s' } } } }),
    ).toThrow(/services\.r\.dns\.timeout: applies to resolver dns only/);
    expect(() =>
      parseConfig({ services: { r: { dns: { name: '_x._tcp.a', resolver: 'system', recordType: 'SRV' } } } }),
    ).toThrow(/services\.r\.dns\.recordType: SRV needs resolver dns/);
  });

  it('resolves localhost from /etc/hosts as Node does, where the DNS protocol cannot', async () => {
    const expected = (await lookup('localhost', { all: true })).map((a) =>
      a.family === 6 ? `[${a.address}]:8080` : `${a.address}:8080`,
    );
    const mesh = new Mesh(parseConfig({ services: { local: { dns: 'localhost:8080' } } }));
    cleanups.push(() => mesh.close());
    await mesh.ready();
    const ids = mesh.service('local')?.endpoints.map((e) => e.id) ?? [];
    expect(ids.sort()).toEqual([...new Set(expected)].sort());
    expect(ids).toContain('127.0.0.1:8080');
  });

  it('re-resolves on its interval, keeps the last good answer on failure, and asks for the family', async () => {
    vi.useFakeTimers();
    let answer: Array<{ address: string; family: number }> = [{ address: '10.0.0.1', family: 4 }];
    let failing = false;
    const calls: unknown[] = [];
    const source = new DnsSource(
      dnsConfig({ name: 'svc.test:80', recordType: 'A' }),
      'r',
      undefined,
      async (name, opts) => {
        calls.push([name, opts]);
        if (failing) throw Object.assign(new Error('getaddrinfo EAI_AGAIN svc.test'), { code: 'EAI_AGAIN' });
        return answer;
      },
    );
    cleanups.push(() => source.close());
    const updates: DiscoveryUpdate[] = [];
    const errors: Error[] = [];
    source.start({ onUpdate: (u) => updates.push(u), onError: (e) => errors.push(e) });
    await vi.advanceTimersByTimeAsync(0);
    expect(calls).toEqual([['svc.test', { all: true, family: 4 }]]);
    expect(updates.map((u) => u.endpoints.map((e) => e.id))).toEqual([['10.0.0.1:80']]);
    answer = [
      { address: '10.0.0.1', family: 4 },
      { address: '10.0.0.2', family: 4 },
    ];
    await vi.advanceTimersByTimeAsync(4999);
    expect(calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(calls).toHaveLength(2);
    expect(updates.at(-1)?.endpoints.map((e) => e.id)).toEqual(['10.0.0.1:80', '10.0.0.2:80']);
    failing = true;
    await vi.advanceTimersByTimeAsync(5000);
    expect(errors[0]?.message).toMatch(
      /DNS A lookup of "svc\.test" \(system resolver\) failed: getaddrinfo EAI_AGAIN/,
    );
    expect(updates).toHaveLength(2);
  });
});
