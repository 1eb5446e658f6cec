import type { InboundRequestInfo, InboundSpan, InboundTelemetry, Mesh } from '@meshlet/core';
import { getTelemetry } from './telemetry.js';
import { headerGetter } from './tracing.js';

/**
 * Inbound telemetry backed by the `@meshlet/telemetry` installed on `mesh` (createMesh installs
 * it): a SERVER span continuing the caller's trace (W3C `traceparent`, or B3 when configured), the
 * server request metrics and the inbound access log. Looked up on first use; no-op when the mesh
 * has no telemetry. Also usable for gRPC: `createMeshServer({ telemetry: inboundTelemetry(mesh) })`.
 *
 * The span it returns is the telemetry's own `ServerRequest` (it runs the handler in the span's
 * context and ends once): one object per request, nothing else allocated for the adapter.
 */
export function inboundTelemetry(mesh: Mesh): InboundTelemetry {
  return {
    start(info: InboundRequestInfo): InboundSpan | undefined {
      const tel = getTelemetry(mesh);
      if (!tel) return undefined;
      return tel.server.start({
        method: info.method,
        path: info.path,
        route: info.route,
        peerIdentity: info.principal,
        header: headerGetter(info.headers as Readonly<Record<string, string | string[] | undefined>>),
        transport: info.transport,
      });
    },
  };
}
