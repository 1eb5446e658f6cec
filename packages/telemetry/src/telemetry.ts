import { performance } from 'node:perf_hooks';
import {
  type CallHook,
  type InboundRequestInfo,
  type InboundSpan,
  type InboundTelemetry,
  type Mesh,
  type RequestEvent,
  setInboundTelemetry,
} from '@meshlet/core';
import {
  type Context,
  context as otelContext,
  type Span,
  type TracerProvider,
  trace,
} from '@opentelemetry/api';
import { Registry } from 'prom-client';
import { AccessLog, type AccessLogSink } from './access-log.js';
import { type AdminServer, startAdmin } from './admin.js';
import { clusters, healthSnapshot } from './admin-health.js';
import { AdminStats } from './admin-stats.js';
import {
  type AdminConfig,
  DEFAULT_ADMIN,
  DEFAULT_TELEMETRY,
  registerTelemetryConfig,
  type TelemetryConfig,
} from './config.js';
import { installed } from './installed.js';
import { MeshMetrics } from './metrics.js';
import { type AnyRegistry, MeshRegistry } from './series.js';
import {
  ClientTracing,
  type HeaderGetter,
  type HeaderRecord,
  headerGetter,
  type ServerSpanInfo,
  ServerTracing,
  TraceStash,
} from './tracing.js';

registerTelemetryConfig();

/** A registry of our own: OpenMetrics when exemplars are on (only that format carries them). */
function newRegistry(openMetrics: boolean): AnyRegistry {
  const r = new MeshRegistry();
  if (openMetrics) r.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
  return r;
}

export interface TelemetryOptions {
  /**
   * The prom-client `Registry` to register meshlet's metrics in (default: a new registry owned by
   * the mesh, served by the admin endpoint). Registering twice in one registry is safe.
   */
  registry?: AnyRegistry;
  /** The OpenTelemetry `TracerProvider` (default: the global one, a no-op until an SDK registers). */
  tracerProvider?: TracerProvider;
  /** Where access log entries go (default: JSON lines to `telemetry.accessLog.output`). */
  accessLogSink?: AccessLogSink;
  /** Overrides `telemetry` from the mesh config. */
  config?: TelemetryConfig;
  /**
   * Overrides `admin` from the mesh config (fields not given take their defaults, see
   * `DEFAULT_ADMIN`); `false` disables the admin server.
   */
  admin?: (Partial<AdminConfig> & Pick<AdminConfig, 'port'>) | false;
}

export interface ServerRequestInfo extends ServerSpanInfo {
  readonly transport?: 'http' | 'grpc' | undefined;
}

/** One inbound request being served; `end()` it exactly once. */
export class ServerRequest {
  /** The context to run the handler in (`context.with(req.context, handler)`): it holds the server span. */
  readonly context: Context;
  readonly span: Span;
  // Plain fields, not `#private` ones: this object is made per request, and V8's baseline and
  // mid-tier code define and store private fields through keyed-store IC calls (~100 instructions
  // each per request on Node 24).
  private readonly tel: ServerTelemetry;
  private readonly info: ServerRequestInfo;
  private readonly started: number;
  private ended = false;
  /**
   * Whether `run` enters `context`: false when it is the context that was active at the start
   * (`InboundSpan.entersContext`: the adapter then calls the handler itself).
   */
  readonly entersContext: boolean;

  /**
   * `enters`: false when `ctx` is the context that was active when the request started (no span to
   * carry, no caller's trace): `run` then calls the handler as it is.
   */
  constructor(tel: ServerTelemetry, info: ServerRequestInfo, span: Span, ctx: Context, enters = true) {
    this.tel = tel;
    this.info = info;
    this.span = span;
    this.context = ctx;
    this.started = performance.now();
    this.entersContext = enters;
  }

  /**
   * Runs `fn` (the handler) in `context`, the server span's (`InboundSpan.run`); as it is when
   * that is the context the request started in (entering it would change nothing).
   */
  run<R>(fn: () => R): R {
    return this.entersContext ? otelContext.with(this.context, fn) : fn();
  }

