import type { EndpointState, PickResult } from '../endpoint-state.js';
import { s } from '../schema.js';
import type { LoadBalancer, LoadBalancerFactory, Picker } from './types.js';

/** The shared cursor survives picker rebuilds, so an endpoint change does not restart at index 0. */
class Cursor {
  value = Math.floor(Math.random() * 1_000_000);
}

class RoundRobinPicker implements Picker {
  readonly #endpoints: readonly EndpointState[];
  readonly #cursor: Cursor;
  constructor(endpoints: readonly EndpointState[], cursor: Cursor) {
    this.#endpoints = endpoints;
    this.#cursor = cursor;
  }
  pick(): PickResult {
    const eps = this.#endpoints;
    let i = this.#cursor.value;
    if (i >= eps.length) i %= eps.length;
    this.#cursor.value = i + 1;
    return (eps[i] as EndpointState).picked;
  }
}

const roundRobinOptions = s.object(
  {},
  { name: 'RoundRobinOptions', doc: 'Each endpoint in turn (weights ignored); no options.' },
);

/** `round_robin`: each endpoint in turn, ignoring weights (as Envoy's and grpc-js' round_robin). */
export const roundRobin: LoadBalancerFactory<undefined> = {
  name: 'round_robin',
  schema: roundRobinOptions,
  parseConfig(raw, path, issues) {
    roundRobinOptions.parse(raw, path, issues);
    return undefined;
  },
  create(): LoadBalancer {
    const cursor = new Cursor();
    // Weights play no part in round robin: a weight change needs no new picker.
    return { liveWeights: true, update: (endpoints) => new RoundRobinPicker(endpoints, cursor) };
  },
};
