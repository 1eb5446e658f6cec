import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ecsFormat } from '@elastic/ecs-pino-format';
import { BasicTracerProvider } from '@opentelemetry/sdk-trace-base';
import { type LoggerOptions, pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { accessLogLevel, getTelemetry, headerGetter, toEcs } from '../src/index.js';
import { startBackend, startMesh } from './helpers.js';

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

function memoryPino(options: LoggerOptions = {}) {
  const chunks: string[] = [];
  const logger = pino(options, { write: (s: string) => chunks.push(s) });
  return { logger, raw: () => chunks.join('').trim().split('\n').filter(Boolean) };
}

/** Dotted path → JSON type of every leaf (arrays and empty objects are leaves). */
function shape(value: unknown, prefix = '', out = new Map<string, string>()): Map<string, string> {
  if (value !== null && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length > 0) {
    for (const [k, v] of Object.entries(value)) shape(v, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out.set(prefix, value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value);
  }
  return out;
}

/** Header maps are open-ended: one entry for each. */
function collapseHeaders(m: Map<string, string>): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of m) {
    const h = /^(http\.(request|response)\.headers)\./.exec(k);
    out.set(h ? (h[1] as string) : k, h ? 'object' : v);
  }
  return out;
}

describe('access log to a pino logger', () => {
  it('writes valid pino lines (one time key) at the level of each outcome', async () => {
    const b = await startBackend();
    cleanup.push(() => b.close());
    const out = memoryPino();
    const m = await startMesh(
      {
        local: { workload: 'productpage', namespace: 'bookinfo' },
        services: {
          reviews: { endpoints: [b.address], retry: false },
          dead: { endpoints: ['127.0.0.1:1'], retry: false },
        },
        telemetry: { accessLog: {} },
      },
      { accessLogSink: out.logger },
    );
    cleanup.push(() => m.close());
    b.statuses = [200, 404, 503];
    for (const p of ['/a', '/b', '/c']) await (await m.fetch(`http://reviews${p}`)).text();
    await expect(m.fetch('http://dead/d')).rejects.toThrow();
    // A handler that threw (inbound): nothing classified it, so `error`.
    getTelemetry(m.mesh)
      ?.server.start({ method: 'GET', path: '/e', header: () => undefined })
      .end(undefined, new Error('handler threw'));

    const raw = out.raw();
    expect(raw).toHaveLength(5);
    for (const line of raw) expect(line.match(/"time":/g)).toHaveLength(1);
    const lines = raw.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => [l.level, l.msg, l.outcome])).toEqual([
      [30, 'GET /a 200', 'success'],
      [30, 'GET /b 404', 'success'],
      [40, 'GET /c 503', 'http_error'],
      [40, 'GET /d connect_failure', 'connect_failure'],
      [50, 'GET /e error', 'error'],
    ]);
    expect(lines[0]).toMatchObject({ direction: 'outbound', service: 'reviews', status: 200, attempts: 1 });
    expect(lines[3]).toMatchObject({ service: 'dead', endpoint: '127.0.0.1:1' });
    expect(typeof lines[0]?.time).toBe('number'); // pino's own epoch ms, not meshlet's ISO string
    expect(lines[3]).toMatchObject({ error: 'MESHLET_ERR_CONNECT' });
    expect(accessLogLevel('cancelled')).toBe('info');
  });
});

