import {
  DEADLINE_HEADER,
  parseDeadlineHeader,
  REQUEST_TIMEOUT_HEADER,
  runWithDeadline,
} from '../deadline.js';
import { MAX_TIMER_MS } from '../duration.js';
import { type ErrorCode, ErrorCodes, MeshError } from '../errors.js';
import { ORCA_FORMAT_HEADER } from '../load/orca.js';
import type { OrcaHeaderFormat } from '../load/orca-header.js';
import { OverloadGuard, type ShedReason } from '../load/overload.js';
import { type LoadSampler, processLoad } from '../load/sampler.js';
import type { Mesh } from '../mesh.js';
import {
  type InboundAttributes,
  type InboundAuthorizer,
  type InboundDecision,
  type InboundHeaders,
  type InboundOptions,
  type InboundPolicySource,
  type InboundRequestInfo,
  type InboundSpan,
  type InboundTelemetry,
  inboundPorts,
  type MeshInboundPorts,
  type PathMatching,
} from '../serving.js';
import {
  DEFAULT_INBOUND,
  type InboundConfig,
  type LoadReportsConfig,
  parseLoadReports,
  parseOverload,
} from './config.js';
import {
  type InboundChainRequest,
  type InboundConnection,
  InboundConnectionState,
  type InboundFilterChain,
  type InboundListenerPort,
} from './listener.js';
import {
  defaultEscapedSlashes,
  normalizeTarget,
  type PathNormalizationOptions,
  type TargetParts,
} from './path.js';
import {
  forwardedClientIp,
  type InboundPeer,
  networkMatcher,
  type PeerCertificateInfo,
  unmapIp,
} from './peer.js';
import { EXACT_ROUTE_VIEW, type RouteView } from './route-view.js';

/** The header Envoy uses to tell an application who its mTLS peer was; never taken from a client. */
export const CLIENT_CERT_HEADER = 'x-forwarded-client-cert';

const NO_POLICIES: readonly InboundPolicySource[] = [];

/** The peer of a request refused before its connection was looked at. */
const NO_PEER: InboundPeer = Object.freeze({
  remoteAddress: undefined,
  localAddress: undefined,
  localPort: undefined,
  principal: undefined,
  mtls: false,
  sni: undefined,
});

/** Why a request was refused, as its coded JSON body says. */
export interface RefusalError {
  readonly code: string;
  readonly message: string;
  readonly policy?: string | undefined;
  readonly rule?: number | undefined;
}

/** The state only a refused request has. */
interface Refusal {
  error: RefusalError | undefined;
  decision: InboundDecision | undefined;
  location: string | undefined;
  shed: ShedReason | undefined;
  retryAfter: string | undefined;
}

/**
 * One inbound request after the admission step: the attributes the authorizer saw, what telemetry
 * was told, and the outcome. When `status` is 0 the request is admitted: enter the handler with
 * `enter(next)`; else answer `status` (400, 403, 503, or a 307 redirect to `location`) with
 * `errorBody()` (a coded JSON error) and never run the handler.
 *
 * One object per request, shaped once: it is the authorizer's attributes and telemetry's request
 * info at the same time.
 */
