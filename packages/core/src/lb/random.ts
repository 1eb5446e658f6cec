import type { EndpointState, PickResult } from '../endpoint-state.js';
import { s } from '../schema.js';
import type { LoadBalancer, LoadBalancerFactory, Picker } from './types.js';

class UniformPicker implements Picker {
  readonly #eps: readonly EndpointState[];
  constructor(eps: readonly EndpointState[]) {
    this.#eps = eps;
  }
  pick(): PickResult {
    const eps = this.#eps;
    return (eps[(Math.random() * eps.length) | 0] as EndpointState).picked;
  }
}

/**
 * Weighted random in O(1) per pick with Vose's alias method: column `i` is chosen uniformly, then
 * either endpoint `i` (with probability `prob[i]`) or its alias. Built in O(n) per rebuild.
 */
class AliasPicker implements Picker {
  readonly #eps: readonly EndpointState[];
  readonly #prob: Float64Array;
  readonly #alias: Int32Array;
  constructor(eps: readonly EndpointState[]) {
    const n = eps.length;
    this.#eps = eps;
    this.#prob = new Float64Array(n);
    this.#alias = new Int32Array(n);
    let total = 0;
    for (let i = 0; i < eps.length; i++) total += (eps[i] as EndpointState).lbWeight;
    const scaled = new Float64Array(n);
    const small: number[] = [];
    const large: number[] = [];
    for (let i = 0; i < n; i++) {
      const s = ((eps[i] as EndpointState).lbWeight * n) / total;
      scaled[i] = s;
      (s < 1 ? small : large).push(i);
    }
    while (small.length > 0 && large.length > 0) {
      const s = small.pop() as number;
      const l = large.pop() as number;
      this.#prob[s] = scaled[s] as number;
      this.#alias[s] = l;
      const rest = (scaled[l] as number) + (scaled[s] as number) - 1;
      scaled[l] = rest;
      (rest < 1 ? small : large).push(l);
    }
    for (const i of large) this.#prob[i] = 1;
    for (const i of small) this.#prob[i] = 1; // rounding leftovers
  }
  pick(): PickResult {
    const n = this.#eps.length;
    const r = Math.random() * n;
    const i = r | 0;
    const chosen = r - i < (this.#prob[i] as number) ? i : (this.#alias[i] as number);
    return (this.#eps[chosen] as EndpointState).picked;
  }
}

const randomOptions = s.object(
  {},
  { name: 'RandomOptions', doc: 'A random endpoint, by weight; no options.' },
);

/** `random`: a uniformly random endpoint, or weighted by `lbWeight` when weights differ. */
export const random: LoadBalancerFactory<undefined> = {
  name: 'random',
  schema: randomOptions,
  parseConfig(raw, path, issues) {
    randomOptions.parse(raw, path, issues);
    return undefined;
  },
  create(): LoadBalancer {
    return {
      update(eps) {
        const w0 = (eps[0] as EndpointState).lbWeight;
        return eps.every((e) => e.lbWeight === w0) ? new UniformPicker(eps) : new AliasPicker(eps);
      },
    };
  },
};
