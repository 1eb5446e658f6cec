import type { Server as HttpServer, IncomingMessage, RequestListener } from 'node:http';
// node:http2 and node:https are loaded when a server is created (process.getBuiltinModule), not on
// `import 'meshlet'`: ~10 ms and ~4 MB that a client-only service never needs.
import type {
  Http2SecureServer,
  Http2ServerRequest,
  Http2ServerResponse,
  SecureServerOptions,
} from 'node:http2';
import type { ServerOptions as HttpsOptions, Server as HttpsServer } from 'node:https';
import {
  createServer as createNetServer,
  type Server as NetServer,
  Socket as NetSocket,
  type Socket,
} from 'node:net';
import type { TLSSocket } from 'node:tls';
import { forwardedClientIp, type PeerSocket, socketPeer } from '@meshlet/core';
import type { RequestAttributes } from './authz/evaluate.js';
import type { CertificateSource } from './source.js';

/** STRICT: clients must present a certificate that chains to the bundle. PERMISSIVE: optional. */
export type ServerTlsMode = 'STRICT' | 'PERMISSIVE';

export interface MeshServerTlsOptions {
  readonly source: CertificateSource;
  /** Default STRICT. */
  readonly mode?: ServerTlsMode | undefined;
}

function tlsOptions(source: CertificateSource, mode: ServerTlsMode) {
  return {
    ...source.secureContextOptions(),
    requestCert: true,
    rejectUnauthorized: mode === 'STRICT',
  };
}

/** Keeps `server`'s certificate in step with `source` (new handshakes get the new material). */
export function rotateServerContext(
  server: { setSecureContext(options: object): void; once(event: 'close', fn: () => void): unknown },
  source: CertificateSource,
): () => void {
  const off = source.on('rotate', () => server.setSecureContext(source.secureContextOptions()));
  server.once('close', off);
  return off;
}

/**
 * An HTTPS server with the source's certificate, rotated in place (`setSecureContext`) whenever
 * the files change. In STRICT mode (default) clients without a valid certificate are refused
 * during the handshake.
 */
export function createHttpsServer(
  options: MeshServerTlsOptions & Omit<HttpsOptions, 'key' | 'cert' | 'ca'>,
  handler?: RequestListener,
): HttpsServer {
  const { source, mode = 'STRICT', ...rest } = options;
  const server = process
    .getBuiltinModule('node:https')
    .createServer({ ...rest, ...tlsOptions(source, mode) }, handler);
  rotateServerContext(server, source);
  return server;
}

/** An HTTP/2 server (HTTP/1.1 accepted too, via ALPN) with rotating certificates. */
export function createHttp2Server(
  options: MeshServerTlsOptions & Omit<SecureServerOptions, 'key' | 'cert' | 'ca'>,
  handler?: (req: Http2ServerRequest, res: Http2ServerResponse) => void,
): Http2SecureServer {
  const { source, mode = 'STRICT', ...rest } = options;
  const server = process
    .getBuiltinModule('node:http2')
    .createSecureServer({ allowHTTP1: true, ...rest, ...tlsOptions(source, mode) }, handler);
  rotateServerContext(server, source);
  return server;
}

/**
 * PERMISSIVE mode on one port: a TCP listener that looks at the first byte of each connection and
 * hands TLS handshakes (0x16) to `tlsServer` and everything else to `plainServer`.
 */
export function createPermissiveListener(
  tlsServer: HttpsServer | Http2SecureServer,
  plainServer: HttpServer,
): NetServer {
  // `noDelay` as the HTTP(S) servers set it (they never accept here: this listener does).
  const listener = createNetServer({ pauseOnConnect: true, noDelay: true }, (socket) => {
    socket.once('data', (chunk: Buffer) => {
      socket.pause();
      socket.unshift(chunk);
      // The TLS wrap drains what was unshifted itself; the HTTP parser needs the stream flowing.
      if (chunk[0] === 0x16) tlsServer.emit('connection', socket);
      else {
        plainServer.emit('connection', socket);
        socket.resume();
      }
    });
    socket.once('error', () => socket.destroy());
    socket.resume();
  });
  listener.once('close', () => {
    tlsServer.close();
    plainServer.close();
  });
  return listener;
}

type SocketLike = Socket | TLSSocket;

function socketOf(x: IncomingMessage | Http2ServerRequest | SocketLike): SocketLike | undefined {
  if (typeof (x as TLSSocket).getPeerCertificate === 'function' || x instanceof NetSocket)
    return x as SocketLike;
  const req = x as { socket?: unknown; stream?: { session?: { socket?: unknown } } };
  const s = req.stream?.session?.socket ?? req.socket;
  return (s as SocketLike | undefined) ?? undefined;
}

/**
 * The peer's SPIFFE ID (the `spiffe://` URI SAN of its verified client certificate), from a
 * request (HTTP/1.1 or HTTP/2) or a socket. Undefined for plaintext, for clients without a
 * certificate and for certificates that did not verify. Cached per connection.
 */
export function peerIdentity(
  reqOrSocket: IncomingMessage | Http2ServerRequest | SocketLike,
): string | undefined {
  const socket = socketOf(reqOrSocket);
  return socket === undefined ? undefined : socketPeer(socket as PeerSocket).principal;
}

export interface RequestAttributesOptions {
  /**
   * Proxies in front of the server that append to `X-Forwarded-For` (Istio's `numTrustedProxies`):
   * `remoteIp` is the Nth entry from the right. Default 0: the connection peer, whatever the header
   * says (a client writes the header's left part itself).
   */
  readonly xffNumTrustedHops?: number;
}

/**
 * Authorization attributes of an inbound HTTP request (for `createAuthorizer`). The path is the
 * request target as received: servers should go through the inbound admission step of
 * `@meshlet/core` (what the Express, Fastify and gRPC adapters do), which normalizes it first.
 */
export function requestAttributes(
  req: IncomingMessage | Http2ServerRequest,
  options: RequestAttributesOptions = {},
): RequestAttributes {
  const socket = socketOf(req);
  const peer = socket === undefined ? undefined : socketPeer(socket as PeerSocket);
  const headers = req.headers as Record<string, string | string[] | undefined>;
  const host = (headers[':authority'] as string | undefined) ?? (headers.host as string | undefined);
  const hops = options.xffNumTrustedHops ?? 0;
  return {
    principal: peer?.principal,
    mtls: peer?.mtls ?? false,
    sourceIp: peer?.remoteAddress,
    remoteIp: forwardedClientIp(headers['x-forwarded-for'], hops) ?? peer?.remoteAddress,
    destinationIp: peer?.localAddress,
    destinationPort: peer?.localPort,
    sni: peer?.sni,
    method: req.method,
    path: req.url,
    host,
    headers,
  };
}
