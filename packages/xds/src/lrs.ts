import * as grpc from '@grpc/grpc-js';
import type { EndpointState, Locality, Mesh } from '@meshlet/core';
import { credentials, type XdsClient } from './client.js';
import { durationMs, type Msg, str } from './codec.js';
import { lrsService } from './protos.js';
import type { ClusterRef } from './router.js';

/**
 * Load reporting (LRS, `envoy.service.load_stats.v3`) for clusters whose CDS resource names
 * `lrs_server: { self: {} }`: one `StreamLoadStats` stream to the ADS server, opened while such a
 * cluster is in use. The server answers which clusters to report (`clusters` or
 * `send_all_clusters`) and how often (`load_reporting_interval`); every interval the client sends,
 * per cluster and locality, the requests issued, succeeded, errored and in progress, and the
 * requests dropped by category (EDS `drop_overloads`).
 *
 * Nothing is counted on the request path for it: the pipeline's per-endpoint counters
 * (`EndpointState.attempts`, `active`, `succeeded` — plain integers every transport's attempts
 * update) are read and diffed per locality when a report is due, and drops are counted when a
 * request is dropped. An endpoint that leaves its cluster hands its last counts to the next report.
 */

/** What a report says of one locality (gRPC and Envoy count attempts: one pick is one request). */
interface Bucket {
  locality: Locality;
  issued: number;
  succeeded: number;
  errors: number;
  inProgress: number;
}

/** The counters of an endpoint as of the last report. */
interface Seen {
  attempts: number;
  ended: number;
  succeeded: number;
}

interface Tracked {
  readonly ref: ClusterRef;
  edsServiceName: string | undefined;
  /** Counts of endpoints that left since the last report, by locality. */
  readonly gone: Map<string, Bucket>;
  intervalStart: number;
}

const localityKey = (l: Locality) => `${l.region}\u0000${l.zone}\u0000${l.subZone}`;

export interface LoadReporterOptions {
  /** Reconnect backoff (ms): base and cap (default 1s, 30s). */
  readonly backoff?: { readonly baseMs: number; readonly maxMs: number } | undefined;
  /** Clock for `load_report_interval` (default `performance.now`). */
  readonly now?: (() => number) | undefined;
  /** Reports sent and stream failures (logs, tests). */
  readonly onEvent?: ((e: LoadReporterEvent) => void) | undefined;
}

export type LoadReporterEvent =
  | { kind: 'settings'; clusters: readonly string[] | 'all'; intervalMs: number }
  | { kind: 'report'; clusters: number }
  | { kind: 'streamError'; error: string; retryInMs: number };

export class LoadReporter {
  readonly #client: XdsClient;
  readonly #tracked = new Map<string, Tracked>();
  readonly #seen = new WeakMap<EndpointState, Seen>();
  readonly #now: () => number;
  readonly #options: LoadReporterOptions;
  readonly #offRemoved: () => void;
  #grpc: grpc.Client | undefined;
  #call: grpc.ClientDuplexStream<unknown, unknown> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #retry: NodeJS.Timeout | undefined;
  #intervalMs = 0;
  #sendAll = false;
  #clusters: ReadonlySet<string> = new Set();
  #failures = 0;
  #closed = false;
  /** Reports sent (tests, the snapshot). */
  reports = 0;

  constructor(mesh: Mesh, client: XdsClient, options: LoadReporterOptions = {}) {
    this.#client = client;
    this.#options = options;
    this.#now = options.now ?? (() => performance.now());
    this.#offRemoved = mesh.onEndpointRemoved((ep) => this.#departed(ep));
  }

  /** Reports the load of `ref` (the CDS cluster, `edsServiceName` its EDS resource) until the returned function is called. */
  track(ref: ClusterRef, edsServiceName: string | undefined): () => void {
    let t = this.#tracked.get(ref.name);
    if (t === undefined) {
      t = { ref, edsServiceName, gone: new Map(), intervalStart: this.#now() };
      this.#tracked.set(ref.name, t);
      // Counting starts now: what the endpoints did before is not this cluster's report.
      for (const ep of ref.runtime.endpoints) this.#baseline(ep);
      ref.dropped.clear();
    } else {
      t.edsServiceName = edsServiceName;
    }
    this.#ensureStream();
    const tracked = t;
    return () => {
      if (this.#tracked.get(ref.name) !== tracked) return;
      this.#tracked.delete(ref.name);
      if (this.#tracked.size === 0) this.#stopStream();
    };
  }

  #baseline(ep: EndpointState): Seen {
    const s = { attempts: ep.attempts, ended: ep.attempts - ep.active, succeeded: ep.succeeded };
    this.#seen.set(ep, s);
    return s;
  }

  /** Adds what `ep` did since the last report to `into` (and makes now its baseline). */
  #collect(ep: EndpointState, into: Map<string, Bucket>, inProgress: boolean): void {
    const last = this.#seen.get(ep) ?? { attempts: 0, ended: 0, succeeded: 0 };
    const ended = ep.attempts - ep.active;
    const issued = ep.attempts - last.attempts;
    const succeeded = ep.succeeded - last.succeeded;
    const errors = ended - last.ended - succeeded;
    last.attempts = ep.attempts;
    last.ended = ended;
    last.succeeded = ep.succeeded;
    this.#seen.set(ep, last);
    const loc = ep.endpoint.locality;
    const key = localityKey(loc);
    let b = into.get(key);
    if (b === undefined) {
      b = { locality: loc, issued: 0, succeeded: 0, errors: 0, inProgress: 0 };
      into.set(key, b);
    }
    b.issued += issued;
    b.succeeded += succeeded;
    b.errors += errors;
    if (inProgress) b.inProgress += ep.active;
  }

  #departed(ep: EndpointState): void {
    const t = this.#tracked.get(ep.service);
    if (t === undefined) return;
    this.#collect(ep, t.gone, false);
  }

