import { registerXdsConfig } from './setup.js';

registerXdsConfig();

export {
  type Bootstrap,
  bootstrapFromEnv,
  type CertificateProviderInstance,
  type ChannelCreds,
  DEFAULT_CERTIFICATE_REFRESH_MS,
  parseBootstrap,
  readBootstrapFile,
  type XdsNode,
  type XdsServer,
} from './bootstrap.js';
export {
  type ResourceStatus,
  type ResourceWatcher,
  XdsClient,
  type XdsClientDump,
  type XdsClientEvent,
  type XdsClientOptions,
  type XdsResourceDump,
} from './client.js';
export { decodeAny, decodeMessage, encodeMessage, fromJson, type Msg, XdsDecodeError } from './codec.js';
export type {
  XdsBackoffInput,
  XdsInput,
} from './config-types.generated.js';
export {
  type ChainMatcher,
  matchFilterChain,
  type ServerFilterChain,
  type ServerHcm,
  type ServerHttpFilter,
  type ServerListenerUpdate,
  serverListenerMatcher,
  serverListenerName,
  translateServerListener,
} from './inbound.js';
export { LoadReporter, type LoadReporterEvent, type LoadReporterOptions } from './lrs.js';
export {
  AGGREGATE_CLUSTER_TYPE,
  adsService,
  CDS_TYPE,
  deltaAdsMethod,
  EDS_TYPE,
  HCM_TYPE,
  LDS_TYPE,
  lrsService,
  RDS_TYPE,
  RESOURCE_TYPES,
  type ResourceType,
  UPSTREAM_TLS_TYPE,
} from './protos.js';
export {
  type RbacConfig,
  type RbacOptions,
  translateRbac,
  translateRbacPerRoute,
} from './rbac.js';
export {
  compileSafeRegex,
  DEFAULT_MAX_PROGRAM_SIZE,
  type SafeRegex,
  SafeRegexError,
  type SafeRegexOptions,
} from './regex.js';
export { clusterPolicy, XdsResolver, type XdsResolverOptions } from './resolver.js';
export { ListenerRouter, routePolicy, selectVirtualHost } from './router.js';
export {
  type InboundListenerDump,
  type InboundListenersOptions,
  XdsInboundListeners,
} from './server-listeners.js';
export { DEFAULT_DRAIN_GRACE_MS, registerXdsConfig, type XdsSettings, xdsBootstrapFor } from './setup.js';
export { type SetupXdsOptions, setupXds } from './start.js';
export {
  type TranslateOptions,
  translateCluster,
  translateEndpoints,
  translateListener,
  translateRouteConfig,
} from './translate.js';
export type {
  CircuitBreakers,
  ClusterUpdate,
  DropOverload,
  EndpointsUpdate,
  FaultPolicy,
  HashPolicy,
  HeaderMatch,
  ListenerUpdate,
  OutlierDetection,
  RouteConfigUpdate,
  RouteMatch,
  RouteRetry,
  VirtualHost,
  WeightedCluster,
  XdsRoute,
} from './types.js';
