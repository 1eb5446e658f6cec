import { registerBuiltins } from './builtins.js';

registerBuiltins();

export {
  type CertificateProvider,
  certificateProvider,
  certificateProviderNames,
  chainCertificates,
  setCertificateProvider,
} from './certificates.js';
export {
  type ConfigSection,
  type ConnectionPolicy,
  checkConfig,
  configSections,
  connectionSchema,
  DEFAULT_POLICY,
  DEFAULT_RETRY,
  type DiscoverySelection,
  GRPC_RETRY_CODES,
  type LocalConfig,
  loadConfig,
  localSchema,
  meshConfigJsonSchema,
  meshSchema,
  type ParsedMeshConfig,
  type ParseOptions,
  parseConfig,
  parseConfigText,
  policySchema,
  RETRY_CONDITIONS,
  type RetryBudgetPolicy,
  type RetryCondition,
  type RetryPolicy,
  readConfigFile,
  registerMeshSection,
  registerServiceSection,
  retrySchema,
  type ServiceConfig,
  type ServicePolicy,
  serviceSchema,
  setDefaultLoadBalancer,
} from './config.js';
export type {
  BalancingInput,
  CircuitBreakerInput,
  ConnectionInput,
  DiscoveryInput,
  DiscoveryShorthands,
  DiscoveryTypes,
  DnsDiscoveryInput,
  EndpointInput,
  FileDiscoveryInput,
  HashRuleInput,
  HealthCheckCommonInput,
  HealthCheckers,
  HealthCheckInput,
  HedgeInput,
  HttpHealthCheckOptions,
  LbInput,
  LbPolicies,
  LeastRequestOptions,
  LocalInput,
  MaglevOptions,
  MeshConfig,
  MeshSections,
  OutlierDetectionInput,
  PeakEwmaOptions,
  PenaltyInput,
  PolicyInput,
  RandomOptions,
  RetryBackoffInput,
  RetryBudgetInput,
  RetryInput,
  RingHashOptions,
  RoundRobinOptions,
  ServiceInput,
  ServiceSections,
  SlowStartInput,
  StaticDiscoveryInput,
  TcpHealthCheckOptions,
  ThresholdsInput,
  WeightedRoundRobinOptions,
  ZoneAwareInput,
} from './config-types.generated.js';
export {
  currentDeadline,
  DEADLINE_HEADER,
  effectiveTimeout,
  inboundDeadline,
  parseDeadlineHeader,
  REQUEST_TIMEOUT_HEADER,
  remainingTime,
  runWithDeadline,
} from './deadline.js';
export {
  type DnsDiscoveryConfig,
  type DnsRecordType,
  type DnsResolverKind,
  type DnsResolverLike,
  DnsSource,
  dnsDiscovery,
  type SystemLookup,
} from './discovery/dns.js';
export { endpointListSchema, endpointSchema, parseEndpointList } from './discovery/endpoints.js';
export { type FileDiscoveryConfig, FileSource, fileDiscovery, parseEndpointsFile } from './discovery/file.js';
export { type StaticDiscoveryConfig, staticDiscovery } from './discovery/static.js';
export type {
  DiscoveryContext,
  DiscoveryFactory,
  DiscoveryListener,
  DiscoverySource,
  DiscoveryUpdate,
} from './discovery/types.js';
export { concatSegments, segmentedUpdate } from './discovery/update.js';
export { HttpDrainer, type HttpDrainOptions } from './drain.js';
export { clampTimer, formatDuration, MAX_TIMER_MS, parseDuration } from './duration.js';
export { type ActiveHealth, EndpointState, type PickResult } from './endpoint-state.js';
export {
  type ConfigIssue,
  type ErrorCode,
  ErrorCodes,
  isConfigError,
  isMeshError,
  isMeshErrorCode,
  MeshConfigError,
  MeshError,
  type MeshErrorDetails,
} from './errors.js';
export {
  type AttemptEvent,
  debugLogger,
  type EventSlot,
  type MeshEventMap,
  type MeshEventName,
  MeshEvents,
  type Outcome,
  type RequestEvent,
  type Verdict,
} from './events.js';
export {
  ActiveHealthChecker,
  type HealthCheckHost,
  type HealthCheckPolicy,
  healthCheckCommonSchema,
  healthCheckSchema,
  parseHealthCheckPolicy,
} from './health/checker.js';
export { type HttpHealthCheckConfig, httpHealthChecker } from './health/http.js';
export { tcpHealthChecker } from './health/tcp.js';
export {
  type HealthChecker,
  type HealthCheckerFactory,
  type HealthCheckResult,
  type HealthCheckTarget,
  healthCheckers,
  registerHealthChecker,
} from './health/types.js';
export {
  badRequest,
  CLIENT_CERT_HEADER,
  grpcServerFailure,
  InboundAdmission,
  type InboundAdmissionOptions,
  InboundRequest,
  removeClientCert,
  requestedLoadFormat,
} from './inbound/admission.js';
export {
  DEFAULT_INBOUND,
  DEFAULT_LOAD_REPORTS,
  type DeadlineTrust,
  type InboundConfig,
  inboundSchema,
  type LoadReportSend,
  type LoadReportsConfig,
  parseInboundSection,
  parseLoadReports,
  parseNetworks,
  parseOverload,
} from './inbound/config.js';
export { countOut, refusalHeaders, trackLoad } from './inbound/http-load.js';
export {
  type ClosableRequest,
  type ClosableResponse,
  closeConnectionAfter,
  type DrainableSession,
  GOAWAY_PING_WAIT_MS,
  gracefulGoaway,
  type InboundChainRequest,
  type InboundConnection,
  InboundConnectionState,
  type InboundFilterChain,
  type InboundListenerConfig,
  type InboundListenerHandle,
  type InboundListenerPort,
  type InboundTlsRequirement,
  type InboundUnavailable,
  listeningAddress,
} from './inbound/listener.js';
export {
  DEFAULT_PATH_NORMALIZATION,
  defaultEscapedSlashes,
  ESCAPED_SLASHES_ACTIONS,
  type EscapedSlashesAction,
  normalizeTarget,
  PATH_NORMALIZATIONS,
  type PathNormalization,
  type PathNormalizationOptions,
  type TargetParts,
} from './inbound/path.js';
export {
  connectionStateOf,
  forwardedClientIp,
  type InboundPeer,
  networkMatcher,
  type PeerCertificateInfo,
  type PeerSocket,
  setConnectionState,
  socketConnection,
  socketPeer,
  spiffeIdFromSubjectAltName,
  unmapIp,
} from './inbound/peer.js';
export {
  decodeForRouting,
  EXACT_ROUTE_VIEW,
  type RouteMatchingOptions,
  type RouteView,
  routeView,
} from './inbound/route-view.js';
export { guardUpgrades, type UpgradeServer } from './inbound/upgrade.js';
export {
  type ClientSideWrrConfig,
  clientSideWeightedRoundRobin,
  DEFAULT_CLIENT_SIDE_WRR,
} from './lb/client-side-wrr.js';
export {
  computeRequestHash,
  findHeader,
  fmix32,
  type HashRule,
  type HeaderInput,
  murmur3,
  parseHashPolicy,
} from './lb/hash.js';
export { type LeastRequestConfig, leastRequest } from './lb/least-request.js';
export { buildMaglevTable, type MaglevConfig, maglev } from './lb/maglev.js';
export { DEFAULT_PEAK_EWMA, type PeakEwmaConfig, peakEwma } from './lb/peak-ewma.js';
export {
  type BalancingConfig,
  balancingOf,
  DEFAULT_BALANCING,
  type Plan,
  type PlanInput,
  parseBalancing,
  planPicker,
  slowStartFactor,
} from './lb/priority.js';
export { random } from './lb/random.js';
export { HashRing, type RingHashConfig, ringHash } from './lb/ring-hash.js';
export { roundRobin } from './lb/round-robin.js';
export type {
  LbContext,
  LbSelection,
  LoadBalancer,
  LoadBalancerFactory,
  PickContext,
  Picker,
} from './lb/types.js';
export { weightedRoundRobin } from './lb/weighted-round-robin.js';
export {
  type Capacity,
  parseCpuMax,
  parseMemoryMax,
  parseProcCgroup,
  readCapacity,
} from './load/capacity.js';
export {
  AdaptiveConcurrency,
  adaptiveConcurrencySchema,
  parseAdaptiveConcurrency,
} from './load/concurrency.js';
export {
  type AdaptiveConcurrencyConfig,
  DEFAULT_ADAPTIVE_CONCURRENCY,
  EndpointConcurrency,
} from './load/concurrency-state.js';
export { EndpointLoad, type WeightRules } from './load/endpoint-load.js';
export {
  DEFAULT_ORCA_LIMITS,
  EMPTY_ORCA_REPORT,
  ORCA_BIN_HEADER,
  ORCA_FORMAT_HEADER,
  ORCA_HEADER,
  type OrcaLimits,
  type OrcaLoadReport,
  type OrcaLoadReportInit,
  type OrcaMetricMap,
  type OrcaParseResult,
  orcaLoadReport,
} from './load/orca.js';
export {
  formatOrcaBin,
  formatOrcaHeader,
  formatOrcaJson,
  formatOrcaText,
  isTextSafeName,
  type OrcaHeaderFormat,
  parseOrcaBin,
  parseOrcaHeader,
  readEndpointReport,
  readEndpointReportBytes,
  readEndpointReportValue,
  readOrcaReport,
} from './load/orca-header.js';
export { decodeOrcaLoadReport, encodeOrcaLoadReport } from './load/orca-proto.js';
export {
  DEFAULT_OVERLOAD,
  EventLoopLag,
  type LocalStalls,
  type OverloadConfig,
  OverloadGuard,
  processEventLoopLag,
  SHED_HEADER,
  type ShedReason,
  STALL_MIN_MS,
} from './load/overload.js';
export {
  DEFAULT_LOAD_INTERVAL_MS,
  LoadSampler,
  type LoadSamplerOptions,
  type LoadSnapshot,
  type LoadSources,
  MAX_WINDOW_INTERVALS,
  processLoad,
  processLoadSources,
  runningProcessLoad,
} from './load/sampler.js';
export {
  attachLogger,
  type ConsoleLoggerOptions,
  consoleLogger,
  DEFAULT_LOG_RATE_LIMIT,
  type LogLevel,
  type LogRateLimit,
  type MeshLogger,
  RateLimitedLogger,
} from './logger.js';
export {
  type EndpointSnapshot,
  MAX_UNKNOWN_AUTHORITIES,
  Mesh,
  type MeshOptions,
  type MeshSnapshot,
  type NameResolver,
  type ResolvedService,
  type ServiceSnapshot,
} from './mesh.js';
export {
  type Endpoint,
  type EndpointInit,
  endpointId,
  HEALTH_STATUSES,
  type HealthStatus,
  isValidHost,
  type Locality,
  localityKey,
  makeEndpoint,
  parseHostPort,
  sameEndpoint,
  UNSPECIFIED_LOCALITY,
} from './model.js';
export {
  type CallHook,
  type CallInfo,
  type CallListener,
  type CallObserver,
  grpcStatusName,
  type Transport,
} from './observer.js';
export {
  DEFAULT_OUTLIER,
  type EjectionReason,
  OutlierDetector,
  type OutlierHost,
  type OutlierPolicy,
  parseOutlierPolicy,
} from './outlier.js';
export {
  discoverySources,
  loadBalancers,
  Registry,
  registerDiscovery,
  registerLoadBalancer,
} from './registry.js';
export {
  BreakerPermit,
  type BreakerPolicy,
  type BreakerState,
  type BreakerVerdict,
  CircuitBreaker,
  DEFAULT_BREAKER,
  parseBreakerPolicy,
} from './resilience/breaker.js';
export { DEFAULT_RESILIENCE, type HedgePolicy, type ResiliencePolicy } from './resilience/policy.js';
export { type ResilienceHost, ServiceResilience } from './resilience/service-resilience.js';
export {
  DEFAULT_THRESHOLDS,
  type Overflow,
  Thresholds,
  type ThresholdsPolicy,
  UNLIMITED,
} from './resilience/thresholds.js';
export { backoffDelay, isIdempotentMethod, parseRetryAfter, RetryBudget } from './retry.js';
export type { RouteRequest, RouteResult, Router, RouteTarget } from './router.js';
export {
  type CustomDef,
  type Doc,
  DURATION_PATTERN,
  type Duration,
  type Extension,
  type Fields,
  type InputOf,
  JsonEmitter,
  type JsonSchema,
  type ObjectInput,
  type ObjectOutput,
  ObjectSchema,
  type OutputOf,
  Schema,
  s,
  TsEmitter,
  taggedJson,
  tsDoc,
  tsObject,
} from './schema.js';
export {
  type DiscoveryStatus,
  type EndpointSetFilter,
  ServiceRuntime,
  type ServiceRuntimeOptions,
} from './service.js';
export {
  addInboundPolicy,
  type InboundAttributes,
  type InboundAuthorizer,
  type InboundDecision,
  type InboundHeaders,
  type InboundOptions,
  type InboundPolicySource,
  type InboundRequestInfo,
  type InboundSpan,
  type InboundTelemetry,
  inboundPorts,
  isDraining,
  isServing,
  type MeshInboundPorts,
  meshInboundTelemetry,
  onServingChange,
  type PathMatching,
  setInboundListeners,
  setInboundTelemetry,
  setTrustDomain,
  startDraining,
} from './serving.js';
export {
  describeSanMatchers,
  FALLBACK_UPSTREAM_SECURITY,
  parseSubjectAltNames,
  type SanMatcher,
  type SanType,
  type SubjectAltName,
  subjectAltNamesMatch,
  type TransportSocketMatch,
  type UpstreamSecurity,
  type UpstreamTls,
  upstreamTlsFor,
} from './upstream-tls.js';
export {
  checkKeys,
  describe,
  expectObject,
  isPlainObject,
  join,
  optBoolean,
  optEnum,
  optNumber,
  optString,
} from './validate.js';
export { loadYaml } from './yaml.js';
