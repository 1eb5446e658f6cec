import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { type Client, status as grpcStatus } from '@grpc/grpc-js';
import { type EndpointState, isMeshError, runWithDeadline, type ServiceRuntime } from '@meshlet/core';
import { getTelemetry } from '@meshlet/telemetry';
import { getMeshTls } from '@meshlet/tls';
import { createMesh, type Mesh } from 'meshlet';
import { paint } from 'meshlet/cli';
import {
  type Backend,
  type BackendSpec,
  catalogClient,
  type DemoService,
  describeFault,
  getItem,
  SERVICE_KIND,
  startBackend,
} from './backend.js';
import { createDemoPki, type DemoPki, spiffeIdOf } from './pki.js';
import { formatMs, formatPercent, Stats } from './stats.js';

/** The service level the demo promises: the client's success rate over the whole run. */
export const DEMO_TARGET_SUCCESS_RATE = 0.999;
/** The load driver's workload name (its SPIFFE ID ends in `/sa/client`). */
const CLIENT = 'client';
const SERVICES: readonly DemoService[] = ['frontend', 'catalog', 'reviews'];
/** The deadline of each of the client's requests (the frontend's upstream timeouts are longer). */
const CLIENT_DEADLINE_MS = 4000;

export interface DemoOptions {
  /** Length of the run in seconds (default 30). */
  durationSec?: number;
  /** Requests per second the client sends to the frontend (default 100). */
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
   * mTLS on every hop (default true): a development CA issues a SPIFFE certificate to each
   * workload (client, frontend, catalog, reviews) into a temporary directory, every server
   * requires client certificates, every mesh checks the SPIFFE ID of the service it calls, and
   * each service's authorization policy admits only its one caller.
   */
  mtls?: boolean;
}

export interface DemoEndpointResult {
  readonly name: string;
  readonly service: DemoService;
  readonly id: string;
  readonly fault: string;
  /** Attempts the calling mesh sent to the instance and how many of them failed (mesh view). */
  readonly attempts: number;
  readonly errors: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Requests the instance answered and how many got an injected error (instance view). */
  readonly served: number;
  readonly injected: number;
  readonly up: boolean;
  /** The calling mesh's view at the end: `ok`, `ejected`, `unhealthy`, … */
  readonly state: string;
}

/** One hop of the topology as its caller's mesh saw it (logical requests, after retries). */
export interface DemoHopResult {
  readonly from: string;
  readonly to: DemoService;
  readonly transport: 'http' | 'grpc';
  readonly requests: number;
  readonly failures: number;
  readonly retries: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
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
  /** Retries decided by all the meshes, and those the retry budgets refused. */
  readonly retries: { readonly allowed: number; readonly denied: number };
  /** Client-side failures by cause (`MESHLET_ERR_CONNECT`, `HTTP 502`, …). */
  readonly failureReasons: Readonly<Record<string, number>>;
  /** The mesh features the run used. */
  readonly features: readonly string[];
  /** The longest event-loop stall of the run (a starved machine shows here). */
  readonly eventLoopDelayMaxMs: number;
  readonly hops: readonly DemoHopResult[];
  /**
   * Inbound requests each service's own mesh recorded (its `http_server_requests_total`, from the
   * Express middleware, the Fastify plugin and the gRPC server interceptor).
   */
  readonly inbound: Readonly<Record<DemoService, number>>;
  /**
   * Median milliseconds of the client's deadline left when each service started on a request:
   * the deadline travels client -> frontend (`x-meshlet-deadline-ms`) -> catalog (`grpc-timeout`)
   * and reviews (`x-meshlet-deadline-ms`), shrinking on the way.
   */
  readonly deadlineLeftMs: Readonly<Record<DemoService, number>>;
  /**
   * With mTLS: what the client got when it called catalog and reviews directly, bypassing the
   * frontend (their authorization policies admit only the frontend's SPIFFE ID).
   */
  readonly authorization: { readonly catalog: string; readonly reviews: string } | undefined;
  readonly endpoints: readonly DemoEndpointResult[];
}

