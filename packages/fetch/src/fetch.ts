import type { Dispatcher, fetch as UndiciFetch } from 'undici';
import { undiciFetch } from './undici.js';

/** `fetch` with the WHATWG signature (undici semantics), routed through a mesh dispatcher. */
export type MeshFetch = (
  input: Parameters<typeof UndiciFetch>[0],
  init?: Parameters<typeof UndiciFetch>[1],
) => ReturnType<typeof UndiciFetch>;

/** Returns a `fetch` that sends every request through `dispatcher` unless `init.dispatcher` says otherwise. */
export function createMeshFetch(dispatcher: Dispatcher): MeshFetch {
  // undici's fetch loads on the first call (packages/fetch/src/undici.ts).
  return (input, init) => undiciFetch()(input, init === undefined ? { dispatcher } : { dispatcher, ...init });
}
