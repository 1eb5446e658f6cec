import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ErrorCodes, type Mesh, MeshError } from '@meshlet/core';
import { ADMIN_PAGE } from './admin-page.js';
import type { AdminConfig } from './config.js';
import { ENDPOINT_STATES, type ServiceStats } from './metrics.js';

/** What the admin server reads from telemetry (kept narrow to avoid a module cycle). */
export interface AdminSource {
  scrape(): Promise<{ contentType: string; body: string }>;
  readonly metrics: { stats(service: string): ServiceStats | undefined } | undefined;
}

export interface AdminServer {
  /** The bound address (`port` is the real one when 0 was configured). */
  readonly address: { host: string; port: number };
  /** `http://host:port/`. */
  readonly url: string;
  close(): Promise<void>;
}

export interface ClusterEndpoint {
  id: string;
  address: string;
  port: number;
  weight: number;
  priority: number;
  zone: string;
  /** One of healthy, unknown, degraded, draining, unhealthy, ejected. */
  state: string;
  discoveryHealth: string;
  activeHealth: string;
  ejected: boolean;
  ejectionCount: number;
  active: number;
  ewmaMs: number;
  attempts: number;
  failures: number;
}

export interface ClusterService {
  name: string;
  lb: string;
  panic: boolean;
  breaker: string;
  discovery: {
    type: string;
    version: string | undefined;
    lastUpdate: string | undefined;
    lastError: string | undefined;
  };
  stats: ServiceStats | undefined;
  endpoints: ClusterEndpoint[];
}

/** The `/clusters` document: every service with its endpoints, health, load and ejections. */
export function clusters(
  mesh: Mesh,
  source: AdminSource,
): { time: number; ready: boolean; services: ClusterService[] } {
  const now = mesh.now();
  const services: ClusterService[] = [];
  for (const rt of mesh.services()) {
    const d = rt.discovery;
    const stats = source.metrics?.stats(rt.name);
    services.push({
      name: rt.name,
      lb: rt.policy.lb.policy,
      panic: rt.panic,
      breaker: stats?.breaker ?? 'closed',
      discovery: {
        type: d.type,
        version: d.version,
        lastUpdate: d.lastUpdate === undefined ? undefined : new Date(d.lastUpdate).toISOString(),
        lastError: d.lastError,
      },
      stats: stats === undefined ? undefined : { ...stats },
      endpoints: rt.endpoints.map((st) => {
        const ejected = st.isEjected(now);
        let state: string = st.endpoint.health;
        if (ejected) state = 'ejected';
        else if (st.activeHealth === 'unhealthy') state = 'unhealthy';
        return {
          id: st.id,
          address: st.endpoint.address,
          port: st.endpoint.port,
          weight: st.endpoint.weight,
          priority: st.endpoint.priority,
          zone: st.endpoint.locality.zone,
          state: (ENDPOINT_STATES as readonly string[]).includes(state) ? state : 'unknown',
          discoveryHealth: st.endpoint.health,
          activeHealth: st.activeHealth,
          ejected,
          ejectionCount: st.ejectionCount,
          active: st.active,
          ewmaMs: Math.round(st.ewmaMs * 1000) / 1000,
          attempts: st.attempts,
          failures: st.failures,
        };
      }),
    });
  }
  return { time: Date.now(), ready: mesh.isReady, services };
}

function send(res: ServerResponse, status: number, type: string, body: string, head: boolean): void {
  res.writeHead(status, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(head ? undefined : body);
}

function json(res: ServerResponse, status: number, value: unknown, head: boolean): void {
  send(res, status, 'application/json; charset=utf-8', `${JSON.stringify(value, null, 2)}\n`, head);
}

/**
 * Starts the admin HTTP server: `/` (live HTML page), `/metrics`, `/healthz`, `/ready`,
 * `/config_dump`, `/clusters`. Binds `host` (127.0.0.1 by default); port 0 picks a free port.
 */
export async function startAdmin(mesh: Mesh, source: AdminSource, config: AdminConfig): Promise<AdminServer> {
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = req.method ?? 'GET';
    const head = method === 'HEAD';
    if (method !== 'GET' && !head) {
      res.setHeader('allow', 'GET, HEAD');
      send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', head);
      return;
    }
    const path = (req.url ?? '/').split('?')[0];
    switch (path) {
      case '/':
        send(res, 200, 'text/html; charset=utf-8', ADMIN_PAGE, head);
        return;
      case '/metrics': {
        const { contentType, body } = await source.scrape();
        send(res, 200, contentType, body, head);
        return;
      }
      case '/healthz':
        if (mesh.closed) send(res, 503, 'text/plain; charset=utf-8', 'closed\n', head);
        else send(res, 200, 'text/plain; charset=utf-8', 'ok\n', head);
        return;
      case '/ready':
        if (mesh.isReady) send(res, 200, 'text/plain; charset=utf-8', 'ready\n', head);
        else send(res, 503, 'text/plain; charset=utf-8', 'not ready\n', head);
        return;
      case '/config_dump':
        json(res, 200, mesh.snapshot(), head);
        return;
      case '/clusters':
        json(res, 200, clusters(mesh, source), head);
        return;
      default:
        send(
          res,
          404,
          'text/plain; charset=utf-8',
          'not found: try /, /metrics, /clusters, /config_dump, /ready\n',
          head,
        );
    }
  };
  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent)
        send(res, 500, 'text/plain; charset=utf-8', `${(err as Error)?.message}\n`, false);
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => {
      reject(
        new MeshError(
          ErrorCodes.CONFIG,
          `admin: cannot listen on ${config.host}:${config.port}: ${err.message}`,
          {
            field: 'admin.port',
          },
        ),
      );
    };
    server.once('error', onError);
    server.listen(config.port, config.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.unref();
  const addr = server.address() as AddressInfo;
  const host = addr.address;
  const urlHost = addr.family === 'IPv6' ? `[${host}]` : host;
  const url = `http://${urlHost}:${addr.port}/`;
  let closing: Promise<void> | undefined;
  return {
    address: { host, port: addr.port },
    url,
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
