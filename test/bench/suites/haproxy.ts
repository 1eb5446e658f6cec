import { Pool, fetch as undiciFetch } from 'undici';
import { createMesh } from '../../../packages/meshlet/src/index.js';
import type { BenchSuite, BenchSuiteResult } from '../lib.js';
import {
  pairedDiff,
  pairedRatio,
  round2,
  round3,
  runInterleaved,
  type Variant,
  type VariantStats,
} from '../support/ab.js';
import { haproxyAvailable, startHaproxy } from '../support/haproxy.js';
import { startServerProcess } from '../support/server.js';

/**
 * The sidecar baseline: raw undici straight to the server, meshlet in-process, and raw undici
 * through an HAProxy hop (the stand-in for a sidecar proxy), interleaved. Reports the latency each
 * adds over the direct call and meshlet's added p50 as a fraction of HAProxy's (target <= 0.2).
 * Full runs only.
 */
const suite: BenchSuite = {
  name: 'haproxy',
  inQuick: false,
  async run({ quick }): Promise<BenchSuiteResult> {
    if (!(await haproxyAvailable())) {
      return {
        results: { skipped: 'haproxy is not installed (Debian package haproxy)' },
        summary: ['SKIPPED: haproxy is not installed (apt-get install haproxy)'],
      };
    }
    const server = await startServerProcess();
    const hop = await startHaproxy(server.port);
    const direct = new Pool(server.origin, { keepAliveTimeout: 4_000 });
    const viaProxy = new Pool(hop.origin, { keepAliveTimeout: 4_000 });
    const mesh = await createMesh({ services: { bench: { endpoints: [`127.0.0.1:${server.port}`] } } });
    try {
      await mesh.ready();
      const apis: Array<['fetch' | 'request', Variant[]]> = [
        [
          'request',
          [
            {
              name: 'raw',
              send: () =>
                direct.request({ method: 'GET', path: '/items/42' }).then((r) => r.body.arrayBuffer()),
            },
            {
              name: 'mesh',
              send: () =>
                mesh.dispatcher
                  .request({ origin: 'http://bench', method: 'GET', path: '/items/42' })
                  .then((r) => r.body.arrayBuffer()),
            },
            {
              name: 'haproxy',
              send: () =>
                viaProxy.request({ method: 'GET', path: '/items/42' }).then((r) => r.body.arrayBuffer()),
            },
          ],
        ],
        [
          'fetch',
          [
            {
              name: 'raw',
              send: () =>
                undiciFetch(`${server.origin}/items/42`, { dispatcher: direct }).then((r) => r.arrayBuffer()),
            },
            { name: 'mesh', send: () => mesh.fetch('http://bench/items/42').then((r) => r.arrayBuffer()) },
            {
              name: 'haproxy',
              send: () =>
                undiciFetch(`${hop.origin}/items/42`, { dispatcher: viaProxy }).then((r) => r.arrayBuffer()),
            },
          ],
        ],
      ];
      const results: Record<string, unknown> = {};
      const summary: string[] = [];
      for (const [api, variants] of apis) {
        for (const concurrency of [1, 10]) {
          const s = await runInterleaved(
            variants,
            quick
              ? { concurrency, rounds: 2, roundMs: 200, warmupMs: 100 }
              : { concurrency, rounds: 8, roundMs: 1000, warmupMs: 500 },
          );
          const raw = s.raw as VariantStats;
          const m = s.mesh as VariantStats;
          const h = s.haproxy as VariantStats;
          const meshAdded = pairedDiff(m.roundP50Us, raw.roundP50Us);
          const proxyAdded = pairedDiff(h.roundP50Us, raw.roundP50Us);
          const ratio = meshAdded / proxyAdded;
          results[`${api}.c${concurrency}`] = {
            meshAddedP50Us: round2(meshAdded),
            haproxyAddedP50Us: round2(proxyAdded),
            meshOverHaproxyAddedP50: round3(ratio),
            meshAddedP99Us: round2(pairedDiff(m.roundP99Us, raw.roundP99Us)),
            haproxyAddedP99Us: round2(pairedDiff(h.roundP99Us, raw.roundP99Us)),
            meshCpuUsPerRequest: round2(m.cpuUsPerRequest),
            haproxyClientCpuUsPerRequest: round2(h.cpuUsPerRequest),
            rawCpuUsPerRequest: round2(raw.cpuUsPerRequest),
            meshThroughputRatio: round3(pairedRatio(m, raw)),
            haproxyThroughputRatio: round3(pairedRatio(h, raw)),
            rawRps: Math.round(raw.rps),
            meshRps: Math.round(m.rps),
            haproxyRps: Math.round(h.rps),
            rawP50Us: round2(raw.p50Us),
            meshP50Us: round2(m.p50Us),
            haproxyP50Us: round2(h.p50Us),
          };
          summary.push(
            `${api.padEnd(7)} c=${String(concurrency).padEnd(2)}  added p50: mesh ${meshAdded.toFixed(1)}us, haproxy ` +
              `${proxyAdded.toFixed(1)}us (mesh/haproxy ${ratio.toFixed(3)}${concurrency === 1 ? (ratio <= 0.2 ? ', target ok' : ', TARGET 0.2 MISSED') : ''})  ` +
              `throughput vs direct: mesh ${pairedRatio(m, raw).toFixed(3)}x, haproxy ${pairedRatio(h, raw).toFixed(3)}x`,
          );
        }
      }
      return { results, summary };
    } finally {
      await mesh.close();
      await direct.close();
      await viaProxy.close();
      await hop.close();
      await server.close();
    }
  },
};

export default suite;