export class InboundRequest
  implements InboundAttributes, InboundRequestInfo, TargetParts, InboundChainRequest
{
  readonly transport: 'http' | 'grpc';
  method: string;
  readonly headers: InboundHeaders;
  /** The normalized path, without query. */
  path = '';
  rawPath = '';
  /** The query string including its `?`, or ''. */
  query = '';
  authority: string | undefined = undefined;
  /** The target the framework should route on differs from what was received: `path + query`. */
  changed = false;
  redirect = false;
  route: string | undefined;
  /**
   * The connection's peer (set by the admission step): `principal`, `mtls`, `sourceIp`,
   * `destinationIp`, `destinationPort`, `sni`, `tls` and `peerCertificate` read through it, so a
   * request does not copy eight fields of an object its connection already holds.
   */
  peer: InboundPeer = NO_PEER;
  remoteIp: string | undefined = undefined;
  host: string | undefined = undefined;
  /** The filter chain of the connection's inbound listener (xDS servers), if any. */
  filterChain: InboundFilterChain | undefined = undefined;
  /** What the filter chain's routing chose (its authorization reads it). */
  chainRoute: unknown = undefined;
  /**
   * The server should close the connection after this response: it is draining (made under an
   * older listener version whose TLS requirement changed) or the listener stopped serving.
   */
  closeConnection = false;
  pathMatching: PathMatching | undefined = undefined;
  /** 0: admitted; else the status to answer with. */
  status = 0;
  /**
   * The client sent `x-forwarded-client-cert`: removed from the headers object; an HTTP adapter
   * removes it from Node's other views of the request too (`removeClientCert`).
   */
  clientCert = false;
  /** Absolute deadline (epoch ms) the handler runs under, if any. */
  deadline: number | undefined = undefined;
  span: InboundSpan | undefined = undefined;
  /**
   * The `endpoint-load-metrics` value the HTTP response carries (pre-encoded by the load sampler),
   * when the client asked for it or the server sends it always; undefined: none.
   */
  loadReport: string | undefined = undefined;
  /** @internal The sampler counting the request in flight until `finished()`. */
  load: LoadSampler | undefined = undefined;
  /** What only a refused request has (made when it is refused): see the accessors below. */
  #refusal: Refusal | undefined = undefined;

  get principal(): string | undefined {
    return this.peer.principal;
  }
  get mtls(): boolean {
    return this.peer.mtls;
  }
  get sourceIp(): string | undefined {
    return this.peer.remoteAddress;
  }
  get destinationIp(): string | undefined {
    return this.peer.localAddress;
  }
  get destinationPort(): number | undefined {
    return this.peer.localPort;
  }
  get sni(): string | undefined {
    return this.peer.sni;
  }
  get tls(): boolean {
    const p = this.peer;
    return p.tls ?? p.mtls;
  }
  get peerCertificate(): PeerCertificateInfo | undefined {
    return this.peer.certificate;
  }

  #refused(): Refusal {
    this.#refusal ??= {
      error: undefined,
      decision: undefined,
      location: undefined,
      shed: undefined,
      retryAfter: undefined,
    };
    return this.#refusal;
  }
  /** Why it was refused (with the code the body carries). */
  get error(): RefusalError | undefined {
    return this.#refusal?.error;
  }
  set error(e: RefusalError | undefined) {
    this.#refused().error = e;
  }
  /** The denying decision of a 403. */
  get decision(): InboundDecision | undefined {
    return this.#refusal?.decision;
  }
  set decision(d: InboundDecision | undefined) {
    this.#refused().decision = d;
  }
  /** Where a 307 sends the caller (`UNESCAPE_AND_REDIRECT`). */
  get location(): string | undefined {
    return this.#refusal?.location;
  }
  set location(l: string | undefined) {
    this.#refused().location = l;
  }
  /** Set when overload protection shed the request (status 503): why. */
  get shed(): ShedReason | undefined {
    return this.#refusal?.shed;
  }
  set shed(s: ShedReason | undefined) {
    this.#refused().shed = s;
  }
  /** With `shed`: the `Retry-After` value, whole seconds. */
  get retryAfter(): string | undefined {
    return this.#refusal?.retryAfter;
  }
  set retryAfter(v: string | undefined) {
    this.#refused().retryAfter = v;
  }

  constructor(
    transport: 'http' | 'grpc',
    method: string,
    headers: InboundHeaders,
    route: string | undefined,
  ) {
    this.transport = transport;
    this.method = method;
    this.headers = headers;
    this.route = route;
  }

  /** Runs `next` (the handler) inside the request's span and deadline context. */
  enter(next: () => void): void {
    const span = this.span;
    const d = this.deadline;
    // A span whose context is already the active one adds nothing to enter: no closure for it.
    if (span === undefined || span.entersContext === false) {
      if (d === undefined) next();
      else runWithDeadline(d, next);
    } else if (d === undefined) span.run(next);
    else span.run(() => runWithDeadline(d, next));
  }

  /**
   * The error a refused request's span ends with (`MESHLET_ERR_FORBIDDEN` / `MESHLET_ERR_BAD_REQUEST` /
   * `MESHLET_ERR_NOT_SERVING`,
   * what telemetry and the admin page count as denials); undefined for an admitted request or a
   * redirect.
   */
  refusalError(): MeshError | undefined {
    const e = this.error;
    if (e === undefined || this.status === 307) return undefined;
    return new MeshError(e.code as ErrorCode, e.message, { policy: e.policy, rule: e.rule });
  }

  /** The JSON body of a refusal: `{"error":{"code":…,"message":…,"policy"?,"rule"?}}`. */
  errorBody(): string {
    return JSON.stringify({ error: this.error });
  }

  /**
   * The request is over (answered, or its connection closed): the load sampler counts it out,
   * `failed` when it ended as a server error (HTTP 5xx, a gRPC server failure code). Once.
   */
  finished(failed: boolean): void {
    const l = this.load;
    if (l === undefined) return;
    this.load = undefined;
    l.requestFinished(failed);
  }
}

