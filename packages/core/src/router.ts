import type { ServicePolicy } from './config.js';
import type { MeshError } from './errors.js';
import type { ServiceRuntime } from './service.js';

/**
 * What a router sees of one request. Transports build it once per logical request; `header()` reads
 * a request header by lower-case name (the first value when repeated).
 */
export interface RouteRequest {
  readonly method: string;
  /** Path with query string, as sent (`/reviews/1?x=y`). */
  readonly path: string;
  header(name: string): string | undefined;
}

/** Where one request goes: the target service (an xDS cluster) plus per-route overrides. */
export interface RouteTarget {
  readonly runtime: ServiceRuntime;
  /** The policy for this request (route timeout and retry merged over the service's); undefined: the service's. */
  readonly policy: ServicePolicy | undefined;
  /** The request's affinity hash for hash-based balancers (ring_hash, maglev), from the route's hash policy. */
  readonly hash: number | undefined;
  /** Fault injection: delay the request by this many ms first (0: none). */
  readonly delayMs: number;
  /** Fault injection: fail the request with this HTTP status instead of sending it (0: none). */
  readonly abortStatus: number;
}

/**
 * `undefined`: the route table is not known yet (wait for `whenReady()` and ask again);
 * a `MeshError`: the request cannot be routed (no route matched, the listener does not exist).
 */
export type RouteResult = RouteTarget | MeshError | undefined;

/**
 * A route table in front of services: resolvers return one for authorities whose requests are
 * routed per request (xDS listeners). Transports call `route()` once per logical request, before
 * the request pipeline starts; retries stay within the chosen service. `route()` is on the hot path:
 * it must not allocate beyond the result, and may return shared frozen targets.
 */
export interface Router {
  /** The routed name (the xDS listener name), for errors and snapshots. */
  readonly name: string;
  route(request: RouteRequest): RouteResult;
  /** Resolves when `route()` can answer with something other than `undefined` (data or an error). */
  whenReady(): Promise<void>;
  /**
   * Requests routed so far (a plain counter). A router that counts them is closed by the mesh
   * after `idleServiceTimeout` without a request; one that does not stays for the mesh's life.
   */
  readonly uses?: number;
  /** True once the mesh released the router (idle): transports resolve the authority again. */
  readonly released?: boolean;
}
