import { kStringMaxLength } from 'node:buffer';
import type { EventEmitter } from 'node:events';
import {
  type CallHook,
  type EndpointState,
  ErrorCodes,
  type Mesh,
  MeshError,
  type Router,
  type ServiceRuntime,
  UNLIMITED,
} from '@meshlet/core';
import { allocateEndpointSlot } from '@meshlet/core/extend';
import type { buildConnector, Dispatcher, Pool } from 'undici';
import { toLegacyHandler } from './handler.js';
import { startMeshRequest } from './hedge.js';
import type { RequestHost } from './request.js';
import { dispatchRouted } from './routed.js';
import { DispatcherBase, undiciTransport } from './undici.js';

/** The slot in `EndpointState.slots` where this transport keeps the endpoint's connection pool. */
const POOL_SLOT = allocateEndpointSlot();

type Connector = buildConnector.connector;

/**
 * One endpoint's connection pool for one authority. Its origin is the authority
 * (`http://reviews:8080`), so undici writes `Host: reviews:8080` (HTTP/2 `:authority`) itself —
 * one host header, validated once per pool rather than added and checked per request, and a
 * caller's own `Host` (any case) replaces it exactly as with undici — while its connector dials
 * the endpoint's address. TLS keeps the authority's host name as SNI, as before.
 */
interface EndpointPool extends Pool {
  readonly authority: string;
  /** Pools of the same endpoint for other authorities (a service reached under several names). */
  others: Map<string, EndpointPool> | undefined;
}

type EndpointPoolClass = new (origin: string, authority: string, options: Pool.Options) => EndpointPool;

let endpointPoolClass: EndpointPoolClass | undefined;

/** The class, defined once undici's `Pool` is loaded (the first pool, not on import). */
function EndpointPoolOf(): EndpointPoolClass {
  endpointPoolClass ??= class EndpointPool extends undiciTransport().Pool {
    readonly authority: string;
    others: Map<string, EndpointPool> | undefined = undefined;

    constructor(origin: string, authority: string, options: Pool.Options) {
      super(origin, options);
      this.authority = authority;
    }
  };
  return endpointPoolClass;
}

/** A connector that dials `address:port` whatever host the pool's origin names. */
function dialing(address: string, port: number, base: Connector): Connector {
  return (opts, callback) =>
    base(
      {
        host: opts.host,
        hostname: address,
        protocol: opts.protocol,
        port: String(port),
        servername: opts.servername,
        localAddress: opts.localAddress,
        httpSocket: opts.httpSocket,
      },
      callback,
    );
}

/** Extra connect options for an endpoint (TLS material, SNI, peer checks), from the TLS package. */
export type ConnectOptionsProvider = (
  ep: EndpointState,
  service: ServiceRuntime,
) => Pool.Options['connect'] | undefined;

export interface MeshDispatcherOptions {
  /** Where hosts the mesh does not know go (default: a new undici `Agent`). */
  passthrough?: Dispatcher;
  /** Options for every per-endpoint pool (merged under the service's connection policy). */
  poolOptions?: Pool.Options;
  /** TLS and other connect options per endpoint. */
  connect?: ConnectOptionsProvider;
  /**
   * Observes every logical mesh request (start, each attempt, end) and may add headers once per
   * request, instead of the mesh's call hook (`Mesh.setCallHook`, which telemetry installs).
   * Default: the mesh's.
   */
  requestHook?: CallHook;
}

interface RouteEntry {
  readonly runtime: ServiceRuntime | null;
  readonly authority: string;
  /** A route table (xDS listener) that picks the service per request; null for plain services. */
  readonly router?: Router | undefined;
}

/**
 * An undici `Dispatcher` that routes requests for mesh services (`http://reviews/…`) to an endpoint
 * picked per request, through one connection pool per endpoint, and passes every other host to a
 * plain undici Agent. Install it with `setGlobalDispatcher()` to mesh existing `fetch` code.
 */
