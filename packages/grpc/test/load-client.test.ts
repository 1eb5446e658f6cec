import { credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import {
  encodeOrcaLoadReport,
  type Mesh,
  orcaLoadReport,
  parseConfig,
  processEventLoopLag,
  type ServiceRuntime,
} from '@meshlet/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createMeshClient, createMeshServer } from '../src/index.js';
import {
  EchoClient,
  type EchoClientType,
  type EchoReply,
  echo,
  meshFor,
  startEchoServer,
  stopServer,
  type TestServer,
} from './helpers.js';

/**
 * The client side of the load-aware loop over gRPC (real grpc-js servers on loopback): mesh
 * clients — `createMeshClient` (core's call pipeline) and plain grpc-js clients on `mesh:///`
 * channels (meshlet's picker) — record the per-call `endpoint-load-metrics-bin` trailer and, when
 * the policy asks, the out-of-band stream through grpc-js's own ORCA client; a RESOURCE_EXHAUSTED
 * answer marked as shed sends the call elsewhere at once and backs off the endpoint, never ejects.
 */
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  vi.restoreAllMocks();
});

async function mesh(svc: Record<string, unknown>): Promise<Mesh> {
  const m = await meshFor(svc);
  cleanups.push(() => m.close());
  return m;
}

/** A plain grpc-js server that reports `utilization` at 100 rps in every call's trailers. */
async function reporting(name: string, utilization: number): Promise<TestServer> {
  const trailer = encodeOrcaLoadReport(
    orcaLoadReport({ applicationUtilization: utilization, rpsFractional: 100 }),
  );
  const s = await startEchoServer(name, {
    handler: (call, cb) => {
      s.calls++;
      const md = new Metadata();
      md.set('endpoint-load-metrics-bin', trailer);
      cb(null, { text: call.request.text, server: name }, md);
    },
  });
  cleanups.push(() => stopServer(s));
  return s;
}

const WRR = { policy: 'client_side_weighted_round_robin', blackoutPeriod: 0, weightUpdatePeriod: '100ms' };

/** Waits until `ready()` holds, re-checking every 10 ms (no fixed sleep). */
async function until(ready: () => boolean, timeoutMs = 3000): Promise<void> {
  await vi.waitFor(() => expect(ready()).toBe(true), { timeout: timeoutMs, interval: 10 });
}

function plainEcho(client: EchoClientType): Promise<{ err: ServiceError | null; reply?: EchoReply }> {
  return new Promise((resolve) =>
    client.echo({ text: 'x' }, {}, (err, reply) => resolve(reply ? { err, reply } : { err })),
  );
}

describe('gRPC clients record load reports', () => {
  it('from per-call trailers, and client_side_weighted_round_robin weights the endpoints by them (createMeshClient and mesh:/// channels)', async () => {
    const busy = await reporting('busy', 0.9);
    const idle = await reporting('idle', 0.1);
    const m = await mesh({
      svc: { endpoints: [`127.0.0.1:${busy.port}`, `127.0.0.1:${idle.port}`], lb: WRR },
    });
    const rt = m.service('svc') as ServiceRuntime;
    const client = createMeshClient(EchoClient, 'mesh:///svc');
    cleanups.push(() => client.close());
    while (busy.calls === 0 || idle.calls === 0) await echo(client, { text: 'x' });
    expect(rt.endpoints.map((e) => e.load?.report?.applicationUtilization)).toEqual([0.9, 0.1]);
    // Once the weights are due (100 ms), the schedule follows them: A58 weights 100/0.9 : 100/0.1.
    const due = rt.now() + 110;
    await until(() => rt.now() >= due);
    const got = { busy: 0, idle: 0 };
    for (let i = 0; i < 60; i++) got[(await echo(client, { text: 'x' })).server as 'busy' | 'idle']++;
    expect(got.idle).toBeGreaterThanOrEqual(50);
    expect(rt.endpoints.map((e) => Math.round(e.load?.weight ?? 0))).toEqual([111, 1000]);

    // A plain grpc-js client on the mesh channel: meshlet's picker records its calls' reports too.
    const reportsBefore = rt.endpoints.map((e) => e.load?.reports ?? 0);
    const plain = new EchoClient('mesh:///svc', credentials.createInsecure()) as unknown as EchoClientType;
    cleanups.push(() => plain.close());
    for (let i = 0; i < 10; i++) expect((await plainEcho(plain)).err).toBeNull();
    const added = rt.endpoints.map((e, i) => (e.load?.reports ?? 0) - (reportsBefore[i] as number));
    expect(added.reduce((a, b) => a + b, 0)).toBe(10);
  });

  it('ignores a malformed trailer report (the call succeeds, nothing is recorded)', async () => {
    const s = await startEchoServer('bad', {
      handler: (call, cb) => {
        const md = new Metadata();
        md.set('endpoint-load-metrics-bin', Buffer.from([0x09, 0x01])); // a truncated double
        cb(null, { text: call.request.text, server: 'bad' }, md);
      },
    });
    cleanups.push(() => stopServer(s));
    const m = await mesh({ svc: { endpoints: [`127.0.0.1:${s.port}`], lb: WRR } });
    const client = createMeshClient(EchoClient, 'mesh:///svc');
    cleanups.push(() => client.close());
    expect((await echo(client, { text: 'x' })).server).toBe('bad');
    const ep = m.service('svc')?.endpoints[0];
    expect(ep?.load?.reports ?? 0).toBe(0);
    expect(ep?.load?.lastParse).toMatchObject({ ok: false });
  });

  it('from the out-of-band stream (grpc-js’s ORCA client) when the policy enables it, and stops when it no longer does', async () => {
    const ms = createMeshServer({ telemetry: false, loadReports: { oob: true } });
    const oob = await startEchoServer('oob', { server: ms.server });
    cleanups.push(() => stopServer(oob));
    const oobLb = { ...WRR, enableOobLoadReport: true, oobReportingPeriod: '50ms' };
    const m = await mesh({ svc: { endpoints: [`127.0.0.1:${oob.port}`], lb: oobLb } });
    const rt = m.service('svc') as ServiceRuntime;
    expect(rt.oobLoadReportPeriodMs).toBe(50);
    const client = createMeshClient(EchoClient, 'mesh:///svc');
    cleanups.push(() => client.close());
    // No call is made: the channel connects and the reports come on the OOB stream alone.
    await new Promise<void>((resolve, reject) =>
      client.waitForReady(Date.now() + 3000, (e) => (e ? reject(e) : resolve())),
    );
    const ep = () => rt.endpoints[0];
    await until(() => (ep()?.load?.reports ?? 0) >= 2);
    expect(oob.calls).toBe(0);
    expect(ep()?.load?.report?.rpsFractional).toEqual(expect.any(Number));

    // The policy drops OOB (a config change): the stream ends, reports stop.
    const without = parseConfig({ services: { svc: { endpoints: ['127.0.0.1:1'], lb: WRR } } }).services.svc;
    rt.setPolicy(without as never);
    expect(rt.oobLoadReportPeriodMs).toBeUndefined();
    const settled = (ep()?.load?.reports ?? 0) + 1; // one report may already be on its way
    const quietUntil = rt.now() + 200;
    await until(() => rt.now() >= quietUntil);
    expect(ep()?.load?.reports ?? 0).toBeLessThanOrEqual(settled);
    expect(oob.calls).toBe(0);
  });
});

