import { Mesh, parseConfig } from '@meshlet/core';
import { describe, expect, it } from 'vitest';
import {
  decodeAny,
  fromJson,
  translateCluster,
  translateEndpoints,
  translateListener,
  translateRouteConfig,
} from '../src/index.js';

const cluster = (json: Record<string, unknown>) =>
  translateCluster(
    fromJson('envoy.config.cluster.v3.Cluster', {
      name: 'c',
      ...(json.type === undefined && json.clusterType === undefined ? { type: 'EDS' } : {}),
      ...json,
    }),
  );

const typed = (type: string, extra: Record<string, unknown> = {}) => ({
  typedExtensionConfig: { name: type, typedConfig: { '@type': `type.googleapis.com/${type}`, ...extra } },
});

describe('CDS translation', () => {
  it('cluster types: EDS (service name), STATIC and LOGICAL_DNS (inline endpoints), AGGREGATE (children)', () => {
    expect(
      cluster({ type: 'EDS', edsClusterConfig: { serviceName: 'svc-eds', edsConfig: { ads: {} } } }),
    ).toMatchObject({
      kind: 'eds',
      edsServiceName: 'svc-eds',
    });
    const la = {
      clusterName: 'c',
      endpoints: [
        {
          lbEndpoints: [
            { endpoint: { address: { socketAddress: { address: 'db.internal', portValue: 5432 } } } },
          ],
        },
      ],
    };
    const st = cluster({ type: 'STATIC', loadAssignment: la });
    expect(st.kind).toBe('static');
    expect(st.endpoints?.map((e) => e.id)).toEqual(['db.internal:5432']);
    expect(cluster({ type: 'LOGICAL_DNS', loadAssignment: la }).kind).toBe('logical_dns');
    const agg = cluster({
      clusterType: {
        name: 'envoy.clusters.aggregate',
        typedConfig: {
          '@type': 'type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig',
          clusters: ['a', 'b'],
        },
      },
    });
    expect(agg).toMatchObject({ kind: 'aggregate', children: ['a', 'b'] });
    expect(() => cluster({ type: 'ORIGINAL_DST' })).toThrow(/type: ORIGINAL_DST clusters are not supported/);
  });

  it('LB policies: enums with their configs, typed policies (first supported wins), custom TypedStruct', () => {
    expect(cluster({ lbPolicy: 'RING_HASH', ringHashLbConfig: { minimumRingSize: 2048 } }).lb).toMatchObject({
      policy: 'ring_hash',
      config: { minRingSize: 2048 },
    });
    expect(cluster({ lbPolicy: 'MAGLEV', maglevLbConfig: { tableSize: 5 } }).lb.policy).toBe('maglev');
    expect(cluster({ lbPolicy: 'LEAST_REQUEST', leastRequestLbConfig: { choiceCount: 3 } }).lb).toMatchObject(
      {
        policy: 'least_request',
        config: { choiceCount: 3 },
      },
    );
    const typedList = cluster({
      loadBalancingPolicy: {
        policies: [
          typed(
            'envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin',
          ),
          typed('envoy.extensions.load_balancing_policies.wrr_locality.v3.WrrLocality', {
            endpointPickingPolicy: {
              policies: [typed('envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin')],
            },
          }),
        ],
      },
    });
    expect(typedList.lb).toEqual({
      policy: 'client_side_weighted_round_robin',
      config: {
        enableOobLoadReport: false,
        oobReportingPeriodMs: 10_000,
        blackoutPeriodMs: 10_000,
        weightExpirationPeriodMs: 180_000,
        weightUpdatePeriodMs: 1_000,
        errorUtilizationPenalty: 1,
      },
    });
    const wrr = cluster({
      loadBalancingPolicy: {
        policies: [
          typed(
            'envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin',
            {
              enableOobLoadReport: { value: true },
              oobReportingPeriod: { seconds: 2 },
              blackoutPeriod: { seconds: 0, nanos: 500_000_000 },
              weightExpirationPeriod: { seconds: 60 },
              weightUpdatePeriod: { nanos: 50_000_000 },
              errorUtilizationPenalty: { value: 2.5 },
            },
          ),
        ],
      },
    });
    expect(wrr.lb).toEqual({
      policy: 'client_side_weighted_round_robin',
      config: {
        enableOobLoadReport: true,
        oobReportingPeriodMs: 2000,
        blackoutPeriodMs: 500,
        weightExpirationPeriodMs: 60_000,
        weightUpdatePeriodMs: 100, // A58: raised to 100 ms
        errorUtilizationPenalty: 2.5,
      },
    });
    expect(() =>
      cluster({
        loadBalancingPolicy: {
          policies: [
            typed(
              'envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin',
              { errorUtilizationPenalty: { value: -1 } },
            ),
          ],
        },
      }),
    ).toThrow(/errorUtilizationPenalty: must be >= 0/);
    const custom = cluster({
      loadBalancingPolicy: {
        policies: [
          {
            typedExtensionConfig: {
              name: 'meshlet.lb.peak_ewma',
              typedConfig: {
                '@type': 'type.googleapis.com/xds.type.v3.TypedStruct',
                typeUrl: 'type.googleapis.com/meshlet.lb.peak_ewma',
                value: { decay: '5s' },
              },
            },
          },
        ],
      },
    });
    expect(custom.lb.policy).toBe('peak_ewma');
    expect(() =>
      cluster({
        loadBalancingPolicy: {
          policies: [typed('envoy.extensions.load_balancing_policies.pick_first.v3.PickFirst')],
        },
      }),
    ).toThrow(/load_balancing_policy: names no load-balancing policy this client supports/);
    expect(() =>
      cluster({ lbPolicy: 'RING_HASH', ringHashLbConfig: { hashFunction: 'MURMUR_HASH_2' } }),
    ).toThrow(/only XX_HASH/);
  });

  it('circuit breakers (DEFAULT priority), outlier detection, UpstreamTlsContext SAN → identity', () => {
    const c = cluster({
      circuitBreakers: {
        thresholds: [
          { priority: 'HIGH', maxRequests: 9 },
          { maxRequests: 100, maxPendingRequests: 10, maxConnections: 5, maxRetries: 2 },
        ],
      },
      outlierDetection: {
        consecutive_5xx: 3,
        interval: '2s',
        baseEjectionTime: '10s',
        maxEjectionPercent: 50,
      },
      transportSocket: {
        name: 'tls',
        typedConfig: {
          '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
          sni: 'reviews.default',
          commonTlsContext: {
            tlsCertificateProviderInstance: { instanceName: 'default' },
            validationContext: {
              caCertificateProviderInstance: { instanceName: 'default' },
              matchTypedSubjectAltNames: [{ sanType: 'URI', matcher: { prefix: 'spiffe://corp.example/' } }],
            },
          },
        },
      },
    });
    expect(c.circuitBreakers).toEqual({
      maxRequests: 100,
      maxPendingRequests: 10,
      maxConnections: 5,
      maxRetries: 2,
    });
    expect(c.outlierDetection).toMatchObject({
      consecutive5xx: 3,
      intervalMs: 2000,
      baseEjectionTimeMs: 10_000,
      maxEjectionPercent: 50,
    });
    expect(c.outlierPolicy).toBeDefined();
    expect(c).toMatchObject({ tls: true, sni: 'reviews.default', identity: 'spiffe://corp.example' });
    expect(() => cluster({ outlierDetection: { maxEjectionPercent: 101 } })).toThrow(/max_ejection_percent/);
  });
});

