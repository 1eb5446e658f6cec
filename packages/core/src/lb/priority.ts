import { formatDuration } from '../duration.js';
import type { EndpointState, PickResult } from '../endpoint-state.js';
import type { ConfigIssue } from '../errors.js';
import { type Locality, localityKey, sameLocality } from '../model.js';
import { s } from '../schema.js';
import { isPlainObject } from '../validate.js';
import { fmix32 } from './hash.js';
import type { LoadBalancer, PickContext, Picker } from './types.js';

/**
 * Service-level balancing options shared by every policy (config key `balancing`, valid in
 * `defaults` and in each service). See docs/load-balancing.md.
 */
export interface BalancingConfig {
  /** Envoy's overprovisioning factor in percent (140 = 1.4): a priority at >= 1/1.4 ≈ 72% health takes all its load. */
  readonly overprovisioningFactor: number;
  /** Split a priority's traffic across localities by locality weight, when endpoints carry one. Default true. */
  readonly localityWeighted: boolean;
  /** Locality weights by `region/zone/subZone`, for discovery sources that give none. */
  readonly localityWeights: Readonly<Record<string, number>>;
  readonly zoneAware: {
    /** Prefer endpoints in the local zone (`local.zone`) while it has the capacity. Default true. */
    readonly enabled: boolean;
    /** Zone-aware routing is off for priorities with fewer endpoints than this (Envoy: 6). */
    readonly minClusterSize: number;
  };
  readonly slowStart: {
    /** Ramp window for new endpoints in ms; 0 disables slow start. Default 0. */
    readonly windowMs: number;
    /** Shape of the ramp: weight × (t / window)^(1/aggression). Default 1 (linear). */
    readonly aggression: number;
    /** The smallest weight multiplier during the ramp, in percent (Envoy: 10). */
    readonly minWeightPercent: number;
  };
  readonly penalty: {
    /** Statuses that put an endpoint in the penalty box (default [429, 503]). */
    readonly statuses: readonly number[];
    /** Penalty when such a response has no Retry-After, in ms (default 0: only with Retry-After). */
    readonly defaultMs: number;
    /** Cap on a Retry-After penalty, in ms (default 30s). */
    readonly maxMs: number;
  };
}

export const DEFAULT_BALANCING: BalancingConfig = Object.freeze({
  overprovisioningFactor: 140,
  localityWeighted: true,
  localityWeights: Object.freeze({}),
  zoneAware: Object.freeze({ enabled: true, minClusterSize: 6 }),
  slowStart: Object.freeze({ windowMs: 0, aggression: 1, minWeightPercent: 10 }),
  penalty: Object.freeze({ statuses: Object.freeze([429, 503]), defaultMs: 0, maxMs: 30_000 }),
});

const D = DEFAULT_BALANCING;

