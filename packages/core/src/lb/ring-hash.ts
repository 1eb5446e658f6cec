import type { EndpointState, PickResult } from '../endpoint-state.js';
import { s } from '../schema.js';
import { join } from '../validate.js';
import { computeRequestHash, type HashRule, hashPolicySchema, murmur3, PickerMemo } from './hash.js';
import type { LoadBalancer, LoadBalancerFactory, PickContext, Picker } from './types.js';

export interface RingHashConfig {
  /** Lower bound on the number of points on the ring (Envoy's `minimum_ring_size`: 1024). */
  readonly minRingSize: number;
  /** Upper bound on the number of points (Envoy's `maximum_ring_size`: 8M). */
  readonly maxRingSize: number;
  /** What a request is hashed on; requests no rule matches get a random hash. */
  readonly hashPolicy: readonly HashRule[];
}

/**
 * A consistent-hash ring (Karger et al., Envoy's `RING_HASH`). Each endpoint owns
 * `round(weight × k)` points, at `murmur3("<id>_<n>")`; a request goes to the owner of the first
 * point at or after its hash (wrapping round).
 *
 * `k`, the points per unit of weight, is the smallest power of two that gives at least
 * `minRingSize` points (at most `maxRingSize`). Envoy recomputes the per-host count from the host
 * count, so a membership change shifts points between surviving hosts; rounding `k` to a power of
 * two keeps it constant across most changes, so removing one host moves only the keys it owned.
 */
export class HashRing {
  /** Point hashes, ascending. */
  readonly hashes: Uint32Array;
  /** Index (into the endpoint array) of the owner of each point. */
  readonly owners: Int32Array;

  constructor(ids: readonly string[], weights: readonly number[], minSize: number, maxSize: number) {
    let total = 0;
    for (const w of weights) total += w;
    let k = 1;
    while (k * total < minSize && k * 2 * total <= maxSize) k *= 2;
    const counts = weights.map((w) => Math.max(1, Math.round(w * k)));
    let size = 0;
    for (const c of counts) size += c;
    // Sort (hash, owner) pairs packed into one double: hash × 2^21 + owner is exact below 2^53.
    const keys = new Float64Array(size);
    let at = 0;
    for (let i = 0; i < ids.length; i++) {
      const prefix = `${ids[i]}_`;
      const c = counts[i] as number;
      for (let r = 0; r < c; r++) keys[at++] = murmur3(prefix + r) * 2097152 + i;
    }
    keys.sort();
    this.hashes = new Uint32Array(size);
    this.owners = new Int32Array(size);
    for (let p = 0; p < size; p++) {
      const key = keys[p] as number;
      const h = Math.floor(key / 2097152);
      this.hashes[p] = h;
      this.owners[p] = key - h * 2097152;
    }
  }

  /** The owner index of `hash` (a uint32): binary search for the first point >= hash. */
  lookup(hash: number): number {
    const hs = this.hashes;
    let lo = 0;
    let hi = hs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((hs[mid] as number) < hash) lo = mid + 1;
      else hi = mid;
    }
    return this.owners[lo === hs.length ? 0 : lo] as number;
  }
}

class RingPicker implements Picker {
  readonly #eps: readonly EndpointState[];
  readonly #ring: HashRing;
  constructor(eps: readonly EndpointState[], config: RingHashConfig) {
    this.#eps = eps;
    this.#ring = new HashRing(
      eps.map((e) => e.id),
      eps.map((e) => e.endpoint.weight),
      config.minRingSize,
      config.maxRingSize,
    );
  }
  pick(ctx: PickContext): PickResult {
    const h = ctx.hash ?? (Math.random() * 0x100000000) >>> 0;
    return (this.#eps[this.#ring.lookup(h >>> 0)] as EndpointState).picked;
  }
}

const ringHashOptions = s.object(
  {
    minRingSize: s.integer({
      min: 1,
      max: 8_388_608,
      default: 1024,
      doc: "Lower bound on the number of points on the ring (Envoy's `minimum_ring_size`).",
    }),
    maxRingSize: s.integer({
      min: 1,
      max: 8_388_608,
      default: 8_388_608,
      doc: "Upper bound on the number of points on the ring (Envoy's `maximum_ring_size`); >= minRingSize.",
    }),
    hashPolicy: hashPolicySchema,
  },
  { name: 'RingHashOptions', doc: 'Consistent hashing on a ring (Ketama); weights are endpoint weights.' },
);

/** The rules of a parsed `hashPolicy` (one rule or a list). */
export function hashRules(rules: HashRule | readonly HashRule[] | undefined): readonly HashRule[] {
  return Object.freeze(rules === undefined ? [] : Array.isArray(rules) ? [...rules] : [rules as HashRule]);
}

/** `ring_hash`: consistent hashing on a ring; weights are endpoint weights (no slow start). */
export const ringHash: LoadBalancerFactory<RingHashConfig> = {
  name: 'ring_hash',
  schema: ringHashOptions,
  parseConfig(raw, path, issues) {
    const o = ringHashOptions.parse(raw, path, issues);
    const minRingSize = o?.minRingSize ?? 1024;
    const maxRingSize = o?.maxRingSize ?? 8_388_608;
    if (maxRingSize < minRingSize)
      issues.push({ path: join(path, 'maxRingSize'), message: `must be >= minRingSize (${minRingSize})` });
    return Object.freeze({ minRingSize, maxRingSize, hashPolicy: hashRules(o?.hashPolicy) });
  },
  create(config): LoadBalancer {
    config ??= Object.freeze({ minRingSize: 1024, maxRingSize: 8_388_608, hashPolicy: [] });
    const rules = config.hashPolicy;
    const memo = new PickerMemo<Picker>();
    return {
      localityAware: false,
      requestHash: (headers, sourceIp) => computeRequestHash(rules, headers, sourceIp),
      update: (eps) => memo.get(eps, () => new RingPicker(eps, config)),
    };
  },
};