describe('EDS, LDS and RDS validation (NACK reasons name the field)', () => {
  it('EDS: priorities must be contiguous; ports and weights are checked; drop_overloads in ppm', () => {
    const cla = (endpoints: unknown[], policy?: unknown) =>
      translateEndpoints(
        fromJson('envoy.config.endpoint.v3.ClusterLoadAssignment', { clusterName: 'c', endpoints, policy }),
      );
    const ep = (port: number, extra: Record<string, unknown> = {}) => ({
      endpoint: { address: { socketAddress: { address: '10.0.0.1', portValue: port } } },
      ...extra,
    });
    expect(() => cla([{ priority: 1, lbEndpoints: [ep(1)] }])).toThrow(/priority 0 is missing/);
    expect(() => cla([{ lbEndpoints: [ep(0)] }])).toThrow(
      /endpoints\[0\]\.lb_endpoints\[0\]\.endpoint\.address\.socket_address\.port_value/,
    );
    const r = cla(
      [
        {
          locality: { zone: 'a' },
          loadBalancingWeight: 3,
          lbEndpoints: [ep(1, { loadBalancingWeight: 2, healthStatus: 'DEGRADED' })],
        },
        { locality: { zone: 'b' }, loadBalancingWeight: 0, lbEndpoints: [ep(2)] },
      ],
      {
        dropOverloads: [
          { category: 'throttle', dropPercentage: { numerator: 5, denominator: 'TEN_THOUSAND' } },
        ],
      },
    );
    expect(r.endpoints).toHaveLength(1); // weight-0 localities are dropped
    expect(r.endpoints[0]).toMatchObject({
      weight: 2,
      localityWeight: 3,
      health: 'degraded',
      locality: { zone: 'a' },
    });
    expect(r.dropOverloads).toEqual([{ category: 'throttle', ppm: 500 }]);
    // Envoy's Endpoint.hostname names the host (as Envoy's admin shows it).
    const named = cla([
      {
        lbEndpoints: [
          {
            endpoint: {
              address: { socketAddress: { address: '10.0.0.1', portValue: 1 } },
              hostname: 'reviews-7f9c',
            },
          },
        ],
      },
    ]);
    expect(named.endpoints[0]).toMatchObject({ name: 'reviews-7f9c', hostname: 'reviews-7f9c' });
  });

  it('EDS locality weights split traffic per locality (gRPC weighted_target), not per endpoint', () => {
    // Locality a: one endpoint; locality b: three. Weights 1:1 → half the traffic to a's one host.
    const lle = (zone: string, weight: number, ports: number[]) => ({
      locality: { zone },
      loadBalancingWeight: weight,
      lbEndpoints: ports.map((p) => ({
        endpoint: { address: { socketAddress: { address: '10.0.0.1', portValue: p } } },
      })),
    });
    const update = translateEndpoints(
      fromJson('envoy.config.endpoint.v3.ClusterLoadAssignment', {
        clusterName: 'c',
        endpoints: [lle('a', 1, [1001]), lle('b', 1, [2001, 2002, 2003])],
      }),
    );
    const mesh = new Mesh(parseConfig({}));
    const rt = mesh.ensureService({
      key: 'c',
      discoveryType: 'xds',
      createSource: () => ({ start: () => {}, close: () => {} }),
    });
    rt.applyUpdate({ endpoints: update.endpoints });
    const n = 20_000;
    let toA = 0;
    for (let i = 0; i < n; i++) {
      const r = rt.picker.pick({ attempt: 0 });
      if (r.kind !== 'pick') throw new Error(`unexpected ${r.kind}`);
      if (r.endpoint.id === '10.0.0.1:1001') toA++;
    }
    expect(Math.abs(toA / n - 0.5)).toBeLessThan(0.02);
    void mesh.close();
  });

  it('LDS: API listener must hold an HCM; RDS or inline routes; scoped routes NACKed', () => {
    const hcm = (extra: Record<string, unknown>) => ({
      name: 'l',
      apiListener: {
        apiListener: {
          '@type':
            'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
          ...extra,
        },
      },
    });
    const lds = (j: unknown) => translateListener(fromJson('envoy.config.listener.v3.Listener', j));
    expect(lds(hcm({ rds: { routeConfigName: 'r', configSource: { ads: {} } } })).rdsName).toBe('r');
    const inline = lds(
      hcm({
        routeConfig: {
          name: 'in',
          virtualHosts: [
            { name: 'v', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'c' } }] },
          ],
        },
      }),
    );
    expect(inline.routeConfig?.virtualHosts[0]?.routes[0]?.clusters).toEqual([{ name: 'c', weight: 1 }]);
    expect(() => lds(hcm({ scopedRoutes: { name: 's' } }))).toThrow(/scoped routes are not supported/);
    expect(() => lds({ name: 'l' })).toThrow(/has no api_listener/);
    expect(() => lds(hcm({ rds: { routeConfigName: 'r', configSource: { path: '/etc/r.yaml' } } }))).toThrow(
      /must be ads or self/,
    );
  });

  it('RDS: empty domains, zero total weight and bad regexes are NACKed with their path', () => {
    const rds = (routes: unknown[], domains = ['*']) =>
      translateRouteConfig(
        fromJson('envoy.config.route.v3.RouteConfiguration', {
          name: 'r',
          virtualHosts: [{ name: 'v', domains, routes }],
        }),
      );
    expect(() => rds([], [])).toThrow(/virtual_hosts\[0\]\.domains: must not be empty/);
    expect(() =>
      rds([
        { match: { prefix: '/' }, route: { weightedClusters: { clusters: [{ name: 'a', weight: 0 }] } } },
      ]),
    ).toThrow(/weighted_clusters: total weight must be > 0/);
    expect(() =>
      rds([
        {
          match: { prefix: '/', headers: [{ name: 'x', safeRegexMatch: { regex: '[' } }] },
          route: { cluster: 'a' },
        },
      ]),
    ).toThrow(/routes\[0\]\.match\.headers\[0\]\.safe_regex_match\.regex: invalid regex/);
  });
});

