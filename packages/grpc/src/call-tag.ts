import type { MetadataOptions } from '@grpc/grpc-js';
import type { EndpointState, RouteTarget } from '@meshlet/core';

/**
 * Per-call state shared between meshlet's client interceptor and its grpc-js picker. It rides on
 * the call's `Metadata` options object (which grpc-js carries by reference through every clone of
 * the metadata and never puts on the wire), so no string-keyed header is needed to tell the picker
 * which attempt this is and which endpoint the previous attempt used.
 */
export class CallTag implements MetadataOptions {
  idempotentRequest?: boolean;
  waitForReady?: boolean;
  cacheableRequest?: boolean;
  corked?: boolean;
  /** 0-based attempt number. */
  attempt = 0;
  /** The endpoint the latest attempt was sent to (set by the picker when the attempt starts). */
  endpoint: EndpointState | undefined = undefined;
  /**
   * True when a `MeshCall` (a mesh client's call) owns this call: the picker then records the
   * attempt's start in `pending`/`startedAt` and the call ends it when the attempt's status arrives,
   * so that a pick allocates nothing.
   */
  managed = false;
  /** The endpoint of the attempt in flight whose end is not recorded yet (managed calls). */
  pending: EndpointState | undefined = undefined;
  /** `ServiceRuntime.startAttempt()`'s start time of `pending`. */
  startedAt = 0;
  /** Where a router (an xDS listener) sent this call: the picker balances over its service. */
  target: RouteTarget | undefined = undefined;
  /** The endpoints of the earlier attempts (created at the first retry). */
  #tried: EndpointState[] | undefined = undefined;
  /** The attempt whose earlier endpoints `#tried` holds. */
  #triedFor = 0;

  /**
   * What the pick of the current attempt must avoid: every endpoint an earlier attempt of this
   * call went to (a retry never goes back to one while another is usable). Nothing to avoid for a
   * first attempt; no allocation until the first retry.
   */
  avoid(): readonly EndpointState[] | undefined {
    const attempt = this.attempt;
    if (attempt === 0) return undefined;
    if (this.#triedFor !== attempt) {
      // `endpoint` is still the previous attempt's: this attempt has not been picked yet.
      this.#triedFor = attempt;
      const ep = this.endpoint;
      if (ep !== undefined) {
        if (this.#tried === undefined) this.#tried = [ep];
        else if (!this.#tried.includes(ep)) this.#tried.push(ep);
      }
    }
    return this.#tried;
  }

  constructor(base: MetadataOptions) {
    if (base.idempotentRequest !== undefined) this.idempotentRequest = base.idempotentRequest;
    if (base.waitForReady !== undefined) this.waitForReady = base.waitForReady;
    if (base.cacheableRequest !== undefined) this.cacheableRequest = base.cacheableRequest;
    if (base.corked !== undefined) this.corked = base.corked;
  }
}