/** `balancing`: options every policy shares (docs/load-balancing.md). */
export const balancingSchema = s.object(
  {
    overprovisioningFactor: s.number({
      min: 1,
      max: 10_000,
      default: D.overprovisioningFactor,
      doc: "Envoy's overprovisioning factor in percent (140 = 1.4): a priority at >= 1/1.4 ≈ 72% health takes all its load.",
    }),
    localityWeighted: s.boolean({
      default: D.localityWeighted,
      doc: "Split a priority's traffic across localities by locality weight, when endpoints carry one.",
    }),
    localityWeights: s.record(s.number({ min: 0 }), {
      default: {},
      doc: 'Locality weights by `region/zone/subZone`, for discovery sources that give none.',
    }),
    zoneAware: s.union(
      [
        s.boolean(),
        s.object(
          {
            enabled: s.boolean({
              default: D.zoneAware.enabled,
              doc: 'Prefer endpoints in the local zone (`local.zone`) while it has the capacity.',
            }),
            minClusterSize: s.integer({
              min: 0,
              default: D.zoneAware.minClusterSize,
              doc: 'Zone-aware routing is off for priorities with fewer endpoints than this (Envoy: 6).',
            }),
          },
          { name: 'ZoneAwareInput' },
        ),
      ],
      { doc: 'Zone-aware routing; a boolean is short for `{ enabled }`.', default: true },
    ),
    slowStart: s.object(
      {
        window: s.duration({
          default: D.slowStart.windowMs,
          doc: 'Ramp window for new endpoints; 0 disables slow start.',
        }),
        aggression: s.number({
          min: 0.01,
          max: 100,
          default: D.slowStart.aggression,
          doc: 'Shape of the ramp: weight × (t / window)^(1/aggression); 1 is linear.',
        }),
        minWeightPercent: s.number({
          min: 0,
          max: 100,
          default: D.slowStart.minWeightPercent,
          doc: 'The smallest weight multiplier during the ramp, in percent.',
        }),
      },
      {
        name: 'SlowStartInput',
        doc: 'Slow start: new endpoints ramp up their share of traffic.',
        defaultText: 'off',
      },
    ),
    penalty: s.union(
      [
        s.literal(false),
        s.object(
          {
            statuses: s.array(s.integer({ min: 100, max: 599 }), {
              message: 'must be a list of status codes',
              default: [...D.penalty.statuses],
              doc: 'Statuses that put an endpoint in the penalty box.',
            }),
            default: s.duration({
              default: D.penalty.defaultMs,
              doc: 'Penalty when such a response has no Retry-After; 0: only with Retry-After.',
            }),
            max: s.duration({
              default: formatDuration(D.penalty.maxMs),
              doc: 'Cap on a Retry-After penalty.',
            }),
          },
          { name: 'PenaltyInput' },
        ),
      ],
      {
        doc: 'The Retry-After penalty box: an endpoint answering 429/503 with Retry-After is avoided that long; `false` turns it off.',
        defaultText: 'on (429 and 503, at most 30s)',
      },
    ),
  },
  {
    name: 'BalancingInput',
    doc: 'Balancing options every policy shares: priorities, localities, slow start, penalties.',
    defaultText: 'the default of each field',
  },
);

/** Parses the `balancing` section on top of `DEFAULT_BALANCING`. */
export function parseBalancing(raw: unknown, path: string, issues: ConfigIssue[]): BalancingConfig {
  const o = balancingSchema.parse(raw, path, issues);
  if (!o) return DEFAULT_BALANCING;
  const z = o.zoneAware;
  const p = o.penalty;
  return Object.freeze({
    overprovisioningFactor: o.overprovisioningFactor,
    localityWeighted: o.localityWeighted,
    localityWeights: Object.freeze({ ...o.localityWeights }),
    zoneAware:
      typeof z === 'boolean'
        ? Object.freeze({ ...D.zoneAware, enabled: z })
        : Object.freeze({ enabled: z.enabled, minClusterSize: z.minClusterSize }),
    slowStart: o.slowStart
      ? Object.freeze({
          windowMs: o.slowStart.window,
          aggression: o.slowStart.aggression,
          minWeightPercent: o.slowStart.minWeightPercent,
        })
      : D.slowStart,
    penalty:
      p === false
        ? Object.freeze({ statuses: Object.freeze([]), defaultMs: 0, maxMs: 0 })
        : p
          ? Object.freeze({ statuses: Object.freeze(p.statuses), defaultMs: p.default, maxMs: p.max })
          : D.penalty,
  });
}

export function balancingOf(extensions: Readonly<Record<string, unknown>>): BalancingConfig {
  const b = extensions.balancing;
  return isPlainObject(b) ? (b as unknown as BalancingConfig) : DEFAULT_BALANCING;
}

/** Envoy's slow-start multiplier: max(minWeight, (max(t, 1s) / window)^(1/aggression)), 1 after the window. */
export function slowStartFactor(elapsedMs: number, cfg: BalancingConfig['slowStart']): number {
  if (cfg.windowMs <= 0 || elapsedMs >= cfg.windowMs) return 1;
  const timeFactor = Math.min(1, Math.max(elapsedMs, 1000) / cfg.windowMs);
  const f = cfg.aggression === 1 ? timeFactor : timeFactor ** (1 / cfg.aggression);
  return Math.max(cfg.minWeightPercent / 100, f);
}