/** gRPC codes that count as the server's failures in load reports' `eps`. */
export function grpcServerFailure(code: number): boolean {
  // UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE, DATA_LOSS
  return code === 2 || code === 4 || code === 8 || code === 13 || code === 14 || code === 15;
}

/** gRPC services overload protection never sheds: health checks and the load reports themselves. */
const GRPC_EXEMPT_PREFIXES = ['/grpc.health.v1.Health/', '/xds.service.orca.v3.OpenRcaService/'] as const;

/** The form an `endpoint-load-metrics-format` request header asks for (any case), if known. */
export function requestedLoadFormat(v: string | readonly string[] | undefined): OrcaHeaderFormat | undefined {
  const f = typeof v === 'string' ? v : v?.[0];
  if (f === undefined) return undefined;
  switch (f.length) {
    case 4: {
      const u = f.toUpperCase();
      return u === 'TEXT' ? 'text' : u === 'JSON' ? 'json' : undefined;
    }
    case 3:
      return f.toUpperCase() === 'BIN' ? 'binary' : undefined;
    case 6:
      return f.toLowerCase() === 'binary' ? 'binary' : undefined;
    default:
      return undefined;
  }
}

/** Everything the admission step needs from the adapter's options, resolved once per server. */
export interface InboundAdmissionOptions extends InboundOptions {
  readonly transport: 'http' | 'grpc';
  /**
   * How the framework routes (see `RouteView`): the policy is evaluated on that view of the path
   * too. Default: the path exactly as received (gRPC). `admitHttp` may pass one per request.
   */
  readonly routeView?: RouteView | undefined;
}

function sameHost(a: string, b: string): boolean {
  return a.length === b.length && (a === b || a.toLowerCase() === b.toLowerCase());
}

function repeatsHost(raw: readonly string[] | undefined): boolean {
  if (raw === undefined) return false;
  let seen = false;
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i] as string;
    // The usual spellings compare as whole strings (a character loop costs more in optimized code).
    if (n.length === 4 && (n === 'Host' || n === 'host' || n.toLowerCase() === 'host')) {
      if (seen) return true;
      seen = true;
    }
  }
  return false;
}

/**
 * The one inbound admission step, shared by the Express middleware, the Fastify plugin and the
 * gRPC server interceptor. Per request, in order:
 *
 * 1. **target**: absolute-form and fragments reduced to the path; the path normalized as Istio's
 *    `pathNormalization` says (see `normalizeTarget`); malformed targets and conflicting or
 *    repeated Host headers answered 400 (gRPC: a `host` that differs from `:authority`);
 * 2. **peer**: identity only from the verified mTLS certificate; the client IP is the connection
 *    peer, or the Nth `X-Forwarded-For` entry from the right with N trusted hops;
 *    `x-forwarded-client-cert` from the client is removed (Envoy's default, SANITIZE);
 * 3. **authorization** on the normalized path and on the path as the framework routes it (its
 *    `RouteView`): every policy source must allow both, or the answer is 403;
 * 4. **deadline**: the caller's deadline header only from trusted peers, clamped to the service's
 *    own timeout (and to what a timer can hold);
 * 5. **telemetry**: the span and metrics start, labelled with the route template only.
 */
