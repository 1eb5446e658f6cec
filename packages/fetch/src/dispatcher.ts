import {
  allocateEndpointSlot,
  type EndpointState,
  ErrorCodes,
  type Mesh,
  MeshError,
  type Router,
  type ServiceRuntime,
  UNLIMITED,
} from '@meshlet/core';
import { Agent, Dispatcher, Pool } from 'undici';
import { toLegacyHandler } from './handler.js';
import { startMeshRequest } from './hedge.js';
import type { RequestHook } from './hook.js';
import type { RequestHost } from './request.js';
import { dispatchRouted } from './routed.js';

/** The slot in `EndpointState.slots` where this transport keeps the endpoint's connection pool. */
const POOL_SLOT = allocateEndpointSlot();

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
   * request — how tracing injects `traceparent`. See `RequestHook` in hook.ts. Default none.
   */
  requestHook?: RequestHook;
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
export class MeshDispatcher extends Dispatcher implements RequestHost {
  readonly mesh: Mesh;
  readonly #passthrough: Dispatcher;
  readonly #ownsPassthrough: boolean;
  readonly #poolOptions: Pool.Options;
  readonly #connect: ConnectOptionsProvider | undefined;
  /**
   * The request hook (tracing). Settable after construction so that extensions wired in
   * `createMesh` can install it; undefined costs one property read per request.
   */
  requestHook: RequestHook | undefined;
  readonly #routes = new Map<string, RouteEntry>();
  /** For routed requests (created once, not per request). */
  readonly #isClosed = (): boolean => this.#closed;
  readonly #pools = new Set<Pool>();
  readonly #unsubscribe: () => void;
  #closed = false;
  /**
   * undici's `fetch` hands a dispatcher with this flag the request body's *source* (the string,
   * bytes, Blob or FormData the caller gave) instead of a one-shot async generator. That is what
   * makes fetch bodies replayable, so that idempotent requests with bodies can be retried; a
   * streamed body still arrives as a stream and is never retried. The flag has no other effect
   * (undici 7.x reads it in exactly one place, `httpNetworkFetch`).
   */
  readonly isMockActive = true;

  constructor(mesh: Mesh, options: MeshDispatcherOptions = {}) {
    super();
    this.mesh = mesh;
    this.#ownsPassthrough = options.passthrough === undefined;
    this.#passthrough = options.passthrough ?? new Agent();
    this.#poolOptions = options.poolOptions ?? {};
    this.#connect = options.connect;
    this.requestHook = options.requestHook;
    this.#unsubscribe = mesh.events.on('endpointRemoved', ({ endpoint }) => this.#release(endpoint));
  }

  override dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const origin = opts.origin;
    const key = typeof origin === 'string' ? origin : origin instanceof URL ? origin.origin : '';
    let route = this.#routes.get(key);
    // A service or route the mesh closed when idle (undeclared names): resolve the name again.
    if (
      route === undefined ||
      ((route.runtime?.closed === true || route.router?.released === true) && !this.mesh.closed)
    )
      route = this.#route(key);
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
    if (this.#closed) {
      const h = toLegacyHandler(handler);
      h.onError?.(new MeshError(ErrorCodes.CLOSED, 'the mesh dispatcher is closed', { service: rt.name }));
      return true;
    }
    startMeshRequest(this, rt, opts, toLegacyHandler(handler), route.authority);
    return true;
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

  /** The connection pool of an endpoint, created on first use. */
  poolFor(ep: EndpointState, rt: ServiceRuntime): Dispatcher {
    const existing = ep.slots[POOL_SLOT] as Pool | undefined;
    if (existing !== undefined) return existing;
    const c = rt.policy.connection;
    // thresholds.maxConnections caps each endpoint's pool (requests over it wait as pending).
    const maxConn = Math.min(
      c.maxPerEndpoint > 0 ? c.maxPerEndpoint : UNLIMITED,
      rt.policy.thresholds.maxConnections,
    );
    const connect = this.#connect?.(ep, rt);
    const secure = connect !== undefined;
    const host = ep.endpoint.address.includes(':') ? `[${ep.endpoint.address}]` : ep.endpoint.address;
    const pool = new Pool(`${secure ? 'https' : 'http'}://${host}:${ep.endpoint.port}`, {
      keepAliveTimeout: c.keepAliveTimeoutMs,
      connectTimeout: c.connectTimeoutMs,
      ...(maxConn < UNLIMITED ? { connections: maxConn } : {}),
      ...this.#poolOptions,
      ...(connect ? { connect } : {}),
    });
    ep.slots[POOL_SLOT] = pool;
    this.#pools.add(pool);
    return pool;
  }

  /** Drops the pool of an endpoint that left its service; in-flight requests finish first. */
  #release(ep: EndpointState): void {
    const pool = ep.slots[POOL_SLOT] as Pool | undefined;
    if (!pool) return;
    ep.slots[POOL_SLOT] = undefined;
    this.#pools.delete(pool);
    pool.close().catch(() => pool.destroy().catch(() => {}));
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
  }

  override close(): Promise<void>;
  override close(callback: () => void): void;
  override close(callback?: () => void): Promise<void> | void {
    const p = this.#close();
    if (callback) {
      p.then(callback, callback);
      return;
    }
    return p;
  }

  async #close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe();
    const pools = [...this.#pools];
    this.#pools.clear();
    for (const rt of this.mesh.services()) for (const ep of rt.endpoints) ep.slots[POOL_SLOT] = undefined;
    await Promise.all(pools.map((p) => p.close().catch(() => p.destroy())));
    if (this.#ownsPassthrough) await this.#passthrough.close();
  }

  override destroy(): Promise<void>;
  override destroy(err: Error | null): Promise<void>;
  override destroy(callback: () => void): void;
  override destroy(err: Error | null, callback: () => void): void;
  override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    const err = typeof a === 'function' ? null : (a ?? null);
    const callback = typeof a === 'function' ? a : b;
    this.#closed = true;
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
