import { MAX_TIMER_MS } from '@meshlet/core';
import { describe, expect, it } from 'vitest';
import { fromJson, translateCluster, translateRouteConfig } from '../src/index.js';

const rds = (routes: unknown[]) =>
  translateRouteConfig(
    fromJson('envoy.config.route.v3.RouteConfiguration', {
      name: 'r',
      virtualHosts: [{ name: 'v', domains: ['*'], routes }],
    }),
  );

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
