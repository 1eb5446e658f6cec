import type { EndpointConcurrency } from './load/concurrency-state.js';
import type { EndpointLoad } from './load/endpoint-load.js';
import type { Endpoint } from './model.js';

/** The result of a pick: a small discriminated union, allocation-free for the `pick` case. */
export type PickResult =
  | { readonly kind: 'pick'; readonly endpoint: EndpointState }
  | { readonly kind: 'queue' }
  | { readonly kind: 'fail'; readonly error: Error };

/** The mesh's own view of an endpoint's health, on top of what discovery reports. */
export type ActiveHealth = 'unknown' | 'healthy' | 'unhealthy';

/**
 * Runtime state of one endpoint of one service. It outlives picker rebuilds (so load estimates,
 * health and ejection survive discovery updates) and is dropped when discovery removes the endpoint.
 *
 * Load fields are written by the request path (one writer: the event loop) and read by pickers.
 */
export class EndpointState {
  /** The latest discovery view of this endpoint (same id, attributes may change). */
  endpoint: Endpoint;
  readonly id: string;
  readonly service: string;

  /** Requests in flight to this endpoint. */
  active = 0;
  /**
   * Peak-EWMA of attempt latency in milliseconds as of the last sample (0 until the first
   * observation): the latest peak, which jumps to any latency above the estimate at once. Its
   * excess over `ewmaBaseMs` fades out over the service's next samples (`peakEwmaEstimate`).
   */
  ewmaMs = 0;
  /**
   * The endpoint's typical latency (ms): an EWMA of its samples where each weighs 1/8 and raises
   * it by at most 3% of itself (failures, whose latency is only a lower bound, only raise
   * it). What the peak falls back to: a single spike barely moves it, a backend that stays slow
   * raises it with every sample.
   */
  ewmaBaseMs = 0;
  /**
   * How many of its samples in a row were more than twice the service's recent latency
   * (`LbClock.recentMs`; its own baseline before the service has one): the fade of the peak's
   * excess takes `2 ** ewmaStrikes` times as long, so an endpoint whose probes keep confirming that
   * it is slower than the rest is probed ever more rarely (as outlier ejection grows with each
   * ejection), while one spike is forgiven after a few rounds. Judged against the fleet, not the
   * endpoint's own past: when the whole service slows down (a loaded machine, a GC pause of this
   * process), that says nothing about one endpoint. A success within that bound resets it.
   */
  ewmaStrikes = 0;
  /** `performance.now()` of the last EWMA update. */
  ewmaStamp = 0;
  /** The service's sample count (`LbClock.samples`) at the last EWMA update. */
  ewmaSeq = 0;
  /**
   * The endpoint's recent failure rate (0–1): an exponentially weighted moving average of its
   * attempts' verdicts — 1 for a gateway error or a local failure, 0 for a success; attempts that
   * say nothing about the endpoint are left out — where each attempt weighs 1/32 and the past
   * also fades with time (time constant: the balancer's decay). Latency-aware balancers raise an
   * endpoint's cost by it (see peak_ewma's `failurePenalty`).
   */
  failRate = 0;
  /**
   * `performance.now()` of the last `failRate` update; starts when the endpoint joined (a history
   * of no failures), so one early failure weighs what the time since then is worth, not all.
   *
   * The time fields start as numbers (`= 0`, set in the constructor): a field declared without an
   * initializer is first defined as `undefined`, which makes V8 keep it as a tagged field, so every
   * store of a time made a heap number and a write barrier (`failStamp`: on every attempt).
   */
  failStamp = 0;
  /**
   * Total attempts sent, and those that failed because of the endpoint (gateway errors and local
   * failures, not the caller's cancellations or application errors), over the endpoint's life.
   */
  attempts = 0;
  failures = 0;
  /**
   * Attempts that ended successfully as load reports count them (gRPC: status OK; HTTP: an
   * answer below 500), over the endpoint's life. Ended attempts are `attempts - active`; the rest
   * are errors. Read by load reporting (xDS LRS) off the request path.
   */
  succeeded = 0;