export class InboundAdmission {
  readonly transport: 'http' | 'grpc';
  readonly normalization: PathNormalizationOptions;
  readonly xffNumTrustedHops: number;
  readonly timeoutMs: number;
  readonly trustMeshPeers: boolean;
  readonly #trustedNetwork: (ip: string | undefined) => boolean;
  readonly #hasTrustedNetworks: boolean;
  readonly #networkTrust = new WeakMap<InboundPeer, boolean>();
  /** Per connection (its peer object): the inbound listener state, when the server did not record one. */
  readonly #connections = new WeakMap<InboundPeer, InboundConnectionState>();
  readonly #ports: Readonly<MeshInboundPorts> | undefined;
  /** The policy sources of an explicit `authorizer` option (`false`: none); undefined: the mesh's. */
  readonly #own: readonly { readonly name: string; readonly authorizer: InboundAuthorizer }[] | undefined;
  readonly #telemetry: InboundTelemetry | false | undefined;
  readonly #view: RouteView;
  /** The process' load sampler, when reports or overload protection are on. */
  readonly sampler: LoadSampler | undefined;
  /** What load reports are sent; undefined: none. */
  readonly loadReports: LoadReportsConfig | undefined;
  /** Overload protection; undefined: off. */
  readonly overload: OverloadGuard | undefined;

  constructor(options: InboundAdmissionOptions) {
    const mesh: Mesh | undefined = options.mesh;
    const config = (mesh?.config.extensions.inbound as InboundConfig | undefined) ?? DEFAULT_INBOUND;
    this.transport = options.transport;
    const normalization = options.pathNormalization ?? config.pathNormalization;
    this.normalization = Object.freeze({
      normalization,
      escapedSlashes:
        options.escapedSlashes ??
        (options.pathNormalization !== undefined
          ? defaultEscapedSlashes(normalization)
          : config.escapedSlashes),
    });
    this.xffNumTrustedHops = options.xffNumTrustedHops ?? config.xffNumTrustedHops;
    const t = options.timeoutMs ?? options.defaultTimeoutMs ?? config.timeoutMs;
    this.timeoutMs = t > 0 ? Math.min(Math.ceil(t), MAX_TIMER_MS) : 0;
    this.trustMeshPeers = options.deadlines?.trustMeshPeers ?? config.deadlines.trustMeshPeers;
    const networks = options.deadlines?.trustedNetworks ?? config.deadlines.trustedNetworks;
    this.#hasTrustedNetworks = networks.length > 0;
    this.#trustedNetwork = networkMatcher(networks);
    this.#ports = mesh === undefined ? undefined : inboundPorts(mesh);
    const a = options.authorizer;
    this.#own =
      a === false ? NO_POLICIES : a === undefined ? undefined : [{ name: 'authorizer', authorizer: a }];
    this.#telemetry = options.telemetry;
    this.#view = options.routeView ?? EXACT_ROUTE_VIEW;
    const issues: { path: string; message: string }[] = [];
    const reports =
      options.loadReports === undefined
        ? config.loadReports
        : parseLoadReports(options.loadReports, 'loadReports', issues);
    const overload =
      options.overload === undefined ? config.overload : parseOverload(options.overload, 'overload', issues);
    if (issues.length > 0)
      throw new MeshError(
        ErrorCodes.CONFIG,
        `invalid inbound options: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`,
        { issues },
      );
    this.loadReports = reports === false ? undefined : reports;
    this.sampler = reports !== false || overload !== false ? processLoad() : undefined;
    const guard = overload === false ? undefined : new OverloadGuard(overload);
    this.overload = guard;
    if (guard !== undefined) mesh?.onClose(() => guard.close());
  }

