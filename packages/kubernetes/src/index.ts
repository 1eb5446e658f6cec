export {
  type ClusterAccess,
  inClusterAvailable,
  kubeconfigPath,
  loadInCluster,
  loadKubeconfig,
  resolveAccess,
  TokenSource,
} from './auth.js';
export { type ClientStats, KubeClient, NdjsonParser, RateLimiter } from './client.js';
export {
  DEFAULT_SETTINGS,
  type KubernetesServiceOverride,
  type KubernetesSettings,
  parseKubernetesSettings,
  registerKubernetesSection,
  SERVICE_ACCOUNT_DIR,
} from './config.js';
export type {
  KubernetesBackoffInput,
  KubernetesInput,
  KubernetesServiceInput,
} from './config-types.generated.js';
export {
  KubernetesDiscovery,
  type KubernetesDiscoveryOptions,
  type ServiceRef,
  zoneFilter,
} from './discovery.js';
export { kubernetesWanted } from './light.js';
export { type SetupKubernetesOptions, setupKubernetes } from './setup.js';
export {
  HINTS_KEY,
  type ParsedSlice,
  parseSlice,
  type SliceEndpoint,
  type SlicePort,
  sliceEndpoints,
} from './slices.js';
export { type PortSelector, SliceSource, type SourceStats } from './source.js';
export {
  type ServicePort,
  ServiceWatch,
  type WatchState,
  type WatchStats,
  type WatchSubscriber,
} from './watch.js';
