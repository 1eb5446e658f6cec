import type { ServicePolicy } from './config.js';
import type { DiscoveryUpdate } from './discovery/types.js';
import { EndpointState, type PickResult, peakEwmaEstimate } from './endpoint-state.js';
import { ErrorCodes, MeshError } from './errors.js';
import type { MeshEvents, Outcome, Verdict } from './events.js';
import type { HeaderInput } from './lb/hash.js';
import { balancingOf, type HostArrays, planPicker, slowStartFactor, usableOnItsOwn } from './lb/priority.js';
import type { LoadBalancer, PickContext, Picker } from './lb/types.js';
import type { AdaptiveConcurrency } from './load/concurrency.js';
import { EndpointLoad } from './load/endpoint-load.js';
import type { OrcaLoadReport } from './load/orca.js';
import type { LocalStalls } from './load/overload.js';
import { type Endpoint, type Locality, sameButWeight, sameEndpoint } from './model.js';
import { RuntimeHooks } from './observer.js';
import { loadBalancers } from './registry.js';
import { ServiceResilience } from './resilience/service-resilience.js';
import { RetryBudget } from './retry.js';

/** Discovery status of one service, as `snapshot()` reports it. */
export interface DiscoveryStatus {
  readonly type: string;
  /** True once the source delivered endpoints at least once. */
  hasData: boolean;
  version: string | undefined;
  /** Epoch ms of the last applied update. */
  lastUpdate: number | undefined;
  lastError: string | undefined;
  /** Epoch ms of the last error. */
  lastErrorAt: number | undefined;
  updates: number;
  errors: number;
}

/**
 * A filter run when the usable endpoint set is computed. Extensions (priority/locality selection,
 * zone preference) install one to narrow the set before the load balancer sees it.
 */
export type EndpointSetFilter = (
  usable: readonly EndpointState[],
  all: readonly EndpointState[],
) => readonly EndpointState[];

const NO_OFFSETS = new Int32Array(0);
const PEAK_EWMA_DECAY_MS = 10_000;
/** The weight of one sample in `EndpointState.ewmaBaseMs`. */
const EWMA_BASE_ALPHA = 1 / 8;
/** `LbClock.span` per endpoint: a peak's excess fades over about four of its own samples. */
const EWMA_SPAN_PER_ENDPOINT = 4;
/** How many times in a row the fade of a peak's excess may double (`EndpointState.ewmaStrikes`). */
const EWMA_MAX_STRIKES = 16;
/** The weight of one attempt in `EndpointState.failRate` (a memory of about 32 attempts). */
const FAIL_RATE_ALPHA = 1 / 32;

/** Optional collaborators of a ServiceRuntime. */
export interface ServiceRuntimeOptions {
  /** This workload's locality (`config.local`), for zone-aware routing. */
  readonly local?: Pick<Locality, 'region' | 'zone'> | undefined;
  /** The hooks its mesh shares with transports (call hook, endpoint watchers); default: its own. */
  readonly hooks?: RuntimeHooks | undefined;
  /**
   * The process' own event-loop stalls on the `now` time scale, kept out of the adaptive
   * concurrency limiter's latency samples; default none (the mesh passes its heartbeat when its
   * clock is `performance.now`).
   */
  readonly localStalls?: LocalStalls | undefined;
}

/**
 * The runtime of one service: its endpoints (with load and health state that survives updates),
 * its load balancer and current picker, and the observation hooks every transport calls.
 *
 * Data flows one way: discovery → `applyUpdate()` → rebuild → `picker`. The hot path only calls
 * `pick()`, `startAttempt()` and `endAttempt()`.
 */
export class ServiceRuntime {
  readonly name: string;
  readonly events: MeshEvents;
  policy: ServicePolicy;
  readonly discovery: DiscoveryStatus;
  retryBudget: RetryBudget;
  /** Whether the last rebuild fell below the panic threshold. */
  panic = false;
  /** Optional narrowing of the usable set (installed by extensions). */
  filter: EndpointSetFilter | undefined;
  /** Circuit breaker, thresholds, outlier detection and active health checks (every transport's). */
  readonly resilience: ServiceResilience;
  /** The outbound call hook and endpoint watchers, shared by every service of a mesh. */
  readonly hooks: RuntimeHooks;

