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
import type { FastifyInstance, FastifyPluginCallback, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';

/** Decides whether an inbound request may proceed (`@meshlet/tls` `createAuthorizer`). */
export type RequestAuthorizer = (attributes: RequestAttributes) => AuthorizationDecision;

export interface MeshFastifyOptions {
  /** The mesh: readiness (ready and not draining), and the default authorizer (`authorization:` config). */
  readonly mesh?: Mesh | undefined;
  /**
   * Authorization evaluator. Default: the mesh's (`authorization:` config), if any; `false`
   * disables it. A denial answers 403 with `{ error: { code: 'MESHLET_ERR_FORBIDDEN', … } }`.
   */
  readonly authorizer?: RequestAuthorizer | false | undefined;
  /**
   * Inbound metrics and server spans. Default: the `@meshlet/telemetry` installed on `mesh`
   * (`inboundTelemetry(mesh)`), none without a mesh; `false` disables.
   */
  readonly telemetry?: InboundTelemetry | false | undefined;
  /** Liveness route (always 200); `false` disables. Default `/healthz`. */
  readonly livenessPath?: string | false;
  /** Readiness route: 200 while the mesh is ready and not draining, else 503; `false` disables. Default `/ready`. */
  readonly readinessPath?: string | false;
  /** Deadline applied when the request carries none, in ms (default 0: none). */
  readonly defaultTimeoutMs?: number;
  /**
   * Graceful drain of `fastify.server` (see `HttpDrainOptions`); `false` disables. Default: drain
   * on SIGTERM with `delayMs` 0 and `timeoutMs` 25 s, then `fastify.close()` and `mesh.close()`.
   */
  readonly drain?: (HttpDrainOptions & { readonly signals?: readonly NodeJS.Signals[] }) | false;
}

interface MeshRequestState {
  span: InboundSpan | undefined;
  deadline: number | undefined;
}

const STATE = Symbol('meshlet');
type WithState = FastifyRequest & { [STATE]?: MeshRequestState };

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
  const probePaths = new Set<string>();

  if (liveness !== false) {
    probePaths.add(liveness);
    fastify.get(liveness, (_req, reply) => {
      reply.send({ status: 'alive' });
    });
  }
  if (readiness !== false) {
    probePaths.add(readiness);
    fastify.get(readiness, (_req, reply) => {
      const ok = mesh ? isServing(mesh) : true;
      reply.code(ok ? 200 : 503).send({ status: ok ? 'ready' : 'not_ready' });
    });
  }

  fastify.addHook('onRequest', (request: FastifyRequest, reply: FastifyReply, next) => {
    const path = request.url.split('?', 1)[0] as string;
    if (probePaths.has(path)) {
      next();
      return;
    }
    let principal: string | undefined;
    if (authorizer) {
      const attrs = requestAttributes(request.raw);
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
    const state: MeshRequestState = {
      span: telemetry?.start({
        transport: 'http',
        method: request.method,
        route: request.routeOptions?.url ?? path,
        path,
        headers: request.headers,
        principal,
      }),
      deadline: inboundDeadline(request.headers, defaultTimeoutMs),
    };
    (request as WithState)[STATE] = state;
    next();
  });

  // The handler runs right after preHandler's callback (after body parsing): enter the deadline
  // and span context there so it covers the handler and everything it awaits.
  fastify.addHook('preHandler', (request: FastifyRequest, _reply: FastifyReply, next) => {
    const state = (request as WithState)[STATE];
    if (!state) {
      next();
      return;
    }
    const d = state.deadline;
    const go = d === undefined ? () => next() : () => runWithDeadline(d, () => next());
    if (state.span) state.span.run(go);
    else go();
  });

  fastify.addHook('onResponse', (request: FastifyRequest, reply: FastifyReply, next) => {
    const state = (request as WithState)[STATE];
    if (state?.span) {
      const s = state.span;
      state.span = undefined;
      s.end(reply.statusCode);
    }
    next();
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
 * for every handler (`x-meshlet-deadline-ms` / `x-request-timeout`) and graceful drain on SIGTERM.
 */
export const meshPlugin = fp(plugin, { fastify: '4.x || 5.x', name: '@meshlet/fastify' });
export default meshPlugin;
export { DEADLINE_HEADER, inboundDeadline, inboundTelemetry, REQUEST_TIMEOUT_HEADER };
