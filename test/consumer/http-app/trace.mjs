// The application's own OpenTelemetry SDK (latest 2.x, which wants @opentelemetry/api < 1.10) next
// to meshlet: a mesh.fetch inside an application span is a child of it, and the request carries the
// application's trace id (traceparent, seen by a loopback server). With two copies of the API,
// meshlet would see a no-op provider and send nothing.
import { once } from 'node:events';
import { createServer } from 'node:http';
import { context, SpanKind, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { check } from './lib.mjs';

const exporter = new InMemorySpanExporter();
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
trace.setGlobalTracerProvider(
  new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }),
);

const { createMesh } = await import('meshlet');
const seen = [];
const server = createServer((req, res) => {
  seen.push(req.headers.traceparent);
  res.end('ok');
}).listen(0, '127.0.0.1');
await once(server, 'listening');
const mesh = await createMesh({ services: { echo: { endpoints: [`127.0.0.1:${server.address().port}`] } } });

const app = trace.getTracer('consumer-app').startSpan('GET /checkout', { kind: SpanKind.SERVER });
await context.with(trace.setSpan(context.active(), app), async () => {
  const res = await mesh.fetch('http://echo/reviews');
  await res.text();
});
app.end();
await mesh.close();
server.close();

const appId = app.spanContext();
// SDK 2.x spans name their parent by `parentSpanContext`.
const children = exporter.getFinishedSpans().filter((s) => s.parentSpanContext?.spanId === appId.spanId);
const client = children.find((s) => s.kind === SpanKind.CLIENT);
check(
  client !== undefined,
  `meshlet's client span is a child of the application's span (${exporter.getFinishedSpans().length} spans)`,
);
check(client.spanContext().traceId === appId.traceId, 'it is in the application trace');
const header = seen[0] ?? '';
check(
  header.split('-')[1] === appId.traceId,
  `the request carried the application's trace id (traceparent ${header})`,
);