/** The instances the demo starts: per service, which fault each injects. */
export function demoBackends(durationMs: number): BackendSpec[] {
  return [
    { name: 'frontend-1', service: 'frontend', fault: { kind: 'none' } },
    { name: 'frontend-2', service: 'frontend', fault: { kind: 'none' } },
    { name: 'catalog-1', service: 'catalog', fault: { kind: 'none' } },
    { name: 'catalog-2', service: 'catalog', fault: { kind: 'none' } },
    { name: 'catalog-3', service: 'catalog', fault: { kind: 'slow', delayMs: 120, jitterMs: 40 } },
    { name: 'reviews-1', service: 'reviews', fault: { kind: 'none' } },
    { name: 'reviews-2', service: 'reviews', fault: { kind: 'flaky', rate: 0.1 } },
    { name: 'reviews-3', service: 'reviews', fault: { kind: 'none' } },
    {
      name: 'reviews-4',
      service: 'reviews',
      fault: { kind: 'dies', afterMs: Math.max(1000, Math.round(durationMs * 0.3)) },
    },
  ];
}

const OUTLIER_DETECTION = {
  consecutive5xx: 5,
  consecutiveGatewayFailure: 5,
  interval: '2s',
  baseEjectionTime: '10s',
  maxEjectionPercent: 40,
};

function healthCheck(http: boolean): Record<string, unknown> {
  const common = {
    interval: '2s',
    jitter: '200ms',
    timeout: '2s',
    unhealthyThreshold: 3,
    healthyThreshold: 2,
  };
  return http ? { type: 'http', path: '/healthz', ...common } : { type: 'tcp', ...common };
}

/** Only `caller` may call the service (Istio AuthorizationPolicy semantics). */
function onlyFrom(service: string, caller: string): Record<string, unknown> {
  return {
    mode: 'STRICT',
    policies: [
      {
        name: `${service}-callers`,
        action: 'ALLOW',
        rules: [{ from: [{ source: { principals: [spiffeIdOf(caller)] } }] }],
      },
    ],
  };
}

type Addresses = Readonly<Record<DemoService, readonly string[]>>;

/**
 * The meshes of the demo, one per workload as in a real deployment: the client's (calls
 * frontend), the frontend's (serves the client, calls catalog over gRPC and reviews over HTTP),
 * and those of catalog and reviews (serve the frontend). `addresses` are the instances' endpoints.
 */
export function demoConfigs(
  addresses: Partial<Addresses>,
  pki?: Pick<DemoPki, 'dirOf'>,
): Record<typeof CLIENT | DemoService, Record<string, unknown>> {
  const mtls = pki !== undefined;
  const upstream = (service: DemoService, extra: Record<string, unknown>): Record<string, unknown> => ({
    endpoints: [...(addresses[service] ?? [])],
    lb: 'peak_ewma',
    outlierDetection: OUTLIER_DETECTION,
    healthCheck: healthCheck(!mtls && SERVICE_KIND[service].transport === 'http'),
    ...(mtls ? { identity: spiffeIdOf(service) } : {}),
    ...extra,
  });
  const httpRetry = { attempts: 2, on: ['connect-failure', 'reset', 'refused-stream', 503] };
  const serverSide = (service: DemoService, caller: string): Record<string, unknown> => ({
    local: { workload: service, namespace: 'demo' },
    ...(mtls
      ? { tls: { dir: pki.dirOf(service) }, authorization: onlyFrom(service, caller) }
      : // Without mTLS no caller is a mesh peer: deadline headers count only from listed networks.
        { inbound: { deadlines: { trustedNetworks: ['127.0.0.0/8', '::1'] } } }),
  });
  return {
    client: {
      local: { workload: CLIENT, namespace: 'demo' },
      ...(mtls ? { tls: { dir: pki.dirOf(CLIENT) } } : {}),
      services: {
        frontend: upstream('frontend', { timeout: '5s', retry: httpRetry }),
        // Only for the authorization probe: the client calling them directly is refused.
        ...(mtls
          ? {
              catalog: {
                endpoints: [...(addresses.catalog ?? [])],
                identity: spiffeIdOf('catalog'),
                retry: false,
              },
              reviews: {
                endpoints: [...(addresses.reviews ?? [])],
                identity: spiffeIdOf('reviews'),
                retry: false,
              },
            }
          : {}),
      },
    },
    frontend: {
      ...serverSide('frontend', CLIENT),
      admin: { port: 0, host: '127.0.0.1' },
      services: {
        // gRPC: retried on UNAVAILABLE (meshlet's default codes) within the retry budget.
        catalog: upstream('catalog', { timeout: '5s', retry: { attempts: 2 } }),
        // Three retries: reviews has two faulty instances, and a retry avoids only the endpoint of
        // the attempt just before it (dead -> flaky -> dead is possible with two).
        reviews: upstream('reviews', { timeout: '5s', retry: { ...httpRetry, attempts: 3 } }),
      },
    },
    catalog: serverSide('catalog', 'frontend'),
    reviews: serverSide('reviews', 'frontend'),
  };
}

