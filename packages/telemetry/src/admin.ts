import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, isIP, type Socket } from 'node:net';
import { ErrorCodes, type Mesh, MeshError } from '@meshlet/core';
import { AdminTokenCheck } from './admin-auth.js';
import { type AdminSource, clusters, servingState } from './admin-health.js';
import { ADMIN_PAGE } from './admin-page.js';
import type { AdminConfig } from './config.js';

export type { AdminSource } from './admin-health.js';

export interface AdminServer {
  /** The bound address (`port` is the real one when 0 was configured). */
  readonly address: { host: string; port: number };
  /** `http://host:port/`. */
  readonly url: string;
  /** Connections refused so far by `maxConnections` / `maxConnectionsPerClient`. */
  readonly refusedConnections: number;
  close(): Promise<void>;
}

/** Paths answered without a token: the kubelet's probes carry none, and say nothing sensitive. */
const OPEN_PATHS: ReadonlySet<string> = new Set(['/healthz', '/ready']);

function send(
  res: ServerResponse,
  status: number,
  type: string,
  body: string,
  head: boolean,
  extra?: Record<string, string>,
): void {
  res.writeHead(status, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...extra,
  });
  res.end(head ? undefined : body);
}

const TEXT = 'text/plain; charset=utf-8';

function json(res: ServerResponse, status: number, value: unknown, head: boolean): void {
  send(res, status, 'application/json; charset=utf-8', `${JSON.stringify(value, null, 2)}\n`, head);
}

function isLoopbackAddress(host: string): boolean {
  const h = host.startsWith('::ffff:') ? host.slice(7) : host;
  return h === '::1' || (isIP(h) === 4 && h.startsWith('127.'));
}

/**
 * True when `host` (a `Host` header) names this machine's loopback: `localhost`, `*.localhost`, a
 * 127/8 address or `[::1]`. A page on another site cannot then reach an unprotected admin server
 * through DNS rebinding (a name of its own that resolves to 127.0.0.1).
 */
export function isLoopbackHost(host: string | undefined): boolean {
  if (host === undefined) return false;
  let name = host.toLowerCase();
  if (name.startsWith('[')) {
    const close = name.indexOf(']');
    name = close < 0 ? name : name.slice(1, close);
  } else {
    const colon = name.lastIndexOf(':');
    if (colon >= 0 && name.indexOf(':') === colon) name = name.slice(0, colon);
  }
  if (name.endsWith('.')) name = name.slice(0, -1);
  return name === 'localhost' || name.endsWith('.localhost') || isLoopbackAddress(name);
}

/** How often, at most, refused connections are reported as a `log` event. */
const REFUSAL_LOG_MS = 60_000;

/**
 * Starts the admin HTTP server: `/` (live HTML page), `/metrics`, `/healthz`, `/ready`,
 * `/config_dump`, `/clusters`. Binds `host` (127.0.0.1 by default); port 0 picks a free port.
 *
 * Hardened for a network it may be exposed to: at most `maxConnections` connections
 * (`maxConnectionsPerClient` per client address), a client has `headersTimeout` to send its
 * headers and `requestTimeout` for the whole request (a trickling "slowloris" client is cut off),
 * idle keep-alive connections close after `keepAliveTimeout`; with a `token`, every path but
 * `/healthz` and `/ready` needs `Authorization: Bearer <token>`. Without a token on a loopback
 * address, requests must name a loopback host (DNS-rebinding protection).
 */
