import { AsyncLocalStorage } from 'node:async_hooks';
import { clampTimer, MAX_TIMER_MS } from './duration.js';

/**
 * Deadline context: the absolute time (epoch ms, `Date.now()` clock) by which the inbound request
 * currently being served must be answered. Inbound adapters (Express, Fastify, gRPC servers) run
 * the handler inside `runWithDeadline()`; every outbound mesh call made from it (mesh fetch, gRPC
 * channels through meshlet) reads `currentDeadline()` and never waits longer than what is left.
 *
 * Kept in core so that transports read it without depending on any server framework.
 */
// The store is the deadline itself (a number): nothing allocated per request but the context.
const storage = new AsyncLocalStorage<number>();

/** The HTTP header carrying the remaining time of a call, in milliseconds (meshlet's own). */
export const DEADLINE_HEADER = 'x-meshlet-deadline-ms';
/** Also honoured on inbound HTTP requests: `x-request-timeout` (milliseconds). */
export const REQUEST_TIMEOUT_HEADER = 'x-request-timeout';

/** Runs `fn` with the given absolute deadline (epoch ms) as the current one. */
export function runWithDeadline<R>(deadline: number, fn: () => R): R {
  return storage.run(deadline, fn);
}

/** The absolute deadline (epoch ms) of the request being served, or undefined outside one. */
export function currentDeadline(): number | undefined {
  return storage.getStore();
}

/**
 * Milliseconds left before the current deadline (never negative), or undefined when no deadline
 * is in scope.
 */
export function remainingTime(now?: number): number | undefined {
  const store = storage.getStore();
  if (store === undefined) return undefined;
  // The clock is read only when a deadline is in scope: this runs on every outbound request.
  return Math.max(0, store - (now ?? Date.now()));
}

/**
 * Combines a configured timeout (ms, 0 = none) with the deadline in scope: the smaller of the
 * two, or 0 when neither applies. A deadline already passed yields 1 (fail almost at once). Never
 * more than a timer can hold (`MAX_TIMER_MS`): a longer wait would fire at once.
 */
export function effectiveTimeout(configuredMs: number, now?: number): number {
  const left = remainingTime(now);
  const c = clampTimer(configuredMs);
  if (left === undefined) return c;
  const l = left < 1 ? 1 : left > MAX_TIMER_MS ? MAX_TIMER_MS : Math.ceil(left);
  return c > 0 && c < l ? c : l;
}

/**
 * Parses a deadline header value (a non-negative number of milliseconds) into an absolute
 * deadline; undefined when absent or malformed. A value above `MAX_TIMER_MS` (`1e308`) is clamped
 * to it, as grpc-js treats a deadline beyond what a timer holds as none.
 */
export function parseDeadlineHeader(
  value: string | readonly string[] | undefined,
  now: number = Date.now(),
): number | undefined {
  const v = typeof value === 'string' ? value : Array.isArray(value) ? value[0] : value;
  if (v === undefined || v.length === 0 || v.length > 12) return undefined;
  // Whole milliseconds (what callers send) are read digit by digit: `Number()` of a string fresh
  // from the parser takes the runtime's slow path, on every request that carries the header.
  let ms = 0;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i) - 48;
    if (c < 0 || c > 9) {
      ms = Number(v);
      if (!Number.isFinite(ms) || ms < 0) return undefined;
      break;
    }
    ms = ms * 10 + c;
  }
  return now + clampTimer(ms);
}

/**
 * The deadline of an inbound HTTP request: `x-meshlet-deadline-ms`, else `x-request-timeout`
 * (both in ms from now), else `now + defaultTimeoutMs` when that is > 0. Used by every inbound
 * integration (Express, Fastify) so that they agree on the headers and their precedence.
 */
export function inboundDeadline(
  headers: Readonly<Record<string, string | string[] | undefined>>,
  defaultTimeoutMs = 0,
  now: number = Date.now(),
): number | undefined {
  return (
    parseDeadlineHeader(headers[DEADLINE_HEADER], now) ??
    parseDeadlineHeader(headers[REQUEST_TIMEOUT_HEADER], now) ??
    (defaultTimeoutMs > 0 ? now + defaultTimeoutMs : undefined)
  );
}
