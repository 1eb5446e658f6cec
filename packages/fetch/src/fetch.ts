import { type Dispatcher, fetch as undiciFetch } from 'undici';

/** `fetch` with the WHATWG signature (undici semantics), routed through a mesh dispatcher. */
export type MeshFetch = (
  input: Parameters<typeof undiciFetch>[0],
  init?: Parameters<typeof undiciFetch>[1],
) => ReturnType<typeof undiciFetch>;

/** Returns a `fetch` that sends every request through `dispatcher` unless `init.dispatcher` says otherwise. */
export function createMeshFetch(dispatcher: Dispatcher): MeshFetch {
  return (input, init) => undiciFetch(input, init === undefined ? { dispatcher } : { dispatcher, ...init });
}
