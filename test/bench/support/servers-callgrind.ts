/**
 * Server instructions per HTTP request under callgrind (repeatable whatever the machine's load):
 * one Express or Fastify server of the `servers` suite (`inbound-servers.mjs`: `bare`, `core` or
 * `full`; meshlet from its dist, or from its sources with `MESHLET_BENCH_SERVER_FROM_SOURCE=1`) in
 * this process, traced; the client (`http-client.mjs`) in a child process, not traced,
 * sends a warm-up and then N sequential keep-alive requests (`GET /items/42` with
 * `x-meshlet-deadline-ms`, as the suite's). Only those N are counted (`callgrind_control` zeroes
 * the counters after the warm-up and dumps them after the loop):
 *
 *   node --conditions=meshlet-source --import tsx test/bench/support/servers-callgrind.ts full express 20 20  # warm tsx's cache
 *   CALLGRIND_OUT=/tmp/cg/x valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=/tmp/cg/x.%p --smc-check=all-non-file \
 *     --instr-atstart=no node --conditions=meshlet-source --import tsx test/bench/support/servers-callgrind.ts full express 2000 30000
 *
 * With `--instr-atstart=no` the warm-up runs uninstrumented (about ten times faster than counted
 * code), so it can be as long as a loaded server's first seconds: after 2,000 requests much of the
 * inbound path still runs in V8's baseline and mid tiers (their IC calls counted per request),
 * after 30,000 it runs optimized, as in `pnpm bench`. Meshed variants stop the load sampler while
 * counting (`KEEP_SAMPLER=1` keeps it): its timers would be charged to requests by wall time, which
 * callgrind stretches ~50x. Add `--perf-basic-prof` to node to name JIT code per function (V8
 * writes /tmp/perf-<pid>.map; the newest entry covering an address is the function).
 *
 * Arguments: variant (`bare`, `empty`, `core`, `full`, `handler`), framework (`express`, `fastify`), N, warm-up
 * requests, and `no-deadline` to leave the deadline header out (no deadline context is entered).
 * `MESHLET_BENCH_SERVER_MODULE`: another server module (a path, relative to the working directory)
 * to count instead of `inbound-servers.mjs` (the default), with the same exports (`port`, and
 * `meshlet` or undefined) — e.g. one that loads an earlier checkout's `dist`, to count the code
 * before a change beside the code after it (docs/benchmarks.md, "The inbound step against the
 * middleware it replaced"). Add `--cache-sim=yes --branch-sim=yes` to valgrind for cache misses
 * and mispredicted branches beside the instructions, and `--I1=32768,8,64 --D1=49152,12,64
 * --LL=1310720,20,64` for this VM's caches with its L2 as the last level (valgrind's default
 * last level is the host's 48 MB L3, which nothing here misses): the line then adds callgrind's
 * cycle estimate per request (`estimatedCycles`) and the misses it counts.
 * Prints `<variant> <framework> <N> <instructions per request> [est <cycles> …]` of the main
 * thread (the client's work and V8's worker threads not included; without
 * `--separate-threads=yes`, of all threads).
 * Express's count moves by some ±25,000 from run to run (how V8 optimized that process): compare
 * several runs.
 */
import { fork } from 'node:child_process';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { cacheMisses, control, estimatedCycles, lastDumpCosts } from './callgrind-control.js';
import { BENCH_DEADLINES, POLICY_20 } from './policy20.js';

const n = Number(process.argv[4] ?? 2000);
const warm = Number(process.argv[5] ?? 2000);
const headers = process.argv[6] === 'no-deadline' ? {} : { 'x-meshlet-deadline-ms': '5000' };
process.env.MESHLET_BENCH_INBOUND ??= JSON.stringify({ policies: POLICY_20, deadlines: BENCH_DEADLINES });
const given = process.env.MESHLET_BENCH_SERVER_MODULE;
const serverModule = given ? pathToFileURL(resolve(given)).href : './inbound-servers.mjs';
const { port, meshlet } = (await import(serverModule)) as {
  port: number;
  meshlet?: { runningProcessLoad?: () => { stop(): void } | undefined };
};

const client = fork(new URL('./http-client.mjs', import.meta.url), [], {
  execArgv: [],
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
});
const run = (count: number) =>
  new Promise<void>((resolve, reject) => {
    client.once('message', (m) => {
      const r = m as { errors: number };
      if (r.errors > 0) reject(new Error(`${r.errors} requests failed`));
      else resolve();
    });
    client.send({ port, n: count, path: '/items/42', headers });
  });
await run(warm);
// Timer work (the load sampler's 1 s sample and its 10 ms delay monitor) is charged to requests in
// proportion to the wall time the loop takes, which callgrind stretches ~50x: stop it while counting.
if (process.env.KEEP_SAMPLER === undefined) meshlet?.runningProcessLoad?.()?.stop();
// Under `--instr-atstart=no` the warm-up runs uninstrumented (~10x faster), so it can be long enough
// for V8 to optimize the hot functions as a server under load has; counting starts here.
await control('--instr=on');
await control('--zero');
await run(n);
await control('--dump=measured');
const costs = lastDumpCosts();
const per = (v: number | undefined) => (v === undefined ? '?' : String(Math.round(v / Math.max(1, n))));
const misses = costs === undefined ? undefined : cacheMisses(costs);
console.log(
  `${process.argv[2]} ${process.argv[3]} ${n} ${costs === undefined ? '(no dump found)' : per(costs.Ir)}` +
    (costs === undefined || misses === undefined
      ? ''
      : ` est ${per(estimatedCycles(costs))} I1mr ${per(misses.l1i)} D1m ${per(misses.l1d)} LLm ${per(misses.ll)}` +
        ` Bm ${per(misses.branches)}`),
);
client.kill();
process.exit(0);
