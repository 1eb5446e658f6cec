/**
 * The load-aware loop over real HTTP: meshlet's fetch asks endpoints for their load reports when
 * its policy balances by them and records what comes back (`endpoint-load-metrics`), the
 * client-side weighted round robin follows the reported load, and a server that sheds is avoided
 * for its Retry-After without being ejected, the shed request going elsewhere at once.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ORCA_FORMAT_HEADER, ORCA_HEADER, processEventLoopLag } from '../../packages/core/src/index.js';
import { meshMiddleware } from '../../packages/express/src/index.js';
import { createMesh } from '../../packages/meshlet/src/index.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  vi.restoreAllMocks();
});

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<number> {
  const server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return (server.address() as AddressInfo).port;
}

describe('load reports over HTTP', () => {
  it('are asked for by a load-aware policy, recorded per endpoint, and weight the endpoints', async () => {
    // Two servers that report their load by hand (any ORCA-speaking server would do): the same
    // rate, one at 90% utilization, one at 10%: A58 weights 100/0.9 and 100/0.1, 1 : 9.
    const asked: Array<string | undefined> = [];
    const reporting = (utilization: number) => (req: IncomingMessage, res: ServerResponse) => {
      asked.push(req.headers[ORCA_FORMAT_HEADER] as string | undefined);
      res.setHeader(ORCA_HEADER, `TEXT application_utilization=${utilization},rps_fractional=100`);
      res.end(String(utilization));
    };
    const busy = await serve(reporting(0.9));
    const idle = await serve(reporting(0.1));
    const mesh = await createMesh({
      services: {
        svc: {
          endpoints: [`127.0.0.1:${busy}`, `127.0.0.1:${idle}`],
          lb: { policy: 'client_side_weighted_round_robin', blackoutPeriod: 0, weightUpdatePeriod: '100ms' },
        },
        plain: { endpoints: [`127.0.0.1:${busy}`], lb: 'peak_ewma' },
      },
    });
    cleanups.push(() => mesh.close());
    await mesh.ready();
    for (let i = 0; i < 4; i++) await (await mesh.fetch('http://svc/')).text();
    expect(asked).toEqual(['TEXT', 'TEXT', 'TEXT', 'TEXT']);
    const rt = mesh.service('svc');
    expect(rt?.endpoints.map((e) => e.load?.report?.applicationUtilization)).toEqual([0.9, 0.1]);
    // After the weight update period the schedule follows the weights.
    await new Promise((r) => setTimeout(r, 120));
    const got: Record<string, number> = {};
    for (let i = 0; i < 100; i++) {
      const body = await (await mesh.fetch('http://svc/')).text();
      got[body] = (got[body] ?? 0) + 1;
    }
    expect(got['0.1']).toBeGreaterThanOrEqual(85);
    expect(rt?.endpoints.map((e) => Math.round(e.load?.weight ?? 0))).toEqual([111, 1000]);
    // A policy that does not balance by load does not ask.
    asked.length = 0;
    await (await mesh.fetch('http://plain/')).text();
    expect(asked).toEqual([undefined]);
  });
});

describe('a shedding endpoint', () => {
  it('is avoided for its Retry-After, its requests retried elsewhere, and never ejected', async () => {
    const served: string[] = [];
    const app = (name: string, overload: boolean) => {
      const a = express();
      a.use(meshMiddleware({ telemetry: false, overload }));
      a.post('/order', (_req, res) => {
        served.push(name);
        res.json({ name });
      });
      return a;
    };
    const listen = async (a: express.Express) => serve((req, res) => a(req, res));
    const shedding = await listen(app('shedding', true));
    const healthy = await listen(app('healthy', false));
    const mesh = await createMesh({
      services: {
        svc: {
          endpoints: [`127.0.0.1:${shedding}`, `127.0.0.1:${healthy}`],
          lb: 'round_robin',
          // the strictest outlier detection: one gateway error ejects
          outlierDetection: { consecutiveGatewayFailure: 1, consecutive5xx: 1, interval: '50ms' },
        },
      },
    });
    cleanups.push(() => mesh.close());
    await mesh.ready();
    // Only the server with overload protection sees an event loop 300 ms behind.
    vi.spyOn(processEventLoopLag(), 'lagMs').mockReturnValue(300);
    const statuses: number[] = [];
    for (let i = 0; i < 10; i++) {
      // POST: not idempotent, yet a shed request was not processed and goes elsewhere.
      const res = await mesh.fetch('http://svc/order', { method: 'POST', body: '{}' });
      statuses.push(res.status);
      await res.arrayBuffer();
    }
    expect(statuses).toEqual(Array(10).fill(200));
    expect(served).toEqual(Array(10).fill('healthy'));
    const snap = mesh.snapshot().services.svc;
    const shed = snap?.endpoints.find((e) => e.port === shedding);
    expect(shed).toMatchObject({ ejected: false, failures: 0 });
    expect(shed?.attempts).toBe(1); // one shed answer, then the penalty box for 1 s
    expect(mesh.service('svc')?.endpoint(`127.0.0.1:${shedding}`)?.penaltyUntil).toBeGreaterThan(mesh.now());
  });
});
