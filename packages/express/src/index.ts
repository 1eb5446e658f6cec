import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import {
  badRequest,
  closeConnectionAfter,
  countOut,
  DEADLINE_HEADER,
  guardUpgrades,
  HttpDrainer,
  type HttpDrainOptions,
  InboundAdmission,
  type InboundAuthorizer,
  type InboundOptions,
  type InboundRequest,
  inboundDeadline,
  isServing,
  meshInboundTelemetry,
  type PeerSocket,
  REQUEST_TIMEOUT_HEADER,
  type RouteView,
  refusalHeaders,
  removeClientCert,
  socketPeer,
  trackLoad,
} from '@meshlet/core';
import {
  type ExpressRequestLike,
  expressAppRouteView,
  expressRouteTemplate,
  expressRouteView,
} from './routes.js';

/** The middleware's options: the inbound options every adapter takes (see `InboundOptions`). */
export type MeshMiddlewareOptions = InboundOptions;
/** An authorization evaluator, e.g. `createAuthorizer(policies)` of `@meshlet/tls`. */
export type RequestAuthorizer = InboundAuthorizer;

function sendJson(res: ServerResponse, status: number, text: string): void {
  res.statusCode = status;
  res.setHeader('content-type', 'application/json; charset=utf-8');
  res.setHeader('content-length', Buffer.byteLength(text));
  res.end(text);
}

const ALIVE = JSON.stringify({ status: 'alive' });
const READY = JSON.stringify({ status: 'ready' });
const NOT_READY = JSON.stringify({ status: 'not_ready' });

/**
 * Answers a request the admission step refused (400, 403, a 307 to the unescaped path, or a 503:
 * not serving, or shed by overload protection).
 */
function refuse(req: IncomingMessage, res: ServerResponse, r: InboundRequest): void {
  if (r.location !== undefined) res.setHeader('location', r.location);
  if (r.closeConnection) closeConnectionAfter(req, res);
  const extra = refusalHeaders(r);
  for (let i = 0; i < extra.length; i += 2) res.setHeader(extra[i] as string, extra[i + 1] as string);
  sendJson(res, r.status, r.errorBody());
  r.finished(false);
  r.span?.end(r.status, r.refusalError());
}

type Next = (err?: unknown) => void;
type ExpressRequest = IncomingMessage & ExpressRequestLike & { originalUrl?: string };

/**
 * The inbound step both forms share: probes, admission, the span and load accounting, then `next`
 * in the request's deadline and span context. `atRoot`: the request's `url` is the whole path
 * (not cut by a mount); `view`: how the app routes.
 */
type Inbound = (
  req: ExpressRequest,
  res: ServerResponse,
  next: () => void,
  atRoot: boolean,
  view: RouteView,
) => void;

function inbound(options: MeshMiddlewareOptions): Inbound {
  const mesh = options.mesh;
  const liveness = options.livenessPath ?? '/healthz';
  const readiness = options.readinessPath ?? '/ready';
  const admission = new InboundAdmission({
    ...options,
    transport: 'http',
  });
  return (req, res, next, atRoot, view) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (path === liveness) {
      sendJson(res, 200, ALIVE);
      return;
    }
    if (path === readiness) {
      const ok = mesh ? isServing(mesh) : true;
      sendJson(res, ok ? 200 : 503, ok ? READY : NOT_READY);
      return;
    }
    const r = admission.admitHttp(
      req.method ?? 'GET',
      // below the root, Express has cut the mount path off req.url: the policy sees the whole path
      atRoot ? url : (req.baseUrl ?? '') + url,
      req.headers,
      req.rawHeaders,
      socketPeer(req.socket as PeerSocket),
      undefined, // known after routing: see expressRouteTemplate
      view,
    );
    if (r.status !== 0) {
      refuse(req, res, r);
      return;
    }
    if (r.clientCert) removeClientCert(req);
    if (r.changed) {
      // Envoy forwards the normalized path: Express routes what the policy saw.
      if (!atRoot) {
        badRequest(
          r,
          `the path is not in normal form (${r.path}): mount meshMiddleware at the root so that Express routes the normalized path`,
        );
        refuse(req, res, r);
        return;
      }
      // Express keeps the first `originalUrl` it sees: what was received.
      if (req.originalUrl === undefined) req.originalUrl = url;
      req.url = r.path + r.query;
    }
    const span = r.span;
    // With a span, one 'close' listener counts the request out and ends the span (an event
    // with two listeners costs an array and a second call per request).
    const counted = trackLoad(res, r, span === undefined);
    // A connection the inbound listener drains closes after this response.
    if (r.closeConnection) closeConnectionAfter(req, res);
    // 'close' is emitted once per response: after it finished, or when the connection died first
    // (`on`, not `once`: no wrapper to allocate for an event that cannot repeat).
    if (span !== undefined)
      res.on('close', () => {
        if (counted) countOut(res);
        span.end(res.statusCode, undefined, expressRouteTemplate(req));
      });
    r.enter(next);
  };
}

