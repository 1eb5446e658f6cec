import {
  allocateEndpointSlot,
  type EndpointState,
  ErrorCodes,
  type Mesh,
  MeshError,
  type ServiceRuntime,
} from '@meshlet/core';
import { Agent, Dispatcher, Pool } from 'undici';
import { toLegacyHandler } from './handler.js';
import { MeshRequest, type RequestHost } from './request.js';

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
}

interface RouteEntry {
  readonly runtime: ServiceRuntime | null;
  readonly authority: string;
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
  readonly #routes = new Map<string, RouteEntry>();
  readonly #pools = new Set<Pool>();
  readonly #unsubscribe: () => void;
  #closed = false;

  constructor(mesh: Mesh, options: MeshDispatcherOptions = {}) {
    super();
    this.mesh = mesh;
    this.#ownsPassthrough = options.passthrough === undefined;
    this.#passthrough = options.passthrough ?? new Agent();
    this.#poolOptions = options.poolOptions ?? {};
    this.#connect = options.connect;
    this.#unsubscribe = mesh.events.on('endpointRemoved', ({ endpoint }) => this.#release(endpoint));
  }

  override dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const origin = opts.origin;
    const key = typeof origin === 'string' ? origin : origin instanceof URL ? origin.origin : '';
    let route = this.#routes.get(key);
    if (route === undefined) route = this.#route(key);
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
    new MeshRequest(this, rt, opts, toLegacyHandler(handler), route.authority).start();
    return true;
  }

  #route(key: string): RouteEntry {
    let entry: RouteEntry = { runtime: null, authority: '' };
    if (key !== '') {
      try {
        const url = new URL(key);
        const port = url.port === '' ? undefined : Number(url.port);
        const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
        const runtime = this.mesh.resolve(host, port);
        if (runtime) entry = { runtime, authority: url.host };
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
    const connect = this.#connect?.(ep, rt);
    const secure = connect !== undefined;
    const host = ep.endpoint.address.includes(':') ? `[${ep.endpoint.address}]` : ep.endpoint.address;
    const pool = new Pool(`${secure ? 'https' : 'http'}://${host}:${ep.endpoint.port}`, {
      keepAliveTimeout: c.keepAliveTimeoutMs,
      connectTimeout: c.connectTimeoutMs,
      ...(c.maxPerEndpoint > 0 ? { connections: c.maxPerEndpoint } : {}),
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
