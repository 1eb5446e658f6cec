import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { checkConfig, type EndpointState, isMeshError, type ServiceRuntime } from '@meshlet/core';
import { CertificateSource, createCa, issueWorkloadCertificate, writeCertDirectory } from '@meshlet/tls';
import { paint } from '../cli/io.js';
// The extensions (TLS, telemetry/admin, …) must be registered whoever imports the demo.
import '../extensions.js';
import { createMesh, type Mesh } from '../mesh.js';
import { type Backend, type BackendSpec, describeFault, startBackend } from './backend.js';
import { formatMs, formatPercent, Stats } from './stats.js';

/** The service level the demo promises: the client's success rate over the whole run. */
export const DEMO_TARGET_SUCCESS_RATE = 0.999;
const SERVICE = 'catalog';

export interface DemoOptions {
  /** Length of the run in seconds (default 30). */
  durationSec?: number;
  /** Requests per second the client sends (default 100). */
  rps?: number;
  /** ANSI colours (default: when `out` is a TTY). */
  color?: boolean;
  /** Where the live view and the summary go (default `process.stdout`). */
  out?: NodeJS.WritableStream & { isTTY?: boolean };
  /** `table`: redrawn in place every second (TTY); `lines`: one compact line a second; `off`. */
  view?: 'table' | 'lines' | 'off';
  /** Ends the run early (Ctrl-C); the summary is still printed. */
  signal?: AbortSignal;
  /** Random source for the injected faults (tests may pin it). */
  random?: () => number;
  /**
   * mTLS between the client and the instances (default true): a development CA issues SPIFFE
   * certificates into a temporary directory, the instances require client certificates, and the
   * mesh verifies the instances' SPIFFE ID.
   */
  mtls?: boolean;
}

const TRUST_DOMAIN = 'spiffe://cluster.local/ns/demo/sa';

interface DemoPki {
  readonly clientDir: string;
  readonly serverSource: CertificateSource;
  readonly identity: string;
  close(): Promise<void>;
}

