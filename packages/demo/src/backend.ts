import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  Client,
  ServerCredentials,
  type ServerUnaryCall,
  type ServiceDefinition,
  type ServiceError,
  type sendUnaryData,
  status,
} from '@grpc/grpc-js';
import { type Mesh as CoreMesh, isMeshError, remainingTime } from '@meshlet/core';
import { meshMiddleware } from '@meshlet/express';
import { meshPlugin } from '@meshlet/fastify';
import { createMeshClient, createMeshServer, type MeshServer, meshServerCredentials } from '@meshlet/grpc';
import { type CertificateSource, createHttpsServer } from '@meshlet/tls';
import express from 'express';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Mesh } from 'meshlet';

/** The fault a demo instance injects. */
export type Fault =
  | { readonly kind: 'none' }
  /** Answers every request after `delayMs` (± `jitterMs`). */
  | { readonly kind: 'slow'; readonly delayMs: number; readonly jitterMs: number }
  /** Answers a fraction `rate` of requests with an error (HTTP 503, gRPC UNAVAILABLE). */
  | { readonly kind: 'flaky'; readonly rate: number }
  /** Stops listening and resets its open connections `afterMs` into the run. */
  | { readonly kind: 'dies'; readonly afterMs: number };

/** The demo's three services: what serves them, and how they are called. */
export type DemoService = 'frontend' | 'catalog' | 'reviews';
export const SERVICE_KIND: Readonly<Record<DemoService, { framework: string; transport: 'http' | 'grpc' }>> =
  {
    frontend: { framework: 'Express', transport: 'http' },
    catalog: { framework: 'gRPC', transport: 'grpc' },
    reviews: { framework: 'Fastify', transport: 'http' },
  };

export interface BackendSpec {
  readonly name: string;
  readonly service: DemoService;
  readonly fault: Fault;
}

/** What an instance needs from its surroundings. */
export interface InstanceContext {
  /**
   * The mesh of the instance's service: its inbound half (authorization policy, telemetry,
   * readiness) and, for the frontend, its outbound calls.
   */
  readonly mesh: Mesh;
  /** Serve mTLS (client certificates required) with these rotating certificates. */
  readonly tls?: CertificateSource | undefined;
  /** The frontend's gRPC client of `catalog` (`mesh://frontend/catalog`). */
  readonly catalog?: Client | undefined;
  readonly random: () => number;
}

/** One running instance of a demo service. */
export interface Backend {
  readonly name: string;
  readonly service: DemoService;
  readonly fault: Fault;
  readonly address: string;
  readonly port: number;
  /** `address:port`, the endpoint id the meshes know it by. */
  readonly id: string;
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
      return `flaky (${Math.round(fault.rate * 100)}% errors)`;
    case 'dies':
      return `dies at ${(fault.afterMs / 1000).toFixed(1)}s`;
  }
}

// --- the catalog gRPC service (JSON-encoded messages: no .proto file to ship) ------------------

export interface CatalogItem {
  readonly id: number;
  readonly name: string;
  readonly stock: number;
  readonly instance: string;
  /** Milliseconds of the caller's deadline left when the instance saw the call (-1: none). */
  readonly deadlineLeftMs: number;
}

const jsonSerialize = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
const jsonDeserialize = (bytes: Buffer): unknown => JSON.parse(bytes.toString('utf8'));
const GET_ITEM = '/meshlet.demo.Catalog/GetItem';

export const catalogServiceDefinition: ServiceDefinition = {
  GetItem: {
    path: GET_ITEM,
    requestStream: false,
    responseStream: false,
    requestSerialize: jsonSerialize,
    requestDeserialize: jsonDeserialize,
    responseSerialize: jsonSerialize,
    responseDeserialize: jsonDeserialize,
    originalName: 'getItem',
    // As @grpc/proto-loader gives `option idempotency_level = NO_SIDE_EFFECTS;`: a read.
    options: { idempotency_level: 'NO_SIDE_EFFECTS' },
  } as ServiceDefinition[string],
};

/**
 * A `catalog` client through the mesh (`mesh://<workload>/catalog`): meshlet balances every call,
 * and retries a failed `GetItem` on another instance (a read: it has no side effects).
 */
export function catalogClient(target: string): Client {
  return createMeshClient(Client, target, { idempotentMethods: [GET_ITEM] });
}

/** Calls `Catalog/GetItem`. */
export function getItem(client: Client, id: number): Promise<CatalogItem> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(GET_ITEM, jsonSerialize, jsonDeserialize, { id }, (err, value) => {
      if (err) reject(err);
      else resolve(value as CatalogItem);
    });
  });
}