  #states = new Map<string, EndpointState>();
  #all: readonly EndpointState[] = [];
  /** Numbers discovery updates, to mark the states an update lists (`EndpointState.seenInUpdate`). */
  #updateEpoch = 0;
  #balancer: LoadBalancer;
  #picker: Picker;
  #waiters: Array<() => void> = [];
  #closed = false;
  /** Time source: `performance.now()` unless a test injects a clock. */
  readonly now: () => number;
  /** See `ServiceRuntimeOptions.localStalls`. */
  readonly localStalls: LocalStalls | undefined;
  readonly #local: Pick<Locality, 'region' | 'zone'> | undefined;
  /** When the picker must be recomputed (slow start, ejection or penalty end); Infinity if never. */
  #refreshAt = Number.POSITIVE_INFINITY;
  #ewmaDecayMs = PEAK_EWMA_DECAY_MS;
  /** The clock as of the last attempt end or rebuild (see `LbContext.clock`). */
  readonly #clock = { ms: 0, samples: 0, span: EWMA_SPAN_PER_ENDPOINT * 2, recentMs: 0 };
  #priorityLoad: ReadonlyMap<number, number> = new Map();
  /** The last plan's per-locality host arrays (reused by the next rebuild when unchanged). */
  #hostArrays: ReadonlyMap<string, EndpointState[]> = new Map();
  /** The last update's parts when `#all` is their concatenation (see `applyUpdate`), and where each starts. */
  #segments: readonly (readonly Endpoint[])[] | undefined;
  #segmentOffsets: Int32Array = NO_OFFSETS;

  constructor(
    name: string,
    policy: ServicePolicy,
    discoveryType: string,
    events: MeshEvents,
    now: () => number,
    options: ServiceRuntimeOptions = {},
  ) {
    this.name = name;
    this.#local = options.local;
    this.hooks = options.hooks ?? new RuntimeHooks();
    this.policy = policy;
    this.events = events;
    this.now = now;
    this.localStalls = options.localStalls;
    this.discovery = {
      type: discoveryType,
      hasData: false,
      version: undefined,
      lastUpdate: undefined,
      lastError: undefined,
      lastErrorAt: undefined,
      updates: 0,
      errors: 0,
    };
    this.retryBudget = new RetryBudget(policy.retry.budget);
    this.#balancer = this.#createBalancer();
    this.#picker = this.#emptyPicker();
    this.resilience = new ServiceResilience(this, policy);
  }

