import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Mesh, parseConfig, ServiceRuntime } from '../../../packages/core/src/index.js';
import type { KubernetesSettings } from '../../../packages/kubernetes/src/config.js';
import { KubernetesDiscovery } from '../../../packages/kubernetes/src/discovery.js';
import { type ParsedSlice, parseSlice } from '../../../packages/kubernetes/src/slices.js';
import { SliceSource } from '../../../packages/kubernetes/src/source.js';
import type { ServiceWatch } from '../../../packages/kubernetes/src/watch.js';
import { FakeApiServer, makeService, makeSlice } from '../../../packages/kubernetes/test/fake-apiserver.js';
import { createMesh } from '../../../packages/meshlet/src/index.js';
import type { BenchSuite, BenchSuiteResult } from '../lib.js';

/**
 * Kubernetes EndpointSlice discovery against the in-process fake API server (issue 5):
 * - 100 services x 100 endpoints watched: time to sync, heap retained, CPU while syncing and while
 *   absorbing a round of MODIFIED events (the fake server runs in the same process, so CPU counts
 *   both sides: an upper bound for the client);
 * - a 10,000-endpoint change (10 slices x 1,000 endpoints, every address replaced) from the
 *   first event written to the new picker, side by side with the bare `JSON.parse` of the same
 *   events (the floor any watcher pays); target <= 50 ms;
 * - scale 3 -> 10 under load through `mesh.fetch`: watch event written -> first request served
 *   by a new pod; target <= 100 ms.
 */

function gcFn(): () => void {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as (() => void) | undefined;
  return () => {
    gc?.();
    gc?.();
  };
}

const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d;

