export { type CommandIo, runControlPlaneCommand } from './cli.js';
export {
  type ControlPlaneConfig,
  type CpHeaderMatch,
  type CpRetry,
  type CpRoute,
  type CpService,
  DEFAULT_LOAD_REPORTING_INTERVAL_MS,
  parseControlPlaneConfig,
} from './config.js';
export {
  type CpInbound,
  ISTIO_SERVER_LISTENER_TEMPLATE,
  inboundListeners,
  MTLS_MODES,
  type MtlsMode,
} from './inbound.js';
export {
  type ClientStatus,
  type ClusterLoad,
  ControlPlane,
  type ControlPlaneEvent,
  type ControlPlaneOptions,
  type LoadReportStatus,
  startControlPlane,
} from './server.js';
export {
  buildSnapshot,
  type EncodedResource,
  type ResourceSet,
  resourcesFromConfig,
  type Snapshot,
} from './snapshot.js';
