/**
 * `@meshlet/kubernetes/config`: what `import 'meshlet'` needs of Kubernetes discovery before it is
 * known to be on — the `kubernetes:` config section and the test whether it is on. The discovery
 * itself (API client, watches, EndpointSlice translation) is imported by `createMesh` only then.
 */
import type { ParsedMeshConfig } from '@meshlet/core';
import { inClusterAvailable } from './auth.js';
import { DEFAULT_SETTINGS, registerKubernetesSection } from './config.js';

registerKubernetesSection();

/**
 * Whether Kubernetes discovery is on for a mesh of `config`: a `kubernetes:` section, or the
 * process runs in a cluster (`KUBERNETES_SERVICE_HOST` set and a service-account token mounted in
 * `serviceAccountDir`).
 */
export function kubernetesWanted(
  config: ParsedMeshConfig,
  env: NodeJS.ProcessEnv,
  serviceAccountDir: string = DEFAULT_SETTINGS.serviceAccountDir,
): boolean {
  return config.extensions.kubernetes !== undefined || inClusterAvailable(env, serviceAccountDir);
}
