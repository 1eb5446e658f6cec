import {
  DEADLINE_HEADER,
  HttpDrainer,
  type HttpDrainOptions,
  type InboundOptions,
  type InboundSpan,
  inboundDeadline,
  isServing,
  REQUEST_TIMEOUT_HEADER,
  runWithDeadline,
} from '@meshlet/core';
import { inboundTelemetry } from '@meshlet/telemetry';
import { forbiddenBody, getMeshTls, type RequestAuthorizer, requestAttributes } from '@meshlet/tls';
import type { FastifyInstance, FastifyPluginCallback, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';

export type { RequestAuthorizer };

/** The plugin's options: the inbound options every adapter takes (see `InboundOptions`), and drain. */
export interface MeshFastifyOptions extends InboundOptions<RequestAuthorizer> {
  /**
   * Graceful drain of `fastify.server` (see `HttpDrainOptions`); `false` disables. Default: drain
   * on SIGTERM with `delayMs` 0 and `timeoutMs` 25 s, then `fastify.close()` and `mesh.close()`.
   */
  readonly drain?: (HttpDrainOptions & { readonly signals?: readonly NodeJS.Signals[] }) | false;
}

/**
 * What the plugin keeps per request, as a request decoration (`decorateRequest`, so every request
 * object has the same shape from its constructor on): the server span and the deadline. `null`
 * for requests the plugin leaves alone (probes, requests with neither a span nor a deadline).
 */
interface MeshRequestState {
  span: InboundSpan | undefined;
  readonly deadline: number | undefined;
}

const STATE = Symbol('meshlet');
type WithState = FastifyRequest & { [STATE]: MeshRequestState | null };

declare module 'fastify' {
  interface FastifyInstance {
    /** The graceful drainer of this server (when `drain` is not disabled). */
    meshDrainer: HttpDrainer | undefined;
  }
}

const plugin: FastifyPluginCallback<MeshFastifyOptions> = (fastify: FastifyInstance, options, done) => {
  const mesh = options.mesh;
  const telemetry =
    options.telemetry === false
      ? undefined
      : (options.telemetry ?? (mesh ? inboundTelemetry(mesh) : undefined));
  const defaultTimeoutMs = options.defaultTimeoutMs ?? 0;
  const liveness = options.livenessPath ?? '/healthz';
  const readiness = options.readinessPath ?? '/ready';
  const authorizer =
    options.authorizer === false
      ? undefined
      : (options.authorizer ?? (mesh ? getMeshTls(mesh)?.authorizer : undefined));

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

  if (!fastify.hasRequestDecorator(STATE)) fastify.decorateRequest(STATE, null);

  // Per request: no closures, no work for what is not configured. Authorization runs before the
  // body is read; the span starts here too, so that it covers body parsing.
  fastify.addHook('onRequest', function meshOnRequest(request: FastifyRequest, reply: FastifyReply, next) {
    const raw = request.raw;
    const url = raw.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (path === liveness || path === readiness) {
      next();
      return;
    }
    let principal: string | undefined;
    if (authorizer !== undefined) {
      const attrs = requestAttributes(raw);
      principal = attrs.principal;
      const decision = authorizer({ ...attrs, path });
      if (!decision.allowed) {
        reply
          .code(403)
          .header('content-type', 'application/json; charset=utf-8')
          .send(forbiddenBody(decision));
        return;
      }
    }
    const headers = raw.headers;
    const span =
      telemetry === undefined
        ? undefined
        : telemetry.start({
            transport: 'http',
            method: request.method,
            route: request.routeOptions?.url, // undefined when no route matched (404)
            path,
            headers,
            principal,
          });
    const deadline = inboundDeadline(headers, defaultTimeoutMs);
    if (span !== undefined || deadline !== undefined) (request as WithState)[STATE] = { span, deadline };
    next();
  });

  // The handler runs right after preHandler's callback (after body parsing): enter the deadline
  // and span context there so it covers the handler and everything it awaits.
  fastify.addHook('preHandler', function meshPreHandler(request: FastifyRequest, _reply: FastifyReply, next) {
    const state = (request as WithState)[STATE];
    if (state === null) {
      next();
      return;
    }
    const { span, deadline } = state;
    if (span === undefined) runWithDeadline(deadline as number, next);
    else if (deadline === undefined) span.run(next);
    else span.run(() => runWithDeadline(deadline, next));
  });

  if (telemetry !== undefined) {
    fastify.addHook(
      'onResponse',
      function meshOnResponse(request: FastifyRequest, reply: FastifyReply, next) {
        const state = (request as WithState)[STATE];
        const span = state?.span;
        if (span !== undefined) {
          (state as MeshRequestState).span = undefined;
          span.end(reply.statusCode);
        }
        next();
      },
    );
  }

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
 * for every handler (`x-meshlet-deadline-ms` / `x-request-timeout`) and graceful drain on SIGTERM.
 */
export const meshPlugin = fp(plugin, { fastify: '4.x || 5.x', name: '@meshlet/fastify' });
export default meshPlugin;
export { DEADLINE_HEADER, inboundDeadline, inboundTelemetry, REQUEST_TIMEOUT_HEADER };
