// One instance of the overload/surge benchmark service, in its own process: a loopback HTTP server
// whose handler holds the event loop for a per-request "work" time, like a CPU-bound handler.
//
//   node overload-instance.mjs <workMs> [heavyMs] [heavyEvery]
//
// Every request blocks the event loop for `workMs`; with `heavyMs`, every `heavyEvery`-th request
// blocks for `heavyMs` instead (the CPU-heavy handler mix). The block is `Atomics.wait` (the thread
// sleeps: it costs no CPU, so four instances and eight clients fit on a 2-core machine shared with
// other work, and the event loop is exactly as unavailable as under a busy loop). Set
// MESHLET_BENCH_REAL_CPU=1 to spin the CPU instead.
//
// The instance measures itself and answers over IPC:
//   { cmd: 'reset', id }  starts a new measurement window (served count, event-loop delay, ELU);
//   { cmd: 'stats', id }  → { id, stats: { served, eldP99Ms, eldMaxMs, elu, busyMsPerRequest, windowMs } }
// Event-loop delay is measured inside the instance with `monitorEventLoopDelay` (10 ms resolution,
// the excess over the resolution, as @fastify/under-pressure reports it).
import { createServer } from 'node:http';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';

const workMs = Number(process.argv[2] ?? 1);
const heavyMs = Number(process.argv[3] ?? 0);
const heavyEvery = Number(process.argv[4] ?? 4);
const realCpu = process.env.MESHLET_BENCH_REAL_CPU === '1';
const RESOLUTION = 10;

const cell = new Int32Array(new SharedArrayBuffer(4));
function work(ms) {
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
const server = createServer((req, res) => {
  req.resume();
  seq++;
  work(heavyMs > 0 && seq % heavyEvery === 0 ? heavyMs : workMs);
  served++;
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' });
  res.end('ok');
});
server.keepAliveTimeout = 60_000;

let histogram = monitorEventLoopDelay({ resolution: RESOLUTION });
histogram.enable();
let windowStart = performance.now();
let eluStart = performance.eventLoopUtilization();
let servedStart = 0;

function reset() {
  histogram.disable();
  histogram = monitorEventLoopDelay({ resolution: RESOLUTION });
  histogram.enable();
  windowStart = performance.now();
  eluStart = performance.eventLoopUtilization();
  servedStart = served;
}

function stats() {
  const windowMs = performance.now() - windowStart;
  const elu = performance.eventLoopUtilization(eluStart);
  const n = served - servedStart;
  const ms = (v) => Math.max(0, v / 1e6 - RESOLUTION);
  return {
    served: n,
    windowMs,
    eldP99Ms: histogram.count > 0 ? ms(histogram.percentile(99)) : 0,
    eldMaxMs: histogram.count > 0 ? ms(histogram.max) : 0,
    elu: elu.utilization,
    // Event-loop time per request (work + HTTP), the basis of the instance's capacity.
    busyMsPerRequest: n > 0 ? elu.active / n : 0,
  };
}

process.on('message', (m) => {
  if (m?.cmd === 'reset') {
    reset();
    process.send?.({ id: m.id });
  } else if (m?.cmd === 'stats') {
    process.send?.({ id: m.id, stats: stats() });
  }
});
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));
server.listen(0, '127.0.0.1', () => process.send?.({ port: server.address().port }));
