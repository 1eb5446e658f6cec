import {
  DEFAULT_POLICY,
  ErrorCodes,
  isMeshError,
  Mesh,
  type MeshError,
  parseConfig,
  type RouteRequest,
  type RouteTarget,
} from '@meshlet/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  fromJson,
  ListenerRouter,
  type ListenerUpdate,
  routePolicy,
  selectVirtualHost,
  translateRouteConfig,
} from '../src/index.js';
import type { ClusterRef } from '../src/router.js';

const meshes: Mesh[] = [];
afterEach(async () => {
  for (const m of meshes.splice(0)) await m.close();
});

function req(path: string, headers: Record<string, string> = {}, method = 'GET'): RouteRequest {
  return { method, path, header: (n) => headers[n] };
}

function setup(routeConfigJson: unknown, listener: Partial<ListenerUpdate> = {}) {
  const mesh = new Mesh(parseConfig({}));
  meshes.push(mesh);
  const refs = new Map<string, ClusterRef>();
  const cluster = (name: string): ClusterRef => {
    let r = refs.get(name);
    if (!r) {
      const runtime = mesh.ensureService({
        key: name,
        discoveryType: 'test',
        createSource: () => ({ start: () => {}, close: () => {} }),
      });
      r = { name, runtime, drops: [], dropped: new Map() };
      refs.set(name, r);
    }
    return r;
  };
  const rc = translateRouteConfig(fromJson('envoy.config.route.v3.RouteConfiguration', routeConfigJson));
  const router = new ListenerRouter('svc', 'svc', () => undefined);
  router.setRoutes(
    {
      name: 'svc',
      rdsName: 'rc',
      routeConfig: undefined,
      maxStreamDurationMs: undefined,
      httpFilters: ['router'],
      fault: undefined,
      ...listener,
    },
    rc,
    cluster,
  );
  const pick = (r: RouteRequest): string => {
    const t = router.route(r);
    if (t === undefined || isMeshError(t)) throw t ?? new Error('no table');
    return (t as RouteTarget).runtime.name;
  };
  return { router, pick, refs };
}

const vh = (routes: unknown[], domains = ['*']) => ({
  name: 'rc',
  virtualHosts: [{ name: 'vh', domains, routes }],
});

describe('route matching', () => {
  it('matches path prefix / exact / safe_regex, case sensitivity, first match wins', () => {
    const { pick } = setup(
      vh([
        { match: { path: '/exact' }, route: { cluster: 'exact' } },
        { match: { safeRegex: { regex: '/items/[0-9]+' } }, route: { cluster: 'regex' } },
        { match: { prefix: '/CI', caseSensitive: false }, route: { cluster: 'ci' } },
        { match: { prefix: '/' }, route: { cluster: 'default' } },
      ]),
    );
    expect(pick(req('/exact'))).toBe('exact');
    expect(pick(req('/exact/more'))).toBe('default');
    expect(pick(req('/items/42'))).toBe('regex');
    expect(pick(req('/items/42x'))).toBe('default'); // regexes match the whole path
    expect(pick(req('/ci/x'))).toBe('ci');
    expect(pick(req('/Ci/x'))).toBe('ci');
  });

  it('header matchers: exact, prefix, suffix, contains, regex, present, range, invert, string_match', () => {
    const route = (name: string, h: Record<string, unknown>) => ({
      match: { prefix: '/', headers: [{ name: 'x-h', ...h }] },
      route: { cluster: name },
    });
    const { pick } = setup(
      vh([
        route('exact', { exactMatch: 'a' }),
        route('prefix', { prefixMatch: 'pre-' }),
        route('suffix', { suffixMatch: '-suf' }),
        route('contains', { containsMatch: 'mid' }),
        route('regex', { safeRegexMatch: { regex: 'r[0-9]' } }),
        route('range', { rangeMatch: { start: 100, end: 200 } }),
        route('ignorecase', { stringMatch: { exact: 'upper', ignoreCase: true } }),
        route('inverted', { exactMatch: 'zzz', invertMatch: true }),
        {
          match: { prefix: '/', headers: [{ name: 'x-p', presentMatch: true }] },
          route: { cluster: 'present' },
        },
        { match: { prefix: '/' }, route: { cluster: 'default' } },
      ]),
    );
    expect(pick(req('/', { 'x-h': 'a' }))).toBe('exact');
    expect(pick(req('/', { 'x-h': 'pre-1' }))).toBe('prefix');
    expect(pick(req('/', { 'x-h': '1-suf' }))).toBe('suffix');
    expect(pick(req('/', { 'x-h': 'amidb' }))).toBe('contains');
    expect(pick(req('/', { 'x-h': 'r7' }))).toBe('regex');
    expect(pick(req('/', { 'x-h': '150' }))).toBe('range');
    expect(pick(req('/', { 'x-h': 'UPPER' }))).toBe('ignorecase');
    expect(pick(req('/', { 'x-h': 'other' }))).toBe('inverted');
    expect(pick(req('/', { 'x-h': 'zzz' }))).toBe('default');
    expect(pick(req('/', { 'x-p': '' }))).toBe('present');
    expect(pick(req('/'))).toBe('default'); // an absent header never matches, inverted or not
  });

  it('runtime fraction, query-parameter routes (never match), and no route → coded error', () => {
    const { router, pick } = setup(
      vh([
        {
          match: { prefix: '/q', queryParameters: [{ name: 'a', presentMatch: true }] },
          route: { cluster: 'query' },
        },
        {
          match: {
            prefix: '/f',
            runtimeFraction: { defaultValue: { numerator: 25, denominator: 'HUNDRED' } },
          },
          route: { cluster: 'fraction' },
        },
        { match: { prefix: '/f' }, route: { cluster: 'rest' } },
      ]),
    );
    expect(pick(req('/f', {}))).toMatch(/fraction|rest/);
    const n = 4000;
    let hit = 0;
    for (let i = 0; i < n; i++) if (pick(req('/f')) === 'fraction') hit++;
    expect(hit / n).toBeGreaterThan(0.21);
    expect(hit / n).toBeLessThan(0.29);
    const err = router.route(req('/q?a=1')) as MeshError;
    expect(err.code).toBe(ErrorCodes.UNKNOWN_SERVICE);
    expect(err.message).toMatch(/no route of "svc" matches GET \/q\?a=1/);
  });

  it('weighted clusters split by weight and skip zero weights', () => {
    const { pick } = setup(
      vh([
        {
          match: { prefix: '/' },
          route: {
            weightedClusters: {
              clusters: [
                { name: 'a', weight: 70 },
                { name: 'b', weight: 30 },
                { name: 'zero', weight: 0 },
              ],
            },
          },
        },
      ]),
    );
    const counts: Record<string, number> = {};
    const n = 5000;
    for (let i = 0; i < n; i++) {
      const c = pick(req('/'));
      counts[c] = (counts[c] ?? 0) + 1;
    }
    expect(counts.zero).toBeUndefined();
    expect((counts.a ?? 0) / n).toBeGreaterThan(0.66);
    expect((counts.a ?? 0) / n).toBeLessThan(0.74);
  });
});