/**
 * The inbound half of the mesh as an Express (4 or 5) middleware. Mount it first, at the root:
 * `app.use(meshMiddleware({ mesh }))`. Per request it
 * - answers `livenessPath` and `readinessPath`;
 * - runs the inbound admission step of `@meshlet/core`: normalizes the path (Istio's `BASE` by
 *   default) and hands the normalized path on to Express's router (`req.url`; `req.originalUrl`
 *   keeps what was received), authorizes it as received-and-normalized and as Express routes it
 *   (case-insensitively, ignoring a trailing slash, HEAD as GET, unless the app's `case sensitive
 *   routing` / `strict routing` say otherwise), answers 400 / 403 with a coded body;
 * - starts a server span and inbound metrics (telemetry), ended when the response finishes and
 *   labelled with the matched route template;
 * - counts the request in the process' load sampler and adds its load report to the response
 *   (`endpoint-load-metrics`, when the client asks for it); with overload protection on, answers
 *   503 with `Retry-After` before the handler when the event loop is behind;
 * - runs the rest of the chain with the request's deadline in scope (a trusted caller's
 *   `x-meshlet-deadline-ms` / `x-request-timeout`, clamped to the service's timeout), so every mesh
 *   fetch and `mesh:` gRPC call it makes is bounded by what is left of it.
 *
 * `meshHandler(app)` does the same in front of the app instead of as one of its layers.
 */
export function meshMiddleware(
  options: MeshMiddlewareOptions = {},
): (req: IncomingMessage, res: ServerResponse, next: Next) => void {
  const handle = inbound(options);
  return (request, res, next) => {
    const req = request as ExpressRequest;
    handle(req, res, next, !req.baseUrl, expressRouteView(req));
  };
}

/** An Express application (4 or 5) as `meshHandler` uses it: its request handler and settings. */
export interface ExpressApplication {
  (req: IncomingMessage, res: ServerResponse): unknown;
  enabled?(setting: string): boolean;
}

/**
 * The inbound half of the mesh in front of an Express app: the request listener of the app's
 * server, doing what `meshMiddleware` does before the request reaches the app —
 * `http.createServer(meshHandler(app, { mesh })).listen(8080)` (or `createMeshHttpServer`). The
 * app then routes the normalized path from its first layer on, and the request costs the app no
 * router layer: on Express 5 one layer that does nothing costs a small request 5–10% of its
 * throughput on Node 20 and ~3% on Node 24 (docs/servers.md). Same options, same answers, same telemetry as the middleware.
 */
export function meshHandler(
  app: ExpressApplication,
  options: MeshMiddlewareOptions = {},
): (req: IncomingMessage, res: ServerResponse) => void {
  const handle = inbound(options);
  // Express's router takes the routing settings when it is made: read them on the first request.
  let view: RouteView | undefined;
  return (req, res) => {
    view ??= expressAppRouteView(app);
    let reached = false;
    try {
      handle(
        req as ExpressRequest,
        res,
        () => {
          reached = true;
          app(req, res);
        },
        true,
        view,
      );
    } catch (err) {
      // What the app throws is the app's, as with `http.createServer(app)`.
      if (reached) throw err;
      // The inbound step failed (an `authorizer` of the application's threw): the request is
      // refused, as Express's final handler answers a middleware that threw.
      failClosed(res, err);
    }
  };
}

function failClosed(res: ServerResponse, err: unknown): void {
  process.emitWarning(
    `meshlet: the inbound step threw, the request is refused (500): ${(err as Error)?.message ?? String(err)}`,
    'MeshletWarning',
  );
  if (res.headersSent) {
    res.destroy();
    return;
  }
  // What Express's final handler says, without its HTML: no meshlet code, the request never
  // reached a decision (a refusal by policy is a 403 with MESHLET_ERR_FORBIDDEN).
  const text = 'Internal Server Error';
  res.statusCode = 500;
  res.setHeader('content-type', 'text/plain; charset=utf-8');
  res.setHeader('content-length', Buffer.byteLength(text));
  res.end(text);
}

/**
 * The inbound admission step for the `upgrade` requests (WebSocket) of the server an Express app
 * listens on: they go to the server's `upgrade` listeners (`ws`' `handleUpgrade`), never through
 * Express's middleware, so `meshMiddleware` never sees them. Call it once with the options given
 * to `meshMiddleware`: `meshUpgrades(app.listen(8080), { mesh })`. A refused request is answered
 * on the socket (400 / 403 / 503 with the coded JSON body) before any listener runs.
 */
export function meshUpgrades<S extends Server>(server: S, options: MeshMiddlewareOptions = {}): S {
  guardUpgrades(server, new InboundAdmission({ ...options, transport: 'http' }));
  return server;
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

export { expressRouteTemplate } from './routes.js';
export { DEADLINE_HEADER, inboundDeadline, meshInboundTelemetry as inboundTelemetry, REQUEST_TIMEOUT_HEADER };
