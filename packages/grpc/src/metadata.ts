import { type Metadata, status } from '@grpc/grpc-js';

/** The first string value of a metadata key (`-bin` keys and absent keys: undefined). */
export function metadataHeader(metadata: Metadata, name: string): string | undefined {
  if (name.endsWith('-bin')) return undefined;
  const v = metadata.get(name);
  if (v.length === 0) return undefined;
  const first = v[0];
  return typeof first === 'string' ? first : undefined;
}

/**
 * A read-only view of call metadata as headers (lower-case names → first value), so that hash
 * policies (`ring_hash` on a header) see gRPC metadata. One view is re-pointed per use (nothing is
 * allocated per call); read it synchronously.
 */
export class MetadataHeaders {
  metadata: Metadata | undefined;
  readonly view: Readonly<Record<string, string | string[] | undefined>>;
  constructor() {
    const self = this;
    this.view = new Proxy(Object.create(null) as Record<string, string | undefined>, {
      get(_t, name) {
        if (typeof name !== 'string' || !self.metadata) return undefined;
        return metadataHeader(self.metadata, name);
      },
      has(_t, name) {
        return typeof name === 'string' && self.metadata !== undefined && self.metadata.get(name).length > 0;
      },
      ownKeys() {
        return self.metadata ? Object.keys(self.metadata.getMap()) : [];
      },
      getOwnPropertyDescriptor(_t, name) {
        if (typeof name !== 'string' || !self.metadata) return undefined;
        const v = self.metadata.get(name);
        if (v.length === 0) return undefined;
        return { value: typeof v[0] === 'string' ? v[0] : undefined, enumerable: true, configurable: true };
      },
    });
  }
}

/**
 * The gRPC status of an HTTP status (fault injection aborts, as the gRPC HTTP mapping defines it):
 * 400 INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504
 * UNAVAILABLE, anything else UNKNOWN.
 */
export function grpcStatusOfHttp(httpStatus: number): status {
  switch (httpStatus) {
    case 400:
      return status.INTERNAL;
    case 401:
      return status.UNAUTHENTICATED;
    case 403:
      return status.PERMISSION_DENIED;
    case 404:
      return status.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return status.UNAVAILABLE;
    default:
      return status.UNKNOWN;
  }
}

/**
 * A `grpc-timeout` value for `ms` milliseconds (the gRPC HTTP/2 protocol: at most 8 digits and a
 * unit; rounded up, as grpc-js rounds).
 */
export function grpcTimeout(ms: number): string {
  const m = Math.max(0, Math.ceil(ms));
  if (m < 1e8) return `${m}m`;
  const s = Math.ceil(m / 1000);
  if (s < 1e8) return `${s}S`;
  return `${Math.min(99_999_999, Math.ceil(s / 3600))}H`;
}
