import { createHash } from 'node:crypto';
import { type FSWatcher, readFileSync, watch } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { isMeshError, parseConfigText } from '@meshlet/core';
import {
  adsService,
  CDS_TYPE,
  deltaAdsMethod,
  LDS_TYPE,
  lrsService,
  type Msg,
  RESOURCE_TYPES,
  type ResourceType,
} from '@meshlet/xds';
import { DEFAULT_LOAD_REPORTING_INTERVAL_MS, parseControlPlaneConfig } from './config.js';
import {
  buildSnapshot,
  type EncodedResource,
  type ResourceSet,
  resourcesFromConfig,
  type Snapshot,
} from './snapshot.js';

export interface ControlPlaneOptions {
  /** Port to listen on; 0 picks a free one (default 0). */
  port?: number;
  /** Address to bind (default `127.0.0.1`). */
  host?: string;
  /** A mesh YAML/JSON file to serve; watched for changes unless `watch: false`. */
  configFile?: string;
  /** A config object to serve (instead of a file). */
  config?: unknown;
  /** Raw resources to serve (tests; instead of a config). */
  resources?: ResourceSet;
  /** Watch `configFile` and push changes (default true). */
  watch?: boolean;
  /** Server credentials (default insecure). */
  credentials?: grpc.ServerCredentials;
  /** Called for stream and snapshot events (logging). */
  onEvent?: (event: ControlPlaneEvent) => void;
  /** The LRS reporting interval asked of clients, in ms (default: the config's `loadReporting.interval`, else 10s). */
  loadReportingInterval?: number;
  /** Serve incremental ADS (DeltaAggregatedResources) besides state of the world (default true). */
  delta?: boolean;
  /**
   * The name of a server's inbound listener, `%s` its listening address: what the workloads'
   * bootstrap says (`server_listener_resource_name_template`; default istio-agent's,
   * `xds.istio.io/grpc/lds/inbound/%s`).
   */
  serverListenerTemplate?: string;
}

export type ControlPlaneEvent =
  | { kind: 'snapshot'; version: string }
  | { kind: 'configError'; error: string }
  | { kind: 'stream'; node: string; open: boolean }
  /** A load report (LRS) arrived: per cluster, what the client did in the reported interval. */
  | { kind: 'loadReport'; node: string; clusters: ClusterLoad[] }
  | { kind: 'ack'; node: string; typeUrl: string; version: string }
  | { kind: 'nack'; node: string; typeUrl: string; version: string; error: string }
  /** Delta: a request changing the subscription (the first one of a type carries the client's versions). */
  | {
      kind: 'deltaRequest';
      node: string;
      typeUrl: string;
      subscribe: string[];
      unsubscribe: string[];
      initialResourceVersions: Record<string, string>;
    }
  /** Delta: a response, with the names of the resources sent and removed. */
  | {
      kind: 'deltaResponse';
      node: string;
      typeUrl: string;
      version: string;
      nonce: string;
      resources: string[];
      removed: string[];
    };

/** One cluster's load as a client reported it (LRS), summed over localities. */
export interface ClusterLoad {
  cluster: string;
  issued: number;
  succeeded: number;
  errors: number;
  /** In progress at the last report (a gauge, not a sum). */
  inProgress: number;
  dropped: number;
  /** Per locality (`region/zone/subZone`), the same counts. */
  localities: Record<string, { issued: number; succeeded: number; errors: number; inProgress: number }>;
}

/** The load reports (LRS) of one client node: totals since its stream opened and the last report. */
export interface LoadReportStatus {
  reports: number;
  /** Totals per cluster since the LRS stream opened. */
  clusters: Record<string, ClusterLoad>;
  /** The last report's clusters. */
  last: ClusterLoad[];
}

