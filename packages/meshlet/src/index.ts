import './extensions.js';

export {
  type ConfigIssue,
  type ErrorCode,
  ErrorCodes,
  isConfigError,
  isMeshError,
  isMeshErrorCode,
  MeshConfigError,
  MeshError,
  type MeshSnapshot,
} from '@meshlet/core';
export { MeshDispatcher } from '@meshlet/fetch';
export { type CreateMeshOptions, createMesh, Mesh, type MeshExtension, registerExtension } from './mesh.js';
