import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { type InboundAdmission, removeClientCert } from './admission.js';
import { refusalHeaders } from './http-load.js';
import { type PeerSocket, socketPeer } from './peer.js';
import { type RouteView, routeView } from './route-view.js';

/** The parts of an upgrade request (`node:http`'s `IncomingMessage`) the guard reads and sets. */
interface UpgradeRequest {
  method?: string | undefined;
  url?: string | undefined;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly rawHeaders: string[];
}

/** A server whose `upgrade` events the guard intercepts (`node:http` / `node:https`). */
export interface UpgradeServer {
  emit(event: string | symbol, ...args: unknown[]): boolean;
}

const guarded = new WeakSet<object>();

/**
 * How the policy sees an upgrade request's path besides its normalized form: an `upgrade`
 * listener routes however it likes (a WebSocket library compares `req.url`, an app may fold case
 * or trailing slashes), so the view folds every way a framework may: case, a trailing slash,
 * runs of `/`, escapes, `;`. Patterns are folded the same way, so an ALLOW rule still admits the
 * spellings it names.
 */
const UPGRADE_VIEW = routeView({
  caseInsensitive: true,
  ignoresTrailingSlash: true,
  mergesSlashes: true,
  decodes: true,
  semicolonEndsPath: true,
});

/**
 * Runs the inbound admission step on every `upgrade` request of `server` (WebSocket and other
 * HTTP/1.1 upgrades) before any of its `upgrade` listeners, which never go through the
 * framework's middleware or hooks (the policy is evaluated on the normalized path and on the
 * path folded every way a router may, see `UPGRADE_VIEW`): a refused request is answered on the socket (400 / 403 / 503
 * / 307 with the coded JSON body) and the connection closed; an admitted one reaches the
 * listeners with its normalized path in `req.url`. Listeners added later are guarded too (the
 * server's `emit` is wrapped). Once per server: later calls do nothing.
 */
export function guardUpgrades(
  server: UpgradeServer,
  admission: InboundAdmission,
  view: RouteView = UPGRADE_VIEW,
): void {
  if (guarded.has(server)) return;
  guarded.add(server);
  const emit = server.emit;
  server.emit = function guardedEmit(this: UpgradeServer, event: string | symbol, ...args: unknown[]) {
    if (event !== 'upgrade') return emit.call(this, event, ...args);
    const req = args[0] as UpgradeRequest;
    const socket = args[1] as Duplex & PeerSocket;
    const url = req.url ?? '/';
    const r = admission.admitHttp(
      req.method ?? 'GET',
      url,
      req.headers,
      req.rawHeaders,
      socketPeer(socket),
      undefined,
      view,
    );
    // The connection leaves HTTP here: the request is over for load accounting and telemetry.
    r.finished(false);
    if (r.status !== 0) {
      const body = r.errorBody();
      const head = [`HTTP/1.1 ${r.status} ${STATUS_CODES[r.status] ?? ''}`];
      if (r.location !== undefined) head.push(`location: ${r.location}`);
      const extra = refusalHeaders(r);
      for (let i = 0; i < extra.length; i += 2) head.push(`${extra[i]}: ${extra[i + 1]}`);
      head.push(
        'content-type: application/json; charset=utf-8',
        `content-length: ${Buffer.byteLength(body)}`,
        'connection: close',
      );
      socket.end(`${head.join('\r\n')}\r\n\r\n${body}`);
      r.span?.end(r.status, r.refusalError());
      return true;
    }
    if (r.clientCert) removeClientCert(req);
    if (r.changed) req.url = r.path + r.query;
    r.span?.end(101);
    return emit.call(this, event, ...args);
  };
}
