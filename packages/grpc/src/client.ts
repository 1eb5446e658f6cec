import {
  CallCredentials,
  Channel,
  ChannelCredentials,
  type ChannelInterface,
  type ChannelOptions,
  type Client,
  type ClientOptions,
  connectivityState,
  credentials,
  type Interceptor,
  type ServiceDefinition,
} from '@grpc/grpc-js';
import { type EndpointState, endpointId, type Mesh, type ServiceRuntime, unmapIp } from '@meshlet/core';
import { SERVICE_SUBCHANNEL_ARG } from './balancer.js';
import type { CallHook, MeshInterceptorOptions } from './interceptors.js';
import { type GrpcCall, IDEMPOTENT, idempotencyOf, MeshClientPolicy, markUnary, UNARY } from './mesh-call.js';
import { MESH_CLIENT_CHANNEL, parseMeshTarget, resolveRoutedTarget } from './resolver.js';

/**
 * Client keepalive defaults for mesh channels. A ping every 5 minutes when calls are in flight,
 * failing the connection when the ack takes more than 20 s: this detects dead peers (half-open
 * TCP, a crashed node) while staying at the 5-minute minimum interval that gRPC servers enforce by
 * default (gRFC A8), so no server answers with GOAWAY `too_many_pings`. No pings on idle
 * connections (`permit_without_calls: 0`), which servers also reject by default.
 */
export const CLIENT_KEEPALIVE_DEFAULTS: Readonly<ChannelOptions> = Object.freeze({
  'grpc.keepalive_time_ms': 300_000,
  'grpc.keepalive_timeout_ms': 20_000,
  'grpc.keepalive_permit_without_calls': 0,
});

export interface MeshClientOptions extends MeshInterceptorOptions {
  /**
   * Channel credentials. Default: the mesh's mTLS credentials when `tls` is configured
   * (rotating with the certificate files), otherwise insecure.
   */
  readonly credentials?: ChannelCredentials;
  /** Extra grpc-js channel options, on top of `CLIENT_KEEPALIVE_DEFAULTS`. */
  readonly channelOptions?: ChannelOptions;
  /** The caller's own interceptors; they run before meshlet's (outermost first). */
  readonly interceptors?: readonly Interceptor[];
}

/**
 * Provides the default channel credentials of a service's channels (installed by the TLS
 * integration); undefined means insecure. Return the same object for the same material, so
 * channels are shared. `endpoint`: the endpoint a connection goes to, when known (routed channels
 * ask per connection: a control plane may secure each endpoint differently, Istio's auto-mTLS).
 */
export type CredentialsProvider = (
  service: ServiceRuntime,
  endpoint?: EndpointState,
) => ChannelCredentials | undefined;

interface Pooled {
  readonly channel: Channel;
  readonly key: string;
  refs: number;
}

interface MeshPool {
  readonly channels: Map<string, Pooled>;
  credentials: CredentialsProvider | undefined;
  callHook: (() => CallHook | undefined) | undefined;
}

const pools = new WeakMap<Mesh, MeshPool>();
const credentialIds = new WeakMap<ChannelCredentials, number>();
let nextCredentialId = 1;

function poolOf(mesh: Mesh): MeshPool {
  let p = pools.get(mesh);
  if (!p) {
    p = { channels: new Map(), credentials: undefined, callHook: undefined };
    pools.set(mesh, p);
  }
  return p;
}

function credentialId(c: ChannelCredentials): number {
  let id = credentialIds.get(c);
  if (id === undefined) {
    id = nextCredentialId++;
    credentialIds.set(c, id);
  }
  return id;
}

/**
 * Sets the call hook of `mesh`'s clients (client spans and trace propagation; `createMesh` installs
 * `@meshlet/telemetry`'s). Read when a client is created with `meshClientOptions`/`createMeshClient`.
 */
export function setCallHook(mesh: Mesh, provider: (() => CallHook | undefined) | undefined): void {
  poolOf(mesh).callHook = provider;
}

