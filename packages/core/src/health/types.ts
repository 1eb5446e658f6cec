import type { ConfigIssue } from '../errors.js';
import { Registry } from '../registry.js';
import type { Fields, ObjectSchema } from '../schema.js';

/** Where a health check goes: one endpoint of a service. */
export interface HealthCheckTarget {
  readonly service: string;
  readonly address: string;
  readonly port: number;
  /** The endpoint's logical host name, when discovery knows one. */
  readonly hostname?: string | undefined;
}

export interface HealthCheckResult {
  readonly healthy: boolean;
  /** Why (a status code, an error message): reported in `health` events. */
  readonly reason: string;
}

/** One configured check: probes a target once. Must settle by the time `signal` aborts. */
export interface HealthChecker {
  check(target: HealthCheckTarget, signal: AbortSignal): Promise<HealthCheckResult>;
}

/**
 * A registered kind of active health check (`http`, `tcp`, or a third party's), chosen with
 * `healthCheck: { type: '<name>', ... }`. Built-ins register exactly like third-party checkers.
 */
export interface HealthCheckerFactory<C = unknown> {
  readonly name: string;
  /** The checker's own options, for the JSON Schema and the generated types (`HealthCheckers`). */
  readonly schema?: ObjectSchema<Fields, boolean> | undefined;
  /** Validates the checker's own options (the common ones are already removed). */
  parseConfig(raw: Readonly<Record<string, unknown>>, path: string, issues: ConfigIssue[]): C;
  create(config: C): HealthChecker;
}

export const healthCheckers = new Registry<HealthCheckerFactory<unknown>>('health checker');

export function registerHealthChecker<C>(factory: HealthCheckerFactory<C>): void {
  healthCheckers.register(factory as HealthCheckerFactory<unknown>);
}
