export { type CommandIo, runControlPlaneCommand } from './cli.js';
export {
  type ControlPlaneConfig,
  type CpHeaderMatch,
  type CpRetry,
  type CpRoute,
  type CpService,
  parseControlPlaneConfig,
} from './config.js';
export {
  type ClientStatus,
  ControlPlane,
  type ControlPlaneEvent,
  type ControlPlaneOptions,
  startControlPlane,
} from './server.js';
export {
  buildSnapshot,
  type EncodedResource,
  type ResourceSet,
  resourcesFromConfig,
  type Snapshot,
} from './snapshot.js';