/** What a rebuild needs to plan the pickers of one service. */
export interface PlanInput {
  readonly all: readonly EndpointState[];
  readonly now: number;
  /** Percent of usable endpoints in a priority below which it balances over all of them (0 = never). */
  readonly panicThreshold: number;
  readonly config: BalancingConfig;
  /** This workload's locality (`config.local`), for zone-aware routing. */
  readonly local: Pick<Locality, 'region' | 'zone'> | undefined;
  readonly balancer: LoadBalancer;
  /** Optional narrowing of each endpoint set before the balancer sees it (extensions). */
  readonly filter:
    | ((usable: readonly EndpointState[], all: readonly EndpointState[]) => readonly EndpointState[])
    | undefined;
  /** The previous plan's per-locality host arrays, reused when unchanged, and this plan's. */
  readonly hostArrays?: HostArrays | undefined;
}

/**
 * Per-locality host arrays (by priority, health and locality) kept from one plan to the next by
 * the caller: when one endpoint changes, the localities whose hosts did not change keep their
 * arrays rather than being copied again. Arrays are never mutated once a plan made them.
 */
export interface HostArrays {
  readonly prev: ReadonlyMap<string, EndpointState[]>;
  /** Filled by the plan: give it as `prev` to the next one. */
  readonly next: Map<string, EndpointState[]>;
}

/** True when `hosts` is exactly the elements of `set` in `runs` (start, end pairs), in order. */
function holdsRuns(
  hosts: readonly EndpointState[],
  set: readonly EndpointState[],
  runs: readonly number[],
  count: number,
): boolean {
  if (hosts.length !== count) return false;
  let k = 0;
  for (let r = 0; r < runs.length; r += 2)
    for (let j = runs[r] as number; j < (runs[r + 1] as number); j++) if (hosts[k++] !== set[j]) return false;
  return true;
}

export interface Plan {
  /** Undefined when no endpoint may take traffic. */
  readonly picker: Picker | undefined;
  /** True when some priority that carries load balances over all its endpoints. */
  readonly panic: boolean;
  /** Endpoints usable on their own merits (healthy or degraded, not ejected or penalised). */
  readonly usable: number;
  /** When the plan must be recomputed (slow start step, ejection or penalty end); Infinity if never. */
  readonly refreshAt: number;
  /** Traffic share per priority level, percent (for snapshots and tests). */
  readonly priorityLoad: ReadonlyMap<number, number>;
}

interface LocalityEntry {
  /** The first locality object seen with this key (others compare equal to it). */
  readonly locality: Locality;
  readonly weight: number | undefined;
  total: number;
  hosts: EndpointState[];
  /** While the hosts are gathered: how many, and the runs of `set` they are in (start, end pairs). */
  count: number;
  runs: number[];
}

interface Group {
  readonly priority: number;
  readonly all: readonly EndpointState[];
  readonly healthy: readonly EndpointState[];
  readonly degraded: readonly EndpointState[];
}

interface MutableGroup extends Group {
  readonly all: EndpointState[];
  readonly healthy: EndpointState[];
  readonly degraded: EndpointState[];
}