  /** Whether requests start telemetry (a route template is worth reading for them). */
  get telemetryActive(): boolean {
    const t = this.#telemetry;
    return t !== false && (t ?? this.#ports?.telemetry) !== undefined;
  }

  /**
   * Admits one HTTP request. `target` is the request target as received (`req.url` before anything
   * rewrote it), `rawHeaders` Node's (to see a repeated Host), `route` the route template when the
   * framework matched one before this step runs (Fastify), `view` how the framework routes this
   * request when it is known only per request (Express reads its app's settings).
   */
  admitHttp(
    method: string,
    target: string,
    headers: InboundHeaders,
    rawHeaders: readonly string[] | undefined,
    peer: InboundPeer,
    route: string | undefined,
    view: RouteView = this.#view,
  ): InboundRequest {
    const r = new InboundRequest('http', method, headers, route);
    const sampler = this.sampler;
    if (sampler !== undefined) {
      const reports = this.loadReports;
      const format =
        reports === undefined
          ? undefined
          : reports.send === 'always'
            ? (requestedLoadFormat(headers[ORCA_FORMAT_HEADER]) ?? reports.format)
            : requestedLoadFormat(headers[ORCA_FORMAT_HEADER]);
      const guard = this.overload;
      if (guard !== undefined && !guard.exempt(pathOf(target)) && this.#shed(r, guard, sampler)) {
        if (format !== undefined) r.loadReport = sampler.overloaded(format);
        return this.#refused(r, target);
      }
      sampler.requestStarted();
      r.load = sampler;
      if (format !== undefined) r.loadReport = sampler.header(format);
    }
    if (
      !this.#target(r, target, true) ||
      (repeatsHost(rawHeaders) && bad(r, 'the request has more than one Host header')) ||
      !this.#peer(r, peer) ||
      !this.#listener(r, peer) ||
      !this.#authorize(r, view)
    ) {
      return this.#refused(r, target);
    }
    // `x-request-timeout` is read only when `x-meshlet-deadline-ms` is absent or unusable.
    const h1 = headers[DEADLINE_HEADER];
    const h2 = h1 === undefined ? headers[REQUEST_TIMEOUT_HEADER] : undefined;
    if ((h1 !== undefined || h2 !== undefined) && this.#trusts(r, peer)) {
      const now = Date.now();
      const d =
        parseDeadlineHeader(h1, now) ??
        parseDeadlineHeader(h1 === undefined ? h2 : headers[REQUEST_TIMEOUT_HEADER], now);
      this.#deadline(r, d === undefined ? undefined : d - now, now);
    } else if (this.timeoutMs > 0) this.#deadline(r, undefined, Date.now());
    this.#startTelemetry(r);
    return r;
  }

  /**
   * Admits one gRPC call: `path` is its `:path` (the method), `deadline` the absolute deadline
   * grpc-js read from `grpc-timeout` (undefined: none), `authority` its `:authority` (grpc-js
   * keeps pseudo-headers out of the metadata).
   */
  admitGrpc(
    path: string,
    headers: InboundHeaders,
    peer: InboundPeer,
    deadline: number | undefined,
    authority?: string,
  ): InboundRequest {
    const r = new InboundRequest('grpc', 'POST', headers, path);
    const sampler = this.sampler;
    if (sampler !== undefined) {
      const guard = this.overload;
      if (guard !== undefined && !grpcExempt(path) && !guard.exempt(path) && this.#shed(r, guard, sampler))
        return this.#refused(r, path);
      sampler.requestStarted();
      r.load = sampler;
    }
    if (!this.#target(r, path, false) || !this.#peer(r, peer)) return this.#refused(r, path);
    if (authority !== undefined) {
      // RFC 9113 §8.3.1: a `host` header must not differ from `:authority` (the policy reads the
      // latter; the handler's metadata would carry the former).
      const host = headers.host;
      if (
        host !== undefined &&
        (typeof host !== 'string' || !sameHost(authority, host)) &&
        bad(r, `the host header (${String(host)}) differs from :authority (${authority})`)
      )
        return this.#refused(r, path);
      r.host = authority;
    }
    if (!this.#listener(r, peer) || !this.#authorize(r, this.#view)) return this.#refused(r, path);
    const now = Date.now();
    this.#deadline(r, deadline !== undefined && this.#trusts(r, peer) ? deadline - now : undefined, now);
    this.#startTelemetry(r);
    return r;
  }

  /** Sheds the request when the guard says so: 503 (the adapters' gRPC form: RESOURCE_EXHAUSTED). */
  #shed(r: InboundRequest, guard: OverloadGuard, sampler: LoadSampler): boolean {
    const reason = guard.check();
    if (reason === undefined) return false;
    sampler.requestShed();
    r.status = 503;
    r.shed = reason;
    r.retryAfter = String(Math.max(1, Math.ceil(guard.config.retryAfterMs / 1000)));
    r.error = {
      code: ErrorCodes.OVERLOADED,
      message:
        reason === 'event-loop-delay'
          ? `overloaded: the event loop is ${Math.round(guard.lastLagMs)}ms behind (limit ${guard.config.maxEventLoopDelayMs}ms); try another endpoint`
          : `overloaded: event-loop utilization above ${guard.config.maxUtilization}; try another endpoint`,
    };
    return true;
  }

  #target(r: InboundRequest, target: string, canRedirect: boolean): boolean {
    const err = normalizeTarget(target, this.normalization, r);
    if (err !== undefined) {
      bad(r, err);
      return false;
    }
    if (r.redirect) {
      // gRPC cannot follow a redirect (Envoy rejects such requests too)
      if (!canRedirect) {
        bad(r, 'the method path holds an escaped slash');
        return false;
      }
      r.status = 307;
      r.location = r.path + r.query;
      r.error = {
        code: ErrorCodes.BAD_REQUEST,
        message: `the path holds an escaped slash; it is served at ${r.location}`,
      };
      return false;
    }
    return true;
  }

  #peer(r: InboundRequest, peer: InboundPeer): boolean {
    const h = r.headers;
    const authority = h[':authority'];
    const hostHeader = h.host;
    const host = typeof hostHeader === 'string' ? hostHeader : undefined;
    if (typeof authority === 'string' && host !== undefined && !sameHost(authority, host)) {
      bad(r, `the Host header (${host}) differs from :authority (${authority})`);
      return false;
    }
    if (r.authority !== undefined) {
      if (host !== undefined && !sameHost(r.authority, host)) {
        bad(r, `the Host header (${host}) differs from the authority of the request target (${r.authority})`);
        return false;
      }
      r.host = r.authority;
    } else r.host = typeof authority === 'string' ? authority : host;
    r.peer = peer;
    r.remoteIp =
      this.xffNumTrustedHops > 0
        ? (forwardedClientIp(h['x-forwarded-for'], this.xffNumTrustedHops) ?? peer.remoteAddress)
        : peer.remoteAddress;
    // Envoy's SANITIZE: a client-supplied certificate description never reaches the application.
    if (h[CLIENT_CERT_HEADER] !== undefined) {
      delete (h as Record<string, unknown>)[CLIENT_CERT_HEADER];
      r.clientCert = true;
    }
    return true;
  }

  /**
   * The connection's inbound listener (gRFC A36), when the control plane manages them: the request
   * is served only while the listener of its listening address is known, under the filter chain
   * its connection matches, and when a route of that chain takes it; else 503 (gRPC UNAVAILABLE)
   * `MESHLET_ERR_NOT_SERVING`. After a listener update a connection is matched again; one made
   * under a different TLS requirement keeps its chain and is closed after its response (drained).
   */
  #listener(r: InboundRequest, peer: InboundPeer): boolean {
    const port: InboundListenerPort | undefined = this.#ports?.listeners;
    if (port === undefined) return true;
    let st = peer.inbound ?? this.#connections.get(peer);
    if (st === undefined) {
      const host = peer.listenHost ?? peer.localAddress;
      const p = peer.listenPort ?? peer.localPort;
      if (host === undefined || p === undefined)
        return notServing(r, 'the address the connection arrived on is unknown');
      st = new InboundConnectionState(port.listener(unmapIp(host), p));
      // Before the connection is fully set up its addresses may be unknown: cache only a complete peer.
      if (peer.remoteAddress !== undefined) this.#connections.set(peer, st);
    }
    const cfg = st.handle.config;
    if (cfg === undefined) {
      r.closeConnection = true;
      return notServing(
        r,
        `the inbound listener "${st.handle.name}" is not serving: ${st.handle.reason ?? 'not known yet'}`,
      );
    }
    if (st.chain === undefined || (cfg.generation !== st.generation && !st.pinned)) {
      const u = st.update(cfg, connectionOf(peer));
      if (u === 'none') {
        r.closeConnection = true;
        return notServing(
          r,
          `no filter chain of the inbound listener "${st.handle.name}" matches the connection`,
        );
      }
      if (u === 'drain') r.closeConnection = true;
    } else if (st.pinned && cfg.generation !== st.generation) {
      // The server chose this connection's chain under an older version: it is draining.
      r.closeConnection = true;
    }
    const chain = st.chain as InboundFilterChain;
    r.filterChain = chain;
    const err = chain.route(r);
    if (err !== undefined) return notServing(r, err.message);
    return true;
  }

