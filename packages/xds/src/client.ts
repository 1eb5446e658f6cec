import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { type Bootstrap, DEFAULT_MAX_XDS_MESSAGE_SIZE, type XdsServer } from './bootstrap.js';
import { decodeAny, type Msg, XdsDecodeError } from './codec.js';
import {
  type EdsState,
  peekClusterName,
  peekResourceName,
  sameBytes,
  translateEndpointsIncremental,
} from './eds.js';
import {
  adsService,
  CDS_TYPE,
  deltaAdsMethod,
  EDS_TYPE,
  LDS_TYPE,
  lookupType,
  RDS_TYPE,
  type ResourceType,
} from './protos.js';

const RESOURCE_WRAPPER = 'type.googleapis.com/envoy.service.discovery.v3.Resource';

import { serverListenerMatcher, translateServerListener } from './inbound.js';
import {
  type TranslateOptions,
  translateCluster,
  translateEndpoints,
  translateListener,
  translateRouteConfig,
} from './translate.js';

/** Receives one resource's changes. */
export interface ResourceWatcher<T> {
  onUpdate(value: T): void;
  /** The control plane sent an invalid version of the resource (the last good one stays in use). */
  onError?(error: Error): void;
  /** The resource does not exist (absent from a full LDS/CDS response, or the timer fired). */
  onDoesNotExist?(): void;
}

export type ResourceStatus = 'REQUESTED' | 'ACKED' | 'NACKED' | 'DOES_NOT_EXIST';

interface Entry {
  readonly name: string;
  readonly watchers: Set<ResourceWatcher<unknown>>;
  value: unknown;
  raw: Uint8Array | undefined;
  /** EDS: the translated state of the last good version, the base of the next incremental diff. */
  eds: EdsState | undefined;
  version: string | undefined;
  status: ResourceStatus;
  error: string | undefined;
  failedVersion: string | undefined;
  updatedAt: number | undefined;
  timer: NodeJS.Timeout | undefined;
}

/**
 * How long a delta stream that was accepted (response headers) but carried no response must have
 * lived to count as a working stream when it ends (then the client restarts with the primary
 * server at once, instead of moving to the next server and backing off).
 */
const QUIET_DELTA_STREAM_MS = 10_000;

interface TypeState {
  readonly typeUrl: ResourceType;
  readonly entries: Map<string, Entry>;
  /** The last accepted version (sent in ACKs, NACKs and on new streams). */
  version: string;
  /** The nonce of the last response on the current stream. */
  nonce: string;
  /** Whether a request for this type was sent on the current stream. */
  subscribed: boolean;
  /** Names last sent, to skip redundant requests. */
  sentNames: string;
  /** Delta: the names subscribed on the current stream. */
  readonly deltaNames: Set<string>;
}

type Translators = Record<ResourceType, (m: Msg) => { name: string }>;

function translators(opts: TranslateOptions): Translators {
  return {
    // A server's inbound listener (its name follows the bootstrap's template) is read as gRFC A36 says.
    [LDS_TYPE]: (m) =>
      opts.isServerListener?.(typeof m.name === 'string' ? m.name : '') === true
        ? translateServerListener(m, opts)
        : translateListener(m, opts),
    [RDS_TYPE]: (m) => translateRouteConfig(m, '', opts),
    [CDS_TYPE]: (m) => translateCluster(m, opts),
    [EDS_TYPE]: translateEndpoints,
  };
}

const SHORT: Record<ResourceType, string> = {
  [LDS_TYPE]: 'listener',
  [RDS_TYPE]: 'route_config',
  [CDS_TYPE]: 'cluster',
  [EDS_TYPE]: 'endpoints',
};

/** State-of-the-world types: a resource missing from a response no longer exists. */
const FULL_STATE = new Set<ResourceType>([LDS_TYPE, CDS_TYPE]);

export interface XdsClientOptions {
  /** How long a requested resource may stay unanswered before it is reported as not existing (15s). */
  resourceTimeoutMs?: number;
  /** Reconnect backoff: exponential from `baseMs` (1s) to `maxMs` (30s), ±20% jitter. */
  backoff?: { baseMs?: number; maxMs?: number };
  /** gRPC user agent reported in the node (default `meshlet`). */
  userAgent?: string;
  /** Called on connection changes and resource events (for debug logs and metrics). */
  onEvent?: (event: XdsClientEvent) => void;
  /**
   * `sotw` (default): state-of-the-world ADS. `delta`: incremental ADS (DeltaAggregatedResources)
   * with every server; a server with `delta_ads` in its `server_features` gets delta either way.
   * A server answering UNIMPLEMENTED to a delta stream is spoken to in state of the world from then on.
   */
  protocol?: 'sotw' | 'delta';
  /** Largest RE2 program a `safe_regex` may compile to; larger ones are NACKed (default 100, Envoy's). */
  maxRegexProgramSize?: number;
  /**
   * The certificate-provider instances TLS contexts may name (a cluster naming another is NACKed,
   * gRFC A29). Default: the bootstrap's `certificate_providers`.
   */
  certificateProviders?: readonly string[];
}

