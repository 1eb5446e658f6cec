import { performance } from 'node:perf_hooks';
import {
  parseControlPlaneConfig,
  resourcesFromConfig,
  startControlPlane,
} from '../../../packages/control-plane/src/index.js';
import { Mesh as CoreMesh, makeEndpoint, parseConfig } from '../../../packages/core/src/index.js';
import { createMesh } from '../../../packages/meshlet/src/index.js';
import {
  CDS_TYPE,
  decodeAny,
  decodeMessage,
  EDS_TYPE,
  encodeMessage,
  type Msg,
  translateCluster,
  translateEndpoints,
} from '../../../packages/xds/src/index.js';
import type { BenchSuite, BenchSuiteResult } from '../lib.js';
import { startServerProcess } from '../support/server.js';

/**
 * xDS update costs: a CDS + EDS update of 10,000 endpoints (protobuf decode → translation →
 * `ServiceRuntime.applyUpdate`, i.e. diff and picker rebuild), a one-endpoint change (the whole
 * ClusterLoadAssignment is re-sent in state-of-the-world xDS), memory per endpoint, and request
 * latency (p99) through an xDS-routed service while the control plane pushes 10,000-endpoint
 * updates of another cluster, against the same requests with no updates.
 */

function cla(name: string, n: number, portBase: number, weightOf: (i: number) => number = () => 1): Msg {
  const perLocality = 1000;
  const endpoints: Msg[] = [];
  for (let l = 0; l * perLocality < n; l++) {
    const lb: Msg[] = [];
    for (let i = l * perLocality; i < Math.min(n, (l + 1) * perLocality); i++) {
      lb.push({
        endpoint: {
          address: {
            socketAddress: {
              address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
              portValue: portBase + (i % 7),
            },
          },
        },
        healthStatus: 'HEALTHY',
        loadBalancingWeight: { value: weightOf(i) },
      });
    }
    endpoints.push({ locality: { zone: `z${l % 3}` }, loadBalancingWeight: { value: 1 }, lbEndpoints: lb });
  }
  return { clusterName: name, endpoints };
}

const CLUSTER: Msg = {
  name: 'big',
  type: 'EDS',
  edsClusterConfig: { edsConfig: { ads: {} }, serviceName: 'big' },
  lbPolicy: 'ROUND_ROBIN',
};

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
}
const r3 = (x: number) => Math.round(x * 1000) / 1000;

