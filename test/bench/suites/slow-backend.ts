import { type ChildProcess, fork } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { createMesh } from '../../../packages/meshlet/src/index.js';
import type { BenchSuite, BenchSuiteResult } from '../lib.js';

/**
 * Finagle's "beyond round robin" scenario on real loopback HTTP servers, through mesh fetch:
 * 10 backends (in their own process) answer in BASE_MS; one of them turns 20x slower for the
 * middle half of the run. Every request has a fixed deadline (the service `timeout`). For each
 * policy (round_robin, least_request, peak_ewma) we report the share of requests that succeeded
 * within the deadline and the latency percentiles. The healthy p99 is measured within the same
 * run, over the requests sent while every backend was healthy (first and last quarter), because
 * the shared machine's load drifts between runs. Target for peak_ewma: >= 99.9% within the
 * deadline and p99 <= 2x the healthy p99.
 * Outlier detection, the circuit breaker and retries are off so that only the balancer differs.
 */
const BACKENDS = 10;
const BASE_MS = 20;
const FACTOR = 20;
const DEADLINE_MS = 200;
const CONCURRENCY = 10;
const POLICIES = ['round_robin', 'least_request', 'peak_ewma'] as const;

interface Backends {
  readonly ports: number[];
  setSlow(index: number | null): Promise<void>;
  close(): Promise<void>;
}

async function startBackends(): Promise<Backends> {
  const child: ChildProcess = fork(
    new URL('../support/slow-backends.mjs', import.meta.url),
    [String(BACKENDS), String(BASE_MS), String(FACTOR)],
    { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
  );
  const ports = await new Promise<number[]>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`backends exited early (code ${code})`)));
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

interface RunStats {
  requests: number;
  withinDeadline: number;
  successRate: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  /** p99 over the requests sent while every backend was healthy. */
  healthyP99Ms: number;
  /** Within-deadline rate of the requests sent while every backend was healthy. */
  healthySuccessRate: number;
  /** Within-deadline rate of the requests sent while one backend was slow. */
  slowPhaseSuccessRate: number;
  /** Misses in the healthy and slow phases: failed requests (deadline) vs late successes (client stalls). */
  misses: { healthy: { failed: number; late: number }; slow: { failed: number; late: number } };
  p99VsHealthy: number;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number;
}

type Mode = 'balancerOnly' | 'meshDefaults';

async function runPolicy(
  backends: Backends,
  policy: (typeof POLICIES)[number],
  durationMs: number,
  mode: Mode,
): Promise<RunStats> {
  const mesh = await createMesh({
    services: {
      backends: {
        endpoints: backends.ports.map((p) => `127.0.0.1:${p}`),
        lb: policy,
        timeout: `${DEADLINE_MS}ms`,
        // balancerOnly: outlier ejection, the breaker and retries off, so only the policy differs.
        // meshDefaults: what a user who configures nothing but `lb` and `timeout` gets.
        ...(mode === 'balancerOnly' ? { outlierDetection: false, circuitBreaker: false, retry: false } : {}),
      },
    },
  });
  const latencies: number[] = [];
  const healthyLatencies: number[] = [];
  const okByPhase = [0, 0, 0];
  const countByPhase = [0, 0, 0];
  /** Requests that failed (deadline, transport error), as opposed to late successes. */
  const errorsByPhase = [0, 0, 0];
  try {
    await mesh.ready();
    // Warm the connections and the latency estimates on a healthy fleet.
    const warmEnd = performance.now() + Math.min(1000, durationMs / 4);
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (performance.now() < warmEnd) {
          try {
            const res = await mesh.fetch('http://backends/');
            await res.arrayBuffer();
          } catch {
            // warm-up errors are not measured
          }
        }
      }),
    );
    const start = performance.now();
    const end = start + durationMs;
    let phase = 0;
    const worker = async () => {
      while (performance.now() < end) {
        const now = performance.now();
        // The slow phase is the middle half of the run.
        if (phase === 0 && now >= start + durationMs / 4) {
          phase = 1;
          await backends.setSlow(BACKENDS - 1);
        } else if (phase === 1 && now >= start + (3 * durationMs) / 4) {
          phase = 2;
          await backends.setSlow(null);
        }
        const sentIn = phase === 1 ? 1 : 0;
        const t0 = performance.now();
        let success = false;
        try {
          const res = await mesh.fetch('http://backends/');
          await res.arrayBuffer();
          success = res.status === 200;
        } catch {
          success = false;
          errorsByPhase[sentIn] = (errorsByPhase[sentIn] as number) + 1;
        }
        const ms = performance.now() - t0;
        latencies.push(ms);
        if (sentIn === 0) healthyLatencies.push(ms);
        countByPhase[sentIn] = (countByPhase[sentIn] as number) + 1;
        if (success && ms <= DEADLINE_MS) okByPhase[sentIn] = (okByPhase[sentIn] as number) + 1;
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  } finally {
    await backends.setSlow(null);
    await mesh.close();
  }
  const sorted = Float64Array.from(latencies).sort();
  const healthySorted = Float64Array.from(healthyLatencies).sort();
  const r2 = (x: number) => Math.round(x * 100) / 100;
  const ok = (okByPhase[0] as number) + (okByPhase[1] as number);
  const p99 = percentile(sorted, 0.99);
  const healthyP99 = percentile(healthySorted, 0.99);
  return {
    requests: latencies.length,
    withinDeadline: ok,
    successRate: latencies.length === 0 ? 0 : ok / latencies.length,
    p50Ms: r2(percentile(sorted, 0.5)),
    p99Ms: r2(p99),
    p999Ms: r2(percentile(sorted, 0.999)),
    healthyP99Ms: r2(healthyP99),
    healthySuccessRate: (okByPhase[0] as number) / Math.max(1, countByPhase[0] as number),
    slowPhaseSuccessRate: (okByPhase[1] as number) / Math.max(1, countByPhase[1] as number),
    p99VsHealthy: healthyP99 > 0 ? r2(p99 / healthyP99) : 0,
    misses: {
      healthy: {
        failed: errorsByPhase[0] as number,
        late: (countByPhase[0] as number) - (okByPhase[0] as number) - (errorsByPhase[0] as number),
      },
      slow: {
        failed: errorsByPhase[1] as number,
        late: (countByPhase[1] as number) - (okByPhase[1] as number) - (errorsByPhase[1] as number),
      },
    },
  };
}