  /** Ends the request: closes the span, records server metrics and the access log line. */
  end(status: number | undefined, error?: Error, route?: string): void {
    if (this.ended) return;
    this.ended = true;
    const durationMs = performance.now() - this.started;
    const info = this.info;
    const r = route ?? info.route;
    // A route known only now (Express matches after the middleware ran): the span is named after it.
    if (route !== undefined && route !== info.route && this.span.isRecording())
      this.span.updateName(`${info.method} ${route}`);
    this.tel.tracing.end(this.span, status, error, r);
    this.tel.metrics?.recordServer(info.method, status, r ?? '', durationMs, info.transport === 'grpc');
    this.tel.adminStats?.onInbound({
      transport: info.transport ?? 'http',
      method: info.method,
      path: info.path,
      route: r,
      status,
      error,
      durationMs,
      principal: info.peerIdentity,
      client: info.clientAddress,
    });
    const log = this.tel.accessLog;
    const failed = error !== undefined || (status !== undefined && status >= 500);
    if (log?.sampled(failed)) {
      const sc = this.span.spanContext();
      const local = this.tel.mesh.config.local;
      const err = error as (Error & { code?: unknown }) | undefined;
      log.write({
        time: new Date().toISOString(),
        direction: 'inbound',
        service: local.workload,
        endpoint:
          info.clientAddress === undefined || info.clientPort === undefined
            ? info.clientAddress
            : info.clientAddress.includes(':')
              ? `[${info.clientAddress}]:${info.clientPort}`
              : `${info.clientAddress}:${info.clientPort}`,
        method: info.method,
        path: info.path,
        status,
        outcome: failed ? (error ? 'error' : 'http_error') : 'success',
        duration_ms: Math.round(durationMs * 1000) / 1000,
        attempts: 1,
        peer_identity: info.peerIdentity,
        trace_id: trace.isSpanContextValid(sc) ? sc.traceId : undefined,
        span_id: trace.isSpanContextValid(sc) ? sc.spanId : undefined,
        error: err === undefined ? undefined : typeof err.code === 'string' ? err.code : err.message,
        workload: local.workload,
        namespace: local.namespace,
        transport: info.transport ?? 'http',
        host: info.serverAddress ?? info.header('host'),
        user_agent: info.userAgent ?? info.header('user-agent'),
      });
    }
  }
}

/**
 * Inbound-side telemetry for the Express/Fastify/gRPC adapters: a SERVER span continuing the
 * caller's trace, `http_server_*` (or Istio `reporter="destination"`) metrics, and access logs.
 */
export class ServerTelemetry {
  readonly mesh: Mesh;
  readonly tracing: ServerTracing;
  readonly metrics: MeshMetrics | undefined;
  readonly accessLog: AccessLog | undefined;
  /** The admin page's recorder (inbound routes, denials), while the admin server runs. */
  adminStats: AdminStats | undefined;

  constructor(
    mesh: Mesh,
    tracing: ServerTracing,
    metrics: MeshMetrics | undefined,
    accessLog: AccessLog | undefined,
  ) {
    this.mesh = mesh;
    this.tracing = tracing;
    this.metrics = metrics;
    this.accessLog = accessLog;
  }

  start(info: ServerRequestInfo): ServerRequest {
    // ServerTracing.start in parts: no result object per request, and the request knows whether
    // its context is the one already active (then `run` need not enter it).
    const tracing = this.tracing;
    const base = otelContext.active();
    const parent = tracing.parentOf(info, base);
    const span = tracing.spanFor(info, parent);
    const ctx = tracing.contextFor(span, parent);
    return new ServerRequest(this, info, span, ctx, ctx !== base);
  }
}

/**
 * An adapter's inbound request (`InboundRequestInfo` of core) as the server side reads it: the
 * fields are read through, never copied (the admission step has settled them before telemetry
 * starts), and the header getter is made only when something asks for it (the access log).
 */
class InboundInfo implements ServerRequestInfo {
  private readonly r: InboundRequestInfo;
  constructor(r: InboundRequestInfo) {
    this.r = r;
  }
  get method(): string {
    return this.r.method;
  }
  get path(): string {
    return this.r.path;
  }
  get route(): string | undefined {
    return this.r.route;
  }
  get peerIdentity(): string | undefined {
    return this.r.principal;
  }
  get transport(): 'http' | 'grpc' {
    return this.r.transport;
  }
  get headers(): HeaderRecord {
    return this.r.headers;
  }
  get header(): HeaderGetter {
    return headerGetter(this.r.headers);
  }
}

/** Everything telemetry attaches to one mesh. */
export class MeshTelemetry {
  readonly mesh: Mesh;
  readonly config: TelemetryConfig;
  readonly registry: AnyRegistry;
  readonly metrics: MeshMetrics | undefined;
  readonly accessLog: AccessLog | undefined;
  /**
   * Client spans and trace propagation for every transport's calls: core's outbound observer,
   * installed on the mesh (`Mesh.setCallHook`) by `installTelemetry`. Undefined with tracing off.
   */
  readonly requestHook: CallHook | undefined;
  readonly server: ServerTelemetry;
  /**
   * The inbound side as server adapters see it (`InboundTelemetry` of `@meshlet/core`): installing
   * telemetry on a mesh plugs this into the mesh's inbound ports.
   */
  readonly inbound: InboundTelemetry;
  admin: AdminServer | undefined;
  /** What the admin page shows beyond the mesh's state (recent latencies, outcomes, inbound). */
  adminStats: AdminStats | undefined;
  readonly #stash = new TraceStash();
  readonly #unsubscribe: () => void;
  #closed = false;