export type XdsClientEvent =
  | { kind: 'connected'; server: string }
  | {
      kind: 'disconnected';
      server: string;
      error: string;
      /** Whether the stream worked (then the client reconnects at once, backoff reset). */
      receivedResponse: boolean;
      /** The delay before the next stream, in ms. */
      retryInMs: number;
    }
  | { kind: 'ack'; typeUrl: string; version: string }
  | { kind: 'nack'; typeUrl: string; version: string; error: string }
  | { kind: 'doesNotExist'; typeUrl: string; name: string }
  /** The server does not implement delta ADS: the client uses state of the world from now on (once). */
  | { kind: 'protocolFallback'; server: string; error: string };

/** One resource in the CSDS-like dump. */
export interface XdsResourceDump {
  type: string;
  name: string;
  status: ResourceStatus;
  version: string | undefined;
  lastUpdated: string | undefined;
  error: string | undefined;
  failedVersion: string | undefined;
}

export interface XdsClientDump {
  node: string;
  servers: string[];
  /** The server of the current (or last) stream. */
  server: string | undefined;
  connected: boolean;
  streams: number;
  lastError: string | undefined;
  versions: Record<string, string>;
  resources: XdsResourceDump[];
}

/**
 * An ADS client (state of the world) on one gRPC stream per process. Resources are watched by type
 * and name; every response is ACKed or NACKed (with the reasons) per type; invalid resources keep
 * their last good version; the cache survives stream restarts, and the stream reconnects with
 * jittered exponential backoff forever, trying the bootstrap's servers in order (gRFC A71).
 */
export class XdsClient {
  readonly bootstrap: Bootstrap;
  readonly #types = new Map<ResourceType, TypeState>();
  readonly #resourceTimeoutMs: number;
  readonly #backoffBase: number;
  readonly #backoffMax: number;
  readonly #onEvent: ((e: XdsClientEvent) => void) | undefined;
  readonly #userAgent: string;
  readonly #translate: Translators;
  readonly #clients = new Map<number, grpc.Client>();
  #call: grpc.ClientDuplexStream<unknown, unknown> | undefined;
  #serverIndex = 0;
  #connected = false;
  #receivedOnStream = false;
  #sentNode = false;
  #failures = 0;
  #streams = 0;
  #lastError: string | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #closed = false;
  #readyWaiters: Array<() => void> = [];
  #started = false;
  readonly #protocol: 'sotw' | 'delta';
  /** Whether the current stream is a delta one. */
  #streamDelta = false;
  /** Indices of the servers that answered UNIMPLEMENTED to a delta stream (spoken to in SotW since). */
  readonly #noDelta = new Set<number>();
  /** Delta: when the current stream's response headers came (0: not yet). */
  #headersAt = 0;

