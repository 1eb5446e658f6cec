import { AsyncLocalStorage } from 'node:async_hooks';
import type { Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ServerCredentials } from '@grpc/grpc-js';
import { type Context, type ContextManager, context, ROOT_CONTEXT, SpanKind } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import express from 'express';
import Fastify from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { currentDeadline } from '../../packages/core/src/index.js';
import { inboundTelemetry, meshMiddleware } from '../../packages/express/src/index.js';
import { meshPlugin } from '../../packages/fastify/src/index.js';
import { createMeshClient, createMeshServer } from '../../packages/grpc/src/index.js';
import {
  EchoClient,
  type EchoReply,
  type EchoRequest,
  echo,
  echoDefinition,
} from '../../packages/grpc/test/helpers.js';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  context.disable();
});

/** A minimal AsyncLocalStorage context manager (what @opentelemetry/context-async-hooks does). */
class AlsContextManager implements ContextManager {
  readonly #als = new AsyncLocalStorage<Context>();
  active(): Context {
    return this.#als.getStore() ?? ROOT_CONTEXT;
  }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    return this.#als.run(ctx, () => fn.apply(thisArg, args));
  }
  bind<T>(_ctx: Context, target: T): T {
    return target;
  }
  enable(): this {
    return this;
  }
  disable(): this {
    this.#als.disable();
    return this;
  }
}

/**
 * Express (front) -> gRPC (mid) -> Fastify (leaf), all meshed, in one process with one mesh.
 * The client gives the front a deadline (x-meshlet-deadline-ms) and a trace (traceparent); each
 * hop sees less time left than the one before, and every span belongs to the client's trace.
 */
describe('three-hop chain: Express -> gRPC -> Fastify', () => {
  it('propagates the deadline and the trace end to end', async () => {
    context.setGlobalContextManager(new AlsContextManager());
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });

    // hop 3: Fastify
    const leafApp = Fastify();
    let leafMesh: Mesh | undefined;
    const leafState: { left?: number; traceparent?: string } = {};
    // A plaintext mesh on loopback: deadline headers count from these networks (by default only
    // mTLS mesh peers' do).
    const deadlines = { trustedNetworks: ['127.0.0.0/8', '::1'] };
    await leafApp.register(meshPlugin, {
      drain: false,
      deadlines,
      telemetry: { start: (info) => (leafMesh ? inboundTelemetry(leafMesh).start(info) : undefined) },
    });
    leafApp.get('/leaf', async (req) => {
      const d = currentDeadline();
      leafState.left = d === undefined ? -1 : d - Date.now();
      leafState.traceparent = req.headers.traceparent as string | undefined;
      return { leaf: true, left: leafState.left };
    });
    await leafApp.listen({ port: 0, host: '127.0.0.1' });
    cleanups.push(() => leafApp.close());
    const leafPort = (leafApp.server.address() as AddressInfo).port;

    // hop 2: gRPC server (address known after bind)
    const midLeft: number[] = [];
    let mesh: Mesh | undefined;
    const mid = createMeshServer({
      deadlines,
      telemetry: { start: (info) => (mesh ? inboundTelemetry(mesh).start(info) : undefined) },
    });
    mid.server.addService(echoDefinition, {
      Echo: async (call: { request: EchoRequest }, cb: (e: Error | null, r?: EchoReply) => void) => {
        const d = currentDeadline();
        midLeft.push(d === undefined ? -1 : d - Date.now());
        try {
          const res = await (mesh as Mesh).fetch('http://leaf/leaf');
          const body = (await res.json()) as { left: number };
          cb(null, { text: call.request.text, server: 'mid', deadline: body.left });
        } catch (err) {
          cb(err as Error);
        }
      },
    });
    const midPort = await new Promise<number>((resolve, reject) =>
      mid.server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    cleanups.push(() => mid.server.forceShutdown());

    mesh = await createMesh(
      {
        services: {
          mid: { endpoints: [`127.0.0.1:${midPort}`] },
          leaf: { endpoints: [`127.0.0.1:${leafPort}`] },
        },
        local: { workload: 'three-hop' },
        inbound: { deadlines },
      },
      { telemetry: { tracerProvider: provider, admin: false } },
    );
    leafMesh = mesh;
    cleanups.push(() => mesh?.close());
    await mesh.ready();

    // hop 1: Express
    const client = createMeshClient(EchoClient, 'mesh://three-hop/mid');
    cleanups.push(() => client.close());
    const frontApp = express();
    frontApp.use(meshMiddleware({ mesh }));
    let frontLeft = 0;
    frontApp.get('/front', async (_req, res) => {
      const d = currentDeadline();
      frontLeft = d === undefined ? -1 : d - Date.now();
      const reply = await echo(client, { text: 'hello' });
      res.json(reply);
    });
    const front = await new Promise<HttpServer>((resolve) => {
      const s = frontApp.listen(0, '127.0.0.1', () => resolve(s));
    });
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          front.closeAllConnections();
          front.close(() => resolve());
        }),
    );
    const frontPort = (front.address() as AddressInfo).port;

    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const res = await fetch(`http://127.0.0.1:${frontPort}/front`, {
      headers: {
        'x-meshlet-deadline-ms': '4000',
        traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
      },
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as EchoReply;
    expect(body.server).toBe('mid');

    // the deadline shrinks hop by hop and never grows
    expect(frontLeft).toBeGreaterThan(0);
    expect(frontLeft).toBeLessThanOrEqual(4_000);
    expect(midLeft).toHaveLength(1);
    expect(midLeft[0]).toBeGreaterThan(0);
    expect(midLeft[0]).toBeLessThanOrEqual(frontLeft);
    expect(leafState.left).toBeGreaterThan(0);
    expect(leafState.left).toBeLessThanOrEqual(midLeft[0] as number);
    expect(body.deadline).toBe(leafState.left);

    // the trace: SERVER spans on all three hops, all in the caller's trace, chained by parents
    await provider.forceFlush();
    const spans = exporter.getFinishedSpans();
    const servers = spans.filter((s) => s.kind === SpanKind.SERVER);
    expect(servers).toHaveLength(3);
    for (const s of spans) expect(s.spanContext().traceId).toBe(traceId);
    expect(leafState.traceparent).toContain(traceId);
    const byId = new Map(spans.map((s) => [s.spanContext().spanId, s]));
    const leafSpan = servers.find((s) => s.attributes['url.path'] === '/leaf' || s.name.includes('/leaf'));
    // walk up from the leaf's server span: it must reach the front's server span
    let cur = leafSpan;
    const chain: string[] = [];
    while (cur) {
      chain.push(`${SpanKind[cur.kind]}`);
      const parentId = cur.parentSpanContext?.spanId;
      cur = parentId ? byId.get(parentId) : undefined;
    }
    expect(chain.filter((k) => k === 'SERVER')).toHaveLength(3);
  });
});
