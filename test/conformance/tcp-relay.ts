import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A transparent TCP relay on 127.0.0.1 in front of the interop server: every client kind reaches
 * the server through it, so the suite can see the wire without touching either end:
 * - `upstreamBytes` counts the bytes clients sent (TLS records included), which tells whether a
 *   large request crossed the wire compressed (the interop "CompressedRequest" feature: grpc-js's
 *   server hides the message's compressed flag from handlers);
 * - `dropConnections()` resets every open connection at once (a connection that dies after the
 *   server processed a call), while the relay keeps accepting new ones.
 */
export class TcpRelay {
  readonly #server: Server;
  readonly #pairs = new Set<readonly [Socket, Socket]>();
  /** Bytes received from clients and forwarded to the server, over all connections. */
  upstreamBytes = 0;
  /** Connections accepted so far. */
  accepted = 0;

  private constructor(server: Server) {
    this.#server = server;
  }

  static async start(targetPort: number): Promise<TcpRelay> {
    const server = createServer();
    const relay = new TcpRelay(server);
    server.on('connection', (client) => relay.#accept(client, targetPort));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return relay;
  }

  get port(): number {
    const addr = this.#server.address();
    if (addr === null || typeof addr === 'string') throw new Error('relay is not listening');
    return addr.port;
  }

  /** `127.0.0.1:PORT`: the address clients dial (and the peer grpc-js reports). */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  #accept(client: Socket, targetPort: number): void {
    this.accepted++;
    const upstream = connect(targetPort, '127.0.0.1');
    const pair = [client, upstream] as const;
    this.#pairs.add(pair);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.on('data', (chunk: Buffer) => {
      this.upstreamBytes += chunk.length;
    });
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      if (!this.#pairs.delete(pair)) return;
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  }

  /** Resets every open connection (TCP RST both ways); returns how many were dropped. */
  dropConnections(): number {
    const pairs = [...this.#pairs];
    this.#pairs.clear();
    for (const [client, upstream] of pairs) {
      client.resetAndDestroy();
      upstream.resetAndDestroy();
    }
    return pairs.length;
  }

  async close(): Promise<void> {
    this.dropConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
