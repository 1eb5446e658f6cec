import { AsyncLocalStorage } from 'node:async_hooks';
import { makeEndpoint } from '@meshlet/core';
import {
  type Context,
  type ContextManager,
  context,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AccessLogEntry } from '../src/index.js';
import { extractContext, headerGetter, parseB3, parseTraceparent } from '../src/index.js';
import { OTEL_API_GLOBAL } from '../src/tracing.js';
import { type Backend, startBackend, startMesh, type TestMesh } from './helpers.js';

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

const cleanup: Array<() => Promise<void> | void> = [];
let exporter: InMemorySpanExporter;
let provider: BasicTracerProvider;

beforeEach(() => {
  exporter = new InMemorySpanExporter();
  provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  context.setGlobalContextManager(new AlsContextManager());
});
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
  context.disable();
  await provider.shutdown();
});

async function setup(
  telemetry: unknown = {},
  withProvider = true,
  extra = {},
): Promise<{ m: TestMesh; b: Backend }> {
  const b = await startBackend();
  cleanup.push(() => b.close());
  const m = await startMesh(
    {
      local: { workload: 'productpage', namespace: 'bookinfo' },
      services: {
        reviews: { endpoints: [b.address], identity: 'spiffe://cluster.local/ns/bookinfo/sa/reviews' },
      },
      telemetry,
    },
    withProvider ? { tracerProvider: provider, ...extra } : extra,
  );
  cleanup.push(() => m.close());
  return { m, b };
}

/** A caller's remote trace, as an inbound request would have made active. */
const CALLER_TRACE = {
  traceId: '0af7651916cd43dd8448eb211c80319c',
  spanId: 'b7ad6b7169203331',
  traceFlags: 1,
  isRemote: true,
};

function countHeader(raw: string[], name: string): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) if ((raw[i] as string).toLowerCase() === name) n++;
  return n;
}