  #createBalancer(): LoadBalancer {
    const factory = loadBalancers.get(this.policy.lb.policy);
    if (!factory) {
      throw new MeshError(
        ErrorCodes.CONFIG,
        `load-balancing policy "${this.policy.lb.policy}" is not registered`,
        {
          service: this.name,
        },
      );
    }
    const balancer = factory.create(this.policy.lb.config, { now: this.now, clock: this.#clock });
    this.#ewmaDecayMs = balancer.ewmaDecayMs ?? PEAK_EWMA_DECAY_MS;
    return balancer;
  }

  /** Traffic share (percent) per priority level as of the last rebuild. */
  get priorityLoad(): ReadonlyMap<number, number> {
    return this.#priorityLoad;
  }

  /**
   * The request's affinity hash for hash-based policies (ring_hash, maglev), computed from the
   * policy's `hashPolicy`; undefined for other policies. Transports call it once per request and
   * store the result in `PickContext.hash`.
   */
  requestHash(headers: HeaderInput, sourceIp?: string): number | undefined {
    const b = this.#balancer;
    return b.requestHash === undefined ? undefined : b.requestHash(headers, sourceIp);
  }

  /**
   * Records that `ep` answered `status` (with `retryAfterMs` from its Retry-After header, if any):
   * when the status is one of `balancing.penalty.statuses`, the endpoint takes no new requests
   * until the penalty (Retry-After, or the configured default, capped at `max`) ends.
   */
  penalize(ep: EndpointState, status: number, retryAfterMs: number | undefined, shed = false): void {
    const p = balancingOf(this.policy.extensions).penalty;
    // A shed answer (`x-meshlet-shed`) is a penalty whatever its status: the server said "not me".
    if (!shed && !p.statuses.includes(status)) return;
    const ms = Math.min(retryAfterMs ?? p.defaultMs, p.maxMs);
    if (!(ms > 0)) return;
    const now = this.now();
    const until = now + ms;
    if (until <= ep.penaltyUntil) return;
    const wasPenalized = ep.penaltyUntil > now;
    ep.penaltyUntil = until;
    if (!wasPenalized && this.#states.get(ep.id) === ep) this.rebuild();
  }

  /**
   * Records a load report (ORCA) that `ep` sent with a response (per call) or on its out-of-band
   * stream; load-aware policies read it from `ep.load` when they next refresh their weights.
   */
  reportLoad(ep: EndpointState, report: OrcaLoadReport, now: number = this.now()): void {
    let load = ep.load;
    if (load === undefined) {
      load = new EndpointLoad();
      ep.load = load;
    }
    load.record(report, now);
    if (now > this.#clock.ms) this.#clock.ms = now;
  }

  /** True when the service's policy balances by load reports (transports ask endpoints for them). */
  get wantsLoadReports(): boolean {
    return this.#balancer.loadReports === true;
  }

  /**
   * The period (ms) at which the service's policy wants out-of-band load reports, or undefined
   * (`client_side_weighted_round_robin` with `enableOobLoadReport`). Transports with an OOB stream
   * (gRPC) open one per connection; they re-read it when `watchEndpoints` listeners are called.
   */
  get oobLoadReportPeriodMs(): number | undefined {
    return this.#balancer.oobLoadReportPeriodMs;
  }

  /** Every endpoint discovery currently reports, in discovery order. */
  get endpoints(): readonly EndpointState[] {
    return this.#all;
  }

  endpoint(id: string): EndpointState | undefined {
    return this.#states.get(id);
  }

  get picker(): Picker {
    return this.#picker;
  }

  /** Replaces the service's policy (config reload); rebuilds the balancer when it changed. */
  setPolicy(policy: ServicePolicy): void {
    const lbChanged = policy.lb !== this.policy.lb;
    if (policy.retry.budget !== this.policy.retry.budget)
      this.retryBudget = new RetryBudget(policy.retry.budget);
    this.policy = policy;
    this.resilience.setPolicy(policy);
    if (lbChanged) {
      const oob = this.#balancer.oobLoadReportPeriodMs;
      this.#balancer.close?.();
      this.#balancer = this.#createBalancer();
      this.rebuild();
      // Transports keeping per-connection OOB report streams re-read what the policy wants.
      if (this.#balancer.oobLoadReportPeriodMs !== oob) this.#notifyWatchers();
      return;
    }
    this.rebuild();
  }

  /**
   * Applies a full endpoint set from discovery: diffs it, keeps state of unchanged endpoints.
   * O(n) with small constants: an endpoint object that sits at the same index as in the previous
   * update (sources that reuse unchanged `Endpoint` objects, such as the xDS client) is matched
   * without a map lookup, others by id; only added endpoints get new state, and the map of states
   * is updated in place (removals are swept only when the sizes say something was removed).
   *
   * An update given as `segments` is read part by part (its flat `endpoints` never): a part that
   * is the very same array as the part at the same index of the previous update, when that update
   * listed every endpoint once, takes its states from the previous list as a block (no per-endpoint
   * matching), so a one-endpoint change of one locality matches only that locality's endpoints.
   */
  applyUpdate(update: DiscoveryUpdate): void {
    if (this.#closed) return;
    const now = this.now();
    const segs = update.segments ?? [update.endpoints];
    const states = this.#states;
    const prevAll = this.#all;
    const prevLen = prevAll.length;
    // Parts that are the previous update's part at the same index are skipped (not read at all)
    // when that update listed every endpoint once; if a changed part lists an endpoint of a skipped
    // one, the update is matched again, reading every part.
    const prevSegs = update.segments === undefined ? undefined : this.#segments;
    let m = this.#match(segs, prevAll, prevSegs, now);
    let added = m.added;
    if (m.bailed) {
      m = this.#match(segs, prevAll, undefined, now);
      added += m.added;
      m.changed = true;
    }
    const { list, same, offsets, skipped, reweighted } = m;
    const changed = m.changed;
    const epoch = this.#updateEpoch;
    const i = m.total;
    const count = list === undefined ? same : list.length;
    const removed: EndpointState[] = [];
    if (states.size !== count) {
      // Something was removed: the skipped parts' states are marked now (O(n) only then).
      for (let b = 0; b < skipped.length; b += 2) {
        const from = skipped[b] as number;
        const to = from + (skipped[b + 1] as number);
        for (let j = from; j < to; j++) (prevAll[j] as EndpointState).seenInUpdate = epoch;
      }
      states.forEach((st, id) => {
        if (st.seenInUpdate !== epoch) {
          removed.push(st);
          states.delete(id);
        }
      });
    }
    // Unchanged membership and order: keep the previous array.
    if (list === undefined) this.#all = same === prevLen ? prevAll : prevAll.slice(0, same);
    else this.#all = added === 0 && removed.length === 0 && sameOrder(list, prevAll) ? prevAll : list;
    // The parts can stand for blocks of the list next time only when it is their concatenation
    // (no endpoint listed twice).
    if (update.segments !== undefined && this.#all.length === i) {
      this.#segments = update.segments;
      this.#segmentOffsets = offsets;
    } else {
      this.#segments = undefined;
      this.#segmentOffsets = NO_OFFSETS;
    }
    const d = this.discovery;
    d.hasData = true;
    d.version = update.version;
    d.lastUpdate = Date.now();
    d.updates++;
    if (added > 0 || removed.length > 0 || changed || d.updates === 1 || this.#all !== prevAll)
      this.rebuild();
    else if (reweighted !== undefined) this.#reweight(reweighted);
    if (added > 0 || removed.length > 0) this.resilience.endpointsChanged();
    for (const st of removed) this.#removed(st);
    if (added > 0 || removed.length > 0 || changed || d.updates === 1 || this.#all !== prevAll)
      this.#notifyWatchers();
    if (this.events.wants('endpoints')) {
      const removedCount = removed.length;
      this.events.emit('endpoints', {
        service: this.name,
        // Read on demand: a segmented update builds its flat list only for a listener that reads it.
        get endpoints() {
          return update.endpoints;
        },
        added,
        removed: removedCount,
        version: update.version,
      });
    }
    this.#wake();
  }

  /**
   * Matches the parts of an update against the previous list of states (see `applyUpdate`): marks
   * the states it lists with a new update number, creates states for new endpoints and records
   * changed ones. With `prevSegs`, a part that is the very same array as the one at the same index
   * last time is not read: its states are the block of `prevAll` where that part was (`skipped`
   * holds those blocks, unmarked); `bailed` when a changed part lists an endpoint of such a block.
   */
  #match(
    segs: readonly (readonly Endpoint[])[],
    prevAll: readonly EndpointState[],
    prevSegs: readonly (readonly Endpoint[])[] | undefined,
    now: number,
  ): MatchResult {
    const states = this.#states;
    const prevLen = prevAll.length;
    const prevOffsets = this.#segmentOffsets;
    const epoch = ++this.#updateEpoch;
    const offsets = new Int32Array(segs.length);
    const skipped: number[] = [];
    let reused: Set<readonly Endpoint[]> | undefined;
    let lastPart: readonly Endpoint[] | undefined;
    let lastPartReused = false;
    if (prevSegs !== undefined) {
      for (let k = 0; k < segs.length && k < prevSegs.length; k++) {
        if (prevSegs[k] !== segs[k]) continue;
        reused ??= new Set();
        reused.add(segs[k] as readonly Endpoint[]);
      }
    }
    // The new list of states, built only from the first difference with the previous one on.
    let list: EndpointState[] | undefined;
    let same = 0;
    let added = 0;
    let changed = false;
    /** Endpoints whose weight alone changed (no new picker needed when the policy reads weights live). */
    let reweighted: EndpointState[] | undefined;
    let i = 0;
    for (let k = 0; k < segs.length; k++) {
      const eps = segs[k] as readonly Endpoint[];
      const n = eps.length;
      offsets[k] = i;
      if (reused !== undefined && (prevSegs as readonly (readonly Endpoint[])[])[k] === eps) {
        // The same part as last time: its states are prevAll[from, from + n), in order.
        const from = prevOffsets[k] as number;
        skipped.push(from, n);
        if (list === undefined && from === i && same === i) same += n;
        else {
          list ??= prevAll.slice(0, same);
          for (let j = 0; j < n; j++) list.push(prevAll[from + j] as EndpointState);
        }
        i += n;
        continue;
      }
      for (let j = 0; j < n; j++, i++) {
        const ep = eps[j] as Endpoint;
        // A state whose endpoint is this very object is its state (a hint by index, no lookup).
        let st = i < prevLen ? (prevAll[i] as EndpointState) : undefined;
        if (st === undefined || st.endpoint !== ep) {
          st = states.get(ep.id);
          if (st === undefined) {
            st = new EndpointState(this.name, ep, now);
            states.set(ep.id, st);
            added++;
          } else if (st.seenInUpdate !== epoch && st.endpoint !== ep) {
            const old = st.endpoint;
            if (!sameEndpoint(old, ep)) {
              if (!sameButWeight(old, ep)) changed = true;
              else if (reweighted === undefined) reweighted = [st];
              else reweighted.push(st);
            }
            st.endpoint = ep;
          }
        }
        if (st.seenInUpdate === epoch) continue; // duplicates: the first wins
        // Listed by a skipped part too: match again, reading every part (the first occurrence wins).
        // (Neighbours share their part: one set lookup per run of them.)
        if (reused !== undefined && st.segment !== lastPart) {
          lastPart = st.segment;
          lastPartReused = lastPart !== undefined && reused.has(lastPart);
        }
        if (lastPartReused) return { ...EMPTY_MATCH, added, bailed: true };
        st.seenInUpdate = epoch;
        st.segment = eps;
        if (list === undefined) {
          if (i === same && st === prevAll[i]) {
            same++;
            continue;
          }
          list = prevAll.slice(0, same);
        }
        list.push(st);
      }
    }
    return { list, same, added, changed, reweighted, offsets, skipped, total: i, bailed: false };
  }

  /**
   * Applies new endpoint weights without new pickers when the policy reads `lbWeight` at pick
   * time (peak_ewma, round_robin) and no filter narrows the sets; otherwise rebuilds. O(changed):
   * a one-endpoint weight change in a 10,000-endpoint service does not walk them all again.
   */
  #reweight(states: readonly EndpointState[]): void {
    if (this.#balancer.liveWeights !== true || this.filter !== undefined) {
      this.rebuild();
      return;
    }
    const now = this.now();
    const ss = balancingOf(this.policy.extensions).slowStart;
    for (const st of states) st.lbWeight = st.endpoint.weight * slowStartFactor(now - st.slowStartFrom, ss);
  }

  /** Records a discovery failure; the last good endpoints stay in use. */
  applyError(error: Error): void {
    const d = this.discovery;
    d.lastError = error.message;
    d.lastErrorAt = Date.now();
    d.errors++;
    this.events.emit('discoveryError', { service: this.name, source: d.type, error });
    // A first answer, even an error, ends the wait of queued requests (they then fail fast).
    if (this.#picker === QUEUE_PICKER) this.rebuild();
    this.#wake();
    this.#notifyWatchers();
  }

  #watchers: Array<(rt: ServiceRuntime) => void> = [];

  /**
   * Watches the service's endpoint set for transports that keep connections per endpoint (the gRPC
   * resolver and balancer): `listener` runs after every discovery update that changed the set or
   * an endpoint's address, after a discovery error (a first answer, even a failing one, ends the
   * wait of calls queued for discovery) and once when the service closes (`closed` is then true).
   * Control, not observation: it does not travel on the event bus. Returns a function that stops
   * watching.
   */
  watchEndpoints(listener: (rt: ServiceRuntime) => void): () => void {
    this.#watchers = [...this.#watchers, listener];
    return () => {
      this.#watchers = this.#watchers.filter((l) => l !== listener);
    };
  }

  #notifyWatchers(): void {
    const list = this.#watchers;
    for (let i = 0; i < list.length; i++) {
      try {
        (list[i] as (rt: ServiceRuntime) => void)(this);
      } catch (err) {
        process.emitWarning(
          `meshlet: an endpoint watcher of service "${this.name}" threw: ${(err as Error)?.message}`,
          'MeshletWarning',
        );
      }
    }
  }

  /**
   * A transport's report on its connection to `ep`: `reachable: false` when the connection failed
   * (a gRPC subchannel entering TRANSIENT_FAILURE), `true` once it is connected again or the
   * transport stops keeping one. Every reporter balances its own reports (one `false`, then one
   * `true`); the endpoint stays out of rotation — for every transport, like an endpoint failing its
   * health checks — while any reporter says it is unreachable, and a `health` event says when that
   * starts and ends (with `reason`). Transports report through this method instead of writing
   * `EndpointState` themselves.
   */
  reportConnectivity(ep: EndpointState, reachable: boolean, reason: string): void {
    const was = ep.unreachable;
    ep.unreachable = reachable ? Math.max(0, was - 1) : was + 1;
    if ((was === 0) === (ep.unreachable === 0)) return;
    // An endpoint that already left its service changes no picker.
    if (this.#states.get(ep.id) === ep && !this.#closed) this.rebuild();
    if (this.events.wants('health')) {
      this.events.emit('health', { service: this.name, endpoint: ep.id, healthy: reachable, reason });
    }
  }

  /**
   * Recomputes the usable endpoint set (discovery health, active health, ejection, panic
   * threshold, extension filter) and publishes a new picker. Called on discovery updates and on
   * health or ejection changes; never on the request path.
   */
  rebuild(): void {
    const now = this.now();
    const all = this.#all;
    this.#clock.ms = now;
    this.#clock.span = EWMA_SPAN_PER_ENDPOINT * Math.max(2, all.length);
    const wasPanic = this.panic;
    const hostArrays: HostArrays = { prev: this.#hostArrays, next: new Map() };
    const plan = planPicker({
      all,
      now,
      panicThreshold: this.policy.panicThreshold,
      config: balancingOf(this.policy.extensions),
      local: this.#local,
      balancer: this.#balancer,
      filter: this.filter,
      hostArrays,
    });
    this.#hostArrays = hostArrays.next;
    this.panic = plan.panic;
    this.#refreshAt = plan.refreshAt;
    this.#priorityLoad = plan.priorityLoad;
    if (wasPanic !== this.panic) {
      this.events.emit('panic', {
        service: this.name,
        panic: this.panic,
        usable: plan.usable,
        total: all.length,
      });
    }
    this.#picker =
      plan.picker !== undefined
        ? plan.picker
        : all.length === 0
          ? this.#emptyPicker()
          : this.#noHealthyPicker();
  }

  #noHealthyPicker(): Picker {
    const error = new MeshError(
      ErrorCodes.NO_HEALTHY_ENDPOINT,
      `service "${this.name}" has no healthy endpoint (${this.#all.length} known; panic threshold is 0)`,
      { service: this.name },
    );
    const result: PickResult = Object.freeze({ kind: 'fail', error });
    return { pick: () => result };
  }

  #emptyPicker(): Picker {
    if (!this.discovery.hasData && this.discovery.errors === 0) return QUEUE_PICKER;
    const error = new MeshError(
      ErrorCodes.NO_HEALTHY_ENDPOINT,
      this.discovery.lastError
        ? `service "${this.name}" has no endpoints (discovery: ${this.discovery.lastError})`
        : `service "${this.name}" has no endpoints`,
      { service: this.name },
    );
    const result: PickResult = Object.freeze({ kind: 'fail', error });
    return { pick: () => result };
  }

  /**
   * Picks an endpoint. `avoid` (the endpoint a failed attempt used) is skipped when another
   * endpoint is available, so that a retry goes elsewhere (Envoy's previous-hosts predicate).
   * With an adaptive concurrency `limiter`, endpoints at their limit are skipped the same way;
   * when every usable endpoint is at its limit the pick stands (the caller's `tryAcquire` refuses
   * it and the call waits).
   */
  pick(
    ctx: PickContext,
    avoid?: EndpointState | readonly EndpointState[],
    limiter?: AdaptiveConcurrency,
  ): PickResult {
    const result = this.#pickAvoiding(ctx, avoid);
    if (limiter === undefined || result.kind !== 'pick' || limiter.wouldAdmit(result.endpoint)) return result;
    return this.#pickUnderLimit(ctx, avoid, limiter, result);
  }

  /** The pick went to an endpoint at its limit: a few more picks, then any usable one under its limit. */
  #pickUnderLimit(
    ctx: PickContext,
    avoid: EndpointState | readonly EndpointState[] | undefined,
    limiter: AdaptiveConcurrency,
    first: PickResult,
  ): PickResult {
    for (let i = 0; i < 3; i++) {
      const r = this.#picker.pick(ctx);
      if (r.kind !== 'pick') return first;
      if (limiter.wouldAdmit(r.endpoint) && (avoid === undefined || !isAvoided(r.endpoint, avoid))) return r;
    }
    const best = this.#anyUsable(
      (st) => !limiter.wouldAdmit(st) || (avoid !== undefined && isAvoided(st, avoid)),
    );
    return best === undefined ? first : best.picked;
  }

  /**
   * A usable endpoint `skip` does not reject, looked for from a random start (so that fallbacks
   * spread), of the highest priority (lowest number) that has one: failover order still holds.
   */
  #anyUsable(skip: (st: EndpointState) => boolean): EndpointState | undefined {
    const all = this.#all;
    const now = this.now();
    const from = Math.floor(Math.random() * all.length);
    let best: EndpointState | undefined;
    for (let i = 0; i < all.length; i++) {
      const st = all[(from + i) % all.length] as EndpointState;
      if (skip(st) || !usableOnItsOwn(st, now)) continue;
      if (best === undefined || st.endpoint.priority < best.endpoint.priority) best = st;
      if (best.endpoint.priority === 0) break;
    }
    return best;
  }

  #pickAvoiding(ctx: PickContext, avoid?: EndpointState | readonly EndpointState[]): PickResult {
    // Slow start ramps, ejections and penalties end with time: recompute lazily when one is due
    // (one clock read per pick only while such a deadline is pending).
    if (this.#refreshAt !== Number.POSITIVE_INFINITY && this.now() >= this.#refreshAt) this.rebuild();
    let result = this.#picker.pick(ctx);
    // A retry avoids every endpoint the request already tried (Envoy's `previous_hosts` retry
    // predicate): up to 5 more picks (Istio's host selection attempts), then — a balancer may keep
    // preferring a failing endpoint, e.g. P2C one that fails fast — any usable endpoint not tried,
    // from a random start; the last pick only when every usable endpoint was tried.
    if (avoid !== undefined && result.kind === 'pick' && this.#all.length > 1) {
      for (let i = 0; i < 5 && result.kind === 'pick' && isAvoided(result.endpoint, avoid); i++)
        result = this.#picker.pick(ctx);
      if (result.kind === 'pick' && isAvoided(result.endpoint, avoid)) {
        const best = this.#anyUsable((st) => isAvoided(st, avoid));
        if (best !== undefined) return best.picked;
      }
    }
    return result;
  }

  /** Resolves when discovery has answered for the first time (or at once if it already has). */
  whenDiscovered(): Promise<void> {
    if (this.discovery.hasData || this.discovery.errors > 0 || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #wake(): void {
    if (this.#waiters.length === 0) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /**
   * Marks the start of an attempt on `ep`; returns the start time for `endAttempt` (`now` when the
   * caller just read the clock, saving a read).
   */
  startAttempt(ep: EndpointState, now?: number): number {
    ep.active++;
    ep.attempts++;
    return now ?? this.now();
  }

  /**
   * Marks the end of an attempt: releases the in-flight count, feeds the endpoint's latency
   * estimate and failure rate (what latency-aware balancers read), runs the attempt observers
   * (outlier detection), tells the call listeners (`RuntimeHooks.addCallListener`: telemetry) and
   * emits the `attempt` event when someone listens.
   *
   * `start` is when the attempt was dispatched (the attempt's duration in events and spans);
   * `connectedAt` when it was on a connection, from which its latency is measured (connection
   * setup — TCP, TLS, HTTP/2 handshakes — is not the endpoint's request latency, as tower and
   * Linkerd measure on a ready connection): the same as `start` when omitted, negative when the
   * attempt never had a connection (then no latency is observed). `verdict` says what the attempt
   * means for the endpoint; when omitted it is derived from `outcome` and `status` (`verdictOf`).
   *
   * The estimate is a peak-EWMA (Finagle/Linkerd): as pickers read it, it has decayed towards
   * zero since the last observation; a latency above that jumps in at once, a lower one is blended
   * in with a weight that grows with the time since the last observation. Only a success blends
   * in a lower latency: a failure, and an attempt that says nothing about the endpoint (cancelled,
   * the caller's deadline), only ever raise it (their latency is a lower bound), so an endpoint
   * that fails fast never looks fast. The clock it read is `clockMs` afterwards (not returned: a
   * double returned from a function that is not inlined is a heap number made per call).
   */
  endAttempt(
    ep: EndpointState,
    start: number,
    attempt: number,
    outcome: Outcome,
    status: number | undefined,
    error: Error | undefined,
    retryReason: string | undefined,
    transport: 'http' | 'grpc',
    verdict: Verdict = verdictOf(transport, outcome, status),
    connectedAt: number = start,
  ): void {
    ep.active--;
    if (
      transport === 'grpc'
        ? status === 0 || (status === undefined && outcome === 'success')
        : outcome === 'success'
    )
      ep.succeeded++;
    const now = this.now();
    const clock = this.#clock;
    clock.ms = now;
    if (connectedAt >= 0) {
      const rtt = now - connectedAt;
      if (ep.ewmaMs === 0) {
        // A first answer pays for cold paths (the server's and ours): it is a peak, not yet a
        // baseline; the second sample sets the baseline.
        ep.ewmaMs = rtt;
        ep.ewmaBaseMs = 0;
        ep.ewmaStamp = now;
        ep.ewmaSeq = clock.samples + 1;
      } else {
        // Everything fades towards zero with time (Finagle's decay), the peak's excess over the
        // baseline also with the service's samples since this endpoint's last one.
        const w = decay(now - ep.ewmaStamp, this.#ewmaDecayMs);
        const base = ep.ewmaBaseMs * w;
        const current = peakEwmaEstimate(ep, clock.samples, clock.span, clock.recentMs) * w;
        const success = verdict === 'success';
        // A failure's latency is a lower bound: it may raise the estimates, never lower them.
        if (success || rtt >= current) {
          // One sample raises the baseline by at most EWMA_BASE_ALPHA / 4 (3%) of itself: a
          // spike barely moves it, a backend that stays slower raises it with every sample.
          if (base === 0) {
            if (success) ep.ewmaBaseMs = rtt;
          } else {
            const step = Math.min(rtt - base, base / 4);
            ep.ewmaBaseMs = success || step > 0 ? base + step * EWMA_BASE_ALPHA : base;
          }
          ep.ewmaMs = Math.max(rtt, current);
          // Clearly slower than the service as of late (its own baseline while the service has no
          // recent latency): the next fade takes twice as long. Slower than its own past but not
          // than the rest — the whole machine or this process stalled — is no strike.
          const ref = clock.recentMs > 0 ? clock.recentMs : base;
          if (ref > 0 && rtt > 2 * ref) {
            if (ep.ewmaStrikes < EWMA_MAX_STRIKES) ep.ewmaStrikes++;
          } else if (success) ep.ewmaStrikes = 0;
          ep.ewmaStamp = now;
          ep.ewmaSeq = clock.samples + 1;
        }
      }
      if (verdict === 'success') {
        // The service's recent latency: each success weighs one over the endpoint count.
        const r = clock.recentMs;
        clock.recentMs = r === 0 ? rtt : r + (rtt - r) * (EWMA_SPAN_PER_ENDPOINT / clock.span);
      }
      clock.samples++;
    }
    if (verdict !== 'ignore') {
      const failed = verdict !== 'success';
      if (failed) ep.failures++;
      // The failure rate: each attempt weighs FAIL_RATE_ALPHA, whatever it took (a weight growing
      // with the attempt's duration would let fast failures weigh less than slow successes), and
      // the past also fades with time, so an endpoint avoided for failing is judged afresh when
      // it is next tried.
      const w = decay(now - ep.failStamp, this.#ewmaDecayMs) * (1 - FAIL_RATE_ALPHA);
      ep.failRate = ep.failRate * w + (failed ? 1 - w : 0);
      ep.failStamp = now;
      const observers = this.#observers;
      for (let i = 0; i < observers.length; i++) {
        (observers[i] as AttemptObserver)(ep, verdict, status, now - start, now);
      }
    }
    this.hooks.attemptEnded(
      this,
      ep,
      attempt,
      now - start,
      outcome,
      status,
      error,
      retryReason,
      transport,
      verdict,
    );
    const attempts = this.events.attempts;
    if (attempts.wanted) {
      attempts.emit({
        service: this.name,
        endpoint: ep,
        attempt,
        durationMs: now - start,
        outcome,
        status,
        error,
        retryReason,
        transport,
        verdict,
      });
    }
  }

  /** The clock (`now()`) as of the last attempt's end (what `endAttempt` read) or rebuild. */
  get clockMs(): number {
    return this.#clock.ms;
  }

  #observers: AttemptObserver[] = [];
  /** Adds a synchronous per-attempt observer (outlier detection, penalties); returns a remover. */
  addObserver(observer: AttemptObserver): () => void {
    this.#observers = [...this.#observers, observer];
    return () => {
      this.#observers = this.#observers.filter((o) => o !== observer);
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.resilience.close();
    this.#balancer.close?.();
    for (const st of this.#all) this.#removed(st);
    this.#wake();
    this.#notifyWatchers();
    this.#watchers = [];
  }

  /** An endpoint left: transports free what they hold for it (watch), telemetry is told (event). */
  #removed(st: EndpointState): void {
    this.hooks.endpointRemoved(st);
    this.events.emit('endpointRemoved', { service: this.name, endpoint: st });
  }

  get closed(): boolean {
    return this.#closed;
  }
}

/**
 * Called at the end of every attempt that says something about its endpoint (not for `ignore`
 * verdicts), with its verdict, status (HTTP status or gRPC code) and duration.
 */
export type AttemptObserver = (
  ep: EndpointState,
  verdict: Verdict,
  status: number | undefined,
  durationMs: number,
  now: number,
) => void;

/**
 * The verdict of an attempt from its outcome and status, for transports that report no verdict of
 * their own: HTTP 502/503/504 and gRPC UNAVAILABLE are gateway errors, any other status is an
 * answer (4xx and a 500 are the application's); gRPC CANCELLED and DEADLINE_EXCEEDED and
 * cancelled attempts say nothing; other outcomes without a status (connect failure, reset,
 * timeout, transport error) are local failures.
 */
export function verdictOf(transport: 'http' | 'grpc', outcome: Outcome, status: number | undefined): Verdict {
  if (outcome === 'cancelled') return 'ignore';
  if (status !== undefined) {
    if (transport === 'grpc') {
      if (status === 14) return 'gateway_error';
      if (status === 1 || status === 4) return 'ignore';
      return 'success';
    }
    return status === 502 || status === 503 || status === 504 ? 'gateway_error' : 'success';
  }
  return outcome === 'success' ? 'success' : 'local_failure';
}

/**
 * `e^(-elapsed/tau)` (1 for a negative elapsed time). Observations of a busy endpoint come well
 * within a thousandth of the time constant of each other: there a second-order expansion is
 * exact to 1e-10 and spares a `Math.exp` on every attempt's end.
 */
function decay(elapsed: number, tau: number): number {
  if (!(elapsed > 0)) return 1;
  const x = elapsed / tau;
  return x < 0.001 ? 1 - x + 0.5 * x * x : Math.exp(-x);
}

function isAvoided(ep: EndpointState, avoid: EndpointState | readonly EndpointState[]): boolean {
  return ep === avoid || (Array.isArray(avoid) && avoid.includes(ep));
}

interface MatchResult {
  /** The new list of states, when it differs from the previous one past its first `same`. */
  readonly list: EndpointState[] | undefined;
  readonly same: number;
  readonly added: number;
  changed: boolean;
  readonly reweighted: EndpointState[] | undefined;
  /** Where each part starts in the list (when it lists every endpoint once). */
  readonly offsets: Int32Array;
  /** (start, length) pairs of the previous list's blocks taken whole for skipped parts (not marked). */
  readonly skipped: readonly number[];
  /** How many endpoints the parts hold in all (duplicates included). */
  readonly total: number;
  readonly bailed: boolean;
}

const EMPTY_MATCH: MatchResult = {
  list: undefined,
  same: 0,
  added: 0,
  changed: false,
  reweighted: undefined,
  offsets: NO_OFFSETS,
  skipped: [],
  total: 0,
  bailed: false,
};

function sameOrder(a: readonly EndpointState[], b: readonly EndpointState[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const QUEUE_RESULT: PickResult = Object.freeze({ kind: 'queue' });
/** The picker of a service whose discovery has not answered yet: requests wait for it. */
export const QUEUE_PICKER: Picker = Object.freeze({ pick: () => QUEUE_RESULT });

export type { Endpoint };
