import {
  type Deadline,
  Metadata,
  Server,
  ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  type ServerOptions,
  status,
} from '@grpc/grpc-js';
import {
  ErrorCodes,
  type InboundAuthorizer,
  type InboundHeaders,
  type InboundOptions,
  type InboundSpan,
  type InboundTelemetry,
  type Mesh,
  runWithDeadline,
  startDraining,
} from '@meshlet/core';
import { inboundTelemetry } from '@meshlet/telemetry';
import { getMeshTls } from '@meshlet/tls';
import { spiffeIdOfCertificate } from './credentials.js';
import { MeshHealth } from './health.js';

/**
 * Server keepalive defaults: ping a client after 5 minutes without activity and drop it when the
 * ack takes more than 20 s (dead peers, half-open connections).
 */
export const SERVER_KEEPALIVE_DEFAULTS: Readonly<ServerOptions> = Object.freeze({
  'grpc.keepalive_time_ms': 300_000,
  'grpc.keepalive_timeout_ms': 20_000,
});

export interface MeshServerInterceptorOptions {
  /** Authorization evaluator (`@meshlet/tls` `createAuthorizer`); denied calls end with PERMISSION_DENIED. */
  readonly authorizer?: InboundAuthorizer | undefined;
  /** Inbound metrics and server spans (`@meshlet/telemetry`). */
  readonly telemetry?: InboundTelemetry | undefined;
}

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
 * meshlet's gRPC server interceptor (grpc-js >= 1.10):
 * - **deadline context**: the handler runs with the call's deadline (from `grpc-timeout`) in
 *   scope, so mesh fetches and `mesh:` gRPC calls it makes never outlive it;
 * - **authorization**: the evaluator sees the peer's SPIFFE ID, IP, `:authority`, the method path
 *   and the metadata; a denial ends the call with PERMISSION_DENIED and details
 *   `MESHLET_ERR_FORBIDDEN: <reason>` before the handler runs;
 * - **telemetry**: a server span and inbound metrics per call, ended with the gRPC status.
 */
export function meshServerInterceptor(options: MeshServerInterceptorOptions = {}): ServerInterceptor {
  const { authorizer, telemetry } = options;
  return (method, call) => {
    const deadline = deadlineMs(call.getDeadline());
    let span: InboundSpan | undefined;
    const run = (fn: () => void): void => {
      const inner = deadline === undefined ? fn : () => runWithDeadline(deadline, fn);
      if (span) span.run(inner);
      else inner();
    };
    return new ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, mdNext) {
            const headers = metadata.getMap() as InboundHeaders;
            let principal: string | undefined;
            if (authorizer || telemetry) principal = callPrincipal(call);
            if (authorizer) {
              const info = call.getConnectionInfo();
              const decision = authorizer({
                principal,
                mtls: call.getAuthContext().transportSecurityType === 'ssl' && principal !== undefined,
                sourceIp: info.remoteAddress ?? peerIp(call.getPeer()),
                destinationPort: info.localPort,
                method: 'POST',
                path: method.path,
                host: call.getHost(),
                headers,
              });
              if (!decision.allowed) {
                const md = new Metadata();
                md.set('x-meshlet-error', ErrorCodes.FORBIDDEN);
                call.sendStatus({
                  code: status.PERMISSION_DENIED,
                  details: `${ErrorCodes.FORBIDDEN}: ${decision.reason}`,
                  metadata: md,
                });
                return;
              }
            }
            if (telemetry) {
              span = telemetry.start({
                transport: 'grpc',
                method: 'POST',
                route: method.path,
                path: method.path,
                headers,
                principal,
              });
            }
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
        stNext(st);
      },
    });
  };
}

/**
 * `mesh` (the Health service follows its readiness and drain), `authorizer` and `telemetry` (the
 * mesh's by default) as every inbound adapter takes them (see `InboundOptions`).
 */
export interface MeshServerOptions extends Pick<InboundOptions, 'mesh' | 'authorizer' | 'telemetry'> {
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

/** A grpc-js `Server` with meshlet's interceptor, keepalive defaults and Health service. */
export interface MeshServer {
  readonly server: Server;
  readonly health: MeshHealth | undefined;
  /** Graceful drain (see `drainServer`). */
  drain(options?: DrainOptions): Promise<void>;
}

/**
 * The interceptor options of `createMeshServer`: the mesh's own authorizer and telemetry unless
 * given or disabled, as the Express middleware and the Fastify plugin do (the mesh's authorizer
 * is looked up when the server is created: createMesh has installed `@meshlet/tls` by then).
 */
function serverInterceptorOptions(options: MeshServerOptions): MeshServerInterceptorOptions {
  const mesh = options.mesh;
  const telemetry =
    options.telemetry === false
      ? undefined
      : (options.telemetry ?? (mesh ? inboundTelemetry(mesh) : undefined));
  const authorizer =
    options.authorizer === false
      ? undefined
      : (options.authorizer ?? (mesh ? getMeshTls(mesh)?.authorizer : undefined));
  return { authorizer, telemetry };
}

/** Creates a grpc-js server wired to the mesh. Add services, then `bindAsync` as usual. */
export function createMeshServer(options: MeshServerOptions = {}): MeshServer {
  const server = new Server({
    ...SERVER_KEEPALIVE_DEFAULTS,
    ...(options.maxConnectionAgeMs !== undefined
      ? {
          'grpc.max_connection_age_ms': options.maxConnectionAgeMs,
          'grpc.max_connection_age_grace_ms': options.maxConnectionAgeGraceMs ?? 30_000,
        }
      : {}),
    ...options.serverOptions,
    interceptors: [meshServerInterceptor(serverInterceptorOptions(options)), ...(options.interceptors ?? [])],
  });
  const health = options.health === false ? undefined : new MeshHealth(options.mesh);
  health?.addToServer(server);
  return {
    server,
    health,
    drain: (o?: DrainOptions) => drainServer(server, { mesh: options.mesh, health, ...o }),
  };
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
