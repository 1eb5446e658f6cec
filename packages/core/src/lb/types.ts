import type { EndpointState, PickResult } from '../endpoint-state.js';
import type { ConfigIssue } from '../errors.js';
import type { Fields, ObjectSchema } from '../schema.js';
import type { HeaderInput } from './hash.js';

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
   * priority and locality) whenever that set changes. Never called with an empty array. May be
   * called several times per rebuild (one picker per priority level or locality); weights to honour
   * are in `EndpointState.lbWeight` (endpoint weight with slow start applied).
   */
  update(endpoints: readonly EndpointState[]): Picker;
  /** Releases timers or caches. */
  close?(): void;
  /**
   * Hash-based policies compute a request's affinity hash here (called once per request by the
   * transport through `ServiceRuntime.requestHash`). Policies without it get `hash: undefined`.
   */
  requestHash?(headers: HeaderInput, sourceIp?: string | undefined): number;
  /**
   * False for policies that must see a whole priority level at once (ring_hash, maglev: Envoy
   * applies neither locality weights nor zone-aware routing to them). Default true.
   */
  readonly localityAware?: boolean;
  /** Decay window (ms) of the peak-EWMA latency estimate the runtime keeps (default 10s). */
  readonly ewmaDecayMs?: number;
  /**
   * True when the policy's pickers read `EndpointState.lbWeight` when they pick (or ignore
   * weights): a discovery update that changes only endpoint weights then updates `lbWeight` in
   * place instead of building new pickers. Default false (pickers keep what `update` saw).
   */
  readonly liveWeights?: boolean;
  /**
   * True when the policy balances by the endpoints' load reports (ORCA): transports then ask for
   * them (HTTP: `endpoint-load-metrics-format`). Default false (reports that come are still kept).
   */
  readonly loadReports?: boolean;
  /**
   * When set, the policy wants the endpoints' out-of-band load reports (ORCA's `OpenRcaService`
   * stream) at this period (ms): transports that have such a stream (gRPC) open one per
   * connection. Default undefined (per-response reports only).
   */
  readonly oobLoadReportPeriodMs?: number | undefined;
}

/** What the runtime offers a balancer when it creates one. */
export interface LbContext {
  /** The service's clock in ms (`performance.now()` unless a test injects one). */
  readonly now: () => number;
  /**
   * The clock as of the latest attempt end or rebuild, kept by the runtime: a property read for
   * pickers that need "about now" on the hot path without paying for a clock call.
   */
  readonly clock?: LbClock;
}

/** What the runtime keeps up to date for its pickers (plain fields, read on the hot path). */
export interface LbClock {
  /** The service's clock (ms) as of the latest attempt end or rebuild. */
  readonly ms: number;
  /**
   * Latency samples the service has taken so far (attempt ends that measured a latency): the
   * "age" of an endpoint's peak-EWMA excess is counted in them (`EndpointState.ewmaSeq`).
   */
  readonly samples?: number;
  /**
   * Over how many of the service's samples the excess of an endpoint's latency peak over its
   * baseline fades out: 4 × the endpoint count, i.e. about four of its own samples at a fair share.
   */
  readonly span?: number;
  /**
   * The service's recent latency (ms): an EWMA of its successful samples, each weighing one over
   * the endpoint count (about the last round of the set); 0 before the first. The floor an avoided
   * endpoint's estimate fades to when lower than its baseline, and what a strike is judged against.
   */
  readonly recentMs?: number;
}

/** A registered load-balancing policy. Built-ins register exactly like third-party ones. */
export interface LoadBalancerFactory<C = unknown> {
  /** The name used in config: `lb: 'round_robin'` or `lb: { policy: 'round_robin', ... }`. */
  readonly name: string;
  /**
   * The policy's options (everything but `policy`), for the JSON Schema and the generated types
   * (`LbPolicies`). A policy registered without one accepts any options in editors.
   */
  readonly schema?: ObjectSchema<Fields, boolean> | undefined;
  /** Validates the policy's options (everything but `policy`); pushes issues under `path`. */
  parseConfig(raw: Readonly<Record<string, unknown>>, path: string, issues: ConfigIssue[]): C;
  /** `ctx` is always given by the runtime; standalone use (tests, benchmarks) may omit it. */
  create(config: C, ctx?: LbContext): LoadBalancer;
}

/** A policy name together with its parsed options. */
export interface LbSelection {
  readonly policy: string;
  readonly config: unknown;
}
