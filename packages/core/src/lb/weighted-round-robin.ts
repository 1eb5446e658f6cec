import type { EndpointState, PickResult } from '../endpoint-state.js';
import { s } from '../schema.js';
import type { LoadBalancer, LoadBalancerFactory, Picker } from './types.js';

/**
 * Earliest-deadline-first scheduling over endpoint weights (as Envoy's and grpc-js' weighted
 * round robin): every endpoint has a virtual deadline that advances by `1 / weight` each time it
 * is picked, and the endpoint with the earliest deadline goes next. Over any window an endpoint
 * gets `weight / sum(weights)` of the picks, interleaved smoothly (no bursts to a heavy endpoint).
 *
 * A binary heap makes a pick O(log n); equal weights take an O(1) round-robin fast path.
 * Initial deadlines are offset at random within one period so that many clients do not march in
 * lock step.
 */
class EdfPicker implements Picker {
  readonly #eps: readonly EndpointState[];
  /** Heap of endpoint indices ordered by `#deadline[idx]`. */
  readonly #heap: Int32Array;
  readonly #deadline: Float64Array;
  readonly #period: Float64Array;
  constructor(eps: readonly EndpointState[]) {
    const n = eps.length;
    this.#eps = eps;
    this.#heap = new Int32Array(n);
    this.#deadline = new Float64Array(n);
    this.#period = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const w = (eps[i] as EndpointState).lbWeight;
      const p = w > 0 ? 1 / w : 1e9;
      this.#period[i] = p;
      this.#deadline[i] = Math.random() * p;
      this.#heap[i] = i;
    }
    for (let i = (n >> 1) - 1; i >= 0; i--) this.#down(i);
  }

  #down(pos: number): void {
    const heap = this.#heap;
    const dl = this.#deadline;
    const n = heap.length;
    const item = heap[pos] as number;
    const d = dl[item] as number;
    for (;;) {
      let child = 2 * pos + 1;
      if (child >= n) break;
      const right = child + 1;
      if (right < n && (dl[heap[right] as number] as number) < (dl[heap[child] as number] as number))
        child = right;
      const c = heap[child] as number;
      if ((dl[c] as number) >= d) break;
      heap[pos] = c;
      pos = child;
    }
    heap[pos] = item;
  }

  pick(): PickResult {
    const top = this.#heap[0] as number;
    this.#deadline[top] = (this.#deadline[top] as number) + (this.#period[top] as number);
    this.#down(0);
    return (this.#eps[top] as EndpointState).picked;
  }
}

class EqualPicker implements Picker {
  readonly #eps: readonly EndpointState[];
  #next: number;
  constructor(eps: readonly EndpointState[]) {
    this.#eps = eps;
    this.#next = (Math.random() * eps.length) | 0;
  }
  pick(): PickResult {
    const eps = this.#eps;
    const i = this.#next;
    this.#next = i + 1 === eps.length ? 0 : i + 1;
    return (eps[i] as EndpointState).picked;
  }
}

const wrrOptions = s.object(
  {},
  {
    name: 'WeightedRoundRobinOptions',
    doc: 'Endpoints in turn in proportion to their weights (EDF); no options.',
  },
);

/** `weighted_round_robin`: EDF over `EndpointState.lbWeight` (endpoint weight × slow start). */
export const weightedRoundRobin: LoadBalancerFactory<undefined> = {
  name: 'weighted_round_robin',
  schema: wrrOptions,
  parseConfig(raw, path, issues) {
    wrrOptions.parse(raw, path, issues);
    return undefined;
  },
  create(): LoadBalancer {
    return {
      update(eps) {
        const w0 = (eps[0] as EndpointState).lbWeight;
        return eps.every((e) => e.lbWeight === w0) ? new EqualPicker(eps) : new EdfPicker(eps);
      },
    };
  },
};
