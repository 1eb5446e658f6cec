import { monitorEventLoopDelay, PerformanceObserver, performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import {
  buildSnapshot,
  parseControlPlaneConfig,
  resourcesFromConfig,
  startControlPlane,
} from '../../../packages/control-plane/src/index.js';
import { allocateEndpointSlot } from '../../../packages/core/src/extend.js';
import { Mesh as CoreMesh, makeEndpoint, parseConfig } from '../../../packages/core/src/index.js';
import { createMesh } from '../../../packages/meshlet/src/index.js';
import { type EdsState, translateEndpointsIncremental } from '../../../packages/xds/src/eds.js';
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
import { discoveryUpdateOf } from '../../../packages/xds/src/resolver.js';
import type { BenchSuite, BenchSuiteResult } from '../lib.js';
import { startServerProcess } from '../support/server.js';
import { handshakeProviderVsDir } from '../support/xds-handshake.js';
import { listenerUpdateUnderLoad, pct, r3, rbacMicro } from '../support/xds-inbound.js';

/**
 * xDS update costs, through the path the xDS client takes: a CDS + EDS update of 10,000 endpoints
 * (decode → translation → `ServiceRuntime.applyUpdate` with per-locality parts, as the client passes
 * them, i.e. diff and picker rebuild; EDS is
 * translated incrementally against the previous version, as the client does, and here every
 * endpoint changes), a one-endpoint change (the whole ClusterLoadAssignment is re-sent in
 * state-of-the-world xDS: a wire-level diff reuses the 9,999 unchanged endpoints), the same
 * assignment re-sent unchanged, the old full-decode path side by side for reference, memory per
 * endpoint, and request latency (p99) and event-loop delay through an xDS-routed service while the
 * control plane pushes 10,000-endpoint updates of another cluster, against the same requests with
 * no updates. The control plane's snapshots are encoded before the measurement: its encoding cost
 * is a control-plane cost (another process in production), not the client's.
 *
 * Measured runs are spaced by a short idle gap (`FULL_GAP_MS` between full updates,
 * `ONE_GAP_MS` between one-endpoint changes): a client receives an update now and then, not back
 * to back (Istio debounces pushes by 100 ms), and V8 does part of its garbage collection in idle
 * tasks between updates. That work is still paid, between updates, by the same thread (part 4
 * measures what requests see of it); nothing forces a GC, and GC pauses that fall inside a
 * measured run stay in its time. They are also reported apart (`gcPauseInRunsMs`: Node's `gc`
 * performance entries, i.e. stop-the-world pauses; incremental marking steps are not in them).
 * Memory per endpoint is given as discovered (never picked) and after each endpoint was picked and
 * given a transport slot (the pick result and slot array are created on first use).
 */

const FULL_GAP_MS = 20;
const ONE_GAP_MS = 2;

/** Records GC pauses (`gc` performance entries) to tell how much of a measured window they took. */
function gcPauses() {
  const spans: number[] = [];
  const take = (entries: readonly { startTime: number; duration: number }[]) => {
    for (const e of entries) spans.push(e.startTime, e.startTime + e.duration);
  };
  const obs = new PerformanceObserver((list) => take(list.getEntries()));
  obs.observe({ entryTypes: ['gc'] });
  return {
    /** Stops recording (entries still queued are taken first). */
    stop(): void {
      take(obs.takeRecords());
      obs.disconnect();
    },
    /** Milliseconds of GC pause inside [t0, t1]. */
    within(t0: number, t1: number): number {
      let ms = 0;
      for (let i = 0; i < spans.length; i += 2) {
        const a = Math.max(t0, spans[i] as number);
        const b = Math.min(t1, spans[i + 1] as number);
        if (b > a) ms += b - a;
      }
      return ms;
    },
  };
}

function cla(
  name: string,
  n: number,
  portBase: number,
  weightOf: (i: number) => number = () => 1,
  healthOf: (i: number) => string = () => 'HEALTHY',
): Msg {
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
        healthStatus: healthOf(i),
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

const cpuMs = (since: NodeJS.CpuUsage): number => {
  const d = process.cpuUsage(since);
  return (d.user + d.system) / 1000;
};

const suite: BenchSuite = {
  name: 'xds',
  inQuick: true,
  async run({ quick }): Promise<BenchSuiteResult> {
    const N = 10_000;
    const runs = quick ? 8 : 60;
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
    // Wall time, and process CPU time (less disturbed when other processes share the machine;
    // it includes V8's GC helper threads).
    const full: number[] = [];
    const fullCpu: number[] = [];
    let eds: EdsState | undefined;
    // Unmeasured warm-up (JIT) of both paths.
    for (let i = 0; i < (quick ? 2 : 6); i++) {
      rt.applyUpdate({
        endpoints: translateEndpoints(decodeMessage(EDS_TYPE, i % 2 === 0 ? edsB : edsA)).endpoints,
      });
      eds = translateEndpointsIncremental(i % 2 === 0 ? edsA : edsB, eds);
      rt.applyUpdate(discoveryUpdateOf(eds.update, undefined));
    }
    const gcs = gcPauses();
    const fullWindows: number[] = [];
    for (let i = 0; i < runs; i++) {
      await sleep(FULL_GAP_MS);
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const c = translateCluster(decodeAny(CDS_TYPE, cds));
      eds = translateEndpointsIncremental(i % 2 === 0 ? edsA : edsB, eds);
      if (c.name !== 'big') throw new Error('bad cluster');
      rt.applyUpdate(discoveryUpdateOf(eds.update, String(i)));
      const t1 = performance.now();
      full.push(t1 - t0);
      fullCpu.push(cpuMs(c0));
      fullWindows.push(t0, t1);
    }
    // The same with the full decode + translation (no wire-level diff), for reference.
    const fullDecode: number[] = [];
    const refRuns = quick ? 2 : runs;
    for (let i = 0; i < refRuns; i++) {
      await sleep(FULL_GAP_MS);
      const t0 = performance.now();
      const c = translateCluster(decodeAny(CDS_TYPE, cds));
      const e = translateEndpoints(decodeMessage(EDS_TYPE, i % 2 === 0 ? edsA : edsB));
      if (c.name !== 'big') throw new Error('bad cluster');
      rt.applyUpdate({ endpoints: e.endpoints, version: String(i) });
      fullDecode.push(performance.now() - t0);
    }
    // 2. One endpoint changes (weight): SotW EDS re-sends the whole assignment.
    eds = translateEndpointsIncremental(edsA, undefined);
    rt.applyUpdate(discoveryUpdateOf(eds.update, undefined));
    const oneChange: number[] = [];
    const oneChangeCpu: number[] = [];
    const applyOnly: number[] = [];
    const resent: number[] = [];
    const variants = [0, 1].map((v) =>
      encodeMessage(
        EDS_TYPE,
        cla('big', N, 8000, (i) => (i === 17 ? 2 + v : 1)),
      ),
    );
    const copies = variants.map((v) => Buffer.from(v));
    for (let i = 0; i < 10; i++) {
      // Unmeasured warm-up (JIT).
      eds = translateEndpointsIncremental(variants[i % 2] as Uint8Array, eds);
      rt.applyUpdate(discoveryUpdateOf(eds.update, undefined));
      translateEndpointsIncremental(copies[i % 2] as Uint8Array, eds);
    }
    const oneWindows: number[] = [];
    for (let i = 0; i < runs * 4; i++) {
      await sleep(ONE_GAP_MS);
      const bytes = variants[i % 2] as Uint8Array;
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      eds = translateEndpointsIncremental(bytes, eds);
      const t1 = performance.now();
      rt.applyUpdate(discoveryUpdateOf(eds.update, undefined));
      const t2 = performance.now();
      oneChangeCpu.push(cpuMs(c0));
      oneChange.push(t2 - t0);
      applyOnly.push(t2 - t1);
      oneWindows.push(t0, t2);
      // The same bytes again (a SotW response for another resource re-sends this one), in
      // another buffer, as a new response arrives in.
      const again = copies[i % 2] as Uint8Array;
      const t3 = performance.now();
      if (translateEndpointsIncremental(again, eds) !== eds) throw new Error('not skipped');
      resent.push(performance.now() - t3);
    }
    // 2b. One endpoint's health flips (HEALTHY ↔ UNHEALTHY): the usable set changes, so the
    // pickers are rebuilt (a weight-only change, above, is applied in place by peak_ewma).
    const healthVariants = ['HEALTHY', 'UNHEALTHY'].map((h) =>
      encodeMessage(
        EDS_TYPE,
        cla('big', N, 8000, undefined, (i) => (i === 17 ? h : 'HEALTHY')),
      ),
    );
    const healthChange: number[] = [];
    for (let i = 0; i < 10; i++) {
      eds = translateEndpointsIncremental(healthVariants[i % 2] as Uint8Array, eds);
      rt.applyUpdate(discoveryUpdateOf(eds.update, undefined));
    }
    for (let i = 0; i < runs * 2; i++) {
      await sleep(ONE_GAP_MS);
      const t0 = performance.now();
      eds = translateEndpointsIncremental(healthVariants[i % 2] as Uint8Array, eds);
      rt.applyUpdate(discoveryUpdateOf(eds.update, undefined));
      healthChange.push(performance.now() - t0);
    }
    gcs.stop();
    /** GC pause inside each measured run: the total, and the most in one run. */
    const gcIn = (windows: number[]) => {
      let total = 0;
      let max = 0;
      for (let i = 0; i < windows.length; i += 2) {
        const ms = gcs.within(windows[i] as number, windows[i + 1] as number);
        total += ms;
        max = Math.max(max, ms);
      }
      return { total: r3(total), maxInOneRun: r3(max) };
    };
    const fullGc = gcIn(fullWindows);
    const oneGc = gcIn(oneWindows);
    // 3. Memory per endpoint: 50k endpoints (10k quick) in one runtime (model objects + runtime state).
    // A full GC around the heap readings (only here, never in timed runs).
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as (() => void) | undefined;
    const mem = new CoreMesh(parseConfig({}));
    const memRt = mem.ensureService({
      key: 'm',
      discoveryType: 'xds',
      createSource: () => ({ start: () => {}, close: () => {} }),
    });
    gc?.();
    const before = process.memoryUsage().heapUsed;
    const M = quick ? 10_000 : 50_000;
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
    const afterDiscovery = process.memoryUsage().heapUsed;
    const bytesPerEndpoint = (afterDiscovery - before) / M;
    // Every endpoint picked once and given a transport slot (as traffic and a connection pool do).
    const slot = allocateEndpointSlot();
    for (const st of memRt.endpoints) {
      if (st.picked.kind !== 'pick') throw new Error('bad pick result');
      st.slots[slot] = null;
    }
    gc?.();
    const bytesPerEndpointUsed = (process.memoryUsage().heapUsed - before) / M;
    await mem.close();
    await mesh.close();

    // 4. Request p99 through an xDS route, steady vs during 10k-endpoint pushes of another cluster.
    const server = await startServerProcess();
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
    const reqs = quick ? 600 : 10_000;
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
    await latencies(quick ? 200 : 500); // warm up (connects, JIT, subscriptions)
    // The big cluster is served and watched (a second listener routes to it), so every push is
    // decoded, translated and applied in this process while requests go to `bench`.
    const baseSet = resourcesFromConfig(
      parseControlPlaneConfig({
        services: { ...smallConfig.services, big: { endpoints: ['127.0.0.1:1'], listener: true } },
      }),
    ) as { listeners: Msg[]; routes: Msg[]; clusters: Msg[]; endpoints: Msg[] };
    // The big assignments are the bytes already encoded above (A and B: every endpoint changes).
    const base = buildSnapshot(
      { ...baseSet, endpoints: baseSet.endpoints.filter((e) => e.clusterName !== 'big') },
      'pre',
    );
    const snapshots = [edsA, edsB].map((value) => {
      const resources = new Map(base.resources);
      const eds = new Map(base.resources.get(EDS_TYPE));
      eds.set('big', { name: 'big', any: { typeUrl: EDS_TYPE, value } });
      resources.set(EDS_TYPE, eds);
      return { version: 'pre', resources };
    });
    const push = (v: number) =>
      cp.setSnapshot({ ...(snapshots[v % 2] as (typeof snapshots)[number]), version: `bench-${v}` });
    push(0);
    // Subscribe to `big` through the mesh (a request to it creates its router and cluster).
    await m.fetch('http://big/').catch(() => undefined);
    const bigRuntime = m.service('big');
    const loopDelay = monitorEventLoopDelay({ resolution: 1 });
    loopDelay.enable();
    const steady = await latencies(reqs);
    loopDelay.disable();
    const steadyLoopMaxMs = loopDelay.max / 1e6;
    loopDelay.reset();
    const updatesBefore = bigRuntime?.discovery.updates ?? 0;
    let pushes = 0;
    const timer = setInterval(() => push(++pushes), 500);
    loopDelay.enable();
    const during = await latencies(reqs);
    loopDelay.disable();
    clearInterval(timer);
    const duringLoopMaxMs = loopDelay.max / 1e6;
    const applied = (bigRuntime?.discovery.updates ?? 0) - updatesBefore;
    await m.close();
    await cp.close();
    await server.close();

    // 5. The server side: RBAC per request (20 rules), and inbound Listener updates under load.
    const rbac = await rbacMicro(quick);
    const update = await listenerUpdateUnderLoad(quick);
    // 6. The mTLS handshake: bootstrap provider certificates vs the tls: directory.
    const handshake = await handshakeProviderVsDir(quick);

    const p99Steady = pct(steady, 99);
    const p99During = pct(during, 99);
    const results = {
      endpoints: N,
      fullUpdateMs: { p50: r3(pct(full, 50)), p99: r3(pct(full, 99)), runs },
      fullUpdateCpuMs: { p50: r3(pct(fullCpu, 50)), p99: r3(pct(fullCpu, 99)) },
      fullUpdateFullDecodeMs: { p50: r3(pct(fullDecode, 50)), p99: r3(pct(fullDecode, 99)), runs: refRuns },
      oneEndpointChangeMs: { p50: r3(pct(oneChange, 50)), p99: r3(pct(oneChange, 99)), runs: runs * 4 },
      oneEndpointChangeCpuMs: { p50: r3(pct(oneChangeCpu, 50)), p99: r3(pct(oneChangeCpu, 99)) },
      oneEndpointApplyOnlyMs: { p50: r3(pct(applyOnly, 50)), p99: r3(pct(applyOnly, 99)) },
      unchangedResendMs: { p50: r3(pct(resent, 50)), p99: r3(pct(resent, 99)) },
      oneEndpointHealthChangeMs: {
        p50: r3(pct(healthChange, 50)),
        p99: r3(pct(healthChange, 99)),
        runs: runs * 2,
      },
      gapBetweenRunsMs: { full: FULL_GAP_MS, oneEndpoint: ONE_GAP_MS },
      gcPauseInRunsMs: { full: fullGc, oneEndpoint: oneGc },
      bytesPerEndpoint: Math.round(bytesPerEndpoint),
      bytesPerEndpointPickedWithSlot: Math.round(bytesPerEndpointUsed),
      gcExposed: gc !== undefined,
      requestP99Ms: {
        steady: r3(p99Steady),
        duringUpdates: r3(p99During),
        ratio: r3(p99During / p99Steady),
        pushes,
        applied,
      },
      eventLoopMaxDelayMs: { steady: r3(steadyLoopMaxMs), duringUpdates: r3(duringLoopMaxMs) },
      rbac20RulesNs: {
        local: r3(rbac.localNs),
        xdsFilter: r3(rbac.xdsFilterNs),
        xdsChain: r3(rbac.xdsChainNs),
        admitLocal: r3(rbac.admitLocalNs),
        admitXdsListener: r3(rbac.admitXdsNs),
      },
      inboundListenerUpdateUnderLoad: update,
      mtlsHandshakeProviderVsTlsDir: handshake,
    };
    return {
      results,
      summary: [
        `xds: CDS+EDS update of ${N} endpoints decoded+translated+applied p50 ${results.fullUpdateMs.p50} / p99 ${results.fullUpdateMs.p99} ms (target p99 <= 50), CPU p50 ${results.fullUpdateCpuMs.p50} ms; full-decode path p50 ${results.fullUpdateFullDecodeMs.p50} / p99 ${results.fullUpdateFullDecodeMs.p99} ms`,
        `xds: one-endpoint change (whole CLA re-sent) p50 ${results.oneEndpointChangeMs.p50} / p99 ${results.oneEndpointChangeMs.p99} ms (target <= 1), CPU p50 ${results.oneEndpointChangeCpuMs.p50} ms; diff+apply alone p99 ${results.oneEndpointApplyOnlyMs.p99} ms; unchanged re-send p99 ${results.unchangedResendMs.p99} ms`,
        `xds: one endpoint's health flips (pickers rebuilt) p50 ${results.oneEndpointHealthChangeMs.p50} / p99 ${results.oneEndpointHealthChangeMs.p99} ms`,
        `xds: runs ${FULL_GAP_MS} ms (full) / ${ONE_GAP_MS} ms (one endpoint) apart; GC pauses inside measured runs: full ${fullGc.total} ms over ${runs} runs (at most ${fullGc.maxInOneRun} in one), one-endpoint ${oneGc.total} ms over ${runs * 4} (at most ${oneGc.maxInOneRun})`,
        `xds: ~${results.bytesPerEndpoint} bytes of heap per endpoint, ~${results.bytesPerEndpointPickedWithSlot} once picked and given a transport slot${gc ? '' : ' (no --expose-gc: approximate)'}`,
        `xds: RBAC per request, 20 rules: from xDS (RBAC filter) ${results.rbac20RulesNs.xdsFilter} ns, with the chain's TLS check ${results.rbac20RulesNs.xdsChain} ns, local authorization: ${results.rbac20RulesNs.local} ns (target <= 1000); whole gRPC admission step with the inbound listener ${results.rbac20RulesNs.admitXdsListener} ns vs the local policy ${results.rbac20RulesNs.admitLocal} ns`,
        `xds: inbound Listener updated every 200 ms under load (${update.versionsApplied} versions applied of ${update.pushes} pushed, ${update.seconds} s): ${update.requests.http} HTTP + ${update.requests.grpc} gRPC requests, failed ${update.failed.http} + ${update.failed.grpc} (target 0)${update.failures.length > 0 ? ` (${update.failures.join('; ')})` : ''}; p99 ${update.p99Ms.steady} ms steady vs ${update.p99Ms.duringUpdates} ms during (20 ms handlers)`,
        `xds: mTLS handshake, bootstrap provider vs tls: directory (target <= 1.05x; ${handshake.rounds} alternating rounds of ${handshake.handshakesPerRound}, medians): client (connectors) ${handshake.client.wallMs.provider} vs ${handshake.client.wallMs.tlsDir} ms wall (${handshake.client.wallMs.ratio}x), ${handshake.client.cpuMs.provider} vs ${handshake.client.cpuMs.tlsDir} ms CPU (${handshake.client.cpuMs.ratio}x); server (inbound chain vs tls: server) ${handshake.server.wallMs.provider} vs ${handshake.server.wallMs.tlsDir} ms wall (${handshake.server.wallMs.ratio}x), ${handshake.server.cpuMs.provider} vs ${handshake.server.cpuMs.tlsDir} ms CPU (${handshake.server.cpuMs.ratio}x)`,
        `xds: request p99 ${results.requestP99Ms.steady} ms steady vs ${results.requestP99Ms.duringUpdates} ms during ${applied} applied 10k-endpoint pushes (one per 500 ms) (ratio ${results.requestP99Ms.ratio}, target <= 1.5); event-loop max delay ${results.eventLoopMaxDelayMs.steady} ms steady, ${results.eventLoopMaxDelayMs.duringUpdates} ms during`,
      ],
    };
  },
};

export default suite;
