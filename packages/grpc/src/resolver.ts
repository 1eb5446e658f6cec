import { type ChannelOptions, experimental, Metadata, type ServiceConfig, status } from '@grpc/grpc-js';
import { ErrorCodes, type Mesh, MeshError, type Router, type ServiceRuntime } from '@meshlet/core';
import { LB_POLICY_NAME, ROUTER_ATTRIBUTE, RUNTIME_ATTRIBUTE, registerMeshBalancer } from './balancer.js';
import { CONFIG_SELECTOR_KEY, RoutingConfigSelector } from './routing.js';

type GrpcUri = experimental.GrpcUri;
type ResolverListener = experimental.ResolverListener;

/** The URI scheme meshlet registers with grpc-js: `mesh:///reviews`, `mesh:///reviews:9090`. */
export const MESH_SCHEME = 'mesh';

interface Registered {
  readonly mesh: Mesh;
  readonly name: string | undefined;
}

/** Open meshes attached to gRPC, oldest first. The last one is the default. */
const meshes: Registered[] = [];

/**
 * Which Mesh a `mesh:` channel uses when a process has several:
 * - `mesh:///reviews` uses the most recently attached mesh that is still open (closing it falls
 *   back to the one attached before it);
 * - `mesh://<name>/reviews` uses the mesh attached with that name (`attachGrpc(mesh, { name })`;
 *   `createMesh` attaches with the config's `local.workload`).
 */
export function findMesh(name: string): Mesh | undefined {
  for (let i = meshes.length - 1; i >= 0; i--) {
    const r = meshes[i] as Registered;
    if (r.mesh.closed) continue;
    if (name === '' || r.name === name) return r.mesh;
  }
  return undefined;
}

/** Adds a mesh to the registry; returns a function that removes it. */
export function registerMesh(mesh: Mesh, name: string | undefined): () => void {
  registerMeshResolver();
  const entry: Registered = { mesh, name };
  meshes.push(entry);
  return () => {
    const i = meshes.indexOf(entry);
    if (i >= 0) meshes.splice(i, 1);
  };
}

/** Splits the target path into host and optional port (`reviews`, `reviews:9090`, `[::1]:9090`). */
export function splitTarget(path: string): { host: string; port: number | undefined } {
  const p = path.startsWith('/') ? path.slice(1) : path;
  const hp = experimental.splitHostPort(p);
  if (!hp) return { host: p, port: undefined };
  return { host: hp.host, port: hp.port };
}

/** What a `mesh:` target resolves to: a service, or a router (an xDS listener) in front of services. */
export type ResolvedTarget =
  | { readonly mesh: Mesh; readonly runtime: ServiceRuntime; readonly router?: undefined }
  | { readonly mesh: Mesh; readonly runtime?: undefined; readonly router: Router };

function findTargetMesh(uri: GrpcUri): Mesh {
  const mesh = findMesh(uri.authority ?? '');
  if (!mesh) {
    throw new MeshError(
      ErrorCodes.UNKNOWN_SERVICE,
      uri.authority
        ? `no open meshlet Mesh named "${uri.authority}" for target mesh://${uri.authority}/${uri.path}`
        : `no open meshlet Mesh for target mesh:///${uri.path} (create one with createMesh() first)`,
    );
  }
  return mesh;
}

/**
 * Resolves a `mesh:` target the way mesh fetch resolves an authority: a router first (with xDS,
 * `mesh:///NAME` is the listener `NAME`, routed per call), else the service; throws a MeshError.
 */
export function resolveRoutedTarget(target: GrpcUri | string): ResolvedTarget {
  const uri = typeof target === 'string' ? parseMeshTarget(target) : target;
  const mesh = findTargetMesh(uri);
  const { host, port } = splitTarget(uri.path);
  const router = mesh.router(host, port);
  if (router) return { mesh, router };
  return { mesh, runtime: resolveRuntime(mesh, uri.path, host, port) };
}

function resolveRuntime(mesh: Mesh, path: string, host: string, port: number | undefined): ServiceRuntime {
  const runtime = mesh.resolve(host, port);
  if (!runtime) {
    throw new MeshError(ErrorCodes.UNKNOWN_SERVICE, `"${path}" is not a service the mesh knows`, {
      service: host,
    });
  }
  return runtime;
}

/** Resolves a `mesh:` target to the service runtime (not through routers), or throws a MeshError. */
export function resolveTarget(target: GrpcUri | string): { mesh: Mesh; runtime: ServiceRuntime } {
  const uri = typeof target === 'string' ? parseMeshTarget(target) : target;
  const mesh = findTargetMesh(uri);
  const { host, port } = splitTarget(uri.path);
  return { mesh, runtime: resolveRuntime(mesh, uri.path, host, port) };
}

/** Parses `mesh://[name]/service[:port]`. */
export function parseMeshTarget(target: string): GrpcUri {
  const m = /^mesh:(?:\/\/([^/]*)\/)?(.+)$/.exec(target);
  if (!m)
    throw new MeshError(ErrorCodes.CONFIG, `"${target}" is not a mesh: target (mesh:///service[:port])`);
  return { scheme: MESH_SCHEME, authority: m[1] ?? '', path: m[2] as string };
}

const SERVICE_CONFIG: ServiceConfig = {
  loadBalancingConfig: [{ [LB_POLICY_NAME]: {} }],
  methodConfig: [],
};

/**
 * The channel option that marks a mesh client's pooled channel (`meshChannel`): its calls are
 * `MeshCall`s, whose pipeline owns retries and deadlines, so a `grpc.service_config` given to it
 * does not add grpc-js's own.
 */
