/**
 * A fake Kubernetes API server that follows the real protocol closely enough to test a watcher:
 * - GET services, namespaces and EndpointSlice lists (label selector, `limit`/`continue`), each
 *   list carrying the current `metadata.resourceVersion`;
 * - watches (`?watch=1`) from a resourceVersion: replays history newer than it, then streams
 *   newline-delimited JSON events over a chunked response (ADDED, MODIFIED, DELETED, BOOKMARK when
 *   `allowWatchBookmarks=true`), ends after `timeoutSeconds`; a resourceVersion older than the
 *   compacted history gets an `ERROR` event carrying a 410 `Status` with reason `Expired` (or an
 *   HTTP 410, as the etcd path answers);
 * - bearer tokens (401 `Status` for an unknown or expired one), client certificates over TLS, and
 *   RBAC (403 `Status` worded as the real authorizer words it).
 */
import { EventEmitter } from 'node:events';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';

export interface FakeEndpoint {
  ip: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  zone?: string;
  forZones?: string[];
  pod?: string;
  podUid?: string;
  node?: string;
}

export interface SliceInit {
  name: string;
  service: string;
  namespace?: string;
  addressType?: 'IPv4' | 'IPv6' | 'FQDN';
  ports: Array<{ name?: string; port: number; protocol?: string }>;
  endpoints: FakeEndpoint[];
}

