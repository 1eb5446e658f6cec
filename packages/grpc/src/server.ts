import {
  type Deadline,
  experimental,
  Metadata,
  Server,
  type ServerCredentials,
  ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  type ServerOptions,
  status,
} from '@grpc/grpc-js';
import {
  CLIENT_CERT_HEADER,
  ErrorCodes,
  InboundAdmission,
  type InboundHeaders,
  type InboundOptions,
  type InboundPeer,
  type InboundRequest,
  type InboundSpan,
  inboundPorts,
  type Mesh,
  processLoad,
  runWithDeadline,
  startDraining,
} from '@meshlet/core';
import { spiffeIdOfCertificate } from './credentials.js';
import { MeshHealth } from './health.js';
import { InboundPort, listen, type OwnedConnection, ownedConnectionOf } from './inbound.js';
import { GrpcLoadReporter, serveOobReports, shedMetadata } from './load.js';

/**
 * Server keepalive defaults: ping a client after 5 minutes without activity and drop it when the
 * ack takes more than 20 s (dead peers, half-open connections).
 */
export const SERVER_KEEPALIVE_DEFAULTS: Readonly<ServerOptions> = Object.freeze({
  'grpc.keepalive_time_ms': 300_000,
  'grpc.keepalive_timeout_ms': 20_000,
});

/**
 * The interceptor's options: the inbound options every adapter takes, but the HTTP probes (see
 * `InboundOptions`): `authorizer` (denied calls end with PERMISSION_DENIED), `telemetry`, `mesh`
 * (their defaults: the mesh's policy sources and telemetry), deadlines, normalization.
 */
export type MeshServerInterceptorOptions = Omit<InboundOptions, 'livenessPath' | 'readinessPath'> & {
  /**
   * The server records per-call metrics itself (`grpc.server_call_metric_recording`): load reports
   * go into each call's grpc-js recorder instead of a trailer of meshlet's. `createMeshServer` sets
   * it from its server options.
   */
  readonly callMetricRecording?: boolean | undefined;
};

function deadlineMs(d: Deadline): number | undefined {
  const ms = d instanceof Date ? d.getTime() : d;
  return Number.isFinite(ms) ? ms : undefined;
}

function peerIp(peer: string): string | undefined {
  if (peer.startsWith('[')) return peer.slice(1, peer.indexOf(']'));
  const i = peer.lastIndexOf(':');
  return i > 0 ? peer.slice(0, i) : peer;
}

/** The caller's SPIFFE ID from the call's mTLS client certificate, if any. */
export function callPrincipal(
  call: Pick<ServerInterceptingCallInterface, 'getAuthContext'>,
): string | undefined {
  return spiffeIdOfCertificate(call.getAuthContext().sslPeerCertificate);
}

/**
 * The connection peer of a call (grpc-js gives the verified certificate only when it verified);
 * on a connection meshlet's server accepted itself, also its listener state and listening address.
 */
function callPeer(call: ServerInterceptingCallInterface, own: OwnedConnection | undefined): InboundPeer {
  const auth = call.getAuthContext();
  const info = own?.addresses ?? call.getConnectionInfo();
  const mtls = auth.transportSecurityType === 'ssl';
  return {
    remoteAddress: info.remoteAddress ?? peerIp(call.getPeer()),
    localAddress: info.localAddress,
    localPort: info.localPort,
    remotePort: info.remotePort,
    principal: spiffeIdOfCertificate(auth.sslPeerCertificate),
    mtls,
    tls: own?.tls ?? mtls,
    certificate: auth.sslPeerCertificate,
    sni: undefined,
    listenHost: own?.listenHost,
    listenPort: own?.listenPort,
    inbound: own?.state,
  };
}

