import type { DiscoveryFactory } from './discovery/types.js';
import type { ConfigIssue } from './errors.js';
import type { LoadBalancerFactory } from './lb/types.js';

/**
 * A named registry. Built-in policies and sources register themselves here exactly as a third
 * party would (as grpc-js does with `registerLoadBalancerType`); the core never switches on names.
 */
export class Registry<T extends { readonly name: string }> {
  readonly #items = new Map<string, T>();
  constructor(readonly kind: string) {}

  register(item: T): void {
    this.#items.set(item.name, item);
  }

  get(name: string): T | undefined {
    return this.#items.get(name);
  }

  names(): string[] {
    return [...this.#items.keys()].sort();
  }

  /** Looks a name up, recording a config issue that lists the known names when it is absent. */
  lookup(name: string, path: string, issues: ConfigIssue[]): T | undefined {
    const item = this.#items.get(name);
    if (!item)
      issues.push({ path, message: `unknown ${this.kind} "${name}"; known: ${this.names().join(', ')}` });
    return item;
  }
}

export const loadBalancers = new Registry<LoadBalancerFactory<unknown>>('load-balancing policy');
export const discoverySources = new Registry<DiscoveryFactory<unknown>>('discovery type');

export function registerLoadBalancer<C>(factory: LoadBalancerFactory<C>): void {
  loadBalancers.register(factory as LoadBalancerFactory<unknown>);
}

export function registerDiscovery<C>(factory: DiscoveryFactory<C>): void {
  discoverySources.register(factory as DiscoveryFactory<unknown>);
}
