import { formatDuration } from '../duration.js';
import type { EndpointState } from '../endpoint-state.js';
import type { ConfigIssue } from '../errors.js';
import type { Outcome } from '../events.js';
import { s } from '../schema.js';
import { join } from '../validate.js';
import {
  type AdaptiveConcurrencyConfig,
  DEFAULT_ADAPTIVE_CONCURRENCY,
  EndpointConcurrency,
  FLOOR_WINDOWS,
  percentileOf,
} from './concurrency-state.js';
import type { LocalStalls } from './overload.js';

const D = DEFAULT_ADAPTIVE_CONCURRENCY;

/** The `minRtt` options (Envoy's `min_rtt_calc_params`). */
const minRttSchema = s.object(
  {
    interval: s.duration({
      min: 1000,
      default: formatDuration(D.minRtt.intervalMs),
      doc: 'Time between minRTT measurements.',
    }),
    jitter: s.number({
      min: 0,
      max: 100,
      default: D.minRtt.jitterPercent,
      doc: 'Random extra delay of each measurement, in percent of the interval.',
    }),
    requests: s.integer({
      min: 1,
      max: 10_000,
      default: D.minRtt.requests,
      doc: 'Calls sampled per measurement.',
    }),
    buffer: s.number({
      min: 0,
      max: 1000,
      default: D.minRtt.bufferPercent,
      doc: 'Latency allowed above minRTT before the limit drops, in percent of minRTT.',
    }),
    concurrency: s.union([s.integer({ min: 1, max: 100_000 }), s.literal('live')], {
      default: D.minRtt.concurrency,
      doc: "The limit while measuring, or 'live' to measure from live traffic without pinning.",
    }),
    fixed: s.duration({
      positive: true,
      defaultText: 'measured',
      doc: 'A fixed minRTT instead of measuring it.',
    }),
  },
  {
    name: 'AdaptiveConcurrencyMinRttInput',
    doc: 'How minRTT, the latency at low concurrency, is measured.',
    defaultText: 'measured at start and every 60s, 50 calls at concurrency 1',
  },
);

/**
 * The `adaptiveConcurrency` options (docs/load-aware.md), for the service section the pipeline
 * integration registers:
 *
 *     adaptiveConcurrency:
 *       sampleWindow: 100ms
 *       percentile: 50
 *       minLimit: 1
 *       maxLimit: 1000
 *       maxWait: 50ms
 *       minRtt: { interval: 60s, jitter: 15, requests: 50, buffer: 25, concurrency: 1, fixed: 20ms }
 */
export const adaptiveConcurrencySchema = s.union(
  [
    s.boolean(),
    s.object(
      {
        sampleWindow: s.duration({
          min: 1,
          default: formatDuration(D.sampleWindowMs),
          doc: "Length of a sampling window (Envoy's concurrency_update_interval).",
        }),
        percentile: s.number({
          min: 0,
          max: 100,
          default: D.percentile,
          doc: "Percentile of a window's latencies taken as sampleRTT, and of the minRTT samples.",
        }),
        minLimit: s.integer({ min: 1, max: 100_000, default: D.minLimit, doc: 'The floor of the limit.' }),
        maxLimit: s.integer({
          min: 1,
          max: 1_000_000,
          default: D.maxLimit,
          doc: 'The ceiling of the limit.',
        }),
        maxWait: s.duration({
          default: formatDuration(D.maxWaitMs),
          doc:
            'How long a call may wait for an endpoint under its limit when every endpoint is at its limit ' +
            "(within the call's deadline); then it fails with MESHLET_ERR_OVERLOADED. 0: at once.",
        }),
        minRtt: minRttSchema,
      },
      { name: 'AdaptiveConcurrencyInput' },
    ),
  ],
  {
    doc: "Adaptive concurrency per endpoint (Envoy's gradient controller); `true` for the defaults.",
    defaultText: 'off',
  },
);

/**
 * Parses an `adaptiveConcurrency` section (`true` for the defaults) with `adaptiveConcurrencySchema`.
 * Pushes issues under `path`; returns the defaults where a value is bad.
 */