/** What the server knows of one connected client (for tests and `meshlet control-plane`). */
export interface ClientStatus {
  node: string;
  /** The client's load reports (LRS), when it sends any. */
  loadReports?: LoadReportStatus;
  /** Set on incremental (delta) streams only. */
  protocol?: 'delta';
  /** Per type: the version the client last ACKed, the last NACK's message, the names it watches. */
  types: Record<
    string,
    { acked: string | undefined; nack: string | undefined; names: string[]; acks: number; nacks: number }
  >;
}

interface TypeStream {
  /** Names the client asked for; null: wildcard (LDS/CDS with no names). */
  names: Set<string> | null;
  nonce: string;
  sentVersion: string | undefined;
  acked: string | undefined;
  nack: string | undefined;
  acks: number;
  nacks: number;
}

interface StreamState {
  node: string;
  readonly call: grpc.ServerDuplexStream<Msg, Msg>;
  readonly types: Map<string, TypeStream>;
}

/** Delta responses per stream and type awaiting their ACK/NACK, at most (the oldest go first). */
const MAX_PENDING_RESPONSES = 64;

interface DeltaTypeStream {
  wildcard: boolean;
  readonly names: Set<string>;
  /** What the client has: name → version, or null once it was told the resource does not exist. */
  readonly known: Map<string, string | null>;
  /** Responses awaiting their ACK/NACK: nonce → snapshot version. */
  readonly pending: Map<string, string>;
  acked: string | undefined;
  nack: string | undefined;
  acks: number;
  nacks: number;
}

interface DeltaStreamState {
  node: string;
  readonly call: grpc.ServerDuplexStream<Msg, Msg>;
  readonly types: Map<string, DeltaTypeStream>;
}

/** Per-resource versions: a digest of the encoded resource, so they survive control-plane restarts. */
const resourceVersions = new WeakMap<EncodedResource, string>();
function resourceVersion(r: EncodedResource): string {
  let v = resourceVersions.get(r);
  if (v === undefined) {
    v = createHash('sha256').update(r.any.typeUrl).update(r.any.value).digest('base64url').slice(0, 16);
    resourceVersions.set(r, v);
  }
  return v;
}

const SHORT: Record<string, string> = {
  [LDS_TYPE]: 'listener',
  'type.googleapis.com/envoy.config.route.v3.RouteConfiguration': 'route_config',
  [CDS_TYPE]: 'cluster',
  'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment': 'endpoints',
};

/**
 * An xDS (ADS, state of the world) server over @grpc/grpc-js serving versioned snapshots. Every
 * response carries the snapshot version and a fresh nonce; requests with a stale nonce are ignored;
 * ACKs and NACKs are recorded per stream and type; a snapshot change is pushed to every stream.
 */
export class ControlPlane {
  readonly #server: grpc.Server;
  readonly #streams = new Set<StreamState>();
  readonly #deltaStreams = new Set<DeltaStreamState>();
  readonly #onEvent: ((e: ControlPlaneEvent) => void) | undefined;
  /** Load reports per node (LRS streams). */
  readonly #loads = new Map<string, LoadReportStatus>();
  readonly #lrsCalls = new Set<grpc.ServerDuplexStream<Msg, Msg>>();
  /** The reporting interval asked of LRS clients (the config's `loadReporting.interval`). */
  loadReportingIntervalMs = DEFAULT_LOAD_REPORTING_INTERVAL_MS;
  #snapshot: Snapshot;
  #nonce = 0;
  #generation = 0;
  #port = 0;
  #host: string;
  #watcher: FSWatcher | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #lastError: string | undefined;
  #closed = false;
  /** The server listener template inbound listeners of `setConfig` are named by. */
  serverListenerTemplate: string | undefined;

