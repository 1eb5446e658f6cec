import { registerBuiltins } from './builtins.js';

registerBuiltins();

export {
  type ConfigSection,
  type ConnectionPolicy,
  checkConfig,
  DEFAULT_POLICY,
  DEFAULT_RETRY,
  type DiscoverySelection,
  type LocalConfig,
  loadConfig,
  type MeshConfig,
  type ParseOptions,
  parseConfig,
  parseConfigText,
  RETRY_CONDITIONS,
  type RetryBudgetPolicy,
  type RetryCondition,
  type RetryPolicy,
  readConfigFile,
  registerMeshSection,
  registerServiceSection,
  type ServiceConfig,
  type ServicePolicy,
  setDefaultLoadBalancer,
} from './config.js';
export { parseEndpointList } from './discovery/endpoints.js';
export { type StaticDiscoveryConfig, staticDiscovery } from './discovery/static.js';
export type {
  DiscoveryContext,
  DiscoveryFactory,
  DiscoveryListener,
  DiscoverySource,
  DiscoveryUpdate,
} from './discovery/types.js';
export { formatDuration, parseDuration } from './duration.js';
export { type ActiveHealth, allocateEndpointSlot, EndpointState, type PickResult } from './endpoint-state.js';
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
  type MeshEventMap,
  type MeshEventName,
  MeshEvents,
  type Outcome,
  type RequestEvent,
} from './events.js';
export { type LeastRequestConfig, leastRequest } from './lb/least-request.js';
export { roundRobin } from './lb/round-robin.js';
export type { LbSelection, LoadBalancer, LoadBalancerFactory, PickContext, Picker } from './lb/types.js';
export {
  type EndpointSnapshot,
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
  type Locality,
  localityKey,
  makeEndpoint,
  parseHostPort,
  sameEndpoint,
  UNSPECIFIED_LOCALITY,
} from './model.js';
export {
  discoverySources,
  loadBalancers,
  Registry,
  registerDiscovery,
  registerLoadBalancer,
} from './registry.js';
export { backoffDelay, isIdempotentMethod, parseRetryAfter, RetryBudget } from './retry.js';
export {
  type AttemptObserver,
  type DiscoveryStatus,
  type EndpointSetFilter,
  QUEUE_PICKER,
  ServiceRuntime,
} from './service.js';
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