describe('per-route policy, hash policy and fault injection', () => {
  it('merges route timeout, max stream duration and retry policy over the cluster policy', () => {
    const rc = translateRouteConfig(
      fromJson('envoy.config.route.v3.RouteConfiguration', {
        name: 'rc',
        virtual_hosts: [
          {
            name: 'vh',
            domains: ['*'],
            routes: [
              {
                match: { prefix: '/' },
                route: {
                  cluster: 'c',
                  timeout: '3s',
                  max_stream_duration: { max_stream_duration: '2s' },
                  retry_policy: {
                    retry_on: '5xx,connect-failure',
                    num_retries: 4,
                    per_try_timeout: '0.5s',
                    retry_back_off: { base_interval: '0.01s', max_interval: '0.1s' },
                  },
                },
              },
            ],
          },
        ],
      }),
    );
    const route = rc.virtualHosts[0]?.routes[0];
    if (!route) throw new Error('no route');
    const p = routePolicy(DEFAULT_POLICY, route, undefined);
    expect(p.timeoutMs).toBe(2000); // min(route timeout, max stream duration)
    expect(p.perTryTimeoutMs).toBe(500);
    expect(p.retry.maxRetries).toBe(4);
    expect([...p.retry.on].sort()).toEqual(['5xx', 'connect-failure']);
    expect(p.retry.backoffBaseMs).toBe(10);
    expect(p.retry.backoffMaxMs).toBe(100);
    expect(p.retry.budget).toBe(DEFAULT_POLICY.retry.budget);
    // gRPC calls retry UNAVAILABLE for 5xx (a reset too); connect failures are failures of their own.
    expect(p.retry.grpcCodes).toEqual([14]);
    const connectOnly = routePolicy(
      DEFAULT_POLICY,
      {
        ...route,
        retry: { ...(route.retry as NonNullable<typeof route.retry>), retryOn: ['connect-failure'] },
      },
      undefined,
    );
    expect(connectOnly.retry.grpcCodes).toEqual([]);
    expect([...connectOnly.retry.on]).toEqual(['connect-failure']);
  });

  it('keeps the gRPC retry_on conditions as status codes for gRPC transports', () => {
    const rc = translateRouteConfig(
      fromJson('envoy.config.route.v3.RouteConfiguration', {
        name: 'rc',
        virtual_hosts: [
          {
            name: 'vh',
            domains: ['*'],
            routes: [
              {
                match: { prefix: '/' },
                route: {
                  cluster: 'c',
                  retry_policy: {
                    retry_on: 'cancelled,deadline-exceeded,internal,resource-exhausted',
                    num_retries: 2,
                  },
                },
              },
            ],
          },
        ],
      }),
    );
    const route = rc.virtualHosts[0]?.routes[0];
    if (!route) throw new Error('no route');
    const p = routePolicy(DEFAULT_POLICY, route, undefined);
    expect(p.retry.grpcCodes).toEqual([1, 4, 13, 8]);
    // The same names are the pipeline's gRPC conditions; an HTTP call matches none of them.
    expect([...p.retry.on].sort()).toEqual([
      'cancelled',
      'deadline-exceeded',
      'internal',
      'resource-exhausted',
    ]);
    expect(p.retry.maxRetries).toBe(2);
    expect(DEFAULT_POLICY.retry.grpcCodes).toBeUndefined();
  });

  it('hashes the route hash policy header and shares targets when there is nothing per request', () => {
    const { router } = setup(
      vh([
        {
          match: { prefix: '/' },
          route: { cluster: 'c', hashPolicy: [{ header: { headerName: 'x-user' } }] },
        },
      ]),
    );
    const a1 = router.route(req('/', { 'x-user': 'alice' })) as RouteTarget;
    const a2 = router.route(req('/', { 'x-user': 'alice' })) as RouteTarget;
    const b = router.route(req('/', { 'x-user': 'bob' })) as RouteTarget;
    expect(a1.hash).toBeTypeOf('number');
    expect(a1.hash).toBe(a2.hash);
    expect(b.hash).not.toBe(a1.hash);
    const none1 = router.route(req('/')) as RouteTarget;
    const none2 = router.route(req('/')) as RouteTarget;
    expect(none1.hash).toBeUndefined();
    expect(none1).toBe(none2); // no allocation per request
  });

  it('applies fault delay/abort percentages only when the fault filter is in the chain', () => {
    const routes = vh([
      {
        match: { prefix: '/' },
        route: { cluster: 'c' },
        typed_per_filter_config: {
          'envoy.filters.http.fault': {
            '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault',
            delay: { fixed_delay: '0.25s', percentage: { numerator: 100, denominator: 'HUNDRED' } },
            abort: { http_status: 503, percentage: { numerator: 500000, denominator: 'MILLION' } },
          },
        },
      },
    ]);
    const on = setup(routes, { httpFilters: ['fault', 'router'] }).router;
    vi.spyOn(Math, 'random').mockReturnValue(0.4);
    const t = on.route(req('/')) as RouteTarget;
    expect(t).toMatchObject({ delayMs: 250, abortStatus: 503 });
    vi.spyOn(Math, 'random').mockReturnValue(0.6);
    expect(on.route(req('/'))).toMatchObject({ delayMs: 250, abortStatus: 0 });
    const off = setup(routes, { httpFilters: ['router'] }).router;
    expect(off.route(req('/'))).toMatchObject({ delayMs: 0, abortStatus: 0 });
  });

  it('drops a share of requests per EDS drop_overloads with a coded error', () => {
    const { router, refs } = setup(vh([{ match: { prefix: '/' }, route: { cluster: 'c' } }]));
    (refs.get('c') as ClusterRef).drops = [{ category: 'lb', ppm: 1_000_000 }];
    const err = router.route(req('/')) as MeshError;
    expect(err.code).toBe(ErrorCodes.OVERLOADED);
    expect(err.message).toMatch(/drop_overload "lb"/);
  });
});

describe('virtual host selection', () => {
  it('prefers exact, then suffix/prefix wildcards (longest), then *', () => {
    const hosts = [
      { name: 'star', domains: ['*'], routes: [] },
      { name: 'suffix', domains: ['*.example.com'], routes: [] },
      { name: 'longsuffix', domains: ['*.api.example.com'], routes: [] },
      { name: 'prefix', domains: ['reviews.*'], routes: [] },
      { name: 'exact', domains: ['reviews:8080'], routes: [] },
    ];
    expect(selectVirtualHost(hosts, 'reviews:8080')?.name).toBe('exact');
    expect(selectVirtualHost(hosts, 'x.api.example.com')?.name).toBe('longsuffix');
    expect(selectVirtualHost(hosts, 'x.example.com')?.name).toBe('suffix');
    expect(selectVirtualHost(hosts, 'reviews.default')?.name).toBe('prefix');
    expect(selectVirtualHost(hosts, 'other')?.name).toBe('star');
    expect(selectVirtualHost(hosts.slice(1), 'other')).toBeUndefined();
  });
});
