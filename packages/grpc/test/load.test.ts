import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import {
  type Client,
  credentials,
  loadPackageDefinition,
  type Metadata,
  makeClientConstructor,
  ServerCredentials,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import {
  decodeOrcaLoadReport,
  ORCA_BIN_HEADER,
  processEventLoopLag,
  processLoad,
  SHED_HEADER,
} from '@meshlet/core';
import { service as healthService } from 'grpc-health-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createMeshServer, type MeshServer, type MeshServerOptions } from '../src/index.js';
import { EchoClient, type EchoClientType, echoDefinition } from './helpers.js';

/**
 * Load reports and overload protection on meshlet's gRPC server, read with plain grpc-js clients:
 * the per-call `endpoint-load-metrics-bin` trailer, the out-of-band `OpenRcaService` (grpc-js's
 * own `ServerMetricRecorder`), and RESOURCE_EXHAUSTED for shed calls, the health service exempt.
 */
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  vi.restoreAllMocks();
});

let handled = 0;

async function start(options: MeshServerOptions): Promise<{ ms: MeshServer; client: Client; port: number }> {
  const ms = createMeshServer({ telemetry: false, ...options });
  ms.server.addService(echoDefinition, {
    Echo: (call: { request: { text: string } }, cb: (e: null, r: unknown) => void) => {
      handled++;
      cb(null, { text: call.request.text, server: 'a' });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    ms.server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  cleanups.push(() => ms.server.forceShutdown());
  const client = new EchoClient(`127.0.0.1:${port}`, credentials.createInsecure());
  cleanups.push(() => client.close());
  return { ms, client, port };
}

/** One Echo call: its error (if any) and its trailers. */
function call(client: Client, text = 'hi'): Promise<{ err: ServiceError | null; trailers: Metadata }> {
  return new Promise((resolve) => {
    let err: ServiceError | null = null;
    const c = (client as EchoClientType).echo({ text }, {}, (e) => {
      err = e;
    }) as NodeJS.EventEmitter;
    c.on('status', (st: { metadata: Metadata }) =>
      setImmediate(() => resolve({ err, trailers: st.metadata })),
    );
  });
}

describe('gRPC server load reports', () => {
  it('ends every call with the sampler’s report in the endpoint-load-metrics-bin trailer, as grpc-js encodes it', async () => {
    const { client } = await start({});
    const { err, trailers } = await call(client);
    expect(err).toBeNull();
    const [bin] = trailers.get(ORCA_BIN_HEADER);
    expect(Buffer.isBuffer(bin)).toBe(true);
    expect(Buffer.compare(bin as Buffer, processLoad().current.binary)).toBe(0);
    const report = decodeOrcaLoadReport(bin as Buffer);
    expect(report.ok && 'in_flight' in report.report.namedMetrics).toBe(true);
  });

  it('sends none with loadReports: false', async () => {
    const { client } = await start({ loadReports: false });
    expect((await call(client)).trailers.get(ORCA_BIN_HEADER)).toEqual([]);
  });

  it('serves out-of-band reports through grpc-js’s OpenRcaService when asked', async () => {
    const { port, ms } = await start({ loadReports: { oob: true } });
    expect(ms.oobLoadReports).toBe(true);
    const grpcDir = dirname(createRequire(import.meta.url).resolve('@grpc/grpc-js/package.json'));
    const def = loadSync('xds/service/orca/v3/orca.proto', {
      keepCase: true,
      defaults: true,
      includeDirs: [join(grpcDir, 'proto/xds'), join(grpcDir, 'proto/protoc-gen-validate')],
    });
    const pkg = loadPackageDefinition(def) as unknown as {
      xds: { service: { orca: { v3: { OpenRcaService: new (a: string, c: unknown) => Client } } } };
    };
    const orca = new pkg.xds.service.orca.v3.OpenRcaService(
      `127.0.0.1:${port}`,
      credentials.createInsecure(),
    );
    cleanups.push(() => orca.close());
    const stream = (
      orca as unknown as { streamCoreMetrics(r: unknown): NodeJS.EventEmitter & { cancel(): void } }
    ).streamCoreMetrics({ report_interval: { seconds: 0, nanos: 50_000_000 } });
    cleanups.push(() => stream.cancel());
    stream.on('error', () => {});
    const first = await new Promise<Record<string, unknown>>((resolve) => stream.once('data', resolve));
    const current = processLoad().current.report;
    expect(first).toMatchObject({
      rps_fractional: expect.any(Number),
      application_utilization: expect.any(Number),
    });
    expect(first.cpu_utilization).toBe(current.cpuUtilization);
  });
});

describe('gRPC server overload protection', () => {
  it('ends calls admitted while the loop is behind with RESOURCE_EXHAUSTED before the handler; health checks pass', async () => {
    const { client, port } = await start({ overload: { maxUtilization: 1 } });
    handled = 0;
    expect((await call(client)).err).toBeNull();
    // The event loop is 200 ms behind from now on (the heartbeat every guard reads).
    vi.spyOn(processEventLoopLag(), 'lagMs').mockReturnValue(200);
    const { err, trailers } = await call(client);
    expect(err?.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(err?.details).toMatch(/^MESHLET_ERR_OVERLOADED: overloaded: the event loop is 200ms behind/);
    expect(trailers.get('retry-after')).toEqual(['1']);
    expect(trailers.get(SHED_HEADER)).toEqual(['event-loop-delay']);
    const report = decodeOrcaLoadReport(trailers.get(ORCA_BIN_HEADER)[0] as Buffer);
    expect(report.ok && report.report.applicationUtilization).toBe(1);
    expect(handled).toBe(1);
    const health = new (makeClientConstructor(healthService, 'grpc.health.v1.Health'))(
      `127.0.0.1:${port}`,
      credentials.createInsecure(),
    ) as unknown as Client & {
      check(r: { service: string }, cb: (e: ServiceError | null, r?: { status: string }) => void): void;
    };
    cleanups.push(() => health.close());
    const st = await new Promise<string>((resolve, reject) =>
      health.check({ service: '' }, (e, r) => (e ? reject(e) : resolve(r?.status ?? ''))),
    );
    expect(st).toBe('SERVING');
  });
});