export class MeshDispatcher extends DispatcherBase implements RequestHost {
  readonly mesh: Mesh;
  readonly #passthrough: Dispatcher;
  readonly #ownsPassthrough: boolean;
  readonly #poolOptions: Pool.Options;
  readonly #connect: ConnectOptionsProvider | undefined;
  /**
   * An outbound hook replacing the mesh's for this dispatcher's requests; undefined (the default):
   * the mesh's call hook. Costs one property read per request.
   */
  requestHook: CallHook | undefined;
  readonly #routes = new Map<string, RouteEntry>();
  /**
   * The last origin dispatched and its route: an application mostly calls one service at a time,
   * and a string compare spares the Map lookup (hashing an origin string undici made afresh).
   */
  #lastKey = '';
  #lastRoute: RouteEntry | undefined = undefined;
  /** For routed requests (created once, not per request). */
  readonly #isClosed = (): boolean => this.#closed;
  readonly #pools = new Set<Pool>();
  readonly #unsubscribe: () => void;
  /** No new request is taken: `close()` or `destroy()` was called. */
  #closed = false;
  /** `close()` was called (undici's `closed`); its promise, which every later `close()` returns. */
  #closing: Promise<void> | undefined = undefined;
  /** `destroy()` was called, or `close()` finished (undici's `destroyed`). */
  #destroyed = false;
  /** Forwards a pool's connection events as undici's Agent does: `[this, ...targets]`. */
  readonly #forward = (name: string) => (origin: URL, targets: Dispatcher[], err?: Error) =>
    (this as EventEmitter).emit(name, origin, [this, ...targets], err);

  constructor(mesh: Mesh, options: MeshDispatcherOptions = {}) {
    super();
    // undici's connection classes load with the first dispatcher, not with `import 'meshlet'`.
    const { Agent } = undiciTransport();
    this.mesh = mesh;
    this.#ownsPassthrough = options.passthrough === undefined;
    this.#passthrough = options.passthrough ?? new Agent();
    this.#poolOptions = options.poolOptions ?? {};
    this.#connect = options.connect;
    this.requestHook = options.requestHook;
    // Pools are freed through a watch on the mesh, not on the observation event bus.
    this.#unsubscribe = mesh.onEndpointRemoved((endpoint) => this.#release(endpoint));
  }

  /** True once `close()` was called (as undici's dispatchers say). */
  get closed(): boolean {
    return this.#closing !== undefined;
  }

  /** True once `destroy()` was called or `close()` finished (as undici's dispatchers say). */
  get destroyed(): boolean {
    return this.#destroyed;
  }

  /**
   * The limits undici's WebSocket reads from the dispatcher it connects through (undici's defaults,
   * as an `Agent` gives them): without them its frame parser has none.
   */
  get webSocketOptions(): { maxFragments: number; maxPayloadSize: number } {
    return { maxFragments: 131072, maxPayloadSize: 128 * 1024 * 1024 };
  }

  /** What undici's EventSource reads from its dispatcher (undici's default: the longest string). */
  get eventSourceOptions(): { maxEventSize: number } {
    return { maxEventSize: kStringMaxLength };
  }

