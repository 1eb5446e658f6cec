import { status } from '@grpc/grpc-js';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { createMeshClient } from '../../packages/grpc/src/index.js';
import {
  EchoClient,
  echo,
  get,
  startEchoServer,
  stopServer,
  type TestServer,
} from '../../packages/grpc/test/helpers.js';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';
import { run, sample } from '../../packages/telemetry/test/helpers.js';

// gRPC client calls are reported under OpenTelemetry's RPC conventions (rpc.client.call.duration,
// rpc.system.name, rpc.method, rpc.status_code), never as HTTP requests; their spans carry the
// attempts as events, as fetch's do.

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Rig {
  readonly mesh: Mesh;
  readonly registry: Registry;
  readonly exporter: InMemorySpanExporter;
  readonly servers: TestServer[];
  readonly client: ReturnType<typeof createMeshClient>;
  readonly traceparents: string[];
}

async function rig(): Promise<Rig> {
  const traceparents: string[] = [];
  const servers: TestServer[] = [];
  for (const name of ['s0', 's1']) {
    const s = await startEchoServer(name, {
      handler: (call, cb) => {
        s.calls++;
        traceparents.push(String(call.metadata.get('traceparent')[0] ?? ''));
        if (s.failWith !== undefined) cb({ code: s.failWith, details: `${name} fails` });
        else cb(null, { text: call.request.text, server: name });
      },
    });
    cleanups.push(() => stopServer(s));
    servers.push(s);
  }
  const registry = new Registry();
  const exporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const mesh = await createMesh(
    {
      services: {
        echo: {
          endpoints: servers.map((s) => `127.0.0.1:${s.port}`),
          lb: 'round_robin',
          outlierDetection: false,
        },
      },
      telemetry: { metrics: { naming: 'both' } },
    },
    { telemetry: { registry, tracerProvider } },
  );
  cleanups.push(() => mesh.close());
  await mesh.ready();
  const client = createMeshClient(EchoClient, 'mesh:///echo');
  cleanups.push(() => client.close());
  return { mesh, registry, exporter, servers, client, traceparents };
}

const spansNamed = (exporter: InMemorySpanExporter, name: string): ReadableSpan[] =>
  exporter.getFinishedSpans().filter((s) => s.name === name);

