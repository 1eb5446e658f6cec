import type { Mesh } from '@meshlet/core';
import type { MeshTelemetry } from './telemetry.js';

/** The telemetry installed on each mesh (`installTelemetry` adds it, its close removes it). */
export const installed = new WeakMap<Mesh, MeshTelemetry>();

/** The telemetry installed on `mesh`, if any (the inbound adapters use it for server spans). */
export function getTelemetry(mesh: Mesh): MeshTelemetry | undefined {
  return installed.get(mesh);
}
