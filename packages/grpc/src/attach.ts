import type { Mesh } from '@meshlet/core';
import { type CredentialsProvider, closeMeshChannels, setCallHook, setChannelCredentials } from './client.js';
import type { CallHook } from './interceptors.js';
import { registerMesh } from './resolver.js';

export interface AttachGrpcOptions {
  /** Name for `mesh://<name>/service` targets (default: none; `mesh:///…` uses the latest mesh). */
  readonly name?: string | undefined;
  /** Default channel credentials of this mesh's channels (mTLS). */
  readonly credentials?: CredentialsProvider | undefined;
  /**
   * Client spans and trace propagation for this mesh's clients (read when a client is created),
   * instead of the mesh's call hook (`Mesh.setCallHook`). Default: the mesh's.
   */
  readonly callHook?: (() => CallHook | undefined) | undefined;
}

/**
 * Makes `mesh:` gRPC targets resolve through `mesh`: registers the `mesh:` scheme and the `meshlet`
 * balancer with the application's grpc-js (once per process) and adds the mesh to the registry.
 * `mesh.close()` detaches it and closes its pooled channels. `createMesh()` from `meshlet` calls this.
 */
export function attachGrpc(mesh: Mesh, options: AttachGrpcOptions = {}): void {
  const detach = registerMesh(mesh, options.name);
  if (options.credentials) setChannelCredentials(mesh, options.credentials);
  if (options.callHook) setCallHook(mesh, options.callHook);
  mesh.onClose(() => {
    detach();
    closeMeshChannels(mesh);
  });
}
