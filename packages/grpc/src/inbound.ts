import type { Http2Session } from 'node:http2';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import {
  type ConnectionInjector,
  experimental,
  type Metadata,
  type Server,
  type ServerCredentials,
  ServerInterceptingCall,
  type ServerInterceptor,
} from '@grpc/grpc-js';
import {
  chainCertificates,
  GOAWAY_PING_WAIT_MS,
  gracefulGoaway,
  type InboundConnection,
  InboundConnectionState,
  type InboundFilterChain,
  type InboundListenerConfig,
  type InboundListenerHandle,
  type InboundListenerPort,
  type Mesh,
  socketConnection,
} from '@meshlet/core';
import { PemCertificateProvider } from './credentials.js';

/**
 * What a server that owns its sockets knows of a call's connection: the listener state its filter
 * chain was chosen under at accept time, whether it is TLS, the listening address, and — for a
 * connection whose bytes reach grpc-js through a stream of ours (a PERMISSIVE listener's
 * plaintext connections) — its addresses, which grpc-js cannot see then.
 */
export interface OwnedConnection {
  readonly state: InboundConnectionState;
  readonly tls: boolean;
  readonly listenHost: string;
  readonly listenPort: number;
  readonly addresses: InboundConnection | undefined;
}

/** Calls on owned connections, by their metadata object (stamped by the connection's injector). */
const owned = new WeakMap<Metadata, OwnedConnection>();

/** The owned connection of a call (read by the admission interceptor, which runs after the stamp). */
export function ownedConnectionOf(metadata: Metadata): OwnedConnection | undefined {
  return owned.get(metadata);
}

/** A credentials interceptor recording `conn` for every call of an injector (it runs before the server's). */
function stamp(conn: OwnedConnection): ServerInterceptor {
  return (_method, call) =>
    new ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(md, mdNext) {
            owned.set(md, conn);
            mdNext(md);
          },
        });
      },
    });
}

/**
 * Hands a connection whose first chunk was read to grpc-js: HTTP/2 on a plaintext socket reads
 * the socket's handle directly, so bytes put back with `unshift` would be lost; a stream of ours
 * replays the chunk and relays the rest.
 */
function replayFirst(socket: Socket, first: Buffer): Duplex {
  const d = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, enc: BufferEncoding, cb: (err?: Error | null) => void) {
      socket.write(chunk, enc, cb);
    },
    final(cb: (err?: Error | null) => void) {
      socket.end(cb);
    },
    destroy(err: Error | null, cb: (err: Error | null) => void) {
      socket.destroy(err ?? undefined);
      cb(err);
    },
  });
  d.push(first);
  socket.on('data', (c: Buffer) => {
    if (!d.push(c)) socket.pause();
  });
  socket.on('end', () => d.push(null));
  socket.on('error', (e) => d.destroy(e));
  socket.on('close', () => d.destroy());
  return d;
}

/** The injector a connection was handed to, on the socket (or stream) grpc-js serves it on. */
const INJECTED = Symbol('meshlet.injector');
type Tagged = { [INJECTED]?: ConnectionInjector; _parent?: Tagged };

/**
 * The HTTP/2 sessions grpc-js serves for `injector`'s connections, from the server's session
 * table (grpc-js keeps no per-injector handle to them). A session's `socket` is Node's proxy to
 * ours, or to the TLS socket wrapping ours (`_parent`). Empty when the table is not there.
 */
function sessionsOf(server: Server, injector: ConnectionInjector): Http2Session[] {
  const table = (server as unknown as { sessions?: unknown }).sessions;
  if (!(table instanceof Map)) return [];
  const out: Http2Session[] = [];
  for (const session of table.keys() as Iterable<Http2Session>) {
    if (session.closed || session.destroyed) continue;
    try {
      const socket = session.socket as unknown as Tagged;
      if ((socket[INJECTED] ?? socket._parent?.[INJECTED]) === injector) out.push(session);
    } catch {
      // a session whose socket is gone
    }
  }
  return out;
}

/**
 * Drains an injector's connections without refusing a stream: `gracefulGoaway` on its sessions,
 * then grpc-js's own drain (the final GOAWAY; calls in flight finish within `graceMs`).
 * grpc-js's drain alone sends that final GOAWAY at once, and streams already on the wire are
 * refused (`REFUSED_STREAM`; grpc-js clients retry that once only).
 */