export const MESH_CLIENT_CHANNEL = 'grpc-node.meshlet_mesh_client';

/**
 * The service config of a service's channel: `meshlet`'s balancer, with the `methodConfig` (retry
 * policies, timeouts, waitForReady) and `retryThrottling` of the channel's own
 * `grpc.service_config` for a plain grpc-js client — what grpc-js applies when a resolver gives no
 * config. grpc-js validated that JSON when the channel was made.
 */
function serviceConfigOf(options: ChannelOptions | undefined): ServiceConfig {
  const raw = options?.['grpc.service_config'];
  if (typeof raw !== 'string' || options?.[MESH_CLIENT_CHANNEL] !== undefined) return SERVICE_CONFIG;
  try {
    const own = JSON.parse(raw) as Partial<ServiceConfig>;
    return {
      ...SERVICE_CONFIG,
      methodConfig: own.methodConfig ?? [],
      ...(own.retryThrottling === undefined ? {} : { retryThrottling: own.retryThrottling }),
    };
  } catch {
    return SERVICE_CONFIG;
  }
}

/**
 * The grpc-js resolver of the `mesh:` scheme. It hands the channel the service's endpoints, the
 * `ServiceRuntime` (as a resolver attribute for the `meshlet` balancer) and a service config that
 * selects that balancer; it re-reports whenever discovery changes the endpoint set.
 */
class MeshResolver implements experimental.Resolver {
  readonly #target: GrpcUri;
  readonly #listener: ResolverListener;
  #runtime: ServiceRuntime | undefined;
  #router: Router | undefined;
  #selector: RoutingConfigSelector | undefined;
  /** Whether the router's route table is known (its `whenReady()` resolved). */
  #ready = false;
  #unsubscribe: (() => void) | undefined;
  /** Keeps an on-demand runtime or router open while this channel lives (see `Mesh.retain`). */
  #release: (() => void) | undefined;
  #pending = false;
  #destroyed = false;

  readonly #serviceConfig: ServiceConfig;

  constructor(target: GrpcUri, listener: ResolverListener, options?: ChannelOptions) {
    this.#target = target;
    this.#listener = listener;
    this.#serviceConfig = serviceConfigOf(options);
  }

  updateResolution(): void {
    this.#destroyed = false;
    if (this.#pending) return;
    this.#pending = true;
    setImmediate(() => {
      this.#pending = false;
      if (!this.#destroyed) this.#resolve();
    });
  }

  #resolve(): void {
    let resolved: ResolvedTarget;
    try {
      resolved = resolveRoutedTarget(this.#target);
    } catch (err) {
      this.#listener(
        {
          ok: false,
          error: { code: status.UNAVAILABLE, details: (err as Error).message, metadata: new Metadata() },
        },
        {},
        null,
        '',
      );
      return;
    }
    if (resolved.router !== undefined) {
      this.#routed(resolved.router, resolved.mesh);
      return;
    }
    const { mesh, runtime } = resolved;
    if (this.#runtime !== runtime) {
      this.#unsubscribe?.();
      this.#release?.();
      this.#release = mesh.retain(runtime);
      this.#runtime = runtime;
      // Discovery changes (and failures) are re-reported: a watch, not the event bus.
      this.#unsubscribe = runtime.watchEndpoints(() => this.updateResolution());
      if (!runtime.discovery.hasData && runtime.discovery.errors === 0) {
        runtime.whenDiscovered().then(() => this.updateResolution());
      }
    }
    this.#report(runtime);
  }

  #report(runtime: ServiceRuntime): void {
    const endpoints = runtime.endpoints.map((st) => ({
      addresses: [{ host: st.endpoint.address, port: st.endpoint.port }],
    }));
    this.#listener(
      { ok: true, value: endpoints },
      { [RUNTIME_ATTRIBUTE]: runtime },
      { ok: true, value: this.#serviceConfig },
      '',
    );
  }

  /**
   * A routed target (an xDS listener): no endpoints of its own; the `meshlet` balancer connects to
   * the endpoints of every service the calls are routed to, and a config selector routes the calls
   * of plain clients (mesh clients route in `MeshCall`). Reported once the route table is known.
   */
  #routed(router: Router, mesh: Mesh): void {
    if (this.#router !== router) {
      this.#unsubscribe?.();
      this.#unsubscribe = undefined;
      this.#release?.();
      this.#release = mesh.retain(router);
      this.#runtime = undefined;
      this.#router = router;
      this.#selector?.unref();
      this.#selector = new RoutingConfigSelector(router);
      this.#ready = false;
      router.whenReady().then(() => {
        if (this.#router !== router) return;
        this.#ready = true;
        this.updateResolution();
      });
      return;
    }
    if (!this.#ready) return;
    this.#listener(
      { ok: true, value: [] },
      { [ROUTER_ATTRIBUTE]: router, [CONFIG_SELECTOR_KEY]: this.#selector },
      { ok: true, value: SERVICE_CONFIG },
      '',
    );
  }

  destroy(): void {
    this.#selector?.unref();
    this.#selector = undefined;
    this.#router = undefined;
    this.#destroyed = true;
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    this.#release?.();
    this.#release = undefined;
    this.#runtime = undefined;
  }

  static getDefaultAuthority(target: GrpcUri): string {
    const { host, port } = splitTarget(target.path);
    return port === undefined ? host : `${host}:${port}`;
  }
}

let registered = false;
/** Registers the `mesh:` scheme and the `meshlet` balancer with the application's grpc-js. */
export function registerMeshResolver(): void {
  registerMeshBalancer();
  if (registered) return;
  registered = true;
  experimental.registerResolver(MESH_SCHEME, MeshResolver);
}