function demoFeatures(mtls: boolean): string[] {
  return [
    'peak_ewma balancing on every hop',
    'budgeted retries (HTTP: connect failure, reset, 503; gRPC: UNAVAILABLE)',
    'outlier ejection (5 consecutive failures)',
    `active health checks (${mtls ? 'TCP connect' : 'GET /healthz on HTTP, TCP on gRPC'} every 2s)`,
    `deadline propagation (${CLIENT_DEADLINE_MS / 1000}s from the client, carried hop to hop)`,
    'inbound telemetry, health and readiness on Express, Fastify and gRPC',
    ...(mtls
      ? ['mTLS with SPIFFE identities on every hop', 'authorization: each service admits only its caller']
      : []),
  ];
}

function failureCode(err: unknown): string {
  let e: unknown = err;
  for (let i = 0; i < 4 && e !== undefined && e !== null; i++) {
    if (isMeshError(e)) return e.code;
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    if (typeof code === 'number') return grpcStatus[code] ?? String(code);
    e = (e as { cause?: unknown }).cause;
  }
  return (err as Error)?.name ?? 'Error';
}

/** `  admin: <url>` when an extension (the admin server) reports a URL in the snapshot. */
function adminLine(mesh: Mesh, label: string): string {
  const admin = mesh.snapshot().extensions.admin as { url?: unknown } | undefined;
  return typeof admin?.url === 'string'
    ? `  admin page of ${label}: ${admin.url} (metrics at ${admin.url}metrics)\n`
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
  if (st.activeHealth === 'unhealthy' || st.unreachable > 0) return 'unhealthy';
  if (st.endpoint.health !== 'healthy' && st.endpoint.health !== 'unknown') return st.endpoint.health;
  return 'ok';
}

/** Sum of a counter family in a Prometheus text exposition. */
function counterSum(exposition: string, name: string): number {
  let sum = 0;
  for (const line of exposition.split('\n')) {
    if (!line.startsWith(name) || (line[name.length] !== '{' && line[name.length] !== ' ')) continue;
    const v = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (Number.isFinite(v)) sum += v;
  }
  return sum;
}

function median(values: readonly number[]): number {
  if (values.length === 0) return -1;
  const s = [...values].sort((a, b) => a - b);
  return s[s.length >> 1] as number;
}

interface Hop {
  readonly from: string;
  readonly to: DemoService;
  readonly transport: 'http' | 'grpc';
  readonly stats: Stats;
  retries: number;
}

/** What a direct call from the client to a service it may not call ended with. */
async function probeAuthorization(
  client: Mesh,
  catalog: Client,
): Promise<{ catalog: string; reviews: string }> {
  let reviews: string;
  try {
    const res = await client.fetch('http://reviews/reviews/42');
    const body = (await res.json().catch(() => ({}))) as { error?: { code?: unknown } };
    reviews = `HTTP ${res.status}${typeof body.error?.code === 'string' ? ` ${body.error.code}` : ''}`;
  } catch (err) {
    reviews = failureCode(err);
  }
  let cat: string;
  try {
    await getItem(catalog, 42);
    cat = 'OK';
  } catch (err) {
    cat = failureCode(err);
  }
  return { catalog: cat, reviews };
}

