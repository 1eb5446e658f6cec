import { Pool, fetch as undiciFetch } from 'undici';
import { createMesh } from '../../../packages/meshlet/src/index.js';
import type { BenchSuite, BenchSuiteResult } from '../lib.js';
import {
  pairedRatio,
  round2,
  round3,
  runInterleaved,
  type Variant,
  type VariantStats,
} from '../support/ab.js';
import { startServerProcess } from '../support/server.js';

/**
 * The whole resilience pipeline's cost: mesh fetch with the circuit breaker, retry budget, outlier
 * detection and (unlimited) thresholds all on — explicitly configured, so the suite measures them
 * whatever the defaults become — against raw undici `fetch` over a `Pool`, and against the mesh
 * with every resilience policy off (to attribute the cost). Same loopback server (its own
 * process), interleaved rounds, concurrency 10 and 50. Target: mesh/raw throughput >= 0.90x.
 */
const CONCURRENCY = [10, 50] as const;

const suite: BenchSuite = {
  name: 'pipeline',
  inQuick: true,
  async run({ quick }): Promise<BenchSuiteResult> {
    const server = await startServerProcess();
    const pool = new Pool(server.origin, { keepAliveTimeout: 4_000, connectTimeout: 10_000 });
    const endpoint = `127.0.0.1:${server.port}`;
    const mesh = await createMesh({
      services: {
        on: {
          endpoints: [endpoint],
          circuitBreaker: { errorThresholdPercentage: 50, volumeThreshold: 20 },
          outlierDetection: { consecutiveGatewayFailure: 5, consecutive5xx: 5 },
          retry: { attempts: 2, budget: { percent: 20, minPerSecond: 10 } },
          thresholds: { maxRequests: 100_000, maxPendingRequests: 100_000 },
        },
        off: {
          endpoints: [endpoint],
          circuitBreaker: false,
          outlierDetection: false,
          retry: false,
        },
      },
    });
    try {
      await mesh.ready();
      const rawUrl = `${server.origin}/items/42`;
      const variants: Variant[] = [
        {
          name: 'raw',
          send: async () => {
            const res = await undiciFetch(rawUrl, { dispatcher: pool });
            await res.arrayBuffer();
          },
        },
        {
          name: 'mesh',
          send: async () => {
            const res = await mesh.fetch('http://on/items/42');
            await res.arrayBuffer();
          },
        },
        {
          name: 'meshOff',
          send: async () => {
            const res = await mesh.fetch('http://off/items/42');
            await res.arrayBuffer();
          },
        },
      ];
      const results: Record<string, unknown> = {};
      const summary: string[] = [];
      for (const concurrency of CONCURRENCY) {
        const stats = await runInterleaved(
          variants,
          quick
            ? { concurrency, rounds: 2, roundMs: 200, warmupMs: 100 }
            : { concurrency, rounds: 8, roundMs: 1000, warmupMs: 500 },
        );
        const raw = stats.raw as VariantStats;
        const on = stats.mesh as VariantStats;
        const off = stats.meshOff as VariantStats;
        const ratio = pairedRatio(on, raw);
        const offRatio = pairedRatio(off, raw);
        results[`c${concurrency}`] = {
          throughputRatio: round3(ratio),
          resilienceOffThroughputRatio: round3(offRatio),
          cpuPerRequestRatio: round3(on.cpuUsPerRequest / raw.cpuUsPerRequest),
          resilienceCpuUsPerRequest: round2(on.cpuUsPerRequest - off.cpuUsPerRequest),
          addedP50Us: round2(on.p50Us - raw.p50Us),
          addedP99Us: round2(on.p99Us - raw.p99Us),
          raw: {
            rps: Math.round(raw.rps),
            p50Us: round2(raw.p50Us),
            p99Us: round2(raw.p99Us),
            errors: raw.errors,
          },
          mesh: {
            rps: Math.round(on.rps),
            p50Us: round2(on.p50Us),
            p99Us: round2(on.p99Us),
            errors: on.errors,
          },
          meshOff: {
            rps: Math.round(off.rps),
            p50Us: round2(off.p50Us),
            p99Us: round2(off.p99Us),
            errors: off.errors,
          },
        };
        summary.push(
          `pipeline c=${String(concurrency).padEnd(2)}  mesh(breaker+budget+outlier)/raw throughput ${ratio.toFixed(3)}x ` +
            `(${Math.round(on.rps)} vs ${Math.round(raw.rps)} req/s; resilience off ${offRatio.toFixed(3)}x)  ` +
            `cpu/req ${(on.cpuUsPerRequest / raw.cpuUsPerRequest).toFixed(2)}x  ` +
            `[${ratio >= 0.9 ? 'throughput ok' : 'THROUGHPUT < 0.90x'}]`,
        );
      }
      return { results, summary };
    } finally {
      await mesh.close();
      await pool.close();
      await server.close();
    }
  },
};

export default suite;