describe('ECS access log', () => {
  it('writes the fields Elastic’s @elastic/ecs-pino-format writes for the same request, with the same JSON types', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshlet-ecs-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'access.log');
    const provider = new BasicTracerProvider();
    cleanup.push(() => provider.shutdown());
    const elastic = memoryPino(
      ecsFormat({ convertReqRes: true, serviceName: 'productpage' }) as LoggerOptions,
    );

    // The server: meshlet's inbound access log and Elastic's formatter for each request it serves.
    let mesh: Awaited<ReturnType<typeof startMesh>> | undefined;
    const server: Server = createServer((req, res) => {
      const tel = getTelemetry((mesh as NonNullable<typeof mesh>).mesh);
      const r = tel?.server.start({
        method: req.method ?? 'GET',
        path: req.url ?? '/',
        header: headerGetter(req.headers),
        clientAddress: req.socket.remoteAddress,
        clientPort: req.socket.remotePort,
        userAgent: req.headers['user-agent'],
        transport: 'http',
      });
      res.statusCode = 503;
      res.setHeader('content-type', 'text/plain');
      res.end('overloaded', () => {
        r?.end(503);
        const traceId = r?.span.spanContext().traceId;
        elastic.logger.warn({ req, res, trace: { id: traceId } }, 'GET /reviews/1?x=2 503');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanup.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as AddressInfo).port;
    mesh = await startMesh(
      {
        local: { workload: 'productpage', namespace: 'bookinfo' },
        services: { reviews: { endpoints: [`127.0.0.1:${port}`], retry: false } },
        telemetry: { accessLog: { format: 'ecs', output: file } },
      },
      { tracerProvider: provider },
    );
    cleanup.push(() => mesh?.close());
    await (await mesh.fetch('http://reviews/reviews/1?x=2', { headers: { 'user-agent': 'probe/1' } })).text();
    await mesh.close(); // flushes the file

    const ours = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const inbound = ours.find((l) => (l.network as { direction: string }).direction === 'ingress');
    const outbound = ours.find((l) => (l.network as { direction: string }).direction === 'egress');
    const theirs = JSON.parse(elastic.raw()[0] as string) as Record<string, unknown>;
    const theirShape = collapseHeaders(shape(theirs));

    for (const line of [inbound, outbound]) {
      const our = shape(line);
      for (const [field, type] of our) {
        if (theirShape.has(field)) expect(`${field}: ${type}`).toBe(`${field}: ${theirShape.get(field)}`);
      }
    }
    const inShape = shape(inbound);
    const common = [...inShape.keys()].filter((k) => theirShape.has(k)).sort();
    expect(common).toEqual([
      '@timestamp',
      'client.address',
      'client.ip',
      'client.port',
      'ecs.version',
      'event.dataset',
      'http.request.method',
      'http.response.status_code',
      'log.level',
      'message',
      'service.name',
      'trace.id',
      'url.full',
      'url.path',
      'url.query',
      'user_agent.original',
    ]);
    // What Elastic's formatter writes and meshlet does not (docs/telemetry.md says why).
    expect([...theirShape.keys()].filter((k) => !inShape.has(k)).sort()).toEqual([
      'host.hostname',
      'http.request.headers',
      'http.response.headers',
      'http.version',
      'process.pid',
    ]);
    // The same values where both know them.
    for (const field of [
      'http.request.method',
      'http.response.status_code',
      'url.path',
      'url.query',
      'trace.id',
    ]) {
      expect(`${field}=${String(get(inbound, field))}`).toBe(`${field}=${String(get(theirs, field))}`);
    }
    // The mesh sends the service name as Host: the URL the client asked for, on both sides.
    expect(get(inbound, 'url.full')).toBe('http://reviews/reviews/1?x=2');
    expect(get(inbound, 'event.dataset')).toBe('meshlet.access');
    expect(typeof get(theirs, 'event.dataset')).toBe('string');

    expect(outbound).toMatchObject({
      'log.level': 'warn',
      'ecs.version': '8.10.0',
      message: 'GET /reviews/1?x=2 503',
      event: { kind: 'event', outcome: 'failure', dataset: 'meshlet.access' },
      http: { request: { method: 'GET' }, response: { status_code: 503 } },
      url: { path: '/reviews/1', query: 'x=2', domain: 'reviews', full: 'http://reviews/reviews/1?x=2' },
      service: { name: 'productpage', target: { name: 'reviews' } },
      destination: { address: `127.0.0.1:${port}`, ip: '127.0.0.1', port },
      network: { direction: 'egress', protocol: 'http' },
      orchestrator: { namespace: 'bookinfo' },
      meshlet: { direction: 'outbound', outcome: 'http_error', attempts: 1 },
    });
    const duration = get(outbound, 'event.duration') as number;
    expect(Number.isInteger(duration) && duration > 1000).toBe(true); // nanoseconds
    expect(get(outbound, 'trace.id')).toMatch(/^[0-9a-f]{32}$/);
  });

  it('maps outcomes and errors', () => {
    const base = {
      time: '2026-01-01T00:00:00.000Z',
      direction: 'outbound' as const,
      service: 'reviews',
      endpoint: '[::1]:9001',
      method: 'POST',
      path: '/x',
      status: undefined,
      duration_ms: 1.5,
      attempts: 3,
      peer_identity: 'spiffe://td/ns/a/sa/b',
      trace_id: undefined,
      span_id: undefined,
      workload: 'w',
      namespace: 'n',
      transport: 'grpc' as const,
    };
    const ecs = toEcs({ ...base, outcome: 'timeout', error: 'MESHLET_ERR_TIMEOUT' });
    expect(ecs).toMatchObject({
      'log.level': 'warn',
      event: { outcome: 'failure', duration: 1_500_000, type: ['access', 'error'] },
      error: { code: 'MESHLET_ERR_TIMEOUT' },
      destination: { ip: '::1', port: 9001 },
      network: { protocol: 'grpc' },
      meshlet: { peer_identity: 'spiffe://td/ns/a/sa/b', attempts: 3 },
    });
    expect(toEcs({ ...base, outcome: 'cancelled', error: 'aborted' })).toMatchObject({
      'log.level': 'info',
      event: { outcome: 'unknown', type: ['access'] },
      error: { message: 'aborted' },
    });
  });
});

function get(obj: unknown, path: string): unknown {
  let cur = obj as Record<string, unknown> | undefined;
  if (cur && path in cur) return cur[path];
  for (const part of path.split('.')) cur = cur?.[part] as Record<string, unknown> | undefined;
  return cur;
}
