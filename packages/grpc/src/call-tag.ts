import type { MetadataOptions } from '@grpc/grpc-js';
import type { EndpointState } from '@meshlet/core';

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

  constructor(base: MetadataOptions) {
    if (base.idempotentRequest !== undefined) this.idempotentRequest = base.idempotentRequest;
    if (base.waitForReady !== undefined) this.waitForReady = base.waitForReady;
    if (base.cacheableRequest !== undefined) this.cacheableRequest = base.cacheableRequest;
    if (base.corked !== undefined) this.corked = base.corked;
  }
}