describe('gRPC client telemetry', () => {
  it('records gRPC calls as RPC metrics (never as HTTP requests), promtool-clean', async () => {
    const { registry, servers, client } = await rig();
    (servers[0] as TestServer).failWith = status.UNAVAILABLE;
    // Idempotent Get: two calls, round robin (from a random start); each attempt that reached s0 is
    // retried on s1 — one or two of them, depending on where round robin started.
    for (let i = 0; i < 2; i++) expect((await get(client, { text: 'x' })).server).toBe('s1');
    const getFailures = (servers[0] as TestServer).calls;
    expect([1, 2]).toContain(getFailures);
    // Echo (not idempotent) reaching s0: UNAVAILABLE, one attempt.
    const codes: number[] = [];
    for (let i = 0; i < 2; i++)
      codes.push(
        await echo(client, { text: 'x' }).then(
          () => 0,
          (e: { code: number }) => e.code,
        ),
      );
    expect(codes.sort()).toEqual([status.OK, status.UNAVAILABLE]);

    const text = await registry.metrics();
    const call = { service: 'echo', rpc_system_name: 'grpc' };
    expect(
      sample(text, 'rpc_client_calls_total', {
        ...call,
        rpc_method: 'test.Echo/Get',
        rpc_status_code: 'OK',
        outcome: 'success',
      }),
    ).toBe(2);
    expect(
      sample(text, 'rpc_client_call_duration_seconds_count', {
        ...call,
        rpc_method: 'test.Echo/Echo',
        rpc_status_code: 'UNAVAILABLE',
        outcome: 'reset',
      }),
    ).toBe(1);
    expect(
      sample(text, 'rpc_client_calls_total', {
        ...call,
        rpc_method: 'test.Echo/Echo',
        rpc_status_code: 'OK',
      }),
    ).toBe(1);
    // Attempts: Get 2 OK + its failures on s0 (each retried), Echo 2 (one UNAVAILABLE, not retried).
    expect(
      sample(text, 'meshlet_rpc_client_attempts_total', {
        service: 'echo',
        rpc_status_code: 'UNAVAILABLE',
        outcome: 'reset',
      }),
    ).toBe(getFailures + 1);
    expect(
      sample(text, 'meshlet_rpc_client_attempts_total', { service: 'echo', rpc_status_code: 'OK' }),
    ).toBe(3);
    expect(sample(text, 'meshlet_retries_total', { service: 'echo', reason: 'unavailable' })).toBe(
      getFailures,
    );
    // Istio's names as Istio reports gRPC: response_code 200, grpc_response_status the code.
    expect(
      sample(text, 'istio_requests_total', {
        destination_service: 'echo',
        request_protocol: 'grpc',
        response_code: '200',
        grpc_response_status: '14',
      }),
    ).toBe(1);
    // Not one HTTP series for these calls.
    expect(text).not.toMatch(/^http_client_requests_total\{/m);
    expect(text).not.toMatch(/^meshlet_client_attempts_total\{/m);
    const promtool = await run('promtool', ['check', 'metrics'], text);
    // The only lint finding is Istio's own millisecond unit (kept for its dashboards).
    expect(promtool.out.trim().split('\n')).toEqual([
      'istio_request_duration_milliseconds use base unit "seconds" instead of "milliseconds"',
    ]);
  });

  it('gives each call a CLIENT span under the RPC conventions, with its attempts as events and its context on the wire', async () => {
    const { exporter, servers, client, traceparents } = await rig();
    (servers[0] as TestServer).failWith = status.UNAVAILABLE;
    for (let i = 0; i < 2; i++) await get(client, { text: 'x' });
    const spans = spansNamed(exporter, 'test.Echo/Get');
    expect(spans).toHaveLength(2);
    for (const span of spans) {
      expect(span.kind).toBe(SpanKind.CLIENT);
      expect(span.attributes).toMatchObject({
        'rpc.system.name': 'grpc',
        'rpc.system': 'grpc',
        'rpc.method': 'test.Echo/Get',
        'rpc.service': 'test.Echo',
        'rpc.status_code': 'OK',
        'rpc.grpc.status_code': status.OK,
        'server.address': 'echo',
        'meshlet.service': 'echo',
      });
      expect(span.status.code).toBe(SpanStatusCode.UNSET);
      // Every attempt carried this span's context.
      const id = `00-${span.spanContext().traceId}-${span.spanContext().spanId}-01`;
      expect(traceparents.filter((t) => t === id).length).toBe(span.events.length);
    }
    // The call that was retried: two attempt events, the first UNAVAILABLE with its retry reason.
    const retried = spans.find((s) => s.events.length === 2) as ReadableSpan;
    expect(retried.attributes['meshlet.resend_count']).toBe(1);
    const [first, second] = retried.events;
    expect(first?.name).toBe('meshlet.attempt');
    expect(first?.attributes).toMatchObject({
      'meshlet.attempt': 0,
      'rpc.status_code': 'UNAVAILABLE',
      'rpc.grpc.status_code': status.UNAVAILABLE,
      'error.type': 'UNAVAILABLE',
      'meshlet.outcome': 'reset',
      'meshlet.retry_reason': 'unavailable',
      'network.peer.port': (servers[0] as TestServer).port,
    });
    expect(second?.attributes).toMatchObject({
      'meshlet.attempt': 1,
      'rpc.status_code': 'OK',
      'network.peer.port': (servers[1] as TestServer).port,
    });
    expect(second?.attributes?.['error.type']).toBeUndefined();
  });

  it('marks a failed call: span status ERROR, error.type the status name; a mesh error its code', async () => {
    const { mesh, exporter, servers, client } = await rig();
    for (const s of servers) s.failWith = status.INVALID_ARGUMENT;
    await expect(echo(client, { text: 'x' })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT });
    const [failed] = spansNamed(exporter, 'test.Echo/Echo');
    expect(failed?.status.code).toBe(SpanStatusCode.ERROR);
    expect(failed?.attributes).toMatchObject({
      'rpc.status_code': 'INVALID_ARGUMENT',
      'error.type': 'INVALID_ARGUMENT',
    });
    // A call the mesh refuses (no endpoint) never reaches a server: the code the caller got.
    mesh.service('echo')?.applyUpdate({ endpoints: [] });
    await expect(get(client, { text: 'x' })).rejects.toMatchObject({ code: status.UNAVAILABLE });
    const [refused] = spansNamed(exporter, 'test.Echo/Get');
    expect(refused?.attributes).toMatchObject({
      'rpc.status_code': 'UNAVAILABLE',
      'error.type': 'MESHLET_ERR_NO_HEALTHY_ENDPOINT',
      'meshlet.outcome': 'no_endpoint',
    });
  });
});
