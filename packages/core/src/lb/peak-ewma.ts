import { performance } from 'node:perf_hooks';
import { formatDuration } from '../duration.js';
import { type EndpointState, type PickResult, peakEwmaEstimate } from '../endpoint-state.js';
import { s } from '../schema.js';
import type { LbClock, LoadBalancer, LoadBalancerFactory, Picker } from './types.js';

export interface PeakEwmaConfig {
  /** Time constant of the latency estimate's decay, in ms (Finagle/Linkerd: 10s). */
  readonly decayMs: number;
  /** Latency assumed while no endpoint of a set has been observed, in ms (Linkerd's `default_rtt`: 30ms). */
  readonly defaultRttMs: number;
  /**
   * How much an endpoint's recent failure rate raises its cost: `cost × (1 + failurePenalty ×
   * failRate)` (10: an endpoint failing 10% of its attempts costs twice as much as an equally fast
   * one that does not fail; one failing every attempt, 11 times as much). 0 turns it off.
   */
  readonly failurePenalty: number;
}

/**
 * Power of two choices over the peak-EWMA cost (Finagle's `Balancers.p2cPeakEwma`, Linkerd's
 * balancer): two distinct endpoints are sampled at random and the cheaper one wins, where
 *
 *   cost = latency estimate × (requests in flight + 1) / lbWeight
 *
 * multiplied by `1 + failurePenalty × failRate`, where `failRate` is the endpoint's recent failure
 * rate (gateway errors and local failures, an EWMA over time kept by `ServiceRuntime.endAttempt`):
 * an endpoint that fails fast must not look like a fast endpoint (see docs/load-balancing.md).
 *
 * The estimate (`peakEwmaEstimate`, kept by `ServiceRuntime.endAttempt`) jumps to any latency
 * above it at once (the "peak"); the peak's excess over the endpoint's baseline (an EWMA of its
 * samples, each weighing 1/8), or over the service's recent latency when that is lower, fades out
 * over the service's next `LbClock.span` samples (about four rounds of the endpoint set), so an
 * endpoint that lost comparisons because of one slow answer — and therefore gets no samples to
 * correct it — is back after a few rounds at any request rate, while one whose probes keep coming
 * back more than twice as slow as the service waits twice as long each time and stays avoided. When read,
 * everything also decays towards zero with time constant `decay` (Finagle's decay), so an endpoint
 * avoided for a long time is probed again and recovers as soon as it answers fast. An endpoint never observed is costed at the mean estimate
 * of the observed endpoints of its set (as of the last rebuild), or `defaultRtt` when none has
 * been observed, so a new endpoint is neither flooded (zero cost) nor starved (a guess far above
 * the fleet's real latency); its first response replaces the guess outright.
 */
/**
 * Costs within 10% of each other are a tie, won by the first of the pair (a random one of the
 * two): latency samples are noisy, and at low concurrency (no in-flight difference to balance
 * against) chasing a few percent gives whichever equal endpoint measured luckiest most of the
 * traffic. Real differences — a slower endpoint, a failure penalty, requests in flight — are
 * larger.
 */
const TIE_BAND = 1.1;

class PeakEwmaPicker implements Picker {
  readonly #eps: readonly EndpointState[];
  readonly #clock: LbClock;
  readonly #invDecay: number;
  readonly #penalty: number;
  /** The estimate for endpoints never observed: the mean of the others', else `defaultRtt`. */
  readonly #unobservedRtt: number;
  constructor(eps: readonly EndpointState[], config: PeakEwmaConfig, clock: LbClock) {
    this.#eps = eps;
    this.#clock = clock;
    this.#invDecay = 1 / config.decayMs;
    this.#penalty = config.failurePenalty ?? DEFAULT_PEAK_EWMA.failurePenalty;
    let sum = 0;
    let observed = 0;
    for (let i = 0; i < eps.length; i++) {
      const e = eps[i] as EndpointState;
      if (e.ewmaMs > 0) {
        sum += e.ewmaMs;
        observed++;
      }
    }
    this.#unobservedRtt = observed > 0 ? sum / observed : config.defaultRttMs;
  }

