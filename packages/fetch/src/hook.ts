import type { CallHook, CallInfo, CallObserver } from '@meshlet/core';
import type { Dispatcher } from 'undici';

/**
 * The outbound observer contract is core's (`CallHook`, `CallObserver`, `CallInfo`: one for every
 * transport, installed with `Mesh.setCallHook`); these names are kept for code written against
 * the fetch transport's hook.
 */
export type RequestHook = CallHook;
export type RequestObserver = CallObserver;
export type RequestStartInfo = CallInfo;

/** Reads a header (case-insensitive) from undici dispatch headers in any of their forms. */
export function readHeader(
  headers: Dispatcher.DispatchOptions['headers'],
  lowerName: string,
): string | undefined {
  if (headers == null) return undefined;
  if (Array.isArray(headers)) {
    for (let i = 0; i + 1 < headers.length; i += 2) {
      const n = headers[i];
      if (typeof n === 'string' && n.length === lowerName.length && n.toLowerCase() === lowerName) {
        const v = headers[i + 1];
        return Array.isArray(v) ? v.join(',') : String(v);
      }
    }
    return undefined;
  }
  if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === 'function') {
    for (const [k, v] of headers as Iterable<[string, string | string[]]>) {
      if (k.toLowerCase() === lowerName) return Array.isArray(v) ? v.join(',') : String(v);
    }
    return undefined;
  }
  const h = headers as Record<string, unknown>;
  const direct = h[lowerName];
  if (direct !== undefined) return Array.isArray(direct) ? direct.join(',') : String(direct);
  for (const k in h) {
    if (k.length === lowerName.length && k.toLowerCase() === lowerName) {
      const v = h[k];
      if (v === undefined) continue;
      return Array.isArray(v) ? v.join(',') : String(v);
    }
  }
  return undefined;
}

/**
 * The headers sent upstream: the caller's plus `add` (flat `[name, value, …]`), skipping any name
 * the caller already set (case-insensitive), in the form the caller used. `headers` is not modified.
 */
export function withHeaders(
  headers: Dispatcher.DispatchOptions['headers'],
  add: readonly string[],
): Dispatcher.DispatchOptions['headers'] {
  let extra: string[] | undefined;
  for (let i = 0; i + 1 < add.length; i += 2) {
    const name = add[i] as string;
    if (readHeader(headers, name) !== undefined) continue;
    if (extra === undefined) extra = [];
    extra.push(name, add[i + 1] as string);
  }
  if (extra === undefined) return headers;
  if (headers == null) {
    const out: Record<string, string> = {};
    for (let i = 0; i < extra.length; i += 2) out[extra[i] as string] = extra[i + 1] as string;
    return out;
  }
  if (Array.isArray(headers)) return [...headers, ...extra] as Dispatcher.DispatchOptions['headers'];
  const out: Record<string, string | string[]> = {};
  if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === 'function') {
    for (const [k, v] of headers as Iterable<[string, string | string[]]>) {
      const prev = out[k];
      out[k] = prev === undefined ? v : ([] as string[]).concat(prev, v);
    }
  } else {
    Object.assign(out, headers as Record<string, string | string[]>);
  }
  for (let i = 0; i < extra.length; i += 2) out[extra[i] as string] = extra[i + 1] as string;
  return out;
}

/** `headers` plus one header `name` (lower case) unless the caller set it; `headers` is not modified. */
export function withHeader(
  headers: Dispatcher.DispatchOptions['headers'],
  name: string,
  value: string,
): Dispatcher.DispatchOptions['headers'] {
  if (headers == null) {
    const out: Record<string, string> = {};
    out[name] = value;
    return out;
  }
  if (readHeader(headers, name) !== undefined) return headers;
  if (Array.isArray(headers)) {
    const out = headers.slice() as string[];
    out.push(name, value);
    return out as Dispatcher.DispatchOptions['headers'];
  }
  return withHeaders(headers, [name, value]);
}
