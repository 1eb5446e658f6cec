import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  type ClusterUpdate,
  decodeAny,
  decodeMessage,
  type EndpointsUpdate,
  encodeMessage,
  fromJson,
  type ListenerUpdate,
  type Msg,
  parseBootstrap,
  type RouteConfigUpdate,
  translateCluster,
  translateEndpoints,
  translateListener,
  translateRouteConfig,
} from '../src/index.js';
import {
  FIXTURES,
  type FixtureResource,
  gatewayFixtureResources,
  jsonFixtureResources,
} from './fixture-loader.js';

const TRANSLATE: Record<string, (m: Msg) => { name: string }> = {
  'envoy.config.listener.v3.Listener': translateListener,
  'envoy.config.route.v3.RouteConfiguration': translateRouteConfig,
  'envoy.config.cluster.v3.Cluster': translateCluster,
  'envoy.config.endpoint.v3.ClusterLoadAssignment': translateEndpoints,
};

/** Translates each resource; a rejected one (a NACK) maps to its error under `NACK/<index>`. */
function translateAll(resources: FixtureResource[]): Map<string, unknown> {
  const out = new Map<string, unknown>();
  resources.forEach((r, i) => {
    const decoded = fromJson(r.type, r.json);
    try {
      const v = (TRANSLATE[r.type] as (m: Msg) => { name: string })(decoded);
      out.set(`${r.type.split('.').at(-1)}/${v.name}`, v);
    } catch (err) {
      out.set(`NACK/${i}`, err);
    }
  });
  return out;
}

/** Translation, or the error (a NACK) for a resource the client rejects. */
function attempt(t: (m: Msg) => unknown, m: Msg): unknown {
  try {
    return t(m);
  } catch (err) {
    return { nack: (err as Error).message };
  }
}

const strip = (v: unknown) => JSON.parse(JSON.stringify(v, (_k, x) => (x instanceof RegExp ? String(x) : x)));

