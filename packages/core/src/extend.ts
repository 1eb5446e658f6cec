/**
 * `@meshlet/core/extend`: what a transport or an extension is built from — the call pipeline a
 * transport subclasses, the observer contract telemetry implements, the runtime pieces a
 * transport reads and writes, and the registries policies and sections plug into. Applications
 * import `@meshlet/core` (or `meshlet`); this subpath is for packages that extend the mesh, as
 * grpc-js has `experimental`. Writing a transport: docs/architecture.md.
 *
 * Importing it registers the built-ins exactly as the root does (one module graph).
 */
import './index.js';

// The call pipeline: a transport subclasses `Call` and reports its attempts in these terms.
export {
  type AttemptFailure,
  AttemptFailures,
  Call,
  CallAttempt,
  type FailureKind,
  statusOutcome,
} from './call.js';
export { type ConfigSection, configSections, registerMeshSection, registerServiceSection } from './config.js';
// Deadlines and retries as the pipeline composes them (for wire headers and method rules).
export { currentDeadline, DEADLINE_HEADER, remainingTime, runWithDeadline } from './deadline.js';
export type {
  DiscoveryContext,
  DiscoveryFactory,
  DiscoveryListener,
  DiscoverySource,
  DiscoveryUpdate,
} from './discovery/types.js';
export {
  type ActiveHealth,
  allocateEndpointSlot,
  EndpointState,
  type PickResult,
  peakEwmaEstimate,
} from './endpoint-state.js';
// Errors a transport raises or passes on.
export { type ConfigIssue, ErrorCodes, isMeshError, MeshError } from './errors.js';
// What an attempt says about its endpoint, and how a call ended.
export type { AttemptEvent, Outcome, RequestEvent, Verdict } from './events.js';
export {
  type HealthChecker,
  type HealthCheckerFactory,
  type HealthCheckResult,
  type HealthCheckTarget,
  healthCheckers,
  registerHealthChecker,
} from './health/types.js';
export type {
  LbClock,
  LbContext,
  LbSelection,
  LoadBalancer,
  LoadBalancerFactory,
  PickContext,
  Picker,
} from './lb/types.js';
export type { Mesh, NameResolver, ResolvedService } from './mesh.js';
// The outbound observer contract (installed with `Mesh.setCallHook`).
export {
  type CallHook,
  type CallInfo,
  type CallListener,
  type CallObserver,
  type EndpointRemovedListener,
  grpcStatusName,
  RuntimeHooks,
  type Transport,
} from './observer.js';
// Registries: load balancers, discovery types, health checkers, config sections.
export {
  discoverySources,
  loadBalancers,
  Registry,
  registerDiscovery,
  registerLoadBalancer,
} from './registry.js';
export { backoffDelay, isIdempotentMethod, parseRetryAfter } from './retry.js';
export type { RouteRequest, RouteResult, Router, RouteTarget } from './router.js';
export { type Fields, ObjectSchema, s } from './schema.js';
// The runtime a transport works against: a service's endpoints, picks, attempt accounting,
// connectivity reports and endpoint watches.
export {
  type AttemptObserver,
  type DiscoveryStatus,
  type EndpointSetFilter,
  QUEUE_PICKER,
  ServiceRuntime,
  verdictOf,
} from './service.js';
// Inbound ports: how policies and telemetry reach the server adapters.
export {
  addInboundPolicy,
  type InboundPolicySource,
  type InboundTelemetry,
  inboundPorts,
  setInboundTelemetry,
  setTrustDomain,
} from './serving.js';