const suite: BenchSuite = {
  name: 'xds',
  inQuick: true,
  async run({ quick }): Promise<BenchSuiteResult> {
    const N = 10_000;
    const runs = quick ? 12 : 60;
    const edsA = encodeMessage(EDS_TYPE, cla('big', N, 8000));
    const edsB = encodeMessage(EDS_TYPE, cla('big', N, 9000));
    const cds = encodeMessage(CDS_TYPE, CLUSTER);
    const mesh = new CoreMesh(parseConfig({}));
    const rt = mesh.ensureService({
      key: 'big',
      discoveryType: 'xds',
      createSource: () => ({ start: () => {}, close: () => {} }),
    });
    // 1. Full CDS + EDS update of 10k endpoints (every endpoint new: A and B alternate).
    const full: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const c = translateCluster(decodeAny(CDS_TYPE, cds));
      const e = translateEndpoints(decodeMessage(EDS_TYPE, i % 2 === 0 ? edsA : edsB));
      if (c.name !== 'big') throw new Error('bad cluster');
      rt.applyUpdate({ endpoints: e.endpoints, version: String(i) });
      full.push(performance.now() - t0);
    }
    // 2. One endpoint changes (weight): SotW EDS re-sends the whole assignment.
    rt.applyUpdate({ endpoints: translateEndpoints(decodeMessage(EDS_TYPE, edsA)).endpoints });
    const oneChange: number[] = [];
    const applyOnly: number[] = [];
    const variants = [0, 1].map((v) =>
      encodeMessage(
        EDS_TYPE,
        cla('big', N, 8000, (i) => (i === 17 ? 2 + v : 1)),
      ),
    );
    for (let i = 0; i < runs; i++) {
      const bytes = variants[i % 2] as Uint8Array;
      const t0 = performance.now();
      const e = translateEndpoints(decodeMessage(EDS_TYPE, bytes));
      const t1 = performance.now();
      rt.applyUpdate({ endpoints: e.endpoints });
      const t2 = performance.now();
      oneChange.push(t2 - t0);
      applyOnly.push(t2 - t1);
    }
    // 3. Memory per endpoint: 50k endpoints in one runtime (model objects + runtime state).
    const gc = (globalThis as { gc?: () => void }).gc;
    const mem = new CoreMesh(parseConfig({}));
    const memRt = mem.ensureService({
      key: 'm',
      discoveryType: 'xds',
      createSource: () => ({ start: () => {}, close: () => {} }),
    });
    gc?.();
    const before = process.memoryUsage().heapUsed;
    const M = 50_000;
    const eps = [];
    for (let i = 0; i < M; i++)
      eps.push(
        makeEndpoint({
          address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
          port: 8000 + (i % 7),
          locality: { zone: `z${i % 3}` },
        }),
      );
    memRt.applyUpdate({ endpoints: eps });
    gc?.();
    const bytesPerEndpoint = (process.memoryUsage().heapUsed - before) / M;
    await mem.close();
    await mesh.close();

    // 4. Request p99 through an xDS route, steady vs during 10k-endpoint pushes of another cluster.
    const server = await startServerProcess();
    const big = cla('big', N, 8000);
    const smallConfig = { services: { bench: { endpoints: [`127.0.0.1:${server.port}`] } } };
    const cp = await startControlPlane({ config: smallConfig });
    const m = await createMesh(
      {},
      {
        env: {
          GRPC_XDS_BOOTSTRAP_CONFIG: JSON.stringify({
            xds_servers: [{ server_uri: cp.address, channel_creds: [{ type: 'insecure' }] }],
            node: { id: 'bench' },
          }),
        },
      },
    );
    const reqs = quick ? 1500 : 6000;
    const latencies = async (n: number): Promise<number[]> => {
      const out: number[] = [];
      const conc = 10;
      let left = n;
      await Promise.all(
        Array.from({ length: conc }, async () => {
          while (left-- > 0) {
            const t0 = performance.now();
            const res = await m.fetch('http://bench/items/1');
            await res.arrayBuffer();
            out.push(performance.now() - t0);
          }
        }),
      );
      return out;
    };
    await latencies(500); // warm up (connects, JIT, subscriptions)
    // The big cluster is served and watched (a second listener routes to it), so every push is
    // decoded, translated and applied in this process while requests go to `bench`.
    const baseSet = resourcesFromConfig(
      parseControlPlaneConfig({
        services: { ...smallConfig.services, big: { endpoints: ['127.0.0.1:1'], listener: true } },
      }),
    ) as { listeners: Msg[]; routes: Msg[]; clusters: Msg[]; endpoints: Msg[] };
    const push = (v: number) =>
      cp.setResources({
        ...baseSet,
        endpoints: [
          ...baseSet.endpoints.filter((e) => e.clusterName !== 'big'),
          v % 2 === 0 ? big : cla('big', N, 9000),
        ],
      });
    push(0);
    // Subscribe to `big` through the mesh (a request to it creates its router and cluster).
    await m.fetch('http://big/').catch(() => undefined);
    const steady = await latencies(reqs);
    let pushes = 0;
    const timer = setInterval(() => push(++pushes), 500);
    const during = await latencies(reqs);
    clearInterval(timer);
    await m.close();
    await cp.close();
    await server.close();

    const p99Steady = pct(steady, 99);
    const p99During = pct(during, 99);
    const results = {
      endpoints: N,
      fullUpdateMs: { p50: r3(pct(full, 50)), p99: r3(pct(full, 99)), runs },
      oneEndpointChangeMs: { p50: r3(pct(oneChange, 50)), p99: r3(pct(oneChange, 99)) },
      oneEndpointApplyOnlyMs: { p50: r3(pct(applyOnly, 50)), p99: r3(pct(applyOnly, 99)) },
      bytesPerEndpoint: Math.round(bytesPerEndpoint),
      gcExposed: gc !== undefined,
      requestP99Ms: {
        steady: r3(p99Steady),
        duringUpdates: r3(p99During),
        ratio: r3(p99During / p99Steady),
        pushes,
      },
    };
    return {
      results,
      summary: [
        `xds: CDS+EDS update of ${N} endpoints decoded+translated+applied p99 ${results.fullUpdateMs.p99} ms (target <= 50)`,
        `xds: one-endpoint change (whole CLA re-sent) p99 ${results.oneEndpointChangeMs.p99} ms; diff+apply alone p99 ${results.oneEndpointApplyOnlyMs.p99} ms (target <= 1)`,
        `xds: ~${results.bytesPerEndpoint} bytes of heap per endpoint${gc ? '' : ' (no --expose-gc: approximate)'}`,
        `xds: request p99 ${results.requestP99Ms.steady} ms steady vs ${results.requestP99Ms.duringUpdates} ms during ${pushes} 10k-endpoint pushes (one per 500 ms) (ratio ${results.requestP99Ms.ratio}, target <= 1.5)`,
      ],
    };
  },
};

export default suite;
