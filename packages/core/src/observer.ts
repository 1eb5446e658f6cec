import type { EndpointState } from './endpoint-state.js';
import type { Outcome } from './events.js';
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

/** Called when an endpoint leaves its service (or the service closes). */
export type EndpointRemovedListener = (endpoint: EndpointState) => void;

/**
 * What a mesh shares with each of its service runtimes for transports: the outbound call hook,
 * and the watchers of endpoints leaving (a transport frees what it keeps for an endpoint — a
 * connection pool — through a watch, not through the observation event bus).
 */
export class RuntimeHooks {
  /** The outbound observer (tracing), undefined when none is installed. */
  callHook: CallHook | undefined = undefined;
  #removed: EndpointRemovedListener[] = [];

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