describe('real xDS resources from real control planes', () => {
  it('Istio sidecar config_dump (snake_case): RDS and CDS', () => {
    const res = jsonFixtureResources('istio-sidecar-config-dump-rds-cds.json');
    const all = translateAll(res);
    const rc = all.get('RouteConfiguration/http.8080') as RouteConfigUpdate;
    expect(rc.virtualHosts.length).toBeGreaterThan(0);
    const route = rc.virtualHosts[0]?.routes[0];
    expect(route?.match).toMatchObject({ pathKind: 'path', path: '/productpage', caseSensitive: true });
    expect(route?.clusters).toEqual([
      { name: 'outbound|9080||productpage.default.svc.cluster.local', weight: 1 },
    ]);
    expect(route?.timeoutMs).toBe(0); // `timeout: 0s` disables the route timeout
    expect(route?.retry?.numRetries).toBe(2);
    expect(route?.retry?.retryOn).toContain('retriable-status-codes');
    // The sidecar's cluster secures its hops with SDS secrets and TLS parameters, which a
    // proxyless client cannot honour: NACKed as gRFC A29 says (and as grpc-js-xds does), naming
    // the field, never used without the TLS it asks for.
    const nacks = [...all.entries()].filter(([k]) => k.startsWith('NACK/')).map(([, e]) => String(e));
    expect(nacks).toEqual([
      expect.stringMatching(
        /transport_socket_matches\[0\]\.transport_socket\.typed_config\.common_tls_context\.tls_params: is not supported \(gRFC A29\)/,
      ),
    ]);
    const cds = res.find(
      (r) =>
        r.type.endsWith('Cluster') &&
        (r.json as { transport_socket_matches?: unknown }).transport_socket_matches,
    ) as FixtureResource;
    const json = structuredClone(cds.json) as {
      transport_socket_matches: Array<{
        transport_socket: { typed_config: { common_tls_context?: Record<string, unknown> } };
      }>;
    };
    // Without tls_params, the SDS certificate is what is refused.
    for (const m of json.transport_socket_matches)
      if (m.transport_socket.typed_config.common_tls_context)
        delete m.transport_socket.typed_config.common_tls_context.tls_params;
    expect(() => translateCluster(fromJson(cds.type, json))).toThrow(
      /tls_certificate_sds_secret_configs: SDS is not supported/,
    );
  });

  it('Istio EDS dump: 37 ClusterLoadAssignments, health, weights, pipes skipped', () => {
    const res = jsonFixtureResources('istio-sidecar-config-dump-eds.json');
    expect(res).toHaveLength(37);
    const all = [...translateAll(res).values()] as EndpointsUpdate[];
    const eps = all.flatMap((a) => a.endpoints);
    expect(eps.length).toBeGreaterThan(30);
    expect(eps.every((e) => e.health === 'healthy')).toBe(true);
    expect(eps.every((e) => e.port > 0 && e.address.length > 0)).toBe(true);
    expect(eps.some((e) => Object.keys(e.metadata).some((k) => k.startsWith('istio/')))).toBe(true);
  });

  it('Traffic Director CSDS dump from gRPC Java (lowerCamelCase): the four proxyless resources', () => {
    const all = translateAll(jsonFixtureResources('grpcdebug-td-grpc-java-csds-config-dump.json'));
    const l = all.get('Listener/xds-test-server:1337') as ListenerUpdate;
    expect(l.rdsName).toBe('URL_MAP/1040920224690_sergii-psm-test-url-map_0_xds-test-server:1337');
    expect(l.httpFilters).toEqual(['fault', 'router']);
    const rc = all.get(`RouteConfiguration/${l.rdsName}`) as RouteConfigUpdate;
    expect(rc.virtualHosts[0]?.domains).toEqual(['xds-test-server:1337']);
    expect(rc.virtualHosts[0]?.routes[0]?.timeoutMs).toBe(30_000);
    expect(rc.virtualHosts[0]?.routes[0]?.retry?.retryOn).toEqual(['gateway-error']);
    const c = [...all.values()].find((v) => (v as ClusterUpdate).kind === 'eds') as ClusterUpdate;
    expect(c.lb.policy).toBe('round_robin');
    expect(c.circuitBreakers?.maxRequests).toBe(2147483647);
    const e = [...all.values()].find(
      (v) => (v as EndpointsUpdate).endpoints !== undefined,
    ) as EndpointsUpdate;
    expect(e.endpoints).toHaveLength(1);
    // endpoint weight 1 in a locality of weight 100 with only sub_zone set
    expect(e.endpoints[0]).toMatchObject({
      weight: 1,
      localityWeight: 100,
      health: 'healthy',
      locality: { region: '', zone: '' },
    });
    expect(e.endpoints[0]?.locality.subZone).toMatch(/^jf:us-central1-a/);
  });

  it('Envoy Gateway goldens: weighted clusters, hash policy, timeouts, retries, priorities, draining', () => {
    const unknown: string[] = [];
    const res = gatewayFixtureResources();
    for (const r of res) fromJson(r.type, r.json, unknown);
    // Fields newer than the protos grpc-js-xds ships are skipped, as a binary decoder would.
    expect(unknown.sort()).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/useHashPolicy$/),
        expect.stringMatching(/autoSniSanValidation$/),
      ]),
    );
    // Several goldens reuse names (first-listener), so keep every translation.
    const all = res.map((r) => attempt(TRANSLATE[r.type] as (m: Msg) => unknown, fromJson(r.type, r.json)));
    const weighted = all
      .flatMap((v) => (v as RouteConfigUpdate).virtualHosts ?? [])
      .flatMap((vh) => vh.routes)
      .find((r) => r.clusters.length === 2);
    expect(weighted?.clusters.map((c) => c.weight)).toEqual([80, 20]);
    expect(weighted?.hashPolicy).toEqual([{ kind: 'header', name: 'x-user-id', terminal: false }]);
    const timeouts = all
      .flatMap((v) => (v as RouteConfigUpdate).virtualHosts ?? [])
      .flatMap((vh) => vh.routes)
      .filter((r) => r.timeoutMs === 5000);
    expect(timeouts.length).toBeGreaterThan(0);
    expect(timeouts[0]?.match.headers[0]).toMatchObject({ name: 'user', kind: 'exact', value: 'jason' });
    const eds = all.filter((v) => (v as EndpointsUpdate).endpoints !== undefined) as EndpointsUpdate[];
    expect(eds.flatMap((e) => e.endpoints).some((e) => e.health === 'draining')).toBe(true);
    expect(eds.flatMap((e) => e.endpoints).some((e) => e.priority === 1)).toBe(true);
    expect(
      eds
        .flatMap((e) => e.endpoints)
        .some((e) => e.localityWeight === 70 && e.locality.zone === 'us-east-1a'),
    ).toBe(true);
    const clusters = all.filter((v) => (v as ClusterUpdate).kind !== undefined) as ClusterUpdate[];
    expect(clusters.some((c) => c.outlierDetection?.consecutive5xx === 5)).toBe(true);
    // Translated into meshlet's own outlier-detection policy; clusters without it get none (Envoy).
    expect(
      clusters.filter((c) => c.outlierDetection !== undefined).every((c) => c.outlierPolicy !== undefined),
    ).toBe(true);
    expect(
      clusters.filter((c) => c.outlierDetection === undefined).every((c) => c.outlierPolicy === undefined),
    ).toBe(true);
    expect(clusters.some((c) => c.circuitBreakers?.maxConnections === 1)).toBe(true);
    // The four TLS clusters set TLS parameters and take their certificates over SDS: NACKed (gRFC A29).
    const nacks = all.filter((v) => (v as { nack?: string }).nack !== undefined) as Array<{ nack: string }>;
    expect(nacks).toHaveLength(4);
    for (const n of nacks)
      expect(n.nack).toMatch(/common_tls_context\.tls_params: is not supported \(gRFC A29\)/);
  });

  it('binary round trip: encode(proto-JSON) → decode → translate gives the same result', () => {
    const res = [
      ...jsonFixtureResources('grpcdebug-td-grpc-java-csds-config-dump.json'),
      ...jsonFixtureResources('istio-sidecar-config-dump-rds-cds.json'),
      ...gatewayFixtureResources(),
    ];
    for (const r of res) {
      const t = TRANSLATE[r.type] as (m: Msg) => unknown;
      const fromText = attempt(t, fromJson(r.type, r.json));
      const bytes = encodeMessage(`type.googleapis.com/${r.type}`, fromJson(r.type, r.json));
      const fromWire = attempt(t, decodeAny(`type.googleapis.com/${r.type}`, bytes));
      expect(strip(fromWire)).toEqual(strip(fromText));
    }
  });

  it('EDS from raw protobuf messages (the fast path) translates like the plain-object path', () => {
    const res = [
      ...jsonFixtureResources('istio-sidecar-config-dump-eds.json'),
      ...gatewayFixtureResources().filter((r) => r.type.endsWith('ClusterLoadAssignment')),
    ];
    for (const r of res) {
      const url = `type.googleapis.com/${r.type}`;
      const bytes = encodeMessage(url, fromJson(r.type, r.json));
      expect(strip(translateEndpoints(decodeMessage(url, bytes)))).toEqual(
        strip(translateEndpoints(decodeAny(url, bytes))),
      );
    }
  });

  it('bootstraps written by real tools parse (Istio agent, Traffic Director generator)', () => {
    const istio = JSON.parse(readFileSync(join(FIXTURES, 'istio-agent-grpc-bootstrap-golden.json'), 'utf8'));
    const b = parseBootstrap(istio, 'istio');
    expect(b.servers).toEqual([
      { uri: 'unix:///etc/istio/XDS', creds: { type: 'insecure' }, ignoreResourceDeletion: false },
    ]);
    expect(b.node.id).toBe('sidecar~127.0.0.1~pod1.fake-namespace~fake-namespace.svc.cluster.local');
    expect(b.node.metadata.GENERATOR).toBe('grpc');
    const td = JSON.parse(readFileSync(join(FIXTURES, 'td-grpc-bootstrap-generator-golden.json'), 'utf8'));
    // google_default (OAuth call credentials) is not available outside Google's libraries: a clear error.
    expect(() => parseBootstrap(td, 'td')).toThrow(/no supported channel credentials \(got google_default/);
  });
});
