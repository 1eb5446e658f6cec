import diagnosticsChannel from 'node:diagnostics_channel';
import type { EndpointState } from './endpoint-state.js';
import type { Endpoint } from './model.js';

/**
 * How a request or attempt ended. `success` covers every HTTP response below 500 that is not
 * retried (4xx are the caller's business, not the upstream's health).
 */
export type Outcome =
  | 'success'
  | 'http_error'
  | 'timeout'
  | 'connect_failure'
  | 'reset'
  | 'circuit_open'
  | 'no_endpoint'
  | 'overloaded'
  | 'cancelled'
  | 'error';

/**
 * What one attempt says about its endpoint (the input of the breaker, outlier detection and the
 * balancer's failure signal), decided once by the call pipeline:
 * - `success`: the endpoint answered (any answer that is not a gateway error: 2xx–4xx, a 500 from
 *   the application, gRPC INVALID_ARGUMENT, UNIMPLEMENTED, UNKNOWN, …);
 * - `gateway_error`: the endpoint answered that it cannot serve (HTTP 502/503/504, gRPC UNAVAILABLE);
 * - `local_failure`: no answer: connect failure, reset, the mesh's own timeout (per-try, or the
 *   service/route timeout);
 * - `ignore`: says nothing about the endpoint: the caller cancelled, the caller's deadline expired,
 *   the caller's request was invalid, a hedge lost.
 */
export type Verdict = 'success' | 'gateway_error' | 'local_failure' | 'ignore';

export interface AttemptEvent {
  readonly service: string;
  readonly endpoint: EndpointState;
  /** 0 for the first attempt. */
  readonly attempt: number;
  readonly durationMs: number;
  readonly outcome: Outcome;
  /** Response status (HTTP status, or gRPC status code for gRPC transports). */
  readonly status: number | undefined;
  readonly error: Error | undefined;
  /** Why this attempt was retried, when it was. */
  readonly retryReason: string | undefined;
  readonly transport: 'http' | 'grpc';
  /** What the attempt said about the endpoint (see `Verdict`). */
  readonly verdict: Verdict;
}

export interface RequestEvent {
  readonly service: string;
  readonly method: string;
  readonly path: string;
  readonly durationMs: number;
  readonly outcome: Outcome;
  readonly status: number | undefined;
  /** Attempts made (1 when no retry). */
  readonly attempts: number;
  /** The endpoint of the last attempt, if any attempt was made. */
  readonly endpoint: EndpointState | undefined;
  readonly error: Error | undefined;
  readonly transport: 'http' | 'grpc';
}

export interface MeshEventMap {
  /** A logical request finished (after retries). */
  request: RequestEvent;
  /** One attempt finished. */
  attempt: AttemptEvent;
  /** A service's endpoint set changed (discovery update applied). */
  endpoints: {
    service: string;
    endpoints: readonly Endpoint[];
    added: number;
    removed: number;
    version?: string | undefined;
  };
  /** A discovery source failed; the last good endpoints stay in use. */
  discoveryError: { service: string; source: string; error: Error };
  /** An endpoint's mesh-level health changed (active checks, a transport's connectivity report). */
  health: { service: string; endpoint: string; healthy: boolean; reason: string };
  /** An endpoint was ejected by outlier detection, or returned. */
  ejection: { service: string; endpoint: string; ejected: boolean; reason: string; durationMs: number };
  /** The service fell below its panic threshold and balances over every endpoint. */
  panic: { service: string; panic: boolean; usable: number; total: number };
  /** A retry was decided (or refused by the budget). */
  retry: { service: string; attempt: number; reason: string; allowed: boolean; denial?: string | undefined };
  /** A circuit breaker changed state. */
  breaker: { service: string; state: 'open' | 'half_open' | 'closed' };
  /** An endpoint left the service; transports release what they hold for it. */
  endpointRemoved: { service: string; endpoint: EndpointState };
  /** Free-form diagnostics from extensions (xDS, Kubernetes, TLS). */
  log: { level: 'debug' | 'info' | 'warn' | 'error'; scope: string; message: string; data?: unknown };
}

export type MeshEventName = keyof MeshEventMap;

