import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Mesh } from './mesh.js';
import { startDraining } from './serving.js';

export interface HttpDrainOptions {
  /** The mesh whose readiness fails first (`startDraining`). */
  readonly mesh?: Mesh | undefined;
  /**
   * Time between failing readiness and closing the listener, in ms, so that Kubernetes removes
   * the pod from its Endpoints before new connections stop being accepted (default 0; set it to
   * about `periodSeconds` of the readiness probe, or use a preStop `sleep` instead).
   */
  readonly delayMs?: number;
  /**
   * Longest wait for requests in flight, in ms; then remaining connections are destroyed
   * (default 25 s, under Kubernetes' default terminationGracePeriodSeconds of 30).
   */
  readonly timeoutMs?: number;
  /**
   * Close keep-alive connections older than this (ms) after their current response, so clients
   * reconnect and rebalance (default: none).
   */
  readonly maxConnectionAgeMs?: number | undefined;
}

interface SocketState {
  readonly born: number;
  active: number;
  /** Responses in flight on this connection (HTTP/1.1 pipelining aside, at most one). */
  readonly responses: Set<ServerResponse>;
}

/**
 * Graceful drain for a Node HTTP(S) server (Express, Fastify, plain `http`): readiness fails first
 * (`startDraining(mesh)`), after `delayMs` the server stops accepting connections, idle keep-alive
 * connections are closed at once, busy ones get `Connection: close` on their response and close
 * after it, and the returned promise resolves once every connection is gone (or `timeoutMs`
 * passed, when the rest are destroyed).
 */
export class HttpDrainer {
  readonly #server: Server;
  readonly #options: HttpDrainOptions;
  readonly #sockets = new Map<Socket, SocketState>();
  #draining = false;
  #drained: Promise<void> | undefined;
  #wake: (() => void) | undefined;

  constructor(server: Server, options: HttpDrainOptions = {}) {
    this.#server = server;
    this.#options = options;
    // A TLS server's requests arrive on the TLSSocket of 'secureConnection', not on the raw TCP
    // socket of 'connection': track the one requests will use.
    const tls = typeof (server as Server & { setSecureContext?: unknown }).setSecureContext === 'function';
    server.on(tls ? 'secureConnection' : 'connection', (socket: Socket) => this.#onConnection(socket));
    // First in line, so `Connection: close` is set before the application's handler answers.
    server.prependListener('request', (req: IncomingMessage, res: ServerResponse) =>
      this.#onRequest(req, res),
    );
  }

  /** Connections currently open, and requests in flight on them. */
  get stats(): { connections: number; inFlight: number } {
    let inFlight = 0;
    for (const s of this.#sockets.values()) inFlight += s.active;
    return { connections: this.#sockets.size, inFlight };
  }

  get draining(): boolean {
    return this.#draining;
  }

  #onConnection(socket: Socket): void {
    if (this.#sockets.has(socket)) return;
    this.#sockets.set(socket, { born: Date.now(), active: 0, responses: new Set() });
    socket.once('close', () => {
      this.#sockets.delete(socket);
      this.#check();
    });
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket;
    let st = this.#sockets.get(socket);
    if (!st) {
      st = { born: Date.now(), active: 0, responses: new Set() };
      this.#sockets.set(socket, st);
      socket.once('close', () => {
        this.#sockets.delete(socket);
        this.#check();
      });
    }
    st.active++;
    st.responses.add(res);
    const maxAge = this.#options.maxConnectionAgeMs;
    if (this.#draining || (maxAge !== undefined && Date.now() - st.born >= maxAge)) {
      if (!res.headersSent) res.setHeader('connection', 'close');
    }
    const state = st;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      state.active--;
      state.responses.delete(res);
      if (this.#draining && state.active === 0) {
        // Let the response flush, then close the connection.
        setImmediate(() => {
          if (state.active === 0) socket.end();
        });
      }
      this.#check();
    };
    res.once('finish', finish);
    res.once('close', finish);
  }

  #check(): void {
    if (this.#draining && this.#sockets.size === 0) this.#wake?.();
  }

  /** Starts the drain (idempotent); resolves when the server has stopped. */
  drain(): Promise<void> {
    this.#drained ??= this.#run();
    return this.#drained;
  }

  async #run(): Promise<void> {
    const o = this.#options;
    if (o.mesh) startDraining(o.mesh);
    if (o.delayMs && o.delayMs > 0) await new Promise((r) => setTimeout(r, o.delayMs));
    this.#draining = true;
    const closed = new Promise<void>((resolve) => {
      if (!this.#server.listening) resolve();
      else this.#server.close(() => resolve());
    });
    for (const [socket, st] of this.#sockets) {
      if (st.active === 0) socket.end();
      // Busy connections close after their response: tell the client not to reuse them.
      else for (const res of st.responses) if (!res.headersSent) res.setHeader('connection', 'close');
    }
    const allGone = new Promise<void>((resolve) => {
      this.#wake = resolve;
      this.#check();
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        for (const socket of this.#sockets.keys()) socket.destroy();
        resolve();
      }, o.timeoutMs ?? 25_000);
      timer.unref();
    });
    await Promise.race([allGone, timeout]);
    clearTimeout(timer);
    await closed;
  }

  /**
   * Drains on the first of `signals` (default SIGTERM), then runs `then` (e.g. `mesh.close()`).
   * Returns a function that removes the handler.
   */
  onSignal(signals: readonly NodeJS.Signals[] = ['SIGTERM'], then?: () => unknown): () => void {
    const handler = () => {
      this.drain().then(
        () => then?.(),
        () => then?.(),
      );
    };
    for (const s of signals) process.once(s, handler);
    return () => {
      for (const s of signals) process.removeListener(s, handler);
    };
  }
}