  /** Set by active health checking; `unknown` until the first check. */
  activeHealth: ActiveHealth = 'unknown';
  /**
   * How many transport connections to the endpoint are failing right now (a gRPC subchannel in
   * TRANSIENT_FAILURE), as reported through `ServiceRuntime.reportConnectivity`; the endpoint is
   * kept out of rotation while it is above 0, like an unhealthy one.
   */
  unreachable = 0;
  /** Outlier detection: ejected until this `performance.now()` time (0 = not ejected). */
  ejectedUntil = 0;
  /** How many times outlier detection has ejected this endpoint (ejection time grows with it). */
  ejectionCount = 0;
  /** Avoid-until for endpoints that answered 429/503 with Retry-After (0 = none). */
  penaltyUntil = 0;
  /** `performance.now()` when the endpoint joined (slow start). */
  readonly addedAt: number = 0;
  /**
   * The weight load balancers honour: `endpoint.weight` times the slow-start factor. Written by
   * `ServiceRuntime.rebuild` (off the hot path), read by pickers.
   */
  lbWeight = 0;
  /** Start of the current slow-start window: when the endpoint joined or last passed health checks. */
  slowStartFrom = 0;
  /** Active health as of the last rebuild (to notice unhealthy → healthy transitions). */
  lbSeenHealth: ActiveHealth = 'unknown';
  /** @internal The number of the last discovery update that listed this endpoint (diffing). */
  seenInUpdate = 0;
  /**
   * @internal The discovery part (`DiscoveryUpdate.segments`) this endpoint was last matched in:
   * tells `applyUpdate` that a changed part lists an endpoint of a part it skipped.
   */
  segment: readonly Endpoint[] | undefined = undefined;
  /** What the endpoint reported about its load (ORCA), from its first report on (`ServiceRuntime.reportLoad`). */
  load: EndpointLoad | undefined = undefined;
  /** Its adaptive concurrency limiter state, from the first attempt a limiter admitted on. */
  concurrency: EndpointConcurrency | undefined = undefined;

  #picked: PickResult | undefined = undefined;
  #slots: unknown[] | undefined = undefined;

  /**
   * The pick result for this endpoint, created on first use and then reused, so that picking
   * allocates nothing (and an endpoint never picked costs no object: a discovery update of many
   * endpoints creates fewer objects).
   */
  get picked(): PickResult {
    let p = this.#picked;
    if (p === undefined) {
      p = Object.freeze({ kind: 'pick', endpoint: this });
      this.#picked = p;
    }
    return p;
  }

  /**
   * Per-transport attachments (connection pools, subchannels), indexed by a slot number a
   * transport obtains once from `allocateEndpointSlot()`: an array index, not a map lookup.
   * Created on first use, with room for every slot allocated so far (growing an empty array to
   * a slot's index would reserve 16 more), and the same array from then on.
   */
  get slots(): unknown[] {
    let s = this.#slots;
    if (s === undefined) {
      s = new Array(nextSlot);
      this.#slots = s;
    }
    return s;
  }

  constructor(service: string, endpoint: Endpoint, now: number) {
    this.service = service;
    this.endpoint = endpoint;
    this.id = endpoint.id;
    this.addedAt = now;
    this.failStamp = now;
    this.slowStartFrom = now;
    this.lbWeight = endpoint.weight;
  }

  /** True while outlier detection keeps the endpoint out of rotation. */
  isEjected(now: number): boolean {
    return this.ejectedUntil > now;
  }
}

/**
 * An endpoint's latency estimate (ms) before the time decay: its last peak, fading out linearly
 * over `span × 2^ewmaStrikes` of the service's samples since the endpoint's last one, down to its
 * floor — its baseline, or the service's recent latency (`recentMs`, `LbClock.recentMs`) when
 * that is lower. 0 for an endpoint never observed.
 *
 * Why samples and not only time: an endpoint that lost P2C comparisons because of one slow
 * answer gets no samples to correct it, and a time constant cannot suit both 100 and 10,000
 * requests a second (at concurrency 1 over three loopback servers, Finagle's 10 s decay kept a
 * server that took one 40 ms answer out of rotation for the whole run of 300 calls). Counting the
 * service's samples forgives a spike after a few rounds at any rate, while the strikes keep an
 * endpoint that is really slow out: each probe that confirms it doubles the wait for the next.
 *
 * Why the floor is the fleet's recent latency when that is lower: an avoided endpoint's baseline
 * is as stale as its peak. A baseline set by a spike (the second sample, which seeds it, taken in a
 * GC pause of this process: 15.9 ms against the fleet's 0.3), or left high by a loaded minute
 * while the others' came back down, would otherwise keep the endpoint out until the time decay —
 * the rest of a benchmark run of 300 calls (one server got 2). After the fade it is probed like
 * any endpoint of the fleet, and its answer sets its estimate again.
 */
export function peakEwmaEstimate(ep: EndpointState, samples: number, span: number, recentMs = 0): number {
  const base = ep.ewmaBaseMs;
  const floor = recentMs > 0 && recentMs < base ? recentMs : base;
  const excess = ep.ewmaMs - floor;
  if (excess <= 0) return ep.ewmaMs;
  const age = samples - ep.ewmaSeq;
  const strikes = ep.ewmaStrikes;
  // A shift, not `2 ** strikes` (a call into the math library per attempt); strikes stay ≤ 16.
  const fade = span * (strikes < 31 ? 1 << strikes : 2 ** strikes);
  return age >= fade ? floor : floor + excess * (1 - age / fade);
}

let nextSlot = 0;
/** Reserves a slot index in every `EndpointState.slots` for one transport. Call once per module. */
export function allocateEndpointSlot(): number {
  return nextSlot++;
}
