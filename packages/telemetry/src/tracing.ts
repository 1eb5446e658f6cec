import {
  type CallHook,
  type CallInfo,
  type CallObserver,
  type EndpointState,
  grpcStatusName,
  type Outcome,
  type Transport,
} from '@meshlet/core';
import {
  type Attributes,
  type Context,
  context,
  createTraceState,
  INVALID_SPAN_CONTEXT,
  INVALID_TRACEID,
  isSpanContextValid,
  isValidSpanId,
  isValidTraceId,
  ProxyTracerProvider,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  type Tracer,
  type TracerProvider,
  trace,
} from '@opentelemetry/api';
import type { Propagation, TracingConfig } from './config.js';
import { VERSION } from './version.js';

/**
 * The span context of the request whose `request` event is being delivered right now. The client
 * hook sets it synchronously just before the mesh emits the event, and the telemetry's request
 * listener clears it after use: it lets metrics exemplars and access logs carry trace ids without
 * adding a field to the core event.
 */
export class TraceStash {
  traceId: string | undefined = undefined;
  spanId: string | undefined = undefined;
  service: string | undefined = undefined;
  set(sc: SpanContext, service: string): void {
    this.traceId = sc.traceId;
    this.spanId = sc.spanId;
    this.service = service;
  }
  /** Keeps the ids only if they belong to a request of `service` (guards against a stale stash). */
  check(service: string): void {
    // An empty stash (no trace: nearly every request without an SDK) is left as it is.
    if (this.service !== undefined && this.service !== service) this.clear();
  }
  clear(): void {
    if (this.service === undefined) return; // empty already (`set` sets all three)
    this.traceId = undefined;
    this.spanId = undefined;
    this.service = undefined;
  }
}

// ---- propagation ----------------------------------------------------------------------------

const TRACEPARENT_RE = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/** Formats a W3C `traceparent` header value. */
export function formatTraceparent(sc: SpanContext): string {
  const flags = (sc.traceFlags & 0xff).toString(16).padStart(2, '0');
  return `00-${sc.traceId}-${sc.spanId}-${flags}`;
}

/** Parses a W3C `traceparent` (version 00, or a later version read as 00); undefined when invalid. */
export function parseTraceparent(value: string | undefined): SpanContext | undefined {
  if (value === undefined) return undefined;
  const m = TRACEPARENT_RE.exec(value.trim());
  if (!m) return undefined;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [
    string,
    string,
    string,
    string,
    string,
    string?,
  ];
  if (version === 'ff') return undefined;
  if (version === '00' && rest !== undefined) return undefined;
  if (!isValidTraceId(traceId) || !isValidSpanId(spanId)) return undefined;
  return { traceId, spanId, traceFlags: Number.parseInt(flags, 16) & 0xff, isRemote: true };
}

/** Parses a single-header `b3` value (`traceid-spanid[-sampled[-parent]]`); undefined when invalid or `0`. */
export function parseB3(value: string | undefined): SpanContext | undefined {
  if (value === undefined) return undefined;
  const parts = value.trim().split('-');
  if (parts.length < 2) return undefined;
  const [tid, sid, sampled] = parts as [string, string, string?];
  return b3Context(tid, sid, sampled);
}

function b3Context(tid: string, sid: string, sampled: string | undefined): SpanContext | undefined {
  const traceId = tid.length === 16 ? `0000000000000000${tid}` : tid;
  const t = traceId.toLowerCase();
  const s = sid.toLowerCase();
  if (!isValidTraceId(t) || !isValidSpanId(s)) return undefined;
  const flags =
    sampled === '1' || sampled === 'd' || sampled === 'true' ? TraceFlags.SAMPLED : TraceFlags.NONE;
  return { traceId: t, spanId: s, traceFlags: flags, isRemote: true };
}

/** Header lookup used by extraction: give it a function over the inbound request's headers. */
export type HeaderGetter = (lowerName: string) => string | undefined;

/** Request headers by lower-case name, as Node gives them (`IncomingHttpHeaders`). */
export type HeaderRecord = Readonly<Record<string, string | readonly string[] | undefined>>;

/** Where extraction reads headers from: a getter, or the headers themselves. */
export type HeaderSource = HeaderGetter | HeaderRecord;

/** Builds a getter over Node's `IncomingHttpHeaders` (or any record of lower-case names). */
export function headerGetter(headers: HeaderRecord): HeaderGetter {
  return (name) => readHeader(headers, name);
}

function readHeader(h: HeaderSource, name: string): string | undefined {
  if (typeof h === 'function') return h(name);
  const v = h[name];
  return typeof v === 'string' || v === undefined ? v : v.join(',');
}