function drainGracefully(
  server: Server,
  injector: ConnectionInjector,
  graceMs: number,
  then?: () => void,
): void {
  gracefulGoaway(
    sessionsOf(server, injector),
    () => {
      injector.drain(graceMs);
      then?.();
    },
    Math.min(GOAWAY_PING_WAIT_MS, graceMs),
  );
}

/** One injector: the connections of one filter chain of one listener version. */
interface ChainInjector {
  readonly generation: number;
  readonly injector: ConnectionInjector;
  readonly conn: OwnedConnection;
}

/**
 * A port of a gRPC server bound under an inbound listener (gRFC A36): meshlet listens and, per
 * connection, closes it while the listener is not serving (no bytes sent), matches it to a filter
 * chain (reading its first byte when a chain asks for TLS connections), and hands it to grpc-js
 * through that chain's connection injector — TLS from the chain's certificate provider when the
 * application bound insecure credentials (the mesh decides), the application's own credentials
 * otherwise. A new listener version gets new injectors; the old ones drain (GOAWAY; calls in
 * flight finish, for up to the drain grace time).
 */
export class InboundPort {
  readonly #server: Server;
  readonly #mesh: Mesh;
  readonly #creds: ServerCredentials;
  readonly #handle: InboundListenerHandle;
  readonly #net: NetServer;
  readonly #graceMs: number;
  readonly #injectors = new Map<InboundFilterChain, ChainInjector>();
  readonly #credentials = new Map<string, ServerCredentials>();
  readonly #perConnection = new Set<ConnectionInjector>();
  readonly #offChange: () => void;
  #config: InboundListenerConfig | undefined;
  #closed = false;