/** A development CA and two workload certificates (instances, client) in a temporary directory. */
async function createDemoPki(): Promise<DemoPki> {
  const root = await mkdtemp(join(tmpdir(), 'meshlet-demo-'));
  try {
    const ca = await createCa({ commonName: 'meshlet demo CA' });
    const identity = `${TRUST_DOMAIN}/${SERVICE}`;
    const serverDir = join(root, SERVICE);
    const clientDir = join(root, 'client');
    const server = await issueWorkloadCertificate({ ca, spiffeId: identity });
    const client = await issueWorkloadCertificate({ ca, spiffeId: `${TRUST_DOMAIN}/demo-client` });
    await writeCertDirectory(serverDir, { cert: server.cert, key: server.key, ca: ca.cert });
    await writeCertDirectory(clientDir, { cert: client.cert, key: client.key, ca: ca.cert });
    const serverSource = new CertificateSource({ dir: serverDir, watch: false });
    return {
      clientDir,
      serverSource,
      identity,
      async close() {
        serverSource.close();
        await rm(root, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await rm(root, { recursive: true, force: true });
    throw err;
  }
}

export interface DemoEndpointResult {
  readonly name: string;
  readonly id: string;
  readonly fault: string;
  /** Attempts the mesh sent to the instance and how many of them failed (mesh view). */
  readonly attempts: number;
  readonly errors: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Requests the instance answered and how many got an injected error (instance view). */
  readonly served: number;
  readonly injected: number;
  readonly up: boolean;
  /** The mesh's view at the end: `ok`, `ejected`, `unhealthy`, … */
  readonly state: string;
}

export interface DemoResult {
  /** 0 when the success rate met the target, 1 otherwise. */
  readonly exitCode: 0 | 1;
  readonly durationMs: number;
  readonly requests: number;
  readonly successes: number;
  readonly failures: number;
  readonly successRate: number;
  readonly target: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly retries: { readonly allowed: number; readonly denied: number };
  /** Client-side failures by cause (`MESHLET_ERR_CONNECT`, `HTTP 503`, …). */
  readonly failureReasons: Readonly<Record<string, number>>;
  /** The mesh features the run used. */
  readonly features: readonly string[];
  /** The longest event-loop stall of the run (a starved machine shows here). */
  readonly eventLoopDelayMaxMs: number;
  readonly endpoints: readonly DemoEndpointResult[];
}

/** The instances the demo starts: two healthy, one slow, one flaky, one that dies. */
export function demoBackends(durationMs: number): BackendSpec[] {
  return [
    { name: 'catalog-1', fault: { kind: 'none' } },
    { name: 'catalog-2', fault: { kind: 'none' } },
    { name: 'catalog-3', fault: { kind: 'slow', delayMs: 120, jitterMs: 40 } },
    { name: 'catalog-4', fault: { kind: 'flaky', rate: 0.1 } },
    { name: 'catalog-5', fault: { kind: 'dies', afterMs: Math.max(1000, Math.round(durationMs * 0.3)) } },
  ];
}

interface Feature {
  readonly label: string;
  /** Service-level keys this feature sets. */
  readonly service?: Readonly<Record<string, unknown>>;
  /** Mesh-level keys this feature sets. */
  readonly mesh?: Readonly<Record<string, unknown>>;
}

/**
 * Mesh features the demo turns on when this build of meshlet has them. Each is probed with
 * `checkConfig` on its own, so the demo runs with whatever exists (a key an older build does not
 * know is simply left out) and grows as features land.
 */
const OPTIONAL_FEATURES: readonly Feature[] = [
  { label: 'peak_ewma balancing', service: { lb: 'peak_ewma' } },
  { label: 'admin page and /metrics', mesh: { admin: { port: 0, host: '127.0.0.1' } } },
  {
    label: 'outlier ejection (5 consecutive failures)',
    service: {
      outlierDetection: {
        consecutive5xx: 5,
        consecutiveGatewayFailure: 5,
        interval: '2s',
        baseEjectionTime: '10s',
        maxEjectionPercent: 40,
      },
    },
  },
  {
    label: 'active health checks (GET /healthz every 2s)',
    service: {
      healthCheck: {
        type: 'http',
        path: '/healthz',
        interval: '2s',
        jitter: '200ms',
        timeout: '2s',
        unhealthyThreshold: 3,
        healthyThreshold: 2,
      },
    },
  },
];

/** The demo's mesh configuration for the given instances. */
export function demoConfig(
  backends: readonly Backend[],
  mtls?: { readonly clientDir: string; readonly identity: string },
): {
  config: Record<string, unknown>;
  features: string[];
} {
  const service: Record<string, unknown> = {
    endpoints: backends.map((b) => `${b.address}:${b.port}`),
    lb: 'least_request',
    timeout: '5s',
    retry: { attempts: 2, on: ['connect-failure', 'reset', 'refused-stream', 503] },
  };
  const mesh: Record<string, unknown> = {};
  const features: string[] = [];
  for (const f of OPTIONAL_FEATURES) {
    const candidate = { ...mesh, ...f.mesh, services: { [SERVICE]: { ...service, ...f.service } } };
    if (checkConfig(candidate).issues.length === 0) {
      Object.assign(service, f.service);
      Object.assign(mesh, f.mesh);
      features.push(f.label);
    }
  }
  if (mtls) {
    // Every connection is mTLS: the instances demand a client certificate, the mesh checks that
    // they present the SPIFFE ID of "catalog". Health checks then probe TCP (the plaintext HTTP
    // checker cannot speak to an mTLS-only port).
    mesh.tls = { dir: mtls.clientDir };
    service.identity = mtls.identity;
    const hc = service.healthCheck as Record<string, unknown> | undefined;
    if (hc?.type === 'http') {
      const { type: _t, path: _p, ...rest } = hc;
      service.healthCheck = { ...rest, type: 'tcp' };
      const i = features.findIndex((f) => f.startsWith('active health checks'));
      if (i >= 0) features[i] = 'active health checks (TCP connect every 2s)';
    }
    features.push(`mTLS with SPIFFE identities (instances must be ${mtls.identity})`);
  }
  if (!features.some((f) => f.includes('balancing'))) features.unshift('least_request (P2C) balancing');
  features.push('retries (2, budgeted) on connect failure, reset and 503', '5s deadline');
  return { config: { ...mesh, services: { [SERVICE]: service } }, features };
}

function failureCode(err: unknown): string {
  let e: unknown = err;
  for (let i = 0; i < 4 && e !== undefined && e !== null; i++) {
    if (isMeshError(e)) return e.code;
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return (err as Error)?.name ?? 'Error';
}

/** `  admin: <url>` when an extension (the admin server) reports a URL in the snapshot. */
function adminLine(mesh: Mesh): string {
  const admin = mesh.snapshot().extensions.admin as { url?: unknown } | undefined;
  return typeof admin?.url === 'string'
    ? `  admin page: ${admin.url} (metrics at ${admin.url}metrics)\n`
    : '';
}

/** Terminal rows `lines` take once wrapped at `columns` (ANSI colour codes take no room). */
function screenRows(lines: readonly string[], columns: number | undefined): number {
  if (columns === undefined || columns <= 0) return lines.length;
  let rows = 0;
  // biome-ignore lint/suspicious/noControlCharactersInRegex: strips ANSI escapes
  for (const l of lines) rows += Math.max(1, Math.ceil(l.replace(/\x1b\[[0-9;]*m/g, '').length / columns));
  return rows;
}

function meshState(st: EndpointState | undefined, now: number): string {
  if (!st) return 'removed';
  if (st.isEjected(now)) return 'ejected';
  if (st.activeHealth === 'unhealthy') return 'unhealthy';
  if (st.endpoint.health !== 'healthy' && st.endpoint.health !== 'unknown') return st.endpoint.health;
  return 'ok';
}

/**
 * Runs the quickstart: several instances of a small HTTP service on loopback (some faulty), a mesh
 * in front of them, and a client sending steady traffic through `mesh.fetch`. Shows a live view
 * every second and a final summary; resolves with the numbers (and exit code 0 when the client's
 * success rate met the target).
 */
export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  const durationMs = Math.max(1, options.durationSec ?? 30) * 1000;
  const rps = Math.max(1, options.rps ?? 100);
  const out = options.out ?? process.stdout;
  const color = options.color ?? out.isTTY === true;
  const view = options.view ?? (out.isTTY ? 'table' : 'lines');
  const p = paint(color);
  const random = options.random ?? Math.random;

  const backends: Backend[] = [];
  let mesh: Mesh | undefined;
  let pki: DemoPki | undefined;
  const timers: NodeJS.Timeout[] = [];
  try {
    if (options.mtls ?? true) pki = await createDemoPki();
    for (const spec of demoBackends(durationMs)) {
      backends.push(await startBackend({ ...spec, tls: pki?.serverSource }, random));
    }
    const { config, features } = demoConfig(backends, pki);
    mesh = await createMesh(config);
    await mesh.ready();
    const rt = mesh.service(SERVICE) as ServiceRuntime;

    // Warm up while every instance is healthy (connections, JIT), before the clock and the faults
    // start: a cold process would otherwise spend its first second compiling, not serving.
    for (let i = 0; i < 5; i++) {
      await Promise.all(
        backends.map(() =>
          (mesh as Mesh).fetch(`http://${SERVICE}/items/42`).then(
            (r) => r.arrayBuffer(),
            () => undefined,
          ),
        ),
      );
    }
    for (const b of backends) b.resetCounters();

    const byId = new Map<string, { backend: Backend; stats: Stats }>();
    for (const b of backends) byId.set(`${b.address}:${b.port}`, { backend: b, stats: new Stats() });
    const client = new Stats();
    const failureReasons: Record<string, number> = {};
    const retries = { allowed: 0, denied: 0 };
    const events: string[] = [];
    const loopDelay = monitorEventLoopDelay({ resolution: 10 });
    loopDelay.enable();
    const started = performance.now();
    const stamp = () => `${((performance.now() - started) / 1000).toFixed(1)}s`;
    const note = (line: string) => {
      events.push(`${stamp()} ${line}`);
      if (view === 'lines') out.write(`  ${p.dim(stamp())} ${line}\n`);
    };

    mesh.events.on('attempt', (e) => {
      byId.get(e.endpoint.id)?.stats.record(e.durationMs, e.outcome === 'success');
    });
    mesh.events.on('retry', (e) => {
      if (e.allowed) retries.allowed++;
      else retries.denied++;
    });
    mesh.events.on('ejection', (e) => {
      note(`${nameOf(e.endpoint)} ${e.ejected ? p.yellow('ejected') : p.green('returned')} (${e.reason})`);
    });
    const unhealthy = new Set<string>();
    mesh.events.on('health', (e) => {
      // The first passing checks of healthy instances are not news; failures and recoveries are.
      if (e.healthy && !unhealthy.delete(e.endpoint)) return;
      if (!e.healthy) unhealthy.add(e.endpoint);
      note(`${nameOf(e.endpoint)} ${e.healthy ? p.green('healthy') : p.yellow('unhealthy')} (${e.reason})`);
    });
    function nameOf(id: string): string {
      return byId.get(id)?.backend.name ?? id;
    }

    out.write(
      `${p.bold('meshlet quickstart')}: ${backends.length} instances of "${SERVICE}" on 127.0.0.1, ` +
        `a client sending ${rps} req/s through mesh.fetch for ${durationMs / 1000}s\n` +
        `  mesh: ${features.join(', ')}\n` +
        `  faults: ${backends
          .filter((b) => b.fault.kind !== 'none')
          .map((b) => `${b.name} ${describeFault(b.fault)}`)
          .join(', ')}\n${adminLine(mesh)}\n`,
    );

    // --- traffic ---------------------------------------------------------------------------
    let inflight = 0;
    let stopping = false;
    let onDrained: (() => void) | undefined;
    const meshRef = mesh;
    async function send(): Promise<void> {
      inflight++;
      const t0 = performance.now();
      let ok = false;
      try {
        const res = await meshRef.fetch(`http://${SERVICE}/items/42`);
        await res.arrayBuffer();
        ok = res.status === 200;
        if (!ok) failureReasons[`HTTP ${res.status}`] = (failureReasons[`HTTP ${res.status}`] ?? 0) + 1;
      } catch (err) {
        const code = failureCode(err);
        failureReasons[code] = (failureReasons[code] ?? 0) + 1;
      }
      client.record(performance.now() - t0, ok);
      inflight--;
      if (inflight === 0 && stopping) onDrained?.();
    }
    for (const b of backends) b.arm();
    for (const b of backends) {
      if (b.fault.kind === 'dies') {
        const t = setTimeout(
          () => note(`${b.name} ${p.red('killed')} (listener closed, connections reset)`),
          b.fault.afterMs,
        );
        timers.push(t);
      }
    }
    let tokens = 0;
    let last = performance.now();
    const maxInflight = Math.max(64, rps);
    timers.push(
      setInterval(() => {
        const now = performance.now();
        // At most 50ms of sends at once: when this process was stalled (a starved machine), the
        // requests it could not send are skipped rather than fired together.
        tokens = Math.min(tokens + ((now - last) * rps) / 1000, Math.max(1, rps / 20));
        last = now;
        while (tokens >= 1 && inflight < maxInflight) {
          tokens--;
          void send();
        }
      }, 5),
    );

    // --- live view -------------------------------------------------------------------------
    let drawn = 0;
    const rows = () =>
      backends.map((b) => {
        const entry = byId.get(`${b.address}:${b.port}`) as { backend: Backend; stats: Stats };
        const st = rt.endpoint(`${b.address}:${b.port}`);
        return { b, s: entry.stats, state: meshState(st, meshRef.now()), active: st?.active ?? 0 };
      });
    const header = (label: string, win: 'live' | 'total') => {
      const w = client[win];
      const total = client.total;
      const rate = total.requests === 0 ? 1 : (total.requests - total.errors) / total.requests;
      const rateText =
        rate >= DEMO_TARGET_SUCCESS_RATE ? p.green(formatPercent(rate)) : p.red(formatPercent(rate));
      return (
        `${p.bold(label)}  client: ${w.requests} req${win === 'live' ? '/s' : ''}, success ${rateText} ` +
        `(${total.requests - total.errors}/${total.requests}), p50 ${formatMs(w.percentile(50))} ` +
        `p99 ${formatMs(w.percentile(99))}, retries ${retries.allowed} (${retries.denied} refused by budget)`
      );
    };
    const table = (win: 'live' | 'total'): string[] => {
      const lines = [
        p.dim(
          `  ${'instance'.padEnd(10)}  ${'fault'.padEnd(20)}  ${(win === 'live' ? 'req/s' : 'requests').padStart(8)}  ${'errors'.padStart(6)}  ${'p50'.padStart(8)}  ${'p99'.padStart(8)}  state`,
        ),
      ];
      for (const { b, s, state } of rows()) {
        const w = s[win];
        const fault = `${describeFault(b.fault)}${b.up ? '' : ' †'}`;
        const stateText =
          !b.up && state === 'ok'
            ? p.red('down, still picked')
            : state === 'ok'
              ? p.green(state)
              : p.yellow(state);
        const errors = w.errors > 0 ? p.red(String(w.errors).padStart(6)) : String(w.errors).padStart(6);
        lines.push(
          `  ${b.name.padEnd(10)}  ${fault.padEnd(20)}  ${String(w.requests).padStart(8)}  ${errors}  ${formatMs(w.percentile(50)).padStart(8)}  ${formatMs(w.percentile(99)).padStart(8)}  ${stateText}`,
        );
      }
      return lines;
    };
    const tick = () => {
      const elapsed = Math.round((performance.now() - started) / 1000);
      if (view === 'table') {
        const lines = [
          header(`[${String(elapsed).padStart(3)}s / ${durationMs / 1000}s]`, 'live'),
          ...table('live'),
          ...events.slice(-5).map((e) => p.dim(`  ${e}`)),
        ];
        out.write(`${drawn > 0 ? `\x1b[${drawn}F\x1b[0J` : ''}${lines.join('\n')}\n`);
        drawn = screenRows(lines, (out as { columns?: number }).columns);
      } else if (view === 'lines') {
        const c = client.live;
        const parts = rows().map(({ b, s, state }) => {
          const flag = b.up
            ? state === 'ok'
              ? ''
              : ` ${state}`
            : state === 'ok'
              ? ' DOWN'
              : ` DOWN,${state}`;
          return `${b.name} ${s.live.requests}/${s.live.errors}${flag}`;
        });
        const total = client.total;
        const rate = total.requests === 0 ? 1 : (total.requests - total.errors) / total.requests;
        out.write(
          `[${String(elapsed).padStart(3)}s] ${c.requests} req/s ok ${formatPercent(rate)} ` +
            `p50 ${formatMs(c.percentile(50))} p99 ${formatMs(c.percentile(99))} retries ${retries.allowed}/${retries.denied} | ${parts.join(' | ')}\n`,
        );
      }
      client.live.reset();
      for (const { stats } of byId.values()) stats.live.reset();
    };
    timers.push(setInterval(tick, 1000));

    // --- run, then drain -------------------------------------------------------------------
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, durationMs);
      timers.push(t);
      if (options.signal) {
        if (options.signal.aborted) resolve();
        else options.signal.addEventListener('abort', () => resolve(), { once: true });
      }
    });
    stopping = true;
    for (const t of timers) clearTimeout(t);
    timers.length = 0;
    if (inflight > 0) {
      await new Promise<void>((resolve) => {
        onDrained = resolve;
        timers.push(setTimeout(resolve, 3000));
      });
    }
    const ranMs = performance.now() - started;
    loopDelay.disable();
    const maxStallMs = loopDelay.max / 1e6;

    // --- summary ---------------------------------------------------------------------------
    const total = client.total;
    const successes = total.requests - total.errors;
    const successRate = total.requests === 0 ? 0 : successes / total.requests;
    const passed = total.requests > 0 && successRate >= DEMO_TARGET_SUCCESS_RATE;
    if (view === 'table' && drawn > 0) out.write(`\x1b[${drawn}F\x1b[0J`);
    const lines = ['', header(`summary after ${(ranMs / 1000).toFixed(1)}s`, 'total'), ...table('total')];
    if (events.length > 0) lines.push(p.dim('  events:'), ...events.map((e) => p.dim(`    ${e}`)));
    const reasons = Object.entries(failureReasons).sort((a, b) => b[1] - a[1]);
    if (reasons.length > 0)
      lines.push(`  client failures: ${reasons.map(([k, v]) => `${k} ×${v}`).join(', ')}`);
    lines.push(
      passed
        ? p.green(
            `PASS: ${formatPercent(successRate)} of requests succeeded (target ${formatPercent(DEMO_TARGET_SUCCESS_RATE)}) despite the faults`,
          )
        : p.red(
            `FAIL: ${formatPercent(successRate)} of requests succeeded (target ${formatPercent(DEMO_TARGET_SUCCESS_RATE)})`,
          ),
    );
    if (!passed && maxStallMs > 1000) {
      lines.push(
        `  note: this process was starved of CPU (its event loop stalled for up to ${formatMs(maxStallMs)}); ` +
          `requests that waited longer than the 5s deadline failed whatever the mesh did`,
      );
    }
    if (!passed && retries.denied > 0) {
      lines.push(
        `  the retry budget refused ${retries.denied} retries: failing attempts outnumbered what the budget allows ` +
          `(an instance kept receiving requests after it died)`,
      );
    }
    out.write(`${lines.join('\n')}\n`);

    const now = mesh.now();
    return {
      exitCode: passed ? 0 : 1,
      durationMs: ranMs,
      requests: total.requests,
      successes,
      failures: total.errors,
      successRate,
      target: DEMO_TARGET_SUCCESS_RATE,
      p50Ms: total.percentile(50),
      p99Ms: total.percentile(99),
      retries: { ...retries },
      failureReasons: { ...failureReasons },
      features,
      eventLoopDelayMaxMs: maxStallMs,
      endpoints: backends.map((b) => {
        const id = `${b.address}:${b.port}`;
        const s = (byId.get(id) as { stats: Stats }).stats.total;
        return {
          name: b.name,
          id,
          fault: describeFault(b.fault),
          attempts: s.requests,
          errors: s.errors,
          p50Ms: s.percentile(50),
          p99Ms: s.percentile(99),
          served: b.served,
          injected: b.injected,
          up: b.up,
          state: meshState(rt.endpoint(id), now),
        };
      }),
    };
  } finally {
    for (const t of timers) clearTimeout(t);
    await mesh?.close().catch(() => {});
    await Promise.all(backends.map((b) => b.close()));
    await pki?.close();
  }
}
