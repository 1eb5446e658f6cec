/** The configuration and per-endpoint state of the adaptive concurrency limiter (see concurrency.ts). */
export interface AdaptiveConcurrencyConfig {
  /** Length of a sampling window (Envoy's `concurrency_update_interval`), ms. Default 100. */
  readonly sampleWindowMs: number;
  /** Percentile of a window's latencies taken as sampleRTT, and of the minRTT samples. Default 50. */
  readonly percentile: number;
  /** The floor of the limit (Envoy's `min_concurrency_limit`). Default 3. */
  readonly minLimit: number;
  /** The ceiling of the limit (Envoy's `max_concurrency_limit`). Default 1000. */
  readonly maxLimit: number;
  /**
   * How long a call may wait, in all, for an endpoint under its limit when every endpoint is at
   * its limit (within the call's deadline), ms; then it fails with `MESHLET_ERR_OVERLOADED`.
   * 0: fail at once. Default 50.
   */
  readonly maxWaitMs: number;
  readonly minRtt: {
    /** Time between minRTT measurements, ms. Default 60 000. */
    readonly intervalMs: number;
    /** Random extra delay of each measurement, in percent of the interval. Default 15. */
    readonly jitterPercent: number;
    /** Calls sampled per measurement. Default 50. */
    readonly requests: number;
    /** Latency allowed above minRTT before the gradient drops below 1, in percent. Default 25. */
    readonly bufferPercent: number;
    /** The limit while measuring (Envoy's `min_concurrency`), or 'live' (no pinning). Default 3. */
    readonly concurrency: number | 'live';
    /** A fixed minRTT in ms instead of measuring it (Envoy's `fixed_value`). Default: measured. */
    readonly fixedMs: number | undefined;
  };
}

export const DEFAULT_ADAPTIVE_CONCURRENCY: AdaptiveConcurrencyConfig = Object.freeze({
  sampleWindowMs: 100,
  percentile: 50,
  // Envoy's filter floors the server's total at 3; on the client the floor is per client, and N
  // clients multiply it (8 clients × 3 kept 24 requests queued at a 20 ms-per-request endpoint).
  minLimit: 1,
  maxLimit: 1000,
  maxWaitMs: 50,
  minRtt: Object.freeze({
    intervalMs: 60_000,
    jitterPercent: 15,
    requests: 50,
    bufferPercent: 25,
    concurrency: 1,
    fixedMs: undefined,
  }),
});

/** At most this many latencies are kept per window (reservoir sampling beyond it). */
const MAX_SAMPLES = 512;
/** Windows at the floor that trigger a new minRTT measurement (Envoy: 5). */
export const FLOOR_WINDOWS = 5;

export function percentileOf(samples: Float64Array, count: number, p: number): number {
  const sorted = samples.subarray(0, count).sort();
  const idx = Math.min(count - 1, Math.max(0, Math.ceil((p / 100) * count) - 1));
  return sorted[idx] as number;
}

/** One endpoint's limiter state (on `EndpointState.concurrency`). Read-only outside the controller. */
export class EndpointConcurrency {
  /** Attempts admitted and not yet released. */
  inFlight = 0;
  /** The current limit on `inFlight`. */
  limit: number;
  /** True while minRTT is being measured. */
  measuring: boolean;
  /** The latest minRTT, ms (NaN until measured). */
  minRttMs = Number.NaN;
  /** The latest window's sampleRTT, ms (NaN until a window closed). */
  sampleRttMs = Number.NaN;
  /** The latest gradient. */
  gradient = 1;
  /** Attempts refused by `tryAcquire` over the endpoint's life. */
  refused = 0;
  /** Completed minRTT measurements. */
  measurements = 0;
  /** Latency samples dropped because half or more of them was the client's own event-loop stall. */
  discarded = 0;

  /** @internal The limit to return to after a pinned measurement. */
  deferredLimit: number;
  /** @internal Latency samples of the current window or measurement. */
  samples = new Float64Array(64);
  /** @internal Samples kept, and seen (for reservoir sampling), in the current window or measurement. */
  count = 0;
  seen = 0;
  /** @internal The most in flight during the current window. */
  windowPeak = 0;
  /** @internal End of the current window; start of the next measurement. */
  windowEnd: number;
  nextMeasurement = Number.POSITIVE_INFINITY;
  /** @internal Consecutive windows that ended with the limit at its floor. */
  atFloor = 0;

  constructor(config: AdaptiveConcurrencyConfig, now: number) {
    const fixed = config.minRtt.fixedMs;
    this.measuring = fixed === undefined;
    if (fixed !== undefined) this.minRttMs = fixed;
    this.deferredLimit = config.minLimit;
    const pinned = config.minRtt.concurrency;
    this.limit = this.measuring && pinned !== 'live' ? pinned : config.minLimit;
    this.windowEnd = now + config.sampleWindowMs;
  }

  /** @internal */
  addSample(rttMs: number, random: () => number): void {
    const i = this.seen++;
    if (this.count < this.samples.length) {
      this.samples[this.count++] = rttMs;
    } else if (this.count < MAX_SAMPLES) {
      const grown = new Float64Array(Math.min(MAX_SAMPLES, this.samples.length * 2));
      grown.set(this.samples);
      this.samples = grown;
      this.samples[this.count++] = rttMs;
    } else {
      const j = Math.floor(random() * (i + 1));
      if (j < MAX_SAMPLES) this.samples[j] = rttMs;
    }
  }

  /** @internal */
  resetSamples(): void {
    this.count = 0;
    this.seen = 0;
  }
}
