import { MAX_TIMER_MS } from '@meshlet/core';
import { describe, expect, it } from 'vitest';
import {
  compileSafeRegex,
  fromJson,
  type HeaderMatch,
  translateCluster,
  translateEndpoints,
  translateListener,
  translateRouteConfig,
} from '../src/index.js';

const rds = (routes: unknown[], maxRegexProgramSize?: number) =>
  translateRouteConfig(
    fromJson('envoy.config.route.v3.RouteConfiguration', {
      name: 'r',
      virtualHosts: [{ name: 'v', domains: ['*'], routes }],
    }),
    '',
    { maxRegexProgramSize },
  );

const headerRoute = (matcher: Record<string, unknown>, max?: number) =>
  rds([{ match: { prefix: '/', headers: [{ name: 'x-user', ...matcher }] }, route: { cluster: 'a' } }], max)
    .virtualHosts[0]?.routes[0]?.match.headers[0] as HeaderMatch;

describe('xDS durations', () => {
  it('a valid duration longer than a timer holds (a 30-day route timeout) is clamped to 2^31-1 ms', () => {
    const route = rds([
      {
        match: { prefix: '/' },
        route: {
          cluster: 'a',
          timeout: '2592000s',
          retryPolicy: { perTryTimeout: '2592000s', retryBackOff: { baseInterval: '1000000s' } },
        },
      },
    ]).virtualHosts[0]?.routes[0];
    expect(route?.timeoutMs).toBe(MAX_TIMER_MS);
    expect(route?.retry?.perTryTimeoutMs).toBe(MAX_TIMER_MS);
    expect(route?.retry?.backoffBaseMs).toBe(1_000_000_000);
    // The default max interval (10 × base) is clamped too.
    expect(route?.retry?.backoffMaxMs).toBe(MAX_TIMER_MS);
    const c = translateCluster(
      fromJson('envoy.config.cluster.v3.Cluster', {
        name: 'c',
        type: 'EDS',
        connectTimeout: '9999999s',
        outlierDetection: { interval: '9999999s', baseEjectionTime: '9999999s' },
      }),
    );
    expect(c.connectTimeoutMs).toBe(MAX_TIMER_MS);
    expect(c.outlierPolicy?.intervalMs).toBe(MAX_TIMER_MS);
    expect(c.outlierPolicy?.baseEjectionTimeMs).toBe(MAX_TIMER_MS);
  });

  it('a negative or out-of-range duration is NACKed naming the field', () => {
    expect(() => rds([{ match: { prefix: '/' }, route: { cluster: 'a', timeout: '-1s' } }])).toThrow(
      /routes\[0\]\.route\.timeout: must not be negative/,
    );
    expect(() =>
      rds([{ match: { prefix: '/' }, route: { cluster: 'a', timeout: { seconds: '315576000001' } } }]),
    ).toThrow(/routes\[0\]\.route\.timeout: is out of range/);
    expect(() =>
      translateCluster(
        fromJson('envoy.config.cluster.v3.Cluster', { name: 'c', type: 'EDS', connectTimeout: '-5s' }),
      ),
    ).toThrow(/connect_timeout: must not be negative/);
  });
});

