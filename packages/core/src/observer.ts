import type { EndpointState } from './endpoint-state.js';
import type { Outcome, Verdict } from './events.js';
import type { ServiceRuntime } from './service.js';

/** The wire a call travels on; it says how to read a status (an HTTP status or a gRPC code). */
export type Transport = 'http' | 'grpc';

const GRPC_STATUS_NAMES: readonly string[] = Object.freeze([
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
]);

/** The name of a gRPC status code (`14` → `UNAVAILABLE`), as observers report it; else the number. */
export function grpcStatusName(code: number): string {
  return GRPC_STATUS_NAMES[code] ?? String(code);
}

/**
 * What an outbound observer sees of a call when it starts. Every transport's call object
 * implements it (nothing is allocated to describe a call). `start` runs synchronously where the
 * call was made, so the caller's async context (e.g. the active OpenTelemetry context) is current.
 */
export interface CallInfo {
  readonly service: ServiceRuntime;
  /** `http`: statuses are HTTP statuses; `grpc`: statuses are gRPC status codes. */
  readonly transport: Transport;
  /** The HTTP method (`POST` for gRPC). */
  readonly method: string;
  /** The request path with its query (`/reviews/1?x=y`), or the gRPC method (`/pkg.Svc/Method`). */
  readonly path: string;
  /** The logical authority (`reviews`, `reviews:8080`). */
  readonly authority: string;
  /** A request header or metadata value by lower-case name (the first value when repeated). */
  header(name: string): string | undefined;
}

/**
 * Per-call observer returned by a {@link CallHook}. Its methods run on the request path: keep them
 * cheap; transports isolate the call from one that throws.
 */
export interface CallObserver {
  /**
   * Headers (gRPC: metadata) added to the call: every attempt sends the same ones, injected once
   * per logical call; one the caller already set is left alone. Flat `[name, value, …]`, lower case.
   */
  readonly headers?: readonly string[] | undefined;
  /**
   * One attempt ended. `status` is an HTTP status or a gRPC code (see `CallInfo.transport`);
   * `retryReason` is set when the call is retried because of this attempt's response.
   */
  attemptEnd?(
    endpoint: EndpointState,
    attempt: number,
    outcome: Outcome,
    status: number | undefined,
    durationMs: number,
    error: Error | undefined,
    retryReason: string | undefined,
  ): void;
  /**
   * The logical call ended. Called synchronously just before the mesh emits the call's `request`
   * event (telemetry relies on that order to attach trace ids to the event's metrics and log line).
   */
  end(
    outcome: Outcome,
    status: number | undefined,
    attempts: number,
    endpoint: EndpointState | undefined,
    error: Error | undefined,
  ): void;
}

/**
 * The one outbound observer contract of the mesh (client spans, trace-context propagation), used
 * by every transport: `start` is called once per logical call; return undefined to observe
 * nothing (the call then costs one call of `start`). Install it with `Mesh.setCallHook()`
 * (`@meshlet/telemetry` does).
 */
export interface CallHook {
  start(call: CallInfo): CallObserver | undefined;
}

/**
 * Told of every outbound call and attempt of a mesh, every transport's, with no object made to
 * describe them: the values the `attempt` and `request` events carry (`mesh.events`), in the same
 * order, as arguments — the service, method, path and transport of a call read from the call
 * itself (`CallInfo`). Metrics (`@meshlet/telemetry`) are recorded here; the public events are
 * built only when someone listens to them. Install with `Mesh.addCallListener`.
 *
 * Both methods run synchronously on the request path and must not keep their arguments' call
 * past the return (it is the transport's live call object): keep them cheap. A listener that
 * throws is isolated (a warning, as for event listeners). `callEnd` runs after the call's
 * `CallObserver.end` and before its `request` event.
 */
export interface CallListener {
  /**
   * One attempt ended: each attempt of a `Call`, and each attempt a transport reports to
   * `ServiceRuntime.endAttempt` itself (the gRPC balancer's). `service` is the attempt's service.
   */
  attemptEnd?(
    service: ServiceRuntime,
    endpoint: EndpointState,
    attempt: number,
    durationMs: number,
    outcome: Outcome,
    status: number | undefined,
    error: Error | undefined,
    retryReason: string | undefined,
    transport: Transport,
    verdict: Verdict,
  ): void;
  /** The logical call ended (after its retries). `endpoint`: the last attempt's, if any. */
  callEnd?(
    call: CallInfo,
    durationMs: number,
    outcome: Outcome,
    status: number | undefined,
    attempts: number,
    endpoint: EndpointState | undefined,
    error: Error | undefined,
  ): void;
}