  /** Every policy source must allow the request, on the normalized path and as the framework routes it. */
  #authorize(r: InboundRequest, view: RouteView): boolean {
    const sources = this.#own ?? this.#ports?.policies ?? NO_POLICIES;
    // The connection's filter chain brings the control plane's RBAC: always evaluated, after the
    // configured sources (an `authorizer` option replaces those, never the listener's).
    const chain = r.filterChain?.authorizer;
    const n = sources.length + (chain === undefined ? 0 : 1);
    if (n === 0) return true;
    const path = r.path;
    const method = r.method;
    const routePath = view.routePath(r);
    const routeMethod = view.routeMethod(method);
    const differs = routePath !== path || routeMethod !== method;
    const folds = view !== EXACT_ROUTE_VIEW;
    for (let i = 0; i < n; i++) {
      const a =
        i < sources.length ? (sources[i] as InboundPolicySource).authorizer : (chain as InboundAuthorizer);
      const d = a(r);
      if (!d.allowed) return forbid(r, d, undefined);
      // The routed view: a path or method of its own, or patterns that fold differently.
      if (differs || (folds && (a.pathMatchingMatters === undefined || a.pathMatchingMatters(view)))) {
        r.path = routePath;
        r.method = routeMethod;
        r.pathMatching = view;
        let d2: InboundDecision;
        try {
          d2 = a(r);
        } finally {
          r.path = path;
          r.method = method;
          r.pathMatching = undefined;
        }
        if (!d2.allowed) return forbid(r, d2, `${routeMethod} ${routePath}`);
      }
    }
    return true;
  }

  /** Whether the caller's deadline header counts: a mesh peer (mTLS, our trust domain) or a trusted network. */
  #trusts(r: InboundRequest, peer: InboundPeer): boolean {
    if (this.trustMeshPeers && r.mtls && r.principal !== undefined) {
      const prefix = this.#ports?.trustPrefix;
      if (prefix === undefined || r.principal.startsWith(prefix)) return true;
    }
    if (!this.#hasTrustedNetworks) return false;
    // A connection's peer is one object for all its requests (`socketPeer`): decided once.
    let t = this.#networkTrust.get(peer);
    if (t === undefined) {
      t = this.#trustedNetwork(peer.remoteAddress);
      this.#networkTrust.set(peer, t);
    }
    return t;
  }

  /** The deadline: the caller's (if trusted), clamped to the service's timeout and to a timer's range. */
  #deadline(r: InboundRequest, callerMs: number | undefined, now: number): void {
    const own = this.timeoutMs;
    let ms: number;
    if (callerMs !== undefined) ms = own > 0 && own < callerMs ? own : callerMs;
    else if (own > 0) ms = own;
    else return;
    r.deadline = now + Math.max(0, Math.min(ms, MAX_TIMER_MS));
  }

  /**
   * A refused request is reported to telemetry too (metrics and access log count 400s and 403s, as
   * Envoy's do; the admin page lists denials): its span starts here and the adapter ends it with
   * `refusalError()` once it has answered.
   */
  #refused(r: InboundRequest, target: string): InboundRequest {
    if (r.path === '') {
      const q = target.indexOf('?');
      r.path = q < 0 ? target : target.slice(0, q);
    }
    this.#startTelemetry(r);
    return r;
  }

  #startTelemetry(r: InboundRequest): void {
    const t = this.#telemetry;
    if (t === false) return;
    const tel = t ?? this.#ports?.telemetry;
    if (tel !== undefined) r.span = tel.start(r);
  }
}

