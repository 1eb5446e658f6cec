import type { InboundAttributes, InboundAuthorizer } from '../serving.js';

/**
 * Inbound listeners from a control plane (gRFC A36: xDS-enabled servers). A server of a mesh with
 * such a port serves a listening address only while the control plane has given its listener;
 * each connection is matched to one of the listener's filter chains, which says whether the
 * connection must be TLS (and with which certificate), how requests are routed and which RBAC
 * policies apply. `@meshlet/xds` implements the port (`setInboundListeners`); the admission step,
 * the gRPC server and meshlet's HTTP server factory read it.
 */

/** How a connection arrived, for filter chain matching (Envoy's `FilterChainMatch` inputs). */
export interface InboundConnection {
  readonly localAddress: string | undefined;
  readonly localPort: number | undefined;
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  /** `tls` for a TLS connection, else `raw_buffer` (Envoy's transport protocol names). */
  readonly transport: 'tls' | 'raw_buffer';
}

/** What a filter chain's `DownstreamTlsContext` asks of a connection. */
export interface InboundTlsRequirement {
  /** The certificate provider instance of the server's certificate. */
  readonly certificateProvider: string;
  /** The provider instance of the trust bundle client certificates are verified against, if any. */
  readonly caProvider: string | undefined;
  /** Clients must present a certificate that verifies (STRICT mTLS); else TLS with an optional one. */
  readonly requireClientCertificate: boolean;
  /** Equal for equal requirements: a connection made under one key may serve under any chain of that key. */
  readonly key: string;
}

/** A request as a filter chain sees it: the admission step's request (attributes, host, headers). */
export interface InboundChainRequest extends InboundAttributes {
  /** Set by `InboundFilterChain.route`: what the chain's authorization needs of the route it chose. */
  chainRoute: unknown;
  /** The query string including its `?`, or ''. */
  readonly query?: string | undefined;
}

/** Why a request was refused by its listener or route: HTTP 503, gRPC UNAVAILABLE. */
export interface InboundUnavailable {
  readonly message: string;
}

/** One filter chain of an inbound listener. */
export interface InboundFilterChain {
  readonly name: string;
  /** The chain's TLS requirement (its `DownstreamTlsContext`); undefined: plaintext. */
  readonly tls: InboundTlsRequirement | undefined;
  /**
   * Routes the request (virtual host by authority, route by path and headers): undefined when a
   * route takes it (`non_forwarding_action`), else why not (no route, a route with another action,
   * its route configuration missing). Sets `r.chainRoute`.
   */
  route(r: InboundChainRequest): InboundUnavailable | undefined;
  /**
   * The chain's authorization (its RBAC HTTP filters, with the route's overrides, and its TLS
   * requirement checked against the connection); undefined when it has none. The admission step
   * evaluates it after the mesh's own policy sources, on both views of the path.
   */
  readonly authorizer: InboundAuthorizer | undefined;
}

/** One version of an inbound listener, ready to serve. */
export interface InboundListenerConfig {
  /** Grows with every new version of the listener (a new version drains connections of the old). */
  readonly generation: number;
  /** Whether matching needs the connection's transport (a chain matches `transport_protocol: tls`). */
  readonly needsTransport: boolean;
  /** Every filter chain of this version (the default chain included), for servers that prepare them. */
  readonly chains: readonly InboundFilterChain[];
  /** The filter chain of a connection (the most specific match, else the default chain), if any. */
  match(c: InboundConnection): InboundFilterChain | undefined;
  /**
   * The chain every connection gets, when no chain's match depends on the connection (one chain
   * without `filter_chain_match`, as istiod writes them; or only a default chain): servers skip
   * reading the connection's addresses for `match`. Undefined otherwise (or not known).
   */
  readonly everyConnection?: InboundFilterChain | undefined;
}

/** The listener of one listening address (`ip:port`), shared by every server bound to it. */
export interface InboundListenerHandle {
  /** The resource name (the bootstrap's `server_listener_resource_name_template` with the address). */
  readonly name: string;
  /** The listening address, `ip:port` (`[::]:8080`). */
  readonly address: string;
  /** The version in use; undefined while not serving (not yet known, does not exist, NACKed at first). */
  readonly config: InboundListenerConfig | undefined;
  /** Why it is not serving. */
  readonly reason: string | undefined;
  /** Called when `config` changes (a new version, or serving stops or starts); returns a remover. */
  onChange(listener: () => void): () => void;
}