describe('a shedding gRPC endpoint', () => {
  it('is avoided for its Retry-After, its calls sent elsewhere at once, and never ejected', async () => {
    // A meshlet server with overload protection and a plain one; only the first sheds.
    const ms = createMeshServer({ telemetry: false, overload: { maxUtilization: 1 } });
    const shedding = await startEchoServer('shedding', { server: ms.server });
    cleanups.push(() => stopServer(shedding));
    const healthy = await startEchoServer('healthy');
    cleanups.push(() => stopServer(healthy));
    const m = await mesh({
      svc: {
        endpoints: [`127.0.0.1:${shedding.port}`, `127.0.0.1:${healthy.port}`],
        lb: 'round_robin',
        // the strictest outlier detection: one gateway error ejects
        outlierDetection: { consecutiveGatewayFailure: 1, consecutive5xx: 1, interval: '50ms' },
      },
    });
    const client = createMeshClient(EchoClient, 'mesh:///svc');
    cleanups.push(() => client.close());
    // Connect both endpoints before the loop falls behind.
    while (shedding.calls === 0 || healthy.calls === 0) await echo(client, { text: 'x' });
    const before = { shedding: shedding.calls, healthy: healthy.calls };
    vi.spyOn(processEventLoopLag(), 'lagMs').mockReturnValue(300);
    // Echo is not idempotent: a shed call was not processed, so it goes elsewhere all the same.
    for (let i = 0; i < 10; i++) expect((await echo(client, { text: 'x' })).server).toBe('healthy');
    expect(shedding.calls).toBe(before.shedding);
    expect(healthy.calls).toBe(before.healthy + 10);
    const rt = m.service('svc') as ServiceRuntime;
    const shed = m.snapshot().services.svc?.endpoints.find((e) => e.port === shedding.port);
    expect(shed).toMatchObject({ ejected: false, failures: 0 });
    const ep = rt.endpoint(`127.0.0.1:${shedding.port}`);
    expect(ep?.penaltyUntil).toBeGreaterThan(rt.now());
    // The shed answer carried the server's overloaded report.
    expect(ep?.load?.report?.applicationUtilization).toBe(1);

    // A plain grpc-js call on the mesh channel gets the shed answer itself (grpc-js owns its
    // retries), but the endpoint is backed off the same way and not ejected.
    rt.endpoints.forEach((e) => {
      e.penaltyUntil = 0;
    });
    rt.rebuild();
    const plain = new EchoClient('mesh:///svc', credentials.createInsecure()) as unknown as EchoClientType;
    cleanups.push(() => plain.close());
    const answers: string[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await plainEcho(plain);
      answers.push(r.err ? `code ${r.err.code}` : (r.reply?.server ?? ''));
    }
    expect(answers.filter((a) => a === 'code 8').length).toBe(1);
    expect(answers.filter((a) => a === 'healthy').length).toBe(5);
    expect(m.snapshot().services.svc?.endpoints.find((e) => e.port === shedding.port)).toMatchObject({
      ejected: false,
      failures: 0,
    });
  });
});
