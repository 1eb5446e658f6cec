import type { ServerResponse } from 'node:http';
import { ORCA_HEADER } from '../load/orca.js';
import { SHED_HEADER } from '../load/overload.js';
import { processLoad } from '../load/sampler.js';
import type { InboundRequest } from './admission.js';

/**
 * What the HTTP adapters (Express, Fastify) do with an admitted request's load accounting: the
 * response carries the load report the admission step chose (one header set, the value is
 * pre-encoded), and the request counts out of the sampler when its response is over (`close`:
 * after it finished, or when the connection died first). The listener is one shared function, no
 * closure per request.
 *
 * An adapter that listens for `close` itself (to end the request's span) passes `listen: false`,
 * so that the response has one `close` listener, not two: `trackLoad` then returns whether the
 * request was counted in, and the adapter calls `countOut(res)` from its own listener.
 */
export function trackLoad(res: ServerResponse, r: InboundRequest, listen = true): boolean {
  if (r.loadReport !== undefined) res.setHeader(ORCA_HEADER, r.loadReport);
  if (r.load === undefined) return false;
  // The admission step counts in the process' sampler: the listener counts out there.
  r.load = undefined;
  if (!listen) return true;
  res.on('close', countOutListener);
  return false;
}

/** Counts a request `trackLoad` counted in (with `listen: false`) out, when its response is over. */
export function countOut(res: ServerResponse): void {
  processLoad().requestFinished(res.statusCode >= 500);
}

function countOutListener(this: ServerResponse): void {
  countOut(this);
}

/**
 * The headers of an answer the admission step gave instead of the handler (`r.status` ≠ 0):
 * for a shed request `Retry-After`, `x-meshlet-shed` (why) and its load report. Flat
 * `[name, value, …]`; empty for other refusals.
 */
export function refusalHeaders(r: InboundRequest): readonly string[] {
  if (r.shed === undefined) return NONE;
  const out = ['retry-after', r.retryAfter ?? '1', SHED_HEADER, r.shed];
  if (r.loadReport !== undefined) out.push(ORCA_HEADER, r.loadReport);
  return out;
}

const NONE: readonly string[] = Object.freeze([]);
