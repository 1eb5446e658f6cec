import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import {
  DEADLINE_HEADER,
  HttpDrainer,
  type HttpDrainOptions,
  type InboundOptions,
  inboundDeadline,
  isServing,
  REQUEST_TIMEOUT_HEADER,
  runWithDeadline,
} from '@meshlet/core';
import { inboundTelemetry } from '@meshlet/telemetry';
import { forbiddenBody, getMeshTls, type RequestAuthorizer, requestAttributes } from '@meshlet/tls';

/** The middleware's options: the inbound options every adapter takes (see `InboundOptions`). */
export type MeshMiddlewareOptions = InboundOptions<RequestAuthorizer>;
export type { RequestAuthorizer };

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader('content-type', 'application/json; charset=utf-8');
  res.setHeader('content-length', Buffer.byteLength(text));
  res.end(text);
}

type Next = (err?: unknown) => void;

/**
 * The inbound half of the mesh as an Express (4 or 5) middleware. Mount it first:
 * `app.use(meshMiddleware({ mesh }))`, or put it in front of the app with `meshApp(app, options)`
 * (the same, without an Express router layer's cost). Per request it
 * - answers `livenessPath` and `readinessPath`;
 * - authorizes the request (peer SPIFFE ID from the mTLS socket, IP, method, path, headers) and
 *   answers 403 with a coded body when denied;
 * - starts a server span and inbound metrics (telemetry), ended when the response finishes;
 * - runs the rest of the chain with the request's deadline in scope (`x-meshlet-deadline-ms` or
 *   `x-request-timeout`, in ms), so every mesh fetch and `mesh:` gRPC call it makes is bounded by
 *   what is left of it.
 */
export function meshMiddleware(
  options: MeshMiddlewareOptions = {},
): (req: IncomingMessage, res: ServerResponse, next: Next) => void {
  const mesh = options.mesh;
  const liveness = options.livenessPath ?? '/healthz';
  const readiness = options.readinessPath ?? '/ready';
  const telemetry =
    options.telemetry === false
      ? undefined
      : (options.telemetry ?? (mesh ? inboundTelemetry(mesh) : undefined));
  const defaultTimeoutMs = options.defaultTimeoutMs ?? 0;
  let authorizer: RequestAuthorizer | undefined;
  let resolved = false;
  const getAuthorizer = (): RequestAuthorizer | undefined => {
    if (!resolved) {
      resolved = true;
      if (options.authorizer === false) authorizer = undefined;
      else authorizer = options.authorizer ?? (mesh ? getMeshTls(mesh)?.authorizer : undefined);
    }
    return authorizer;
  };
  return (req, res, next) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (path === liveness) {
      sendJson(res, 200, { status: 'alive' });
      return;
    }
    if (path === readiness) {
      const ok = mesh ? isServing(mesh) : true;
      sendJson(res, ok ? 200 : 503, { status: ok ? 'ready' : 'not_ready' });
      return;
    }
    const authz = getAuthorizer();
    let principal: string | undefined;
    if (authz !== undefined) {
      const attrs = requestAttributes(req);
      principal = attrs.principal;
      const decision = authz({ ...attrs, path });
      if (!decision.allowed) {
        sendJson(res, 403, forbiddenBody(decision));
        return;
      }
    }
    const deadline = inboundDeadline(req.headers, defaultTimeoutMs);
    const span =
      telemetry === undefined
        ? undefined
        : telemetry.start({
            transport: 'http',
            method: req.method ?? 'GET',
            route: undefined, // known after routing: see matchedRoute
            path,
            headers: req.headers,
            principal,
          });
    if (span === undefined) {
      if (deadline === undefined) next();
      else runWithDeadline(deadline, next);
      return;
    }
    // 'close' is emitted once per response: after it finished, or when the connection died first
    // (\`on\`, not \`once\`: no wrapper to allocate for an event that cannot repeat).
    res.on('close', () => span.end(res.statusCode, undefined, matchedRoute(req)));
    if (deadline === undefined) span.run(next);
    else span.run(() => runWithDeadline(deadline, next));
  };
}

