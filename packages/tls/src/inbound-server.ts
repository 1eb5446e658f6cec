import {
  createServer as createHttpServer,
  type IncomingMessage,
  type RequestListener,
  type ServerResponse,
} from 'node:http';
import {
  createSecureServer,
  type Http2SecureServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
} from 'node:http2';
import {
  createServer as createHttpsServer,
  type Server as HttpsServer,
  type ServerOptions as HttpsServerOptions,
} from 'node:https';
import { Server as NetServer, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import {
  certificateProvider,
  chainCertificates,
  InboundConnectionState,
  type InboundListenerConfig,
  type InboundListenerHandle,
  type InboundTlsRequirement,
  inboundPorts,
  type Mesh,
  setConnectionState,
  socketConnection,
} from '@meshlet/core';

/** Options of `createMeshHttpServer`. */
export interface MeshHttpServerOptions {
  /** The mesh whose inbound listener (or, without one, whose `tls:` certificate) decides each connection. */
  readonly mesh: Mesh;
  /** Serve HTTP/2 (and HTTP/1.1 by ALPN) on TLS connections. Default false: HTTP/1.1. */
  readonly http2?: boolean;
  /**
   * Options of the inner HTTP and HTTPS servers (timeouts, header limits; TLS options such as
   * `secureOptions` or `ciphers` for TLS connections). The certificate, key, trust bundle and
   * client-certificate settings are the filter chain's.
   */
  readonly serverOptions?: HttpsServerOptions;
}

/** The requirement used without an inbound listener: the mesh's `default` certificate, mTLS (STRICT). */
const LOCAL_MTLS: InboundTlsRequirement = Object.freeze({
  certificateProvider: 'default',
  caProvider: 'default',
  requireClientCertificate: true,
  key: 'default|default|true',
});

function destroySocket(this: Socket): void {
  this.destroy();
}

interface Tracked {
  readonly state: InboundConnectionState | undefined;
  active: number;
}

/**
 * An HTTP server whose TLS is decided per connection by the mesh: a TCP listener in front of a
 * plain HTTP server and one TLS server per certificate requirement. With an inbound listener from
 * the control plane (gRFC A36) each connection is closed while the listener is not serving
 * (without a byte), matched to a filter chain (its first byte read when a chain matches TLS
 * connections only: PERMISSIVE), and served plaintext or TLS as the chain's
 * `DownstreamTlsContext` says, with the certificate of the provider instance it names (rotated in
 * place). A listener update drains connections made under the old version (idle ones close at
 * once, busy ones after their response; all after the drain grace time). Without an inbound
 * listener: mTLS with the mesh's `tls:` certificate when it has one, else plaintext.
 *
 * Requests are emitted as `'request'` on this server, so it stands where an `http.Server` does:
 * `createMeshHttpServer({ mesh }, app).listen(8080)`, or Fastify's `serverFactory`.
 */
export class MeshHttpServer extends NetServer {
  readonly #mesh: Mesh;
  readonly #http2: boolean;
  readonly #plain: ReturnType<typeof createHttpServer>;
  readonly #tls = new Map<string, HttpsServer | Http2SecureServer>();
  readonly #tracked = new Map<Socket, Tracked>();
  #handle: InboundListenerHandle | undefined;
  #offChange: (() => void) | undefined;
  readonly #options: HttpsServerOptions;
  readonly #offRotate: Array<() => void> = [];

  constructor(options: MeshHttpServerOptions, handler?: RequestListener) {
    // TCP options of the accepted sockets, as `http.createServer` sets them (the inner servers
    // never accept: Node applies these in the listening server's accept). Without `noDelay`,
    // Nagle's algorithm holds small writes — the end of a TLS handshake flight, a short
    // response — until the peer's ACK.
    const o = options.serverOptions;
    super({
      noDelay: o?.noDelay ?? true,
      keepAlive: o?.keepAlive ?? false,
      keepAliveInitialDelay: o?.keepAliveInitialDelay ?? 0,
    });
    this.#mesh = options.mesh;
    this.#http2 = options.http2 === true;
    this.#options = options.serverOptions ?? {};
    const forward = (req: IncomingMessage, res: ServerResponse) => this.#request(req, res);
    this.#plain = createHttpServer(this.#options, forward);
    if (handler) this.on('request', handler);
    this.on('connection', (s: Socket) => this.#accept(s));
    this.on('listening', () => this.#start());
    this.on('close', () => this.#stop());
  }

  /** The inbound listener this server follows, once listening (undefined without one). */
  get inboundListener(): InboundListenerHandle | undefined {
    return this.#handle;
  }

  #start(): void {
    const listeners = inboundPorts(this.#mesh).listeners;
    const a = this.address();
    if (listeners === undefined || a === null || typeof a === 'string') return;
    this.#handle = listeners.listener(a.address, a.port);
    let generation = this.#handle.config?.generation;
    this.#offChange = this.#handle.onChange(() => {
      const g = this.#handle?.config?.generation;
      if (g === generation) return;
      generation = g;
      this.#drainOld(g, listeners.drainGraceMs);
    });
  }

  #stop(): void {
    this.#offChange?.();
    for (const off of this.#offRotate) off();
    this.#plain.close();
    for (const s of this.#tls.values()) s.close();
  }

  /**
   * Connections of another version than `generation` drain: each closes after its next response
   * (the admission step asks for `Connection: close` / GOAWAY), and whatever is left after the
   * grace time is closed. An idle keep-alive connection is not closed at once: a request the
   * client may be sending on it right then would fail (the keep-alive race).
   */
  #drainOld(generation: number | undefined, graceMs: number): void {
    const old: Socket[] = [];
    for (const [socket, t] of this.#tracked)
      if (t.state !== undefined && t.state.generation !== generation) old.push(socket);
    if (old.length > 0) {
      const timer = setTimeout(() => {
        for (const s of old) s.destroy();
      }, graceMs);
      timer.unref();
    }
  }

  #request(req: IncomingMessage, res: ServerResponse): void {
    const socket = (req.socket as TLSSocket & { _parent?: Socket })._parent ?? (req.socket as Socket);
    const t = this.#tracked.get(socket);
    if (t !== undefined) {
      t.active++;
      res.once('close', () => {
        t.active--;
      });
    }
    this.emit('request', req, res);
  }

  #tlsServer(req: InboundTlsRequirement): HttpsServer | Http2SecureServer | undefined {
    let s = this.#tls.get(req.key);
    if (s !== undefined) return s;
    const certs = chainCertificates(this.#mesh, req);
    if (certs === undefined) return undefined;
    const { identity: id, roots: ca } = certs;
    const context = () => {
      const o = id.secureContextOptions();
      return {
        key: o.key,
        cert: o.cert,
        ...(ca === undefined ? {} : { ca: ca.secureContextOptions().ca }),
        ...(o.minVersion === undefined ? {} : { minVersion: o.minVersion as 'TLSv1.2' }),
      };
    };
    const tlsOptions = {
      ...context(),
      requestCert: ca !== undefined,
      rejectUnauthorized: req.requireClientCertificate,
    };
    const forward = (r: IncomingMessage, res: ServerResponse) => this.#request(r, res);
    s = this.#http2
      ? createSecureServer(
          { ...this.#options, ...tlsOptions, allowHTTP1: true },
          forward as unknown as Parameters<typeof createSecureServer>[1],
        )
      : createHttpsServer({ ...this.#options, ...tlsOptions }, forward);
    s.on('tlsClientError', () => {});
    const server = s;
    // The application's TLS options (ciphers, secureOptions) stay through a rotation.
    const rotate = () => server.setSecureContext({ ...this.#options, ...context() });
    this.#offRotate.push(id.on('rotate', rotate));
    if (ca !== undefined && ca !== id) this.#offRotate.push(ca.on('rotate', rotate));
    this.#tls.set(req.key, s);
    return s;
  }

  // Per connection: no closure is made here (a named one costs a `__name` call under esbuild's
  // keepNames, which the published bundle and tsx use) and, for a listener whose chain does not
  // depend on the connection (istiod's), its addresses are not read.
  #accept(socket: Socket): void {
    socket.on('error', destroySocket);
    const h = this.#handle;
    if (h === undefined) {
      // No inbound listener: mTLS with the mesh's certificate when it has one, else plaintext.
      const tls = certificateProvider(this.#mesh, 'default') === undefined ? undefined : LOCAL_MTLS;
      this.#hand(socket, undefined, tls, false);
      return;
    }
    const cfg = h.config;
    // A36: not serving — accept and close, without a byte.
    if (cfg === undefined) {
      socket.destroy();
      return;
    }
    if (!cfg.needsTransport) {
      this.#route(socket, h, cfg, 'raw_buffer', false);
      return;
    }
    socket.once('data', (chunk: Buffer) => {
      socket.pause();
      socket.unshift(chunk);
      // The listener may have changed while the first byte was on its way.
      const now = h.config;
      if (now === undefined) socket.destroy();
      else this.#route(socket, h, now, chunk[0] === 0x16 ? 'tls' : 'raw_buffer', true);
    });
  }

  /** Hands `socket` to the server of its filter chain under `cfg` (closed when none matches). */
  #route(
    socket: Socket,
    h: InboundListenerHandle,
    cfg: InboundListenerConfig,
    transport: 'tls' | 'raw_buffer',
    peeked: boolean,
  ): void {
    const chain = cfg.everyConnection ?? cfg.match(socketConnection(socket, transport));
    if (chain === undefined) {
      socket.destroy();
      return;
    }
    const state = new InboundConnectionState(h, true);
    state.chain = chain;
    state.generation = cfg.generation;
    this.#hand(socket, state, chain.tls, peeked);
  }

  #hand(
    socket: Socket,
    state: InboundConnectionState | undefined,
    tls: InboundTlsRequirement | undefined,
    peeked: boolean,
  ): void {
    const target = tls === undefined ? this.#plain : this.#tlsServer(tls);
    if (target === undefined) {
      socket.destroy();
      return;
    }
    if (state !== undefined) setConnectionState(socket, state);
    const t: Tracked = { state, active: 0 };
    this.#tracked.set(socket, t);
    socket.once('close', () => this.#tracked.delete(socket));
    target.emit('connection', socket);
    // The HTTP parser needs the stream flowing again after a peek (the TLS wrap reads by itself).
    if (peeked && tls === undefined) socket.resume();
  }

  /** Closes every connection (Fastify's `forceCloseConnections`, and tests). */
  closeAllConnections(): void {
    for (const s of this.#tracked.keys()) s.destroy();
  }

  /** Closes connections without a request in flight. */
  closeIdleConnections(): void {
    for (const [s, t] of this.#tracked) if (t.active === 0) s.end();
  }
}

/**
 * A request handler of an `http2: true` server: HTTP/2 requests arrive as `node:http2`'s
 * compatibility objects, HTTP/1.1 ones (plaintext, or TLS without ALPN `h2`) as `node:http`'s.
 */
export type MeshHttp2RequestListener = (
  req: Http2ServerRequest | IncomingMessage,
  res: Http2ServerResponse | ServerResponse,
) => void;

/** Creates a `MeshHttpServer` (see there); `handler` gets every request, as with `http.createServer`. */
export function createMeshHttpServer(
  options: MeshHttpServerOptions & { readonly http2?: false },
  handler?: RequestListener,
): MeshHttpServer;
/** With `http2: true`: `handler` gets HTTP/2 and HTTP/1.1 requests, as with `http2.createSecureServer({ allowHTTP1 })`. */
export function createMeshHttpServer(
  options: MeshHttpServerOptions & { readonly http2: true },
  handler?: MeshHttp2RequestListener | ((req: Http2ServerRequest, res: Http2ServerResponse) => void),
): MeshHttpServer;
export function createMeshHttpServer(
  options: MeshHttpServerOptions,
  handler?:
    | RequestListener
    | MeshHttp2RequestListener
    | ((req: Http2ServerRequest, res: Http2ServerResponse) => void),
): MeshHttpServer {
  return new MeshHttpServer(options, handler as RequestListener | undefined);
}