/**
 * Extracts the remote parent from inbound headers in the configured formats (first valid wins,
 * in the order given) and returns `base` with it set as the span context.
 */
export function extractContext(
  headers: HeaderSource,
  formats: readonly Propagation[],
  base: Context = ROOT_CONTEXT,
): Context {
  // An index loop: an array iterator per request where this code is not fully optimized.
  for (let i = 0; i < formats.length; i++) {
    const f = formats[i] as Propagation;
    let sc: SpanContext | undefined;
    if (f === 'w3c') {
      sc = parseTraceparent(readHeader(headers, 'traceparent'));
      if (sc) {
        const ts = readHeader(headers, 'tracestate');
        if (ts) {
          try {
            sc = { ...sc, traceState: createTraceState(ts) };
          } catch {
            // an invalid tracestate is dropped, the traceparent kept (W3C §3.3)
          }
        }
      }
    } else if (f === 'b3') {
      sc = parseB3(readHeader(headers, 'b3'));
    } else {
      const tid = readHeader(headers, 'x-b3-traceid');
      const sid = readHeader(headers, 'x-b3-spanid');
      if (tid && sid)
        sc = b3Context(
          tid,
          sid,
          readHeader(headers, 'x-b3-sampled') ??
            (readHeader(headers, 'x-b3-flags') === '1' ? 'd' : undefined),
        );
    }
    if (sc) return trace.setSpanContext(base, sc);
  }
  return base;
}