/** Marks a `handle` that `meshApp` wrapped (wrapping twice would run the mesh twice). */
const MESH_APP = Symbol('meshlet.meshApp');

/**
 * An Express application (4 or 5): the request listener function `express()` returns. `meshApp`
 * also needs its `handle` method, which Express has but its type declarations do not show.
 */
export type ExpressAppLike = (req: IncomingMessage, res: ServerResponse) => unknown;

type Handle = (req: IncomingMessage, res: ServerResponse, callback?: Next) => void;

/**
 * Puts the mesh in front of an Express application rather than in its middleware stack: the
 * same per-request behaviour as `app.use(meshMiddleware(options))` mounted first, without the
 * cost of an Express router layer (measured at ~10 µs per request on Node 20 for an empty
 * middleware; see docs/benchmarks.md). It wraps `app.handle`, which the app's request listener
 * (`app.listen()`, `http.createServer(app)`) and a parent app mounting it both call, so it must be
 * called once, before the app serves requests. Returns the app.
 *
 * ```ts
 * const app = meshApp(express(), { mesh });
 * app.get('/reviews/:id', handler);
 * app.listen(8080);
 * ```
 */
export function meshApp<A extends ExpressAppLike>(app: A, options: MeshMiddlewareOptions = {}): A {
  const target = app as unknown as { handle?: Handle & { [MESH_APP]?: true } };
  const handle = target.handle;
  if (typeof handle !== 'function')
    throw new TypeError('meshApp: expected an Express application (no app.handle)');
  if (handle[MESH_APP]) throw new TypeError('meshApp: the mesh is already in front of this app');
  const middleware = meshMiddleware(options);
  const meshHandle: Handle & { [MESH_APP]?: true } = function meshHandle(this: unknown, req, res, callback) {
    // The middleware only ever continues without an error (it answers probes and denials itself).
    middleware(req, res, () => handle.call(this, req, res, callback));
  };
  meshHandle[MESH_APP] = true;
  target.handle = meshHandle;
  return app;
}

/**
 * The template of the route Express matched (`req.baseUrl` + `req.route.path`, e.g.
 * `/api/items/:id`), or undefined when none did (a 404, or a handler mounted with `app.use`):
 * metrics and spans are labelled with templates, never raw paths, so their series stay bounded.
 */
function matchedRoute(req: IncomingMessage): string | undefined {
  const r = req as IncomingMessage & { route?: { path?: unknown }; baseUrl?: string };
  const p = r.route?.path;
  if (typeof p !== 'string') return undefined;
  return r.baseUrl ? r.baseUrl + p : p; // no new string for routes mounted at the root
}

export interface GracefulShutdownOptions extends HttpDrainOptions {
  /** Signals that start the drain (default `['SIGTERM']`); `[]` installs no handler. */
  readonly signals?: readonly NodeJS.Signals[];
  /** Close the mesh after the server stopped (default true when `mesh` is given). */
  readonly closeMesh?: boolean;
}

/**
 * Graceful drain of the server an Express app listens on (`app.listen()` returns it): on SIGTERM
 * readiness fails first, then after `delayMs` the listener closes, idle keep-alive connections
 * close at once and busy ones right after their response, in-flight requests finish (up to
 * `timeoutMs`), then the server stops and the mesh closes. `maxConnectionAgeMs` recycles old
 * keep-alive connections. Returns the drainer (`drain()` starts it by hand) and a remover.
 */
export function gracefulShutdown(
  server: Server,
  options: GracefulShutdownOptions = {},
): { drainer: HttpDrainer; drain: () => Promise<void>; dispose: () => void } {
  const drainer = new HttpDrainer(server, options);
  const mesh = options.mesh;
  const closeMesh = options.closeMesh ?? mesh !== undefined;
  const after = closeMesh && mesh ? () => mesh.close() : undefined;
  const dispose = drainer.onSignal(options.signals ?? ['SIGTERM'], after);
  return {
    drainer,
    drain: async () => {
      await drainer.drain();
      await after?.();
    },
    dispose,
  };
}

export { DEADLINE_HEADER, inboundDeadline, inboundTelemetry, REQUEST_TIMEOUT_HEADER };