describe('safe_regex: RE2 semantics', () => {
  it('(a+)+ against a long header is matched in linear time by RE2, not by a backtracking engine', () => {
    // V8's backtracking RegExp took 1.9 s for 29 characters (doubling with each one): 10,000
    // would never finish. RE2 answers at once.
    const m = headerRoute({ safeRegexMatch: { regex: '(a+)+' } });
    expect(m.regex).not.toBeInstanceOf(RegExp);
    expect(m.regex?.programSize).toBeGreaterThan(0);
    expect(m.regex?.test(`${'a'.repeat(28)}!`)).toBe(false);
    expect(m.regex?.test(`${'a'.repeat(10_000)}!`)).toBe(false);
    expect(m.regex?.test('a'.repeat(10_000))).toBe(true);
  });

  it('is a full match, honours ignore_case, and keeps the path matcher case rules', () => {
    const m = headerRoute({ stringMatch: { safeRegex: { regex: 'canary|beta' }, ignoreCase: true } });
    expect(m.regex?.test('canary')).toBe(true);
    expect(m.regex?.test('BETA')).toBe(true);
    expect(m.regex?.test('canary2')).toBe(false);
    const route = rds([
      {
        match: { safeRegex: { regex: '/api/v[0-9]+/users/[^/]+' }, caseSensitive: false },
        route: { cluster: 'a' },
      },
    ]).virtualHosts[0]?.routes[0];
    expect(route?.match.regex?.test('/API/V2/users/42')).toBe(true);
    expect(route?.match.regex?.test('/api/v2/users/42/x')).toBe(false);
  });

  it('backreferences and lookarounds are NACKed with a clear word, naming the field', () => {
    expect(() => headerRoute({ safeRegexMatch: { regex: '(a)\\1' } })).toThrow(
      /routes\[0\]\.match\.headers\[0\]\.safe_regex_match\.regex: invalid regex "\(a\)\\\\1": backreferences .* are not RE2 syntax/,
    );
    expect(() => headerRoute({ safeRegexMatch: { regex: 'foo(?=bar)' } })).toThrow(
      /lookarounds .* are not RE2 syntax/,
    );
    expect(() => headerRoute({ safeRegexMatch: { regex: '(?<!x)y' } })).toThrow(
      /lookarounds .* are not RE2 syntax/,
    );
    expect(() => headerRoute({ safeRegexMatch: { regex: '[' } })).toThrow(
      /safe_regex_match\.regex: invalid regex "\["/,
    );
  });

  it('a program larger than max_program_size (100, the Envoy default) is NACKed; the limit is configurable', () => {
    expect(() => headerRoute({ safeRegexMatch: { regex: 'a{150}' } })).toThrow(
      /safe_regex_match\.regex: regex "a\{150\}" has program size 152, over the limit of 100/,
    );
    expect(headerRoute({ safeRegexMatch: { regex: 'a{150}' } }, 200).regex?.programSize).toBe(152);
    // The resource's own (deprecated) google_re2.max_program_size wins, as in Envoy.
    expect(
      headerRoute({ safeRegexMatch: { regex: 'a{150}', googleRe2: { maxProgramSize: 500 } } }).regex?.test(
        'a'.repeat(150),
      ),
    ).toBe(true);
    // Through a listener's inline route_config too.
    expect(() =>
      translateListener(
        fromJson('envoy.config.listener.v3.Listener', {
          name: 'l',
          apiListener: {
            apiListener: {
              '@type':
                'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
              routeConfig: {
                virtualHosts: [
                  {
                    domains: ['*'],
                    routes: [{ match: { safeRegex: { regex: 'b{120}' } }, route: { cluster: 'a' } }],
                  },
                ],
              },
            },
          },
        }),
      ),
    ).toThrow(/route_config\.virtual_hosts\[0\]\.routes\[0\]\.match\.safe_regex\.regex: .*program size/);
  });

  it('compileSafeRegex is usable on its own (control plane, local config)', () => {
    expect(compileSafeRegex('x+', { maxProgramSize: 10 }).test('xxx')).toBe(true);
    expect(() => compileSafeRegex('x{20}', { maxProgramSize: 10 })).toThrow(
      /program size 22, over the limit of 10/,
    );
  });
});

describe('EDS endpoint addresses', () => {
  it('an address that is neither an IP nor a host name is NACKed naming the field', () => {
    const cla = (address: string) =>
      translateEndpoints(
        fromJson('envoy.config.endpoint.v3.ClusterLoadAssignment', {
          clusterName: 'c',
          endpoints: [
            { lbEndpoints: [{ endpoint: { address: { socketAddress: { address, portValue: 80 } } } }] },
          ],
        }),
      );
    expect(() => cla('not an ip')).toThrow(
      /endpoints\[0\]\.lb_endpoints\[0\]\.endpoint\.address\.socket_address\.address: "not an ip" is not an IP address or a host name/,
    );
    expect(cla('10.0.0.1').endpoints[0]?.id).toBe('10.0.0.1:80');
    expect(cla('db.internal').endpoints[0]?.address).toBe('db.internal');
  });
});