  constructor(mesh: Mesh, options: TelemetryOptions = {}) {
    this.mesh = mesh;
    const config =
      options.config ??
      (mesh.config.extensions.telemetry as TelemetryConfig | undefined) ??
      DEFAULT_TELEMETRY;
    this.config = config;
    this.registry = options.registry ?? newRegistry(config.metrics.exemplars);
    this.metrics = config.metrics.enabled
      ? new MeshMetrics(mesh, this.registry, config.metrics, this.#stash)
      : undefined;
    this.accessLog = config.accessLog.enabled
      ? new AccessLog(mesh, config.accessLog, options.accessLogSink)
      : undefined;
    const provider = options.tracerProvider ?? trace.getTracerProvider();
    this.requestHook = config.tracing.enabled
      ? new ClientTracing(provider, config.tracing, this.#stash)
      : undefined;
    this.server = new ServerTelemetry(
      mesh,
      new ServerTracing(provider, config.tracing),
      this.metrics,
      this.accessLog,
    );

    const server = this.server;
    this.inbound = {
      // The span is the telemetry's own ServerRequest, over a view of the adapter's request (no
      // copy of its fields, no header getter made unless the access log asks for one).
      start: (info: InboundRequestInfo): InboundSpan => server.start(new InboundInfo(info)),
    };
    const metrics = this.metrics;
    const log = this.accessLog;
    const stash = this.#stash;
    // Calls through core's call listener (the values of the `request` event, no event object):
    // the call's observer (tracing) has just put its trace ids in the stash.
    this.#unsubscribe =
      metrics === undefined && log === undefined
        ? () => {}
        : mesh.addCallListener({
            callEnd: (call, durationMs, outcome, status, attempts, endpoint, error) => {
              const service = call.service.name;
              try {
                stash.check(service);
                metrics?.onCall(service, call.method, call.path, durationMs, outcome, status, call.transport);
                // The line's fields are gathered only for a request sampling keeps.
                if (log?.sampled(outcome !== 'success')) {
                  const e: RequestEvent = {
                    service,
                    method: call.method,
                    path: call.path,
                    durationMs,
                    outcome,
                    status,
                    attempts,
                    endpoint,
                    error,
                    transport: call.transport,
                  };
                  log.writeRequest(e, stash);
                }
              } finally {
                stash.clear();
              }
            },
          });
  }

  /** Reports a certificate's expiry (`meshlet_certificate_expiry_timestamp_seconds`). */
  setCertificateExpiry(name: string, notAfter: Date, identity = ''): void {
    this.metrics?.setCertificateExpiry(name, notAfter, identity);
  }

  /** Prometheus exposition of the registry (what `/metrics` serves). */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe();
    if (this.requestHook !== undefined && this.mesh.hooks.callHook === this.requestHook)
      this.mesh.setCallHook(undefined);
    this.metrics?.close();
    this.adminStats?.close();
    this.server.adminStats = undefined;
    await this.admin?.close();
    await this.accessLog?.close();
    if (installed.get(this.mesh) === this) {
      installed.delete(this.mesh);
      setInboundTelemetry(this.mesh, undefined);
    }
  }
}

/**
 * Attaches metrics, tracing (the mesh's outbound call hook: client spans and trace propagation for
 * every transport), access logs and (when `admin` is configured) the admin server to a mesh.
 * Idempotent per mesh. Closes with the mesh.
 */
export async function installTelemetry(mesh: Mesh, options: TelemetryOptions = {}): Promise<MeshTelemetry> {
  const existing = installed.get(mesh);
  if (existing) return existing;
  const tel = new MeshTelemetry(mesh, options);
  installed.set(mesh, tel);
  if (tel.requestHook !== undefined) mesh.setCallHook(tel.requestHook);
  setInboundTelemetry(mesh, tel.inbound);
  mesh.onClose(() => tel.close());
  const adminConfig: AdminConfig | undefined =
    options.admin === false
      ? undefined
      : options.admin !== undefined
        ? { ...DEFAULT_ADMIN, ...options.admin }
        : (mesh.config.extensions.admin as AdminConfig | undefined);
  if (adminConfig !== undefined) {
    const stats = new AdminStats(mesh);
    tel.adminStats = stats;
    tel.server.adminStats = stats;
    try {
      tel.admin = await startAdmin(mesh, tel, adminConfig);
    } catch (err) {
      await tel.close();
      throw err;
    }
    // The admin page's verdicts, in `snapshot()` and so in `/config_dump` too.
    mesh.addSnapshotSection('admin', () => ({
      url: tel.admin?.url,
      refusedConnections: tel.admin?.refusedConnections ?? 0,
      ...healthSnapshot(clusters(mesh, tel)),
    }));
  }
  return tel;
}