const suite: BenchSuite = {
  name: 'slow-backend',
  inQuick: true,
  async run({ quick }): Promise<BenchSuiteResult> {
    const durationMs = quick ? 500 : 30_000;
    const backends = await startBackends();
    try {
      // Quick runs measure the balancers alone; full runs also the mesh's defaults.
      const modes: Mode[] = quick ? ['balancerOnly'] : ['balancerOnly', 'meshDefaults'];
      const byMode: Record<string, Record<string, RunStats>> = {};
      for (const mode of modes) {
        const results: Record<string, RunStats> = {};
        for (const policy of POLICIES) results[policy] = await runPolicy(backends, policy, durationMs, mode);
        byMode[mode] = results;
      }
      const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
      const summary = [
        `slow backend (1 of ${BACKENDS} at ${FACTOR}x for the middle half of the run, deadline ${DEADLINE_MS}ms, ${CONCURRENCY} in flight)`,
      ];
      for (const mode of modes) {
        const results = byMode[mode] as Record<string, RunStats>;
        summary.push(`  ${mode}:`);
        for (const p of POLICIES) {
          const r = results[p] as RunStats;
          summary.push(
            `  ${p.padEnd(14)} within deadline ${pct(r.successRate)} (slow phase ${pct(r.slowPhaseSuccessRate)}, healthy phases ${pct(r.healthySuccessRate)}; slow-phase misses: ${r.misses.slow.failed} failed, ${r.misses.slow.late} late)  p50 ${r.p50Ms}ms  p99 ${r.p99Ms}ms = ${r.p99VsHealthy}x the healthy-phase p99 ${r.healthyP99Ms}ms  n=${r.requests}`,
          );
        }
      }
      const pe = (byMode[modes[modes.length - 1] as Mode] as Record<string, RunStats>).peak_ewma as RunStats;
      summary.push(
        `peak_ewma targets (${modes[modes.length - 1]}): >= 99.9% within deadline: ${pe.successRate >= 0.999}; p99 <= 2x healthy: ${pe.p99VsHealthy <= 2}`,
      );
      return {
        results: {
          config: {
            backends: BACKENDS,
            baseMs: BASE_MS,
            factor: FACTOR,
            deadlineMs: DEADLINE_MS,
            concurrency: CONCURRENCY,
            durationMs,
          },
          modes: byMode,
          targets: {
            peakEwmaWithinDeadline: pe.successRate >= 0.999,
            peakEwmaP99Within2x: pe.p99VsHealthy <= 2,
          },
        },
        summary,
      };
    } finally {
      await backends.close();
    }
  },
};

export default suite;
