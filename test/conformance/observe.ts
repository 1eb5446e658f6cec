import type { Metadata } from '@grpc/grpc-js';

/** Metadata as plain data: key → values, binary (`-bin`) values as `hex:…`. */
export type MetadataRecord = Record<string, string[]>;

export function metadataRecord(md: Metadata | undefined | null): MetadataRecord | undefined {
  if (md === undefined || md === null) return undefined;
  const out: MetadataRecord = {};
  const map = md.getMap();
  for (const key of Object.keys(map).sort()) {
    // The HTTP `date` header differs from second to second; that it is there is what counts.
    out[key] =
      key === 'date'
        ? ['<date>']
        : md.get(key).map((v) => (typeof v === 'string' ? v : `hex:${v.toString('hex')}`));
  }
  return out;
}

/**
 * Metadata keys a mesh adds to calls on purpose (documented: trace context from the call hook,
 * docs/grpc.md "Telemetry"); they are left out when what the server received is compared.
 */
export const TELEMETRY_KEYS: ReadonlySet<string> = new Set([
  'traceparent',
  'tracestate',
  'baggage',
  'b3',
  'x-b3-traceid',
  'x-b3-spanid',
  'x-b3-parentspanid',
  'x-b3-sampled',
  'x-b3-flags',
]);

export function withoutKeys(md: MetadataRecord | undefined, keys: ReadonlySet<string>): MetadataRecord {
  const out: MetadataRecord = {};
  for (const [k, v] of Object.entries(md ?? {})) if (!keys.has(k)) out[k] = v;
  return out;
}

/**
 * grpc-js puts timings into some status details ("Deadline exceeded after 0.012s,LB pick:
 * 0.001s,remote_addr=127.0.0.1:4711"); they differ from run to run, so durations and port
 * numbers are masked before two runs' details are compared.
 */
export function stableDetails(details: string): string {
  // A deadline is enforced by two timers, the client's ("Deadline exceeded after 0.252s,name
  // resolution: 0.001s,LB pick: 0.002s,remote_addr=…", listing the phases that took measurable
  // time) and the server's ("Deadline exceeded", with the server's trailers); which fires first
  // is a race in every client.
  if (details === 'Deadline exceeded' || details.startsWith('Deadline exceeded after ')) {
    return 'Deadline exceeded (client or server timer)';
  }
  return details.replace(/\d+(\.\d+)?s\b/g, 'Ns').replace(/:\d{2,5}\b/g, ':PORT');
}

/** A deferred promise. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Resolves with `value` after `ms`, with an unref'd timer; `cancel()` clears it. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
