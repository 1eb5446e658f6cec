import type { Mesh } from '@meshlet/core';
import { DEFAULT_SETTINGS, type KubernetesSettings } from './config.js';
import { KubernetesDiscovery } from './discovery.js';
import { kubernetesWanted } from './light.js';

export interface SetupKubernetesOptions {
  /** Environment for in-cluster detection and `KUBECONFIG` (default `process.env`). */
  readonly env?: NodeJS.ProcessEnv;
  /** Where auto-detection looks for the service-account token (tests). */
  readonly serviceAccountDir?: string;
}

/**
 * Turns Kubernetes discovery on for `mesh` when its config has a `kubernetes:` section, or when
 * the process runs in a cluster (`KUBERNETES_SERVICE_HOST` set and a service-account token
 * mounted). Adds the resolver and the `kubernetes` snapshot section. Returns undefined when
 * discovery stays off.
 *
 * With an explicit section, missing credentials reject (so `createMesh` fails loudly); when only
 * auto-detected, they are reported as a `log` event and discovery stays off.
 */
export async function setupKubernetes(
  mesh: Mesh,
  options: SetupKubernetesOptions = {},
): Promise<KubernetesDiscovery | undefined> {
  const env = options.env ?? process.env;
  const configured = mesh.config.extensions.kubernetes as KubernetesSettings | undefined;
  const saDir = options.serviceAccountDir ?? DEFAULT_SETTINGS.serviceAccountDir;
  if (!kubernetesWanted(mesh.config, env, saDir)) return undefined;
  const settings = configured ?? { ...DEFAULT_SETTINGS, serviceAccountDir: saDir };
  let discovery: KubernetesDiscovery;
  try {
    discovery = new KubernetesDiscovery(
      { settings, env, localZone: mesh.config.local.zone, localNamespace: mesh.config.local.namespace },
      mesh,
    );
  } catch (err) {
    if (configured !== undefined) throw err;
    mesh.events.emit('log', {
      level: 'warn',
      scope: 'kubernetes',
      message: `in-cluster discovery is off: ${(err as Error).message}`,
    });
    return undefined;
  }
  mesh.onClose(() => discovery.close());
  await discovery.confirmNamespaces(Math.min(2000, settings.requestTimeoutMs));
  mesh.addResolver(discovery);
  mesh.addSnapshotSection('kubernetes', () => discovery.snapshot());
  return discovery;
}
