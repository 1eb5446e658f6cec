/// <reference path="./opossum.d.ts" />
import CircuitBreakerImpl from 'opossum';
import { formatDuration } from '../duration.js';
import { type ConfigIssue, ErrorCodes, MeshError } from '../errors.js';
import type { MeshEvents } from '../events.js';
import { s } from '../schema.js';
import { join } from '../validate.js';

/** The error-rate circuit breaker of a service (opossum semantics, per attempt). */
export interface BreakerPolicy {
  /** Open when the failure percentage in the window exceeds this (opossum: 50). */
  readonly errorThresholdPercentage: number;
  /** Attempts in the window before the breaker may open at all (20). */
  readonly volumeThreshold: number;
  /** The rolling window the error rate is computed over (10s), split into `buckets` (10). */
  readonly windowMs: number;
  readonly buckets: number;
  /** Time open before one probe is let through (5s, Hystrix's sleep window). */
  readonly resetTimeoutMs: number;
}

export const DEFAULT_BREAKER: BreakerPolicy = Object.freeze({
  errorThresholdPercentage: 50,
  volumeThreshold: 20,
  windowMs: 10_000,
  buckets: 10,
  resetTimeoutMs: 5_000,
});

const D = DEFAULT_BREAKER;

/** `circuitBreaker: { ... }`: the error-rate breaker (opossum's semantics, per attempt). */
export const breakerSchema = s.object(
  {
    errorThresholdPercentage: s.number({
      min: 0,
      max: 100,
      default: D.errorThresholdPercentage,
      doc: 'Open when the failure percentage in the window exceeds this.',
    }),
    volumeThreshold: s.integer({
      min: 0,
      default: D.volumeThreshold,
      doc: 'Attempts in the window before the breaker may open at all.',
    }),
    window: s.duration({
      default: formatDuration(D.windowMs),
      doc: 'The rolling window the error rate is computed over (at least 1ms per bucket).',
    }),
    buckets: s.integer({ min: 1, max: 1000, default: D.buckets, doc: 'Buckets the window is split into.' }),
    resetTimeout: s.duration({
      default: formatDuration(D.resetTimeoutMs),
      doc: "Time open before one probe is let through (Hystrix's sleep window).",
    }),
  },
  { name: 'CircuitBreakerInput', doc: 'The error-rate circuit breaker; `false` turns it off.' },
);

/** Parses `circuitBreaker: { ... } | false` on top of `base`; `false` turns the breaker off. */
export function parseBreakerPolicy(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
  base: BreakerPolicy | undefined,
): BreakerPolicy | undefined {
  if (raw === false) return undefined;
  const from = base ?? DEFAULT_BREAKER;
  if (raw === true) return from;
  const o = breakerSchema.given(raw, path, issues);
  if (!o) return from;
  const windowMs = o.window ?? from.windowMs;
  const buckets = o.buckets ?? from.buckets;
  if (windowMs < buckets)
    issues.push({ path: join(path, 'window'), message: 'must be at least 1ms per bucket' });
  return Object.freeze({
    errorThresholdPercentage: o.errorThresholdPercentage ?? from.errorThresholdPercentage,
    volumeThreshold: o.volumeThreshold ?? from.volumeThreshold,
    windowMs,
    buckets,
    resetTimeoutMs: o.resetTimeout ?? from.resetTimeoutMs,
  });
}

export type BreakerState = 'closed' | 'open' | 'half_open';

/** How an attempt ended, as far as the breaker cares. */
export type BreakerVerdict = 'success' | 'failure' | 'ignore';

const FAILURE = Object.freeze(new Error('meshlet: attempt failed'));

/**
 * What the call pipeline holds for one attempt through the breaker (`CircuitBreaker.acquire`): a
 * `BreakerPermit`, or — while the breaker is closed — the breaker itself, settled with its own
 * `done()` (nothing is made per attempt). The holder settles it exactly once.
 */
