import type { RetryBudgetPolicy, RetryPolicy } from './config.js';

/** RFC 9110 idempotent methods: GET, HEAD, OPTIONS, TRACE, PUT, DELETE (any case). */
export function isIdempotentMethod(method: string): boolean {
  switch (method) {
    case 'GET':
    case 'HEAD':
    case 'PUT':
    case 'DELETE':
    case 'OPTIONS':
    case 'TRACE':
      return true;
    case 'POST':
    case 'PATCH':
      return false;
    default: {
      const m = method.toUpperCase();
      return m !== method && isIdempotentMethod(m);
    }
  }
}

const BUCKETS = 10;

/**
 * A retry budget in the manner of Finagle and Linkerd: over a sliding window, retries may number at
 * most `max(minPerSecond * windowSeconds, percent% of requests)`. This bounds retry amplification
 * during an outage to a fixed fraction of real traffic, whatever the per-request retry count.
 *
 * The window is split into 10 buckets; counting costs an index computation and two increments.
 */
export class RetryBudget {
  readonly #policy: RetryBudgetPolicy;
  readonly #bucketMs: number;
  readonly #requests = new Float64Array(BUCKETS);
  readonly #retries = new Float64Array(BUCKETS);
  #epoch = 0;
  #requestSum = 0;
  #retrySum = 0;
  /** Retries refused by this budget since creation. */
  exhausted = 0;

  constructor(policy: RetryBudgetPolicy) {
    this.#policy = policy;
    this.#bucketMs = policy.windowMs / BUCKETS;
  }

  #advance(now: number): number {
    const epoch = Math.floor(now / this.#bucketMs);
    const gap = epoch - this.#epoch;
    if (gap > 0) {
      const clear = Math.min(gap, BUCKETS);
      for (let k = 1; k <= clear; k++) {
        const i = (this.#epoch + k) % BUCKETS;
        this.#requestSum -= this.#requests[i] as number;
        this.#retrySum -= this.#retries[i] as number;
        this.#requests[i] = 0;
        this.#retries[i] = 0;
      }
      this.#epoch = epoch;
    }
    return epoch % BUCKETS;
  }

  /** Counts one logical request (a deposit). */
  recordRequest(now: number): void {
    const i = this.#advance(now);
    this.#requests[i] = (this.#requests[i] as number) + 1;
    this.#requestSum++;
  }

  /** Takes one retry from the budget; false (and counted as exhausted) when none is left. */
  tryRetry(now: number): boolean {
    const i = this.#advance(now);
    const p = this.#policy;
    const allowed = Math.max((p.minPerSecond * p.windowMs) / 1000, (p.percent / 100) * this.#requestSum);
    if (this.#retrySum + 1 > allowed) {
      this.exhausted++;
      return false;
    }
    this.#retries[i] = (this.#retries[i] as number) + 1;
    this.#retrySum++;
    return true;
  }

  /** Requests and retries counted in the current window. */
  stats(now: number): { requests: number; retries: number; exhausted: number } {
    this.#advance(now);
    return { requests: this.#requestSum, retries: this.#retrySum, exhausted: this.exhausted };
  }
}

/** Exponential backoff with full jitter: uniform in [0, min(max, base * 2^retryIndex)). */
export function backoffDelay(
  policy: RetryPolicy,
  retryIndex: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(policy.backoffMaxMs, policy.backoffBaseMs * 2 ** retryIndex);
  return random() * ceiling;
}

/**
 * Parses a `Retry-After` header (delay-seconds or an HTTP date) into milliseconds from `now`
 * (epoch ms; default: the wall clock, read only for a date). Returns undefined for anything else.
 * Every response goes through it: with no header it returns at once (a default `now = Date.now()`
 * read the wall clock on every call: a runtime call and a heap number, ~220 instructions).
 */
export function parseRetryAfter(value: string | undefined, now?: number): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const date = Date.parse(v);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - (now ?? Date.now()));
}