const EVENT_NAMES: readonly MeshEventName[] = [
  'request',
  'attempt',
  'endpoints',
  'discoveryError',
  'health',
  'ejection',
  'panic',
  'retry',
  'breaker',
  'endpointRemoved',
  'log',
];
type Listener<K extends MeshEventName> = (event: MeshEventMap[K]) => void;

/**
 * One event's listeners and its diagnostics channel. The hot paths (every request and attempt)
 * hold the slot of their event (`MeshEvents.requests`, `.attempts`) and test and emit through it:
 * no lookup by event name, which at a call site that sees several names is a megamorphic keyed
 * load (~100 instructions each; eight per request before — docs/benchmarks.md).
 */
export class EventSlot<K extends MeshEventName> {
  readonly name: K;
  readonly #listeners: Listener<K>[] = [];
  readonly #channel: diagnosticsChannel.Channel;

  constructor(name: K) {
    this.name = name;
    this.#channel = diagnosticsChannel.channel(`meshlet:${name}`);
  }

  /** True when someone listens; lets the hot path skip building an event object. */
  get wanted(): boolean {
    return this.#listeners.length > 0 || this.#channel.hasSubscribers;
  }

  on(listener: Listener<K>): () => void {
    const list = this.#listeners;
    list.push(listener);
    return () => {
      const i = list.indexOf(listener);
      if (i >= 0) list.splice(i, 1);
    };
  }

  emit(event: MeshEventMap[K]): void {
    const list = this.#listeners;
    for (let i = 0; i < list.length; i++) {
      try {
        (list[i] as Listener<K>)(event);
      } catch (err) {
        process.emitWarning(
          `meshlet: a '${this.name}' event listener threw: ${(err as Error)?.message}`,
          'MeshletWarning',
        );
      }
    }
    const ch = this.#channel;
    if (ch.hasSubscribers) ch.publish(event);
  }
}

type Slots = { readonly [K in MeshEventName]: EventSlot<K> };

/**
 * The mesh's event channel. Listeners run synchronously and must not throw (a throwing listener is
 * isolated so that telemetry never breaks a request). Every event is also published on the
 * `node:diagnostics_channel` channel `meshlet:<name>` when that channel has subscribers.
 */
export class MeshEvents {
  readonly #slots: Slots;
  /** The `request` event's slot (one per logical call), for the call path. */
  readonly requests: EventSlot<'request'>;
  /** The `attempt` event's slot (one per attempt), for the call path. */
  readonly attempts: EventSlot<'attempt'>;

  constructor() {
    // No prototype: an inherited name (`toString`) is no event.
    const slots: Record<string, EventSlot<MeshEventName>> = Object.create(null);
    for (const name of EVENT_NAMES) slots[name] = new EventSlot(name);
    this.#slots = slots as unknown as Slots;
    this.requests = this.#slots.request;
    this.attempts = this.#slots.attempt;
  }

  on<K extends MeshEventName>(name: K, listener: Listener<K>): () => void {
    const slot = this.#slots[name] as EventSlot<K> | undefined;
    // A name from untyped code that no event has: say so rather than fail on a missing slot.
    if (slot === undefined)
      throw new TypeError(`unknown mesh event "${String(name)}" (events: ${EVENT_NAMES.join(', ')})`);
    return slot.on(listener);
  }

  /** True when someone listens for `name`; lets the hot path skip building an event object. */
  wants(name: MeshEventName): boolean {
    return (this.#slots[name] as EventSlot<MeshEventName> | undefined)?.wanted === true;
  }

  emit<K extends MeshEventName>(name: K, event: MeshEventMap[K]): void {
    (this.#slots[name] as EventSlot<K>).emit(event);
  }
}

const enabledScopes = new Set(
  (process.env.MESHLET_DEBUG ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
);

/**
 * `MESHLET_DEBUG=lb,discovery` (or `*`) prints why requests went where they went. Returns a
 * logging function for the scope, or undefined when the scope is off (so callers pay nothing).
 */
export function debugLogger(scope: string): ((message: string) => void) | undefined {
  if (!enabledScopes.has(scope) && !enabledScopes.has('*')) return undefined;
  return (message: string) => process.stderr.write(`meshlet:${scope} ${message}\n`);
}
