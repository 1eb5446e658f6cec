export {
  type AccessLogEntry,
  type AccessLogLevel,
  type AccessLogLogger,
  type AccessLogSink,
  accessLogLevel,
  ECS_VERSION,
  JsonLineWriter,
  toEcs,
} from './access-log.js';
export { type AdminServer, isLoopbackHost, startAdmin } from './admin.js';
export { AdminTokenCheck, type AuthResult } from './admin-auth.js';
export {
  type AdminSource,
  type ClusterEndpoint,
  type ClusterService,
  type ClustersDocument,
  clusters,
  DEGRADED_RATIO,
  type EndpointVerdict,
  FAILING_RATIO,
  healthSnapshot,
  type InboundRoute,
  type InboundView,
  type RecentLatency,
  type ServiceVerdict,
  type ServingState,
  servingState,
  WINDOW_SECONDS,
} from './admin-health.js';
export {
  AdminStats,
  bucketValue,
  type Denial,
  LatencyWindow,
  latencyBucket,
  RateSeries,
  StatsClock,
  type WindowSummary,
} from './admin-stats.js';
export {
  type AccessLogConfig,
  type AdminConfig,
  type AdminToken,
  adminTokenProblem,
  DEFAULT_ADMIN,
  DEFAULT_BUCKETS,
  DEFAULT_TELEMETRY,
  type MetricsConfig,
  type MetricsNaming,
  type Propagation,
  parseAdminConfig,
  parseTelemetryConfig,
  registerTelemetryConfig,
  type TelemetryConfig,
  type TracingConfig,
} from './config.js';
export type {
  AccessLogInput,
  AdminInput,
  AdminTokenFile,
  MetricsInput,
  TelemetryInput,
  TracingInput,
} from './config-types.generated.js';
export { inboundTelemetry } from './inbound.js';
export { getTelemetry } from './installed.js';
export {
  ENDPOINT_STATES,
  ISTIO_BUCKETS_MS,
  ISTIO_LABELS,
  MeshMetrics,
  OUTCOMES,
  type ServiceStats,
} from './metrics.js';
export type { AnyRegistry } from './series.js';
export {
  installTelemetry,
  MeshTelemetry,
  ServerRequest,
  type ServerRequestInfo,
  ServerTelemetry,
  type TelemetryOptions,
} from './telemetry.js';
export {
  ClientTracing,
  extractContext,
  formatTraceparent,
  type HeaderGetter,
  type HeaderRecord,
  type HeaderSource,
  headerGetter,
  injectHeaders,
  parseB3,
  parseTraceparent,
  type ServerSpanInfo,
  ServerTracing,
  TraceStash,
} from './tracing.js';
