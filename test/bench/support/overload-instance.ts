// One instance of the overload/surge benchmark service, in its own process: a loopback HTTP server
// whose handler holds the event loop for a per-request "work" time, like a CPU-bound handler. It
// runs meshlet's inbound glue (the Express middleware on a plain `http` server): every request is
// admitted, counted in the load sampler, gets its load report when the client asks for one, and is
// shed when overload protection is on (`{ cmd: 'configure', overload }`).
//
//   node --import tsx overload-instance.ts <workMs> [heavyMs] [heavyEvery]
//
// Every request blocks the event loop for `workMs`; with `heavyMs`, every `heavyEvery`-th request
// blocks for `heavyMs` instead (the CPU-heavy handler mix). The block is `Atomics.wait` (the thread
// sleeps: it costs no CPU, so four instances and eight clients fit on a 2-core machine shared with
// other work, and the event loop is exactly as unavailable as under a busy loop). Set
// MESHLET_BENCH_REAL_CPU=1 to spin the CPU instead.
//
// The instance measures itself and answers over IPC:
//   { cmd: 'configure', id, overload }  the inbound side's overload protection (`false`, `true`, options);
//   { cmd: 'reset', id }  starts a new measurement window (served count, event-loop delay, ELU);
//   { cmd: 'stats', id }  → { id, stats: { served, eldP99Ms, eldMaxMs, elu, busyMsPerRequest, windowMs } }
// Event-loop delay is measured inside the instance with `monitorEventLoopDelay` (10 ms resolution,
// the excess over the resolution, as @fastify/under-pressure reports it).
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { meshMiddleware } from '../../../packages/express/src/index.js';

const workMs = Number(process.argv[2] ?? 1);
const heavyMs = Number(process.argv[3] ?? 0);
const heavyEvery = Number(process.argv[4] ?? 4);
const realCpu = process.env.MESHLET_BENCH_REAL_CPU === '1';
const RESOLUTION = 10;

const cell = new Int32Array(new SharedArrayBuffer(4));
function work(ms: number): void {
  if (realCpu) {
    const end = performance.now() + ms;
    while (performance.now() < end) {
      // spin
    }
  } else {
    Atomics.wait(cell, 0, 0, ms);
  }
}

let seq = 0;
let served = 0;
let shed = 0;
function handle(req: IncomingMessage, res: ServerResponse): void {
  req.resume();
  seq++;
  work(heavyMs > 0 && seq % heavyEvery === 0 ? heavyMs : workMs);
  served++;
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' });
  res.end('ok');
}

type Middleware = ReturnType<typeof meshMiddleware>;
function glue(overload: unknown): Middleware {
  return meshMiddleware({ telemetry: false, overload: overload as boolean });
}
let middleware = glue(false);
const server = createServer((req, res) => {
  middleware(req, res, () => handle(req, res));
  if (res.statusCode === 503) shed++;
});
server.keepAliveTimeout = 60_000;

let histogram = monitorEventLoopDelay({ resolution: RESOLUTION });
histogram.enable();
let windowStart = performance.now();
let eluStart = performance.eventLoopUtilization();
let servedStart = 0;
let shedStart = 0;

function reset(): void {
  histogram.disable();
  histogram = monitorEventLoopDelay({ resolution: RESOLUTION });
  histogram.enable();
  windowStart = performance.now();
  eluStart = performance.eventLoopUtilization();
  servedStart = served;
  shedStart = shed;
}

function stats() {
  const windowMs = performance.now() - windowStart;
  const elu = performance.eventLoopUtilization(eluStart);
  const n = served - servedStart;
  const ms = (v: number) => Math.max(0, v / 1e6 - RESOLUTION);
  return {
    served: n,
    shed: shed - shedStart,
    windowMs,
    eldP99Ms: histogram.count > 0 ? ms(histogram.percentile(99)) : 0,
    eldMaxMs: histogram.count > 0 ? ms(histogram.max) : 0,
    elu: elu.utilization,
    // Event-loop time per request (work + HTTP), the basis of the instance's capacity.
    busyMsPerRequest: n > 0 ? elu.active / n : 0,
  };
}

process.on('message', (m: { cmd?: string; id?: number; overload?: unknown }) => {
  if (m?.cmd === 'configure') {
    middleware = glue(m.overload ?? false);
    process.send?.({ id: m.id });
  } else if (m?.cmd === 'reset') {
    reset();
    process.send?.({ id: m.id });
  } else if (m?.cmd === 'stats') {
    process.send?.({ id: m.id, stats: stats() });
  }
});
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));
server.listen(0, '127.0.0.1', () => process.send?.({ port: (server.address() as AddressInfo).port }));
