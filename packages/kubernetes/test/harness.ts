import type { EventEmitter } from 'node:events';
import { Mesh, type MeshEventMap, type MeshEventName, parseConfig } from '@meshlet/core';
import type { ClusterAccess } from '../src/auth.js';
import type { KubernetesSettings } from '../src/config.js';
import { KubernetesDiscovery } from '../src/discovery.js';
import { type FakeEndpoint, makeService, makeSlice } from './fake-apiserver.js';

/** Access to a fake API server over plain HTTP (no credentials unless a token is given). */
export function plainAccess(server: string, overrides: Partial<ClusterAccess> = {}): ClusterAccess {
  return {
    server,
    ca: undefined,
    cert: undefined,
    key: undefined,
    insecureSkipTlsVerify: false,
    token: undefined,
    basic: undefined,
    namespace: 'default',
    inCluster: true,
    source: 'test',
    ...overrides,
  };
}

/** A core mesh with Kubernetes discovery against `access`; fast backoff for tests. */
export async function meshWith(
  access: ClusterAccess,
  kubernetes: Record<string, unknown> = {},
  rest: Record<string, unknown> = {},
): Promise<{ mesh: Mesh; discovery: KubernetesDiscovery }> {
  const config = parseConfig({
    defaults: { lb: 'round_robin' },
    ...rest,
    kubernetes: { backoff: { base: '10ms', max: '50ms' }, maxRequestsPerSecond: 1000, ...kubernetes },
  });
  const mesh = new Mesh(config);
  const discovery = new KubernetesDiscovery(
    { settings: config.extensions.kubernetes as KubernetesSettings, access, localZone: config.local.zone },
    mesh,
  );
  mesh.onClose(() => discovery.close());
  mesh.addResolver(discovery);
  return { mesh, discovery };
}

/** Resolves with the next mesh event of `name` that satisfies `pred`. */
export function nextEvent<K extends MeshEventName>(
  mesh: Mesh,
  name: K,
  pred: (e: MeshEventMap[K]) => boolean = () => true,
): Promise<MeshEventMap[K]> {
  return new Promise((resolve) => {
    const off = mesh.events.on(name, (e) => {
      if (pred(e)) {
        off();
        resolve(e);
      }
    });
  });
}

/** Resolves with the next emitter event of `name` that satisfies `pred`. */
export function nextEmit<T>(
  em: EventEmitter,
  name: string,
  pred: (e: T) => boolean = () => true,
): Promise<T> {
  return new Promise((resolve) => {
    const fn = (e: T) => {
      if (pred(e)) {
        em.off(name, fn);
        resolve(e);
      }
    };
    em.on(name, fn);
  });
}

/** `n` pods `<svc>-<i>` at 10.1.0.<i> (or the given base), ready, in zone `a`. */
export function pods(
  service: string,
  from: number,
  to: number,
  extra: Partial<FakeEndpoint> = {},
  base = '10.1.0.',
): FakeEndpoint[] {
  const out: FakeEndpoint[] = [];
  for (let i = from; i <= to; i++)
    out.push({ ip: `${base}${i}`, pod: `${service}-${i}`, zone: 'a', ...extra });
  return out;
}

/** The usual shape: Service port 8080 named `http`, slices expose `http` on 9376. */
export function reviewsService(): Record<string, unknown> {
  return makeService('reviews', [
    { name: 'http', port: 8080, targetPort: 'http' },
    { name: 'admin', port: 9090, targetPort: 9901 },
  ]);
}

export function reviewsSlice(name: string, endpoints: FakeEndpoint[], port = 9376): Record<string, unknown> {
  return makeSlice({
    name,
    service: 'reviews',
    ports: [
      { name: 'http', port },
      { name: 'admin', port: 9901 },
    ],
    endpoints,
  });
}