export interface AttemptPermit {
  done(verdict: BreakerVerdict): void;
}
const noop = (): void => {};

/**
 * A ticket for one attempt through the breaker. Settle it exactly once with `done()` (further
 * calls are ignored).
 */
export class BreakerPermit {
  readonly #breaker: CircuitBreaker;
  #resolve: ((v: undefined) => void) | undefined;
  #reject: ((e: Error) => void) | undefined;
  /**
   * True for a permit taken while the breaker was closed (the fast path): it is counted directly
   * into opossum's rolling window, without an opossum call or a Promise.
   */
  #fast = false;
  /** True when this permit is the single probe a half-open breaker let through. */
  probe = false;

  constructor(breaker: CircuitBreaker, fast = false) {
    this.#breaker = breaker;
    this.#fast = fast;
  }

  /** Called synchronously by opossum when it admits the call. */
  bind(resolve: (v: undefined) => void, reject: (e: Error) => void): void {
    this.#resolve = resolve;
    this.#reject = reject;
  }

  get admitted(): boolean {
    return this.#fast || this.#resolve !== undefined;
  }

  /**
   * Settles the permit. `failure` counts against the error rate (a half-open probe that fails
   * re-opens the breaker); `success` counts for it (a probe that succeeds closes it); `ignore` is
   * for outcomes that say nothing about the upstream (the caller cancelled, a hedge lost): it counts
   * as neither, except that an ignored probe re-opens the breaker so that exactly one new probe
   * follows after the reset timeout, never a flood.
   */
  done(verdict: BreakerVerdict): void {
    if (this.#fast) {
      this.#fast = false;
      this.#breaker.settleFast(verdict);
      return;
    }
    const resolve = this.#resolve;
    const reject = this.#reject;
    if (resolve === undefined || reject === undefined) return;
    this.#resolve = undefined;
    this.#reject = undefined;
    if (verdict === 'failure') {
      reject(FAILURE);
      return;
    }
    if (verdict === 'ignore' && this.probe) this.#breaker.reopen();
    resolve(undefined);
  }
}

function admit(permit: BreakerPermit): Promise<undefined> {
  return new Promise<undefined>((resolve, reject) => permit.bind(resolve, reject));
}

/**
 * The circuit breaker of one service, on opossum: a rolling error-rate window with a volume
 * threshold; when open, calls fail fast with `MESHLET_ERR_CIRCUIT_OPEN`; after the reset timeout
 * it turns half-open and lets exactly ONE attempt through (opossum 9 does this by clearing its
 * pending-close flag on the first call; meshlet checks it again before admitting, so the guarantee
 * holds even if that changes). The probe's outcome closes or re-opens it.
 *
 * Transport-neutral: the fetch pipeline and the gRPC transport take a permit per attempt with
 * `tryAcquire()` and settle it with `permit.done()`.
 *
 * Closed-state fast path: while the breaker is closed (nearly always), a permit is a plain object
 * and its outcome is counted straight into opossum's rolling window (`fires`, `failures`; not
 * `successes`, which the open rule does not read), with opossum's own open rule applied on a failure (volume threshold, error
 * percentage); no opossum call, Promise or timer per attempt. Open and half-open (the reset timer,
 * the single probe, the probe's verdict) stay opossum's state machine, as above. An attempt taken
 * while closed that ends after the breaker left the closed state is counted but decides nothing:
 * only the probe closes or re-opens a half-open breaker.
 */
export class CircuitBreaker implements AttemptPermit {
  readonly service: string;
  readonly policy: BreakerPolicy;
  readonly #cb: CircuitBreakerImpl<[BreakerPermit], undefined>;
  readonly #events: MeshEvents;
  #probeOut = false;
  #state: BreakerState = 'closed';
  /** Calls refused because the breaker was open or its probe was out. */
  rejected = 0;

