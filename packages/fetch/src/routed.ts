import {
  ErrorCodes,
  isMeshError,
  MeshError,
  type RouteRequest,
  type Router,
  type RouteTarget,
} from '@meshlet/core';
import type { Dispatcher } from 'undici';
import type { LegacyHandler } from './handler.js';
import { startMeshRequest } from './hedge.js';
import type { RequestHost } from './request.js';

/** A `RouteRequest` over undici dispatch options; header lookups scan the headers lazily. */
class DispatchRouteRequest implements RouteRequest {
  readonly method: string;
  readonly path: string;
  readonly #headers: Dispatcher.DispatchOptions['headers'];

  constructor(opts: Dispatcher.DispatchOptions) {
    this.method = opts.method;
    this.path = opts.path;
    this.#headers = opts.headers;
  }

  header(name: string): string | undefined {
    const h = this.#headers;
    if (h == null) return undefined;
    if (Array.isArray(h)) {
      for (let i = 0; i + 1 < h.length; i += 2) {
        const n = h[i];
        if (String(n).toLowerCase() === name) return String(h[i + 1]);
      }
      return undefined;
    }
    if (typeof (h as Iterable<unknown>)[Symbol.iterator] === 'function') {
      for (const [k, v] of h as Iterable<[string, string | string[]]>) {
        if (k.toLowerCase() === name) return Array.isArray(v) ? v[0] : v;
      }
      return undefined;
    }
    const rec = h as Record<string, string | string[] | undefined>;
    const direct = rec[name];
    if (direct !== undefined) return Array.isArray(direct) ? direct[0] : String(direct);
    for (const k in rec) {
      if (k.toLowerCase() === name) {
        const v = rec[k];
        return Array.isArray(v) ? v[0] : v === undefined ? undefined : String(v);
      }
    }
    return undefined;
  }
}

/** Answers a request aborted by fault injection with its HTTP status, as Envoy's fault filter does. */
function abortWith(handler: LegacyHandler, status: number): void {
  let aborted = false;
  handler.onConnect?.(() => {
    aborted = true;
  });
  if (aborted) return;
  const raw = [
    Buffer.from('x-meshlet-fault'),
    Buffer.from('abort'),
    Buffer.from('content-length'),
    Buffer.from('0'),
  ];
  handler.onHeaders?.(status, raw, () => {}, 'fault filter abort');
  handler.onComplete?.([]);
}

/**
 * One request through a router (an xDS route table): picks the target service and per-route
 * policy, applies fault injection, then starts the ordinary request pipeline on that service.
 * Waits for the route table when it is not known yet. One object per request, no closures.
 */
class RoutedRequest extends DispatchRouteRequest {
  readonly #host: RequestHost;
  readonly #router: Router;
  readonly #opts: Dispatcher.DispatchOptions;
  readonly #handler: LegacyHandler;
  readonly #authority: string;
  readonly #isClosed: () => boolean;

  constructor(
    host: RequestHost,
    router: Router,
    opts: Dispatcher.DispatchOptions,
    handler: LegacyHandler,
    authority: string,
    isClosed: () => boolean,
  ) {
    super(opts);
    this.#host = host;
    this.#router = router;
    this.#opts = opts;
    this.#handler = handler;
    this.#authority = authority;
    this.#isClosed = isClosed;
  }

  run(waited: boolean): void {
    const handler = this.#handler;
    if (this.#isClosed()) {
      handler.onError?.(new MeshError(ErrorCodes.CLOSED, 'the mesh dispatcher is closed'));
      return;
    }
    const router = this.#router;
    const result = router.route(this);
    if (result === undefined) {
      if (waited) {
        handler.onError?.(
          new MeshError(ErrorCodes.UNKNOWN_SERVICE, `no route table for "${router.name}"`, {
            service: router.name,
          }),
        );
        return;
      }
      router.whenReady().then(
        () => this.run(true),
        (err: unknown) => handler.onError?.(err as Error),
      );
      return;
    }
    if (isMeshError(result)) {
      handler.onError?.(result);
      return;
    }
    start(this.#host, result as RouteTarget, this.#opts, handler, this.#authority);
  }
}

/** Routes and starts one request (see `RoutedRequest`). */
export function dispatchRouted(
  host: RequestHost,
  router: Router,
  opts: Dispatcher.DispatchOptions,
  handler: LegacyHandler,
  authority: string,
  isClosed: () => boolean,
): void {
  new RoutedRequest(host, router, opts, handler, authority, isClosed).run(false);
}

function start(
  host: RequestHost,
  target: RouteTarget,
  opts: Dispatcher.DispatchOptions,
  handler: LegacyHandler,
  authority: string,
): void {
  if (target.abortStatus > 0 && target.delayMs <= 0) {
    abortWith(handler, target.abortStatus);
    return;
  }
  if (target.delayMs > 0) {
    setTimeout(() => {
      if (target.abortStatus > 0) abortWith(handler, target.abortStatus);
      else startMeshRequest(host, target.runtime, opts, handler, authority, target);
    }, target.delayMs);
    return;
  }
  startMeshRequest(host, target.runtime, opts, handler, authority, target);
}