  constructor(
    server: Server,
    mesh: Mesh,
    listeners: InboundListenerPort,
    creds: ServerCredentials,
    net: NetServer,
  ) {
    this.#server = server;
    this.#mesh = mesh;
    this.#creds = creds;
    this.#net = net;
    this.#graceMs = listeners.drainGraceMs;
    const a = net.address() as { address: string; port: number };
    this.#handle = listeners.listener(a.address, a.port);
    this.#offChange = this.#handle.onChange(() => this.#onChange());
    net.on('connection', (socket: Socket) => this.#accept(socket));
    this.#onChange();
  }

  get handle(): InboundListenerHandle {
    return this.#handle;
  }

  /** A new version, or serving stopped: connections of older versions drain. */
  #onChange(): void {
    const cfg = this.#handle.config;
    if (cfg === this.#config) return;
    this.#config = cfg;
    for (const [chain, ci] of this.#injectors) {
      if (cfg !== undefined && ci.generation === cfg.generation) continue;
      this.#injectors.delete(chain);
      drainGracefully(this.#server, ci.injector, this.#graceMs, () => ci.injector.destroy());
    }
    // Prepared now, so that TLS credentials are loaded before the first connection comes.
    if (cfg !== undefined) for (const chain of cfg.chains) this.#injectorFor(cfg, chain);
  }

  #credentialsFor(chain: InboundFilterChain): ServerCredentials | undefined {
    const tls = chain.tls;
    // Credentials the application chose (TLS of its own) are honoured, as gRFC A36 says; with
    // insecure ones the listener decides.
    if (tls === undefined || this.#creds._isSecure()) return this.#creds;
    let c = this.#credentials.get(tls.key);
    if (c === undefined) {
      const certs = chainCertificates(this.#mesh, tls);
      if (certs === undefined) return undefined;
      c = experimental.createCertificateProviderServerCredentials(
        new PemCertificateProvider(certs.identity),
        certs.roots === undefined ? null : new PemCertificateProvider(certs.roots),
        tls.requireClientCertificate,
      );
      this.#credentials.set(tls.key, c);
    }
    return c;
  }

  #injectorFor(cfg: InboundListenerConfig, chain: InboundFilterChain): ChainInjector | undefined {
    let ci = this.#injectors.get(chain);
    if (ci !== undefined) return ci;
    const creds = this.#credentialsFor(chain);
    if (creds === undefined) return undefined;
    const state = new InboundConnectionState(this.#handle, true);
    state.chain = chain;
    state.generation = cfg.generation;
    const a = this.#net.address() as { address: string; port: number };
    const conn: OwnedConnection = {
      state,
      tls: chain.tls !== undefined || this.#creds._isSecure(),
      listenHost: a.address,
      listenPort: a.port,
      addresses: undefined,
    };
    ci = {
      generation: cfg.generation,
      injector: this.#server.createConnectionInjector(
        experimental.createServerCredentialsWithInterceptors(creds, [stamp(conn)]),
      ),
      conn,
    };
    this.#injectors.set(chain, ci);
    return ci;
  }

  #accept(socket: Socket): void {
    socket.on('error', () => socket.destroy());
    const cfg = this.#handle.config;
    // A36: not serving — accept and close, without a byte (no TLS ServerHello, no SETTINGS).
    if (cfg === undefined || this.#closed) {
      socket.destroy();
      return;
    }
    if (!cfg.needsTransport) {
      // A chain that does not depend on the connection (istiod's) needs none of its addresses.
      const c = cfg.everyConnection === undefined ? socketConnection(socket, 'raw_buffer') : undefined;
      this.#dispatch(socket, cfg, c, undefined);
      return;
    }
    // A chain matches TLS connections only: tell them apart by the first byte (a TLS handshake
    // record is 0x16).
    socket.once('data', (chunk: Buffer) => {
      socket.pause();
      const tls = chunk[0] === 0x16;
      const now = this.#handle.config;
      if (now === undefined) {
        socket.destroy();
        return;
      }
      if (tls) {
        socket.unshift(chunk);
        this.#dispatch(socket, now, socketConnection(socket, 'tls'), undefined);
      } else this.#dispatch(socket, now, socketConnection(socket, 'raw_buffer'), chunk);
    });
  }

  #dispatch(
    socket: Socket,
    cfg: InboundListenerConfig,
    c: InboundConnection | undefined,
    replay: Buffer | undefined,
  ): void {
    // `c` undefined: the listener gives every connection one chain.
    const chain = c === undefined ? cfg.everyConnection : cfg.match(c);
    if (chain === undefined) {
      socket.destroy();
      return;
    }
    if (replay === undefined) {
      const ci = this.#injectorFor(cfg, chain);
      if (ci === undefined) socket.destroy();
      else {
        (socket as Tagged)[INJECTED] = ci.injector;
        ci.injector.injectConnection(socket);
      }
      return;
    }
    // Plaintext after a peek: grpc-js sees our stream, not the socket; this connection's injector
    // carries its addresses.
    const creds = this.#credentialsFor(chain);
    if (creds === undefined || creds._isSecure()) {
      socket.destroy();
      return;
    }
    const state = new InboundConnectionState(this.#handle, true);
    state.chain = chain;
    state.generation = cfg.generation;
    const a = this.#net.address() as { address: string; port: number };
    const conn: OwnedConnection = {
      state,
      tls: false,
      listenHost: a.address,
      listenPort: a.port,
      addresses: c ?? socketConnection(socket, 'raw_buffer'),
    };
    const injector = this.#server.createConnectionInjector(
      experimental.createServerCredentialsWithInterceptors(creds, [stamp(conn)]),
    );
    this.#perConnection.add(injector);
    let draining = false;
    const off = this.#handle.onChange(() => {
      if (draining || this.#handle.config?.generation === cfg.generation) return;
      draining = true;
      drainGracefully(this.#server, injector, this.#graceMs);
    });
    socket.once('close', () => {
      off();
      this.#perConnection.delete(injector);
      injector.destroy();
    });
    const stream = replayFirst(socket, replay);
    (stream as Tagged)[INJECTED] = injector;
    injector.injectConnection(stream);
  }

  /** Drains every connection (GOAWAY, calls in flight finish within `graceMs`). */
  drain(graceMs: number): void {
    for (const ci of this.#injectors.values()) drainGracefully(this.#server, ci.injector, graceMs);
    for (const i of this.#perConnection) drainGracefully(this.#server, i, graceMs);
  }

  /** Stops listening and destroys the injectors (the grpc-js server's shutdown ends their sessions). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#offChange();
    this.#net.close();
    for (const ci of this.#injectors.values()) ci.injector.destroy();
    this.#injectors.clear();
    for (const i of this.#perConnection) i.destroy();
    this.#perConnection.clear();
  }
}

/** Listens on `host:port` (port 0: any) for an inbound port; resolves with the bound server. */
export function listen(host: string, port: number): Promise<NetServer> {
  return new Promise((resolve, reject) => {
    // noDelay as Node's HTTP servers set it: the TLS handshake flights are not held by Nagle's algorithm
    // (HTTP/2 sessions set it themselves, but only once the handshake is done).
    const net = createNetServer({ pauseOnConnect: false, noDelay: true });
    const onError = (err: Error) => reject(err);
    net.once('error', onError);
    net.listen(port, host, () => {
      net.removeListener('error', onError);
      resolve(net);
    });
  });
}
