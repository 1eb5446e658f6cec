import type { Mesh } from '@meshlet/core';
import { type CredentialsProvider, closeMeshChannels, setCallHook, setChannelCredentials } from './client.js';
import type { CallHook } from './interceptors.js';
import { registerMesh } from './resolver.js';
import { grpcJsSupport } from './support.js';

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
 * Throws `MESHLET_ERR_PEER_DEPENDENCY` when the installed grpc-js is older than 1.14.0.
 */
export function attachGrpc(mesh: Mesh, options: AttachGrpcOptions = {}): void {
  // grpc-js below 1.14 has other resolver and balancer APIs: a coded error now, not a throw from
  // inside grpc-js on the first call.
  const support = grpcJsSupport();
  if (support.status !== 'supported') throw support.error;
  const detach = registerMesh(mesh, options.name);
  if (options.credentials) setChannelCredentials(mesh, options.credentials);
  if (options.callHook) setCallHook(mesh, options.callHook);
  mesh.onClose(() => {
    detach();
    closeMeshChannels(mesh);
  });
}