/** Chooses among child pickers by weight: one random draw (or the request hash) and a short scan. */
class SplitPicker implements Picker {
  readonly #cum: Float64Array;
  readonly #children: readonly Picker[];
  readonly #total: number;
  constructor(weights: readonly number[], children: readonly Picker[]) {
    this.#children = children;
    this.#cum = new Float64Array(weights.length);
    let sum = 0;
    for (let i = 0; i < weights.length; i++) {
      sum += weights[i] as number;
      this.#cum[i] = sum;
    }
    this.#total = sum;
  }
  pick(ctx: PickContext): PickResult {
    // Hash-based requests choose their priority by hash too (Envoy), so a key sticks to a level.
    const r =
      ctx.hash === undefined ? Math.random() * this.#total : (fmix32(ctx.hash) / 0x100000000) * this.#total;
    const cum = this.#cum;
    const last = cum.length - 1;
    let i = 0;
    while (i < last && r >= (cum[i] as number)) i++;
    return (this.#children[i] as Picker).pick(ctx);
  }
}

function isLocal(l: Locality, local: Pick<Locality, 'region' | 'zone'>): boolean {
  return l.zone === local.zone && (local.region === '' || l.region === '' || l.region === local.region);
}

/**
 * Computes a service's pickers from its endpoints, following Envoy's priority, panic, locality and
 * zone-aware algorithms (source/common/upstream/load_balancer_impl.cc), documented in
 * docs/load-balancing.md. Also applies slow start to `EndpointState.lbWeight`. Off the hot path.
 */
/**
 * True when `st` may take traffic on its own merits at `now`: not draining or unhealthy (discovery
 * or active health checks), not ejected, not penalised (Retry-After).
 */
export function usableOnItsOwn(st: EndpointState, now: number): boolean {
  const h = st.endpoint.health;
  return (
    h !== 'unhealthy' &&
    h !== 'draining' &&
    st.activeHealth !== 'unhealthy' &&
    st.unreachable === 0 &&
    st.ejectedUntil <= now &&
    st.penaltyUntil <= now
  );
}

export function planPicker(input: PlanInput): Plan {
  const { all, now, config, balancer } = input;
  const ss = config.slowStart;
  const step = Math.min(1000, Math.max(50, ss.windowMs / 20));
  let refreshAt = Number.POSITIVE_INFINITY;
  const groups = new Map<number, Group>();
  const draining: EndpointState[] = [];
  let usable = 0;
  // Pass 1: weights (slow start), deadlines, and whether the set is uniform: one priority, none
  // draining, every endpoint usable and healthy (the common case, which needs no copies).
  const first = all[0];
  const firstPriority = first === undefined ? 0 : first.endpoint.priority;
  let uniform = first !== undefined;
  // Whether every endpoint has the first one's priority and none is draining (then `all` is the
  // one group's member list as it is), and how many usable endpoints are degraded.
  let onePriority = true;
  let degradedUsable = 0;
  for (let i = 0; i < all.length; i++) {
    const st = all[i] as EndpointState;
    // Slow start begins when the endpoint joins, and again when active health checks bring it back.
    if (st.activeHealth === 'healthy' && st.lbSeenHealth === 'unhealthy') st.slowStartFrom = now;
    st.lbSeenHealth = st.activeHealth;
    const f = slowStartFactor(now - st.slowStartFrom, ss);
    st.lbWeight = st.endpoint.weight * f;
    if (f < 1) refreshAt = Math.min(refreshAt, now + step);
    const h = st.endpoint.health;
    if (h === 'draining') {
      uniform = false;
      onePriority = false;
      continue;
    }
    if (st.endpoint.priority !== firstPriority) onePriority = false;
    if (st.ejectedUntil > now) refreshAt = Math.min(refreshAt, st.ejectedUntil);
    if (st.penaltyUntil > now) refreshAt = Math.min(refreshAt, st.penaltyUntil);
    if (!usableOnItsOwn(st, now)) {
      uniform = false;
      continue;
    }
    usable++;
    if (h === 'degraded') degradedUsable++;
    if (h === 'degraded' || st.endpoint.priority !== firstPriority) uniform = false;
  }
  if (uniform) {
    groups.set(firstPriority, { priority: firstPriority, all, healthy: all, degraded: [] });
  } else if (onePriority && first !== undefined) {
    // One priority, nothing draining (e.g. one endpoint of 10,000 turned unhealthy): the group's
    // members are `all` itself, and its healthy and degraded lists exact-size arrays (no copy of
    // the member list, no arrays grown by push).
    const healthy = new Array<EndpointState>(usable - degradedUsable);
    const degraded = new Array<EndpointState>(degradedUsable);
    let hi = 0;
    let di = 0;
    for (let i = 0; i < all.length; i++) {
      const st = all[i] as EndpointState;
      if (!usableOnItsOwn(st, now)) continue;
      if (st.endpoint.health === 'degraded') degraded[di++] = st;
      else healthy[hi++] = st;
    }
    groups.set(firstPriority, { priority: firstPriority, all, healthy, degraded });
  } else {
    // Pass 2: group by priority and health.
    // Endpoints of one priority usually come together: remember the last group (no lookup each).
    let g: MutableGroup | undefined;
    for (let i = 0; i < all.length; i++) {
      const st = all[i] as EndpointState;
      const h = st.endpoint.health;
      if (h === 'draining') {
        draining.push(st);
        continue;
      }
      const priority = st.endpoint.priority;
      if (g === undefined || g.priority !== priority) {
        g = groups.get(priority) as MutableGroup | undefined;
        if (!g) {
          g = { priority, all: [], healthy: [], degraded: [] };
          groups.set(priority, g);
        }
      }
      g.all.push(st);
      if (
        h === 'unhealthy' ||
        st.activeHealth === 'unhealthy' ||
        st.unreachable > 0 ||
        st.ejectedUntil > now ||
        st.penaltyUntil > now
      )
        continue;
      if (h === 'degraded') g.degraded.push(st);
      else g.healthy.push(st);
    }
  }
  const priorityLoad = new Map<number, number>();
  const leaf = (set: readonly EndpointState[]): Picker => {
    let s = set;
    if (input.filter) {
      const narrowed = input.filter(set, all);
      if (narrowed.length > 0) s = narrowed;
    }
    return balancer.update(s);
  };
  if (groups.size === 0) {
    // Only draining endpoints are left: better they serve than nothing does.
    return {
      picker: draining.length > 0 ? leaf(draining) : undefined,
      panic: false,
      usable,
      refreshAt,
      priorityLoad,
    };
  }
  const levels = [...groups.values()].sort((a, b) => a.priority - b.priority);
  const of = config.overprovisioningFactor / 100;
  const hAvail = levels.map((g) => Math.min(100, (of * 100 * g.healthy.length) / g.all.length));
  const dAvail = levels.map((g) => Math.min(100, (of * 100 * g.degraded.length) / g.all.length));
  let sum = 0;
  for (let i = 0; i < levels.length; i++) sum += (hAvail[i] as number) + (dAvail[i] as number);
  const normalizedTotal = Math.min(100, sum);
  const hLoad = new Array<number>(levels.length).fill(0);
  const dLoad = new Array<number>(levels.length).fill(0);
  if (sum >= 100) {
    // Healthy hosts of every priority first, in order, then degraded ones (Envoy).
    let remaining = 100;
    for (let i = 0; i < levels.length; i++) {
      hLoad[i] = Math.min(remaining, hAvail[i] as number);
      remaining -= hLoad[i] as number;
    }
    for (let i = 0; i < levels.length; i++) {
      dLoad[i] = Math.min(remaining, dAvail[i] as number);
      remaining -= dLoad[i] as number;
    }
  } else if (sum > 0) {
    // Not enough capacity anywhere: normalise so the levels' shares add up to 100%.
    for (let i = 0; i < levels.length; i++) {
      hLoad[i] = ((hAvail[i] as number) * 100) / sum;
      dLoad[i] = ((dAvail[i] as number) * 100) / sum;
    }
  }
  // Panic is per priority, and only when the normalised total availability is below 100%.
  const panicAt = levels.map(
    (g) =>
      normalizedTotal < 100 &&
      ((g.healthy.length + g.degraded.length) * 100) / g.all.length < input.panicThreshold,
  );
  const totalPanic = panicAt.every(Boolean);
  const weights: number[] = [];
  const children: Picker[] = [];
  let panic = false;
  if (totalPanic) {
    // Every level is in panic: spread by host count over all hosts (Envoy's total-panic load).
    let hosts = 0;
    for (const g of levels) hosts += g.all.length;
    for (const g of levels) {
      const load = (g.all.length * 100) / hosts;
      priorityLoad.set(g.priority, load);
      weights.push(load);
      children.push(leaf(g.all));
    }
    panic = true;
  } else {
    for (let i = 0; i < levels.length; i++) {
      const g = levels[i] as Group;
      const hl = hLoad[i] as number;
      const dl = dLoad[i] as number;
      priorityLoad.set(g.priority, hl + dl);
      if (hl + dl <= 0) continue;
      if (panicAt[i]) {
        panic = true;
        weights.push(hl + dl);
        children.push(leaf(g.all));
        continue;
      }
      if (hl > 0) addLocalitySplit(g.healthy, g, hl, input, leaf, weights, children);
      if (dl > 0) addLocalitySplit(g.degraded, g, dl, input, leaf, weights, children);
    }
  }
  if (children.length === 0) return { picker: undefined, panic, usable, refreshAt, priorityLoad };
  const picker = children.length === 1 ? (children[0] as Picker) : new SplitPicker(weights, children);
  return { picker, panic, usable, refreshAt, priorityLoad };
}

/**
 * Adds the pickers for `set` (the healthy or degraded hosts of one priority) carrying `load`:
 * split by locality weight (Envoy's locality-weighted LB), or by zone-aware routing, or whole.
 */
function addLocalitySplit(
  set: readonly EndpointState[],
  group: Group,
  load: number,
  input: PlanInput,
  leaf: (set: readonly EndpointState[]) => Picker,
  weights: number[],
  children: Picker[],
): void {
  const { config } = input;
  if (input.balancer.localityAware === false) {
    weights.push(load);
    children.push(leaf(set));
    return;
  }
  if (config.localityWeighted) {
    const byLocality = new Map<string, LocalityEntry>();
    let weighted = false;
    // Endpoints of one locality usually come together: its key is built once per run, not per endpoint.
    let last: LocalityEntry | undefined;
    const members = group.all;
    // When every member is in the set (the common case), the set's runs of one locality are found
    // in this same pass: one walk over the endpoints instead of two.
    const fused = set === members;
    let from = 0;
    for (let i = 0; i < members.length; i++) {
      const st = members[i] as EndpointState;
      const loc = st.endpoint.locality;
      let e = last !== undefined && sameLocality(last.locality, loc) ? last : undefined;
      if (e === undefined) {
        if (fused && last !== undefined) {
          last.runs.push(from, i);
          last.count += i - from;
        }
        from = i;
        const key = localityKey(loc);
        e = byLocality.get(key);
        if (!e) {
          e = {
            locality: loc,
            weight: st.endpoint.localityWeight ?? config.localityWeights[key],
            total: 0,
            hosts: [],
            count: 0,
            runs: [],
          };
          byLocality.set(key, e);
        }
        last = e;
      }
      if (e.weight !== undefined) weighted = true;
      e.total++;
    }
    if (fused && last !== undefined && members.length > from) {
      last.runs.push(from, members.length);
      last.count += members.length - from;
    }
    if (weighted) {
      // Each locality's hosts are one array of exact size, allocated once: a slice of `set` when
      // they form one run, else (several runs, e.g. two `LocalityLbEndpoints` of one place) an
      // exact-size copy overwritten run by run (no growth or concatenation copies).
      if (!fused) {
        from = 0;
        last = undefined;
        for (let i = 0; i <= set.length; i++) {
          const loc = i < set.length ? (set[i] as EndpointState).endpoint.locality : undefined;
          if (last !== undefined && loc !== undefined && sameLocality(last.locality, loc)) continue;
          if (last !== undefined && i > from) {
            last.runs.push(from, i);
            last.count += i - from;
          }
          if (loc === undefined) break;
          last = byLocality.get(localityKey(loc));
          from = i;
        }
      }
      const cache = input.hostArrays;
      const prefix =
        cache === undefined ? '' : `${group.priority}\u0000${set === group.degraded ? 'd' : 'h'}\u0000`;
      for (const [key, e] of byLocality) {
        const runs = e.runs;
        if (runs.length === 0) continue;
        const cacheKey = cache === undefined ? '' : prefix + key;
        const kept = cache?.prev.get(cacheKey);
        if (kept !== undefined && holdsRuns(kept, set, runs, e.count)) e.hosts = kept;
        else if (runs.length === 2) e.hosts = set.slice(runs[0], runs[1]);
        else {
          const hosts = set.slice(0, e.count);
          let k = 0;
          for (let r = 0; r < runs.length; r += 2)
            for (let j = runs[r] as number; j < (runs[r + 1] as number); j++)
              hosts[k++] = set[j] as EndpointState;
          e.hosts = hosts;
        }
        cache?.next.set(cacheKey, e.hosts);
      }
      const of = config.overprovisioningFactor / 100;
      let sum = 0;
      const parts: Array<{ w: number; hosts: EndpointState[] }> = [];
      for (const e of byLocality.values()) {
        // Effective weight: locality weight × availability (capped at 1 by overprovisioning).
        const w = (e.weight ?? 0) * Math.min(1, (of * e.hosts.length) / e.total);
        if (w > 0 && e.hosts.length > 0) {
          parts.push({ w, hosts: e.hosts });
          sum += w;
        }
      }
      if (sum > 0) {
        for (const p of parts) {
          weights.push((load * p.w) / sum);
          children.push(leaf(p.hosts));
        }
        return;
      }
    }
  }
  const local = input.local;
  if (
    config.zoneAware.enabled &&
    local !== undefined &&
    local.zone !== '' &&
    group.all.length >= config.zoneAware.minClusterSize
  ) {
    // Envoy's zone-aware routing compares the upstream's healthy share per zone with the share of
    // callers in each zone. A proxyless client does not see its own fleet, so it assumes callers
    // are spread like the upstream's endpoints (all of them, healthy or not).
    const zones = new Map<string, { total: number; hosts: EndpointState[]; local: boolean }>();
    for (const st of group.all) {
      const l = st.endpoint.locality;
      const key = isLocal(l, local) ? '\u0000local' : `${l.region}/${l.zone}`;
      let z = zones.get(key);
      if (!z) {
        z = { total: 0, hosts: [], local: key === '\u0000local' };
        zones.set(key, z);
      }
      z.total++;
    }
    for (const st of set) {
      const l = st.endpoint.locality;
      zones.get(isLocal(l, local) ? '\u0000local' : `${l.region}/${l.zone}`)?.hosts.push(st);
    }
    const mine = zones.get('\u0000local');
    if (mine && mine.hosts.length > 0) {
      const upstreamLocal = mine.hosts.length / set.length;
      const callersLocal = mine.total / group.all.length;
      if (upstreamLocal >= callersLocal || zones.size === 1) {
        weights.push(load);
        children.push(leaf(mine.hosts));
        return;
      }
      // Route the share the local zone can take locally; spill the rest to zones with spare capacity.
      const localShare = upstreamLocal / callersLocal;
      weights.push(load * localShare);
      children.push(leaf(mine.hosts));
      const others: Array<{ cap: number; hosts: EndpointState[] }> = [];
      let capSum = 0;
      let hostSum = 0;
      for (const z of zones.values()) {
        if (z.local || z.hosts.length === 0) continue;
        const cap = Math.max(0, z.hosts.length / set.length - z.total / group.all.length);
        others.push({ cap, hosts: z.hosts });
        capSum += cap;
        hostSum += z.hosts.length;
      }
      for (const o of others) {
        const share = capSum > 0 ? o.cap / capSum : o.hosts.length / hostSum;
        if (share <= 0) continue;
        weights.push(load * (1 - localShare) * share);
        children.push(leaf(o.hosts));
      }
      return;
    }
  }
  weights.push(load);
  children.push(leaf(set));
}