function ip(i: number): string {
  return `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
}

async function discoveryMesh(api: FakeApiServer): Promise<{ mesh: Mesh; discovery: KubernetesDiscovery }> {
  const config = parseConfig({ kubernetes: { maxRequestsPerSecond: 10_000 } });
  const mesh = new Mesh(config);
  const discovery = new KubernetesDiscovery(
    {
      settings: config.extensions.kubernetes as KubernetesSettings,
      access: {
        server: api.url,
        ca: undefined,
        cert: undefined,
        key: undefined,
        insecureSkipTlsVerify: false,
        token: undefined,
        basic: undefined,
        namespace: 'default',
        inCluster: true,
        source: 'bench',
      },
    },
    mesh,
  );
  mesh.onClose(() => discovery.close());
  mesh.addResolver(discovery);
  return { mesh, discovery };
}

function whenEndpoints(
  mesh: Mesh,
  service: string,
  pred: (n: number, first: string | undefined) => boolean,
): Promise<number> {
  return new Promise((resolve) => {
    const off = mesh.events.on('endpoints', (e) => {
      if (e.service === service && pred(e.endpoints.length, e.endpoints[0]?.address)) {
        off();
        resolve(performance.now());
      }
    });
  });
}

async function fleet(services: number, perService: number): Promise<Record<string, number>> {
  const gc = gcFn();
  const api = await new FakeApiServer().start();
  for (let s = 0; s < services; s++) {
    api.setService(makeService(`svc-${s}`, [{ name: 'http', port: 8080 }]));
    const endpoints = [];
    for (let i = 0; i < perService; i++)
      endpoints.push({ ip: ip(s * perService + i), pod: `svc-${s}-${i}`, zone: 'a' });
    api.applySlice(
      makeSlice({
        name: `svc-${s}-a`,
        service: `svc-${s}`,
        ports: [{ name: 'http', port: 8080 }],
        endpoints,
      }),
    );
  }
  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const { mesh } = await discoveryMesh(api);
  const runtimes: ServiceRuntime[] = [];
  for (let s = 0; s < services; s++) {
    const rt = mesh.resolve(`svc-${s}.default`, 8080);
    if (rt) runtimes.push(rt);
  }
  await Promise.all(runtimes.map((rt) => rt.whenDiscovered()));
  const syncMs = performance.now() - t0;
  const cpuSync = process.cpuUsage(cpu0);
  gc();
  const heapAfter = process.memoryUsage().heapUsed;
  // Churn: one MODIFIED event per service (one endpoint replaced in each).
  const cpu1 = process.cpuUsage();
  const t1 = performance.now();
  const done = Promise.all(
    runtimes.map((rt, s) =>
      whenEndpoints(mesh, rt.name, () => rt.endpoint(`${ip(9_000_000 + s)}:8080`) !== undefined),
    ),
  );
  for (let s = 0; s < services; s++) {
    const endpoints = [];
    for (let i = 1; i < perService; i++)
      endpoints.push({ ip: ip(s * perService + i), pod: `svc-${s}-${i}`, zone: 'a' });
    endpoints.push({ ip: ip(9_000_000 + s), pod: `svc-${s}-new`, zone: 'a' });
    api.applySlice(
      makeSlice({
        name: `svc-${s}-a`,
        service: `svc-${s}`,
        ports: [{ name: 'http', port: 8080 }],
        endpoints,
      }),
    );
  }
  await done;
  const churnMs = performance.now() - t1;
  const cpuChurn = process.cpuUsage(cpu1);
  const total = runtimes.reduce((n, rt) => n + rt.endpoints.length, 0);
  await mesh.close();
  await api.stop();
  return {
    services,
    endpoints: total,
    syncMs: round(syncMs),
    syncCpuMs: round((cpuSync.user + cpuSync.system) / 1000),
    heapRetainedMiB: round((heapAfter - heapBefore) / 2 ** 20),
    heapBytesPerEndpoint: Math.round((heapAfter - heapBefore) / total),
    churnEvents: services,
    churnMs: round(churnMs),
    churnCpuMs: round((cpuChurn.user + cpuChurn.system) / 1000),
  };
}

function bigSlices(gen: number): Array<Record<string, unknown>> {
  return Array.from({ length: 10 }, (_, s) =>
    makeSlice({
      name: `big-${s}`,
      service: 'big',
      ports: [{ name: 'http', port: 8080 }],
      endpoints: Array.from({ length: 1000 }, (_, i) => ({
        ip: ip(gen * 100_000 + s * 1000 + i + 1),
        pod: `big-${gen}-${s}-${i}`,
        zone: 'a',
      })),
    }),
  );
}

const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)] ?? 0;
const max = (a: number[]) => Math.max(...a);

/**
 * The apply step alone, in process: decoded slices -> the source's endpoint set -> the service
 * runtime's diff and new picker. Side by side with `JSON.parse` of the same watch events.
 */
function applyInProcess(rounds: number): Record<string, number> {
  const mesh = new Mesh(parseConfig({}));
  const runtime = new ServiceRuntime('big', mesh.config.defaults, 'kubernetes', mesh.events, () =>
    performance.now(),
  );
  const fakeWatch = {
    subscribe() {},
    unsubscribe() {},
    namespace: 'default',
    service: 'big',
  } as unknown as ServiceWatch;
  const source = new SliceSource(fakeWatch, { kind: 'service', port: 8080 }, () => {});
  source.start({ onUpdate: (u) => runtime.applyUpdate(u), onError: () => {} });
  const ports = [{ name: 'http', port: 8080, targetPort: 8080, protocol: 'TCP' }];
  const apply: number[] = [];
  const parse: number[] = [];
  for (let r = 0; r <= rounds; r++) {
    const lines = bigSlices(r).map((o) => JSON.stringify({ type: 'MODIFIED', object: o }));
    const p0 = performance.now();
    const events = lines.map((l) => JSON.parse(l) as { object: unknown });
    const p1 = performance.now();
    const slices = new Map<string, ParsedSlice>();
    for (const ev of events) {
      const sl = parseSlice(ev.object);
      if (sl) slices.set(sl.name, sl);
    }
    source.onState({ slices, servicePorts: ports, resourceVersion: String(r) });
    const p2 = performance.now();
    if (r > 0) {
      // Round 0 fills the service; the rounds after replace every one of its 10,000 endpoints.
      parse.push(p1 - p0);
      apply.push(p2 - p1);
    }
  }
  runtime.close();
  void mesh.close();
  return {
    applyMsBest: round(Math.min(...apply)),
    jsonParseMsBest: round(Math.min(...parse)),
    applyMsMedian: round(med(apply)),
    applyMsMax: round(max(apply)),
    jsonParseMsMedian: round(med(parse)),
    applyToParseRatio: round(med(apply) / Math.max(med(parse), 0.001)),
  };
}

/** End to end: the fake server writes 10 MODIFIED events (10,000 new endpoints) -> new picker. */
async function bigChange(rounds: number): Promise<Record<string, number>> {
  const api = await new FakeApiServer().start();
  api.setService(makeService('big', [{ name: 'http', port: 8080 }]));
  for (const sl of bigSlices(0)) api.applySlice(sl);
  const { mesh } = await discoveryMesh(api);
  const rt = mesh.resolve('big.default', 8080);
  await rt?.whenDiscovered();
  const e2e: number[] = [];
  let rebuilds = 0;
  mesh.events.on('endpoints', () => {
    rebuilds++;
  });
  for (let r = 1; r <= rounds; r++) {
    const next = bigSlices(r);
    const lastAddr = ip(r * 100_000 + 10_000);
    const firstAddr = ip(r * 100_000 + 1);
    const done = whenEndpoints(
      mesh,
      'big.default.svc.cluster.local:8080',
      (n) =>
        n === 10_000 &&
        rt?.endpoint(`${firstAddr}:8080`) !== undefined &&
        rt.endpoint(`${lastAddr}:8080`) !== undefined,
    );
    const t0 = performance.now();
    for (const sl of next) api.applySlice(sl);
    e2e.push((await done) - t0);
  }
  const n = rt?.endpoints.length ?? 0;
  await mesh.close();
  await api.stop();
  return {
    endpoints: n,
    rounds,
    endToEndMsMedian: round(med(e2e)),
    endToEndMsMax: round(max(e2e)),
    rebuildsPerChange: round(rebuilds / rounds, 1),
  };
}

async function listenAll(
  count: number,
  onHit: (addr: string) => void,
): Promise<{ port: number; close: () => Promise<void> }> {
  const handler: Parameters<typeof createServer>[1] = (req, res) => {
    onHit(req.socket.localAddress ?? '');
    res.end('ok');
  };
  const listen = (s: Server, host: string, port: number) =>
    new Promise<number>((resolve, reject) => {
      s.once('error', reject);
      s.listen(port, host, () => resolve((s.address() as AddressInfo).port));
    });
  for (let attempt = 0; attempt < 5; attempt++) {
    const servers: Server[] = [];
    const close = () => Promise.all(servers.map((s) => new Promise((r) => s.close(r)))).then(() => undefined);
    try {
      const first = createServer({ keepAliveTimeout: 60_000 }, handler);
      servers.push(first);
      const port = await listen(first, '127.0.0.2', 0);
      for (let i = 3; i < 2 + count; i++) {
        const s = createServer({ keepAliveTimeout: 60_000 }, handler);
        servers.push(s);
        await listen(s, `127.0.0.${i}`, port);
      }
      return { port, close };
    } catch {
      await close();
    }
  }
  throw new Error('cannot bind the pod servers');
}

async function scaleUp(rounds: number): Promise<Record<string, number>> {
  let firstNewHit: ((t: number) => void) | undefined;
  let newPods = new Set<string>();
  const pods = await listenAll(10, (addr) => {
    if (firstNewHit && newPods.has(addr)) {
      const f = firstNewHit;
      firstNewHit = undefined;
      f(performance.now());
    }
  });
  const api = await new FakeApiServer().start();
  api.setService(makeService('reviews', [{ name: 'http', port: 8080, targetPort: 'http' }]));
  const sliceOf = (n: number) =>
    makeSlice({
      name: 'reviews-abc',
      service: 'reviews',
      ports: [{ name: 'http', port: pods.port }],
      endpoints: Array.from({ length: n }, (_, i) => ({
        ip: `127.0.0.${i + 2}`,
        pod: `reviews-${i}`,
        zone: 'a',
      })),
    });
  api.applySlice(sliceOf(3));
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-bench-'));
  const file = join(dir, 'config');
  writeFileSync(
    file,
    `current-context: b\nclusters: [{ name: c, cluster: { server: "${api.url}" } }]\ncontexts: [{ name: b, context: { cluster: c, namespace: default } }]\n`,
  );
  const m = await createMesh({ kubernetes: { kubeconfig: file } });
  const url = 'http://reviews.default:8080/';
  let running = true;
  const load = async () => {
    while (running) {
      try {
        const res = await m.fetch(url);
        await res.arrayBuffer();
      } catch {
        // keep the load going
      }
    }
  };
  // Warm the three pods' connections.
  for (let i = 0; i < 30; i++) await (await m.fetch(url)).arrayBuffer();
  const workers = [load(), load(), load(), load()];
  const latencies: number[] = [];
  for (let r = 0; r < rounds; r++) {
    newPods = new Set(Array.from({ length: 7 }, (_, i) => `127.0.0.${i + 5}`));
    const hit = new Promise<number>((resolve) => {
      firstNewHit = resolve;
    });
    const t0 = performance.now();
    api.applySlice(sliceOf(10));
    latencies.push((await hit) - t0);
    // Back to 3 pods, and let the mesh see it before the next round.
    newPods = new Set();
    const back = whenEndpoints(m, 'reviews.default.svc.cluster.local:8080', (n) => n === 3);
    api.applySlice(sliceOf(3));
    await back;
  }
  running = false;
  await Promise.all(workers);
  await m.close();
  await api.stop();
  await pods.close();
  rmSync(dir, { recursive: true, force: true });
  latencies.sort((a, b) => a - b);
  return {
    rounds,
    eventToFirstRequestMsMedian: round(latencies[Math.floor(latencies.length / 2)] ?? 0),
    eventToFirstRequestMsMax: round(latencies[latencies.length - 1] ?? 0),
  };
}

const suite: BenchSuite = {
  name: 'kubernetes',
  inQuick: true,
  async run({ quick }): Promise<BenchSuiteResult> {
    const f = await fleet(quick ? 5 : 100, 100);
    const apply = applyInProcess(quick ? 1 : 10);
    // The end-to-end 10,000-endpoint transfer is for full runs only (it costs seconds on a busy box).
    const big = quick ? undefined : await bigChange(5);
    const scale = await scaleUp(quick ? 1 : 10);
    return {
      results: { fleet: f, apply10k: apply, ...(big ? { bigChange: big } : {}), scaleUp: scale },
      summary: [
        `kubernetes: ${f.services} services x 100 endpoints synced in ${f.syncMs} ms (${f.syncCpuMs} ms CPU), ${f.heapRetainedMiB} MiB heap (${f.heapBytesPerEndpoint} B/endpoint); ${f.churnEvents} MODIFIED events absorbed in ${f.churnMs} ms (${f.churnCpuMs} ms CPU, server included)`,
        `kubernetes: 10,000-endpoint change applied in ${apply.applyMsBest} ms best / ${apply.applyMsMedian} ms median / ${apply.applyMsMax} ms max (target <= 50 ms), ${apply.applyToParseRatio}x the JSON.parse of its events (${apply.jsonParseMsBest} ms best / ${apply.jsonParseMsMedian} ms median)`,
        ...(big
          ? [
              `kubernetes: the same change end to end (fake server write -> socket -> parse -> picker) ${big.endToEndMsMedian} ms median / ${big.endToEndMsMax} ms max, ${big.rebuildsPerChange} rebuilds per 10-event change`,
            ]
          : []),
        `kubernetes: scale 3 -> 10, watch event -> first request on a new pod ${scale.eventToFirstRequestMsMedian} ms median / ${scale.eventToFirstRequestMsMax} ms max (target <= 100 ms)`,
      ],
    };
  },
};

export default suite;
