import type { MetadataOptions } from '@grpc/grpc-js';
import type { EndpointState, RouteTarget } from '@meshlet/core';

/**
 * Per-call state of a plain grpc-js call on a `mesh:` channel, shared between the routing config
 * selector and meshlet's grpc-js picker. It rides on the call's `Metadata` options object (which
 * grpc-js carries by reference through every clone of the metadata and never puts on the wire), so
 * no string-keyed header is needed to tell the picker where a call was routed, which attempt of a
 * grpc-js retry this is and which endpoints the earlier attempts used. (A mesh call rides on its
 * metadata itself: it is its own options object.)
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
