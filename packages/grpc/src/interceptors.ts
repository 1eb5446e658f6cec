import type { Interceptor } from '@grpc/grpc-js';
import type { CallHook, CallInfo, CallObserver, ServiceRuntime } from '@meshlet/core';
import { MeshClientPolicy, type MeshInterceptorOptions, type RetryOptions } from './mesh-call.js';

/**
 * The outbound observer contract is core's (`CallHook`, `CallObserver`, `CallInfo`), shared with
 * the fetch transport; `CallStartInfo` is kept as a name for `CallInfo`.
 */
export type { CallHook, CallObserver, MeshInterceptorOptions, RetryOptions };
export type CallStartInfo = CallInfo;

/**
 * meshlet's client interceptor, for `mesh:` channels meshlet did not create: every call runs on
 * core's call pipeline exactly as a mesh client's (`MeshCall`: deadline, breaker, thresholds,
 * the pick of each attempt, retries under gRFC A6's rules within the budget, the call hook and a
 * `request` event — with `retry: false` too), over the rest of the interceptor chain. Put it last
 * (innermost) in the client's `interceptors`, on a channel whose target is `mesh:///…` of
 * `runtime`'s service: meshlet's picker sends each attempt where the pipeline placed it.
 */
export function meshInterceptor(runtime: ServiceRuntime, options: MeshInterceptorOptions = {}): Interceptor {
  const client = new MeshClientPolicy(runtime, options, undefined, `mesh:///${runtime.name}`);
  // The mesh call speaks grpc-js's intercepting-call interface (start, sendMessage, …).
  return (callOptions, nextCall) =>
    client.interceptCall(callOptions, nextCall) as unknown as ReturnType<Interceptor>;
}