export function parseAdaptiveConcurrency(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
): AdaptiveConcurrencyConfig {
  if (raw === true) return D;
  const o = adaptiveConcurrencySchema.parse(raw, path, issues);
  if (o === undefined || typeof o === 'boolean') {
    if (o === false)
      issues.push({ path, message: 'must be true or an object (leave it out to turn it off)' });
    return D;
  }
  const minLimit = o.minLimit ?? D.minLimit;
  const maxLimit = o.maxLimit ?? D.maxLimit;
  if (maxLimit < minLimit)
    issues.push({
      path: join(path, 'maxLimit'),
      message: `must be >= minLimit (${minLimit}), got ${maxLimit}`,
    });
  const m = o.minRtt;
  return Object.freeze({
    sampleWindowMs: o.sampleWindow ?? D.sampleWindowMs,
    percentile: o.percentile ?? D.percentile,
    minLimit,
    maxLimit: Math.max(minLimit, maxLimit),
    maxWaitMs: o.maxWait ?? D.maxWaitMs,
    minRtt:
      m === undefined
        ? D.minRtt
        : Object.freeze({
            intervalMs: m.interval ?? D.minRtt.intervalMs,
            jitterPercent: m.jitter ?? D.minRtt.jitterPercent,
            requests: m.requests ?? D.minRtt.requests,
            bufferPercent: m.buffer ?? D.minRtt.bufferPercent,
            concurrency: m.concurrency ?? D.minRtt.concurrency,
            fixedMs: m.fixed,
          }),
  });
}

/** A call waiting for an endpoint under its limit (the pipeline's `Call`). */
export interface CapacityWaiter {
  /** An attempt ended on the service: the waiter may pick again. */
  capacityFreed(): void;
}

function wake(w: CapacityWaiter): void {
  w.capacityFreed();
}

/** What `release` does with an attempt's latency, by outcome. */
function sampled(outcome: Outcome): boolean {
  return outcome === 'success' || outcome === 'http_error' || outcome === 'timeout';
}

/**
 * Adaptive concurrency for one service's endpoints, on the client: each endpoint gets a limit on
 * attempts in flight that follows its latency, so an endpoint that starts queueing gets fewer
 * concurrent calls before its latency explodes (the pipeline makes excess calls wait briefly or go
 * to another endpoint; pickers skip endpoints that `wouldAdmit` refuses).
 *
 * The controller is Envoy's adaptive-concurrency *gradient controller*, per endpoint:
 *
 * - **minRTT** is measured by pinning the endpoint's limit to `minRtt.concurrency` (3) until
 *   `minRtt.requests` (50) calls have completed and taking their `percentile`; at start, every
 *   `minRtt.interval` (60 s, plus up to `minRtt.jitter` % at random so that clients and endpoints
 *   do not measure in step) and after the limit has sat at its floor for 5 windows.
 * - Every `sampleWindow` (100 ms) the window's latencies give **sampleRTT** (their `percentile`)
 *   and the limit moves by the **gradient**:
 *
 *       gradient = clamp((minRTT × (1 + buffer)) / sampleRTT, 0.5, 2)
 *       limit    = gradient × limit + √(gradient × limit)      (within minLimit..maxLimit)
 *
 *   so it grows while latency stays within the buffer of the unloaded latency and shrinks (by at
 *   most half a window) as queueing shows up in latency.
 * - One addition from Netflix's Gradient2: the limit does not grow in a window whose peak in-flight
 *   count stayed under half the limit (the caller, not the endpoint, limited concurrency), so a
 *   lightly used endpoint does not accumulate a limit of 1000 that would take many windows to
 *   shrink when it turns slow.
 *
 * Why Envoy's design and not Gradient2's long-term average as the baseline: a client-side limiter
 * must also work for an endpoint that is overloaded from the start (the overload benchmark's
 * saturated instance): a baseline learnt from its own latency would learn the overload as normal,
 * while a minimum measured at low concurrency does not. Pinning costs a server-side filter
 * rejected requests; on the client, other endpoints take the excess while one measures.
 * `minRtt.concurrency: 'live'` measures from live traffic without pinning (Envoy's separate
 * `min_concurrency_limit` mode) for single-endpoint services that cannot spare the throughput.
 *
 * Latency samples come from attempts that got an answer or timed out (`success`, `http_error`,
 * `timeout`: a timeout is a lower bound of the latency and a strong overload signal); fast
 * failures (refused, reset, shed with 503) and cancellations say nothing about queueing and are
 * not sampled. Long-lived streams should not be fed to it.
 *
 * **The client's own stalls are not the endpoint's latency.** A latency measured on the client
 * includes the time the client's event loop could not run the callback that reads the answer (a
 * long turn, GC, a process the OS did not schedule). On a busy client that time is the larger part
 * of a sample, and the same in every endpoint's: a limiter that took it for queueing would cut
 * every limit at once while the endpoints are idle. With `stalls` (the process' heartbeat,
 * `EventLoopLag`), `release` asks how long the loop was stalled during the attempt and takes that
 * off the sample; a sample that was half or more local stall says nothing about the endpoint and
 * is dropped (`EndpointConcurrency.discarded`). Subtracting a whole stall makes a sample a lower
 * bound (the answer may have arrived mid-stall), which errs towards keeping the limit.
 *
 * Everything happens in `tryAcquire` / `release` (no timers of its own): a window closes on the
 * first release after its end. The state lives on `EndpointState.concurrency` (created on first use).
 *
 * The per-service controller: `tryAcquire(ep)` before an attempt, `release(ep, rttMs, outcome)`
 * after it, `wouldAdmit(ep)` for a picker that wants to skip saturated endpoints.
 */
