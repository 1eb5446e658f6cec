import type { Endpoint } from '../model.js';
import { checkKeys } from '../validate.js';
import { parseEndpointList } from './endpoints.js';
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

/** `endpoints: [...]` — a fixed list from the config. */
export const staticDiscovery: DiscoveryFactory<StaticDiscoveryConfig> = {
  name: 'static',
  shorthand: 'endpoints',
  parseConfig(raw, path, issues) {
    checkKeys(raw, ['endpoints'], path, issues);
    return Object.freeze({
      endpoints: Object.freeze(parseEndpointList(raw.endpoints, `${path}.endpoints`, issues)),
    });
  },
  create(config) {
    return new StaticSource(config.endpoints);
  },
};
