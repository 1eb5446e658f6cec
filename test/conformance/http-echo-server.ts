import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';

/** What the server received for one request: the fields a differential test compares. */
export interface Received {
  readonly method: string;
  readonly url: string;
  /** `[name, value]` in the order received, names lower-cased. */
  readonly headers: Array<[string, string]>;
  readonly bodyLength: number;
  readonly bodySha256: string;
  /** The body as text when it is short (for readable diffs), else undefined. */
  readonly bodyText: string | undefined;
  /** How the request ended on the server: read to the end, or aborted by the client. */
  ended: 'complete' | 'aborted';
}

/** 64 MiB of deterministic bytes, produced in 64 KiB chunks. */
export const BIG = 64 * 1024 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, 'meshlet-');

/**
 * A loopback HTTP/1.1 server for differential tests. It records every request (headers as
 * received, body hash) and answers by path:
 * - `/echo`: 200 with JSON of what it received;
 * - `/status/N`: status N with a small body (none for 204/304, and HEAD);
 * - `/redirect/N`: status N, `location: /echo`, a body;
 * - `/trailers`: a chunked body followed by trailers;
 * - `/gzip`, `/br`, `/deflate`: a compressed body with its content-encoding;
 * - `/big`: 64 MiB streamed;
 * - `/hang-headers`: never answers (until the test ends);
 * - `/hang-body`: headers and a first chunk, then nothing;
 * - `/gate`: headers and a first chunk, the rest when the test calls `releaseGates()`;
 * - `/early-hints`: 103 Early Hints, then 200;
 * - `/short-body`: `content-length: 100`, 10 bytes, then the connection is destroyed;
 * plus `upgrade` (101, then echoes what it reads; a WebSocket handshake is answered as one, then a
 * text frame `hello` is sent, and a close frame answers the client's) and CONNECT (200, then echoes).
 */
export class EchoServer {
  readonly server: Server;
  readonly received: Received[] = [];
  readonly #sockets = new Set<Socket>();
  readonly #held = new Set<ServerResponse>();
  readonly #gates = new Set<ServerResponse>();
  port = 0;