const deadlineLeft = (): number => {
  const left = remainingTime();
  return left === undefined ? -1 : Math.round(left);
};

// --- instances --------------------------------------------------------------------------------

abstract class Instance implements Backend {
  readonly name: string;
  readonly service: DemoService;
  readonly fault: Fault;
  address = '127.0.0.1';
  port = 0;
  served = 0;
  injected = 0;
  up = true;
  protected readonly random: () => number;
  #timer: NodeJS.Timeout | undefined;
  readonly #pending = new Set<NodeJS.Timeout>();

  constructor(spec: BackendSpec, random: () => number) {
    this.name = spec.name;
    this.service = spec.service;
    this.fault = spec.fault;
    this.random = random;
  }

  get id(): string {
    return `${this.address}:${this.port}`;
  }

  /** Counts a request and decides its fate: `inject` an error, or answer after `delay` ms. */
  protected admit(): { inject: boolean; delay: number } {
    this.served++;
    const f = this.fault;
    if (f.kind === 'flaky' && this.random() < f.rate) {
      this.injected++;
      return { inject: true, delay: 0 };
    }
    if (f.kind === 'slow') {
      return { inject: false, delay: Math.max(0, f.delayMs + (this.random() * 2 - 1) * f.jitterMs) };
    }
    return { inject: false, delay: 0 };
  }

  /** Runs `fn` after `ms` (at once when 0); pending timers are cleared on close. */
  protected later(ms: number, fn: () => void): void {
    if (ms <= 0) {
      fn();
      return;
    }
    const t = setTimeout(() => {
      this.#pending.delete(t);
      fn();
    }, ms);
    this.#pending.add(t);
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
    this.stop();
  }

