import type { EndpointState, PickResult } from '../endpoint-state.js';
import type { ConfigIssue } from '../errors.js';

/** What a request offers the picker. Only fields a policy needs are read. */
export interface PickContext {
  /** A hash of the request's affinity key, for hash-based policies (ring_hash, maglev). */
  hash?: number | undefined;
  /** Request headers (lower-case names), for policies that hash on a header or cookie. */
  headers?: Readonly<Record<string, string | string[] | undefined>> | undefined;
  /** The 0-based attempt number. */
  attempt: number;
}

/** An immutable view that answers `pick()` on the hot path. Rebuilt when endpoints change. */
export interface Picker {
  pick(ctx: PickContext): PickResult;
}

/** A load balancer instance for one service: turns the set of usable endpoints into a picker. */
export interface LoadBalancer {
  /**
   * Called with the endpoints that may take traffic (already filtered for health, ejection,
   * priority and locality) whenever that set changes. Never called with an empty array.
   */
  update(endpoints: readonly EndpointState[]): Picker;
  /** Releases timers or caches. */
  close?(): void;
}

/** A registered load-balancing policy. Built-ins register exactly like third-party ones. */
export interface LoadBalancerFactory<C = unknown> {
  /** The name used in config: `lb: 'round_robin'` or `lb: { policy: 'round_robin', ... }`. */
  readonly name: string;
  /** Validates the policy's options (everything but `policy`); pushes issues under `path`. */
  parseConfig(raw: Readonly<Record<string, unknown>>, path: string, issues: ConfigIssue[]): C;
  create(config: C): LoadBalancer;
}

/** A policy name together with its parsed options. */
export interface LbSelection {
  readonly policy: string;
  readonly config: unknown;
}
