import { type ChildProcess, fork } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { type Client, credentials } from '@grpc/grpc-js';
import { createMeshClient } from '../../../packages/grpc/src/index.js';
import { EchoClient, echo } from '../../../packages/grpc/test/helpers.js';
import { createMesh } from '../../../packages/meshlet/src/index.js';
import type { BenchSuite, BenchSuiteResult } from '../lib.js';
import {
  alternate,
  pairedRatio,
  quartiles,
  readAlternation,
  round2,
  round3,
  runInterleaved,
  targetVerdict,
  type VariantStats,
  verdictText,
  warmUp,
} from '../support/ab.js';

/**
 * gRPC benchmarks:
 * 1. mesh gRPC unary calls (`createMeshClient(…, 'mesh:///bench')`: meshlet resolver + balancer +
 *    `MeshCall` on core's call pipeline with the service's defaults — no deadline, retries,
 *    breaker, thresholds, telemetry) vs raw grpc-js (`127.0.0.1:port`, pick_first) against the same server in its own
 *    process, same concurrency, rounds alternating ABBA; the ratio is the median of the per-round
 *    ratios (target >= 0.95x throughput). Client CPU per call is reported too: it is what meshlet
 *    adds, and it survives a noisy machine better than throughput does;
 * 2. the slow-backend scenario over gRPC: 10 backends, one 20x slower, meshlet `peak_ewma` vs
 *    grpc-js's own `round_robin` LB policy (what grpc-js-xds configures for ROUND_ROBIN clusters);
 * 3. balance at concurrency 1 (issue 13): three equal servers, 300 sequential calls through a fresh
 *    mesh with the default balancer, several times; each server's share of the calls (target: each
 *    >= 15%). A server's first call pays for its connection; latency is measured from the stream.
 * Express and Fastify middleware overhead lives in `servers.ts`.
 */

interface Servers {
  readonly ports: number[];
  setSlow(index: number | null): Promise<void>;
  close(): Promise<void>;
}

