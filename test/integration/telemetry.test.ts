import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { createMesh } from '../../packages/meshlet/src/index.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

describe('createMesh with telemetry', () => {
  it('uses the caller Registry and TracerProvider, injects traceparent and serves the admin page', async () => {
    const seen: Array<string | undefined> = [];
    const server: Server = createServer((req, res) => {
      seen.push(req.headers.traceparent as string | undefined);
      res.end('ok');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanup.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as AddressInfo).port;

    const registry = new Registry();
    const exporter = new InMemorySpanExporter();
    const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const mesh = await createMesh(
      { services: { reviews: { endpoints: [`127.0.0.1:${port}`] } }, admin: { port: 0 } },
      { telemetry: { registry, tracerProvider } },
    );
    cleanup.push(() => mesh.close());
    await mesh.ready();
    const res = await mesh.fetch('http://reviews/x');
    expect(await res.text()).toBe('ok');

    const span = exporter.getFinishedSpans()[0];
    expect(seen[0]).toBe(`00-${span?.spanContext().traceId}-${span?.spanContext().spanId}-01`);
    expect(await registry.metrics()).toContain('http_client_requests_total{service="reviews"');
    const url = mesh.adminUrl;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect(await (await fetch(`${url}metrics`)).text()).toContain(
      'meshlet_endpoints{service="reviews",state="healthy"} 1',
    );
    expect((await fetch(`${url}ready`)).status).toBe(200);
  });

  it('has no admin server unless configured', async () => {
    const mesh = await createMesh({ services: { a: { endpoints: ['127.0.0.1:1'] } } });
    cleanup.push(() => mesh.close());
    expect(mesh.adminUrl).toBeUndefined();
  });
});