export async function startAdmin(mesh: Mesh, source: AdminSource, config: AdminConfig): Promise<AdminServer> {
  const log = (level: 'warn' | 'error', message: string): void =>
    mesh.events.emit('log', { level, scope: 'admin', message });
  const auth =
    config.token === undefined
      ? undefined
      : new AdminTokenCheck(config.token, (m) => log('error', `admin: ${m}`));
  let hostCheck = false;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = req.method ?? 'GET';
    const head = method === 'HEAD';
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (hostCheck && !isLoopbackHost(req.headers.host)) {
      send(
        res,
        403,
        TEXT,
        'forbidden: this admin server answers only requests for a loopback host name (localhost, 127.0.0.1, [::1]); set admin.token to serve other names\n',
        head,
      );
      return;
    }
    if (auth !== undefined && !OPEN_PATHS.has(path)) {
      const verdict = auth.check(req.headers.authorization);
      if (!verdict.ok) {
        const headers = { 'www-authenticate': verdict.challenge };
        // The page holds no data: a browser gets it with the 401, and its script asks for the token.
        if (path === '/' && (method === 'GET' || head))
          send(res, 401, 'text/html; charset=utf-8', ADMIN_PAGE, head, headers);
        else send(res, 401, TEXT, `unauthorized: ${verdict.message}\n`, head, headers);
        return;
      }
    }
    if (method !== 'GET' && !head) {
      send(res, 405, TEXT, 'method not allowed\n', head, { allow: 'GET, HEAD' });
      return;
    }
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
        if (mesh.closed) send(res, 503, TEXT, 'closed\n', head);
        else send(res, 200, TEXT, 'ok\n', head);
        return;
      case '/ready': {
        const state = servingState(mesh);
        if (state === 'serving') send(res, 200, TEXT, 'ready\n', head);
        else send(res, 503, TEXT, `${state === 'not_ready' ? 'not ready' : state}\n`, head);
        return;
      }
      case '/config_dump':
        json(res, 200, mesh.snapshot(), head);
        return;
      case '/clusters':
        json(res, 200, clusters(mesh, source), head);
        return;
      default:
        send(res, 404, TEXT, 'not found: try /, /metrics, /clusters, /config_dump, /ready\n', head);
    }
  };

  // Node checks the header and request timeouts on an interval (30 s by default, which let a
  // trickling client hold a connection for 95 s): check at a fifth of the header timeout, <= 1 s.
  const checkEveryMs = Math.max(10, Math.min(1_000, Math.floor(config.headersTimeoutMs / 5)));
  const server: Server = createServer(
    {
      headersTimeout: config.headersTimeoutMs,
      requestTimeout: config.requestTimeoutMs,
      connectionsCheckingInterval: checkEveryMs,
      keepAliveTimeout: config.keepAliveTimeoutMs,
    },
    (req, res) => {
      handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) send(res, 500, TEXT, `${(err as Error)?.message}\n`, false);
        else res.destroy();
      });
    },
  );
  server.keepAliveTimeout = config.keepAliveTimeoutMs;
  // A client that stops reading (or writing) mid-request or mid-response is cut off too.
  server.timeout = config.requestTimeoutMs;
  server.maxConnections = config.maxConnections;

  let refused = 0;
  let lastRefusalLog = Number.NEGATIVE_INFINITY;
  const refuse = (why: string): void => {
    refused++;
    const now = Date.now();
    if (now - lastRefusalLog < REFUSAL_LOG_MS) return;
    lastRefusalLog = now;
    log('warn', `admin: refused a connection (${why}); ${refused} refused so far`);
  };
  server.on('drop', () => refuse(`maxConnections ${config.maxConnections} reached`));
  const perClient = new Map<string, number>();
  server.on('connection', (socket: Socket) => {
    const key = socket.remoteAddress ?? '';
    const n = (perClient.get(key) ?? 0) + 1;
    if (n > config.maxConnectionsPerClient) {
      socket.destroy();
      refuse(`maxConnectionsPerClient ${config.maxConnectionsPerClient} reached for ${key}`);
      return;
    }
    perClient.set(key, n);
    socket.once('close', () => {
      const left = (perClient.get(key) ?? 1) - 1;
      if (left <= 0) perClient.delete(key);
      else perClient.set(key, left);
    });
  });

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
  hostCheck = auth === undefined && isLoopbackAddress(host);
  if (auth === undefined && !isLoopbackAddress(host))
    log(
      'warn',
      `admin: listening on ${host}:${addr.port} without a token: anyone who can reach it reads the mesh's configuration, endpoints and metrics (set admin.token, or bind 127.0.0.1)`,
    );
  const urlHost = addr.family === 'IPv6' ? `[${host}]` : host;
  const url = `http://${urlHost}:${addr.port}/`;
  let closing: Promise<void> | undefined;
  return {
    address: { host, port: addr.port },
    url,
    get refusedConnections() {
      return refused;
    },
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