/**
 * Runs the quickstart: a small topology on loopback — a `frontend` (Express) that calls `catalog`
 * (gRPC) and `reviews` (Fastify) for every request, several instances of each, some faulty — each
 * service with its own mesh on both sides of every call, and a client sending steady traffic to
 * the frontend through its mesh. Shows a live view every second and a final summary; resolves with
 * the numbers (exit code 0 when the client's success rate met the target).
 */
export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  const durationMs = Math.max(1, options.durationSec ?? 30) * 1000;
  const rps = Math.max(1, options.rps ?? 100);
  const out = options.out ?? process.stdout;
  const color = options.color ?? out.isTTY === true;
  const view = options.view ?? (out.isTTY ? 'table' : 'lines');
  const p = paint(color);
  const random = options.random ?? Math.random;
  const mtls = options.mtls ?? true;

  const backends: Backend[] = [];
  const meshes: Mesh[] = [];
  const clients: Client[] = [];
  let pki: DemoPki | undefined;
  const timers: NodeJS.Timeout[] = [];
  try {
    if (mtls) pki = await createDemoPki([CLIENT, ...SERVICES]);
    const specs = demoBackends(durationMs);
    const addresses: Record<DemoService, string[]> = { frontend: [], catalog: [], reviews: [] };
    const meshOf = {} as Record<typeof CLIENT | DemoService, Mesh>;
    const open = async (name: typeof CLIENT | DemoService): Promise<Mesh> => {
      const m = await createMesh(demoConfigs(addresses, pki)[name]);
      meshes.push(m);
      await m.ready();
      meshOf[name] = m;
      return m;
    };
    // Leaves first: each service's mesh (its certificate, its authorization policy), then its
    // instances; the frontend's mesh once catalog and reviews have addresses; the client's last.
    for (const service of ['catalog', 'reviews', 'frontend'] as const) {
      const mesh = await open(service);
      const catalog = service === 'frontend' ? catalogClient('mesh://frontend/catalog') : undefined;
      if (catalog) clients.push(catalog);
      for (const spec of specs.filter((s) => s.service === service)) {
        const b = await startBackend(spec, { mesh, tls: getMeshTls(mesh)?.meshSource, catalog, random });
        backends.push(b);
        addresses[service].push(b.id);
      }
    }
    const client = await open(CLIENT);
    const frontendMesh = meshOf.frontend;
    const features = demoFeatures(mtls);

    // Warm up while every instance is healthy (connections, JIT), before the clock and the faults
    // start: a cold process would otherwise spend its first second compiling, not serving.
    for (let i = 0; i < 5; i++) {
      await Promise.all(
        backends.map(() =>
          client.fetch('http://frontend/product/42').then(
            (r) => r.arrayBuffer(),
            () => undefined,
          ),
        ),
      );
    }
    let authorization: { catalog: string; reviews: string } | undefined;
    if (mtls) {
      const direct = catalogClient('mesh://client/catalog');
      clients.push(direct);
      authorization = await probeAuthorization(client, direct);
    }
    for (const b of backends) b.resetCounters();
    const inboundAtStart = await inboundCounts(meshOf);

    const byId = new Map<string, { backend: Backend; stats: Stats }>();
    for (const b of backends) byId.set(b.id, { backend: b, stats: new Stats() });
    const hops: Hop[] = [
      { from: CLIENT, to: 'frontend', transport: 'http', stats: new Stats(), retries: 0 },
      { from: 'frontend', to: 'catalog', transport: 'grpc', stats: new Stats(), retries: 0 },
      { from: 'frontend', to: 'reviews', transport: 'http', stats: new Stats(), retries: 0 },
    ];
    const hopOf = (from: Mesh, service: string): Hop | undefined =>
      from === client ? (service === 'frontend' ? hops[0] : undefined) : hops.find((h) => h.to === service);
    const clientStats = new Stats();
    const failureReasons: Record<string, number> = {};
    const retries = { allowed: 0, denied: 0 };
    const deadlines: Record<DemoService, number[]> = { frontend: [], catalog: [], reviews: [] };
    const events: string[] = [];
    const loopDelay = monitorEventLoopDelay({ resolution: 10 });
    loopDelay.enable();
    const started = performance.now();
    const stamp = () => `${((performance.now() - started) / 1000).toFixed(1)}s`;
    const note = (line: string) => {
      events.push(`${stamp()} ${line}`);
      if (view === 'lines') out.write(`  ${p.dim(stamp())} ${line}\n`);
    };
    function nameOf(id: string): string {
      return byId.get(id)?.backend.name ?? id;
    }
    const unhealthy = new Set<string>();
    for (const m of [client, frontendMesh]) {
      m.events.on('attempt', (e) => {
        byId.get(e.endpoint.id)?.stats.record(e.durationMs, e.outcome === 'success');
      });
      m.events.on('request', (e) => {
        hopOf(m, e.service)?.stats.record(e.durationMs, e.outcome === 'success');
      });
      m.events.on('retry', (e) => {
        const hop = hopOf(m, e.service);
        if (!hop) return;
        if (e.allowed) {
          retries.allowed++;
          hop.retries++;
        } else retries.denied++;
      });
      m.events.on('ejection', (e) => {
        if (!hopOf(m, e.service)) return;
        note(`${nameOf(e.endpoint)} ${e.ejected ? p.yellow('ejected') : p.green('returned')} (${e.reason})`);
      });
      m.events.on('health', (e) => {
        if (!hopOf(m, e.service)) return;
        // The first passing checks of healthy instances are not news; failures and recoveries are.
        if (e.healthy && !unhealthy.delete(e.endpoint)) return;
        if (!e.healthy) unhealthy.add(e.endpoint);
        note(`${nameOf(e.endpoint)} ${e.healthy ? p.green('healthy') : p.yellow('unhealthy')} (${e.reason})`);
      });
    }

    const count = (s: DemoService) => specs.filter((b) => b.service === s).length;
    out.write(
      `${p.bold('meshlet quickstart')}: client -> frontend (${count('frontend')}x Express) -> ` +
        `catalog (${count('catalog')}x gRPC) + reviews (${count('reviews')}x Fastify) on 127.0.0.1, ` +
        `${rps} req/s for ${durationMs / 1000}s, every hop through the mesh\n` +
        `  mesh: ${features.join(', ')}\n` +
        `  faults: ${backends
          .filter((b) => b.fault.kind !== 'none')
          .map((b) => `${b.name} ${describeFault(b.fault)}`)
          .join(', ')}\n` +
        (authorization
          ? `  authorization: client -> catalog directly: ${authorization.catalog}; ` +
            `client -> reviews directly: ${authorization.reviews} (only the frontend may call them)\n`
          : '') +
        `${adminLine(frontendMesh, 'frontend')}\n`,
    );

    // --- traffic ---------------------------------------------------------------------------
    let inflight = 0;
    let stopping = false;
    let onDrained: (() => void) | undefined;
    async function send(): Promise<void> {
      inflight++;
      const t0 = performance.now();
      let ok = false;
      try {
        // Each client request has a deadline (4s): the frontend is told (x-meshlet-deadline-ms) and
        // passes what is left on to catalog (grpc-timeout) and reviews.
        const res = await runWithDeadline(Date.now() + CLIENT_DEADLINE_MS, () =>
          client.fetch('http://frontend/product/42'),
        );
        ok = res.status === 200;
        if (ok) {
          const body = (await res.json()) as { deadlineLeftMs?: Partial<Record<DemoService, number>> };
          for (const s of SERVICES) {
            const v = body.deadlineLeftMs?.[s];
            if (typeof v === 'number' && v >= 0 && deadlines[s].length < 100_000) deadlines[s].push(v);
          }
        } else {
          const body = (await res.json().catch(() => ({}))) as { error?: unknown };
          const why = `HTTP ${res.status}${typeof body.error === 'string' ? ` ${body.error}` : ''}`;
          failureReasons[why] = (failureReasons[why] ?? 0) + 1;
        }
      } catch (err) {
        const code = failureCode(err);
        failureReasons[code] = (failureReasons[code] ?? 0) + 1;
      }
      clientStats.record(performance.now() - t0, ok);
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
    const runtimeOf = (b: Backend): ServiceRuntime | undefined =>
      (b.service === 'frontend' ? client : frontendMesh).service(b.service);
    const rows = () =>
      backends.map((b) => {
        const entry = byId.get(b.id) as { backend: Backend; stats: Stats };
        const st = runtimeOf(b)?.endpoint(b.id);
        return { b, s: entry.stats, state: meshState(st, frontendMesh.now()) };
      });
    const header = (label: string, win: 'live' | 'total') => {
      const w = clientStats[win];
      const total = clientStats.total;
      const rate = total.requests === 0 ? 1 : (total.requests - total.errors) / total.requests;
      const rateText =
        rate >= DEMO_TARGET_SUCCESS_RATE ? p.green(formatPercent(rate)) : p.red(formatPercent(rate));
      return (
        `${p.bold(label)}  client: ${w.requests} req${win === 'live' ? '/s' : ''}, success ${rateText} ` +
        `(${total.requests - total.errors}/${total.requests}), p50 ${formatMs(w.percentile(50))} ` +
        `p99 ${formatMs(w.percentile(99))}, retries ${retries.allowed} (${retries.denied} refused by budget)`
      );
    };
    const hopLabel = (h: Hop) => `${h.from} -> ${h.to} (${h.transport === 'grpc' ? 'gRPC' : 'HTTP'})`;
    const table = (win: 'live' | 'total'): string[] => {
      const unit = (win === 'live' ? 'req/s' : 'requests').padStart(8);
      const lines = [
        p.dim(
          `  ${'hop'.padEnd(28)}  ${unit}  ${'errors'.padStart(6)}  ${'retries'.padStart(7)}  ${'p50'.padStart(8)}  ${'p99'.padStart(8)}`,
        ),
      ];
      for (const h of hops) {
        const w = h.stats[win];
        const errors = w.errors > 0 ? p.red(String(w.errors).padStart(6)) : String(w.errors).padStart(6);
        lines.push(
          `  ${hopLabel(h).padEnd(28)}  ${String(w.requests).padStart(8)}  ${errors}  ${String(h.retries).padStart(7)}  ${formatMs(w.percentile(50)).padStart(8)}  ${formatMs(w.percentile(99)).padStart(8)}`,
        );
      }
      lines.push(
        p.dim(
          `  ${'instance'.padEnd(10)}  ${'server'.padEnd(7)}  ${'fault'.padEnd(18)}  ${unit}  ${'errors'.padStart(6)}  ${'p50'.padStart(8)}  ${'p99'.padStart(8)}  state`,
        ),
      );
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
          `  ${b.name.padEnd(10)}  ${SERVICE_KIND[b.service].framework.padEnd(7)}  ${fault.padEnd(18)}  ${String(w.requests).padStart(8)}  ${errors}  ${formatMs(w.percentile(50)).padStart(8)}  ${formatMs(w.percentile(99)).padStart(8)}  ${stateText}`,
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
        const c = clientStats.live;
        const hopParts = hops
          .slice(1)
          .map(
            (h) =>
              `${h.to} ${h.stats.live.requests}/${h.stats.live.errors} p99 ${formatMs(h.stats.live.percentile(99))}`,
          );
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
        const total = clientStats.total;
        const rate = total.requests === 0 ? 1 : (total.requests - total.errors) / total.requests;
        out.write(
          `[${String(elapsed).padStart(3)}s] ${c.requests} req/s ok ${formatPercent(rate)} ` +
            `p50 ${formatMs(c.percentile(50))} p99 ${formatMs(c.percentile(99))} retries ${retries.allowed}/${retries.denied} ` +
            `| ${hopParts.join(' | ')} || ${parts.join(' | ')}\n`,
        );
      }
      clientStats.live.reset();
      for (const h of hops) h.stats.live.reset();
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
    const inboundAtEnd = await inboundCounts(meshOf);
    const inbound = {} as Record<DemoService, number>;
    const deadlineLeftMs = {} as Record<DemoService, number>;
    for (const s of SERVICES) {
      inbound[s] = inboundAtEnd[s] - inboundAtStart[s];
      deadlineLeftMs[s] = median(deadlines[s]);
    }

    // --- summary ---------------------------------------------------------------------------
    const total = clientStats.total;
    const successes = total.requests - total.errors;
    const successRate = total.requests === 0 ? 0 : successes / total.requests;
    const passed = total.requests > 0 && successRate >= DEMO_TARGET_SUCCESS_RATE;
    if (view === 'table' && drawn > 0) out.write(`\x1b[${drawn}F\x1b[0J`);
    const lines = ['', header(`summary after ${(ranMs / 1000).toFixed(1)}s`, 'total'), ...table('total')];
    lines.push(
      `  inbound requests recorded by each service's own mesh: ${SERVICES.map((s) => `${s} ${inbound[s]}`).join(', ')}`,
      `  deadline left when a service started on a request (median): client ${CLIENT_DEADLINE_MS}ms -> ` +
        `frontend ${deadlineLeftMs.frontend}ms -> catalog ${deadlineLeftMs.catalog}ms, reviews ${deadlineLeftMs.reviews}ms`,
    );
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
          `requests that waited longer than the ${CLIENT_DEADLINE_MS / 1000}s deadline failed whatever the mesh did`,
      );
    }
    if (!passed && retries.denied > 0) {
      lines.push(
        `  the retry budgets refused ${retries.denied} retries: failing attempts outnumbered what a budget allows ` +
          `(an instance kept receiving requests after it died)`,
      );
    }
    out.write(`${lines.join('\n')}\n`);

    const now = frontendMesh.now();
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
      hops: hops.map((h) => ({
        from: h.from,
        to: h.to,
        transport: h.transport,
        requests: h.stats.total.requests,
        failures: h.stats.total.errors,
        retries: h.retries,
        p50Ms: h.stats.total.percentile(50),
        p99Ms: h.stats.total.percentile(99),
      })),
      inbound,
      deadlineLeftMs,
      authorization,
      endpoints: backends.map((b) => {
        const s = (byId.get(b.id) as { stats: Stats }).stats.total;
        return {
          name: b.name,
          service: b.service,
          id: b.id,
          fault: describeFault(b.fault),
          attempts: s.requests,
          errors: s.errors,
          p50Ms: s.percentile(50),
          p99Ms: s.percentile(99),
          served: b.served,
          injected: b.injected,
          up: b.up,
          state: meshState(runtimeOf(b)?.endpoint(b.id), now),
        };
      }),
    };
  } finally {
    for (const t of timers) clearTimeout(t);
    for (const c of clients) c.close();
    // Callers before callees, as a deployment would stop them.
    for (const m of [...meshes].reverse()) await m.close().catch(() => {});
    await Promise.all(backends.map((b) => b.close()));
    await pki?.close();
  }
}

/** Inbound requests recorded so far by each service's mesh telemetry. */
async function inboundCounts(
  meshOf: Readonly<Record<DemoService, Mesh>>,
): Promise<Record<DemoService, number>> {
  const counts = {} as Record<DemoService, number>;
  for (const s of SERVICES) {
    const tel = getTelemetry(meshOf[s]);
    counts[s] = tel ? counterSum((await tel.scrape()).body, 'http_server_requests_total') : 0;
  }
  return counts;
}
