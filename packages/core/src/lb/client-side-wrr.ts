import { performance } from 'node:perf_hooks';
import { formatDuration } from '../duration.js';
import type { EndpointState, PickResult } from '../endpoint-state.js';
import type { WeightRules } from '../load/endpoint-load.js';
import { s } from '../schema.js';
import { DEFAULT_PEAK_EWMA, peakEwma } from './peak-ewma.js';
import type { LoadBalancer, LoadBalancerFactory, PickContext, Picker } from './types.js';

/** Options of `client_side_weighted_round_robin` (gRFC A58's `WeightedRoundRobinLbConfig`). */
export interface ClientSideWrrConfig extends WeightRules {
  /** Use out-of-band reports (ORCA stream) instead of per-call ones. Default false. */
  readonly enableOobLoadReport: boolean;
  /** Interval to request on the out-of-band stream, ms. Default 10 000. */
  readonly oobReportingPeriodMs: number;
  /** An endpoint's reports must arrive for this long before its weight is used, ms. Default 10 000. */
  readonly blackoutPeriodMs: number;
  /** A weight not refreshed by a report for this long is dropped, ms. Default 180 000. */
  readonly weightExpirationPeriodMs: number;
  /** How often a picker rebuilds its schedule from the latest weights, ms (at least 100). Default 1000. */
  readonly weightUpdatePeriodMs: number;
  /** Multiplier of the error rate (eps / qps) added to utilization. Default 1. */
  readonly errorUtilizationPenalty: number;
}

export const DEFAULT_CLIENT_SIDE_WRR: ClientSideWrrConfig = Object.freeze({
  enableOobLoadReport: false,
  oobReportingPeriodMs: 10_000,
  blackoutPeriodMs: 10_000,
  weightExpirationPeriodMs: 180_000,
  weightUpdatePeriodMs: 1_000,
  errorUtilizationPenalty: 1,
});

/** The scheduler's fixed-point scale: the largest weight becomes this (gRPC's static stride scheduler). */
const MAX_WEIGHT = 65535;
const HALF_OFFSET = 32767;
/** Weights are capped at this many times the mean (bounds the expected picks per pick at 10). */
const MAX_RATIO = 10;
/** ...and floored at this fraction of the mean (a near-zero weight still gets an occasional pick). */
const MIN_RATIO = 0.01;

/**
 * gRFC A58's weighted round robin over the weights endpoints' ORCA reports give
 * (`EndpointState.load`, written by `ServiceRuntime.reportLoad`):
 *
 *     weight = qps / (utilization + eps / qps × errorUtilizationPenalty)
 *
 * with `utilization` the report's `application_utilization`, else its `cpu_utilization`, and A58's
 * blackout and expiration periods. Every `weightUpdatePeriod` the picker rebuilds a *static stride*
 * schedule (the scheduler of gRPC C++ and Java): weights are scaled so the largest is 65535, capped
 * at 10× and floored at 1% of the mean, and endpoints without a usable weight get the mean. A pick
 * walks the endpoints in turn and takes endpoint `i` on round `g` when
 * `(w_i × g + i × 32767) mod 65535 ≥ 65535 − w_i`: each endpoint gets `w_i / Σw` of the picks,
 * spread over rounds, in O(1) expected steps (the max/mean ratio, at most 10) and no allocation.
 * The per-round remainders are kept incrementally, so a step is an add and a compare.
 *
 * **Fallback when fewer than two endpoints of the set have a usable weight** (nothing reports yet,
 * the blackout period, a fleet that does not report, weights expired): A58 falls back to round
 * robin; meshlet falls back to its **peak-EWMA** picker (P2C over latency × in-flight, exactly the
 * `peak_ewma` policy), which is the mesh's default and what a service that never reports would
 * get anyway. Round robin is the worst choice there: it keeps sending a slow endpoint its full
 * share during the 10 s blackout, and forever for backends that do not report (non-meshlet HTTP
 * servers). With two or more weights A58 applies unchanged: endpoints that report nothing get the
 * mean weight (they are neither starved nor flooded while their first reports arrive).
 *
 * Weights refresh lazily: the first pick after `weightUpdatePeriod` has passed (on the runtime's
 * clock, `LbContext.clock`, no clock call per pick) rebuilds the schedule, O(n) once a period.
 * Endpoint weights from discovery and slow start are not applied to ORCA weights (as in gRPC and
 * Envoy, the reported load replaces them); the peak-EWMA fallback honours them as `peak_ewma` does.
 */
