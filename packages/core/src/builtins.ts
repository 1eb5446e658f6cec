import { staticDiscovery } from './discovery/static.js';
import { leastRequest } from './lb/least-request.js';
import { roundRobin } from './lb/round-robin.js';
import { registerDiscovery, registerLoadBalancer } from './registry.js';

/** Registers the built-in policies and sources, exactly as a third party would register its own. */
export function registerBuiltins(): void {
  registerLoadBalancer(roundRobin);
  registerLoadBalancer(leastRequest);
  registerDiscovery(staticDiscovery);
}
