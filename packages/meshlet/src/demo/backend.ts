import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type CertificateSource, createHttpsServer } from '@meshlet/tls';

/** The fault a demo instance injects. */
export type Fault =
  | { readonly kind: 'none' }
  /** Answers every request after `delayMs` (± `jitterMs`). */
  | { readonly kind: 'slow'; readonly delayMs: number; readonly jitterMs: number }
  /** Answers a fraction `rate` of requests with 503. */
  | { readonly kind: 'flaky'; readonly rate: number }
  /** Stops listening and resets its open connections `afterMs` into the run. */
  | { readonly kind: 'dies'; readonly afterMs: number };

export interface BackendSpec {
  readonly name: string;
  readonly fault: Fault;
  /** Serve HTTPS requiring client certificates (mTLS, STRICT) with these rotating certificates. */
  readonly tls?: CertificateSource | undefined;
}

/** One running instance of the demo's `catalog` service. */
export interface Backend {
  readonly name: string;
  readonly fault: Fault;
  readonly address: string;
  readonly port: number;
  /** Requests the instance answered, and how many of them with an injected error. */
  readonly served: number;
  readonly injected: number;
  /** False once the instance was killed. */
  readonly up: boolean;
  /** Zeroes `served` and `injected` (after the warm-up). */
  resetCounters(): void;
  /** Arms time-based faults; called when traffic starts. */
  arm(): void;
  /** Stops the instance abruptly: the listener closes and open connections are destroyed. */
  kill(): void;
  close(): Promise<void>;
}

/** Describes a fault in a few words, for the live view. */
export function describeFault(fault: Fault): string {
  switch (fault.kind) {
    case 'none':
      return 'healthy';
    case 'slow':
      return `slow (+${fault.delayMs}ms)`;
    case 'flaky':
      return `flaky (${Math.round(fault.rate * 100)}% 503)`;
    case 'dies':
      return `dies at ${(fault.afterMs / 1000).toFixed(1)}s`;
  }
}

const BODY = JSON.stringify({ items: [{ id: 42, name: 'meshlet sticker', stock: 7 }] });

class HttpBackend implements Backend {
  readonly name: string;
  readonly fault: Fault;
  readonly #server: Server;
  readonly #random: () => number;
  address = '127.0.0.1';
  port = 0;
  served = 0;
  injected = 0;
  up = true;
  #timer: NodeJS.Timeout | undefined;
  readonly #pending = new Set<NodeJS.Timeout>();

  constructor(spec: BackendSpec, random: () => number) {
    this.name = spec.name;
    this.fault = spec.fault;
    this.#random = random;
    const handler = (req: IncomingMessage, res: ServerResponse) => this.#handle(req, res);
    this.#server = spec.tls
      ? createHttpsServer({ source: spec.tls, mode: 'STRICT' }, handler)
      : createServer(handler);
    this.#server.keepAliveTimeout = 10_000;
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(0, '127.0.0.1', () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    const addr = this.#server.address() as AddressInfo;
    this.address = addr.address;
    this.port = addr.port;
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    req.resume();
    if (req.url === '/healthz') {
      // The process is up: its health endpoint says so, whatever its requests suffer.
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
      return;
    }
    this.served++;
    const f = this.fault;
    if (f.kind === 'flaky' && this.#random() < f.rate) {
      this.injected++;
      res.writeHead(503, { 'content-type': 'text/plain', 'x-instance': this.name });
      res.end('injected failure\n');
      return;
    }
    if (f.kind === 'slow') {
      const delay = Math.max(0, f.delayMs + (this.#random() * 2 - 1) * f.jitterMs);
      const t = setTimeout(() => {
        this.#pending.delete(t);
        this.#reply(res);
      }, delay);
      this.#pending.add(t);
      return;
    }
    this.#reply(res);
  }

  #reply(res: ServerResponse): void {
    if (res.destroyed) return;
    res.writeHead(200, { 'content-type': 'application/json', 'x-instance': this.name });
    res.end(BODY);
  }

  resetCounters(): void {
    this.served = 0;
    this.injected = 0;
  }

  arm(): void {
    if (this.fault.kind === 'dies' && this.#timer === undefined) {
      this.#timer = setTimeout(() => this.kill(), this.fault.afterMs);
    }
  }

  kill(): void {
    if (!this.up) return;
    this.up = false;
    // Count what the death breaks: every request in flight on this instance.
    this.#server.close();
    this.#server.closeAllConnections();
  }

  async close(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    for (const t of this.#pending) clearTimeout(t);
    this.#pending.clear();
    this.up = false;
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }
}

/** Starts one instance on 127.0.0.1, on a free port. */
export async function startBackend(spec: BackendSpec, random: () => number = Math.random): Promise<Backend> {
  const b = new HttpBackend(spec, random);
  await b.listen();
  return b;
}