/** The mesh's inbound listeners (set by `@meshlet/xds` when the bootstrap names a server listener template). */
export interface InboundListenerPort {
  /** The listener of a listening address (`host` as bound: `0.0.0.0`, `::`, `10.0.0.7`); subscribed on first use. */
  listener(host: string, port: number): InboundListenerHandle;
  /** How long connections of an older listener version may finish their requests (A36's drain grace time). */
  readonly drainGraceMs: number;
}

/** What the listener decided for one connection: its listener, the version and chain it serves under. */
export class InboundConnectionState {
  readonly handle: InboundListenerHandle;
  /**
   * The chain was chosen when the server accepted the connection (it set up TLS for it): requests
   * keep that chain after a listener update, while the server drains the connection (Envoy).
   */
  readonly pinned: boolean;
  /** The generation `chain` was matched for (-1: none yet). */
  generation = -1;
  chain: InboundFilterChain | undefined = undefined;

  constructor(handle: InboundListenerHandle, pinned = false) {
    this.handle = handle;
    this.pinned = pinned;
  }

  /**
   * Matches the connection against `config` (a version newer than the one its chain was matched
   * for). `ok`: `chain` is the new version's. `drain`: the connection was made under a chain whose
   * TLS requirement differs from the new one's; it keeps its chain until it closes (Envoy drains
   * such connections). `none`: no chain of the new version matches it.
   */
  update(config: InboundListenerConfig, c: InboundConnection): 'ok' | 'drain' | 'none' {
    const next = config.match(c);
    if (next === undefined) return 'none';
    const prev = this.chain;
    if (prev === undefined || prev.tls?.key === next.tls?.key) {
      this.chain = next;
      this.generation = config.generation;
      return 'ok';
    }
    return 'drain';
  }
}

/** `host:port` with IPv6 hosts in brackets (`[::]:8080`), as gRPC formats a listening address. */
export function listeningAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The parts of a Node `Http2Session` a graceful GOAWAY uses. */
export interface DrainableSession {
  readonly closed?: boolean;
  readonly destroyed?: boolean;
  goaway(code?: number, lastStreamID?: number): void;
  ping(callback: (err: Error | null) => void): boolean;
  close(): void;
}

/** How long a graceful GOAWAY's PING may wait for its answer before the final GOAWAY (at most). */
export const GOAWAY_PING_WAIT_MS = 2_000;

const goingAway = new WeakSet<DrainableSession>();

/**
 * Ends HTTP/2 sessions as gRPC's servers (C-core, Go) do, so that no stream is refused: a first
 * GOAWAY naming the largest stream ID (the client opens no new stream there, and those it opened
 * before it heard of it are served) and a PING; once every PING is answered — or after `waitMs` —
 * `then` (which sends the final GOAWAY, naming the last stream received: `session.close()`).
 * A lone `session.close()` refuses streams already on the wire (`REFUSED_STREAM`). A session
 * already going away is left to its first drain.
 */
export function gracefulGoaway(
  sessions: readonly DrainableSession[],
  then: () => void,
  waitMs = GOAWAY_PING_WAIT_MS,
): void {
  const live = sessions.filter((x) => x.closed !== true && x.destroyed !== true && !goingAway.has(x));
  let left = live.length;
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    then();
  };
  const timer = setTimeout(finish, waitMs);
  timer.unref?.();
  const answered = () => {
    if (--left === 0) finish();
  };
  if (left === 0) finish();
  for (const session of live) {
    goingAway.add(session);
    try {
      session.goaway(0 /* NO_ERROR */, 2 ** 31 - 1);
      if (!session.ping(answered)) answered();
    } catch {
      answered();
    }
  }
}

/** The parts of a Node request (HTTP/1.x or HTTP/2 compatibility API) `closeConnectionAfter` reads. */
export interface ClosableRequest {
  readonly httpVersionMajor?: number;
  readonly stream?: { readonly session?: DrainableSession | undefined } | undefined;
}

/** The parts of a Node response `closeConnectionAfter` uses. */
export interface ClosableResponse {
  readonly headersSent?: boolean;
  setHeader(name: string, value: string): unknown;
  once(event: 'finish', listener: () => void): unknown;
}

/**
 * Closes the request's connection once its response is sent (a connection the inbound listener
 * drains or no longer serves): `Connection: close` on HTTP/1.1; on HTTP/2 a graceful GOAWAY after
 * the response (`gracefulGoaway`: the session's other streams, and those already on the wire,
 * finish).
 */
export function closeConnectionAfter(req: ClosableRequest, res: ClosableResponse): void {
  if (req.httpVersionMajor === 2) {
    const session = req.stream?.session;
    if (session !== undefined) res.once('finish', () => gracefulGoaway([session], () => session.close()));
  } else if (res.headersSent !== true) res.setHeader('connection', 'close');
}