  constructor(service: string, policy: BreakerPolicy, events: MeshEvents) {
    this.service = service;
    this.policy = policy;
    this.#events = events;
    this.#cb = new CircuitBreakerImpl<[BreakerPermit], undefined>(admit, {
      name: `meshlet:${service}`,
      timeout: false,
      resetTimeout: policy.resetTimeoutMs,
      errorThresholdPercentage: policy.errorThresholdPercentage,
      volumeThreshold: policy.volumeThreshold,
      rollingCountTimeout: policy.windowMs,
      rollingCountBuckets: policy.buckets,
      rollingPercentilesEnabled: false,
      enableSnapshots: false,
    });
    this.#cb.on('open', () => this.#transition('open'));
    this.#cb.on('halfOpen', () => this.#transition('half_open'));
    this.#cb.on('close', () => this.#transition('closed'));
  }

  #transition(state: BreakerState): void {
    if (state === this.#state) return;
    this.#state = state;
    this.#probeOut = false;
    this.#events.emit('breaker', { service: this.service, state });
  }

  get state(): BreakerState {
    return this.#state;
  }

  /** Takes a permit for one attempt, or returns undefined when the call must fail fast. */
  tryAcquire(): BreakerPermit | undefined {
    const p = this.acquire();
    return p === this ? new BreakerPermit(this, true) : (p as BreakerPermit | undefined);
  }

  /**
   * `tryAcquire` for the call pipeline: while the breaker is closed the permit is the breaker
   * itself (settled once by the holder with `done()`, which counts it as a closed-state permit
   * does) — one object less per attempt on the path nearly every attempt takes.
   */
  acquire(): AttemptPermit | undefined {
    const state = this.#state;
    if (state === 'open' || (state === 'half_open' && this.#probeOut)) {
      this.rejected++;
      return undefined;
    }
    if (state === 'closed' && this.#cb.closed) {
      this.#cb.status.increment('fires');
      return this;
    }
    const permit = new BreakerPermit(this);
    this.#cb.fire(permit).catch(noop);
    if (!permit.admitted) {
      this.rejected++;
      return undefined;
    }
    if (state === 'half_open') {
      permit.probe = true;
      this.#probeOut = true;
    }
    return permit;
  }

  /** The error a refused call fails with. */
  openError(endpoint?: string): MeshError {
    return new MeshError(
      ErrorCodes.CIRCUIT_OPEN,
      `the circuit breaker of service "${this.service}" is ${this.#state === 'open' ? 'open' : 'half-open (probing)'}`,
      { service: this.service, endpoint, state: this.#state },
    );
  }

  /** Settles a closed-state permit that is the breaker itself (`acquire`): see `settleFast`. */
  done(verdict: BreakerVerdict): void {
    this.settleFast(verdict);
  }

  /** Counts the outcome of a closed-state (fast path) permit; see the class comment. */
  settleFast(verdict: BreakerVerdict): void {
    const cb = this.#cb;
    const status = cb.status;
    // A success (or an ignored outcome) changes nothing the open rule reads (failures / fires):
    // it is not counted, which spares opossum's per-success push into the bucket's latency list
    // (unused: rolling percentiles are off) — an array growing by one per request per bucket.
    if (verdict !== 'failure') return;
    status.increment('failures', 0);
    // opossum's rule for a failure while closed (its `fail()`): open once the window holds at
    // least `volumeThreshold` attempts and the failure percentage exceeds the threshold.
    if (this.#state !== 'closed' || !cb.closed || cb.warmUp) return;
    const stats = cb.stats;
    if (stats.fires < cb.volumeThreshold) return;
    if ((stats.failures / stats.fires) * 100 > this.policy.errorThresholdPercentage) cb.open();
  }

  /** Re-opens after an inconclusive probe; the reset timer starts again. */
  reopen(): void {
    this.#cb.open();
  }

  stats(): { state: BreakerState; fires: number; failures: number; rejected: number } {
    const s = this.#cb.stats;
    return { state: this.#state, fires: s.fires, failures: s.failures, rejected: this.rejected };
  }

  close(): void {
    this.#cb.shutdown();
  }
}