/**
 * meshlet's gRPC server interceptor (grpc-js >= 1.10), glue around the inbound admission step of
 * `@meshlet/core`:
 * - **authorization**: the evaluator sees the peer's SPIFFE ID, IP, `:authority`, the method path
 *   (looked up by grpc-js exactly as received) and the metadata; a denial ends the call with
 *   PERMISSION_DENIED and details `MESHLET_ERR_FORBIDDEN: <reason>` before the handler runs;
 * - **deadline context**: the handler runs with the call's deadline (`grpc-timeout`, honoured from
 *   trusted peers only, clamped to the service's timeout) in scope, so mesh fetches and `mesh:`
 *   gRPC calls it makes never outlive it;
 * - **telemetry**: a server span and inbound metrics per call, ended with the gRPC status;
 * - **load**: every call counts in the process' load sampler and ends with its ORCA report
 *   (`endpoint-load-metrics-bin` trailer); with overload protection on, a call admitted while the
 *   event loop is behind ends at once with RESOURCE_EXHAUSTED, `retry-after` and `x-meshlet-shed`
 *   (the health service and the ORCA service are never shed).
 */
export function meshServerInterceptor(options: MeshServerInterceptorOptions = {}): ServerInterceptor {
  const admission = new InboundAdmission({ ...options, transport: 'grpc' });
  const reporter =
    admission.sampler === undefined
      ? undefined
      : new GrpcLoadReporter(admission, options.callMetricRecording === true);
  return (method, call) => {
    let deadline: number | undefined;
    let span: InboundSpan | undefined;
    let admitted: InboundRequest | undefined;
    const run = (fn: () => void): void => {
      const inner = deadline === undefined ? fn : () => runWithDeadline(deadline as number, fn);
      if (span) span.run(inner);
      else inner();
    };
    return new ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, mdNext) {
            const headers = metadata.getMap() as InboundHeaders;
            const clientCert = headers[CLIENT_CERT_HEADER] !== undefined;
            const r = admission.admitGrpc(
              method.path,
              headers,
              callPeer(call, ownedConnectionOf(metadata)),
              deadlineMs(call.getDeadline()),
              call.getHost(),
            );
            if (r.status !== 0) {
              const shed = r.shed !== undefined;
              const code = shed
                ? ErrorCodes.OVERLOADED
                : ((r.error?.code ?? ErrorCodes.BAD_REQUEST) as string);
              const grpcCode = shed
                ? status.RESOURCE_EXHAUSTED
                : r.status === 403
                  ? status.PERMISSION_DENIED
                  : r.status === 503
                    ? status.UNAVAILABLE
                    : status.INVALID_ARGUMENT;
              const md = new Metadata();
              md.set('x-meshlet-error', code);
              if (shed) shedMetadata(admission, r, md);
              r.finished(false);
              call.sendStatus({
                code: grpcCode,
                details: `${code}: ${r.decision?.reason ?? r.error?.message ?? ''}`,
                metadata: md,
              });
              // (the status goes to the next call, not through this interceptor's sendStatus)
              r.span?.end(grpcCode, r.refusalError());
              return;
            }
            // Envoy's SANITIZE: a client-supplied certificate description never reaches the handler.
            if (clientCert) metadata.remove(CLIENT_CERT_HEADER);
            deadline = r.deadline;
            span = r.span;
            admitted = r;
            run(() => mdNext(metadata));
          },
          onReceiveMessage(message, msgNext) {
            run(() => msgNext(message));
          },
          onReceiveHalfClose(hcNext) {
            run(() => hcNext());
          },
        });
      },
      sendStatus(st, stNext) {
        if (span) {
          const s = span;
          span = undefined;
          s.end(st.code, st.code === status.OK ? undefined : new Error(st.details ?? status[st.code]));
        }
        const r = admitted;
        if (r !== undefined && reporter !== undefined) {
          admitted = undefined;
          stNext(reporter.end(r, call, st));
          return;
        }
        stNext(st);
      },
    });
  };
}

/**
 * `mesh` (the Health service follows its readiness and drain), `authorizer` and `telemetry` (the
 * mesh's by default) as every inbound adapter takes them (see `InboundOptions`).
 */
