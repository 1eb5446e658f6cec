import { type ChildProcess, fork } from 'node:child_process';
import { createHistogram, performance } from 'node:perf_hooks';
import { Pool } from 'undici';
import type { BenchSuite, BenchSuiteResult } from '../lib.js';
import { median, round2, round3 } from '../support/ab.js';
import { admissionMicro } from '../support/admission.js';

/**
 * Inbound overhead: Express and Fastify with meshlet's middleware/plugin vs the bare framework
 * (target >= 0.95x throughput), same route, same client, side by side in one run.
 *
 * Each framework runs in child processes (`support/inbound-servers.ts`), three per variant: the
 * bare framework, `core` (a core `Mesh` without telemetry: probes, authorization lookup, deadline
 * context) and `full` (what `createMesh()` gives: `@meshlet/telemetry` installed, so + server
 * metrics and spans through the no-op tracer), and for Express `handler` (the `full` setup through
 * `meshHandler`, in front of the app instead of as its first router layer). Every request carries
 * `x-meshlet-deadline-ms`, as calls from a meshed caller under a deadline do. Rounds alternate
 * between the variants (bare, core, full, …, then the reverse), a pair of rounds on the same
 * process of each variant, the next pair on the next process. For each round
 * we record the client-observed throughput and the server process' CPU time per request
 * (`process.cpuUsage()` deltas of the child, over IPC). Ratios are medians over rounds of the
 * paired per-round ratios.
 *
 * Why three processes per variant: identical processes differ. Four bare Express processes
 * measured side by side on this machine served 28,400–30,700 requests a second (Node 24.22, one
 * run, the same code): where V8 placed and when it optimized what, per process, moves throughput
 * by ±4% for the process' whole life, and a ratio of one process to one other carries that as
 * a bias no number of rounds removes. Three per variant, taken in turn, average it out of the
 * medians. Throughput on a shared 2-core machine is noisy besides (the client competes with the
 * server for the same cores); server CPU per request is what the middleware adds, and survives
 * noise better. Quick mode measures `full` against bare only, one process each, in short
 * rounds: a smoke test, not a measurement.
 *
 * The meshed variants run the whole inbound admission step: path normalization, a 20-rule ALLOW
 * policy walked to its last rule, the routed view, the deadline (loopback is a trusted network
 * here, so the header is honoured and the deadline context entered). `admission` measures that
 * step alone, in this process, against its budget: normalization + the 20-rule policy <= 1 µs.
 */

type Framework = 'express' | 'fastify';
type VariantName = 'bare' | 'core' | 'full' | 'handler';

interface Child {
  readonly ports: Readonly<Record<string, number>>;
  cpuUs(): Promise<number>;
  close(): Promise<void>;
}