  constructor(bootstrap: Bootstrap, options: XdsClientOptions = {}) {
    if (bootstrap.servers.length === 0) throw new Error('the xDS bootstrap names no server');
    this.bootstrap = bootstrap;
    this.#resourceTimeoutMs = options.resourceTimeoutMs ?? 15_000;
    this.#backoffBase = options.backoff?.baseMs ?? 1_000;
    this.#backoffMax = options.backoff?.maxMs ?? 30_000;
    this.#onEvent = options.onEvent;
    this.#userAgent = options.userAgent ?? 'meshlet';
    this.#protocol = options.protocol ?? 'sotw';
    this.#translate = translators({
      maxRegexProgramSize: options.maxRegexProgramSize,
      certificateProviders: new Set(
        options.certificateProviders ?? Object.keys(bootstrap.certificateProviders),
      ),
      isServerListener: serverListenerMatcher(bootstrap.serverListenerTemplate),
    });
    for (const t of [LDS_TYPE, RDS_TYPE, CDS_TYPE, EDS_TYPE] as const) {
      this.#types.set(t, {
        typeUrl: t,
        entries: new Map(),
        version: '',
        nonce: '',
        subscribed: false,
        sentNames: '',
        deltaNames: new Set(),
      });
    }
  }

  /** True while a stream is up and has received at least one response. */
  get connected(): boolean {
    return this.#connected;
  }

  /** True after every server of the bootstrap failed at least once since the last good stream. */
  get unreachable(): boolean {
    return !this.#receivedOnStream && this.#failures > 0;
  }

  get lastError(): string | undefined {
    return this.#lastError;
  }

  /**
   * Watches one resource. The watcher gets the cached value at once (asynchronously) if there is
   * one. Returns a function that stops watching (the last watcher unsubscribes the name).
   */
  watch<T>(typeUrl: ResourceType, name: string, watcher: ResourceWatcher<T>): () => void {
    const ts = this.#types.get(typeUrl) as TypeState;
    let e = ts.entries.get(name);
    const w = watcher as ResourceWatcher<unknown>;
    if (!e) {
      e = {
        name,
        watchers: new Set(),
        value: undefined,
        raw: undefined,
        eds: undefined,
        version: undefined,
        status: 'REQUESTED',
        error: undefined,
        failedVersion: undefined,
        updatedAt: undefined,
        timer: undefined,
      };
      ts.entries.set(name, e);
      e.watchers.add(w);
      this.#ensureStarted();
      this.#sendRequest(ts);
    } else {
      e.watchers.add(w);
      const entry = e;
      if (entry.value !== undefined) queueMicrotask(() => entry.watchers.has(w) && w.onUpdate(entry.value));
      else if (entry.status === 'DOES_NOT_EXIST')
        queueMicrotask(() => entry.watchers.has(w) && w.onDoesNotExist?.());
    }
    return () => {
      const cur = ts.entries.get(name);
      if (!cur?.watchers.delete(w) || cur.watchers.size > 0) return;
      if (cur.timer) clearTimeout(cur.timer);
      ts.entries.delete(name);
      if (!this.#closed) this.#sendRequest(ts);
    };
  }

  /** The cached value of a resource, if any. */
  get<T>(typeUrl: ResourceType, name: string): T | undefined {
    return this.#types.get(typeUrl)?.entries.get(name)?.value as T | undefined;
  }

  /** The last accepted version of a resource type ('' before the first). */
  versionOf(typeUrl: ResourceType): string {
    return this.#types.get(typeUrl)?.version ?? '';
  }

  /** Resolves at the first response (or once the client is known to be unreachable). */
  whenFirstAnswer(): Promise<void> {
    if (this.#receivedOnStream || this.unreachable || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#readyWaiters.push(resolve));
  }

  #wakeReady(): void {
    const ws = this.#readyWaiters;
    this.#readyWaiters = [];
    for (const w of ws) w();
  }

  #ensureStarted(): void {
    if (this.#started || this.#closed) return;
    this.#started = true;
    this.#connect();
  }

  /** A fresh channel per stream: credentials files are re-read and no broken connection is reused. */
  #grpcClient(index: number): grpc.Client {
    for (const old of this.#clients.values()) old.close();
    this.#clients.clear();
    const server = this.bootstrap.servers[index] as XdsServer;
    const Ctor = adsService().client;
    const c = new Ctor(server.uri, credentials(server), {
      'grpc.keepalive_time_ms': 30_000,
      'grpc.primary_user_agent': this.#userAgent,
      // Fail the stream fast when the server is unreachable, so that the next server is tried.
      'grpc.initial_reconnect_backoff_ms': 200,
      // gRFC A70: a larger response fails the stream with RESOURCE_EXHAUSTED.
      'grpc.max_receive_message_length': server.maxMessageSize ?? DEFAULT_MAX_XDS_MESSAGE_SIZE,
    });
    this.#clients.set(index, c);
    return c;
  }

  #connect(): void {
    if (this.#closed) return;
    const index = this.#serverIndex;
    const server = this.bootstrap.servers[index] as XdsServer;
    const client = this.#grpcClient(index);
    const delta = !this.#noDelta.has(index) && (this.#protocol === 'delta' || server.delta === true);
    this.#streamDelta = delta;
    const method = delta
      ? deltaAdsMethod()
      : (adsService().service.StreamAggregatedResources as grpc.MethodDefinition<unknown, unknown>);
    const call = client.makeBidiStreamRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      new grpc.Metadata(),
      {},
    );
    this.#call = call;
    this.#streams++;
    this.#receivedOnStream = false;
    this.#headersAt = 0;
    this.#sentNode = false;
    let ended = false;
    let gotData = false;
    const end = (err: Error | undefined) => {
      if (ended) return;
      ended = true;
      if (this.#call !== call) return;
      if (delta && !gotData && (err as { code?: unknown } | undefined)?.code === grpc.status.UNIMPLEMENTED)
        this.#fallBack(server, err as Error);
      else this.#onStreamEnd(server, err);
    };
    if (delta)
      // Response headers mean the server took the stream: with nothing changed since the cached
      // versions it may send no response at all.
      call.on('metadata', () => {
        if (this.#call !== call || this.#headersAt > 0) return;
        this.#headersAt = Date.now();
        if (!this.#connected) {
          this.#connected = true;
          this.#onEvent?.({ kind: 'connected', server: server.uri });
        }
      });
    call.on('data', (resp: unknown) => {
      if (this.#call !== call) return;
      gotData = true;
      try {
        if (delta) this.#onDeltaResponse(resp as DeltaDiscoveryResponse, server);
        else this.#onResponse(resp as DiscoveryResponse, server);
      } catch (err) {
        this.#lastError = `internal error handling a response: ${(err as Error).message}`;
      }
    });
    call.on('error', (err: Error) => end(err));
    call.on('status', (st: grpc.StatusObject) => {
      if (st.code !== grpc.status.OK)
        end(Object.assign(new Error(`${grpc.status[st.code]}: ${st.details}`), { code: st.code }));
      else end(new Error('the server ended the stream'));
    });
    call.on('end', () => end(new Error('the server ended the stream')));
    // Subscribe every type with names; resources keep their versions across streams.
    for (const ts of this.#types.values()) {
      ts.nonce = '';
      ts.subscribed = false;
      ts.sentNames = '';
      ts.deltaNames.clear();
      this.#sendRequest(ts);
    }
  }

  /** The server has no delta ADS: say so once and reconnect to it at once in state of the world. */
  #fallBack(server: XdsServer, err: Error): void {
    this.#call = undefined;
    this.#connected = false;
    this.#noDelta.add(this.#serverIndex);
    this.#lastError = `${server.uri}: ${err.message}`;
    for (const ts of this.#types.values()) {
      for (const e of ts.entries.values()) {
        if (e.timer) clearTimeout(e.timer);
        e.timer = undefined;
      }
    }
    if (this.#closed) return;
    this.#onEvent?.({ kind: 'protocolFallback', server: server.uri, error: this.#lastError });
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#connect();
    }, 0);
    this.#retryTimer.unref();
  }

  #onStreamEnd(server: XdsServer, err: Error | undefined): void {
    // A response larger than max_xds_message_size (gRFC A70) ends the stream with
    // RESOURCE_EXHAUSTED. The server will send it again on the next stream, so however many
    // responses came before it, that stream failed: back off (growing, never reset by the responses
    // before it), or the client reconnects in a tight loop.
    const exhausted = (err as { code?: unknown } | undefined)?.code === grpc.status.RESOURCE_EXHAUSTED;
    // A working stream: it carried a response — or (delta, where a server with nothing new for the
    // versions presented may send none) it was accepted and lived a while. Headers followed soon by
    // an error are a failure like an unreachable server: next server, then backoff.
    const had =
      !exhausted &&
      (this.#receivedOnStream ||
        (this.#headersAt > 0 && Date.now() - this.#headersAt >= QUIET_DELTA_STREAM_MS));
    this.#call = undefined;
    this.#connected = false;
    this.#lastError = `${server.uri}: ${err?.message ?? 'stream ended'}`;
    if (exhausted)
      this.#lastError += ` (max_xds_message_size is ${server.maxMessageSize ?? DEFAULT_MAX_XDS_MESSAGE_SIZE} bytes: raise it in the bootstrap's xds_servers entry if the control plane is right to send more, see docs/xds.md)`;
    for (const ts of this.#types.values()) {
      for (const e of ts.entries.values()) {
        // The does-not-exist timer only runs while a stream is up.
        if (e.timer) clearTimeout(e.timer);
        e.timer = undefined;
      }
    }
    if (this.#closed) return;
    let delay: number;
    if (had) {
      // A working stream broke: start over with the primary server, after a short jittered pause.
      this.#failures = 0;
      this.#serverIndex = 0;
      delay = jitter(Math.min(this.#backoffBase, 1_000) / 10);
    } else if (this.#serverIndex + 1 < this.bootstrap.servers.length) {
      // Unreachable: fall back to the next server at once (gRFC A71).
      this.#serverIndex++;
      delay = 0;
    } else {
      this.#failures++;
      this.#serverIndex = 0;
      delay = jitter(Math.min(this.#backoffMax, this.#backoffBase * 1.6 ** (this.#failures - 1)));
      this.#wakeReady();
    }
    this.#onEvent?.({
      kind: 'disconnected',
      server: server.uri,
      error: this.#lastError,
      receivedResponse: had,
      retryInMs: delay,
    });
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#connect();
    }, delay);
    this.#retryTimer.unref();
  }

  #node(): Msg {
    return this.nodeMessage(['envoy.lb.does_not_support_overprovisioning', 'xds.config.resource-in-sotw']);
  }

  /** The bootstrap's node as sent to the control plane, with `clientFeatures`. */
  nodeMessage(clientFeatures: readonly string[]): Msg {
    const n = this.bootstrap.node;
    return {
      id: n.id,
      cluster: n.cluster,
      metadata: n.metadata,
      locality: n.locality,
      userAgentName: this.#userAgent,
      userAgentVersion: '0.1.0',
      clientFeatures: [...clientFeatures],
    };
  }

  /** The server of the current (or last) ADS stream: `lrs_server: self` names it. */
  get currentServer(): XdsServer {
    return this.bootstrap.servers[this.#serverIndex] as XdsServer;
  }

  /** Sends the subscription of a type (with the current version and nonce). */
  #sendRequest(ts: TypeState, errorDetail?: string): void {
    const call = this.#call;
    if (!call || this.#closed) return;
    if (this.#streamDelta) {
      this.#sendDeltaRequest(ts, call);
      return;
    }
    const names = [...ts.entries.keys()].sort();
    const key = names.join('\n');
    if (errorDetail === undefined && ts.subscribed && key === ts.sentNames) return;
    if (names.length === 0 && !ts.subscribed) return;
    // LDS/CDS with no names would mean "everything": leave the subscription as it was.
    if (names.length === 0 && FULL_STATE.has(ts.typeUrl)) return;
    ts.subscribed = true;
    ts.sentNames = key;
    const req: Msg = {
      typeUrl: ts.typeUrl,
      resourceNames: names,
      versionInfo: ts.version,
      responseNonce: ts.nonce,
    };
    if (!this.#sentNode) {
      req.node = this.#node();
      this.#sentNode = true;
    }
    if (errorDetail !== undefined)
      req.errorDetail = { code: grpc.status.INVALID_ARGUMENT, message: errorDetail };
    call.write(req);
    for (const e of ts.entries.values()) this.#armTimer(ts, e);
  }

  #sendAck(ts: TypeState, errorDetail?: string): void {
    const call = this.#call;
    if (!call) return;
    const names = [...ts.entries.keys()].sort();
    ts.sentNames = names.join('\n');
    const req: Msg = {
      typeUrl: ts.typeUrl,
      resourceNames: names,
      versionInfo: ts.version,
      responseNonce: ts.nonce,
    };
    if (errorDetail !== undefined)
      req.errorDetail = { code: grpc.status.INVALID_ARGUMENT, message: errorDetail };
    call.write(req);
  }

  #armTimer(ts: TypeState, e: Entry): void {
    if (e.timer || e.value !== undefined || e.status !== 'REQUESTED' || !this.#call) return;
    e.timer = setTimeout(() => {
      e.timer = undefined;
      if (e.value !== undefined || ts.entries.get(e.name) !== e) return;
      e.status = 'DOES_NOT_EXIST';
      e.updatedAt = Date.now();
      this.#onEvent?.({ kind: 'doesNotExist', typeUrl: ts.typeUrl, name: e.name });
      for (const w of [...e.watchers]) w.onDoesNotExist?.();
    }, this.#resourceTimeoutMs);
    e.timer.unref();
  }

  #onResponse(resp: DiscoveryResponse, server: XdsServer): void {
    // The backoff (`#failures`) is reset when a working stream ends, not here: a stream that
    // then fails on an oversized response must not reset it.
    if (!this.#receivedOnStream) {
      this.#receivedOnStream = true;
      this.#connected = true;
      this.#onEvent?.({ kind: 'connected', server: server.uri });
    }
    const ts = this.#types.get(resp.typeUrl as ResourceType);
    if (!ts) {
      // A type this client never asked for: NACK it so the server knows.
      this.#call?.write({
        typeUrl: resp.typeUrl,
        responseNonce: resp.nonce,
        errorDetail: {
          code: grpc.status.INVALID_ARGUMENT,
          message: `unsupported resource type ${resp.typeUrl}`,
        },
      });
      this.#wakeReady();
      return;
    }
    ts.nonce = resp.nonce ?? '';
    const version = resp.versionInfo ?? '';
    const translate = this.#translate[ts.typeUrl];
    const maxResource = server.maxResourceSize ?? DEFAULT_MAX_XDS_MESSAGE_SIZE;
    const errors: string[] = [];
    const seen = new Set<string>();
    const now = Date.now();
    const updates: Array<[Entry, unknown, string]> = [];
    const edsStates: Array<[Entry, EdsState]> = [];
    const failed: Array<[Entry, Error, string]> = [];
    (resp.resources ?? []).forEach((any, i) => {
      let typeUrl = any.type_url ?? '';
      let bytes: Uint8Array = any.value ?? new Uint8Array();
      let m: Msg;
      let name: string | undefined;
      try {
        if (typeUrl === RESOURCE_WRAPPER) {
          // `Resource` wrappers in a SotW response (xds.config.resource-in-sotw).
          const wrapper = lookupType(RESOURCE_WRAPPER).decode(bytes) as unknown as {
            name?: string;
            resource?: { type_url?: string; value?: Uint8Array };
          };
          name = wrapper.name || undefined;
          if (!wrapper.resource) throw new XdsDecodeError('resource', 'is missing');
          typeUrl = wrapper.resource.type_url ?? '';
          bytes = wrapper.resource.value ?? new Uint8Array();
        }
        if (typeUrl !== ts.typeUrl)
          throw new XdsDecodeError('', `has type ${typeUrl}, expected ${ts.typeUrl}`);
        if (bytes.length > maxResource) {
          name ??= peekResourceName(bytes);
          throw oversized(bytes.length, maxResource);
        }
        if (ts.typeUrl === EDS_TYPE) {
          // EDS: unchanged bytes are skipped before any decoding; changed ones are translated
          // incrementally against the last good version (see eds.ts).
          const peeked = peekClusterName(bytes);
          const known = peeked === undefined ? undefined : ts.entries.get(peeked);
          if (
            known !== undefined &&
            known.status === 'ACKED' &&
            known.raw !== undefined &&
            sameBytes(known.raw, bytes)
          ) {
            seen.add(known.name);
            known.version = version;
            return;
          }
          name = peeked;
          const state = translateEndpointsIncremental(bytes, known?.eds);
          name = state.update.name;
          seen.add(name);
          const e = ts.entries.get(name);
          if (!e) return; // not subscribed (or a wildcard extra): ignore
          e.raw = bytes;
          edsStates.push([e, state]);
          updates.push([e, state.update, version]);
          return;
        }
        m = decodeAny(typeUrl, bytes);
        name = (m.name ?? m.clusterName) as string | undefined;
        const value = translate(m);
        name = value.name;
        seen.add(name);
        const e = ts.entries.get(name);
        if (!e) return; // not subscribed (or a wildcard extra): ignore
        if (e.status === 'ACKED' && e.raw !== undefined && sameBytes(e.raw, bytes)) {
          e.version = version;
          return;
        }
        e.raw = bytes;
        updates.push([e, value, version]);
      } catch (err) {
        const message = `${name ? `${SHORT[ts.typeUrl]} "${name}"` : `resource [${i}]`}: ${(err as Error).message}`;
        errors.push(message);
        if (name) {
          seen.add(name);
          const e = ts.entries.get(name);
          if (e) failed.push([e, new Error(message), version]);
        }
      }
    });
    const removed: Entry[] = [];
    if (FULL_STATE.has(ts.typeUrl) && !server.ignoreResourceDeletion) {
      for (const e of ts.entries.values()) {
        if (!seen.has(e.name) && (e.value !== undefined || e.status === 'ACKED' || e.status === 'NACKED'))
          removed.push(e);
      }
    }
    if (errors.length > 0) {
      const detail = errors.join('; ');
      this.#sendAck(ts, detail);
      this.#onEvent?.({ kind: 'nack', typeUrl: ts.typeUrl, version, error: detail });
    } else {
      ts.version = version;
      this.#sendAck(ts);
      this.#onEvent?.({ kind: 'ack', typeUrl: ts.typeUrl, version });
    }
    // Valid resources of a NACKed response are applied (gRPC semantics); invalid ones keep the last good value.
    this.#commit(ts, now, edsStates, updates, failed, removed, version);
  }

  #markReceived(server: XdsServer): void {
    if (this.#receivedOnStream) return;
    this.#receivedOnStream = true;
    if (!this.#connected) {
      this.#connected = true;
      this.#onEvent?.({ kind: 'connected', server: server.uri });
    }
  }

  /**
   * Delta: subscribes the names watched but not yet subscribed on this stream and unsubscribes the
   * ones no longer watched. The first request of a type on a stream names every watched resource
   * (never empty, so never a wildcard subscription) and the versions of the cached ones.
   */
  #sendDeltaRequest(ts: TypeState, call: grpc.ClientDuplexStream<unknown, unknown>): void {
    const subscribe = [...ts.entries.keys()].filter((n) => !ts.deltaNames.has(n)).sort();
    const unsubscribe = [...ts.deltaNames].filter((n) => !ts.entries.has(n)).sort();
    if (subscribe.length === 0 && unsubscribe.length === 0) return;
    const req: Msg = {
      typeUrl: ts.typeUrl,
      resourceNamesSubscribe: subscribe,
      resourceNamesUnsubscribe: unsubscribe,
    };
    if (!ts.subscribed) {
      const initial: Record<string, string> = {};
      for (const e of ts.entries.values())
        if (e.value !== undefined && e.version !== undefined) initial[e.name] = e.version;
      req.initialResourceVersions = initial;
      ts.subscribed = true;
    }
    if (!this.#sentNode) {
      req.node = this.#node();
      this.#sentNode = true;
    }
    for (const n of subscribe) ts.deltaNames.add(n);
    for (const n of unsubscribe) ts.deltaNames.delete(n);
    call.write(req);
    for (const e of ts.entries.values()) this.#armTimer(ts, e);
  }

  /** Delta: applies added/updated resources (each with its version) and removals, then (N)ACKs by nonce. */
  #onDeltaResponse(resp: DeltaDiscoveryResponse, server: XdsServer): void {
    this.#markReceived(server);
    const nonce = resp.nonce ?? '';
    const ts = this.#types.get(resp.typeUrl as ResourceType);
    if (!ts) {
      this.#call?.write({
        typeUrl: resp.typeUrl,
        responseNonce: nonce,
        errorDetail: {
          code: grpc.status.INVALID_ARGUMENT,
          message: `unsupported resource type ${resp.typeUrl}`,
        },
      });
      this.#wakeReady();
      return;
    }
    ts.nonce = nonce;
    const systemVersion = resp.systemVersionInfo ?? '';
    const translate = this.#translate[ts.typeUrl];
    const maxResource = server.maxResourceSize ?? DEFAULT_MAX_XDS_MESSAGE_SIZE;
    const errors: string[] = [];
    const now = Date.now();
    const updates: Array<[Entry, unknown, string]> = [];
    const edsStates: Array<[Entry, EdsState]> = [];
    const failed: Array<[Entry, Error, string]> = [];
    (resp.resources ?? []).forEach((r, i) => {
      const version = r.version ?? '';
      let name: string | undefined = r.name || undefined;
      try {
        const any = r.resource;
        if (!any) throw new XdsDecodeError('resource', 'is missing');
        const typeUrl = any.type_url ?? '';
        const bytes: Uint8Array = any.value ?? new Uint8Array();
        if (typeUrl !== ts.typeUrl)
          throw new XdsDecodeError('', `has type ${typeUrl}, expected ${ts.typeUrl}`);
        if (bytes.length > maxResource) {
          name ??= peekResourceName(bytes);
          throw oversized(bytes.length, maxResource);
        }
        let value: { name: string };
        let state: EdsState | undefined;
        if (ts.typeUrl === EDS_TYPE) {
          const peeked = peekClusterName(bytes) ?? name;
          const known = peeked === undefined ? undefined : ts.entries.get(peeked);
          if (known?.status === 'ACKED' && known.raw !== undefined && sameBytes(known.raw, bytes)) {
            known.version = version;
            return;
          }
          name = name ?? peeked;
          state = translateEndpointsIncremental(bytes, known?.eds);
          value = state.update;
        } else {
          const m = decodeAny(typeUrl, bytes);
          name = name ?? ((m.name ?? m.clusterName) as string | undefined);
          value = translate(m);
        }
        if (name !== undefined && value.name !== name)
          throw new XdsDecodeError('name', `is "${value.name}" but the Resource is named "${name}"`);
        name = value.name;
        const e = ts.entries.get(name);
        if (!e) return; // not (or no longer) subscribed: ignore
        if (e.status === 'ACKED' && e.raw !== undefined && sameBytes(e.raw, bytes)) {
          e.version = version;
          return;
        }
        e.raw = bytes;
        if (state) edsStates.push([e, state]);
        updates.push([e, value, version]);
      } catch (err) {
        const message = `${name ? `${SHORT[ts.typeUrl]} "${name}"` : `resource [${i}]`}: ${(err as Error).message}`;
        errors.push(message);
        const e = name === undefined ? undefined : ts.entries.get(name);
        if (e) failed.push([e, new Error(message), version]);
      }
    });
    const removed: Entry[] = [];
    const keep = FULL_STATE.has(ts.typeUrl) && server.ignoreResourceDeletion;
    for (const n of resp.removedResources ?? []) {
      const e = ts.entries.get(n);
      // `ignore_resource_deletion` protects resources the client has, not names it never got.
      if (e && !(keep && e.value !== undefined) && !(e.status === 'DOES_NOT_EXIST' && e.value === undefined))
        removed.push(e);
    }
    if (errors.length > 0) {
      const detail = errors.join('; ');
      this.#call?.write({
        typeUrl: ts.typeUrl,
        responseNonce: nonce,
        errorDetail: { code: grpc.status.INVALID_ARGUMENT, message: detail },
      });
      this.#onEvent?.({ kind: 'nack', typeUrl: ts.typeUrl, version: systemVersion, error: detail });
    } else {
      if (systemVersion !== '') ts.version = systemVersion;
      this.#call?.write({ typeUrl: ts.typeUrl, responseNonce: nonce });
      this.#onEvent?.({ kind: 'ack', typeUrl: ts.typeUrl, version: systemVersion });
    }
    // As in state of the world: valid resources apply, invalid ones keep their last good version.
    this.#commit(ts, now, edsStates, updates, failed, removed, undefined);
  }

  /**
   * Records the outcome of one response in the cache (each entry with its version) and then tells
   * the watchers: updated values, rejected resources, resources that no longer exist (recorded
   * with `removedVersion`).
   */
  #commit(
    ts: TypeState,
    now: number,
    edsStates: ReadonlyArray<[Entry, EdsState]>,
    updates: ReadonlyArray<[Entry, unknown, string]>,
    failed: ReadonlyArray<[Entry, Error, string]>,
    removed: readonly Entry[],
    removedVersion: string | undefined,
  ): void {
    for (const [e, state] of edsStates) e.eds = state;
    for (const [e, value, version] of updates) {
      e.value = value;
      e.version = version;
      e.status = 'ACKED';
      e.error = undefined;
      e.failedVersion = undefined;
      e.updatedAt = now;
      if (e.timer) clearTimeout(e.timer);
      e.timer = undefined;
    }
    for (const [e, err, version] of failed) {
      e.status = 'NACKED';
      e.error = err.message;
      e.failedVersion = version;
      e.updatedAt = now;
      if (e.timer) clearTimeout(e.timer);
      e.timer = undefined;
    }
    for (const e of removed) {
      e.value = undefined;
      e.raw = undefined;
      e.eds = undefined;
      e.status = 'DOES_NOT_EXIST';
      e.version = removedVersion;
      e.updatedAt = now;
      if (e.timer) clearTimeout(e.timer);
      e.timer = undefined;
    }
    for (const [e, value] of updates) for (const w of [...e.watchers]) w.onUpdate(value);
    for (const [e, err] of failed) for (const w of [...e.watchers]) w.onError?.(err);
    for (const e of removed) {
      this.#onEvent?.({ kind: 'doesNotExist', typeUrl: ts.typeUrl, name: e.name });
      for (const w of [...e.watchers]) w.onDoesNotExist?.();
    }
    this.#wakeReady();
  }

  /** A CSDS-like dump: per resource its status, version and last update. */
  dump(): XdsClientDump {
    const resources: XdsResourceDump[] = [];
    const versions: Record<string, string> = {};
    for (const ts of this.#types.values()) {
      versions[SHORT[ts.typeUrl]] = ts.version;
      for (const e of ts.entries.values()) {
        resources.push({
          type: SHORT[ts.typeUrl],
          name: e.name,
          status: e.status,
          version: e.version,
          lastUpdated: e.updatedAt === undefined ? undefined : new Date(e.updatedAt).toISOString(),
          error: e.error,
          failedVersion: e.failedVersion,
        });
      }
    }
    return {
      node: this.bootstrap.node.id,
      servers: this.bootstrap.servers.map((s) => s.uri),
      server: this.bootstrap.servers[this.#serverIndex]?.uri,
      connected: this.#connected,
      streams: this.#streams,
      lastError: this.#lastError,
      versions,
      resources,
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    for (const ts of this.#types.values())
      for (const e of ts.entries.values()) if (e.timer) clearTimeout(e.timer);
    const call = this.#call;
    this.#call = undefined;
    call?.cancel();
    for (const c of this.#clients.values()) c.close();
    this.#clients.clear();
    this.#wakeReady();
  }
}

interface DiscoveryResponse {
  versionInfo?: string;
  typeUrl: string;
  nonce?: string;
  /** `google.protobuf.Any` keeps its snake_case field names in protobufjs' built-in definition. */
  resources?: Array<{ type_url?: string; value?: Uint8Array }>;
}

interface DeltaDiscoveryResponse {
  systemVersionInfo?: string;
  typeUrl: string;
  nonce?: string;
  resources?: Array<{
    name?: string;
    version?: string;
    resource?: { type_url?: string; value?: Uint8Array } | null;
  }>;
  removedResources?: string[];
}

/** gRFC A70: a resource above `max_xds_resource_size` is NACKed; the rest of the response is used. */
function oversized(size: number, max: number): XdsDecodeError {
  return new XdsDecodeError(
    '',
    `is ${size} bytes, more than max_xds_resource_size (${max} bytes; raise it in the bootstrap, see docs/xds.md)`,
  );
}

function jitter(ms: number): number {
  return Math.max(0, Math.round(ms * (0.8 + Math.random() * 0.4)));
}

/** The channel credentials of a bootstrap server (files read now, so rotated ones are picked up). */
export function credentials(server: XdsServer): grpc.ChannelCredentials {
  const c = server.creds;
  if (c.type === 'insecure') return grpc.credentials.createInsecure();
  const read = (f: string | undefined) => (f === undefined ? null : readFileSync(f));
  return grpc.credentials.createSsl(read(c.caFile), read(c.keyFile), read(c.certFile));
}
