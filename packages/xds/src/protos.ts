import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { loadProtosWithOptionsSync } from '@grpc/proto-loader/build/src/util.js';
import type * as protobuf from 'protobufjs';

export const LDS_TYPE = 'type.googleapis.com/envoy.config.listener.v3.Listener';
export const RDS_TYPE = 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration';
export const CDS_TYPE = 'type.googleapis.com/envoy.config.cluster.v3.Cluster';
export const EDS_TYPE = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment';
export const HCM_TYPE =
  'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
export const AGGREGATE_CLUSTER_TYPE =
  'type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig';
export const UPSTREAM_TLS_TYPE =
  'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext';

/** The resource types of the ADS stream, in the order gRPC subscribes to them. */
export const RESOURCE_TYPES = [LDS_TYPE, RDS_TYPE, CDS_TYPE, EDS_TYPE] as const;
export type ResourceType = (typeof RESOURCE_TYPES)[number];

/** Proto files the resource decoder knows (the message types xDS resources and their typed configs use). */
const RESOURCE_PROTOS = [
  'envoy/service/discovery/v3/ads.proto',
  'envoy/service/load_stats/v3/lrs.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/filters/http/fault/v3/fault.proto',
  'envoy/extensions/clusters/aggregate/v3/cluster.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls.proto',
  'envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto',
  'envoy/extensions/load_balancing_policies/round_robin/v3/round_robin.proto',
  'envoy/extensions/load_balancing_policies/least_request/v3/least_request.proto',
  'envoy/extensions/load_balancing_policies/ring_hash/v3/ring_hash.proto',
  'envoy/extensions/load_balancing_policies/maglev/v3/maglev.proto',
  'envoy/extensions/load_balancing_policies/wrr_locality/v3/wrr_locality.proto',
  'envoy/extensions/load_balancing_policies/client_side_weighted_round_robin/v3/client_side_weighted_round_robin.proto',
  'envoy/extensions/load_balancing_policies/pick_first/v3/pick_first.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
  'xds/type/v3/typed_struct.proto',
  'udpa/type/v1/typed_struct.proto',
];

/** The include directories of the Envoy v3 protos shipped in `@grpc/grpc-js-xds`'s `deps/`. */
export function protoIncludeDirs(): string[] {
  const require = createRequire(import.meta.url);
  const root = dirname(require.resolve('@grpc/grpc-js-xds/package.json'));
  return ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => join(root, 'deps', d));
}

let root: protobuf.Root | undefined;

/** The protobufjs root with every xDS resource type (loaded once, through @grpc/proto-loader). */
export function resourceRoot(): protobuf.Root {
  if (root) return root;
  const dirs = protoIncludeDirs();
  // Some optional typed-config protos may be absent from other versions of the deps folder.
  const protos = RESOURCE_PROTOS.filter((p) => dirs.some((d) => existsSync(join(d, p))));
  root = loadProtosWithOptionsSync(protos, { keepCase: false, includeDirs: dirs }) as protobuf.Root;
  return root;
}

export function lookupType(name: string): protobuf.Type {
  return resourceRoot().lookupType(name.startsWith('type.googleapis.com/') ? name.slice(20) : name);
}

/** Conversion of decoded messages into the plain objects the translator reads. */
export const TO_OBJECT: protobuf.IConversionOptions = {
  enums: String,
  longs: Number,
  defaults: false,
  oneofs: true,
};

export interface AdsServiceDefinitions {
  /** Client constructor of `envoy.service.discovery.v3.AggregatedDiscoveryService`. */
  client: grpc.ServiceClientConstructor;
  /** Service definition for `server.addService`. */
  service: grpc.ServiceDefinition;
}

let ads: AdsServiceDefinitions | undefined;

/**
 * The ADS service with messages (de)serialised by the same protobufjs root as the resources, so
 * that `resources` stay `{ typeUrl, value }` Any messages the client decodes one by one (a bad
 * resource is NACKed by name, not a failed stream).
 */
export function adsService(): AdsServiceDefinitions {
  if (ads) return ads;
  const pkg = protoLoader.loadSync('envoy/service/discovery/v3/ads.proto', {
    keepCase: false,
    includeDirs: protoIncludeDirs(),
  });
  const def = pkg['envoy.service.discovery.v3.AggregatedDiscoveryService'] as protoLoader.ServiceDefinition;
  const method = def.StreamAggregatedResources as protoLoader.MethodDefinition<unknown, unknown>;
  const service: grpc.ServiceDefinition = {
    StreamAggregatedResources: bidiMethod(
      method.path,
      'envoy.service.discovery.v3.DiscoveryRequest',
      'envoy.service.discovery.v3.DiscoveryResponse',
      'streamAggregatedResources',
    ),
  };
  ads = {
    service,
    client: grpc.makeGenericClientConstructor(service, 'AggregatedDiscoveryService'),
  };
  return ads;
}

/** A bidi-streaming method whose messages protobufjs' resource root (de)serialises. */
function bidiMethod(
  path: string,
  request: string,
  response: string,
  originalName: string,
): grpc.MethodDefinition<unknown, unknown> {
  const ser = (t: protobuf.Type) => (v: unknown) => Buffer.from(t.encode(t.fromObject(v as object)).finish());
  const de = (t: protobuf.Type) => (b: Buffer) =>
    t.toObject(t.decode(b), { enums: String, longs: Number, defaults: true });
  const req = lookupType(request);
  const res = lookupType(response);
  return {
    path,
    requestStream: true,
    responseStream: true,
    requestSerialize: ser(req),
    requestDeserialize: de(req),
    responseSerialize: ser(res),
    responseDeserialize: de(res),
    originalName,
  };
}

let lrs: AdsServiceDefinitions | undefined;

/**
 * `envoy.service.load_stats.v3.LoadReportingService` (LRS): `StreamLoadStats`, a bidi stream of
 * `LoadStatsRequest` (the client's reports) and `LoadStatsResponse` (what to report, how often).
 */
export function lrsService(): AdsServiceDefinitions {
  if (lrs) return lrs;
  const service: grpc.ServiceDefinition = {
    StreamLoadStats: bidiMethod(
      '/envoy.service.load_stats.v3.LoadReportingService/StreamLoadStats',
      'envoy.service.load_stats.v3.LoadStatsRequest',
      'envoy.service.load_stats.v3.LoadStatsResponse',
      'streamLoadStats',
    ),
  };
  lrs = { service, client: grpc.makeGenericClientConstructor(service, 'LoadReportingService') };
  return lrs;
}

let deltaMethod: grpc.MethodDefinition<unknown, unknown> | undefined;

/**
 * `AggregatedDiscoveryService/DeltaAggregatedResources` with messages (de)serialised by the
 * resource root, as `adsService()` does for the state-of-the-world method.
 */
export function deltaAdsMethod(): grpc.MethodDefinition<unknown, unknown> {
  deltaMethod ??= bidiMethod(
    `${adsService().service.StreamAggregatedResources?.path.replace(/\/[^/]*$/, '')}/DeltaAggregatedResources`,
    'envoy.service.discovery.v3.DeltaDiscoveryRequest',
    'envoy.service.discovery.v3.DeltaDiscoveryResponse',
    'deltaAggregatedResources',
  );
  return deltaMethod;
}