  pick(): PickResult {
    const eps = this.#eps;
    const n = eps.length;
    if (n === 1) return (eps[0] as EndpointState).picked;
    // Two distinct endpoints from one random draw: the integer part picks the first, the
    // fraction the second among the other n - 1.
    const r = Math.random() * n;
    const i = r | 0;
    let j = ((r - i) * (n - 1)) | 0;
    if (j >= i) j++;
    const a = eps[i] as EndpointState;
    const b = eps[j] as EndpointState;
    const p = this.#penalty;
    let ca = ((a.active + 1) * (1 + p * a.failRate)) / a.lbWeight;
    let cb = ((b.active + 1) * (1 + p * b.failRate)) / b.lbWeight;
    const clock = this.#clock;
    const samples = clock.samples ?? 0;
    const span = clock.span ?? 1;
    const recent = clock.recentMs ?? 0;
    const ea = peakEwmaEstimate(a, samples, span, recent);
    const eb = peakEwmaEstimate(b, samples, span, recent);
    if (ea !== 0 && eb !== 0) {
      // Both estimates decay from their own stamps towards zero at the same rate, so "now"
      // cancels out of the comparison: scale a's by the decay between the two stamps.
      ca *= ea;
      cb *= eb;
      const d = a.ewmaStamp - b.ewmaStamp;
      if (d !== 0) ca *= Math.exp(d * this.#invDecay);
    } else {
      // An endpoint never observed takes one probe request at once (cost 0 while it has nothing
      // in flight), so it is never starved, even by strictly sequential traffic; while that probe
      // is out it looks like an average endpoint, so it is not flooded either.
      const t = clock.ms;
      const inv = this.#invDecay;
      ca *= ea === 0 ? (a.active === 0 ? 0 : this.#unobservedRtt) : ea * Math.exp((a.ewmaStamp - t) * inv);
      cb *= eb === 0 ? (b.active === 0 ? 0 : this.#unobservedRtt) : eb * Math.exp((b.ewmaStamp - t) * inv);
    }
    return cb * TIE_BAND < ca ? b.picked : a.picked;
  }
}

export const DEFAULT_PEAK_EWMA: PeakEwmaConfig = Object.freeze({
  decayMs: 10_000,
  defaultRttMs: 30,
  failurePenalty: 10,
});

const peakEwmaOptions = s.object(
  {
    decay: s.duration({
      positive: true,
      default: formatDuration(DEFAULT_PEAK_EWMA.decayMs),
      doc: 'Decay window of the latency estimate (Finagle: 10s).',
    }),
    defaultRtt: s.duration({
      positive: true,
      default: formatDuration(DEFAULT_PEAK_EWMA.defaultRttMs),
      doc: 'The latency assumed for an endpoint with no measurement yet.',
    }),
    failurePenalty: s.number({
      min: 0,
      max: 1000,
      default: DEFAULT_PEAK_EWMA.failurePenalty,
      doc:
        "How much an endpoint's recent failure rate raises its cost: × (1 + failurePenalty × rate); " +
        '0 turns it off (docs/load-balancing.md).',
    }),
  },
  {
    name: 'PeakEwmaOptions',
    doc: "Latency-aware P2C (Linkerd's and Finagle's default): the cheaper of two by peak EWMA × load.",
  },
);

export const peakEwma: LoadBalancerFactory<PeakEwmaConfig> = {
  name: 'peak_ewma',
  schema: peakEwmaOptions,
  parseConfig(raw, path, issues) {
    const o = peakEwmaOptions.parse(raw, path, issues);
    return Object.freeze({
      decayMs: o?.decay ?? DEFAULT_PEAK_EWMA.decayMs,
      defaultRttMs: o?.defaultRtt ?? DEFAULT_PEAK_EWMA.defaultRttMs,
      failurePenalty: o?.failurePenalty ?? DEFAULT_PEAK_EWMA.failurePenalty,
    });
  },
  create(config, ctx): LoadBalancer {
    // A policy built without parseConfig (e.g. `{ policy: 'peak_ewma', config: undefined }`) gets the defaults.
    config ??= DEFAULT_PEAK_EWMA;
    const clock: LbClock = ctx?.clock ?? {
      get ms() {
        return performance.now();
      },
    };
    return {
      ewmaDecayMs: config.decayMs,
      liveWeights: true, // the cost divides by lbWeight at pick time
      update: (eps) => new PeakEwmaPicker(eps, config, clock),
    };
  },
};