/** Builds a discovery.k8s.io/v1 EndpointSlice shaped like the endpointslice controller's. */
export function makeSlice(init: SliceInit): Record<string, unknown> {
  const ns = init.namespace ?? 'default';
  return {
    kind: 'EndpointSlice',
    apiVersion: 'discovery.k8s.io/v1',
    metadata: {
      name: init.name,
      generateName: `${init.service}-`,
      namespace: ns,
      uid: `uid-${ns}-${init.name}`,
      labels: {
        'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io',
        'kubernetes.io/service-name': init.service,
      },
      ownerReferences: [
        {
          apiVersion: 'v1',
          kind: 'Service',
          name: init.service,
          uid: `svc-${init.service}`,
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    addressType: init.addressType ?? 'IPv4',
    endpoints: init.endpoints.map((e) => ({
      addresses: [e.ip],
      conditions: {
        ready: e.ready ?? true,
        serving: e.serving ?? e.ready ?? true,
        terminating: e.terminating ?? false,
      },
      ...(e.node ? { nodeName: e.node } : {}),
      ...(e.zone ? { zone: e.zone } : {}),
      ...(e.forZones ? { hints: { forZones: e.forZones.map((name) => ({ name })) } } : {}),
      ...(e.pod
        ? { targetRef: { kind: 'Pod', namespace: ns, name: e.pod, uid: e.podUid ?? `uid-${e.pod}` } }
        : {}),
    })),
    ports: init.ports.map((p) => ({ name: p.name ?? '', protocol: p.protocol ?? 'TCP', port: p.port })),
  };
}

/** A core/v1 Service with the given ports (`targetPort` may be a name or a number). */
export function makeService(
  name: string,
  ports: Array<{ name?: string; port: number; targetPort?: number | string }>,
  namespace = 'default',
): Record<string, unknown> {
  return {
    kind: 'Service',
    apiVersion: 'v1',
    metadata: { name, namespace, uid: `svc-${name}` },
    spec: {
      type: 'ClusterIP',
      clusterIP: '10.96.0.10',
      ports: ports.map((p) => ({
        name: p.name ?? '',
        protocol: 'TCP',
        port: p.port,
        targetPort: p.targetPort ?? p.port,
      })),
    },
  };
}

interface StoredEvent {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: Record<string, unknown>;
}

interface Watcher {
  res: ServerResponse;
  namespace: string;
  service: string | undefined;
  bookmarks: boolean;
  stalled: boolean;
  timer: NodeJS.Timeout | undefined;
}

export interface RequestRecord {
  path: string;
  query: URLSearchParams;
  status: number;
  token: string | undefined;
  /** The CN of the client certificate, over TLS. */
  clientCN: string | undefined;
  watch: boolean;
}

export interface FakeApiServerOptions {
  /** Valid bearer tokens; when absent, no authentication is required. */
  tokens?: string[];
  /** Serve TLS with this key and certificate; with `ca`, require a client certificate signed by it. */
  tls?: { key: string | Buffer; cert: string | Buffer; ca?: string | Buffer };
  /** Answer an expired watch with HTTP 410 instead of an ERROR event. */
  goneAsHttp?: boolean;
  /** Write each watch event in two chunks split mid-JSON (exercises the stream parser). */
  splitWrites?: boolean;
}

function status(code: number, reason: string, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

export class FakeApiServer extends EventEmitter {
  readonly slices = new Map<string, Record<string, unknown>>();
  readonly services = new Map<string, Record<string, unknown>>();
  readonly namespaces = new Set<string>(['default', 'kube-system']);
  readonly requests: RequestRecord[] = [];
  /** Valid tokens (mutable: tests rotate them). Undefined: no auth. */
  tokens: Set<string> | undefined;
  /** Resources the caller may not read (`endpointslices`, `services`, `namespaces`). */
  readonly forbidden = new Set<string>();
  /** The next N requests get 429 Too Many Requests (API priority and fairness) with retryAfterSeconds 1. */
  throttleNext = 0;
  /** New watches get headers but no events and never end (a silently dead connection). */
  stallWatches = false;
  /** The subject RBAC errors name. */
  user = 'system:serviceaccount:default:meshlet';
  goneAsHttp: boolean;
  splitWrites: boolean;
  #rv = 1000;
  #history: StoredEvent[] = [];
  /** Events at or below this resourceVersion are compacted away. */
  #compacted = 0;
  #watchers = new Set<Watcher>();
  #sockets = new Set<Socket>();
  #server: Server;
  #port = 0;
  readonly #secure: boolean;
  readonly #options: FakeApiServerOptions;

  constructor(options: FakeApiServerOptions = {}) {
    super();
    this.#options = options;
    this.tokens = options.tokens ? new Set(options.tokens) : undefined;
    this.goneAsHttp = options.goneAsHttp ?? false;
    this.splitWrites = options.splitWrites ?? false;
    this.#secure = options.tls !== undefined;
    this.#server = this.#create(options);
  }

  #create(options: FakeApiServerOptions): Server {
    const handler = (req: IncomingMessage, res: ServerResponse) => this.#handle(req, res);
    const server = options.tls
      ? createHttpsServer(
          {
            key: options.tls.key,
            cert: options.tls.cert,
            ...(options.tls.ca ? { ca: options.tls.ca, requestCert: true, rejectUnauthorized: true } : {}),
          },
          handler,
        )
      : createHttpServer(handler);
    server.on(this.#secure ? 'secureConnection' : 'connection', (s: Socket) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
    return server as Server;
  }

  get url(): string {
    return `${this.#secure ? 'https' : 'http'}://127.0.0.1:${this.#port}`;
  }

  get resourceVersion(): string {
    return String(this.#rv);
  }

  get openWatches(): number {
    return this.#watchers.size;
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#port, '127.0.0.1', () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    this.#port = (this.#server.address() as AddressInfo).port;
    return this;
  }

  /** Stops listening and drops every connection (the process died). State is kept, as etcd keeps it. */
  async stop(): Promise<void> {
    for (const w of this.#watchers) clearTimeout(w.timer);
    this.#watchers.clear();
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** Starts again on the same port (an API server restart). */
  async restart(): Promise<void> {
    this.#server = this.#create(this.#options);
    await this.start();
  }

  setService(svc: Record<string, unknown>): void {
    const m = svc.metadata as { name: string; namespace?: string };
    this.services.set(`${m.namespace ?? 'default'}/${m.name}`, svc);
  }

  /** Creates or replaces a slice, bumping the resourceVersion and notifying watchers. */
  applySlice(slice: Record<string, unknown>): string {
    const meta = slice.metadata as Record<string, unknown>;
    const key = `${meta.namespace}/${meta.name}`;
    const type = this.slices.has(key) ? 'MODIFIED' : 'ADDED';
    const rv = ++this.#rv;
    const stored = { ...slice, metadata: { ...meta, resourceVersion: String(rv) } };
    this.slices.set(key, stored);
    this.#record({ rv, type, object: stored });
    return String(rv);
  }

  deleteSlice(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    const old = this.slices.get(key);
    if (!old) return;
    this.slices.delete(key);
    const rv = ++this.#rv;
    const object = { ...old, metadata: { ...(old.metadata as object), resourceVersion: String(rv) } };
    this.#record({ rv, type: 'DELETED', object });
  }

  /** Changes state without telling open watches (as after an etcd restore), for relist tests. */
  applySliceSilently(slice: Record<string, unknown>): void {
    const meta = slice.metadata as Record<string, unknown>;
    const rv = ++this.#rv;
    this.slices.set(`${meta.namespace}/${meta.name}`, {
      ...slice,
      metadata: { ...meta, resourceVersion: String(rv) },
    });
  }

  /** Drops the event history: watches from older resourceVersions get 410 Gone. */
  compact(): void {
    this.#compacted = this.#rv;
    this.#history = [];
  }

  /** Sends an `ERROR` 410 Expired event on every open watch and ends them, after compacting. */
  expireWatches(): void {
    this.compact();
    for (const w of [...this.#watchers]) {
      this.#write(w, { type: 'ERROR', object: this.#expired(0) });
      this.#end(w);
    }
  }

  /** Ends every open watch normally (as `timeoutSeconds` does); clients resume from their version. */
  endWatches(): void {
    for (const w of [...this.#watchers]) this.#end(w);
  }

  /** Sends a BOOKMARK at the current resourceVersion on every open watch that asked for them. */
  bookmark(): void {
    for (const w of this.#watchers) {
      if (w.bookmarks && !w.stalled)
        this.#write(w, {
          type: 'BOOKMARK',
          object: {
            kind: 'EndpointSlice',
            apiVersion: 'discovery.k8s.io/v1',
            metadata: { resourceVersion: String(this.#rv) },
          },
        });
    }
  }

  #expired(requested: number): Record<string, unknown> {
    return status(410, 'Expired', `too old resource version: ${requested} (${this.#compacted + 1})`);
  }

  #record(ev: StoredEvent): void {
    this.#history.push(ev);
    const ns = (ev.object.metadata as Record<string, unknown>).namespace as string;
    const svc = (
      (ev.object.metadata as Record<string, unknown>).labels as Record<string, string> | undefined
    )?.['kubernetes.io/service-name'];
    for (const w of this.#watchers) {
      if (w.stalled || w.namespace !== ns || (w.service !== undefined && w.service !== svc)) continue;
      this.#write(w, { type: ev.type, object: ev.object });
    }
  }

  #write(w: Watcher, ev: unknown): void {
    const line = `${JSON.stringify(ev)}\n`;
    if (this.splitWrites && line.length > 4) {
      const cut = Math.floor(line.length / 2);
      w.res.write(line.slice(0, cut));
      setImmediate(() => {
        if (!w.res.writableEnded) w.res.write(line.slice(cut));
      });
    } else {
      w.res.write(line);
    }
  }

  #end(w: Watcher): void {
    clearTimeout(w.timer);
    this.#watchers.delete(w);
    if (this.splitWrites) setImmediate(() => w.res.end());
    else w.res.end();
  }

  #send(res: ServerResponse, code: number, body: unknown): void {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  #forbidden(resource: string, group: string, verb: string, ns: string | undefined): Record<string, unknown> {
    const full = group ? `${resource}.${group}` : resource;
    return status(
      403,
      'Forbidden',
      `${full} is forbidden: User "${this.user}" cannot ${verb} resource "${resource}" in API group "${group}"${ns ? ` in the namespace "${ns}"` : ' at the cluster scope'}`,
    );
  }

  #handle(req: IncomingMessage, res: ServerResponse): unknown {
    const url = new URL(req.url ?? '/', 'http://x');
    const q = url.searchParams;
    const auth = req.headers.authorization;
    const token = auth?.startsWith('Bearer ') ? auth.slice(7) : undefined;
    const watch = q.get('watch') === '1' || q.get('watch') === 'true';
    const peer = (req.socket as TLSSocket).getPeerCertificate?.();
    const clientCN = peer && typeof peer.subject?.CN === 'string' ? peer.subject.CN : undefined;
    const rec: RequestRecord = { path: url.pathname, query: q, status: 200, token, clientCN, watch };
    this.requests.push(rec);
    const reply = (code: number, body: unknown) => {
      rec.status = code;
      this.emit('request', rec);
      this.#send(res, code, body);
    };
    if (this.throttleNext > 0) {
      this.throttleNext--;
      const body = status(429, 'TooManyRequests', 'Too many requests, please try again later.');
      body.details = { retryAfterSeconds: 1 };
      return reply(429, body);
    }
    if (this.tokens !== undefined && (token === undefined || !this.tokens.has(token))) {
      reply(401, status(401, 'Unauthorized', 'Unauthorized'));
      return;
    }
    let m = /^\/api\/v1\/namespaces\/([^/]+)\/services\/([^/]+)$/.exec(url.pathname);
    if (m) {
      const [, ns, name] = m as unknown as [string, string, string];
      if (this.forbidden.has('services')) return reply(403, this.#forbidden('services', '', 'get', ns));
      const svc = this.services.get(`${ns}/${name}`);
      if (!svc) return reply(404, status(404, 'NotFound', `services "${name}" not found`));
      return reply(200, svc);
    }
    if (url.pathname === '/api/v1/namespaces') {
      if (this.forbidden.has('namespaces'))
        return reply(403, this.#forbidden('namespaces', '', 'list', undefined));
      return reply(200, {
        kind: 'NamespaceList',
        apiVersion: 'v1',
        metadata: { resourceVersion: String(this.#rv) },
        items: [...this.namespaces].map((name) => ({ metadata: { name } })),
      });
    }
    m = /^\/apis\/discovery\.k8s\.io\/v1\/namespaces\/([^/]+)\/endpointslices$/.exec(url.pathname);
    if (!m) return reply(404, status(404, 'NotFound', 'the server could not find the requested resource'));
    const ns = m[1] as string;
    const selector = q.get('labelSelector') ?? '';
    const sm = /^kubernetes\.io\/service-name=(.+)$/.exec(selector);
    const service = sm ? sm[1] : undefined;
    if (this.forbidden.has('endpointslices'))
      return reply(403, this.#forbidden('endpointslices', 'discovery.k8s.io', watch ? 'watch' : 'list', ns));
    const matches = (obj: Record<string, unknown>) => {
      const meta = obj.metadata as Record<string, unknown>;
      const labels = meta.labels as Record<string, string> | undefined;
      return (
        meta.namespace === ns && (service === undefined || labels?.['kubernetes.io/service-name'] === service)
      );
    };
    if (!watch) {
      const items = [...this.slices.values()].filter(matches);
      const limit = Number(q.get('limit') ?? '0');
      const start = Number(q.get('continue') ?? '0');
      const page = limit > 0 ? items.slice(start, start + limit) : items.slice(start);
      const next = limit > 0 && start + limit < items.length ? String(start + limit) : undefined;
      return reply(200, {
        kind: 'EndpointSliceList',
        apiVersion: 'discovery.k8s.io/v1',
        metadata: { resourceVersion: String(this.#rv), ...(next ? { continue: next } : {}) },
        items: page,
      });
    }
    const rvText = q.get('resourceVersion');
    const from = rvText === null || rvText === '' ? undefined : Number(rvText);
    if (from !== undefined && from !== 0 && from < this.#compacted) {
      if (this.goneAsHttp) return reply(410, this.#expired(from));
    }
    rec.status = 200;
    this.emit('request', rec);
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = {
      res,
      namespace: ns,
      service,
      bookmarks: q.get('allowWatchBookmarks') === 'true',
      stalled: this.stallWatches,
      timer: undefined,
    };
    this.#watchers.add(w);
    res.on('close', () => {
      clearTimeout(w.timer);
      this.#watchers.delete(w);
      this.emit('watchClosed', { namespace: ns, service });
    });
    const timeout = Number(q.get('timeoutSeconds') ?? '0');
    if (timeout > 0 && !w.stalled) {
      w.timer = setTimeout(() => this.#end(w), timeout * 1000);
      w.timer.unref();
    }
    this.emit('watch', { namespace: ns, service, resourceVersion: rvText, stalled: w.stalled });
    if (w.stalled) return;
    if (from !== undefined && from !== 0 && from < this.#compacted) {
      this.#write(w, { type: 'ERROR', object: this.#expired(from) });
      this.#end(w);
      return;
    }
    if (from === undefined || from === 0) {
      // No resourceVersion: synthetic ADDED events for the current state, as the server does.
      for (const obj of this.slices.values())
        if (matches(obj)) this.#write(w, { type: 'ADDED', object: obj });
    } else {
      for (const ev of this.#history) {
        if (ev.rv > from && matches(ev.object)) this.#write(w, { type: ev.type, object: ev.object });
      }
    }
  }
}
