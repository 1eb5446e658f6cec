import {
  type CallHook,
  DEADLINE_HEADER,
  type EndpointState,
  isIdempotentMethod,
  ORCA_BIN_HEADER,
  ORCA_FORMAT_HEADER,
  ORCA_HEADER,
  parseRetryAfter,
  type RouteTarget,
  readEndpointReportValue,
  type ServiceRuntime,
  SHED_HEADER,
} from '@meshlet/core';
import { type AttemptFailure, AttemptFailures, Call, CallAttempt } from '@meshlet/core/extend';
import type { Dispatcher } from 'undici';
import { bodyKind, ITERABLE, ReplayBody, STREAM } from './body.js';
import { classifyError, toMeshError } from './errors.js';
import { deliverComplete, type LegacyHandler, rawNameIs } from './handler.js';
import { readHeader, withHeader, withHeaders } from './hook.js';
import { undiciTransport } from './undici.js';

/** What a request needs from the dispatcher that runs it. */
export interface RequestHost {
  /**
   * The connection pool of `ep` for requests to `authority`: its origin is the authority (undici
   * then writes `Host: <authority>` itself), its connector goes to the endpoint's address.
   */
  poolFor(ep: EndpointState, rt: ServiceRuntime, authority: string): Dispatcher;
  /** An outbound hook overriding the mesh's (see `Mesh.setCallHook`); undefined: the mesh's. */
  readonly requestHook?: CallHook | undefined;
  /** The caller destroyed the dispatcher: what fails now fails for that. */
  readonly destroyed?: boolean;
}

/**
 * One logical HTTP request through the mesh: the core pipeline (`Call`: deadline, breaker,
 * thresholds, pick, retries, accounting) over undici's connection pools. It adds only the wire:
 * an attempt is one dispatch of the caller's options to the chosen endpoint's pool — the caller's
 * options object itself when the mesh has nothing to add (no deadline header, no trace context,
 * no body to replay) — and undici's callbacks are reported to the pipeline. The caller's handler
 * sees exactly one response or one error, as with undici.
 */
export class MeshRequest extends Call<HttpAttempt> {
  readonly authority: string;
  readonly #host: RequestHost;
  readonly #opts: Dispatcher.DispatchOptions;
  readonly #handler: LegacyHandler;
  /** The options attempts send when they are the same for every attempt (computed once). */
  #sent: Dispatcher.DispatchOptions | undefined = undefined;
  readonly #stream: boolean;
  /** A one-shot body made replayable (or only observed: limit 0); undefined for other bodies. */
  readonly #replay: ReplayBody | undefined;

  constructor(
    host: RequestHost,
    rt: ServiceRuntime,
    opts: Dispatcher.DispatchOptions,
    handler: LegacyHandler,
    authority: string,
    route?: RouteTarget,
  ) {
    const method = opts.method;
    // GET first: the general test (and the body's classification below) only when needed, which
    // keeps this constructor's optimized code small (see docs/benchmarks.md, fifth pass).
    super(rt, route?.policy, 'http', method === 'GET' || isIdempotentMethod(method));
    this.#host = host;
    this.#opts = opts;
    this.#handler = handler;
    this.authority = authority;
    this.hash = route !== undefined ? route.hash : rt.requestHash(opts.headers);
    const body = opts.body;
    if (body == null) {
      this.#stream = false;
      this.#replay = undefined;
    } else {
      const kind = bodyKind(body);
      this.#stream = kind === STREAM;
      this.#replay = kind === ITERABLE ? this.#replayOf(body as AsyncIterable<unknown>) : undefined;
    }
  }