  constructor(snapshot: Snapshot, host: string, onEvent?: (e: ControlPlaneEvent) => void, delta = true) {
    this.#snapshot = snapshot;
    this.#host = host;
    this.#onEvent = onEvent;
    this.#server = new grpc.Server();
    if (delta)
      this.#server.addService(
        { ...adsService().service, DeltaAggregatedResources: deltaAdsMethod() },
        {
          StreamAggregatedResources: (call: grpc.ServerDuplexStream<Msg, Msg>) => this.#onStream(call),
          DeltaAggregatedResources: (call: grpc.ServerDuplexStream<Msg, Msg>) => this.#onDeltaStream(call),
        },
      );
    else
      this.#server.addService(adsService().service, {
        StreamAggregatedResources: (call: grpc.ServerDuplexStream<Msg, Msg>) => this.#onStream(call),
      });
    this.#server.addService(lrsService().service, {
      StreamLoadStats: (call: grpc.ServerDuplexStream<Msg, Msg>) => this.#onLoadStats(call),
    });
  }

  /**
   * An LRS stream: the first request names the node; the answer asks for every cluster
   * (`send_all_clusters`) at `loadReportingIntervalMs`; each report is summed per node and
   * cluster (`loadReports()`, `clients()`) and announced (`loadReport` event).
   */
  #onLoadStats(call: grpc.ServerDuplexStream<Msg, Msg>): void {
    this.#lrsCalls.add(call);
    let node = '';
    let answered = false;
    call.on('data', (req: Msg) => {
      const n = req.node as { id?: string } | undefined;
      if (n?.id) node = n.id;
      let status = this.#loads.get(node);
      if (status === undefined) {
        status = { reports: 0, clusters: {}, last: [] };
        this.#loads.set(node, status);
      }
      if (!answered) {
        answered = true;
        const ms = this.loadReportingIntervalMs;
        const seconds = Math.floor(ms / 1000);
        call.write({
          sendAllClusters: true,
          loadReportingInterval: { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) },
        });
      }
      const stats = Array.isArray(req.clusterStats) ? (req.clusterStats as Msg[]) : [];
      if (stats.length === 0 && n !== undefined && n !== null) return; // the opening request
      const loads = stats.map(clusterLoad);
      status.reports++;
      status.last = loads;
      for (const l of loads) {
        const t = status.clusters[l.cluster] ?? {
          cluster: l.cluster,
          issued: 0,
          succeeded: 0,
          errors: 0,
          inProgress: 0,
          dropped: 0,
          localities: {},
        };
        status.clusters[l.cluster] = t;
        t.issued += l.issued;
        t.succeeded += l.succeeded;
        t.errors += l.errors;
        t.inProgress = l.inProgress;
        t.dropped += l.dropped;
        for (const [k, v] of Object.entries(l.localities)) {
          const tl = t.localities[k] ?? { issued: 0, succeeded: 0, errors: 0, inProgress: 0 };
          t.localities[k] = tl;
          tl.issued += v.issued;
          tl.succeeded += v.succeeded;
          tl.errors += v.errors;
          tl.inProgress = v.inProgress;
        }
      }
      this.#onEvent?.({ kind: 'loadReport', node, clusters: loads });
    });
    const done = () => {
      this.#lrsCalls.delete(call);
    };
    call.on('error', done);
    call.on('end', () => {
      done();
      call.end();
    });
  }

  /** Load reports (LRS) per client node: totals per cluster since its stream opened. */
  loadReports(): Record<string, LoadReportStatus> {
    return Object.fromEntries(this.#loads);
  }

  get port(): number {
    return this.#port;
  }

  /** `host:port` to put in a bootstrap's `server_uri`. */
  get address(): string {
    return `${this.#host}:${this.#port}`;
  }

  get version(): string {
    return this.#snapshot.version;
  }

  /** The last error reading the watched config (the previous snapshot stays served). */
  get lastError(): string | undefined {
    return this.#lastError;
  }

  /** @internal */
  async listen(port: number, credentials: grpc.ServerCredentials): Promise<void> {
    this.#port = await new Promise<number>((res, rej) =>
      this.#server.bindAsync(`${this.#host}:${port}`, credentials, (err, p) => (err ? rej(err) : res(p))),
    );
  }

  /** Serves a new snapshot and pushes it to every stream. */
  setSnapshot(snapshot: Snapshot): void {
    this.#snapshot = snapshot;
    this.#onEvent?.({ kind: 'snapshot', version: snapshot.version });
    for (const s of this.#streams) for (const [typeUrl] of s.types) this.#send(s, typeUrl);
    for (const s of this.#deltaStreams) for (const [typeUrl] of s.types) this.#sendDelta(s, typeUrl);
  }

  /** Serves a config object (validated) as the next version. */
  setConfig(raw: unknown, source?: string): void {
    const config = parseControlPlaneConfig(raw, source);
    this.loadReportingIntervalMs = config.loadReporting.intervalMs;
    this.setSnapshot(
      buildSnapshot(resourcesFromConfig(config, this.serverListenerTemplate), this.#nextVersion()),
    );
  }

  /** Serves raw resources (they are encoded, not validated: tests use this to send bad resources). */
  setResources(set: ResourceSet): void {
    this.setSnapshot(buildSnapshot(set, this.#nextVersion()));
  }

  #nextVersion(): string {
    return String(++this.#generation);
  }

  /** @internal */
  nextVersion(): string {
    return this.#nextVersion();
  }

  /** Connected clients and what they ACKed or NACKed. */
  clients(): ClientStatus[] {
    const delta = [...this.#deltaStreams].map((s) => {
      const types: ClientStatus['types'] = {};
      for (const [t, ts] of s.types) {
        types[SHORT[t] ?? t] = {
          acked: ts.acked,
          nack: ts.nack,
          names: [...(ts.wildcard ? ['*'] : []), ...[...ts.names].sort()],
          acks: ts.acks,
          nacks: ts.nacks,
        };
      }
      return { node: s.node, protocol: 'delta' as const, types };
    });
    return [...this.#streams]
      .map((s) => {
        const types: ClientStatus['types'] = {};
        for (const [t, ts] of s.types) {
          types[SHORT[t] ?? t] = {
            acked: ts.acked,
            nack: ts.nack,
            names: ts.names ? [...ts.names].sort() : ['*'],
            acks: ts.acks,
            nacks: ts.nacks,
          };
        }
        return { node: s.node, types };
      })
      .concat(delta)
      .map((c) => {
        const loads = this.#loads.get(c.node);
        return loads === undefined ? c : { ...c, loadReports: loads };
      });
  }

  /** @internal Watches a config file and serves each valid version of it. */
  watchFile(file: string): void {
    const abs = resolve(file);
    const reload = () => {
      this.#debounce = undefined;
      if (this.#closed) return;
      try {
        const raw = parseConfigText(readFileSync(abs, 'utf8'), abs);
        this.setConfig(raw, abs);
        this.#lastError = undefined;
      } catch (err) {
        this.#lastError = isMeshError(err) ? err.message : `cannot read ${abs}: ${(err as Error).message}`;
        this.#onEvent?.({ kind: 'configError', error: this.#lastError });
      }
    };
    // Watch the directory: editors and ConfigMap updates replace the file rather than write it.
    this.#watcher = watch(dirname(abs), (_event, name) => {
      if (name !== null && name !== basename(abs) && !String(name).startsWith('..')) return;
      if (this.#debounce) clearTimeout(this.#debounce);
      this.#debounce = setTimeout(reload, 50);
      this.#debounce.unref();
    });
    this.#watcher.unref();
  }

  #onStream(call: grpc.ServerDuplexStream<Msg, Msg>): void {
    const s: StreamState = { node: '', call, types: new Map() };
    this.#serve(this.#streams, s, (req) => this.#onRequest(s, req));
  }

  /**
   * Tracks one ADS stream (state of the world or delta) in `streams` until it ends, handing each
   * request to `onRequest` (a malformed one is ignored).
   */
  #serve<S extends { node: string; readonly call: grpc.ServerDuplexStream<Msg, Msg> }>(
    streams: Set<S>,
    s: S,
    onRequest: (req: Msg) => void,
  ): void {
    const call = s.call;
    streams.add(s);
    const done = () => {
      if (!streams.delete(s)) return;
      this.#onEvent?.({ kind: 'stream', node: s.node, open: false });
    };
    call.on('data', (req: Msg) => {
      try {
        onRequest(req);
      } catch {
        // A malformed request: ignore it.
      }
    });
    call.on('end', () => {
      done();
      call.end();
    });
    call.on('error', done);
    call.on('cancelled', done);
    call.on('close', done);
  }

  /** The request's resource type when it is one served here; records the stream's node on its first request. */
  #requestType(s: { node: string }, req: Msg): string | undefined {
    const node = req.node as Msg | undefined;
    if (node && s.node === '') {
      s.node = String(node.id ?? '');
      this.#onEvent?.({ kind: 'stream', node: s.node, open: true });
    }
    const typeUrl = String(req.typeUrl ?? '');
    return (RESOURCE_TYPES as readonly string[]).includes(typeUrl) ? typeUrl : undefined;
  }

  #onRequest(s: StreamState, req: Msg): void {
    const typeUrl = this.#requestType(s, req);
    if (typeUrl === undefined) return;
    const nonce = String(req.responseNonce ?? '');
    const rawNames = Array.isArray(req.resourceNames) ? (req.resourceNames as unknown[]).map(String) : [];
    const wildcard =
      rawNames.length === 0 ? typeUrl === LDS_TYPE || typeUrl === CDS_TYPE : rawNames.includes('*');
    const names = wildcard ? null : new Set(rawNames);
    let ts = s.types.get(typeUrl);
    if (!ts) {
      ts = { names, nonce: '', sentVersion: undefined, acked: undefined, nack: undefined, acks: 0, nacks: 0 };
      s.types.set(typeUrl, ts);
      this.#send(s, typeUrl);
      return;
    }
    if (nonce !== '' && nonce !== ts.nonce) return; // stale: a newer response is on its way
    if (nonce !== '' && nonce === ts.nonce) {
      const version = String(req.versionInfo ?? '');
      const detail = req.errorDetail as Msg | undefined;
      if (detail && (detail.message || detail.code)) {
        ts.nack = String(detail.message ?? '');
        ts.nacks++;
        this.#onEvent?.({
          kind: 'nack',
          node: s.node,
          typeUrl,
          version: ts.sentVersion ?? '',
          error: ts.nack,
        });
      } else {
        ts.acked = version;
        ts.nack = undefined;
        ts.acks++;
        this.#onEvent?.({ kind: 'ack', node: s.node, typeUrl, version });
      }
    }
    const changed =
      nonce === '' ||
      (names === null) !== (ts.names === null) ||
      (names !== null && !sameSet(names, ts.names as Set<string>));
    ts.names = names;
    if (changed) this.#send(s, typeUrl);
  }

  #send(s: StreamState, typeUrl: string): void {
    const ts = s.types.get(typeUrl);
    if (!ts) return;
    const snap = this.#snapshot;
    const all = snap.resources.get(typeUrl as ResourceType);
    const resources: Array<{ type_url: string; value: Uint8Array }> = [];
    if (all) {
      if (ts.names === null)
        for (const r of all.values()) resources.push({ type_url: r.any.typeUrl, value: r.any.value });
      else
        for (const n of ts.names) {
          const r = all.get(n);
          if (r) resources.push({ type_url: r.any.typeUrl, value: r.any.value });
        }
    }
    ts.nonce = String(++this.#nonce);
    ts.sentVersion = snap.version;
    s.call.write({ versionInfo: snap.version, typeUrl, nonce: ts.nonce, resources });
  }

  #onDeltaStream(call: grpc.ServerDuplexStream<Msg, Msg>): void {
    const s: DeltaStreamState = { node: '', call, types: new Map() };
    // Headers at once: a client with every resource current may get no response for a long time.
    call.sendMetadata(new grpc.Metadata());
    this.#serve(this.#deltaStreams, s, (req) => this.#onDeltaRequest(s, req));
  }

  #onDeltaRequest(s: DeltaStreamState, req: Msg): void {
    const typeUrl = this.#requestType(s, req);
    if (typeUrl === undefined) return;
    const list = (v: unknown) => (Array.isArray(v) ? v.map(String) : []);
    const subscribe = list(req.resourceNamesSubscribe);
    const unsubscribe = list(req.resourceNamesUnsubscribe);
    const nonce = String(req.responseNonce ?? '');
    let ts = s.types.get(typeUrl);
    let changed = false;
    let initial: Record<string, string> = {};
    if (!ts) {
      const raw = req.initialResourceVersions;
      if (raw !== null && typeof raw === 'object')
        initial = Object.fromEntries(Object.entries(raw as Msg).map(([k, v]) => [k, String(v)]));
      ts = {
        // The first request of LDS/CDS with no names is a (legacy) wildcard subscription.
        wildcard: subscribe.length === 0 && (typeUrl === LDS_TYPE || typeUrl === CDS_TYPE),
        names: new Set(),
        known: new Map(Object.entries(initial)),
        pending: new Map(),
        acked: undefined,
        nack: undefined,
        acks: 0,
        nacks: 0,
      };
      s.types.set(typeUrl, ts);
      changed = true;
    }
    if (changed || subscribe.length > 0 || unsubscribe.length > 0)
      this.#onEvent?.({
        kind: 'deltaRequest',
        node: s.node,
        typeUrl,
        subscribe,
        unsubscribe,
        initialResourceVersions: initial,
      });
    const version = nonce === '' ? undefined : ts.pending.get(nonce);
    if (version !== undefined) {
      // Every delta response is (N)ACKed on its own; the resources a NACK rejected are not resent
      // until their version changes (the client's `known` version stays the rejected one here).
      ts.pending.delete(nonce);
      const detail = req.errorDetail as Msg | undefined;
      if (detail && (detail.message || detail.code)) {
        ts.nack = String(detail.message ?? '');
        ts.nacks++;
        this.#onEvent?.({ kind: 'nack', node: s.node, typeUrl, version, error: ts.nack });
      } else {
        ts.acked = version;
        ts.nack = undefined;
        ts.acks++;
        this.#onEvent?.({ kind: 'ack', node: s.node, typeUrl, version });
      }
    }
    for (const n of subscribe) {
      if (n === '*') {
        if (!ts.wildcard) changed = true;
        ts.wildcard = true;
      } else if (!ts.names.has(n)) {
        ts.names.add(n);
        changed = true;
      }
    }
    for (const n of unsubscribe) {
      if (n === '*') ts.wildcard = false;
      else ts.names.delete(n);
      // A later subscription gets the resource again.
      if (n !== '*') ts.known.delete(n);
    }
    if (changed) this.#sendDelta(s, typeUrl);
  }

  /** Delta: sends the resources whose version the client does not have and the ones gone, if any. */
  #sendDelta(s: DeltaStreamState, typeUrl: string): void {
    const ts = s.types.get(typeUrl);
    if (!ts) return;
    const snap = this.#snapshot;
    const all = snap.resources.get(typeUrl as ResourceType) ?? new Map<string, EncodedResource>();
    const scope = new Set(ts.names);
    if (ts.wildcard) {
      for (const n of all.keys()) scope.add(n);
      for (const [n, v] of ts.known) if (v !== null) scope.add(n);
    }
    const resources: Msg[] = [];
    const names: string[] = [];
    const removed: string[] = [];
    for (const n of [...scope].sort()) {
      const r = all.get(n);
      if (r) {
        const v = resourceVersion(r);
        if (ts.known.get(n) === v) continue;
        ts.known.set(n, v);
        names.push(n);
        resources.push({ name: n, version: v, resource: { type_url: r.any.typeUrl, value: r.any.value } });
      } else if (ts.known.get(n) !== null) {
        // A name the client subscribed to stays known as gone (told once); one it had only through
        // the wildcard is forgotten, so names that come and go do not pile up per stream.
        if (ts.names.has(n)) ts.known.set(n, null);
        else ts.known.delete(n);
        removed.push(n);
      }
    }
    if (resources.length === 0 && removed.length === 0) return;
    const nonce = String(++this.#nonce);
    ts.pending.set(nonce, snap.version);
    // Every response is (N)ACKed in order; a client that skips some must not grow this for ever.
    if (ts.pending.size > MAX_PENDING_RESPONSES) ts.pending.delete(ts.pending.keys().next().value as string);
    s.call.write({ systemVersionInfo: snap.version, typeUrl, nonce, resources, removedResources: removed });
    this.#onEvent?.({
      kind: 'deltaResponse',
      node: s.node,
      typeUrl,
      version: snap.version,
      nonce,
      resources: names,
      removed,
    });
  }

  /** Stops the server: ends every stream at once. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher?.close();
    if (this.#debounce) clearTimeout(this.#debounce);
    for (const s of this.#streams) s.call.destroy();
    this.#streams.clear();
    for (const s of this.#deltaStreams) s.call.destroy();
    this.#deltaStreams.clear();
    for (const c of this.#lrsCalls) c.destroy();
    this.#lrsCalls.clear();
    this.#server.forceShutdown();
  }
}

/** One `ClusterStats` of a load report, summed over its localities. */
function clusterLoad(cs: Msg): ClusterLoad {
  const n = (v: unknown) => (typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : 0);
  const out: ClusterLoad = {
    cluster: String(cs.clusterName ?? ''),
    issued: 0,
    succeeded: 0,
    errors: 0,
    inProgress: 0,
    dropped: n(cs.totalDroppedRequests),
    localities: {},
  };
  for (const l of Array.isArray(cs.upstreamLocalityStats) ? (cs.upstreamLocalityStats as Msg[]) : []) {
    const loc = (l.locality ?? {}) as { region?: string; zone?: string; subZone?: string };
    const v = {
      issued: n(l.totalIssuedRequests),
      succeeded: n(l.totalSuccessfulRequests),
      errors: n(l.totalErrorRequests),
      inProgress: n(l.totalRequestsInProgress),
    };
    out.localities[`${loc.region ?? ''}/${loc.zone ?? ''}/${loc.subZone ?? ''}`] = v;
    out.issued += v.issued;
    out.succeeded += v.succeeded;
    out.errors += v.errors;
    out.inProgress += v.inProgress;
  }
  return out;
}