  async close(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    for (const t of this.#pending) clearTimeout(t);
    this.#pending.clear();
    this.up = false;
    await this.shutdown();
  }

  abstract listen(): Promise<void>;
  /** Closes the listener and resets every open connection at once. */
  protected abstract stop(): void;
  protected abstract shutdown(): Promise<void>;
}

function listenHttp(server: Server): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

function closeHttp(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

function httpServer(tls: CertificateSource | undefined, handler: RequestListener): Server {
  const s = tls ? createHttpsServer({ source: tls, mode: 'STRICT' }, handler) : createServer(handler);
  s.keepAliveTimeout = 10_000;
  return s;
}

function errorCode(err: unknown): string {
  let e: unknown = err;
  for (let i = 0; i < 4 && e !== undefined && e !== null; i++) {
    if (isMeshError(e)) return e.code;
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'number') return `grpc ${status[code] ?? code}`;
    if (typeof code === 'string') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return err instanceof Error ? err.message : 'error';
}

/**
 * `frontend`: an Express app with meshlet's middleware (identity, authorization, telemetry,
 * health, deadline). `GET /product/:id` calls `catalog` over gRPC and `reviews` over HTTP, both
 * through the frontend's mesh, in parallel, and answers with both (502 when either failed).
 */
class FrontendInstance extends Instance {
  readonly #server: Server;

  constructor(spec: BackendSpec, ctx: InstanceContext) {
    super(spec, ctx.random);
    const { mesh, catalog } = ctx;
    if (!catalog) throw new Error('the frontend needs a catalog client');
    const app = express();
    app.disable('x-powered-by');
    app.disable('etag');
    app.use(meshMiddleware({ mesh }));
    app.get('/product/:id', async (req, res) => {
      const { inject } = this.admit();
      if (inject) {
        res.status(503).json({ error: 'injected failure' });
        return;
      }
      const id = Number(req.params.id) || 0;
      const frontendLeft = deadlineLeft();
      try {
        const [item, reviews] = await Promise.all([getItem(catalog, id), fetchReviews(mesh, id)]);
        res.json({
          id,
          instance: this.name,
          item,
          reviews,
          deadlineLeftMs: {
            frontend: frontendLeft,
            catalog: item.deadlineLeftMs,
            reviews: reviews.deadlineLeftMs,
          },
        });
      } catch (err) {
        res.status(502).json({ error: errorCode(err) });
      }
    });
    this.#server = httpServer(ctx.tls, app as unknown as RequestListener);
  }

  async listen(): Promise<void> {
    const a = await listenHttp(this.#server);
    this.address = a.address;
    this.port = a.port;
  }

  protected stop(): void {
    this.#server.close();
    this.#server.closeAllConnections();
  }

  protected shutdown(): Promise<void> {
    return closeHttp(this.#server);
  }
}

export interface ReviewsReply {
  readonly id: number;
  readonly instance: string;
  readonly reviews: readonly { readonly stars: number; readonly text: string }[];
  readonly deadlineLeftMs: number;
}

async function fetchReviews(mesh: Mesh, id: number): Promise<ReviewsReply> {
  const res = await mesh.fetch(`http://reviews/reviews/${id}`);
  if (res.status !== 200) {
    await res.arrayBuffer();
    throw new Error(`reviews answered HTTP ${res.status}`);
  }
  return (await res.json()) as ReviewsReply;
}

const REVIEWS = [
  { stars: 5, text: 'sticks to everything' },
  { stars: 4, text: 'the mesh, but in a laptop' },
];

/** `reviews`: a Fastify app with meshlet's plugin. `GET /reviews/:id`. */
class ReviewsInstance extends Instance {
  readonly #app: FastifyInstance;
  readonly #ready: Promise<void>;

  constructor(spec: BackendSpec, ctx: InstanceContext) {
    super(spec, ctx.random);
    const tls = ctx.tls;
    const app = Fastify({
      serverFactory: (handler) => httpServer(tls, handler as RequestListener),
    }) as unknown as FastifyInstance;
    this.#app = app;
    // Drain on SIGTERM is the service's business in production; the demo stops its instances itself.
    this.#ready = (async () => {
      await app.register(meshPlugin, { mesh: ctx.mesh, drain: false });
      app.get<{ Params: { id: string } }>('/reviews/:id', (req, reply) => {
        const { inject, delay } = this.admit();
        if (inject) {
          reply.code(503).send({ error: 'injected failure' });
          return;
        }
        const left = deadlineLeft();
        this.later(delay, () => {
          if (reply.raw.destroyed) return;
          reply.send({
            id: Number(req.params.id) || 0,
            instance: this.name,
            reviews: REVIEWS,
            deadlineLeftMs: left,
          });
        });
      });
    })();
  }

  async listen(): Promise<void> {
    await this.#ready;
    await this.#app.listen({ port: 0, host: '127.0.0.1' });
    const a = this.#app.server.address() as AddressInfo;
    this.address = a.address;
    this.port = a.port;
  }

  protected stop(): void {
    this.#app.server.close();
    this.#app.server.closeAllConnections();
  }

  protected async shutdown(): Promise<void> {
    this.#app.server.closeAllConnections();
    await this.#app.close();
  }
}

/** `catalog`: a grpc-js server from `createMeshServer` (interceptor, Health service, credentials). */
class CatalogInstance extends Instance {
  readonly #grpc: MeshServer;
  readonly #tls: CertificateSource | undefined;

  constructor(spec: BackendSpec, ctx: InstanceContext) {
    super(spec, ctx.random);
    this.#tls = ctx.tls;
    const mesh: CoreMesh = ctx.mesh;
    // The mesh's authorization policy and telemetry by default, as the Express middleware and the
    // Fastify plugin take them.
    this.#grpc = createMeshServer({ mesh });
    this.#grpc.server.addService(catalogServiceDefinition, {
      GetItem: (
        call: ServerUnaryCall<{ id?: number }, CatalogItem>,
        callback: sendUnaryData<CatalogItem>,
      ) => {
        const { inject, delay } = this.admit();
        if (inject) {
          callback({ code: status.UNAVAILABLE, details: 'injected failure' } as Partial<ServiceError>);
          return;
        }
        const left = deadlineLeft();
        const id = Number(call.request?.id) || 0;
        this.later(delay, () =>
          callback(null, {
            id,
            name: 'meshlet sticker',
            stock: 7,
            instance: this.name,
            deadlineLeftMs: left,
          }),
        );
      },
    });
  }

  async listen(): Promise<void> {
    const creds = this.#tls ? meshServerCredentials(this.#tls) : ServerCredentials.createInsecure();
    this.port = await new Promise<number>((resolve, reject) => {
      this.#grpc.server.bindAsync('127.0.0.1:0', creds, (err, port) => (err ? reject(err) : resolve(port)));
    });
  }

  protected stop(): void {
    this.#grpc.server.forceShutdown();
  }

  protected async shutdown(): Promise<void> {
    this.#grpc.health?.close();
    this.#grpc.server.forceShutdown();
  }
}

/** Starts one instance of `spec.service` on 127.0.0.1, on a free port. */
export async function startBackend(spec: BackendSpec, ctx: InstanceContext): Promise<Backend> {
  const b =
    spec.service === 'frontend'
      ? new FrontendInstance(spec, ctx)
      : spec.service === 'reviews'
        ? new ReviewsInstance(spec, ctx)
        : new CatalogInstance(spec, ctx);
  await b.listen();
  return b;
}