/** The headers (flat `[name, value, …]`) that carry `sc` in `formats`. */
export function injectHeaders(sc: SpanContext, formats: readonly Propagation[]): string[] {
  const out: string[] = [];
  const sampled = (sc.traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED;
  for (const f of formats) {
    if (f === 'w3c') {
      out.push('traceparent', formatTraceparent(sc));
      const ts = sc.traceState?.serialize();
      if (ts) out.push('tracestate', ts);
    } else if (f === 'b3') {
      out.push('b3', `${sc.traceId}-${sc.spanId}-${sampled ? '1' : '0'}`);
    } else {
      out.push('x-b3-traceid', sc.traceId, 'x-b3-spanid', sc.spanId, 'x-b3-sampled', sampled ? '1' : '0');
    }
  }
  return out;
}

// ---- client ---------------------------------------------------------------------------------

/**
 * Where the OpenTelemetry API (major version 1) keeps what is registered globally — the context
 * manager under `context`, the tracer provider under `trace` — created by the first registration.
 * A test checks that the API still registers there.
 */
export const OTEL_API_GLOBAL = Symbol.for('opentelemetry.js.api.1');

/**
 * Whether anything may answer `context.active()` with another context than the root: a context
 * manager registered with the API (any version: the API itself then checks compatibility). One
 * property read of the global object; a manager registered later is seen on the next call.
 */
function contextManagerRegistered(): boolean {
  const api = (globalThis as { [OTEL_API_GLOBAL]?: { context?: unknown } })[OTEL_API_GLOBAL];
  return api !== undefined && api.context !== undefined;
}

/** The provider a ProxyTracerProvider delegates to while no SDK is registered. */
const NOOP_PROVIDER = new ProxyTracerProvider().getDelegate();
/** The span of requests nobody traces (no SDK, no caller's trace): records and carries nothing. */
const NO_SPAN: Span = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/** A gRPC method path (`/pkg.Service/Method`) as the RPC conventions name it (`pkg.Service/Method`). */
export function rpcMethod(path: string): string {
  return path.charCodeAt(0) === 47 ? path.slice(1) : path;
}

function hostPort(authority: string): { host: string; port: number | undefined } {
  const close = authority.lastIndexOf(']');
  const colon = authority.lastIndexOf(':');
  if (colon > close && colon > 0) {
    const port = Number(authority.slice(colon + 1));
    return { host: authority.slice(0, colon), port: Number.isInteger(port) ? port : undefined };
  }
  return { host: authority, port: undefined };
}

/**
 * `error.type` of a call or attempt: the error's code (a `MESHLET_ERR_*` code, a gRPC status
 * name), an HTTP status of 400 and above, a gRPC status other than OK by name (every non-OK code
 * is an error, as the gRPC conventions say), else the outcome when it is a failure.
 */
function errorType(
  transport: Transport,
  outcome: Outcome,
  status: number | undefined,
  error: Error | undefined,
): string | undefined {
  if (error !== undefined) return (error as { code?: unknown }).code?.toString() ?? error.name;
  if (status !== undefined) {
    if (transport === 'grpc') return status === 0 ? undefined : grpcStatusName(status);
    if (status >= 400) return String(status);
  }
  if (outcome !== 'success' && outcome !== 'http_error') return outcome;
  return undefined;
}

/**
 * Sets a status on span attributes: `http.response.status_code` for HTTP; for gRPC the
 * conventions' `rpc.status_code` (the code's name) and the older `rpc.grpc.status_code` (its number,
 * what existing dashboards read).
 */
function setStatus(attrs: Attributes, transport: Transport, status: number): void {
  if (transport === 'grpc') {
    attrs['rpc.status_code'] = grpcStatusName(status);
    attrs['rpc.grpc.status_code'] = status;
  } else attrs['http.response.status_code'] = status;
}

class ClientObserver implements CallObserver {
  readonly headers: readonly string[] | undefined;
  readonly #span: Span;
  readonly #tracing: ClientTracing;
  readonly #ctx: Context | undefined;
  readonly #name: string;
  readonly #service: string;
  readonly #transport: Transport;

  constructor(
    span: Span,
    headers: readonly string[] | undefined,
    tracing: ClientTracing,
    ctx: Context | undefined,
    name: string,
    service: string,
    transport: Transport,
  ) {
    this.#span = span;
    this.#name = name;
    this.#service = service;
    this.#transport = transport;
    this.headers = headers;
    this.#tracing = tracing;
    this.#ctx = ctx;
  }

  attemptEnd(
    endpoint: EndpointState,
    attempt: number,
    outcome: Outcome,
    status: number | undefined,
    durationMs: number,
    error: Error | undefined,
    retryReason: string | undefined,
  ): void {
    const span = this.#span;
    if (!span.isRecording()) return;
    const attrs: Attributes = {
      'meshlet.attempt': attempt,
      'meshlet.endpoint': endpoint.id,
      'network.peer.address': endpoint.endpoint.address,
      'network.peer.port': endpoint.endpoint.port,
      'meshlet.outcome': outcome,
      'meshlet.duration_ms': Math.round(durationMs * 1000) / 1000,
    };
    if (status !== undefined) setStatus(attrs, this.#transport, status);
    // An HTTP answer (a 404) is an error of the call, not of the attempt; every non-OK gRPC code is.
    const et =
      outcome === 'success' && this.#transport === 'http'
        ? undefined
        : errorType(this.#transport, outcome, status, error);
    if (et !== undefined) attrs['error.type'] = et;
    if (error !== undefined) attrs['meshlet.error'] = error.message;
    if (retryReason !== undefined) attrs['meshlet.retry_reason'] = retryReason;
    // An attempt is recorded when the next one starts or the request ends: only then is it known
    // whether a failed attempt was retried (the retry reason of a connect failure, reset or
    // per-try timeout is decided after the attempt ended).
    this.#flush(true);
    this.#pending = { attrs, end: Date.now(), durationMs, failed: et !== undefined, errorType: et };
  }

  #pending:
    | { attrs: Attributes; end: number; durationMs: number; failed: boolean; errorType: string | undefined }
    | undefined;

  #flush(retried: boolean): void {
    const p = this.#pending;
    if (p === undefined) return;
    this.#pending = undefined;
    if (retried && p.attrs['meshlet.retry_reason'] === undefined)
      p.attrs['meshlet.retry_reason'] = String(p.attrs['meshlet.outcome']).replaceAll('_', '-');
    if (this.#tracing.attemptSpans && this.#ctx !== undefined) {
      const child = this.#tracing.tracer.startSpan(
        this.#name,
        { kind: SpanKind.CLIENT, startTime: p.end - p.durationMs, attributes: p.attrs },
        this.#ctx,
      );
      if (p.failed) child.setStatus({ code: SpanStatusCode.ERROR, message: p.errorType });
      child.end(p.end);
    } else {
      this.#span.addEvent('meshlet.attempt', p.attrs, p.end);
    }
  }

  end(
    outcome: Outcome,
    status: number | undefined,
    attempts: number,
    endpoint: EndpointState | undefined,
    error: Error | undefined,
  ): void {
    const span = this.#span;
    const sc = span.spanContext();
    if (isSpanContextValid(sc)) this.#tracing.stash.set(sc, this.#service);
    if (!span.isRecording()) return;
    this.#flush(false);
    const grpc = this.#transport === 'grpc';
    if (status !== undefined) {
      if (grpc) {
        span.setAttribute('rpc.status_code', grpcStatusName(status));
        span.setAttribute('rpc.grpc.status_code', status);
      } else span.setAttribute('http.response.status_code', status);
    }
    if (attempts > 1)
      span.setAttribute(grpc ? 'meshlet.resend_count' : 'http.request.resend_count', attempts - 1);
    span.setAttribute('meshlet.outcome', outcome);
    if (endpoint !== undefined) {
      span.setAttribute('network.peer.address', endpoint.endpoint.address);
      span.setAttribute('network.peer.port', endpoint.endpoint.port);
    }
    const et = errorType(this.#transport, outcome, status, error);
    if (et !== undefined) {
      span.setAttribute('error.type', et);
      span.setStatus({ code: SpanStatusCode.ERROR, message: error?.message });
    }
    if (error !== undefined) span.recordException(error);
    span.end();
  }
}

/**
 * Tracing of outbound mesh calls, HTTP and gRPC alike: a CLIENT span per logical call (parented on
 * the context active when the call was made), per-attempt detail as span events (or child spans),
 * and the propagation headers injected once per logical call. It is core's outbound observer
 * contract (`CallHook`), installed on the mesh with `Mesh.setCallHook` by `installTelemetry`.
 */
export class ClientTracing implements CallHook {
  readonly tracer: Tracer;
  readonly formats: readonly Propagation[];
  readonly attemptSpans: boolean;
  readonly stash: TraceStash;

  readonly #proxy: ProxyTracerProvider | undefined;

  constructor(provider: TracerProvider, config: TracingConfig, stash: TraceStash) {
    this.tracer = provider.getTracer('@meshlet/telemetry', VERSION);
    this.#proxy = provider instanceof ProxyTracerProvider ? provider : undefined;
    this.formats = config.propagation;
    this.attemptSpans = config.attemptSpans;
    this.stash = stash;
  }

  start(info: CallInfo): CallObserver | undefined {
    // The global provider with no SDK behind it: skip span construction entirely unless there is
    // a remote parent to pass along (near-zero cost when tracing is not set up).
    const proxy = this.#proxy;
    let parent: Context;
    if (proxy !== undefined && proxy.getDelegate() === NOOP_PROVIDER) {
      // No context manager registered: the API's answer is the root context, which holds no span
      // (no `context.active()`: its global lookups and version check cost ~150 instructions).
      if (!contextManagerRegistered()) return undefined;
      parent = context.active();
      // The root context holds no span: no lookup in it (a Map lookup per request).
      if (parent === ROOT_CONTEXT) return undefined;
      const psc = trace.getSpanContext(parent);
      if (psc === undefined || !isSpanContextValid(psc)) return undefined;
    } else parent = context.active();
    const { host, port } = hostPort(info.authority);
    const grpc = info.transport === 'grpc';
    // gRPC: the RPC conventions (`rpc.system.name`, `rpc.method` as `pkg.Service/Method`), plus
    // the older `rpc.system` / `rpc.service` that existing backends read.
    const method = grpc ? rpcMethod(info.path) : '';
    const attributes: Attributes = grpc
      ? {
          'rpc.system.name': 'grpc',
          'rpc.system': 'grpc',
          'rpc.method': method,
          'rpc.service': method.slice(0, Math.max(0, method.lastIndexOf('/'))),
          'server.address': host,
          'meshlet.service': info.service.name,
        }
      : {
          'http.request.method': info.method,
          'server.address': host,
          'url.full': `http://${info.authority}${info.path}`,
          'meshlet.service': info.service.name,
        };
    if (port !== undefined) attributes['server.port'] = port;
    // gRPC spans are named after the method (`pkg.Service/Method`), HTTP spans after the verb.
    const name = grpc ? method : info.method;
    const span = this.tracer.startSpan(name, { kind: SpanKind.CLIENT, attributes }, parent);
    const sc = span.spanContext();
    // No provider: a non-recording span with no valid context; nothing to observe or propagate.
    if (!isSpanContextValid(sc)) return undefined;
    const obs = new ClientObserver(
      span,
      injectHeaders(sc, this.formats),
      this,
      this.attemptSpans && span.isRecording() ? trace.setSpan(parent, span) : undefined,
      name,
      info.service.name,
      info.transport,
    );
    return obs;
  }
}

// ---- server ---------------------------------------------------------------------------------

export interface ServerSpanInfo {
  readonly method: string;
  /** The request target path (without the query string is best). */
  readonly path: string;
  /** The matched route template (`/reviews/:id`), when the framework knows it. */
  readonly route?: string | undefined;
  readonly scheme?: 'http' | 'https' | undefined;
  readonly serverAddress?: string | undefined;
  readonly serverPort?: number | undefined;
  /** The client's IP address (without the port). */
  readonly clientAddress?: string | undefined;
  readonly clientPort?: number | undefined;
  readonly userAgent?: string | undefined;
  /** The verified peer identity (SPIFFE ID) under mTLS. */
  readonly peerIdentity?: string | undefined;
  /** Reads an inbound header by lower-case name (see `headerGetter`). */
  readonly header: HeaderGetter;
  /** The inbound headers themselves, when at hand: extraction reads them directly, not through `header`. */
  readonly headers?: HeaderRecord | undefined;
}

/**
 * Server-side spans for the Express/Fastify/gRPC adapters: `start()` extracts the remote parent
 * (W3C `traceparent`/`tracestate`, or B3 when configured), starts a SERVER span and returns the
 * context to run the handler in.
 */
export class ServerTracing {
  readonly tracer: Tracer;
  readonly formats: readonly Propagation[];
  readonly enabled: boolean;

  readonly #proxy: ProxyTracerProvider | undefined;

  constructor(provider: TracerProvider, config: TracingConfig) {
    this.tracer = provider.getTracer('@meshlet/telemetry', VERSION);
    this.#proxy = provider instanceof ProxyTracerProvider ? provider : undefined;
    this.formats = config.propagation;
    this.enabled = config.enabled;
  }

  /** Starts a SERVER span; returns it with the context that has it active. */
  start(info: ServerSpanInfo): { span: Span; context: Context } {
    const parent = this.parentOf(info, context.active());
    const span = this.spanFor(info, parent);
    return { span, context: this.contextFor(span, parent) };
  }

  /** `base` with the caller's trace (from `info`'s headers) as the remote parent; `base` when tracing is off or there is none. */
  parentOf(info: ServerSpanInfo, base: Context): Context {
    // Tracing off: no trace carried on (the caller's trace headers are ignored).
    if (!this.enabled) return base;
    return extractContext(info.headers ?? info.header, this.formats, base);
  }

  /**
   * The SERVER span of a request under `parent` (from `parentOf`): a no-op span when tracing is off,
   * or when the global provider has no SDK behind it and there is no caller's trace to carry on
   * (nothing to record or propagate: no span or attributes are built for the request).
   */
  spanFor(info: ServerSpanInfo, parent: Context): Span {
    if (!this.enabled) return NO_SPAN;
    const proxy = this.#proxy;
    if (proxy !== undefined && proxy.getDelegate() === NOOP_PROVIDER) {
      const psc = trace.getSpanContext(parent);
      if (psc === undefined || !isSpanContextValid(psc)) return NO_SPAN;
    }
    const attributes: Attributes = {
      'http.request.method': info.method,
      'url.path': info.path,
      'url.scheme': info.scheme ?? 'http',
    };
    if (info.route !== undefined) attributes['http.route'] = info.route;
    if (info.serverAddress !== undefined) attributes['server.address'] = info.serverAddress;
    if (info.serverPort !== undefined) attributes['server.port'] = info.serverPort;
    if (info.clientAddress !== undefined) attributes['client.address'] = info.clientAddress;
    if (info.clientPort !== undefined) attributes['client.port'] = info.clientPort;
    if (info.userAgent !== undefined) attributes['user_agent.original'] = info.userAgent;
    if (info.peerIdentity !== undefined) attributes['meshlet.peer.identity'] = info.peerIdentity;
    const name = info.route !== undefined ? `${info.method} ${info.route}` : info.method;
    return this.tracer.startSpan(name, { kind: SpanKind.SERVER, attributes }, parent);
  }

  /** The context to run the handler in: `parent` with `span` active, or `parent` itself when `span` changes nothing downstream. */
  contextFor(span: Span, parent: Context): Context {
    if (span === NO_SPAN) return parent;
    // A span that records nothing and carries no trace (no SDK registered, no caller's trace)
    // changes nothing downstream: keep the caller's context rather than allocate one per request.
    if (!span.isRecording()) {
      const sc = span.spanContext();
      if (sc.traceId === INVALID_TRACEID || !isSpanContextValid(sc)) return parent;
    }
    return trace.setSpan(parent, span);
  }

  /** Ends a server span with the response status (5xx, or an error, marks it failed). */
  end(span: Span, status: number | undefined, error?: Error, route?: string): void {
    if (!span.isRecording()) {
      span.end();
      return;
    }
    if (route !== undefined) span.setAttribute('http.route', route);
    if (status !== undefined) span.setAttribute('http.response.status_code', status);
    if (error !== undefined) {
      span.recordException(error);
      span.setAttribute('error.type', (error as { code?: unknown }).code?.toString() ?? error.name);
      span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
    } else if (status !== undefined && status >= 500) {
      span.setAttribute('error.type', String(status));
      span.setStatus({ code: SpanStatusCode.ERROR });
    }
    span.end();
  }
}