describe('client spans', () => {
  it('creates one CLIENT span per logical request with an event per attempt and injects traceparent once', async () => {
    const { m, b } = await setup();
    b.statuses = [503, 200];
    const res = await m.fetch('http://reviews/books/1?x=1');
    expect(res.status).toBe(200);
    await res.text();
    const spans = exporter.getFinishedSpans();
    expect(spans).toHaveLength(1);
    const span = spans[0];
    if (!span) throw new Error('no span');
    expect(span.kind).toBe(SpanKind.CLIENT);
    expect(span.name).toBe('GET');
    expect(span.attributes['http.request.method']).toBe('GET');
    expect(span.attributes['server.address']).toBe('reviews');
    expect(span.attributes['url.full']).toBe('http://reviews/books/1?x=1');
    expect(span.attributes['http.response.status_code']).toBe(200);
    expect(span.attributes['http.request.resend_count']).toBe(1);
    expect(span.attributes['network.peer.port']).toBe(b.port);
    const attempts = span.events.filter((e) => e.name === 'meshlet.attempt');
    expect(attempts).toHaveLength(2);
    expect(attempts[0]?.attributes?.['http.response.status_code']).toBe(503);
    expect(attempts[0]?.attributes?.['meshlet.retry_reason']).toBe('503');
    expect(attempts[0]?.attributes?.['meshlet.endpoint']).toBe(b.address);
    expect(attempts[1]?.attributes?.['meshlet.outcome']).toBe('success');
    // Both attempts carried the same single traceparent naming this span.
    expect(b.requests).toHaveLength(2);
    const expected = `00-${span.spanContext().traceId}-${span.spanContext().spanId}-01`;
    for (const r of b.requests) {
      expect(countHeader(r.rawHeaders, 'traceparent')).toBe(1);
      expect(r.headers.traceparent).toBe(expected);
    }
  });

  it('parents the span on the context active at fetch time and never duplicates a caller traceparent', async () => {
    const { m, b } = await setup();
    const tracer = provider.getTracer('test');
    const parent = tracer.startSpan('parent');
    await context.with(trace.setSpan(context.active(), parent), async () => {
      await (await m.fetch('http://reviews/')).text();
    });
    parent.end();
    const client = exporter.getFinishedSpans().find((s) => s.kind === SpanKind.CLIENT);
    expect(client?.parentSpanContext?.spanId).toBe(parent.spanContext().spanId);
    expect(client?.spanContext().traceId).toBe(parent.spanContext().traceId);

    const own = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    await (await m.fetch('http://reviews/', { headers: { TraceParent: own } })).text();
    const last = b.requests.at(-1);
    expect(countHeader(last?.rawHeaders ?? [], 'traceparent')).toBe(1);
    expect(last?.headers.traceparent).toBe(own);
  });

  it('marks failed requests as errors', async () => {
    const { m, b } = await setup();
    await b.close();
    await expect(m.fetch('http://reviews/')).rejects.toThrow();
    const span = exporter.getFinishedSpans()[0];
    expect(span?.status.code).toBe(SpanStatusCode.ERROR);
    expect(span?.attributes['error.type']).toBe('MESHLET_ERR_CONNECT');
    expect(span?.attributes['meshlet.outcome']).toBe('connect_failure');
  });

  it('names the retry reason of attempts retried after a connection failure', async () => {
    const dead = await startBackend();
    await dead.close();
    const { m, b } = await setup();
    // Two endpoints, one refusing connections: a request that lands there is retried elsewhere.
    const rt = m.mesh.service('reviews');
    if (!rt) throw new Error('no runtime');
    rt.setPolicy({ ...rt.policy, lb: { policy: 'round_robin', config: undefined } });
    rt.applyUpdate({
      endpoints: [
        makeEndpoint({ address: '127.0.0.1', port: dead.port }),
        makeEndpoint({ address: '127.0.0.1', port: b.port }),
      ],
    });
    for (let i = 0; i < 6; i++) await (await m.fetch('http://reviews/')).text();
    const retried = exporter
      .getFinishedSpans()
      .flatMap((s) => s.events)
      .filter((e) => e.attributes?.['meshlet.outcome'] === 'connect_failure');
    expect(retried.length).toBeGreaterThan(0);
    for (const e of retried) expect(e.attributes?.['meshlet.retry_reason']).toBe('connect-failure');
  });

  it('emits child spans per attempt when attemptSpans is on, and B3 headers when asked', async () => {
    const { m, b } = await setup({ tracing: { attemptSpans: true, propagation: ['w3c', 'b3', 'b3multi'] } });
    b.statuses = [503];
    await (await m.fetch('http://reviews/')).text();
    const spans = exporter.getFinishedSpans();
    const parent = spans.find((s) => s.name === 'GET' && s.parentSpanContext === undefined);
    const children = spans.filter((s) => s.parentSpanContext?.spanId === parent?.spanContext().spanId);
    expect(children).toHaveLength(2);
    expect(children[0]?.status.code).toBe(SpanStatusCode.ERROR);
    const h = b.requests[0]?.headers ?? {};
    const sc = parent?.spanContext();
    expect(h.b3).toBe(`${sc?.traceId}-${sc?.spanId}-1`);
    expect(h['x-b3-traceid']).toBe(sc?.traceId);
    expect(h['x-b3-sampled']).toBe('1');
  });

  it('does nothing without a tracer provider: no span, no header', async () => {
    const { m, b } = await setup({}, false);
    await (await m.fetch('http://reviews/')).text();
    expect(b.requests[0]?.headers.traceparent).toBeUndefined();
    expect(exporter.getFinishedSpans()).toHaveLength(0);
  });

  it("without a tracer provider, passes an active caller's trace along (and nothing without one)", async () => {
    const { m, b } = await setup({}, false);
    const sc = CALLER_TRACE;
    await context.with(trace.setSpanContext(ROOT_CONTEXT, sc), async () => {
      await (await m.fetch('http://reviews/')).text();
    });
    expect(b.requests[0]?.headers.traceparent).toBe(`00-${sc.traceId}-${sc.spanId}-01`);
    // The root context (no caller's trace): nothing injected.
    await context.with(ROOT_CONTEXT, async () => {
      await (await m.fetch('http://reviews/')).text();
    });
    expect(b.requests[1]?.headers.traceparent).toBeUndefined();
    expect(exporter.getFinishedSpans()).toHaveLength(0);
  });

  it('without a tracer provider, sees a context manager registered or removed after it was installed', async () => {
    // The hook skips `context.active()` while no context manager is registered: it must notice
    // one registered later (and one removed) on the next request.
    context.disable();
    const { m, b } = await setup({}, false);
    const sc = CALLER_TRACE;
    const traced = trace.setSpanContext(ROOT_CONTEXT, sc);
    // No manager: `context.with` cannot make the caller's context active, nothing to pass along.
    await context.with(traced, async () => (await m.fetch('http://reviews/')).text());
    expect(b.requests[0]?.headers.traceparent).toBeUndefined();
    expect(context.setGlobalContextManager(new AlsContextManager())).toBe(true);
    // The API keeps it where the hook looks.
    expect((globalThis as Record<symbol, { context?: unknown }>)[OTEL_API_GLOBAL]?.context).toBeDefined();
    await context.with(traced, async () => (await m.fetch('http://reviews/')).text());
    expect(b.requests[1]?.headers.traceparent).toBe(`00-${sc.traceId}-${sc.spanId}-01`);
    context.disable();
    await context.with(traced, async () => (await m.fetch('http://reviews/')).text());
    expect(b.requests[2]?.headers.traceparent).toBeUndefined();
  });

  it('attaches trace ids as exemplars in OpenMetrics output', async () => {
    const { m } = await setup({ metrics: { exemplars: true } });
    await (await m.fetch('http://reviews/')).text();
    const span = exporter.getFinishedSpans()[0];
    const { body, contentType } = await m.telemetry.scrape();
    expect(contentType).toContain('application/openmetrics-text');
    const line = body
      .split('\n')
      .find((l) => l.startsWith('http_client_request_duration_seconds_bucket') && l.includes('# {'));
    expect(line).toMatch(
      new RegExp(
        `# \\{trace_id="${span?.spanContext().traceId}",span_id="${span?.spanContext().spanId}"\\} [0-9.e-]+ [0-9.]+$`,
      ),
    );
  });
});