  override dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    // undici's argument checks (DispatcherBase), in its words: two type tests per request.
    if (handler === null || typeof handler !== 'object') {
      const { InvalidArgumentError } = undiciTransport().errors;
      throw new InvalidArgumentError('handler must be an object');
    }
    if (opts === null || typeof opts !== 'object' || this.#closed) return this.#refuse(opts, handler);
    const origin = opts.origin;
    const key = typeof origin === 'string' ? origin : origin instanceof URL ? origin.origin : '';
    let route = key === this.#lastKey ? this.#lastRoute : this.#routes.get(key);
    // A service or route the mesh closed when idle (undeclared names): resolve the name again.
    if (
      route === undefined ||
      ((route.runtime?.closed === true || route.router?.released === true) && !this.mesh.closed)
    )
      route = this.#route(key);
    if (route !== this.#lastRoute) {
      this.#lastKey = key;
      this.#lastRoute = route;
    }
    if (route.router !== undefined) {
      dispatchRouted(this, route.router, opts, toLegacyHandler(handler), route.authority, this.#isClosed);
      return true;
    }
    const rt = route.runtime;
    if (rt === null) {
      if (!this.mesh.config.passthrough && key !== '') {
        const err = new MeshError(
          ErrorCodes.UNKNOWN_SERVICE,
          `"${key}" is not a mesh service and passthrough is off`,
        );
        const h = toLegacyHandler(handler);
        if (h.onError) {
          h.onError(err);
          return true;
        }
        throw err;
      }
      return this.#passthrough.dispatch(opts, handler);
    }
    startMeshRequest(this, rt, opts, toLegacyHandler(handler), route.authority);
    return true;
  }

  /**
   * A request refused as undici's dispatchers refuse it (options that are not an object, a closed
   * or destroyed dispatcher): the handler's error callback gets undici's error, and `dispatch`
   * returns false (or throws it, for a handler without one).
   */
  #refuse(opts: unknown, handler: Dispatcher.DispatchHandler): boolean {
    const { ClientClosedError, ClientDestroyedError, InvalidArgumentError } = undiciTransport().errors;
    const err =
      opts === null || typeof opts !== 'object'
        ? new InvalidArgumentError('opts must be an object.')
        : this.#destroyed
          ? new ClientDestroyedError()
          : new ClientClosedError();
    const h = toLegacyHandler(handler);
    if (typeof h.onError !== 'function') throw err;
    h.onError(err);
    return false;
  }

  #route(key: string): RouteEntry {
    let entry: RouteEntry = { runtime: null, authority: '' };
    if (key !== '') {
      try {
        const url = new URL(key);
        const port = url.port === '' ? undefined : Number(url.port);
        const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
        const router = this.mesh.router(host, port);
        const runtime = router ? undefined : this.mesh.resolve(host, port);
        if (router) entry = { runtime: null, authority: url.host, router };
        else if (runtime) entry = { runtime, authority: url.host };
      } catch {
        // Not a URL: leave it to the passthrough, which reports it.
      }
    }
    if (this.#routes.size > 10_000) this.#routes.clear(); // bound the cache against host spraying
    this.#routes.set(key, entry);
    return entry;
  }

  /**
   * The connection pool of an endpoint for requests to `authority`, created on first use (see
   * `EndpointPool`). Nearly always the pool in the endpoint's slot; an endpoint reached under a
   * second name has a pool per name.
   */
  poolFor(ep: EndpointState, rt: ServiceRuntime, authority: string): Dispatcher {
    const first = ep.slots[POOL_SLOT] as EndpointPool | undefined;
    if (first !== undefined) {
      if (first.authority === authority) return first;
      const other = first.others?.get(authority);
      if (other !== undefined) return other;
      const pool = this.#newPool(ep, rt, authority);
      first.others ??= new Map();
      first.others.set(authority, pool);
      return pool;
    }
    const pool = this.#newPool(ep, rt, authority);
    ep.slots[POOL_SLOT] = pool;
    return pool;
  }