function sameSet(a: Set<string>, b: Set<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

/** Starts a control plane (in-process; tests use `port: 0`). */
export async function startControlPlane(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
  let snapshot: Snapshot;
  let interval = DEFAULT_LOAD_REPORTING_INTERVAL_MS;
  const host = options.host ?? '127.0.0.1';
  if (options.configFile !== undefined) {
    const abs = resolve(options.configFile);
    const raw = parseConfigText(readFileSync(abs, 'utf8'), abs);
    const config = parseControlPlaneConfig(raw, abs);
    interval = config.loadReporting.intervalMs;
    snapshot = buildSnapshot(resourcesFromConfig(config, options.serverListenerTemplate), '1');
  } else if (options.resources !== undefined) {
    snapshot = buildSnapshot(options.resources, '1');
  } else {
    const config = parseControlPlaneConfig(options.config ?? {});
    interval = config.loadReporting.intervalMs;
    snapshot = buildSnapshot(resourcesFromConfig(config, options.serverListenerTemplate), '1');
  }
  const cp = new ControlPlane(snapshot, host, options.onEvent, options.delta ?? true);
  cp.loadReportingIntervalMs = options.loadReportingInterval ?? interval;
  cp.serverListenerTemplate = options.serverListenerTemplate;
  cp.nextVersion(); // version "1" is the initial snapshot
  await cp.listen(options.port ?? 0, options.credentials ?? grpc.ServerCredentials.createInsecure());
  if (options.configFile !== undefined && options.watch !== false) cp.watchFile(options.configFile);
  return cp;
}
