import type { Mesh } from './mesh.js';

/**
 * The inbound serving state of a process, shared by every server adapter (Express, Fastify, the
 * gRPC Health service) so that one drain makes every readiness endpoint fail at once.
 *
 * Readiness = the mesh is ready (`mesh.isReady`: discovery answered, certificates loaded) and the
 * process is not draining. Liveness is not affected by draining.
 */
interface ServingState {
  draining: boolean;
  readonly listeners: Set<() => void>;
}

const states = new WeakMap<Mesh, ServingState>();

function stateOf(mesh: Mesh): ServingState {
  let s = states.get(mesh);
  if (!s) {
    s = { draining: false, listeners: new Set() };
    states.set(mesh, s);
    const st = s;
    mesh.ready().then(
      () => notify(st),
      () => {},
    );
    mesh.onClose(() => notify(st));
  }
  return s;
}

function notify(s: ServingState): void {
  for (const l of [...s.listeners]) {
    try {
      l();
    } catch {
      // listeners must not break the others
    }
  }
}

/** True while the process should receive traffic: the mesh is ready and not draining. */
export function isServing(mesh: Mesh): boolean {
  // The first look starts `mesh.ready()`, so readiness turns true even if nobody awaited it.
  const s = states.get(mesh) ?? stateOf(mesh);
  return mesh.isReady && !s.draining;
}

export function isDraining(mesh: Mesh): boolean {
  return states.get(mesh)?.draining ?? false;
}

/** Marks the process as draining: every readiness check fails from now on. Idempotent. */
export function startDraining(mesh: Mesh): void {
  const s = stateOf(mesh);
  if (s.draining) return;
  s.draining = true;
  notify(s);
}

/** Calls `listener` whenever readiness may have changed (ready, draining, closed); returns a remover. */
export function onServingChange(mesh: Mesh, listener: () => void): () => void {
  const s = stateOf(mesh);
  s.listeners.add(listener);
  return () => {
    s.listeners.delete(listener);
  };
}

/** Request headers as Node gives them (lower-case names). */
export type InboundHeaders = Readonly<Record<string, string | readonly string[] | undefined>>;

/**
 * What server adapters know about an inbound request, for authorization. A subset of
 * `@meshlet/tls`'s `RequestAttributes`, so its authorizer can be passed where an
 * `InboundAuthorizer` is expected.
 */
export interface InboundAttributes {
  /** The peer's SPIFFE ID from its client certificate; undefined for plaintext. */
  readonly principal?: string | undefined;
  readonly mtls?: boolean | undefined;
  readonly sourceIp?: string | undefined;
  readonly destinationPort?: number | undefined;
  readonly method?: string | undefined;
  /** Path (for gRPC `/package.Service/Method`). */
  readonly path?: string | undefined;
  readonly host?: string | undefined;
  readonly headers?: InboundHeaders | undefined;
}

/** An authorization decision (the shape `@meshlet/tls`'s evaluator returns). */
export interface InboundDecision {
  readonly allowed: boolean;
  readonly reason: string;
  readonly policy?: string | undefined;
}

/** Decides whether an inbound request may proceed (e.g. `createAuthorizer(policies)` of @meshlet/tls). */
export type InboundAuthorizer = (attributes: InboundAttributes) => InboundDecision;

/** What server adapters tell telemetry about an inbound request. */
export interface InboundRequestInfo {
  readonly transport: 'http' | 'grpc';
  readonly method: string;
  /**
   * The matched route template (`/reviews/:id`; the method path for gRPC) when the framework knows
   * it before the handler runs; undefined otherwise (no route matched, or one known only at the
   * end: see `InboundSpan.end`). Never the raw path: it labels metrics, whose series must stay
   * bounded.
   */
  readonly route?: string | undefined;
  readonly path: string;
  readonly headers: InboundHeaders;
  readonly principal?: string | undefined;
}

/**
 * The options every inbound adapter takes (the Express middleware, the Fastify plugin; the gRPC
 * server takes `mesh`, `authorizer` and `telemetry`). `A` is the authorizer's type.
 */
export interface InboundOptions<A = InboundAuthorizer> {
  /**
   * The mesh: readiness (ready and not draining), and the default authorizer and telemetry. Which
   * mesh a server belongs to is always this option: nothing is looked up process-wide.
   */
  readonly mesh?: Mesh | undefined;
  /**
   * Authorization evaluator. Default: the mesh's (`authorization:` in the mesh config, through
   * `@meshlet/tls`), if any; `false` disables it. A denial answers HTTP 403 with
   * `{ error: { code: 'MESHLET_ERR_FORBIDDEN', … } }`, gRPC PERMISSION_DENIED.
   */
  readonly authorizer?: A | false | undefined;
  /**
   * Inbound metrics and server spans. Default: the `@meshlet/telemetry` installed on `mesh`
   * (`inboundTelemetry(mesh)`; createMesh installs it), none without a mesh; `false` disables.
   */
  readonly telemetry?: InboundTelemetry | false | undefined;
  /** Liveness endpoint path (always 200 while the process runs); `false` disables. Default `/healthz`. */
  readonly livenessPath?: string | false;
  /**
   * Readiness endpoint path: 200 while the mesh is ready and not draining, else 503. `false`
   * disables. Default `/ready`.
   */
  readonly readinessPath?: string | false;
  /** Deadline applied when the request carries none, in ms (default 0: none). */
  readonly defaultTimeoutMs?: number;
}

/** One inbound request as telemetry sees it: ended once, with the status sent. */
export interface InboundSpan {
  /** Runs the handler inside the span's context (so outbound calls carry the trace). */
  run<R>(fn: () => R): R;
  /**
   * The request finished with `status` (HTTP status, or gRPC status code). `route`: the matched
   * route template when it became known only after routing (Express), over `InboundRequestInfo.route`.
   */
  end(status: number, error?: Error, route?: string): void;
}

/**
 * Inbound telemetry: metrics and server spans for every request a server adapter serves
 * (implemented by `@meshlet/telemetry`). `start` must not throw.
 */
export interface InboundTelemetry {
  start(info: InboundRequestInfo): InboundSpan | undefined;
}