  #newPool(ep: EndpointState, rt: ServiceRuntime, authority: string): EndpointPool {
    // A request that was in flight when the dispatcher closed, and now wants a pool (a retry
    // after its backoff, a request that waited for discovery): none is made, which close() would
    // never close. The attempt fails as undici's retry interceptor's would on a closed Agent, with
    // undici's error, the caller's (thrown from `send`: not retried, not the endpoint's).
    if (this.#closed) {
      const { ClientClosedError, ClientDestroyedError } = undiciTransport().errors;
      throw this.#destroyed ? new ClientDestroyedError() : new ClientClosedError();
    }
    const c = rt.policy.connection;
    // thresholds.maxConnections caps each endpoint's pool (requests over it wait as pending).
    const maxConn = Math.min(
      c.maxPerEndpoint > 0 ? c.maxPerEndpoint : UNLIMITED,
      rt.policy.thresholds.maxConnections,
    );
    const given = this.#poolOptions;
    const tls = this.#connect?.(ep, rt);
    const options = typeof tls === 'object' ? tls : typeof given.connect === 'object' ? given.connect : {};
    const base: Connector =
      typeof tls === 'function'
        ? tls
        : typeof given.connect === 'function'
          ? given.connect
          : undiciTransport().buildConnector({
              ...(given.allowH2 !== undefined ? { allowH2: given.allowH2 } : {}),
              ...(given.maxCachedSessions !== undefined
                ? { maxCachedSessions: given.maxCachedSessions }
                : {}),
              timeout: given.connectTimeout ?? c.connectTimeoutMs,
              ...options,
            } as buildConnector.BuildOptions);
    const secure = tls !== undefined;
    const EndpointPool = EndpointPoolOf();
    const pool = new EndpointPool(`${secure ? 'https' : 'http'}://${authority}`, authority, {
      keepAliveTimeout: c.keepAliveTimeoutMs,
      ...(maxConn < UNLIMITED ? { connections: maxConn } : {}),
      ...given,
      connect: dialing(ep.endpoint.address, ep.endpoint.port, base),
    });
    for (const name of ['connect', 'disconnect', 'connectionError', 'drain'] as const)
      (pool as EventEmitter).on(name, this.#forward(name));
    this.#pools.add(pool);
    return pool;
  }

  /** Drops the pools of an endpoint that left its service; in-flight requests finish first. */
  #release(ep: EndpointState): void {
    const pool = ep.slots[POOL_SLOT] as EndpointPool | undefined;
    if (!pool) return;
    ep.slots[POOL_SLOT] = undefined;
    for (const p of pool.others === undefined ? [pool] : [pool, ...pool.others.values()]) {
      this.#pools.delete(p);
      p.close().catch(() => p.destroy().catch(() => {}));
    }
  }

  /**
   * Closes every connection pool the mesh opened for new TLS material: new requests open new
   * connections, open ones finish what they carry. Used by certificate rotation.
   */
  refreshConnections(): void {
    for (const rt of this.mesh.services()) for (const ep of rt.endpoints) this.#release(ep);
  }

  /** Forgets cached host → service routes (after resolvers or config change). */
  clearRoutes(): void {
    this.#routes.clear();
    this.#lastKey = '';
    this.#lastRoute = undefined;
  }

  /**
   * Stops taking requests (later ones fail with undici's `ClientClosedError`, then
   * `ClientDestroyedError`) and resolves once those in flight have finished; every call of it
   * resolves then, as with undici.
   */
  override close(): Promise<void>;
  override close(callback: () => void): void;
  override close(callback?: () => void): Promise<void> | void {
    this.#closing ??= this.#close();
    const p = this.#closing;
    if (callback) {
      p.then(callback, callback);
      return;
    }
    return p;
  }

  async #close(): Promise<void> {
    this.#closed = true;
    if (this.#destroyed) return; // destroyed already: nothing left to wait for
    this.#unsubscribe();
    const pools = [...this.#pools];
    this.#pools.clear();
    for (const rt of this.mesh.services()) for (const ep of rt.endpoints) ep.slots[POOL_SLOT] = undefined;
    await Promise.all(pools.map((p) => p.close().catch(() => p.destroy())));
    if (this.#ownsPassthrough) await this.#passthrough.close();
    this.#destroyed = true;
  }

  override destroy(): Promise<void>;
  override destroy(err: Error | null): Promise<void>;
  override destroy(callback: () => void): void;
  override destroy(err: Error | null, callback: () => void): void;
  override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    const err = typeof a === 'function' ? null : (a ?? null);
    const callback = typeof a === 'function' ? a : b;
    this.#closed = true;
    this.#destroyed = true;
    this.#unsubscribe();
    const pools = [...this.#pools];
    this.#pools.clear();
    const p = Promise.all(pools.map((pool) => pool.destroy(err))).then(async () => {
      if (this.#ownsPassthrough) await this.#passthrough.destroy(err);
    });
    if (callback) {
      p.then(callback, callback);
      return;
    }
    return p;
  }
}
