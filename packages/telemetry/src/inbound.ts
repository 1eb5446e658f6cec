import type { InboundRequestInfo, InboundSpan, InboundTelemetry, Mesh } from '@meshlet/core';
import { getTelemetry } from './installed.js';

/**
 * Inbound telemetry backed by the `@meshlet/telemetry` installed on `mesh` (createMesh installs
 * it): a SERVER span continuing the caller's trace (W3C `traceparent`, or B3 when configured), the
 * server request metrics and the inbound access log. Looked up when a request starts; no-op when
 * the mesh has no telemetry. The server adapters find it without this function (installing
 * telemetry plugs it into the mesh's inbound ports); it is for servers built by hand.
 */
export function inboundTelemetry(mesh: Mesh): InboundTelemetry {
  return {
    start(info: InboundRequestInfo): InboundSpan | undefined {
      return getTelemetry(mesh)?.inbound.start(info);
    },
  };
}