/** Sets the default channel credentials of `mesh`'s channels (mTLS from @meshlet/tls). */
export function setChannelCredentials(mesh: Mesh, provider: CredentialsProvider | undefined): void {
  poolOf(mesh).credentials = provider;
}

const insecure = credentials.createInsecure();

/** The default channel credentials of `service` in `mesh`: its provider's, or insecure. */
export function defaultChannelCredentials(mesh: Mesh, service: ServiceRuntime): ChannelCredentials {
  return poolOf(mesh).credentials?.(service) ?? insecure;
}

/**
 * Channel credentials of a routed channel (an xDS listener, whose calls go to several services):
 * each subchannel connects with the credentials of the service it serves (named by the balancer
 * in `SERVICE_SUBCHANNEL_ARG`), so every cluster's connections check that cluster's identity —
 * as one channel per service would. Insecure for a service the provider has nothing for.
 */
class RoutedChannelCredentials extends ChannelCredentials {
  readonly #mesh: Mesh;
  readonly #provider: CredentialsProvider;

  constructor(mesh: Mesh, provider: CredentialsProvider) {
    super();
    this.#mesh = mesh;
    this.#provider = provider;
  }

  _isSecure(): boolean {
    return true;
  }

  _equals(other: ChannelCredentials): boolean {
    return other === this;
  }

  _createSecureConnector(
    ...args: Parameters<ChannelCredentials['_createSecureConnector']>
  ): ReturnType<ChannelCredentials['_createSecureConnector']> {
    const name = args[1][SERVICE_SUBCHANNEL_ARG];
    return new RoutedConnector(this.#mesh, this.#provider, typeof name === 'string' ? name : undefined, args);
  }
}

type SecureConnector = ReturnType<ChannelCredentials['_createSecureConnector']>;

/**
 * The connector of one subchannel of a routed channel: each connection is secured as the service
 * and endpoint it goes to *now* (the endpoint found by the connection's peer address), so a
 * control plane's later decision (a cluster turned to mTLS, an endpoint's `tlsMode`) applies to
 * the next connection. A provider error (an unusable certificate provider) fails the connection.
 */
class RoutedConnector implements SecureConnector {
  readonly #mesh: Mesh;
  readonly #provider: CredentialsProvider;
  readonly #service: string | undefined;
  readonly #args: Parameters<ChannelCredentials['_createSecureConnector']>;
  readonly #inner = new Map<ChannelCredentials, SecureConnector>();

  constructor(
    mesh: Mesh,
    provider: CredentialsProvider,
    service: string | undefined,
    args: Parameters<ChannelCredentials['_createSecureConnector']>,
  ) {
    this.#mesh = mesh;
    this.#provider = provider;
    this.#service = service;
    this.#args = args;
  }