describe('wrappers holding their zero value', () => {
  // Go's and C++'s encoders (istiod, go-control-plane) do not write a zero scalar, so
  // `case_sensitive: BoolValue{false}` reaches the client as an empty message (tag, length 0).
  const field = (no: number, bytes: Uint8Array) => [(no << 3) | 2, bytes.length, ...bytes];
  const text = (s: string) => new TextEncoder().encode(s);
  const bytes = (...parts: number[][]) => Uint8Array.from(parts.flat());

  it('an empty BoolValue on the wire reads as false (case-insensitive route match)', () => {
    const match = bytes(field(1, text('/CI')), field(4, new Uint8Array(0)));
    const route = bytes(field(1, Uint8Array.from(match)), field(2, bytes(field(1, text('ci')))));
    const vhost = bytes(field(1, text('v')), field(2, text('*')), field(3, route));
    const rc = bytes(field(1, text('r')), field(2, vhost));
    const update = translateRouteConfig(
      decodeAny('type.googleapis.com/envoy.config.route.v3.RouteConfiguration', rc),
    );
    const m = update.virtualHosts[0]?.routes[0]?.match;
    expect(m).toMatchObject({ caseSensitive: false });
    // Without the empty wrapper the match is case sensitive (Envoy's default).
    const plain = bytes(field(1, text('/CI')));
    const route2 = bytes(field(1, Uint8Array.from(plain)), field(2, bytes(field(1, text('ci')))));
    const rc2 = bytes(
      field(1, text('r')),
      field(2, bytes(field(1, text('v')), field(2, text('*')), field(3, route2))),
    );
    expect(
      translateRouteConfig(decodeAny('type.googleapis.com/envoy.config.route.v3.RouteConfiguration', rc2))
        .virtualHosts[0]?.routes[0]?.match,
    ).toMatchObject({ caseSensitive: true });
  });
});
