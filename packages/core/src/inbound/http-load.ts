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
 */
export function trackLoad(res: ServerResponse, r: InboundRequest): void {
  if (r.loadReport !== undefined) res.setHeader(ORCA_HEADER, r.loadReport);
  if (r.load === undefined) return;
  // The admission step counts in the process' sampler: the listener counts out there.
  r.load = undefined;
  res.on('close', countOut);
}

function countOut(this: ServerResponse): void {
  processLoad().requestFinished(this.statusCode >= 500);
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