  /**
   * A one-shot body kept for a replay whenever the call may be retried (even a POST is sent again
   * after an HTTP/2 REFUSED_STREAM, which may come after its body was read).
   */
  #replayOf(body: AsyncIterable<unknown>): ReplayBody {
    const retry = this.policy.retry;
    return new ReplayBody(body, retry.maxRetries > 0 ? retry.bufferLimitBytes : 0);
  }

  get method(): string {
    return this.#opts.method;
  }

  get path(): string {
    return this.#opts.path;
  }

  header(name: string): string | undefined {
    return readHeader(this.#opts.headers, name);
  }

  protected override callHook(): CallHook | undefined {
    return this.#host.requestHook ?? this.service.hooks.callHook;
  }

  protected override onStart(): void {
    // The caller gets one abort function for the whole logical request, whatever the attempt.
    // Without a reason, undici's own RequestAbortedError (as undici gives it).
    this.#handler.onConnect?.((reason?: Error) =>
      this.cancel(reason ?? new (undiciTransport().errors.RequestAbortedError)()),
    );
  }

  protected createAttempt(endpoint: EndpointState, index: number): HttpAttempt {
    return new HttpAttempt(this, endpoint, index);
  }

  protected send(att: HttpAttempt): void {
    this.#host.poolFor(att.endpoint, this.service, this.authority).dispatch(this.#options(), att);
  }

  /**
   * The options of the next attempt: the caller's own when the mesh adds nothing; otherwise a copy
   * with the trace headers, the deadline header (`x-meshlet-deadline-ms`: what the attempt may
   * take, so it is computed per attempt) and the replayable body.
   */
  #options(): Dispatcher.DispatchOptions {
    if (this.#sent !== undefined) return this.#sent;
    const opts = this.#opts;
    const extra = this.extraHeaders;
    const budget = this.attemptBudgetMs();
    const timed = budget !== Number.POSITIVE_INFINITY;
    const replay = this.#replay;
    const reports = this.service.wantsLoadReports;
    if ((extra === undefined || extra.length === 0) && !timed && replay === undefined && !reports) {
      this.#sent = opts;
      return opts;
    }
    let headers = opts.headers;
    if (extra !== undefined && extra.length > 0) headers = withHeaders(headers, extra);
    // A load-aware policy asks for the endpoint's load report (the ORCA HTTP convention).
    if (reports) headers = withHeader(headers, ORCA_FORMAT_HEADER, 'TEXT');
    if (timed) headers = withHeader(headers, DEADLINE_HEADER, String(Math.ceil(budget)));
    // Object.assign, not `{ ...opts }`: undici's Request reads an object built by spread several
    // µs slower per request (measured in test/bench/suites/fetch.ts, see docs/benchmarks.md).
    const out: Dispatcher.DispatchOptions = Object.assign({}, opts);
    out.headers = headers;
    // undici takes any async iterable as a body; its types list only some.
    if (replay !== undefined) out.body = replay as unknown as Dispatcher.DispatchOptions['body'];
    if (!timed) this.#sent = out;
    return out;
  }

  protected abort(att: HttpAttempt, reason: Error): void {
    att.abort(reason);
  }

  protected deliverError(error: Error): void {
    this.#replay?.release();
    this.#handler.onError?.(error);
  }

  protected override replayable(consumed: boolean): boolean {
    if (!consumed) return true; // nothing was read: the body is as the caller gave it
    if (this.#replay !== undefined) return this.#replay.replayable;
    return !this.#stream;
  }

  // ---- undici's callbacks for one attempt ------------------------------------------------------

  attemptHeaders(att: HttpAttempt, status: number, raw: Buffer[], resume: () => void, text: string): boolean {
    const h = this.#handler;
    if (status < 200) {
      // Informational (103 Early Hints, …): passed on for the attempt the caller may still get.
      if (att === this.current && !this.finished && !att.discarding) {
        try {
          return h.onHeaders?.(status, raw, resume, text) ?? true;
        } catch (err) {
          throw callerThrew(att, err);
        }
      }
      return true;
    }
    // One pass over the headers, comparing names without allocating: the endpoint's load report
    // (any response), and for an error its Retry-After and whether it was shed.
    const failing = status === 429 || status >= 500;
    let retryAfter: string | undefined;
    let shed = false;
    let report: Buffer | string | undefined;
    let binary = false;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const n = raw[i] as Buffer;
      switch (n.length) {
        case 21:
          if (report === undefined && rawNameIs(n, ORCA_HEADER)) report = raw[i + 1];
          break;
        case 25:
          if (!binary && rawNameIs(n, ORCA_BIN_HEADER)) {
            report = raw[i + 1];
            binary = true;
          }
          break;
        case 11:
          if (failing && retryAfter === undefined && rawNameIs(n, 'retry-after'))
            retryAfter = String(raw[i + 1]);
          break;
        case 14:
          if (failing && rawNameIs(n, SHED_HEADER)) shed = true;
          break;
      }
    }
    if (report !== undefined) {
      const ep = att.endpoint;
      const r = readEndpointReportValue(ep, report.toString('latin1'), binary);
      if (r.ok) this.service.reportLoad(ep, r.report);
    }
    if (!this.response(att, status, parseRetryAfter(retryAfter), shed)) {
      // Retried (or superseded): read the body away so the connection can be reused.
      att.discarding = true;
      return true;
    }
    try {
      return h.onHeaders ? h.onHeaders(status, raw, resume, text) : true;
    } catch (err) {
      throw callerThrew(att, err);
    }
  }

  attemptData(att: HttpAttempt, chunk: Buffer): boolean {
    if (att.discarding) return true;
    const h = this.#handler;
    try {
      return h.onData ? h.onData(chunk) : true;
    } catch (err) {
      throw callerThrew(att, err);
    }
  }

  attemptComplete(att: HttpAttempt, trailers: Buffer[] | string[] | null): void {
    if (!this.complete(att) || att.discarding) return;
    this.#replay?.release();
    deliverComplete(this.#handler, trailers);
  }

  attemptError(att: HttpAttempt, err: Error): void {
    const f = this.#failure(att, err);
    this.failed(att, f, toMeshError(err, f, this.service.name, att.endpoint.id));
  }

  /** How an attempt failed: the caller's doing (undici's error as it is), or the endpoint's. */
  #failure(att: HttpAttempt, err: Error): AttemptFailure {
    // The caller destroyed the dispatcher (undici's ClientDestroyedError, or the caller's reason).
    if (this.#host.destroyed === true) return AttemptFailures.caller;
    // The caller's body failing is the caller's business, not the endpoint's: a replayed body
    // keeps its source's error; a Node stream says it failed (`errored`).
    const replay = this.#replay;
    const failed =
      replay !== undefined
        ? replay.error
        : this.#stream
          ? (this.#opts.body as { errored?: unknown }).errored
          : undefined;
    if (failed != null && (failed === err || failed === err.cause)) return CALLER_BODY;
    // undici refused the request as the pool was handed it (its checks threw, before any
    // connection): the caller's request — unless the pool itself was closed (the endpoint left).
    if (this.sending && !att.onConnection) {
      const code = (err as { code?: unknown }).code;
      if (code !== 'UND_ERR_CLOSED' && code !== 'UND_ERR_DESTROYED') return AttemptFailures.caller;
    }
    return classifyError(err, att.onConnection);
  }

  attemptUpgrade(att: HttpAttempt, status: number, raw: Buffer[] | string[] | null, socket: unknown): void {
    this.response(att, status);
    if (!this.complete(att) || att.discarding) {
      (socket as { destroy?: () => void }).destroy?.();
      return;
    }
    this.#handler.onUpgrade?.(status, raw, socket);
  }

  attemptResponseStarted(att: HttpAttempt): void {
    if (att === this.current && !att.discarding) this.#handler.onResponseStarted?.();
  }

  attemptBodySent(att: HttpAttempt, chunk: unknown): void {
    if (att === this.current) this.#handler.onBodySent?.(chunk);
  }

  attemptRequestSent(att: HttpAttempt): void {
    if (att === this.current) this.#handler.onRequestSent?.();
  }
}

/**
 * The caller's handler threw from its headers or data callback. undici aborts the request with that
 * error and hands it to the handler's error callback; the mesh rethrows it so undici does so, and
 * records the attempt as the caller's (not retried, not counted against the endpoint).
 */
function callerThrew(att: HttpAttempt, err: unknown): unknown {
  att.abortedFor = AttemptFailures.caller;
  return err;
}

/** A failing request body (the caller's stream errored): the caller's, never the endpoint's. */
const CALLER_BODY = Object.freeze({
  kind: 'caller',
  condition: undefined,
  outcome: 'error',
  verdict: 'ignore',
} as const);

/**
 * One attempt: the handler undici's pool calls (the legacy callback form undici speaks
 * internally, so nothing wraps it again). Callbacks of superseded attempts only settle accounting.
 */
export class HttpAttempt extends CallAttempt implements LegacyHandler {
  readonly #req: MeshRequest;
  /** undici put the request on a connection (`onConnect`). */
  onConnection = false;
  /** The response is read away (a retry was decided, or the attempt was superseded). */
  discarding = false;
  #abort: ((err?: Error) => void) | undefined = undefined;
  #pendingAbort: Error | undefined = undefined;
  /** A terminal callback was handled (undici may still call back after a local abort). */
  #over = false;

  constructor(req: MeshRequest, endpoint: EndpointState, index: number) {
    super(endpoint, index);
    this.#req = req;
  }

  /** Aborts the attempt; one still queued in its pool is reported failed at once. */
  abort(err: Error): void {
    if (this.#abort !== undefined) {
      this.#abort(err);
      return;
    }
    this.#pendingAbort = err;
    // Still waiting for a connection inside undici: it may not call back for a long time.
    this.onError(err);
  }

  onConnect(abort: (err?: Error) => void): void {
    this.#abort = abort;
    if (this.#pendingAbort !== undefined || this.#over) {
      abort(this.#pendingAbort);
      return;
    }
    this.onConnection = true;
    this.#req.connected(this);
  }
  onHeaders(status: number, raw: Buffer[], resume: () => void, text: string): boolean {
    if (this.#over) return true;
    return this.#req.attemptHeaders(this, status, raw, resume, text);
  }
  onData(chunk: Buffer): boolean {
    if (this.#over) return true;
    return this.#req.attemptData(this, chunk);
  }
  onComplete(trailers: Buffer[] | string[] | null): void {
    if (this.#over) return;
    this.#over = true;
    this.#req.attemptComplete(this, trailers);
  }
  onError(err: Error): void {
    if (this.#over) return;
    this.#over = true;
    this.#req.attemptError(this, err);
  }
  onUpgrade(status: number, raw: Buffer[] | string[] | null, socket: unknown): void {
    if (this.#over) {
      (socket as { destroy?: () => void }).destroy?.();
      return;
    }
    this.#over = true;
    this.#req.attemptUpgrade(this, status, raw, socket);
  }
  onResponseStarted(): void {
    if (!this.#over) this.#req.attemptResponseStarted(this);
  }
  onBodySent(chunk: unknown): void {
    if (!this.#over) this.#req.attemptBodySent(this, chunk);
  }
  onRequestSent(): void {
    if (!this.#over) this.#req.attemptRequestSent(this);
  }
}
