import type { Endpoint } from '../model.js';
import { s } from '../schema.js';
import { endpointListSchema, parseEndpointList } from './endpoints.js';
import type { DiscoveryFactory, DiscoveryListener, DiscoverySource } from './types.js';

export interface StaticDiscoveryConfig {
  readonly endpoints: readonly Endpoint[];
}

class StaticSource implements DiscoverySource {
  readonly #endpoints: readonly Endpoint[];
  constructor(endpoints: readonly Endpoint[]) {
    this.#endpoints = endpoints;
  }
  start(listener: DiscoveryListener): void {
    // Delivered synchronously so that a static mesh can route before `ready()` is awaited.
    listener.onUpdate({ endpoints: this.#endpoints, version: 'static' });
  }
  close(): void {}
}

const staticOptions = s.object(
  { endpoints: endpointListSchema },
  { name: 'StaticDiscoveryInput', doc: 'A fixed list of endpoints from the config.' },
);

/** `endpoints: [...]` — a fixed list from the config. */
export const staticDiscovery: DiscoveryFactory<StaticDiscoveryConfig> = {
  name: 'static',
  shorthand: 'endpoints',
  schema: staticOptions,
  shorthandSchema: endpointListSchema.with({
    doc: 'A fixed list of endpoints: `"host:port"`, `"[v6]:port"` or `{ address, port, … }`.',
    defaultText: 'none',
  }),
  parseShorthand(value, path, issues) {
    return Object.freeze({ endpoints: Object.freeze(parseEndpointList(value, path, issues)) });
  },
  parseConfig(raw, path, issues) {
    const o = staticOptions.parse(raw, path, issues);
    return Object.freeze({ endpoints: Object.freeze(o?.endpoints ?? []) });
  },
  create(config) {
    return new StaticSource(config.endpoints);
  },
};
