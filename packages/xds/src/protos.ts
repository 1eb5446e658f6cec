import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs/light.js';

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

/**
 * The descriptor of every message type meshlet's xDS client and control plane use, generated from
 * the Envoy, xDS and googleapis `.proto` files by `scripts/gen-xds-descriptor.mjs` (so that an
 * install needs neither the `.proto` files nor a proto parser). Found by the package's own name
 * (`./package.json` is exported), so the same code serves `src/` (tests, `meshlet-source`) and the
 * bundled `dist/` (the published package), wherever the build put it.
 */
const DESCRIPTOR_FILE = join(
  dirname(createRequire(import.meta.url).resolve('@meshlet/xds/package.json')),
  'generated/xds-descriptor.json',
);

let root: protobuf.Root | undefined;

/** The protobufjs root with every xDS resource type (loaded once, on first use). */
export function resourceRoot(): protobuf.Root {
  if (root) return root;
  const file = JSON.parse(readFileSync(DESCRIPTOR_FILE, 'utf8')) as { root: protobuf.INamespace };
  // Resolved up front (as @grpc/proto-loader does): the proto-JSON reader walks `resolvedType`s.
  const loaded = protobuf.Root.fromJSON(file.root);
  loaded.resolveAll();
  root = loaded;
  return loaded;
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
  const service: grpc.ServiceDefinition = {
    StreamAggregatedResources: bidiMethod(
      ADS_SERVICE,
      'StreamAggregatedResources',
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

const ADS_SERVICE = 'envoy.service.discovery.v3.AggregatedDiscoveryService';

/** A bidi-streaming method whose messages protobufjs' resource root (de)serialises. */
function bidiMethod(
  serviceName: string,
  name: string,
  request: string,
  response: string,
  originalName: string,
): grpc.MethodDefinition<unknown, unknown> {
  const ser = (t: protobuf.Type) => (v: unknown) => Buffer.from(t.encode(t.fromObject(v as object)).finish());
  const de = (t: protobuf.Type) => (b: Buffer) =>
    t.toObject(t.decode(b), { enums: String, longs: Number, defaults: true });
  // The method must exist in the descriptor (a regenerated descriptor that lost it fails here).
  if (!resourceRoot().lookupService(serviceName).methods[name])
    throw new Error(`the xDS descriptor has no ${serviceName}/${name}`);
  const req = lookupType(request);
  const res = lookupType(response);
  return {
    path: `/${serviceName}/${name}`,
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
      'envoy.service.load_stats.v3.LoadReportingService',
      'StreamLoadStats',
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
    ADS_SERVICE,
    'DeltaAggregatedResources',
    'envoy.service.discovery.v3.DeltaDiscoveryRequest',
    'envoy.service.discovery.v3.DeltaDiscoveryResponse',
    'deltaAggregatedResources',
  );
  return deltaMethod;
}