  async connect(socket: Parameters<SecureConnector['connect']>[0]): ReturnType<SecureConnector['connect']> {
    const rt = this.#service === undefined ? undefined : this.#mesh.service(this.#service);
    const addr = socket.remoteAddress;
    const port = socket.remotePort;
    const ep =
      rt !== undefined && addr !== undefined && port !== undefined
        ? rt.endpoint(endpointId(unmapIp(addr), port))
        : undefined;
    const creds = (rt === undefined ? undefined : this.#provider(rt, ep)) ?? insecure;
    let inner = this.#inner.get(creds);
    if (inner === undefined) {
      // Credentials change only with the control plane's config: keep a few, drop older ones.
      if (this.#inner.size >= 4) this.destroy();
      inner = creds._createSecureConnector(...this.#args);
      this.#inner.set(creds, inner);
    }
    await inner.waitForReady();
    return inner.connect(socket);
  }

  waitForReady(): Promise<void> {
    return Promise.resolve();
  }

  getCallCredentials(): CallCredentials {
    return this.#args[2] ?? CallCredentials.createEmpty();
  }

  destroy(): void {
    for (const c of this.#inner.values()) c.destroy();
    this.#inner.clear();
  }
}

const routedCredentials = new WeakMap<Mesh, { provider: CredentialsProvider; creds: ChannelCredentials }>();

/** The default channel credentials of a routed target of `mesh` (see `RoutedChannelCredentials`). */
export function routedChannelCredentials(mesh: Mesh): ChannelCredentials {
  const provider = poolOf(mesh).credentials;
  if (provider === undefined) return insecure;
  let r = routedCredentials.get(mesh);
  if (r === undefined || r.provider !== provider) {
    // One object per mesh and provider: pooled channels and subchannels compare credentials.
    r = { provider, creds: new RoutedChannelCredentials(mesh, provider) };
    routedCredentials.set(mesh, r);
  }
  return r.creds;
}

/**
 * A handle on a pooled channel. Every client of the same target, credentials and options shares
 * one grpc-js channel; `close()` releases this handle, and the channel closes when its last
 * handle is released or when the mesh closes.
 */
class SharedChannel implements ChannelInterface {
  readonly #pooled: Pooled;
  readonly #pool: MeshPool;
  readonly #policy: MeshClientPolicy | undefined;
  #closed = false;
  constructor(pool: MeshPool, pooled: Pooled, policy: MeshClientPolicy | undefined) {
    this.#pool = pool;
    this.#pooled = pooled;
    this.#policy = policy;
    if (policy !== undefined) policy.channel = pooled.channel;
  }
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const p = this.#pooled;
    if (--p.refs === 0 && this.#pool.channels.get(p.key) === p) {
      this.#pool.channels.delete(p.key);
      p.channel.close();
    }
  }
  getTarget(): string {
    return this.#pooled.channel.getTarget();
  }
  // A released handle is a closed channel to its client, as grpc-js's after `close()`, even while
  // other clients keep the pooled channel open: SHUTDOWN, and new calls and watches throw.
  getConnectivityState(tryToConnect: boolean): ReturnType<Channel['getConnectivityState']> {
    if (this.#closed) return connectivityState.SHUTDOWN;
    return this.#pooled.channel.getConnectivityState(tryToConnect);
  }
  watchConnectivityState(...args: Parameters<Channel['watchConnectivityState']>): void {
    if (this.#closed) throw new Error('Channel has been shut down');
    this.#pooled.channel.watchConnectivityState(...args);
  }
  getChannelzRef(): ReturnType<Channel['getChannelzRef']> {
    return this.#pooled.channel.getChannelzRef();
  }
  createCall(
    method: string,
    deadline: Parameters<Channel['createCall']>[1],
    host: Parameters<Channel['createCall']>[2],
    parent: Parameters<Channel['createCall']>[3],
    flags: Parameters<Channel['createCall']>[4],
  ): GrpcCall {
    if (this.#closed) throw new Error('Channel has been shut down');
    const policy = this.#policy;
    if (policy === undefined) return this.#pooled.channel.createCall(method, deadline, host, parent, flags);
    return policy.createCall(method, deadline, host, parent, flags);
  }
}

/**
 * Returns a handle on the shared channel of `target` (a `mesh:` URI) in `mesh`'s pool, creating
 * the channel on first use with `CLIENT_KEEPALIVE_DEFAULTS` under `options`.
 */
export function meshChannel(
  mesh: Mesh,
  target: string,
  creds: ChannelCredentials,
  options: ChannelOptions = {},
  policy?: MeshClientPolicy,
): ChannelInterface {
  const pool = poolOf(mesh);
  const merged: ChannelOptions = { ...CLIENT_KEEPALIVE_DEFAULTS, ...options, [MESH_CLIENT_CHANNEL]: 1 };
  const key = `${target}\u0000${credentialId(creds)}\u0000${JSON.stringify(merged)}`;
  let pooled = pool.channels.get(key);
  if (!pooled) {
    pooled = { channel: new Channel(target, creds, merged), key, refs: 0 };
    pool.channels.set(key, pooled);
  }
  pooled.refs++;
  return new SharedChannel(pool, pooled, policy);
}

/** Closes every pooled channel of `mesh` (called when the mesh closes). */
export function closeMeshChannels(mesh: Mesh): void {
  const pool = pools.get(mesh);
  if (!pool) return;
  for (const p of pool.channels.values()) p.channel.close();
  pool.channels.clear();
}

/** Number of open pooled channels of `mesh` (for tests and the admin page). */
export function pooledChannelCount(mesh: Mesh): number {
  return pools.get(mesh)?.channels.size ?? 0;
}

/**
 * grpc-js `ClientOptions` for a `mesh:` target: the shared channel of the target, through which
 * every call of the client runs as a `MeshCall` (core's call pipeline: deadline, breaker,
 * thresholds, retries under gRFC A6's rules within the retry budget, telemetry; see
 * mesh-call.ts), plus the caller's own interceptors. meshlet adds no interceptor layer of its own:
 * only a call invocation transformer telling the channel which calls are unary (`createMeshClient`
 * reads that, and the proto's `idempotency_level`, from the client class instead).
 *
 * ```ts
 * const client = new ReviewsClient('mesh:///reviews', credentials.createInsecure(), meshClientOptions('mesh:///reviews'));
 * ```
 */
export function meshClientOptions(target: string, options: MeshClientOptions = {}): ClientOptions {
  return clientOptions(target, options, undefined);
}

function clientOptions(
  target: string,
  options: MeshClientOptions,
  methods: ReadonlyMap<string, number> | undefined,
): ClientOptions {
  const { mesh, runtime, router } = resolveRoutedTarget(parseMeshTarget(target));
  // The client holds its runtime (or router) for its whole life, which the mesh cannot see end:
  // an on-demand one is never closed as idle under it.
  mesh.retain(runtime ?? (router as NonNullable<typeof router>));
  // A routed target (an xDS listener) secures each connection as the service it goes to.
  const creds =
    options.credentials ??
    (runtime === undefined ? routedChannelCredentials(mesh) : defaultChannelCredentials(mesh, runtime));
  const policy = new MeshClientPolicy(
    runtime ?? (router as NonNullable<typeof router>),
    { ...options, callHook: options.callHook ?? pools.get(mesh)?.callHook?.() },
    methods,
    target,
  );
  const out: ClientOptions = {
    channelOverride: meshChannel(mesh, target, creds, options.channelOptions, policy) as Channel,
    interceptors: [...(options.interceptors ?? [])],
  };
  // Without the client's method table, a call invocation transformer tells the channel which calls
  // are unary (it runs for every call, whatever interceptors the call brings).
  if (methods === undefined) out.callInvocationTransformer = markUnary;
  return out;
}

/**
 * The method table of a generated/`makeClientConstructor` client class, if it has one: by path,
 * whether the method is unary and whether the proto marks it idempotent (`idempotency_level`
 * IDEMPOTENT or NO_SIDE_EFFECTS, in the options @grpc/proto-loader puts on a method definition).
 */
function methodsOf(ctor: unknown): ReadonlyMap<string, number> | undefined {
  const service = (ctor as { service?: ServiceDefinition }).service;
  if (service === undefined || service === null || typeof service !== 'object') return undefined;
  const methods = new Map<string, number>();
  for (const name of Object.keys(service)) {
    const def = service[name];
    if (def === undefined) continue;
    let flags = !def.requestStream && !def.responseStream ? UNARY : 0;
    if (idempotencyOf(def)) flags |= IDEMPOTENT;
    methods.set(def.path, flags);
  }
  return methods;
}

type ClientConstructor<T extends Client> = new (
  address: string,
  credentials: ChannelCredentials,
  options?: ClientOptions,
) => T;

/** Creates a client of a generated/`makeClientConstructor` class for a `mesh:` target. */
export function createMeshClient<T extends Client>(
  ctor: ClientConstructor<T>,
  target: string,
  options: MeshClientOptions = {},
): T {
  const opts = clientOptions(target, options, methodsOf(ctor));
  return new ctor(target, options.credentials ?? insecure, opts);
}
