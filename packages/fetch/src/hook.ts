import type { EndpointState, Outcome, ServiceRuntime } from '@meshlet/core';
import type { Dispatcher } from 'undici';

/**
 * What a request hook sees when a logical mesh request starts. Called synchronously inside
 * `dispatch()`, so the caller's async context (e.g. the active OpenTelemetry context) is current.
 */
export interface RequestStartInfo {
  readonly service: ServiceRuntime;
  readonly method: string;
  readonly path: string;
  /** The logical authority (`reviews`, `reviews:8080`). */
  readonly authority: string;
  /** The caller's headers, in whatever form undici accepted them. Read them with `readHeader()`. */
  readonly headers: Dispatcher.DispatchOptions['headers'];
}

/**
 * Per-request observer returned by a {@link RequestHook}. Its methods run on the request path:
 * keep them cheap and never throw (errors are swallowed to protect the request).
 */
export interface RequestObserver {
  /**
   * Headers added to the request (every attempt sends the same ones: they are injected exactly
   * once per logical request). A header the caller already set is left alone. Flat list
   * `[name, value, name, value, …]` with lower-case names.
   */
  readonly headers?: readonly string[] | undefined;
  /** One attempt ended. `retryReason` is set when the mesh retries because of this attempt's response. */
  attemptEnd?(
    endpoint: EndpointState,
    attempt: number,
    outcome: Outcome,
    status: number | undefined,
    durationMs: number,
    error: Error | undefined,
    retryReason: string | undefined,
  ): void;
  /**
   * The logical request ended (success, error, timeout, …). Transports call it synchronously just
   * before emitting the `request` event (telemetry relies on that order to attach trace ids to
   * the event's metrics and access log line).
   */
  end(
    outcome: Outcome,
    status: number | undefined,
    attempts: number,
    endpoint: EndpointState | undefined,
    error: Error | undefined,
  ): void;
}

/**
 * A hook into the fetch pipeline (tracing, header injection). `start` is called once per logical
 * request; return undefined to observe nothing (the request then costs one call).
 */
export interface RequestHook {
  start(info: RequestStartInfo): RequestObserver | undefined;
}

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
 * Returns `headers` plus the observer's extra headers, skipping any the caller already set (so
 * that a `traceparent` is never sent twice). `headers` is not modified.
 */
export function addHeaders(
  headers: Dispatcher.DispatchOptions['headers'],
  extra: readonly string[],
): Dispatcher.DispatchOptions['headers'] {
  const add: string[] = [];
  for (let i = 0; i + 1 < extra.length; i += 2) {
    const name = extra[i] as string;
    if (readHeader(headers, name) === undefined) add.push(name, extra[i + 1] as string);
  }
  if (add.length === 0) return headers;
  if (headers == null) {
    const out: Record<string, string> = {};
    for (let i = 0; i < add.length; i += 2) out[add[i] as string] = add[i + 1] as string;
    return out;
  }
  if (Array.isArray(headers)) return [...headers, ...add] as Dispatcher.DispatchOptions['headers'];
  const out: Record<string, string | string[]> = {};
  if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === 'function') {
    for (const [k, v] of headers as Iterable<[string, string | string[]]>) out[k] = v;
  } else {
    Object.assign(out, headers as Record<string, string | string[]>);
  }
  for (let i = 0; i < add.length; i += 2) out[add[i] as string] = add[i + 1] as string;
  return out;
}

/** Runs `hook.start`, isolating the request from a throwing hook. */
export function startObserver(
  hook: RequestHook,
  service: ServiceRuntime,
  opts: Dispatcher.DispatchOptions,
  authority: string,
): RequestObserver | undefined {
  try {
    return hook.start({ service, method: opts.method, path: opts.path, authority, headers: opts.headers });
  } catch {
    return undefined;
  }
}
