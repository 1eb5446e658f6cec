import type { ConfigIssue } from '../errors.js';
import { ErrorCodes, MeshError } from '../errors.js';
import { s } from '../schema.js';

/**
 * Envoy-style circuit-breaking thresholds of a service (Envoy's `CircuitBreakers.Thresholds`).
 * Defaults follow Istio, which leaves them all at 2^32-1: the retry budget and the error-rate
 * breaker are what protect by default; set these to cap concurrency.
 */
export interface ThresholdsPolicy {
  /** Connections to each endpoint's pool (Envoy counts per cluster; see docs/resilience.md). */
  readonly maxConnections: number;
  /** Attempts waiting for a connection at once; more fail fast with `MESHLET_ERR_OVERLOADED`. */
  readonly maxPendingRequests: number;
  /** Attempts in flight at once; more fail fast with `MESHLET_ERR_OVERLOADED`. */
  readonly maxRequests: number;
  /** Retries in flight (or in backoff) at once; more are not retried. */
  readonly maxRetries: number;
}

export const UNLIMITED = 4_294_967_295;

export const DEFAULT_THRESHOLDS: ThresholdsPolicy = Object.freeze({
  maxConnections: UNLIMITED,
  maxPendingRequests: UNLIMITED,
  maxRequests: UNLIMITED,
  maxRetries: UNLIMITED,
});

const limit = (doc: string) =>
  s.integer({ min: 1, max: UNLIMITED, defaultText: `${UNLIMITED} (unlimited, as in Istio)`, doc });

/** `thresholds: { ... }`: Envoy's circuit-breaking thresholds (`CircuitBreakers.Thresholds`). */
export const thresholdsSchema = s.object(
  {
    maxConnections: limit("Connections to each endpoint's pool."),
    maxPendingRequests: limit(
      'Attempts waiting for a connection at once; more fail fast (MESHLET_ERR_OVERLOADED).',
    ),
    maxRequests: limit('Attempts in flight at once; more fail fast (MESHLET_ERR_OVERLOADED).'),
    maxRetries: limit('Retries in flight (or in backoff) at once; more are not retried.'),
  },
  { name: 'ThresholdsInput', doc: "Concurrency caps of a service (Envoy's circuit-breaking thresholds)." },
);

export function parseThresholdsPolicy(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
  base: ThresholdsPolicy,
): ThresholdsPolicy {
  const o = thresholdsSchema.given(raw, path, issues);
  if (!o) return base;
  return Object.freeze({
    maxConnections: o.maxConnections ?? base.maxConnections,
    maxPendingRequests: o.maxPendingRequests ?? base.maxPendingRequests,
    maxRequests: o.maxRequests ?? base.maxRequests,
    maxRetries: o.maxRetries ?? base.maxRetries,
  });
}

/** Why a threshold refused an attempt. */
export type Overflow = 'max_requests' | 'max_pending_requests' | 'max_retries';

/**
 * Live counters of one service against its thresholds. Transports call `enter`/`leave` around each
 * attempt, `connected` when the attempt got a connection, and `startRetry`/`endRetry` around each
 * retry. Counting is a few integer operations; nothing allocates unless a threshold overflows.
 */
export class Thresholds {
  readonly service: string;
  policy: ThresholdsPolicy;
  /** Attempts in flight (connected or pending). */
  requests = 0;
  /** Attempts waiting for a connection. */
  pending = 0;
  /** Retries in flight or in backoff. */
  retries = 0;
  /** Refusals per threshold, since creation. */
  overflows = { max_requests: 0, max_pending_requests: 0, max_retries: 0 };

  constructor(service: string, policy: ThresholdsPolicy) {
    this.service = service;
    this.policy = policy;
  }

  /** Admits an attempt (counted as pending until `connected`); returns the overflow otherwise. */
  enter(): Overflow | undefined {
    const p = this.policy;
    if (this.requests >= p.maxRequests) {
      this.overflows.max_requests++;
      return 'max_requests';
    }
    if (this.pending >= p.maxPendingRequests) {
      this.overflows.max_pending_requests++;
      return 'max_pending_requests';
    }
    this.requests++;
    this.pending++;
    return undefined;
  }

  /** The admitted attempt got a connection (it is no longer pending). */
  connected(): void {
    this.pending--;
  }

  /** The admitted attempt ended; `wasPending` when it never got a connection. */
  leave(wasPending: boolean): void {
    this.requests--;
    if (wasPending) this.pending--;
  }

  /** Takes a retry slot; false when `maxRetries` retries are already under way. */
  startRetry(): boolean {
    if (this.retries >= this.policy.maxRetries) {
      this.overflows.max_retries++;
      return false;
    }
    this.retries++;
    return true;
  }

  endRetry(): void {
    this.retries--;
  }

  overloadedError(overflow: Overflow): MeshError {
    const limit =
      overflow === 'max_requests'
        ? this.policy.maxRequests
        : overflow === 'max_pending_requests'
          ? this.policy.maxPendingRequests
          : this.policy.maxRetries;
    return new MeshError(
      ErrorCodes.OVERLOADED,
      `service "${this.service}" reached its ${overflow} threshold (${limit})`,
      { service: this.service, threshold: overflow, limit },
    );
  }

  stats(): { requests: number; pending: number; retries: number; overflows: Record<Overflow, number> } {
    return {
      requests: this.requests,
      pending: this.pending,
      retries: this.retries,
      overflows: { ...this.overflows },
    };
  }
}
