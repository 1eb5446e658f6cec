/**
 * `@meshlet/telemetry/config`: what `import 'meshlet'` needs of telemetry before any mesh exists —
 * the `telemetry` and `admin` config sections (so that `parseConfig`, `meshlet validate` and the
 * schema know them) and `getTelemetry`. It loads neither prom-client nor `@opentelemetry/api`;
 * `createMesh` imports the package itself when it installs telemetry on a mesh.
 */
import { registerTelemetryConfig } from './config.js';

registerTelemetryConfig();

export { getTelemetry } from './installed.js';
export type { TelemetryOptions } from './telemetry.js';