/**
 * Removes a client-sent `x-forwarded-client-cert` from Node's other views of a request than
 * `headers` (which the admission step cleaned): `rawHeaders`, and `headersDistinct` (HTTP/1.1,
 * made from `rawHeaders` with their original count, so it is made first). Called by the HTTP
 * adapters when `InboundRequest.clientCert` is set (rare: no cost on ordinary requests).
 */
export function removeClientCert(req: { readonly rawHeaders: readonly string[] }): void {
  const distinct = (req as { readonly headersDistinct?: Record<string, unknown> }).headersDistinct;
  if (distinct !== undefined) delete distinct[CLIENT_CERT_HEADER];
  const a = req.rawHeaders as string[];
  let w = 0;
  for (let i = 0; i < a.length; i += 2) {
    const n = a[i] as string;
    if (n.length === CLIENT_CERT_HEADER.length && n.toLowerCase() === CLIENT_CERT_HEADER) continue;
    a[w++] = n;
    a[w++] = a[i + 1] as string;
  }
  a.length = w;
}

function pathOf(target: string): string {
  const q = target.indexOf('?');
  return q < 0 ? target : target.slice(0, q);
}

function grpcExempt(path: string): boolean {
  for (const p of GRPC_EXEMPT_PREFIXES) if (path.startsWith(p)) return true;
  return false;
}

