import type { LoadReportsInput, OverloadInput } from './config-types.generated.js';
import type { DeadlineTrust } from './inbound/config.js';
import type { InboundFilterChain, InboundListenerPort } from './inbound/listener.js';
import type { EscapedSlashesAction, PathNormalization } from './inbound/path.js';
import type { PeerCertificateInfo } from './inbound/peer.js';
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

/**
 * What other packages plug into a mesh's inbound side (read live by the admission step, so a
 * source added after a server was created applies to it at once).
 */
export interface MeshInboundPorts {
  /** Authorization policy sources, evaluated in order; a request must be allowed by every one. */
  policies: readonly InboundPolicySource[];
  /** Inbound telemetry (`@meshlet/telemetry` sets it when installed on the mesh). */
  telemetry: InboundTelemetry | undefined;
  /** `spiffe://<trust domain>/` of this workload's certificate (`@meshlet/tls` sets it), if known. */
  trustPrefix: string | undefined;
  /**
   * Inbound listeners from the control plane (gRFC A36; `@meshlet/xds` sets it when the bootstrap
   * names a server listener template): requests are served only while their listening address's
   * listener is known, under the filter chain their connection matches.
   */
  listeners: InboundListenerPort | undefined;
}

/** One source of authorization policy: local config, or (later) RBAC from the control plane. */
export interface InboundPolicySource {
  readonly name: string;
  readonly authorizer: InboundAuthorizer;
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

const ports = new WeakMap<Mesh, MeshInboundPorts>();

function portsOf(mesh: Mesh): MeshInboundPorts {
  let p = ports.get(mesh);
  if (p === undefined) {
    p = { policies: [], telemetry: undefined, trustPrefix: undefined, listeners: undefined };
    ports.set(mesh, p);
  }
  return p;
}

/** The inbound ports of `mesh` (a live object: read its fields when needed). */
export function inboundPorts(mesh: Mesh): Readonly<MeshInboundPorts> {
  return portsOf(mesh);
}

/**
 * Adds a source of authorization policy to the mesh's inbound side (Express, Fastify and gRPC
 * servers built with `mesh` and no explicit `authorizer`). Sources are evaluated in the order they
 * were added, and a request must be allowed by each (as Envoy chains RBAC filters). `@meshlet/tls`
 * adds the `authorization:` section as `local`; RBAC from the control plane is meant to arrive as
 * another source built by the same evaluator. Returns a remover.
 */
export function addInboundPolicy(mesh: Mesh, name: string, authorizer: InboundAuthorizer): () => void {
  const p = portsOf(mesh);
  const source: InboundPolicySource = Object.freeze({ name, authorizer });
  // copy on write: an admission step iterating the old list is never disturbed
  p.policies = Object.freeze([...p.policies, source]);
  return () => {
    p.policies = Object.freeze(p.policies.filter((x) => x !== source));
  };
}

/**
 * Sets the inbound listeners of `mesh` (`@meshlet/xds` does, when the bootstrap has a
 * `server_listener_resource_name_template`); undefined removes them. Servers created before see
 * the change at once.
 */
export function setInboundListeners(mesh: Mesh, listeners: InboundListenerPort | undefined): void {
  portsOf(mesh).listeners = listeners;
}

/** Sets the inbound telemetry of `mesh` (`@meshlet/telemetry` does when installed); undefined removes it. */
export function setInboundTelemetry(mesh: Mesh, telemetry: InboundTelemetry | undefined): void {
  portsOf(mesh).telemetry = telemetry;
}

/**
 * Sets the trust domain of this workload (`spiffe://cluster.local`, or `cluster.local`): mTLS peers
 * with a SPIFFE ID in it are "mesh peers", whose deadline headers are honoured by default.
 */
export function setTrustDomain(mesh: Mesh, trustDomain: string | undefined): void {
  const td = trustDomain?.replace(/^spiffe:\/\//, '').replace(/\/.*$/, '');
  portsOf(mesh).trustPrefix = td ? `spiffe://${td}/` : undefined;
}

/**
 * An `InboundTelemetry` that forwards to whatever telemetry is installed on `mesh` when a request
 * starts (none: no span). What the server adapters use by default.
 */
export function meshInboundTelemetry(mesh: Mesh): InboundTelemetry {
  const p = portsOf(mesh);
  return { start: (info) => p.telemetry?.start(info) };
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
  /** The connection peer's IP. */
  readonly sourceIp?: string | undefined;
  /** The original client's IP: the peer's, or from `X-Forwarded-For` with trusted hops configured. */
  readonly remoteIp?: string | undefined;
  readonly destinationIp?: string | undefined;
  readonly destinationPort?: number | undefined;
  /** The TLS server name the client sent. */
  readonly sni?: string | undefined;
  /** The connection is TLS, with or without a client certificate (default: `mtls`). */
  readonly tls?: boolean | undefined;
  /** The verified client certificate (RBAC's `authenticated` principal names come from it). */
  readonly peerCertificate?: PeerCertificateInfo | undefined;
  readonly method?: string | undefined;
  /** Normalized path, without query (for gRPC `/package.Service/Method`). */
  readonly path?: string | undefined;
  /** The query string including its `?`, or '' (RBAC's `:path` header matchers see it). */
  readonly query?: string | undefined;
  readonly host?: string | undefined;
  readonly headers?: InboundHeaders | undefined;
  /** The filter chain of the connection's inbound listener (xDS servers), if any. */
  readonly filterChain?: InboundFilterChain | undefined;
  /**
   * Set when `path` is a framework's routing view of the request (see `RouteView`): policy path
   * patterns must be folded the same way before they are compared with it.
   */
  readonly pathMatching?: PathMatching | undefined;
}

/**
 * How policy path patterns compare with a path as a framework routes it (case folded, escapes
 * decoded, slashes merged, …). Objects are shared per routing behaviour, so an evaluator may cache
 * what it compiles per object.
 */
export interface PathMatching {
  /** Folds a policy path (an exact path, or the fixed part of a prefix or suffix pattern). */
  foldPattern(pattern: string): string;
  /** The framework ignores one trailing slash: exact patterns lose theirs (the path has lost its). */
  readonly trimTrailingSlash: boolean;
}

/** An authorization decision (the shape `@meshlet/tls`'s evaluator returns). */
export interface InboundDecision {
  readonly allowed: boolean;
  readonly reason: string;
  readonly policy?: string | undefined;
  /** Index of the deciding rule within `policy`. */
  readonly rule?: number | undefined;
}

/** Decides whether an inbound request may proceed (e.g. `createAuthorizer(policies)` of @meshlet/tls). */
export interface InboundAuthorizer {
  (attributes: InboundAttributes): InboundDecision;
  /**
   * Optional: whether folding path patterns with `pm` changes how any of them compares (a pattern
   * with upper case under case-insensitive routing, an exact pattern with a trailing slash, …).
   * When false, the routed view of a request whose path and method equal the normalized ones needs
   * no second evaluation. Without it, the admission step evaluates the routed view whenever the
   * framework folds paths at all.
   */
  pathMatchingMatters?(pm: PathMatching): boolean;
}

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
  /**
   * The service's own inbound timeout, in ms: the deadline of a request that carries none, and the
   * cap of a caller's. Default: `inbound.timeout` of the mesh config, else 0 (none).
   */
  readonly timeoutMs?: number | undefined;
  /** @deprecated the same as `timeoutMs` (which also caps callers' deadlines). */
  readonly defaultTimeoutMs?: number | undefined;
  /** Whose deadline headers count. Default: `inbound.deadlines` of the mesh config, else mesh peers only. */
  readonly deadlines?: Partial<DeadlineTrust> | undefined;
  /** Path normalization (Istio's names). Default: `inbound.pathNormalization`, else `BASE`. */
  readonly pathNormalization?: PathNormalization | undefined;
  /** What `%2F` / `%5C` become (Envoy's names). Default: `inbound.escapedSlashes`, else as Istio sets it. */
  readonly escapedSlashes?: EscapedSlashesAction | undefined;
  /** Trusted proxies appending to `X-Forwarded-For`. Default: `inbound.xffNumTrustedHops`, else 0. */
  readonly xffNumTrustedHops?: number | undefined;
  /**
   * The server's ORCA load reports (`endpoint-load-metrics` on HTTP responses, the
   * `endpoint-load-metrics-bin` trailer of gRPC calls); `false` turns them off. Default:
   * `inbound.loadReports`, else on (HTTP: when the request asks for them).
   */
  readonly loadReports?: LoadReportsInput | false | undefined;
  /**
   * Overload protection: requests admitted while the event loop is behind are answered 503 (gRPC
   * RESOURCE_EXHAUSTED) with `Retry-After` and `x-meshlet-shed` before the handler runs; `true` for
   * the defaults. Default: `inbound.overload`, else off.
   */
  readonly overload?: OverloadInput | boolean | undefined;
}

/** One inbound request as telemetry sees it: ended once, with the status sent. */
export interface InboundSpan {
  /** Runs the handler inside the span's context (so outbound calls carry the trace). */
  run<R>(fn: () => R): R;
  /**
   * Optional: `false` when `run(fn)` would only call `fn` (the span's context is the one already
   * active: no span to carry, no caller's trace), so the adapter may call the handler itself and
   * make no closure for `run`. Absent or `true`: the handler is always run through `run`.
   */
  readonly entersContext?: boolean | undefined;
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