async function startServers(count: number, baseMs: number, factor: number): Promise<Servers> {
  const child: ChildProcess = fork(
    new URL('../support/grpc-servers.mjs', import.meta.url),
    [String(count), String(baseMs), String(factor)],
    { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
  );
  const ports = await new Promise<number[]>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`gRPC bench servers exited early (code ${code})`)));
    child.once('message', (m) => resolve((m as { ports: number[] }).ports));
  });
  child.removeAllListeners('exit');
  return {
    ports,
    setSlow: (index) =>
      new Promise<void>((resolve) => {
        child.once('message', () => resolve());
        child.send({ slow: index });
      }),
    close: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

const summarise = (s: VariantStats) => ({
  rps: Math.round(s.rps),
  p50Us: round2(s.p50Us),
  p99Us: round2(s.p99Us),
  errors: s.errors,
});

async function throughput(
  quick: boolean,
  results: Record<string, unknown>,
  summary: string[],
): Promise<void> {
  const servers = await startServers(1, 0, 1);
  const mesh = await createMesh({ services: { bench: { endpoints: [`127.0.0.1:${servers.ports[0]}`] } } });
  const raw = new EchoClient(`127.0.0.1:${servers.ports[0]}`, credentials.createInsecure());
  const meshed = createMeshClient(EchoClient, 'mesh:///bench');
  // `control`: a second raw client (its own channel), measured as if it were a variant: what the
  // suite reads when nothing differs (its ratio to raw is the run's resolution). Full runs only.
  const control = new EchoClient(`127.0.0.1:${servers.ports[0]}`, credentials.createInsecure(), {
    // grpc-js shares subchannels (connections) between channels through its global pool: a
    // local pool keeps the control's connection its own, as the mesh client's is.
    'grpc.use_local_subchannel_pool': 1,
  });
  try {
    await mesh.ready();
    await echo(raw, { text: 'warm' });
    await echo(meshed, { text: 'warm' });
    await echo(control, { text: 'warm' });
    const variants = [
      { name: 'raw', send: () => echo(raw, { text: 'x' }) },
      { name: 'mesh', send: () => echo(meshed, { text: 'x' }) },
      ...(quick ? [] : [{ name: 'control', send: () => echo(control, { text: 'x' }) }]),
    ];
    // Steady state before the first comparison: V8 gives grpc-js's per-call functions and the
    // mesh's TurboFan code only after 10,000–18,000 calls (Node 24, `--trace-opt`), and the first
    // comparison (c=1) would otherwise measure its first rounds before that.
    await warmUp(variants, quick ? 1_000 : 20_000, 10);
    // Concurrency 1 call by call (`alternate`, full runs): resolved to a few microseconds, where
    // rounds read two raw clients several percent apart.
    if (!quick) {
      const alternation = readAlternation(await alternate(variants, 20_000), 0.95);
      results['unary.c1.alternating'] = alternation.results;
      summary.push(`grpc unary c=1  ${alternation.text}`);
    }
    for (const concurrency of quick ? [10] : [1, 10, 50]) {
      const stats = await runInterleaved(
        variants,
        quick
          ? { concurrency, rounds: 2, roundMs: 200, warmupMs: 100 }
          : { concurrency, rounds: 16, roundMs: 500, warmupMs: 500 },
      );
      const r = stats.raw as VariantStats;
      const m = stats.mesh as VariantStats;
      const ratio = pairedRatio(m, r);
      const roundRatios = m.roundRps.map((x, i) => x / (r.roundRps[i] ?? Number.NaN));
      // The spread of the paired rounds: at c=50 a round's GC pauses (a mark-compact is 2–8% of
      // a 500 ms round) move single ratios by several percent (docs/benchmarks.md).
      const [q1, q3] = quartiles(roundRatios);
      const c = stats.control;
      const controlRatio = c === undefined ? undefined : pairedRatio(c, r);
      results[`unary.c${concurrency}`] = {
        throughputRatio: round3(ratio),
        roundRatios: roundRatios.map(round3),
        roundRatioQuartiles: [round3(q1), round3(q3)],
        clientCpuUsPerCall: { raw: round2(r.cpuUsPerRequest), mesh: round2(m.cpuUsPerRequest) },
        raw: summarise(r),
        mesh: summarise(m),
        ...(controlRatio !== undefined && { controlVsRaw: round3(controlRatio) }),
      };
      summary.push(
        `grpc unary c=${String(concurrency).padEnd(2)} mesh/raw throughput ${ratio.toFixed(3)}x ` +
          `(rounds ${q1.toFixed(2)}–${q3.toFixed(2)}) ` +
          `(${Math.round(m.rps)} vs ${Math.round(r.rps)} calls/s) p50 ${m.p50Us.toFixed(0)}us vs ${r.p50Us.toFixed(0)}us ` +
          `client CPU/call ${m.cpuUsPerRequest.toFixed(1)}us vs ${r.cpuUsPerRequest.toFixed(1)}us ` +
          `[${verdictText(targetVerdict(ratio, 0.95, controlRatio), 'BELOW 0.95x', controlRatio)}]` +
          (controlRatio === undefined ? '' : `  (raw vs raw: ${controlRatio.toFixed(3)}x)`),
      );
    }
  } finally {
    raw.close();
    control.close();
    meshed.close();
    await mesh.close();
    await servers.close();
  }
}

interface SlowStats {
  calls: number;
  errors: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
}

async function closedLoop(client: Client, ms: number, concurrency: number): Promise<SlowStats> {
  const lat: number[] = [];
  let errors = 0;
  const t0 = performance.now();
  const end = t0 + ms;
  const worker = async () => {
    while (performance.now() < end) {
      const s = performance.now();
      try {
        await echo(client, { text: 'x' });
        lat.push(performance.now() - s);
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? 0;
  return {
    calls: lat.length,
    errors,
    rps: lat.length / seconds,
    p50Ms: round2(q(0.5)),
    p99Ms: round2(q(0.99)),
  };
}

async function slowBackend(
  quick: boolean,
  results: Record<string, unknown>,
  summary: string[],
): Promise<void> {
  const servers = await startServers(10, 10, 20);
  const addrs = servers.ports.map((p) => `127.0.0.1:${p}`);
  const mesh = await createMesh({ services: { slow: { endpoints: addrs, lb: 'peak_ewma', retry: false } } });
  const rr = new EchoClient(`ipv4:${addrs.join(',')}`, credentials.createInsecure(), {
    'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
  });
  const ewma = createMeshClient(EchoClient, 'mesh:///slow', { retry: false });
  try {
    await mesh.ready();
    for (let i = 0; i < 20; i++) {
      await echo(rr, { text: 'warm' });
      await echo(ewma, { text: 'warm' });
    }
    await servers.setSlow(3);
    const ms = quick ? 800 : 6000;
    const concurrency = 10;
    const out: Record<string, SlowStats> = {};
    // ABBA order on a shared machine
    for (const [name, client] of [
      ['grpc_round_robin', rr],
      ['meshlet_peak_ewma', ewma],
      ['meshlet_peak_ewma#2', ewma],
      ['grpc_round_robin#2', rr],
    ] as const) {
      out[name] = await closedLoop(client, ms / 2, concurrency);
    }
    const merge = (a: SlowStats, b: SlowStats): SlowStats => ({
      calls: a.calls + b.calls,
      errors: a.errors + b.errors,
      rps: round2((a.rps + b.rps) / 2),
      p50Ms: round2((a.p50Ms + b.p50Ms) / 2),
      p99Ms: round2((a.p99Ms + b.p99Ms) / 2),
    });
    const a = merge(out.grpc_round_robin as SlowStats, out['grpc_round_robin#2'] as SlowStats);
    const b = merge(out.meshlet_peak_ewma as SlowStats, out['meshlet_peak_ewma#2'] as SlowStats);
    results.slowBackend = { grpcRoundRobin: a, meshletPeakEwma: b, throughputRatio: round3(b.rps / a.rps) };
    summary.push(
      `grpc slow backend (10 servers, one 20x slower, c=${concurrency}): meshlet peak_ewma ${Math.round(b.rps)} calls/s ` +
        `p50 ${b.p50Ms}ms p99 ${b.p99Ms}ms vs grpc-js round_robin ${Math.round(a.rps)} calls/s p50 ${a.p50Ms}ms ` +
        `p99 ${a.p99Ms}ms (${(b.rps / a.rps).toFixed(2)}x throughput)`,
    );
  } finally {
    rr.close();
    ewma.close();
    await mesh.close();
    await servers.close();
  }
}

async function balanceAtConcurrency1(
  quick: boolean,
  results: Record<string, unknown>,
  summary: string[],
): Promise<void> {
  const servers = await startServers(3, 0, 1);
  const runs: number[][] = [];
  try {
    for (let run = 0; run < (quick ? 2 : 5); run++) {
      // A fresh mesh and channel each run: the first calls make the connections.
      const mesh = await createMesh({
        services: { equal: { endpoints: servers.ports.map((p) => `127.0.0.1:${p}`) } },
      });
      const client = createMeshClient(EchoClient, 'mesh:///equal');
      try {
        await mesh.ready();
        const counts = [0, 0, 0];
        for (let i = 0; i < 300; i++) {
          const reply = await echo(client, { text: 'x' });
          const n = Number(reply.server.slice(1));
          counts[n] = (counts[n] ?? 0) + 1;
        }
        runs.push(counts);
      } finally {
        client.close();
        await mesh.close();
      }
    }
  } finally {
    await servers.close();
  }
  const minShare = Math.min(...runs.map((c) => Math.min(...c) / 300));
  results.balanceAtConcurrency1 = { calls: 300, runs, minShare: round3(minShare) };
  summary.push(
    `grpc balance at c=1 (3 equal servers, 300 calls, default balancer): ${runs.map((c) => c.join('/')).join(', ')}; ` +
      `smallest share ${(minShare * 100).toFixed(1)}% [${minShare >= 0.15 ? 'ok' : 'BELOW 15%'}]`,
  );
}

const suite: BenchSuite = {
  name: 'grpc',
  inQuick: true,
  async run({ quick }): Promise<BenchSuiteResult> {
    const results: Record<string, unknown> = {};
    const summary: string[] = [];
    await throughput(quick, results, summary);
    await slowBackend(quick, results, summary);
    await balanceAtConcurrency1(quick, results, summary);
    return { results, summary };
  },
};

export default suite;