/** Called when an endpoint leaves its service (or the service closes). */
export type EndpointRemovedListener = (endpoint: EndpointState) => void;

/** A listener that threw: warned about, never the request's failure. */
function listenerThrew(err: unknown): void {
  process.emitWarning(`meshlet: a call listener threw: ${(err as Error)?.message}`, 'MeshletWarning');
}

/**
 * What a mesh shares with each of its service runtimes for transports: the outbound call hook,
 * the call listeners, and the watchers of endpoints leaving (a transport frees what it keeps for
 * an endpoint — a connection pool — through a watch, not through the observation event bus).
 */
export class RuntimeHooks {
  /** The outbound observer (tracing), undefined when none is installed. */
  callHook: CallHook | undefined = undefined;
  #removed: EndpointRemovedListener[] = [];
  /** The listeners with an `attemptEnd`, and those with a `callEnd` (replaced, never mutated). */
  #attemptEnds: readonly CallListener[] = [];
  #callEnds: readonly CallListener[] = [];

  /** Adds a listener of every call and attempt (see `CallListener`); returns a function that removes it. */
  addCallListener(listener: CallListener): () => void {
    if (listener.attemptEnd !== undefined) this.#attemptEnds = [...this.#attemptEnds, listener];
    if (listener.callEnd !== undefined) this.#callEnds = [...this.#callEnds, listener];
    return () => {
      this.#attemptEnds = this.#attemptEnds.filter((l) => l !== listener);
      this.#callEnds = this.#callEnds.filter((l) => l !== listener);
    };
  }

  /** True when a listener wants calls' ends (the pipeline then reads the clock for their duration). */
  get listensToCalls(): boolean {
    return this.#callEnds.length > 0;
  }

  /** Tells the listeners an attempt ended (`ServiceRuntime.endAttempt` calls it). */
  attemptEnded(
    service: ServiceRuntime,
    endpoint: EndpointState,
    attempt: number,
    durationMs: number,
    outcome: Outcome,
    status: number | undefined,
    error: Error | undefined,
    retryReason: string | undefined,
    transport: Transport,
    verdict: Verdict,
  ): void {
    const list = this.#attemptEnds;
    for (let i = 0; i < list.length; i++) {
      try {
        (list[i] as CallListener).attemptEnd?.(
          service,
          endpoint,
          attempt,
          durationMs,
          outcome,
          status,
          error,
          retryReason,
          transport,
          verdict,
        );
      } catch (err) {
        listenerThrew(err);
      }
    }
  }

  /** Tells the listeners a call ended (the pipeline calls it). */
  callEnded(
    call: CallInfo,
    durationMs: number,
    outcome: Outcome,
    status: number | undefined,
    attempts: number,
    endpoint: EndpointState | undefined,
    error: Error | undefined,
  ): void {
    const list = this.#callEnds;
    for (let i = 0; i < list.length; i++) {
      try {
        (list[i] as CallListener).callEnd?.(call, durationMs, outcome, status, attempts, endpoint, error);
      } catch (err) {
        listenerThrew(err);
      }
    }
  }

  /** Watches endpoints leaving any service of the mesh; returns a function that stops watching. */
  onEndpointRemoved(listener: EndpointRemovedListener): () => void {
    this.#removed = [...this.#removed, listener];
    return () => {
      this.#removed = this.#removed.filter((l) => l !== listener);
    };
  }

  /** Tells every watcher that `endpoint` left its service. */
  endpointRemoved(endpoint: EndpointState): void {
    const list = this.#removed;
    for (let i = 0; i < list.length; i++) {
      try {
        (list[i] as EndpointRemovedListener)(endpoint);
      } catch (err) {
        process.emitWarning(
          `meshlet: an endpoint watcher threw: ${(err as Error)?.message}`,
          'MeshletWarning',
        );
      }
    }
  }
}
