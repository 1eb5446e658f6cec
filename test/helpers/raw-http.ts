import { connect as h2connect } from 'node:http2';
import { connect } from 'node:net';

export interface RawResponse {
  /** The status code of the status line (0 when the server closed without answering). */
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/**
 * Sends `request` (a hand-written HTTP/1.1 request: bytes exactly as given, nothing normalized)
 * on a fresh loopback connection and reads the one response until the server closes it.
 */
export function rawHttp(port: number, request: string | Buffer): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(port, '127.0.0.1', () => socket.write(request));
    socket.setTimeout(5_000, () => socket.destroy(new Error('no answer within 5 s')));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (err) =>
      (err as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(err),
    );
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      const head = end < 0 ? text : text.slice(0, end);
      const [statusLine = '', ...lines] = head.split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of lines) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      resolve({
        status: Number(statusLine.split(' ')[1] ?? 0) || 0,
        headers,
        body: end < 0 ? '' : text.slice(end + 4),
      });
    });
  });
}

/**
 * Sends several requests pipelined on one loopback connection, in one write (so the server reads
 * them at once and handles them in one turn of its event loop), and parses the responses
 * (`content-length` bodies) until the server closes the connection after the last one, which
 * should carry `Connection: close`.
 */
export function rawPipelined(port: number, requests: readonly (string | Buffer)[]): Promise<RawResponse[]> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(port, '127.0.0.1', () =>
      socket.write(
        Buffer.concat(requests.map((r) => (typeof r === 'string' ? Buffer.from(r, 'latin1') : r))),
      ),
    );
    socket.setTimeout(5_000, () => socket.destroy(new Error('no answer within 5 s')));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      let text = Buffer.concat(chunks).toString('latin1');
      const out: RawResponse[] = [];
      while (text.length > 0) {
        const end = text.indexOf('\r\n\r\n');
        if (end < 0) break;
        const [statusLine = '', ...lines] = text.slice(0, end).split('\r\n');
        const headers: Record<string, string> = {};
        for (const l of lines) {
          const i = l.indexOf(':');
          if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
        }
        const length = Number(headers['content-length'] ?? 0);
        out.push({
          status: Number(statusLine.split(' ')[1] ?? 0) || 0,
          headers,
          body: text.slice(end + 4, end + 4 + length),
        });
        text = text.slice(end + 4 + length);
      }
      resolve(out);
    });
  });
}

/**
 * A request line and headers, `Connection: close` added: `rawRequest('GET', '/a', ['Host: x'])`.
 * `target` goes on the wire as given (it may hold `#`, `\`, raw bytes).
 */
export function rawRequest(
  method: string,
  target: string | Buffer,
  headers: readonly string[] = ['Host: x'],
  close = true,
): Buffer {
  const head = (close ? [...headers, 'Connection: close'] : headers).join('\r\n');
  return Buffer.concat([
    Buffer.from(`${method} `, 'latin1'),
    typeof target === 'string' ? Buffer.from(target, 'latin1') : target,
    Buffer.from(` HTTP/1.1\r\n${head}\r\n\r\n`, 'latin1'),
  ]);
}

/**
 * One gRPC unary call over a raw HTTP/2 stream (Node's http2 client sends `:path` exactly as
 * given): `message` is the already-encoded protobuf request. Resolves with the `grpc-status`.
 */
export function rawGrpc(
  port: number,
  path: string,
  message: Buffer,
  metadata: Record<string, string> = {},
): Promise<{ grpcStatus: number; message: string }> {
  return new Promise((resolve, reject) => {
    const session = h2connect(`http://127.0.0.1:${port}`);
    session.on('error', reject);
    const frame = Buffer.alloc(5 + message.length);
    frame.writeUInt32BE(message.length, 1);
    message.copy(frame, 5);
    const stream = session.request({
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
      ...metadata,
    });
    let status: string | undefined;
    let text = '';
    const take = (h: Record<string, unknown>) => {
      if (h['grpc-status'] !== undefined) status = String(h['grpc-status']);
      if (h['grpc-message'] !== undefined) text = decodeURIComponent(String(h['grpc-message']));
    };
    stream.on('response', take);
    stream.on('trailers', take);
    stream.on('data', () => {});
    stream.on('error', reject);
    stream.on('close', () => {
      session.close();
      resolve({ grpcStatus: status === undefined ? -1 : Number(status), message: text });
    });
    stream.end(frame);
  });
}