  constructor() {
    this.server = createServer((req, res) => this.#handle(req, res));
    this.server.on('connection', (s: Socket) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
    this.server.on('upgrade', (req: IncomingMessage, socket: Socket) => {
      this.received.push(record(req, Buffer.alloc(0), 'complete'));
      const key = req.headers['sec-websocket-key'];
      if (typeof key === 'string') {
        const accept = createHash('sha1')
          .update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
          .digest('base64');
        socket.write(
          `HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-accept: ${accept}\r\n\r\n`,
        );
        // One unmasked text frame (FIN, opcode 1); what the client sends next (its close frame) is
        // answered with a close frame, and the connection ends.
        socket.write(Buffer.concat([Buffer.from([0x81, 5]), Buffer.from('hello')]));
        socket.once('data', () => socket.end(Buffer.from([0x88, 0])));
        return;
      }
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: ${req.headers.upgrade}\r\n\r\n`,
      );
      socket.on('data', (d) => socket.write(d));
    });
    this.server.on('connect', (req: IncomingMessage, socket: Socket) => {
      this.received.push(record(req, Buffer.alloc(0), 'complete'));
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      socket.on('data', (d) => socket.write(d));
    });
  }

  async start(): Promise<this> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  /** The records since the last call. */
  take(): Received[] {
    return this.received.splice(0);
  }

  /** Ends every `/gate` response held so far with `released`. */
  releaseGates(): void {
    for (const r of this.#gates) r.end('released');
    this.#gates.clear();
  }

  async close(): Promise<void> {
    for (const r of this.#gates) r.destroy();
    for (const r of this.#held) r.destroy();
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const hash = createHash('sha256');
    const small: Buffer[] = [];
    let length = 0;
    let finished = false;
    req.on('data', (c: Buffer) => {
      hash.update(c);
      length += c.length;
      if (length <= 4096) small.push(c);
    });
    const rec = record(req, Buffer.alloc(0), 'aborted');
    this.received.push(rec);
    req.on('aborted', () => {
      if (!finished) rec.ended = 'aborted';
    });
    req.on('end', () => {
      finished = true;
      Object.assign(rec, {
        bodyLength: length,
        bodySha256: hash.digest('hex'),
        bodyText: length <= 4096 ? Buffer.concat(small).toString('latin1') : undefined,
        ended: 'complete',
      });
      this.#answer(req, res, rec);
    });
  }

  #answer(req: IncomingMessage, res: ServerResponse, rec: Received): void {
    const path = (req.url ?? '/').split('?')[0] as string;
    const parts = path.split('/');
    if (path === '/echo') {
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({ method: rec.method, url: rec.url, length: rec.bodyLength, body: rec.bodyText }),
      );
      return;
    }
    if (parts[1] === 'status') {
      res.statusCode = Number(parts[2]);
      res.setHeader('x-kind', 'status');
      res.end(res.statusCode === 204 || res.statusCode === 304 ? undefined : `status ${res.statusCode}`);
      return;
    }
    if (parts[1] === 'redirect') {
      res.statusCode = Number(parts[2]);
      res.setHeader('location', '/echo');
      res.end('redirecting');
      return;
    }
    switch (path) {
      case '/trailers':
        res.setHeader('trailer', 'x-checksum, x-count');
        res.write('part one, ');
        res.write('part two');
        res.addTrailers({ 'x-checksum': 'abc123', 'x-count': '2' });
        res.end();
        return;
      case '/gzip':
      case '/br':
      case '/deflate': {
        const text = Buffer.from('compressed body '.repeat(200));
        const enc = path.slice(1);
        res.setHeader('content-encoding', enc);
        res.end(
          enc === 'gzip' ? gzipSync(text) : enc === 'br' ? brotliCompressSync(text) : deflateSync(text),
        );
        return;
      }
      case '/big': {
        res.setHeader('content-length', String(BIG));
        let sent = 0;
        const write = (): void => {
          while (sent < BIG) {
            sent += CHUNK.length;
            if (!res.write(CHUNK)) {
              res.once('drain', write);
              return;
            }
          }
          res.end();
        };
        write();
        return;
      }
      case '/hang-headers':
        this.#held.add(res);
        return;
      case '/hang-body':
        res.setHeader('content-type', 'text/plain');
        res.write('first chunk');
        this.#held.add(res);
        return;
      case '/gate':
        res.setHeader('content-type', 'text/plain');
        res.write('first chunk, ');
        this.#gates.add(res);
        return;
      case '/early-hints':
        res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' });
        res.end('after hints');
        return;
      case '/short-body':
        res.setHeader('content-length', '100');
        res.write('ten bytes.', () => res.socket?.destroy());
        return;
      default:
        res.statusCode = 404;
        res.end('no such path');
    }
  }
}

function record(req: IncomingMessage, body: Buffer, ended: Received['ended']): Received {
  const headers: Array<[string, string]> = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2)
    headers.push([(req.rawHeaders[i] as string).toLowerCase(), req.rawHeaders[i + 1] as string]);
  return {
    method: req.method ?? '',
    url: req.url ?? '',
    headers,
    bodyLength: body.length,
    bodySha256: createHash('sha256').update(body).digest('hex'),
    bodyText: body.toString('latin1'),
    ended,
  };
}

/** SHA-256 of the 64 MiB `/big` body and of an upload of the same bytes. */
export function bigSha256(): string {
  const h = createHash('sha256');
  for (let sent = 0; sent < BIG; sent += CHUNK.length) h.update(CHUNK);
  return h.digest('hex');
}

/** The 64 MiB body as chunks, for uploads. */
export function* bigChunks(): Generator<Buffer> {
  for (let sent = 0; sent < BIG; sent += CHUNK.length) yield CHUNK;
}
