import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import {
  DEADLINE_HEADER,
  HttpDrainer,
  type HttpDrainOptions,
  type InboundSpan,
  type InboundTelemetry,
  inboundDeadline,
  isServing,
  type Mesh,
  REQUEST_TIMEOUT_HEADER,
  runWithDeadline,
} from '@meshlet/core';
import { inboundTelemetry } from '@meshlet/telemetry';
import {
  type AuthorizationDecision,
  forbiddenBody,
  getMeshTls,
  type RequestAttributes,
  requestAttributes,
} from '@meshlet/tls';

/** Decides whether an inbound request may proceed (`@meshlet/tls` `createAuthorizer`). */
export type RequestAuthorizer = (attributes: RequestAttributes) => AuthorizationDecision;

export interface MeshMiddlewareOptions {
  /** The mesh: readiness (ready and not draining), and the default authorizer (`authorization:` config). */
  readonly mesh?: Mesh | undefined;
  /**
   * Authorization evaluator. Default: the mesh's (`authorization:` in the mesh config), if any;
   * `false` disables it. A denial answers 403 with `{ error: { code: 'MESHLET_ERR_FORBIDDEN', … } }`.
   */
  readonly authorizer?: RequestAuthorizer | false | undefined;
  /**
   * Inbound metrics and server spans. Default: the `@meshlet/telemetry` installed on `mesh`
   * (`inboundTelemetry(mesh)`), none without a mesh; `false` disables.
   */
  readonly telemetry?: InboundTelemetry | false | undefined;
  /** Liveness endpoint path (always 200 while the process runs); `false` disables. Default `/healthz`. */
  readonly livenessPath?: string | false;
  /**
   * Readiness endpoint path: 200 while the mesh is ready and not draining, else 503. `false`
   * disables. Default `/ready`.
   */
  readonly readinessPath?: string | false;
  /** Deadline applied when the request carries none, in ms (default 0: none). */
  readonly defaultTimeoutMs?: number;
}

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
    if (authz) {
      const attrs = requestAttributes(req);
      principal = attrs.principal;
      const decision = authz({ ...attrs, path });
      if (!decision.allowed) {
        sendJson(res, 403, forbiddenBody(decision));
        return;
      }
    }
    let span: InboundSpan | undefined;
    if (telemetry) {
      span = telemetry.start({
        transport: 'http',
        method: req.method ?? 'GET',
        route: path,
        path,
        headers: req.headers,
        principal,
      });
      if (span) {
        const s = span;
        let ended = false;
        const end = () => {
          if (ended) return;
          ended = true;
          s.end(res.statusCode);
        };
        res.once('finish', end);
        res.once('close', end);
      }
    }
    const deadline = inboundDeadline(req.headers, defaultTimeoutMs);
    const go = deadline === undefined ? () => next() : () => runWithDeadline(deadline, () => next());
    if (span) span.run(go);
    else go();
  };
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