async function startChild(mode: VariantName, fw: Framework): Promise<Child> {
  const child: ChildProcess = fork(new URL('../support/inbound-servers.ts', import.meta.url), [mode, fw], {
    execArgv: ['--import', 'tsx', '--conditions=meshlet-source'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const ports = await new Promise<Record<string, number>>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) =>
      reject(new Error(`inbound bench servers (${mode}) exited early (code ${code})`)),
    );
    child.once('message', (m) => resolve((m as { ports: Record<string, number> }).ports));
  });
  child.removeAllListeners('exit');
  let seq = 0;
  return {
    ports,
    cpuUs: () =>
      new Promise<number>((resolve) => {
        const id = ++seq;
        const on = (m: unknown) => {
          const msg = m as { cpu?: number; us?: number };
          if (msg.cpu !== id) return;
          child.off('message', on);
          resolve(msg.us as number);
        };
        child.on('message', on);
        child.send({ cpu: id });
      }),
    close: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

interface Round {
  readonly rps: number;
  readonly serverUsPerRequest: number;
  readonly p50Us: number;
  readonly errors: number;
}

async function closedLoop(
  pool: Pool,
  concurrency: number,
  ms: number,
): Promise<Omit<Round, 'serverUsPerRequest'> & { n: number }> {
  const hist = createHistogram();
  let n = 0;
  let errors = 0;
  const t0 = performance.now();
  const end = t0 + ms;
  const worker = async () => {
    while (performance.now() < end) {
      const s = performance.now();
      try {
        const res = await pool.request({
          method: 'GET',
          path: '/items/42',
          headers: { 'x-meshlet-deadline-ms': '5000' },
        });
        await res.body.arrayBuffer();
        if (res.statusCode !== 200) errors++;
      } catch {
        errors++;
      }
      hist.record(Math.max(1, Math.round((performance.now() - s) * 1e6)));
      n++;
    }
  };
  const workers: Promise<void>[] = [];
  for (let i = 0; i < concurrency; i++) workers.push(worker());
  await Promise.all(workers);
  const seconds = (performance.now() - t0) / 1000;
  return { n, rps: n / seconds, p50Us: hist.percentile(50) / 1000, errors };
}

interface Target {
  readonly pool: Pool;
  readonly child: Child;
}

async function measure(t: Target, concurrency: number, ms: number): Promise<Round> {
  const c0 = await t.child.cpuUs();
  const r = await closedLoop(t.pool, concurrency, ms);
  const c1 = await t.child.cpuUs();
  return { rps: r.rps, p50Us: r.p50Us, errors: r.errors, serverUsPerRequest: (c1 - c0) / Math.max(1, r.n) };
}

const suite: BenchSuite = {
  name: 'servers',
  inQuick: true,
  async run({ quick }): Promise<BenchSuiteResult> {
    const results: Record<string, unknown> = {};
    const summary: string[] = [];
    const concurrency = 10;
    // Many short rounds: a pair of neighbouring rounds sees the same machine load. Quick: the
    // default (`full`) against bare only, to stay within the quick run's per-suite cap.
    const rounds = quick ? 2 : 24;
    const roundMs = quick ? 100 : 400;
    const warmupMs = quick ? 500 : 1500;
    const ALL: readonly VariantName[] = quick ? ['bare', 'full'] : ['bare', 'core', 'full', 'handler'];
    // Processes per variant (see above): rounds take them in turn.
    const processes = quick ? 1 : 3;
    const pools: Pool[] = [];
    for (const fw of ['express', 'fastify'] as const satisfies readonly Framework[]) {
      // `handler` (meshHandler, in front of the app) exists for Express only.
      const VARIANTS = ALL.filter((v) => v !== 'handler' || fw === 'express');
      // Each process serves one framework one way, as a service does.
      const children = await Promise.all(
        VARIANTS.flatMap((v) => Array.from({ length: processes }, () => startChild(v, fw))),
      );
      try {
        const targets = {} as Record<VariantName, Target[]>;
        for (const [i, v] of VARIANTS.entries()) {
          targets[v] = [];
          for (let k = 0; k < processes; k++) {
            const child = children[i * processes + k] as Child;
            const port = child.ports[`${fw}.${v}`];
            const pool = new Pool(`http://127.0.0.1:${port}`, { connections: concurrency });
            pools.push(pool);
            targets[v].push({ pool, child });
          }
        }
        for (const v of VARIANTS) for (const t of targets[v]) await closedLoop(t.pool, concurrency, warmupMs);
        const per: Record<VariantName, Round[]> = { bare: [], core: [], full: [], handler: [] };
        for (let r = 0; r < rounds; r++) {
          const order = r % 2 === 0 ? VARIANTS : [...VARIANTS].reverse();
          const k = Math.floor(r / 2) % processes; // both orders of a pair on the same processes
          for (const v of order) per[v].push(await measure(targets[v][k] as Target, concurrency, roundMs));
        }
        const paired = (v: VariantName, f: (m: Round, b: Round) => number) =>
          median(per[v].map((m, i) => f(m, per.bare[i] as Round)));
        const med = (v: VariantName, f: (x: Round) => number) => median(per[v].map(f));
        const out: Record<string, unknown> = {};
        for (const v of VARIANTS) {
          out[v] = {
            rps: Math.round(med(v, (x) => x.rps)),
            p50Us: round2(med(v, (x) => x.p50Us)),
            serverUsPerRequest: round2(med(v, (x) => x.serverUsPerRequest)),
            errors: per[v].reduce((n, x) => n + x.errors, 0),
          };
        }
        for (const v of VARIANTS) {
          if (v === 'bare') continue;
          const tput = paired(v, (m, b) => m.rps / b.rps);
          // What the server's CPU allows: bare CPU per request over meshed CPU per request.
          const cpu = paired(v, (m, b) => b.serverUsPerRequest / m.serverUsPerRequest);
          const addedUs = paired(v, (m, b) => m.serverUsPerRequest - b.serverUsPerRequest);
          out[`${v}VsBare`] = {
            throughputRatio: round3(tput),
            serverCpuRatio: round3(cpu),
            addedServerUsPerRequest: round2(addedUs),
          };
          summary.push(
            `${fw} + meshlet (${v === 'core' ? 'core mesh, no telemetry' : v === 'handler' ? 'meshHandler in front of the app, createMesh defaults' : 'createMesh defaults, telemetry on'}) vs bare ${fw}: ` +
              `${tput.toFixed(3)}x throughput, ${cpu.toFixed(3)}x by server CPU ` +
              `(+${addedUs.toFixed(1)}us/req on ${med('bare', (x) => x.serverUsPerRequest).toFixed(1)}us) ` +
              `[${tput >= 0.95 ? 'ok' : 'BELOW 0.95x'}]`,
          );
        }
        results[`${fw}Middleware`] = out;
      } finally {
        for (const p of pools.splice(0)) await p.close();
        await Promise.all(children.map((c) => c.close()));
      }
    }
    const micro = admissionMicro(quick);
    results.admission = Object.fromEntries(Object.entries(micro).map(([k, v]) => [k, Math.round(v)]));
    summary.push(
      `inbound admission alone: normalization ${micro.normalizeNs.toFixed(0)} ns (with escapes and dot segments ${micro.normalizeSlowNs.toFixed(0)} ns), ` +
        `20-rule policy ${micro.policyNs.toFixed(0)} ns, both ${micro.normalizeAndPolicyNs.toFixed(0)} ns ` +
        `[${micro.normalizeAndPolicyNs <= 1000 ? 'ok' : 'ABOVE 1 µs'}]; the whole step ${micro.admitExpressNs.toFixed(0)} ns (Express view), ` +
        `${micro.admitFastifyNs.toFixed(0)} ns (Fastify view)`,
    );
    return { results, summary };
  },
};

export default suite;
