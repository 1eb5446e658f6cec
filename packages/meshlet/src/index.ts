import './extensions.js';

export {
  type ConfigIssue,
  type ErrorCode,
  ErrorCodes,
  isConfigError,
  isMeshError,
  isMeshErrorCode,
  type MeshConfig,
  MeshConfigError,
  MeshError,
  type MeshSnapshot,
  meshConfigJsonSchema,
  type ParsedMeshConfig,
} from '@meshlet/core';
export { MeshDispatcher } from '@meshlet/fetch';
export { type CreateMeshOptions, createMesh, Mesh, type MeshExtension, registerExtension } from './mesh.js';