  #ensureStream(): void {
    if (this.#closed || this.#call !== undefined || this.#retry !== undefined || this.#tracked.size === 0)
      return;
    const server = this.#client.currentServer;
    this.#grpc?.close();
    this.#grpc = new (lrsService().client)(server.uri, credentials(server), {
      'grpc.keepalive_time_ms': 30_000,
    });
    const def = lrsService().service.StreamLoadStats as grpc.MethodDefinition<unknown, unknown>;
    const call = this.#grpc.makeBidiStreamRequest(
      def.path,
      def.requestSerialize,
      def.responseDeserialize,
      new grpc.Metadata(),
      {},
    );
    this.#call = call;
    let ended = false;
    const end = (why: string) => {
      if (ended) return;
      ended = true;
      if (this.#call !== call) return;
      this.#call = undefined;
      this.#clearTimer();
      if (this.#closed || this.#tracked.size === 0) return;
      const base = this.#options.backoff?.baseMs ?? 1_000;
      const max = this.#options.backoff?.maxMs ?? 30_000;
      const delay = Math.round(Math.min(max, base * 1.6 ** this.#failures++) * (0.8 + Math.random() * 0.4));
      this.#options.onEvent?.({ kind: 'streamError', error: why, retryInMs: delay });
      this.#retry = setTimeout(() => {
        this.#retry = undefined;
        this.#ensureStream();
      }, delay);
      this.#retry.unref();
    };
    call.on('data', (resp: unknown) => this.#onResponse(resp as Msg));
    call.on('error', (err: Error) => end(err.message));
    call.on('status', (st: grpc.StatusObject) => end(`${grpc.status[st.code]}: ${st.details}`));
    call.on('end', () => end('the server ended the stream'));
    // The first request carries the node and no stats (the server answers with what it wants).
    call.write({
      node: this.#client.nodeMessage(['envoy.lrs.supports_send_all_clusters']),
      clusterStats: [],
    });
  }

  #onResponse(resp: Msg): void {
    this.#failures = 0;
    const ms = durationMs(resp.loadReportingInterval) ?? 0;
    // A server asking for 0 would make the client report in a loop: at most 10 reports a second.
    const intervalMs = Math.max(100, ms);
    this.#sendAll = resp.sendAllClusters === true;
    this.#clusters = new Set((Array.isArray(resp.clusters) ? resp.clusters : []).map((c) => str(c) ?? ''));
    this.#options.onEvent?.({
      kind: 'settings',
      clusters: this.#sendAll ? 'all' : [...this.#clusters],
      intervalMs,
    });
    if (this.#timer === undefined || intervalMs !== this.#intervalMs) {
      this.#clearTimer();
      this.#intervalMs = intervalMs;
      this.#timer = setInterval(() => this.#report(), intervalMs);
      this.#timer.unref();
    }
  }

  /** Sends one report: the tracked clusters the server asked for, with what happened since the last. */
  #report(): void {
    const call = this.#call;
    if (call === undefined) return;
    const now = this.#now();
    const stats: Msg[] = [];
    for (const t of this.#tracked.values()) {
      if (!this.#sendAll && !this.#clusters.has(t.ref.name)) continue;
      const buckets = new Map<string, Bucket>(t.gone);
      t.gone.clear();
      for (const ep of t.ref.runtime.endpoints) this.#collect(ep, buckets, true);
      const locality: Msg[] = [];
      for (const b of buckets.values()) {
        if (b.issued === 0 && b.succeeded === 0 && b.errors === 0 && b.inProgress === 0) continue;
        locality.push({
          locality: { region: b.locality.region, zone: b.locality.zone, subZone: b.locality.subZone },
          totalSuccessfulRequests: b.succeeded,
          totalErrorRequests: b.errors,
          totalRequestsInProgress: b.inProgress,
          totalIssuedRequests: b.issued,
        });
      }
      const dropped: Msg[] = [];
      let totalDropped = 0;
      for (const [category, count] of t.ref.dropped) {
        dropped.push({ category, droppedCount: count });
        totalDropped += count;
      }
      t.ref.dropped.clear();
      const elapsed = Math.max(0, now - t.intervalStart);
      t.intervalStart = now;
      if (locality.length === 0 && totalDropped === 0) continue;
      const seconds = Math.floor(elapsed / 1000);
      stats.push({
        clusterName: t.ref.name,
        ...(t.edsServiceName !== undefined && t.edsServiceName !== t.ref.name
          ? { clusterServiceName: t.edsServiceName }
          : {}),
        upstreamLocalityStats: locality,
        totalDroppedRequests: totalDropped,
        droppedRequests: dropped,
        loadReportInterval: { seconds, nanos: Math.round((elapsed - seconds * 1000) * 1e6) },
      });
    }
    call.write({ clusterStats: stats });
    this.reports++;
    this.#options.onEvent?.({ kind: 'report', clusters: stats.length });
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #stopStream(): void {
    this.#clearTimer();
    if (this.#retry !== undefined) clearTimeout(this.#retry);
    this.#retry = undefined;
    const call = this.#call;
    this.#call = undefined;
    call?.cancel();
    this.#grpc?.close();
    this.#grpc = undefined;
  }

  /** What the snapshot shows: the clusters reported, the interval asked for, reports sent. */
  dump(): { clusters: string[]; intervalMs: number; reports: number; connected: boolean } {
    return {
      clusters: [...this.#tracked.keys()],
      intervalMs: this.#intervalMs,
      reports: this.reports,
      connected: this.#call !== undefined,
    };
  }

  close(): void {
    this.#closed = true;
    this.#offRemoved();
    this.#stopStream();
    this.#tracked.clear();
  }
}
