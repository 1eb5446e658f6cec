import './extensions.js';

export {
  type ConfigIssue,
  consoleLogger,
  type ErrorCode,
  ErrorCodes,
  isConfigError,
  isMeshError,
  isMeshErrorCode,
  type LogRateLimit,
  type MeshConfig,
  MeshConfigError,
  MeshError,
  type MeshLogger,
  type MeshSnapshot,
  meshConfigJsonSchema,
  type ParsedMeshConfig,
  type PolicyInput,
  type ServiceInput,
} from '@meshlet/core';
export { MeshDispatcher } from '@meshlet/fetch';
// The config sections of the packages createMesh runs. Exporting their types also brings their
// additions to MeshConfig (module augmentation of @meshlet/core) into a consumer's program.
export type { KubernetesInput } from '@meshlet/kubernetes';
export type { AccessLogInput, AdminInput, TelemetryInput } from '@meshlet/telemetry';
export type { AuthorizationInput, TlsInput } from '@meshlet/tls';
// From the light entry: @meshlet/xds's own types reach for @grpc/grpc-js, an optional peer.
export type { XdsInput } from '@meshlet/xds/config';
export { type CreateMeshOptions, createMesh, Mesh, type MeshExtension, registerExtension } from './mesh.js';