export class AdaptiveConcurrency {
  readonly config: AdaptiveConcurrencyConfig;
  readonly #now: () => number;
  readonly #random: () => number;
  /** Calls waiting for capacity, oldest first (`#head` is the first live one). */
  #waiters: (CapacityWaiter | undefined)[] = [];
  #head = 0;
  #waiting = 0;

  readonly #stalls: LocalStalls | undefined;
  /** Releases the stall measurement (started with the first endpoint state). */
  #releaseStalls: (() => void) | undefined;
  #closed = false;

  /**
   * `now` is the clock latencies are measured with; `stalls`, when given, measures the client's
   * own event-loop stalls on the same time scale (see the class comment); `random` for jitter.
   */
  constructor(
    config: AdaptiveConcurrencyConfig,
    now: () => number,
    random: () => number = Math.random,
    stalls?: LocalStalls,
  ) {
    this.config = config;
    this.#now = now;
    this.#random = random;
    this.#stalls = stalls;
  }

  /** The endpoint's limiter state, created on first use. */
  stateOf(ep: EndpointState): EndpointConcurrency {
    let s = ep.concurrency;
    if (s === undefined) {
      s = new EndpointConcurrency(this.config, this.#now());
      ep.concurrency = s;
      if (this.#releaseStalls === undefined && this.#stalls !== undefined && !this.#closed)
        this.#releaseStalls = this.#stalls.acquire();
    }
    return s;
  }

  /** How long the client's own event loop stalled during the last `spanMs` ms (0 without `stalls`). */
  localStallMs(spanMs: number): number {
    return this.#stalls === undefined || this.#releaseStalls === undefined
      ? 0
      : this.#stalls.stalledMs(spanMs);
  }

  /** Stops the stall measurement (the service closed or its policy changed). */
  close(): void {
    this.#closed = true;
    this.#releaseStalls?.();
    this.#releaseStalls = undefined;
  }

  /**
   * The endpoint's share of a latency sample: `rttMs` less the client's own stalls during it, or
   * -1 when half or more of it was the client's (or it was no sample).
   */
  #endpointRtt(s: EndpointConcurrency, rttMs: number, outcome: Outcome): number {
    if (rttMs < 0 || !sampled(outcome)) return -1;
    if (this.#stalls === undefined) return rttMs;
    const stalled = this.#stalls.stalledMs(rttMs);
    if (stalled <= 0) return rttMs;
    if (stalled * 2 >= rttMs) {
      s.discarded++;
      return -1;
    }
    return rttMs - stalled;
  }

  /** True when an attempt on `ep` would be admitted now (two field reads; no state is created). */
  wouldAdmit(ep: EndpointState): boolean {
    const s = ep.concurrency;
    return s === undefined || s.inFlight < s.limit;
  }

  /** Admits an attempt on `ep` (counting it in flight) or refuses it (counted in `refused`). */
  tryAcquire(ep: EndpointState): boolean {
    const s = this.stateOf(ep);
    if (s.inFlight >= s.limit) {
      s.refused++;
      return false;
    }
    if (++s.inFlight > s.windowPeak) s.windowPeak = s.inFlight;
    return true;
  }

  /**
   * Queues a call until an attempt of the service ends (FIFO; the caller bounds the wait with a
   * timer and removes itself with `cancelWait` when it gives up).
   */
  wait(w: CapacityWaiter): void {
    this.#waiters.push(w);
    this.#waiting++;
  }

  /** Removes a waiting call (it timed out or was cancelled). */
  cancelWait(w: CapacityWaiter): void {
    const q = this.#waiters;
    for (let i = this.#head; i < q.length; i++) {
      if (q[i] === w) {
        q[i] = undefined;
        this.#waiting--;
        return;
      }
    }
  }

  /** Calls waiting for capacity now. */
  get waiting(): number {
    return this.#waiting;
  }

  /** Wakes the oldest waiting call, on the next tick (never inside the releasing call's stack). */
  #wakeOne(): void {
    const q = this.#waiters;
    while (this.#head < q.length) {
      const w = q[this.#head];
      q[this.#head++] = undefined;
      if (w === undefined) continue;
      this.#waiting--;
      process.nextTick(wake, w);
      break;
    }
    if (this.#head === q.length || this.#head > 1024) {
      this.#waiters = q.slice(this.#head);
      this.#head = 0;
    }
  }

  /** Ends an admitted attempt: `rttMs` is its latency, `outcome` how it ended. */
  release(ep: EndpointState, rttMs: number, outcome: Outcome): void {
    if (this.#waiting > 0) this.#wakeOne();
    const s = ep.concurrency;
    if (s === undefined) return;
    if (s.inFlight > 0) s.inFlight--;
    const now = this.#now();
    const c = this.config;
    const rtt = this.#endpointRtt(s, rttMs, outcome);
    if (s.measuring) {
      if (rtt >= 0) s.addSample(rtt, this.#random);
      if (s.seen >= c.minRtt.requests) this.#endMeasurement(s, now);
      return;
    }
    if (now >= s.nextMeasurement) {
      this.#startMeasurement(s, now);
      return;
    }
    if (rtt >= 0) s.addSample(rtt, this.#random);
    if (now >= s.windowEnd) this.#closeWindow(s, now);
  }

  #startMeasurement(s: EndpointConcurrency, now: number): void {
    s.measuring = true;
    s.deferredLimit = s.limit;
    const pinned = this.config.minRtt.concurrency;
    if (pinned !== 'live') s.limit = pinned;
    s.resetSamples();
    s.atFloor = 0;
    s.nextMeasurement = Number.POSITIVE_INFINITY;
    s.windowEnd = now + this.config.sampleWindowMs;
  }

  #endMeasurement(s: EndpointConcurrency, now: number): void {
    const c = this.config;
    if (s.count > 0) s.minRttMs = percentileOf(s.samples, s.count, c.percentile);
    s.measurements++;
    s.measuring = false;
    s.limit = Math.min(c.maxLimit, Math.max(c.minLimit, s.deferredLimit));
    s.resetSamples();
    s.windowPeak = s.inFlight;
    s.windowEnd = now + c.sampleWindowMs;
    const jitter = (c.minRtt.intervalMs * c.minRtt.jitterPercent * this.#random()) / 100;
    s.nextMeasurement = now + c.minRtt.intervalMs + jitter;
  }

  #closeWindow(s: EndpointConcurrency, now: number): void {
    const c = this.config;
    if (s.count > 0 && s.minRttMs > 0) {
      const sampleRtt = percentileOf(s.samples, s.count, c.percentile);
      s.sampleRttMs = sampleRtt;
      const target = s.minRttMs * (1 + c.minRtt.bufferPercent / 100);
      const gradient = Math.min(2, Math.max(0.5, target / Math.max(sampleRtt, 1e-6)));
      s.gradient = gradient;
      // Gradient2's guard: no growth while the caller kept well under the limit.
      if (!(gradient >= 1 && s.windowPeak < s.limit / 2)) {
        const scaled = gradient * s.limit;
        s.limit = Math.min(c.maxLimit, Math.max(c.minLimit, Math.floor(scaled + Math.sqrt(scaled))));
      }
      s.atFloor = s.limit === c.minLimit ? s.atFloor + 1 : 0;
    }
    s.resetSamples();
    s.windowPeak = s.inFlight;
    s.windowEnd = now + c.sampleWindowMs;
    // A limit stuck at its floor may come from a stale minRTT (the endpoint's unloaded latency
    // grew): measure it again, as Envoy does after 5 such windows.
    if (s.atFloor >= FLOOR_WINDOWS && c.minRtt.fixedMs === undefined) this.#startMeasurement(s, now);
  }
}
