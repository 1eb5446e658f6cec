import type { EndpointState, PickResult } from '../endpoint-state.js';
import { s } from '../schema.js';
import { join } from '../validate.js';
import { computeRequestHash, type HashRule, hashPolicySchema, murmur3, PickerMemo } from './hash.js';
import { hashRules } from './ring-hash.js';
import type { LoadBalancer, LoadBalancerFactory, PickContext, Picker } from './types.js';

export interface MaglevConfig {
  /** Lookup table size; must be prime (Envoy's and the paper's default: 65537). */
  readonly tableSize: number;
  /** What a request is hashed on; requests no rule matches get a random hash. */
  readonly hashPolicy: readonly HashRule[];
}

function isPrime(n: number): boolean {
  if (n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

/**
 * Builds a Maglev lookup table (Eisenbud et al., "Maglev", NSDI 2016, §3.4): every endpoint has a
 * permutation of the table's slots given by `offset = h1(id) mod M` and `skip = h2(id) mod (M-1) + 1`;
 * endpoints take turns claiming their next still-free preferred slot until the table is full.
 * Weights follow Envoy's weighted variant: on round `r` an endpoint claims a slot only while
 * `r × weight / maxWeight` has reached its claim count, so slot shares follow the weights.
 * Returns, for each slot, the index of the endpoint that owns it.
 */
export function buildMaglevTable(
  ids: readonly string[],
  weights: readonly number[],
  size: number,
): Int32Array {
  const n = ids.length;
  const table = new Int32Array(size).fill(-1);
  const cursor = new Float64Array(n);
  const skip = new Float64Array(n);
  const norm = new Float64Array(n);
  const target = new Float64Array(n);
  let maxW = 0;
  for (const w of weights) if (w > maxW) maxW = w;
  for (let i = 0; i < n; i++) {
    const id = ids[i] as string;
    cursor[i] = murmur3(id, 0x9747b28c) % size;
    skip[i] = (murmur3(id, 0x5bd1e995) % (size - 1)) + 1;
    norm[i] = (weights[i] as number) / maxW;
  }
  let filled = 0;
  for (let round = 1; filled < size; round++) {
    for (let i = 0; i < n && filled < size; i++) {
      if (round * (norm[i] as number) < (target[i] as number)) continue;
      target[i] = (target[i] as number) + 1;
      let c = cursor[i] as number;
      const s = skip[i] as number;
      while ((table[c] as number) >= 0) {
        c += s;
        if (c >= size) c -= size;
      }
      table[c] = i;
      c += s;
      cursor[i] = c >= size ? c - size : c;
      filled++;
    }
  }
  return table;
}

class MaglevPicker implements Picker {
  readonly #eps: readonly EndpointState[];
  readonly #table: Int32Array;
  readonly #size: number;
  constructor(eps: readonly EndpointState[], config: MaglevConfig) {
    this.#eps = eps;
    this.#size = config.tableSize;
    this.#table = buildMaglevTable(
      eps.map((e) => e.id),
      eps.map((e) => e.endpoint.weight),
      config.tableSize,
    );
  }
  pick(ctx: PickContext): PickResult {
    const h = ctx.hash ?? (Math.random() * 0x100000000) >>> 0;
    return (this.#eps[this.#table[(h >>> 0) % this.#size] as number] as EndpointState).picked;
  }
}

const maglevOptions = s.object(
  {
    tableSize: s.integer({
      min: 2,
      max: 5_000_011,
      default: 65537,
      doc: "Entries of the lookup table, a prime (Envoy's `table_size`).",
    }),
    hashPolicy: hashPolicySchema,
  },
  {
    name: 'MaglevOptions',
    doc: "Google's Maglev consistent hashing: a lookup table with minimal disruption.",
  },
);

/** `maglev`: consistent hashing through a Maglev lookup table (O(1) lookups). */
export const maglev: LoadBalancerFactory<MaglevConfig> = {
  name: 'maglev',
  schema: maglevOptions,
  parseConfig(raw, path, issues) {
    const o = maglevOptions.parse(raw, path, issues);
    const tableSize = o?.tableSize ?? 65537;
    if (!isPrime(tableSize))
      issues.push({ path: join(path, 'tableSize'), message: `must be a prime number, got ${tableSize}` });
    return Object.freeze({
      tableSize: isPrime(tableSize) ? tableSize : 65537,
      hashPolicy: hashRules(o?.hashPolicy),
    });
  },
  create(config): LoadBalancer {
    config ??= Object.freeze({ tableSize: 65537, hashPolicy: [] });
    const rules = config.hashPolicy;
    const memo = new PickerMemo<Picker>();
    return {
      localityAware: false,
      requestHash: (headers, sourceIp) => computeRequestHash(rules, headers, sourceIp),
      update: (eps) => memo.get(eps, () => new MaglevPicker(eps, config)),
    };
  },
};
