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
 * `app.use(meshMiddleware({ mesh }))`. Per request it
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