class ClientSideWrrPicker implements Picker {
  readonly #eps: readonly EndpointState[];
  readonly #config: ClientSideWrrConfig;
  readonly #clock: { readonly ms: number };
  readonly #makeFallback: () => Picker;
  #fallback: Picker | undefined;
  /** Scaled weights (1..65535) and each endpoint's remainder for the current round. */
  readonly #weights: Int32Array;
  readonly #rest: Int32Array;
  #index: number;
  #round: number;
  #weighted = false;
  #refreshAt = Number.NEGATIVE_INFINITY;

  constructor(
    eps: readonly EndpointState[],
    config: ClientSideWrrConfig,
    clock: { readonly ms: number },
    makeFallback: () => Picker,
  ) {
    this.#eps = eps;
    this.#config = config;
    this.#clock = clock;
    this.#makeFallback = makeFallback;
    this.#weights = new Int32Array(eps.length);
    this.#rest = new Int32Array(eps.length);
    // Random start, so that clients that rebuild together do not pick in step.
    this.#index = Math.floor(Math.random() * eps.length);
    this.#round = Math.floor(Math.random() * MAX_WEIGHT);
    this.#refresh(clock.ms);
  }

  #refresh(now: number): void {
    this.#refreshAt = now + this.#config.weightUpdatePeriodMs;
    const eps = this.#eps;
    const n = eps.length;
    const raw = new Float64Array(n);
    let sum = 0;
    let known = 0;
    let max = 0;
    for (let i = 0; i < n; i++) {
      const st = eps[i] as EndpointState;
      const load = st.load;
      const w = load === undefined ? 0 : load.weightAt(now, this.#config);
      if (load !== undefined) load.weight = w;
      raw[i] = w;
      if (w > 0) {
        sum += w;
        known++;
        if (w > max) max = w;
      }
    }
    this.#weighted = known >= 2 && n >= 2;
    if (!this.#weighted) return;
    const mean = sum / known;
    if (max > MAX_RATIO * mean) max = MAX_RATIO * mean;
    const scale = MAX_WEIGHT / max;
    const scaledMean = Math.round(scale * mean);
    const floor = Math.max(1, Math.round(scaledMean * MIN_RATIO));
    const weights = this.#weights;
    const rest = this.#rest;
    const round = this.#round;
    for (let i = 0; i < n; i++) {
      const w = raw[i] as number;
      const s = w === 0 ? scaledMean : Math.max(floor, Math.round(Math.min(w, max) * scale));
      weights[i] = s;
      rest[i] = (s * round + ((i * HALF_OFFSET) % MAX_WEIGHT)) % MAX_WEIGHT;
    }
  }

  pick(ctx: PickContext): PickResult {
    const now = this.#clock.ms;
    if (now >= this.#refreshAt) this.#refresh(now);
    if (!this.#weighted) {
      let f = this.#fallback;
      if (f === undefined) {
        f = this.#makeFallback();
        this.#fallback = f;
      }
      return f.pick(ctx);
    }
    const weights = this.#weights;
    const rest = this.#rest;
    const n = weights.length;
    let i = this.#index;
    for (;;) {
      const w = weights[i] as number;
      const r = rest[i] as number;
      const next = r + w;
      rest[i] = next >= MAX_WEIGHT ? next - MAX_WEIGHT : next;
      const picked = i;
      if (++i === n) {
        i = 0;
        this.#round = this.#round + 1 === MAX_WEIGHT ? 0 : this.#round + 1;
      }
      if (r >= MAX_WEIGHT - w) {
        this.#index = i;
        return (this.#eps[picked] as EndpointState).picked;
      }
    }
  }
}

const wrrOptions = s.object(
  {
    blackoutPeriod: s.duration({
      default: formatDuration(DEFAULT_CLIENT_SIDE_WRR.blackoutPeriodMs),
      doc: "An endpoint's reports must arrive for this long before its weight is used (0: at once).",
    }),
    weightExpirationPeriod: s.duration({
      positive: true,
      default: '3m',
      doc: 'A weight whose latest report is older than this is dropped (and the blackout starts again).',
    }),
    weightUpdatePeriod: s.duration({
      default: formatDuration(DEFAULT_CLIENT_SIDE_WRR.weightUpdatePeriodMs),
      doc: 'How often the schedule is rebuilt from the latest weights; values under 100ms are raised to 100ms.',
    }),
    errorUtilizationPenalty: s.number({
      min: 0,
      default: DEFAULT_CLIENT_SIDE_WRR.errorUtilizationPenalty,
      doc: 'Multiplier of the error rate (eps / qps) added to the utilization of the weight.',
    }),
    enableOobLoadReport: s.boolean({
      default: DEFAULT_CLIENT_SIDE_WRR.enableOobLoadReport,
      doc: 'Use out-of-band reports (the ORCA stream) instead of per-call ones.',
    }),
    oobReportingPeriod: s.duration({
      positive: true,
      default: formatDuration(DEFAULT_CLIENT_SIDE_WRR.oobReportingPeriodMs),
      doc: 'Report interval requested on the out-of-band stream.',
    }),
  },
  {
    name: 'ClientSideWeightedRoundRobinOptions',
    doc: "gRFC A58 weighted round robin from endpoints' ORCA load reports; peak-EWMA until two endpoints report.",
  },
);

/**
 * `client_side_weighted_round_robin`: A58 weighted round robin from ORCA load reports (Envoy's
 * `envoy.load_balancing_policies.client_side_weighted_round_robin`; grpc-js's
 * `weighted_round_robin`, a name meshlet's static-weight policy already has).
 */
export const clientSideWeightedRoundRobin: LoadBalancerFactory<ClientSideWrrConfig> = {
  name: 'client_side_weighted_round_robin',
  schema: wrrOptions,
  parseConfig(raw, path, issues) {
    const d = DEFAULT_CLIENT_SIDE_WRR;
    const o = wrrOptions.parse(raw, path, issues);
    return Object.freeze({
      enableOobLoadReport: o?.enableOobLoadReport ?? d.enableOobLoadReport,
      oobReportingPeriodMs: o?.oobReportingPeriod ?? d.oobReportingPeriodMs,
      blackoutPeriodMs: o?.blackoutPeriod ?? d.blackoutPeriodMs,
      weightExpirationPeriodMs: o?.weightExpirationPeriod ?? d.weightExpirationPeriodMs,
      // A58: values under 100 ms are raised to 100 ms.
      weightUpdatePeriodMs: Math.max(100, o?.weightUpdatePeriod ?? d.weightUpdatePeriodMs),
      errorUtilizationPenalty: o?.errorUtilizationPenalty ?? d.errorUtilizationPenalty,
    });
  },
  create(config, ctx): LoadBalancer {
    config ??= DEFAULT_CLIENT_SIDE_WRR;
    const clock = ctx?.clock ?? {
      get ms() {
        return performance.now();
      },
    };
    const fallback = peakEwma.create(DEFAULT_PEAK_EWMA, ctx);
    return {
      ewmaDecayMs: DEFAULT_PEAK_EWMA.decayMs,
      // Scheduling by reports ignores lbWeight; the peak-EWMA fallback reads it at pick time.
      liveWeights: true,
      loadReports: true,
      // A58's enable_oob_load_report: the transport opens the OOB stream (gRPC only).
      oobLoadReportPeriodMs: config.enableOobLoadReport ? config.oobReportingPeriodMs : undefined,
      update: (eps) => new ClientSideWrrPicker(eps, config, clock, () => fallback.update(eps)),
    };
  },
};
