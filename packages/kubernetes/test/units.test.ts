import { readFileSync } from 'node:fs';
import { EndpointState, makeEndpoint, parseConfig } from '@meshlet/core';
import { describe, expect, it } from 'vitest';
import { readStatus as readStatusForTest } from '../src/client.js';
import {
  HINTS_KEY,
  KubernetesDiscovery,
  type KubernetesSettings,
  NdjsonParser,
  parseKubernetesSettings,
  parseSlice,
  RateLimiter,
  sliceEndpoints,
  zoneFilter,
} from '../src/index.js';

const fixture = (name: string): unknown =>
  JSON.parse(readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8'));

describe('EndpointSlice parsing', () => {
  it('reads every routing field of the v1 serialization fixture', () => {
    const slice = parseSlice(fixture('k8s-api-testdata-discovery.k8s.io.v1.EndpointSlice.json'));
    expect(slice).toBeDefined();
    expect(slice?.name).toBe('nameValue');
    expect(slice?.ports).toEqual([{ name: 'nameValue', port: 3, protocol: 'protocolValue' }]);
    const ep = slice?.endpoints[0];
    expect(ep).toMatchObject({
      address: 'addressesValue',
      ready: true,
      serving: true,
      terminating: true,
      zone: 'zoneValue',
      nodeName: 'nodeNameValue',
      hostname: 'hostnameValue',
      forZones: ['nameValue'],
    });
    // targetRef kind is a placeholder, not "Pod": the pod name is not taken from it.
    expect(ep?.podName).toBeUndefined();
    // addressType "addressTypeValue" is not one we can route to.
    expect(slice ? sliceEndpoints(slice, 'nameValue') : undefined).toEqual([]);
  });

  it('reads the real v1beta1 list from a kind cluster, zone from the topology map', () => {
    const list = fixture('victoriametrics-kind-cluster-endpointslicelist-v1beta1.json') as {
      items: unknown[];
    };
    const slices = list.items.map((i) => parseSlice(i));
    expect(slices.map((s) => s?.name)).toEqual(['kubernetes', 'kube-dns-22mvb']);
    const dns = slices[1];
    expect(dns?.ports.map((p) => `${p.name}/${p.protocol}/${p.port}`).sort()).toEqual([
      'dns-tcp/TCP/53',
      'dns/UDP/53',
      'metrics/TCP/9153',
    ]);
    const eps = dns ? sliceEndpoints(dns, 'dns-tcp') : [];
    expect(eps.length).toBe(2);
    for (const e of eps) {
      expect(e.port).toBe(53);
      expect(e.health).toBe('healthy');
      expect(e.metadata.pod).toMatch(/^coredns-66bff467f8-/);
      expect(e.metadata.node).toBe('kind-control-plane');
    }
    // The UDP port named "dns" is not an HTTP endpoint.
    expect(dns ? sliceEndpoints(dns, 'dns') : []).toEqual([]);
    const api = slices[0] ? sliceEndpoints(slices[0], 'https') : [];
    expect(api.map((e) => e.id)).toEqual(['172.18.0.2:6443']);
  });

  it('maps ready to healthy, serving-terminating to draining and drops the rest; keeps IPv6', () => {
    const slice = parseSlice({
      metadata: { name: 's1' },
      addressType: 'IPv6',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: [
        {
          addresses: ['fd00::1'],
          conditions: { ready: true },
          zone: 'a',
          hints: { forZones: [{ name: 'a' }] },
        },
        {
          addresses: ['fd00::2'],
          conditions: { ready: false, serving: true, terminating: true },
          targetRef: { kind: 'Pod', name: 'p2', uid: 'u2' },
        },
        { addresses: ['fd00::3'], conditions: { ready: false, serving: false, terminating: true } },
        { addresses: ['fd00::4'], conditions: {}, hostname: 'web-4' },
      ],
    });
    const eps = slice ? sliceEndpoints(slice, 'http') : [];
    expect(eps.map((e) => [e.id, e.health])).toEqual([
      ['[fd00::1]:8080', 'healthy'],
      ['[fd00::2]:8080', 'draining'],
      ['[fd00::4]:8080', 'healthy'],
    ]);
    expect(eps[0]?.locality.zone).toBe('a');
    expect(eps[0]?.metadata[HINTS_KEY]).toBe('a');
    expect(eps[1]?.metadata).toMatchObject({ pod: 'p2', podUid: 'u2', terminating: 'true', slice: 's1' });
    // The instance name people see: the Pod (targetRef.name), else the endpoint's hostname.
    expect(eps.map((e) => e.name)).toEqual([undefined, 'p2', 'web-4']);
  });
});

describe('watch stream parser', () => {
  it('handles partial chunks, several events in one chunk, and split multi-byte characters', () => {
    const p = new NdjsonParser();
    const text = `${JSON.stringify({ type: 'ADDED', object: { n: 'é🙂' } })}\n${JSON.stringify({ type: 'BOOKMARK' })}\n`;
    const bytes = new TextEncoder().encode(text);
    const out: unknown[] = [];
    // One byte at a time splits the multi-byte characters too.
    for (let i = 0; i < bytes.length; i++) out.push(...p.push(bytes.subarray(i, i + 1)));
    expect(out).toEqual([{ type: 'ADDED', object: { n: 'é🙂' } }, { type: 'BOOKMARK' }]);
    expect(p.push(new TextEncoder().encode('{"a":1}\n{"b":2}\n{"c"'))).toEqual([{ a: 1 }, { b: 2 }]);
    expect(p.push(':3}')).toEqual([]);
    expect(p.end()).toEqual([{ c: 3 }]);
  });

  it('rejects a malformed line', () => {
    expect(() => new NdjsonParser().push('{"type":\n')).toThrow(SyntaxError);
  });

  it('reads the Status fixture as the body of an ERROR event', () => {
    expect(readStatusForTest(fixture('k8s-api-testdata-core.v1.Status.json'))).toEqual({
      code: 6,
      reason: 'reasonValue',
      message: 'messageValue',
      retryAfterSeconds: 5,
    });
  });
});

describe('rate limiter', () => {
  it('allows a burst, then spaces requests at the configured rate', () => {
    let now = 0;
    const rl = new RateLimiter(2, 2, () => now);
    expect(rl.take()).toBe(0);
    expect(rl.take()).toBe(0);
    expect(rl.take()).toBe(500);
    now = 500;
    expect(rl.take()).toBe(500);
    now = 10_000;
    expect(rl.take()).toBe(0);
  });
});

describe('kubernetes config section', () => {
  it('parses every option with defaults', () => {
    const cfg = parseConfig({ kubernetes: {} });
    const k = cfg.extensions.kubernetes as KubernetesSettings;
    expect(k).toMatchObject({
      inCluster: 'auto',
      clusterDomain: 'cluster.local',
      zoneAware: true,
      watchTimeoutMs: 300_000,
      stallTimeoutMs: 120_000,
      requestTimeoutMs: 30_000,
      tokenRefreshMs: 60_000,
      backoffBaseMs: 500,
      backoffMaxMs: 30_000,
      maxRequestsPerSecond: 10,
    });
  });

  it('names every bad field by path, including policy fields of overrides', () => {
    const issues: Array<{ path: string; message: string }> = [];
    parseKubernetesSettings(
      {
        apiServer: 'ftp://x',
        inCluster: 'maybe',
        namespace: 'Bad_NS',
        stallTimeout: 'soon',
        backoff: { base: '2s', max: '1s' },
        services: { 'reviews.default': { port: 'http', lb: 'nope', timeout: 'x' }, 'a.b.c': {} },
        bogus: 1,
      },
      'kubernetes',
      issues,
    );
    const paths = issues.map((i) => i.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        'kubernetes.apiServer',
        'kubernetes.inCluster',
        'kubernetes.namespace',
        'kubernetes.stallTimeout',
        'kubernetes.backoff.max',
        'kubernetes.services.reviews.default.lb',
        'kubernetes.services.reviews.default.timeout',
        'kubernetes.services.a.b.c',
        'kubernetes.bogus',
      ]),
    );
  });

  it('keeps only the policy fields an override gives', () => {
    const issues: Array<{ path: string; message: string }> = [];
    const s = parseKubernetesSettings(
      { services: { reviews: { timeout: '2s', port: 9090 } } },
      'kubernetes',
      issues,
    );
    expect(issues).toEqual([]);
    expect(s.services.reviews?.policy).toEqual({ timeoutMs: 2000 });
    expect(s.services.reviews?.port).toBe(9090);
  });
});