export interface MeshServerOptions extends MeshServerInterceptorOptions {
  /** Add the `grpc.health.v1.Health` service (default true). */
  readonly health?: boolean;
  /**
   * Close connections after this age (ms), so clients re-resolve and rebalance (gRPC's
   * `grpc.max_connection_age_ms`); default: none.
   */
  readonly maxConnectionAgeMs?: number | undefined;
  /** Grace after `maxConnectionAgeMs` for calls in flight (default 30 s). */
  readonly maxConnectionAgeGraceMs?: number | undefined;
  /** More grpc-js server options, on top of `SERVER_KEEPALIVE_DEFAULTS`. */
  readonly serverOptions?: ServerOptions;
  /** More server interceptors, run after meshlet's (so they see the deadline context). */
  readonly interceptors?: readonly ServerInterceptor[];
}

/**
 * A grpc-js `Server` whose ports follow the mesh's inbound listeners when the control plane
 * manages them (gRFC A36: the bootstrap names a `server_listener_resource_name_template`), and a
 * plain grpc-js `Server` otherwise. `bindAsync('0.0.0.0:8080', credentials, cb)` then listens
 * itself and hands each connection to grpc-js under the filter chain it matches (see
 * `InboundPort`); the callback comes once the port is bound (port 0 is allowed: the listener is
 * named after the bound port), whether or not the listener is known yet.
 */
export class MeshGrpcServer extends Server {
  readonly #mesh: Mesh | undefined;
  readonly #ports = new Map<string, InboundPort>();

  constructor(options: ServerOptions, mesh: Mesh | undefined) {
    super(options);
    this.#mesh = mesh;
  }

  override bindAsync(
    port: string,
    creds: ServerCredentials,
    callback: (error: Error | null, port: number) => void,
  ): void {
    const mesh = this.#mesh;
    const listeners = mesh === undefined ? undefined : inboundPorts(mesh).listeners;
    if (mesh === undefined || listeners === undefined) {
      super.bindAsync(port, creds, callback);
      return;
    }
    const hp = experimental.splitHostPort(port);
    if (hp === null || hp.port === undefined) {
      process.nextTick(callback, new Error(`the listening address must be host:port, got "${port}"`), 0);
      return;
    }
    listen(hp.host, hp.port).then(
      (net) => {
        const p = new InboundPort(this, mesh, listeners, creds, net);
        this.#ports.set(p.handle.address, p);
        callback(null, (net.address() as { port: number }).port);
      },
      (err: Error) => callback(err, 0),
    );
  }

  /** The inbound listener of a port bound under one (`"0.0.0.0:8080"`, `"[::]:8080"`), if any. */
  inboundListener(address: string): InboundPort['handle'] | undefined {
    return this.#ports.get(address)?.handle;
  }

  override drain(port: string, graceTimeMs: number): void {
    const p = this.#ports.get(port);
    if (p === undefined) super.drain(port, graceTimeMs);
    else p.drain(graceTimeMs);
  }

  override unbind(port: string): void {
    const p = this.#ports.get(port);
    if (p === undefined) super.unbind(port);
    else {
      this.#ports.delete(port);
      p.close();
    }
  }

  #closePorts(): void {
    for (const p of this.#ports.values()) p.close();
    this.#ports.clear();
  }

  override tryShutdown(callback: (error?: Error) => void): void {
    this.#closePorts();
    super.tryShutdown(callback);
  }

  override forceShutdown(): void {
    this.#closePorts();
    super.forceShutdown();
  }
}

/**
 * The calls one HTTP/2 connection may have open at once (`grpc.max_concurrent_streams`, sent as
 * SETTINGS_MAX_CONCURRENT_STREAMS; `serverOptions` may set another). grpc-js sets none and turns
 * Node's session memory limit off, so without it one connection could hold any number of calls
 * open, each with up to ~150 KB of metadata (2,000 held 230 MB of the server's memory). Clients
 * queue calls beyond it; a client that does not gets those streams refused.
 */