describe('server spans and propagation', () => {
  it('continues W3C traceparent and tracestate in a SERVER span and records server metrics', async () => {
    const { m } = await setup();
    const headers = {
      traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      tracestate: 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7',
      'user-agent': 'curl/8',
    };
    const req = m.telemetry.server.start({
      method: 'GET',
      path: '/books/7',
      route: '/books/:id',
      header: headerGetter(headers),
      clientAddress: '10.0.0.9',
    });
    expect(trace.getSpan(req.context)).toBe(req.span);
    req.end(500);
    const span = exporter.getFinishedSpans()[0];
    expect(span?.kind).toBe(SpanKind.SERVER);
    expect(span?.name).toBe('GET /books/:id');
    expect(span?.spanContext().traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(span?.parentSpanContext?.spanId).toBe('00f067aa0ba902b7');
    expect(span?.parentSpanContext?.traceState?.get('congo')).toBe('t61rcWkgMzE');
    expect(span?.status.code).toBe(SpanStatusCode.ERROR);
    expect(span?.attributes['http.route']).toBe('/books/:id');
    const text = (await m.telemetry.scrape()).body;
    expect(text).toMatch(
      /http_server_requests_total\{http_request_method="GET",http_response_status_code="500",status_class="5xx",http_route="\/books\/:id"\} 1/,
    );
  });

  it('with tracing off, starts no server span and carries no caller trace, but still records metrics', async () => {
    const { m } = await setup({ tracing: false });
    const req = m.telemetry.server.start({
      method: 'GET',
      path: '/books/7',
      route: '/books/:id',
      header: headerGetter({ traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' }),
    });
    expect(req.span.isRecording()).toBe(false);
    expect(trace.getSpanContext(req.context)).toBeUndefined();
    req.end(200);
    expect(exporter.getFinishedSpans()).toHaveLength(0);
    expect((await m.telemetry.scrape()).body).toMatch(
      /http_server_requests_total\{[^}]*http_route="\/books\/:id"\} 1/,
    );
  });

  it('keeps one server series per route, method and status; without an SDK it adds no context of its own', async () => {
    const { m } = await setup({}, false);
    const start = (method: string, route: string, headers: Record<string, string> = {}, grpc = false) =>
      m.telemetry.server.start({
        method,
        path: route,
        route,
        header: headerGetter(headers),
        transport: grpc ? 'grpc' : 'http',
      });
    // No tracer provider registered and no caller's trace: the span records nothing and carries no
    // trace, so the handler runs in the caller's own context (no per-request context object).
    const plain = start('GET', '/a');
    expect(plain.span.isRecording()).toBe(false);
    expect(plain.context).toBe(context.active());
    expect(plain.run(() => context.active())).toBe(context.active());
    plain.end(200);
    // A caller's trace still carries on through a non-recording span.
    const traced = start('GET', '/a', {
      traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    });
    expect(trace.getSpanContext(traced.context)?.traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(traced.run(() => trace.getSpanContext(context.active())?.traceId)).toBe(
      '4bf92f3577b34da6a3ce929d0e0e4736',
    );
    traced.end(200);
    start('GET', '/a').end(503);
    start('POST', '/a').end(200);
    start('GET', '/b').end(200);
    start('BREW', '/a').end(200);
    start('GET', '/a').end(undefined);
    start('POST', '/pkg.Svc/Call', {}, true).end(14);
    start('POST', '/pkg.Svc/Call', {}, true).end(0);
    const text = (await m.telemetry.scrape()).body;
    const series = (method: string, status: string, route: string) => {
      const line = text
        .split('\n')
        .find(
          (l) =>
            l.startsWith(
              `http_server_requests_total{http_request_method="${method}",http_response_status_code="${status}",`,
            ) && l.includes(`http_route="${route}"}`),
        );
      return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
    };
    expect(series('GET', '200', '/a')).toBe(2);
    expect(series('GET', '503', '/a')).toBe(1);
    expect(series('POST', '200', '/a')).toBe(1);
    expect(series('GET', '200', '/b')).toBe(1);
    expect(series('_OTHER', '200', '/a')).toBe(1);
    expect(series('GET', '', '/a')).toBe(1);
    expect(series('POST', '14', '/pkg.Svc/Call')).toBe(1);
    expect(series('POST', '0', '/pkg.Svc/Call')).toBe(1);
  });

  it('reads an adapter’s request through (Node’s headers, repeated ones joined) and enters a context only to carry one', async () => {
    const entries: AccessLogEntry[] = [];
    const { m } = await setup({ accessLog: {} }, false, {
      accessLogSink: (e: AccessLogEntry) => entries.push(e),
    });
    const KEY = Symbol('outer');
    const outer = ROOT_CONTEXT.setValue(KEY, 'outer');
    const info = (headers: Record<string, string | string[]>) => ({
      transport: 'http' as const,
      method: 'GET',
      path: '/books/7',
      route: '/books/:id',
      headers,
      principal: 'spiffe://cluster.local/ns/bookinfo/sa/productpage',
    });
    context.with(outer, () => {
      // No SDK, no caller's trace: the handler runs in the context the request started in.
      const plain = m.telemetry.inbound.start(info({ host: 'reviews:9080', 'user-agent': 'curl/8' }));
      expect(plain?.run(() => context.active())).toBe(outer);
      plain?.end(200);
      // A caller's trace (its tracestate repeated, as Node keeps repeated headers) is carried into the handler.
      const traced = m.telemetry.inbound.start(
        info({
          traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
          tracestate: ['congo=t61rcWkgMzE', 'rojo=00f067aa0ba902b7'],
        }),
      );
      const inside = traced?.run(() => trace.getSpanContext(context.active()));
      expect(inside?.traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
      expect(inside?.traceState?.get('rojo')).toBe('00f067aa0ba902b7');
      expect(traced?.run(() => context.active().getValue(KEY))).toBe('outer');
      traced?.end(503);
    });
    // The access log reads the request's fields and headers through the same view.
    expect(entries.map((e) => [e.method, e.path, e.status, e.host, e.user_agent, e.peer_identity])).toEqual([
      ['GET', '/books/7', 200, 'reviews:9080', 'curl/8', 'spiffe://cluster.local/ns/bookinfo/sa/productpage'],
      ['GET', '/books/7', 503, undefined, undefined, 'spiffe://cluster.local/ns/bookinfo/sa/productpage'],
    ]);
    expect((await m.telemetry.scrape()).body).toMatch(
      /http_server_requests_total\{http_request_method="GET",http_response_status_code="503",status_class="5xx",http_route="\/books\/:id"\} 1/,
    );
  });

  it('parses and rejects traceparent and b3 per spec', () => {
    expect(parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')?.traceFlags).toBe(1);
    expect(parseTraceparent('00-00000000000000000000000000000000-00f067aa0ba902b7-01')).toBeUndefined();
    expect(parseTraceparent('ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')).toBeUndefined();
    expect(parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra')).toBeUndefined();
    expect(parseTraceparent('01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future')?.spanId).toBe(
      '00f067aa0ba902b7',
    );
    expect(parseB3('80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1')?.traceFlags).toBe(1);
    expect(parseB3('a3ce929d0e0e4736-e457b5a2e4d86bd1-0')?.traceId).toBe('0000000000000000a3ce929d0e0e4736');
    expect(parseB3('0')).toBeUndefined();
    const b3 = {
      'x-b3-traceid': '80f198ee56343ba864fe8b2a57d3eff7',
      'x-b3-spanid': 'e457b5a2e4d86bd1',
      'x-b3-sampled': '1',
    };
    const ctx = extractContext(headerGetter(b3), ['w3c', 'b3multi']);
    expect(trace.getSpanContext(ctx)?.spanId).toBe('e457b5a2e4d86bd1');
    // The headers themselves read the same as a getter over them.
    expect(trace.getSpanContext(extractContext(b3, ['w3c', 'b3multi']))).toEqual(trace.getSpanContext(ctx));
  });
});

describe('access log', () => {
  it('writes one entry per request with trace ids, to a function sink', async () => {
    const entries: AccessLogEntry[] = [];
    const { m, b } = await setup({ accessLog: {} }, true, {
      accessLogSink: (e: AccessLogEntry) => entries.push(e),
    });
    b.statuses = [503, 201];
    await (await m.fetch('http://reviews/books?x=1', { method: 'PUT', body: 'b' })).text();
    expect(entries).toHaveLength(1);
    const e = entries[0] as AccessLogEntry;
    const span = exporter.getFinishedSpans()[0];
    expect(e).toMatchObject({
      direction: 'outbound',
      service: 'reviews',
      endpoint: b.address,
      method: 'PUT',
      path: '/books?x=1',
      status: 201,
      outcome: 'success',
      attempts: 2,
      peer_identity: 'spiffe://cluster.local/ns/bookinfo/sa/reviews',
      trace_id: span?.spanContext().traceId,
      span_id: span?.spanContext().spanId,
      workload: 'productpage',
      namespace: 'bookinfo',
    });
    expect(new Date(e.time).toISOString()).toBe(e.time);
    expect(e.duration_ms).toBeGreaterThan(0);
  });

  it('samples successes but always logs failures', async () => {
    const entries: AccessLogEntry[] = [];
    const { m, b } = await setup({ accessLog: { sampleRate: 0 } }, false, {
      accessLogSink: (e: AccessLogEntry) => entries.push(e),
    });
    for (let i = 0; i < 5; i++) await (await m.fetch('http://reviews/')).text();
    expect(entries).toHaveLength(0);
    await b.close();
    await expect(m.fetch('http://reviews/')).rejects.toThrow();
    expect(entries).toHaveLength(1);
    // A new connection is refused; a pooled one the client has not yet seen closed is reset
    // (Istio's default policy retries the first, not the second).
    expect([
      ['connect_failure', 'MESHLET_ERR_CONNECT'],
      ['reset', 'MESHLET_ERR_RESET'],
    ]).toContainEqual([entries[0]?.outcome, entries[0]?.error]);
    expect(entries[0]?.trace_id).toBeUndefined();
  });
});

describe('default access log writer', () => {
  it('appends JSON lines to a file and flushes them on close', async () => {
    const { mkdtempSync, readFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'meshlet-log-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'access.log');
    const { m } = await setup({ accessLog: { output: file } }, false);
    for (let i = 0; i < 3; i++) await (await m.fetch(`http://reviews/n/${i}`)).text();
    await m.close(); // flushes and closes the file
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    expect(lines).toHaveLength(3);
    const entries = lines.map((l) => JSON.parse(l) as AccessLogEntry);
    expect(entries.map((e) => e.path)).toEqual(['/n/0', '/n/1', '/n/2']);
    expect(entries[0]).toMatchObject({ direction: 'outbound', service: 'reviews', status: 200, attempts: 1 });
  });
});