describe('addressing', () => {
  const access = (inCluster: boolean) => ({
    server: 'http://127.0.0.1:1',
    ca: undefined,
    cert: undefined,
    key: undefined,
    insecureSkipTlsVerify: false,
    token: undefined,
    basic: undefined,
    namespace: 'shop',
    inCluster,
    source: 'test',
  });
  const settings = (raw: Record<string, unknown> = {}) => parseKubernetesSettings(raw, 'kubernetes', []);

  it('claims cluster names, short names in known namespaces, and single labels only in a cluster', async () => {
    const inside = new KubernetesDiscovery({
      settings: settings({ namespaces: ['payments'] }),
      access: access(true),
    });
    const outside = new KubernetesDiscovery({ settings: settings(), access: access(false) });
    try {
      expect(inside.parseHost('reviews.default.svc.cluster.local')).toEqual({
        service: 'reviews',
        namespace: 'default',
      });
      expect(inside.parseHost('Reviews.Default.svc.cluster.local.')).toEqual({
        service: 'reviews',
        namespace: 'default',
      });
      expect(inside.parseHost('reviews.default.svc')).toEqual({ service: 'reviews', namespace: 'default' });
      expect(inside.parseHost('reviews.shop')).toEqual({ service: 'reviews', namespace: 'shop' });
      expect(inside.parseHost('reviews.payments')).toEqual({ service: 'reviews', namespace: 'payments' });
      expect(inside.parseHost('reviews')).toEqual({ service: 'reviews', namespace: 'shop' });
      // External names are never claimed.
      expect(inside.parseHost('example.com')).toBeUndefined();
      expect(inside.parseHost('api.example.com')).toBeUndefined();
      expect(inside.parseHost('a.b.c.svc.cluster.local')).toBeUndefined();
      expect(inside.parseHost('127.0.0.1')).toBeUndefined();
      expect(outside.parseHost('reviews')).toBeUndefined();
      expect(outside.parseHost('reviews.shop')).toEqual({ service: 'reviews', namespace: 'shop' });
      // Every spelling of one service and port shares one key (one runtime, one watch).
      const keys = ['reviews.shop.svc.cluster.local', 'reviews.shop', 'reviews'].map(
        (h) => inside.resolve(h, 8080)?.key,
      );
      expect(new Set(keys)).toEqual(new Set(['reviews.shop.svc.cluster.local:8080']));
    } finally {
      await inside.close();
      await outside.close();
    }
  });

  it('applies per-service overrides: port by name and policy over the mesh defaults', async () => {
    const d = new KubernetesDiscovery({
      settings: settings({ services: { reviews: { port: 'grpc' } } }),
      access: access(true),
    });
    try {
      expect(d.resolve('reviews', 8080)?.key).toBe('reviews.shop.svc.cluster.local:grpc');
      expect(d.resolve('ratings', undefined)?.key).toBe('ratings.shop.svc.cluster.local');
    } finally {
      await d.close();
    }
  });
});

describe('zone-preferred routing', () => {
  const st = (ip: string, hints: string | undefined) =>
    new EndpointState(
      'svc',
      makeEndpoint({ address: ip, port: 80, metadata: hints === undefined ? {} : { [HINTS_KEY]: hints } }),
      0,
    );

  it('keeps endpoints hinted for the local zone when every endpoint has hints', () => {
    const f = zoneFilter('a');
    const a = st('10.0.0.1', 'a');
    const b = st('10.0.0.2', 'b');
    const ab = st('10.0.0.3', 'b,a');
    expect(f([a, b, ab], [a, b, ab])).toEqual([a, ab]);
    // One endpoint without hints: hints are ignored, as kube-proxy does.
    const none = st('10.0.0.4', undefined);
    expect(f([a, b, none], [a, b, none])).toEqual([a, b, none]);
    // No endpoint for this zone: all of them.
    expect(f([b], [b])).toEqual([b]);
  });
});
