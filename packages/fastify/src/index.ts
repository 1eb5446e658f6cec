import {
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
  routeView,
  socketPeer,
  trackLoad,
} from '@meshlet/core';
import type { FastifyInstance, FastifyPluginCallback, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';

/** An authorization evaluator, e.g. `createAuthorizer(policies)` of `@meshlet/tls`. */
export type RequestAuthorizer = InboundAuthorizer;

/** The plugin's options: the inbound options every adapter takes (see `InboundOptions`), and drain. */
export interface MeshFastifyOptions extends InboundOptions {
  /**
   * Graceful drain of `fastify.server` (see `HttpDrainOptions`); `false` disables. Default: drain
   * on SIGTERM with `delayMs` 0 and `timeoutMs` 25 s, then `fastify.close()` and `mesh.close()`.
   */
  readonly drain?: (HttpDrainOptions & { readonly signals?: readonly NodeJS.Signals[] }) | false;
}

/**
 * What the plugin keeps per request, as a request decoration (`decorateRequest`, so every request
 * object has the same shape from its constructor on): the admitted request (its span and
 * deadline). `null` for probes.
 */
const STATE = Symbol('meshlet');
type WithState = FastifyRequest & { [STATE]: InboundRequest | null };

declare module 'fastify' {
  interface FastifyInstance {
    /** The graceful drainer of this server (when `drain` is not disabled). */
    meshDrainer: HttpDrainer | undefined;
  }
}

/** Fastify's routing options (`routerOptions` over the top-level ones), as find-my-way applies them. */
interface RoutingConfig {
  readonly caseSensitive?: boolean;
  readonly ignoreTrailingSlash?: boolean;
  readonly ignoreDuplicateSlashes?: boolean;
  readonly useSemicolonDelimiter?: boolean;
  readonly exposeHeadRoutes?: boolean;
  readonly routerOptions?: RoutingConfig;
}

/**
 * How this Fastify instance routes: find-my-way looks up the path as received (before any hook),
 * %-decoded except for reserved characters, and by its `caseSensitive`, `ignoreTrailingSlash`,
 * `ignoreDuplicateSlashes` and `useSemicolonDelimiter` options; HEAD reaches GET handlers while
 * `exposeHeadRoutes` (the default) is on.
 */
export function fastifyRouteView(fastify: Pick<FastifyInstance, 'initialConfig'>): RouteView {
  const c = fastify.initialConfig as RoutingConfig;
  const r = c.routerOptions ?? {};
  return routeView({
    routesReceivedPath: true,
    decodes: true,
    caseInsensitive: (r.caseSensitive ?? c.caseSensitive) === false,
    ignoresTrailingSlash: (r.ignoreTrailingSlash ?? c.ignoreTrailingSlash) === true,
    mergesSlashes: (r.ignoreDuplicateSlashes ?? c.ignoreDuplicateSlashes) === true,
    semicolonEndsPath: (r.useSemicolonDelimiter ?? c.useSemicolonDelimiter) === true,
    headAsGet: c.exposeHeadRoutes !== false,
  });
}

/** The connection of a request, HTTP/1.1 or HTTP/2. */
function socketOf(raw: FastifyRequest['raw']): PeerSocket {
  const h2 = raw as { stream?: { session?: { socket?: PeerSocket } } };
  return h2.stream?.session?.socket ?? (raw.socket as PeerSocket);
}

const plugin: FastifyPluginCallback<MeshFastifyOptions> = (fastify: FastifyInstance, options, done) => {
  const mesh = options.mesh;
  const liveness = options.livenessPath ?? '/healthz';
  const readiness = options.readinessPath ?? '/ready';
  const view = fastifyRouteView(fastify);
  const admission = new InboundAdmission({
    ...options,
    transport: 'http',
    routeView: view,
  });

  if (liveness !== false) {
    fastify.get(liveness, (_req, reply) => {
      reply.send({ status: 'alive' });
    });
  }
  if (readiness !== false) {
    fastify.get(readiness, (_req, reply) => {
      const ok = mesh ? isServing(mesh) : true;
      reply.code(ok ? 200 : 503).send({ status: ok ? 'ready' : 'not_ready' });
    });
  }

  // Upgrade requests (WebSocket) go to the server's `upgrade` listeners, never through the hooks:
  // the same admission step runs before those listeners.
  guardUpgrades(fastify.server, admission);

  if (!fastify.hasRequestDecorator(STATE)) fastify.decorateRequest(STATE, null);

  // Per request: no closures, no work for what is not configured. Admission (normalization,
  // authorization, deadline, telemetry) runs before the body is read; the span starts here too, so
  // that it covers body parsing. Fastify has routed already: the policy is evaluated on the path
  // as find-my-way matched it as well as on the normalized one.
  fastify.addHook('onRequest', function meshOnRequest(request: FastifyRequest, reply: FastifyReply, next) {
    const raw = request.raw;
    const url = raw.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (path === liveness || path === readiness) {
      next();
      return;
    }
    const r = admission.admitHttp(
      request.method,
      url,
      raw.headers,
      raw.rawHeaders,
      socketPeer(socketOf(raw)),
      // Fastify builds `routeOptions` afresh on every read: only when telemetry wants the label.
      admission.telemetryActive ? request.routeOptions?.url : undefined, // undefined for a 404
    );
    if (r.closeConnection) closeConnectionAfter(raw, reply.raw);
    if (r.status !== 0) {
      if (r.location !== undefined) reply.header('location', r.location);
      const extra = refusalHeaders(r);
      for (let i = 0; i < extra.length; i += 2) reply.header(extra[i] as string, extra[i + 1] as string);
      reply.code(r.status).header('content-type', 'application/json; charset=utf-8').send(r.errorBody());
      r.finished(false);
      r.span?.end(r.status, r.refusalError());
      return;
    }
    if (r.clientCert) removeClientCert(raw);
    // The load report (one header, pre-encoded) and the count out when the response is over.
    const span = r.span;
    const res = reply.raw;
    const counted = trackLoad(res, r, span === undefined);
    // The span ends when the response is over ('close': after it finished, or when the connection
    // died first), in the same listener that counts the request out: one listener, no
    // onResponse hook for Fastify to run per request.
    if (span !== undefined)
      res.on('close', () => {
        if (counted) countOut(res);
        span.end(res.statusCode);
      });
    (request as WithState)[STATE] = r;
    next();
  });

  // The handler runs right after preHandler's callback (after body parsing): enter the deadline
  // and span context there so it covers the handler and everything it awaits.
  fastify.addHook('preHandler', function meshPreHandler(request: FastifyRequest, _reply: FastifyReply, next) {
    const r = (request as WithState)[STATE];
    if (r === null || (r.span === undefined && r.deadline === undefined)) next();
    else r.enter(next);
  });

  let drainer: HttpDrainer | undefined;
  if (options.drain !== false) {
    const d = options.drain ?? {};
    drainer = new HttpDrainer(fastify.server, { mesh, ...d });
    const dispose = drainer.onSignal(d.signals ?? ['SIGTERM'], async () => {
      await fastify.close();
      await mesh?.close();
    });
    fastify.addHook('onClose', (_instance, next) => {
      dispose();
      next();
    });
  }
  fastify.decorate('meshDrainer', drainer);
  done();
};

/**
 * The inbound half of the mesh as a Fastify plugin (fastify-plugin, so its hooks apply to every
 * route): `await app.register(meshPlugin, { mesh })`. Liveness and readiness routes,
 * authorization (403 with a coded body), telemetry (server span + metrics), the deadline context
 * for every handler (`x-meshlet-deadline-ms` / `x-request-timeout`), load reports
 * (`endpoint-load-metrics`) and overload protection (503 with `Retry-After` before the handler),
 * and graceful drain on SIGTERM.
 */
export const meshPlugin = fp(plugin, { fastify: '4.x || 5.x', name: '@meshlet/fastify' });
export default meshPlugin;
export { DEADLINE_HEADER, inboundDeadline, meshInboundTelemetry as inboundTelemetry, REQUEST_TIMEOUT_HEADER };
