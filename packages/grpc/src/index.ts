export { type AttachGrpcOptions, attachGrpc } from './attach.js';
export {
  LB_POLICY_NAME,
  MeshLoadBalancer,
  outcomeOf,
  ROUTER_ATTRIBUTE,
  RUNTIME_ATTRIBUTE,
  registerMeshBalancer,
  SERVICE_SUBCHANNEL_ARG,
} from './balancer.js';
export { CallTag } from './call-tag.js';
export {
  CLIENT_KEEPALIVE_DEFAULTS,
  type CredentialsProvider,
  closeMeshChannels,
  createMeshClient,
  defaultChannelCredentials,
  type MeshClientOptions,
  meshChannel,
  meshClientOptions,
  pooledChannelCount,
  routedChannelCredentials,
  setCallHook,
  setChannelCredentials,
} from './client.js';
export {
  identityMatches,
  type MeshChannelCredentialsOptions,
  type MeshServerCredentialsOptions,
  meshChannelCredentials,
  meshServerCredentials,
  PemCertificateProvider,
  type PemSource,
  spiffeIdOfCertificate,
  type UpstreamChannelCredentialsOptions,
  upstreamChannelCredentials,
} from './credentials.js';
export {
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeResponse,
  type HealthCheckRequest,
  type HealthCheckResponse,
  healthServiceDefinition,
  MeshHealth,
  type MeshHealthOptions,
  ServingStatus,
  type ServingStatusName,
} from './health.js';
export {
  type CallHook,
  type CallObserver,
  type CallStartInfo,
  type MeshInterceptorOptions,
  meshInterceptor,
  type RetryOptions,
} from './interceptors.js';
export { STREAM_RETRY_BUFFER_BYTES } from './mesh-call.js';
export { grpcStatusOfHttp } from './metadata.js';
export {
  findMesh,
  MESH_SCHEME,
  parseMeshTarget,
  type ResolvedTarget,
  registerMeshResolver,
  resolveRoutedTarget,
  resolveTarget,
  splitTarget,
} from './resolver.js';
export {
  callPrincipal,
  createMeshServer,
  type DrainOptions,
  drainServer,
  MeshGrpcServer,
  type MeshServer,
  type MeshServerInterceptorOptions,
  type MeshServerOptions,
  meshServerInterceptor,
  SERVER_KEEPALIVE_DEFAULTS,
  SERVER_MAX_CONCURRENT_STREAMS,
} from './server.js';
export {
  GRPC_JS_MIN_VERSION,
  GRPC_JS_RANGE,
  type GrpcJsSupport,
  grpcJsSupport,
  isSupportedGrpcJs,
  registerUnsupportedMeshResolver,
} from './support.js';
