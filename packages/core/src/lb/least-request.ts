import type { EndpointState, PickResult } from '../endpoint-state.js';
import { s } from '../schema.js';
import type { LoadBalancer, LoadBalancerFactory, Picker } from './types.js';

export interface LeastRequestConfig {
  /** Endpoints sampled per pick; the least loaded wins (Envoy's `choice_count`, default 2: P2C). */
  readonly choiceCount: number;
  /** Weighted mode: weight / (active + 1)^bias (Envoy's `active_request_bias`, default 1). */
  readonly activeRequestBias: number;
}

/**
 * Samples `choiceCount` distinct-ish endpoints uniformly and keeps the one with the fewest requests
 * in flight (the "power of two choices"). With unequal weights it compares
 * `weight / (active + 1)^bias` instead, as Envoy does.
 */
class LeastRequestPicker implements Picker {
  readonly #eps: readonly EndpointState[];
  readonly #choices: number;
  readonly #weighted: boolean;
  readonly #bias: number;
  constructor(eps: readonly EndpointState[], config: LeastRequestConfig) {
    this.#eps = eps;
    this.#choices = Math.min(config.choiceCount, eps.length);
    this.#bias = config.activeRequestBias;
    this.#weighted = eps.some((e) => e.lbWeight !== (eps[0] as EndpointState).lbWeight);
  }

  pick(): PickResult {
    const eps = this.#eps;
    const n = eps.length;
    if (n === 1) return (eps[0] as EndpointState).picked;
    // One random draw gives two distinct endpoints: the integer part the first, the fraction the
    // second among the other n - 1. Further choices may repeat.
    const r = Math.random() * n;
    const i = r | 0;
    let best = eps[i] as EndpointState;
    let cand = eps[(i + 1 + (((r - i) * (n - 1)) | 0)) % n] as EndpointState;
    for (let c = 1; c < this.#choices; c++) {
      if (c > 1) cand = eps[(Math.random() * n) | 0] as EndpointState;
      if (this.#weighted ? this.#score(cand) > this.#score(best) : cand.active < best.active) best = cand;
    }
    return best.picked;
  }

  #score(e: EndpointState): number {
    const w = e.lbWeight;
    return this.#bias === 1 ? w / (e.active + 1) : w / (e.active + 1) ** this.#bias;
  }
}

const leastRequestOptions = s.object(
  {
    choiceCount: s.integer({
      min: 2,
      max: 100,
      default: 2,
      doc: 'Endpoints sampled per pick (power of two choices: 2).',
    }),
    activeRequestBias: s.number({
      min: 0,
      max: 10,
      default: 1,
      doc: "How strongly outstanding requests lower a weighted endpoint's share (Envoy's active_request_bias).",
    }),
  },
  {
    name: 'LeastRequestOptions',
    doc: 'The endpoint with the fewest outstanding requests among a few sampled.',
  },
);

export const leastRequest: LoadBalancerFactory<LeastRequestConfig> = {
  name: 'least_request',
  schema: leastRequestOptions,
  parseConfig(raw, path, issues) {
    const o = leastRequestOptions.parse(raw, path, issues) ?? leastRequestOptions.parse({}, path, []);
    return Object.freeze({ choiceCount: o?.choiceCount ?? 2, activeRequestBias: o?.activeRequestBias ?? 1 });
  },
  create(config): LoadBalancer {
    config ??= Object.freeze({ choiceCount: 2, activeRequestBias: 1 });
    return { update: (endpoints) => new LeastRequestPicker(endpoints, config) };
  },
};