export const SERVER_MAX_CONCURRENT_STREAMS = 1000;

/** A grpc-js `Server` with meshlet's interceptor, keepalive defaults and Health service. */
export interface MeshServer {
  readonly server: MeshGrpcServer;
  readonly health: MeshHealth | undefined;
  /** True when the server serves out-of-band load reports (`OpenRcaService`, `loadReports.oob`). */
  readonly oobLoadReports: boolean;
  /** Graceful drain (see `drainServer`). */
  drain(options?: DrainOptions): Promise<void>;
}

/** Creates a grpc-js server wired to the mesh. Add services, then `bindAsync` as usual. */
export function createMeshServer(options: MeshServerOptions = {}): MeshServer {
  const server = new MeshGrpcServer(
    {
      ...SERVER_KEEPALIVE_DEFAULTS,
      'grpc.max_concurrent_streams': SERVER_MAX_CONCURRENT_STREAMS,
      ...(options.maxConnectionAgeMs !== undefined
        ? {
            'grpc.max_connection_age_ms': options.maxConnectionAgeMs,
            'grpc.max_connection_age_grace_ms': options.maxConnectionAgeGraceMs ?? 30_000,
          }
        : {}),
      ...options.serverOptions,
      interceptors: [
        meshServerInterceptor({
          ...options,
          callMetricRecording: Boolean(options.serverOptions?.['grpc.server_call_metric_recording']),
        }),
        ...(options.interceptors ?? []),
      ],
    },
    options.mesh,
  );
  const health = options.health === false ? undefined : new MeshHealth(options.mesh);
  health?.addToServer(server);
  const oob = oobReports(server, options);
  return {
    server,
    health,
    oobLoadReports: oob !== undefined,
    drain: (o?: DrainOptions) => {
      oob?.();
      return drainServer(server, { mesh: options.mesh, health, ...o });
    },
  };
}

/** Serves out-of-band load reports when `loadReports.oob` says so (option, else `inbound.loadReports`). */
function oobReports(server: Server, options: MeshServerOptions): (() => void) | undefined {
  const given = options.loadReports;
  const configured = (options.mesh?.config.extensions.inbound as { loadReports?: unknown } | undefined)
    ?.loadReports;
  const oob =
    given === false
      ? false
      : given !== undefined
        ? given.oob === true
        : configured !== false && (configured as { oob?: boolean } | undefined)?.oob === true;
  if (!oob) return undefined;
  const remove = serveOobReports(server, processLoad());
  if (remove !== undefined) options.mesh?.onClose(remove);
  return remove;
}

export interface DrainOptions {
  readonly mesh?: Mesh | undefined;
  readonly health?: MeshHealth | undefined;
  /**
   * Time between failing readiness and closing the listener, in ms, so load balancers and
   * Kubernetes endpoints stop sending new calls first (default 0; set it to about the readiness
   * probe period, or use a preStop sleep).
   */
  readonly delayMs?: number;
  /**
   * Longest wait for calls in flight to finish before they are cancelled, in ms (default 25 s:
   * under Kubernetes' default terminationGracePeriodSeconds of 30).
   */
  readonly timeoutMs?: number;
}

/**
 * Graceful drain of a gRPC server: the Health service and readiness report NOT_SERVING first,
 * after `delayMs` the server stops accepting calls and sends GOAWAY, calls in flight finish (up to
 * `timeoutMs`, then they are cancelled), then the server stops.
 */
export async function drainServer(server: Server, options: DrainOptions = {}): Promise<void> {
  if (options.mesh) startDraining(options.mesh);
  options.health?.shutdown();
  if (options.delayMs && options.delayMs > 0) await new Promise((r) => setTimeout(r, options.delayMs));
  const timeoutMs = options.timeoutMs ?? 25_000;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, timeoutMs);
    timer.unref();
    // Watch streams would keep the server open: end them before waiting for calls.
    options.health?.close();
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
