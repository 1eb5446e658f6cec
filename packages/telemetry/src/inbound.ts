import type { InboundRequestInfo, InboundSpan, InboundTelemetry, Mesh } from '@meshlet/core';
import { context } from '@opentelemetry/api';
import type { ServerRequest } from './telemetry.js';
import { getTelemetry } from './telemetry.js';
import { headerGetter } from './tracing.js';

class Span implements InboundSpan {
  readonly #req: ServerRequest;
  constructor(req: ServerRequest) {
    this.#req = req;
  }
  run<R>(fn: () => R): R {
    return context.with(this.#req.context, fn);
  }
  end(status: number, error?: Error): void {
    this.#req.end(status, error);
  }
}

/**
 * Inbound telemetry backed by the `@meshlet/telemetry` installed on `mesh` (createMesh installs
 * it): a SERVER span continuing the caller's trace (W3C `traceparent`, or B3 when configured), the
 * server request metrics and the inbound access log. Looked up on first use; no-op when the mesh
 * has no telemetry. Also usable for gRPC: `createMeshServer({ telemetry: inboundTelemetry(mesh) })`.
 */
export function inboundTelemetry(mesh: Mesh): InboundTelemetry {
  return {
    start(info: InboundRequestInfo): InboundSpan | undefined {
      const tel = getTelemetry(mesh);
      if (!tel) return undefined;
      const req = tel.server.start({
        method: info.method,
        path: info.path,
        route: info.route,
        peerIdentity: info.principal,
        header: headerGetter(info.headers as Readonly<Record<string, string | string[] | undefined>>),
        transport: info.transport,
      });
      return new Span(req);
    },
  };
}