function connectionOf(peer: InboundPeer): InboundConnection {
  return {
    localAddress: peer.localAddress === undefined ? undefined : unmapIp(peer.localAddress),
    localPort: peer.localPort,
    remoteAddress: peer.remoteAddress === undefined ? undefined : unmapIp(peer.remoteAddress),
    remotePort: peer.remotePort,
    transport: (peer.tls ?? peer.mtls) ? 'tls' : 'raw_buffer',
  };
}

function notServing(r: InboundRequest, message: string): false {
  r.status = 503;
  r.error = { code: ErrorCodes.NOT_SERVING, message };
  return false;
}

/** Marks `r` refused with 400 `MESHLET_ERR_BAD_REQUEST` and `message`. */
export function badRequest(r: InboundRequest, message: string): InboundRequest {
  r.status = 400;
  r.error = { code: ErrorCodes.BAD_REQUEST, message };
  return r;
}

function bad(r: InboundRequest, message: string): true {
  r.status = 400;
  r.error = { code: ErrorCodes.BAD_REQUEST, message };
  return true;
}

function forbid(r: InboundRequest, d: InboundDecision, routed: string | undefined): false {
  r.status = 403;
  r.decision = d;
  r.error = {
    code: ErrorCodes.FORBIDDEN,
    message: `RBAC: access denied (${d.reason}${routed === undefined ? '' : `, as the server routes it: ${routed}`})`,
    policy: d.policy,
    rule: d.rule,
  };
  return false;
}
