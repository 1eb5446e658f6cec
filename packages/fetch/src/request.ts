import {
  type BreakerPermit,
  backoffDelay,
  DEADLINE_HEADER,
  type EndpointState,
  ErrorCodes,
  effectiveTimeout,
  isIdempotentMethod,
  MeshError,
  type Outcome,
  type PickContext,
  parseRetryAfter,
  type RetryCondition,
  type RouteTarget,
  type ServicePolicy,
  type ServiceRuntime,
  type Thresholds,
} from '@meshlet/core';
import type { Dispatcher } from 'undici';
import { type Classified, classifyError, toMeshError } from './errors.js';
import { type LegacyHandler, rawHeader } from './handler.js';
import { addHeaders, type RequestHook, type RequestObserver, startObserver } from './hook.js';

/** What a request needs from the dispatcher that runs it. */
export interface RequestHost {
  poolFor(ep: EndpointState, runtime: ServiceRuntime): Dispatcher;
  /** Tracing/header hook (see hook.ts); undefined costs nothing. */
  readonly requestHook?: RequestHook | undefined;
}

enum State {
  /** Waiting for discovery, a pick or a backoff timer. */
  Idle = 0,
  /** An attempt is in flight and nothing was forwarded to the caller yet. */
  InFlight = 1,
  /** Response headers were forwarded: the request is committed to this attempt. */
  Streaming = 2,
  Done = 3,
}

function isReplayable(body: unknown): boolean {
  return (
    body == null || typeof body === 'string' || body instanceof Uint8Array || body instanceof ArrayBuffer
  );
}

/** Adds the logical authority as `host` unless the caller set one (Envoy keeps `:authority`). */
/**
 * The headers sent upstream: the caller's, plus `host` (the authority) unless set, plus the call's
 * deadline as `x-meshlet-deadline-ms` when it has one (`deadline`, ms; undefined: none), with at
 * most one copy of the caller's headers.
 */
function outboundHeaders(
  headers: Dispatcher.DispatchOptions['headers'],
  authority: string,
  deadline: string | undefined,
): Dispatcher.DispatchOptions['headers'] {
  if (headers == null)
    return deadline === undefined ? { host: authority } : { host: authority, [DEADLINE_HEADER]: deadline };
  if (Array.isArray(headers)) {
    let hasHost = false;
    for (let i = 0; i < headers.length; i += 2) {
      const n = headers[i];
      if (typeof n === 'string' && n.length === 4 && n.toLowerCase() === 'host') {
        hasHost = true;
        break;
      }
    }
    if (hasHost && deadline === undefined) return headers;
    const out = headers.slice() as string[];
    if (!hasHost) out.push('host', authority);
    if (deadline !== undefined) out.push(DEADLINE_HEADER, deadline);
    return out as Dispatcher.DispatchOptions['headers'];
  }
  let out: Record<string, string | string[]>;
  if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === 'function') {
    out = {};
    for (const [k, v] of headers as Iterable<[string, string | string[]]>) out[k] = v;
  } else {
    const h = headers as Record<string, unknown>;
    if (deadline === undefined && (h.host !== undefined || h.Host !== undefined)) return headers;
    out = { ...(headers as Record<string, string>) };
  }
  if (out.host === undefined && out.Host === undefined) out.host = authority;
  if (deadline !== undefined) out[DEADLINE_HEADER] = deadline;
  return out;
}

/**
 * One logical request through the mesh: deadline → (retry → pick → attempt)*. Each attempt gets
 * its own undici abort function and its own per-try timer; the caller's handler sees exactly one
 * response or one error.
 *
 * Retries happen only before anything was forwarded to the caller, within `retry.attempts`, the
 * deadline and the service's retry budget; for idempotent methods (or any method when the
 * failure proves the request was never sent: connect failure, refused stream), and only when the
 * body can be replayed.
 */
export class MeshRequest {
  readonly #host: RequestHost;
  readonly #rt: ServiceRuntime;
  readonly #opts: Dispatcher.DispatchOptions;
  readonly #handler: LegacyHandler;
  readonly #ctx: PickContext;
  readonly #start: number;
  readonly #idempotent: boolean;
  readonly #replayable: boolean;
  /** The request hook's observer for this request (tracing), if any. */
  readonly #observer: RequestObserver | undefined;

  #state = State.Idle;
  #attempt = -1;
  #current: Attempt | undefined;
  #lastEndpoint: EndpointState | undefined;
  /** Every endpoint tried so far, from the second retry on (a retry avoids them all). */
  #tried: EndpointState[] | undefined;
  #deadline: NodeJS.Timeout | undefined;
  #backoff: NodeJS.Timeout | undefined;
  /** Why the request was stopped by us or the caller (timeout, cancellation). */
  #stopReason: Error | undefined;
  #lastStatus: number | undefined;
  #queued = false;
  /** A retry slot (max active retries) taken for the next attempt. */
  #retrySlot = false;
  /** The service's policy, or the route's override of it. */
  readonly #policy: ServicePolicy;
  /** The policy timeout, shortened to what is left of the inbound deadline in scope (core deadline.ts). */
  readonly #timeoutMs: number;

  constructor(
    host: RequestHost,
    rt: ServiceRuntime,
    opts: Dispatcher.DispatchOptions,
    handler: LegacyHandler,
    authority: string,
    route?: RouteTarget,
  ) {
    this.#host = host;
    this.#rt = rt;
    this.#handler = handler;
    // A router (xDS routes) may override the service's timeout/retry policy and set the hash.
    this.#policy = route?.policy ?? rt.policy;
    this.#timeoutMs = effectiveTimeout(this.#policy.timeoutMs);
    // A call with a deadline tells the next hop how long it has (x-meshlet-deadline-ms), as
    // grpc-timeout does for gRPC and x-envoy-expected-rq-timeout-ms for Envoy.
    const headers = outboundHeaders(
      opts.headers,
      authority,
      this.#timeoutMs > 0 ? String(this.#timeoutMs) : undefined,
    );
    // Object.assign, not `{ ...opts }`: undici's Request reads an object built by spread several
    // µs slower per request (measured in test/bench/suites/fetch.ts, see docs/benchmarks.md).
    this.#opts = Object.assign({}, opts, { headers });
    this.#ctx = { attempt: 0, headers: undefined, hash: route?.hash ?? rt.requestHash(headers) };
    const hook = host.requestHook;
    this.#observer = hook === undefined ? undefined : startObserver(hook, rt, opts, authority);
    const extra = this.#observer?.headers;
    if (extra !== undefined) this.#opts.headers = addHeaders(this.#opts.headers, extra);
    this.#start = rt.now();
    const method = opts.method;
    this.#idempotent = isIdempotentMethod(method);
    this.#replayable = isReplayable(opts.body);
  }

  start(): void {
    const rt = this.#rt;
    rt.retryBudget.recordRequest(this.#start);
    const timeout = this.#timeoutMs;
    if (timeout > 0) {
      this.#deadline = setTimeout(
        (self: MeshRequest) =>
          self.#stop(
            new MeshError(
              ErrorCodes.TIMEOUT,
              `request to service "${self.#rt.name}" exceeded its ${timeout}ms deadline`,
              {
                service: self.#rt.name,
                endpoint: self.#current?.endpoint.id,
              },
            ),
          ),
        timeout,
        this,
      );
    }
    // The caller gets one abort function for the whole logical request, whatever the attempt.
    this.#handler.onConnect?.((reason?: Error) => this.#cancel(reason));
    if (this.#state === State.Done) return; // aborted inside onConnect
    this.#next();
  }

  #cancel(reason?: Error): void {
    this.#stop(
      reason ?? new MeshError(ErrorCodes.CANCELLED, 'the request was cancelled', { service: this.#rt.name }),
    );
  }

  /** Ends the request with `reason`: aborts the attempt in flight, or fails at once if none is. */
  #stop(reason: Error): void {
    if (this.#state === State.Done || this.#stopReason) return;
    this.#stopReason = reason;
    const att = this.#current;
    if (att && (this.#state === State.InFlight || this.#state === State.Streaming)) {
      // The attempt's onError completes the request with the stop reason.
      att.abort(reason);
      if (!att.connected) att.onError(reason); // still queued inside undici: it may never call back
    } else {
      this.#finish(reason, classifyError(reason, false).outcome);
    }
  }

  /** Picks an endpoint and starts the next attempt. */
  #next(): void {
    if (this.#state === State.Done) return;
    const rt = this.#rt;
    // Resilience before the pick: the breaker (fail fast when open; one probe when half-open),
    // then the concurrency thresholds. Shared with every transport through `rt.resilience`.
    const resilience = rt.resilience;
    const breaker = resilience.breaker;
    let permit: BreakerPermit | undefined;
    if (breaker !== undefined) {
      permit = breaker.tryAcquire();
      if (permit === undefined) {
        this.#finish(breaker.openError(this.#lastEndpoint?.id), 'circuit_open');
        return;
      }
    }
    const thresholds = resilience.thresholds;
    const overflow = thresholds.enter();
    if (overflow !== undefined) {
      permit?.done('ignore');
      this.#finish(thresholds.overloadedError(overflow), 'overloaded');
      return;
    }
    this.#ctx.attempt = this.#attempt + 1;
    const res = rt.pick(this.#ctx, this.#tried ?? this.#lastEndpoint);
    if (res.kind !== 'pick') {
      permit?.done('ignore');
      thresholds.leave(true);
    }
    if (res.kind === 'queue') {
      // Discovery has not answered yet: wait for its first answer (bounded by the deadline).
      // A second `queue` means the service closed meanwhile.
      if (this.#queued || rt.closed) {
        this.#finish(
          new MeshError(ErrorCodes.CLOSED, `service "${rt.name}" was closed`, { service: rt.name }),
          'no_endpoint',
        );
        return;
      }
      this.#queued = true;
      this.#state = State.Idle;
      rt.whenDiscovered().then(() => this.#next());
      return;
    }
    if (res.kind === 'fail') {
      this.#finish(res.error, 'no_endpoint');
      return;
    }
    const ep = res.endpoint;
    this.#attempt++;
    this.#state = State.InFlight;
    const att = new Attempt(this, ep, this.#attempt, rt.startAttempt(ep));
    att.permit = permit;
    att.thresholds = thresholds;
    att.retrySlot = this.#retrySlot;
    this.#retrySlot = false;
    this.#current = att;
    const perTry = this.#policy.perTryTimeoutMs;
    if (perTry > 0) att.startTimer(perTry);
    this.#host.poolFor(ep, rt).dispatch(this.#opts, att);
  }

  /** True when the attempt's failure may be retried under the policy and budget. */
  #mayRetry(condition: RetryCondition | undefined, status: number | undefined): string | undefined {
    if (this.#stopReason || this.#state === State.Streaming) return undefined;
    const p = this.#policy.retry;
    if (this.#attempt >= p.maxRetries || !this.#replayable) return undefined;
    let reason: string | undefined;
    const on = p.on;
    if (status !== undefined) {
      if (on.has('5xx') && status >= 500) reason = '5xx';
      else if (on.has('gateway-error') && (status === 502 || status === 503 || status === 504))
        reason = 'gateway-error';
      else if (on.has('retriable-status-codes') && p.statusCodes.includes(status)) reason = String(status);
    } else if (condition !== undefined) {
      if (on.has(condition)) reason = condition;
      else if (condition === 'connect-failure' && (on.has('5xx') || on.has('gateway-error')))
        reason = condition;
      else if ((condition === 'reset' || condition === 'per-try-timeout') && on.has('5xx'))
        reason = condition;
      else if (condition === 'per-try-timeout' && on.has('gateway-error')) reason = condition;
    }
    if (reason === undefined) return undefined;
    // A request that provably never reached the server is safe to send again whatever its method.
    const neverSent = condition === 'connect-failure' || condition === 'refused-stream';
    if (!this.#idempotent && !p.nonIdempotent && !neverSent) return undefined;
    return reason;
  }

  /**
   * Consults the deadline and the retry budget for a retry; returns the backoff delay, or
   * undefined when the retry is refused.
   */
  #admitRetry(reason: string, retryAfterMs: number | undefined): number | undefined {
    const rt = this.#rt;
    const now = rt.now();
    let delay = backoffDelay(this.#policy.retry, this.#attempt);
    if (retryAfterMs !== undefined) delay = Math.max(delay, retryAfterMs);
    const pastDeadline = this.#timeoutMs > 0 && now + delay >= this.#start + this.#timeoutMs;
    // Never retry into an open breaker; respect the max-active-retries threshold.
    const breakerOpen = rt.resilience.breaker !== undefined && rt.resilience.breaker.state !== 'closed';
    let denial: string | undefined;
    if (pastDeadline) denial = 'deadline';
    else if (breakerOpen) denial = 'circuit_open';
    else if (!rt.resilience.thresholds.startRetry()) denial = 'max_retries';
    else if (!rt.retryBudget.tryRetry(now)) {
      rt.resilience.thresholds.endRetry();
      denial = 'budget';
    }
    const allowed = denial === undefined;
    if (allowed) this.#retrySlot = true;
    if (rt.events.wants('retry')) {
      rt.events.emit('retry', {
        service: rt.name,
        attempt: this.#attempt + 1,
        reason,
        allowed,
        denial,
      });
    }
    return allowed ? delay : undefined;
  }

  #scheduleRetry(delay: number): void {
    this.#state = State.Idle;
    this.#backoff = setTimeout(
      (self: MeshRequest) => {
        self.#backoff = undefined;
        self.#next();
      },
      delay,
      this,
    );
  }

  // ---- called by Attempt ------------------------------------------------------------------

  onAttemptHeaders(att: Attempt, status: number, raw: Buffer[], resume: () => void, text: string): boolean {
    if (att !== this.#current || this.#state !== State.InFlight) return false;
    this.#lastStatus = status;
    // A shedding endpoint (429/503 + Retry-After) is avoided until the penalty ends.
    if (status === 429 || status >= 500)
      this.#rt.penalize(att.endpoint, status, parseRetryAfter(rawHeader(raw, 'retry-after')));
    if (status >= 500 || (status >= 400 && this.#policy.retry.statusCodes.includes(status))) {
      const reason = this.#mayRetry(undefined, status);
      const delay =
        reason === undefined
          ? undefined
          : this.#admitRetry(reason, parseRetryAfter(rawHeader(raw, 'retry-after')));
      if (delay !== undefined) {
        att.discardReason = reason;
        att.retryDelayMs = delay;
        return true; // read and drop the body so the connection can be reused, then retry
      }
    }
    if (status >= 200) this.#state = State.Streaming;
    return this.#handler.onHeaders ? this.#handler.onHeaders(status, raw, resume, text) : true;
  }

  onAttemptData(att: Attempt, chunk: Buffer): boolean {
    if (att.discardReason !== undefined || att !== this.#current) return true;
    return this.#handler.onData ? this.#handler.onData(chunk) : true;
  }

  /** Records the endpoint of a failed attempt before a retry (no array for a first retry). */
  #triedEndpoint(ep: EndpointState): void {
    const last = this.#lastEndpoint;
    this.#lastEndpoint = ep;
    if (last === undefined || last === ep) return;
    if (this.#tried === undefined) this.#tried = [last, ep];
    else if (!this.#tried.includes(ep)) this.#tried.push(ep);
  }

  onAttemptComplete(att: Attempt, trailers: Buffer[] | string[] | null): void {
    const status = this.#lastStatus;
    const outcome: Outcome = status !== undefined && status >= 500 ? 'http_error' : 'success';
    this.#endAttempt(att, outcome, status, undefined, att.discardReason);
    if (att !== this.#current || this.#state === State.Done) return;
    if (att.discardReason !== undefined) {
      this.#triedEndpoint(att.endpoint);
      this.#scheduleRetry(att.retryDelayMs);
      return;
    }
    this.#clearTimers();
    this.#state = State.Done;
    this.#report(outcome, status, undefined);
    this.#handler.onComplete?.(trailers);
  }

  onAttemptError(att: Attempt, err: Error): void {
    const c = classifyError(err, att.connected);
    this.#endAttempt(
      att,
      this.#stopReason ? classifyError(this.#stopReason, true).outcome : c.outcome,
      undefined,
      err,
      undefined,
    );
    if (att !== this.#current || this.#state === State.Done) return;
    if (this.#stopReason) {
      this.#finish(this.#stopReason, classifyError(this.#stopReason, true).outcome);
      return;
    }
    const reason = this.#mayRetry(c.condition, undefined);
    const delay = reason === undefined ? undefined : this.#admitRetry(reason, undefined);
    if (delay !== undefined) {
      this.#triedEndpoint(att.endpoint);
      this.#scheduleRetry(delay);
      return;
    }
    this.#finish(toMeshError(err, c, this.#rt.name, att.endpoint.id), c.outcome);
  }

  onAttemptUpgrade(att: Attempt, status: number, raw: Buffer[] | string[] | null, socket: unknown): void {
    if (att !== this.#current) return;
    this.#endAttempt(att, 'success', status, undefined, undefined);
    this.#clearTimers();
    this.#state = State.Done;
    this.#report('success', status, undefined);
    this.#handler.onUpgrade?.(status, raw, socket);
  }

  onAttemptResponseStarted(att: Attempt): void {
    if (att === this.#current && att.discardReason === undefined) this.#handler.onResponseStarted?.();
  }

  onAttemptBodySent(att: Attempt, chunk: unknown): void {
    if (att === this.#current) this.#handler.onBodySent?.(chunk);
  }

  onAttemptRequestSent(att: Attempt): void {
    if (att === this.#current) this.#handler.onRequestSent?.();
  }

  perTryTimeout(att: Attempt, ms: number): void {
    if (att !== this.#current || this.#state !== State.InFlight) return;
    const err = new MeshError(
      ErrorCodes.PER_TRY_TIMEOUT,
      `attempt to service "${this.#rt.name}" exceeded its ${ms}ms per-try timeout`,
      {
        service: this.#rt.name,
        endpoint: att.endpoint.id,
      },
    );
    att.abort(err);
    if (!att.connected) att.onError(err);
  }

  #endAttempt(
    att: Attempt,
    outcome: Outcome,
    status: number | undefined,
    err: Error | undefined,
    retryReason: string | undefined,
  ) {
    if (att.ended) return;
    att.ended = true;
    att.clearTimer();
    att.release(outcome);
    this.#rt.endAttempt(att.endpoint, att.started, att.index, outcome, status, err, retryReason, 'http');
    const o = this.#observer;
    if (o?.attemptEnd !== undefined) {
      try {
        o.attemptEnd(
          att.endpoint,
          att.index,
          outcome,
          status,
          this.#rt.now() - att.started,
          err,
          retryReason,
        );
      } catch {}
    }
  }

  #clearTimers(): void {
    if (this.#deadline) clearTimeout(this.#deadline);
    if (this.#backoff) clearTimeout(this.#backoff);
    this.#deadline = undefined;
    this.#backoff = undefined;
    this.#current?.clearTimer();
  }

  #finish(err: Error, outcome: Outcome): void {
    if (this.#state === State.Done) return;
    this.#state = State.Done;
    this.#clearTimers();
    if (this.#retrySlot) {
      this.#retrySlot = false;
      this.#rt.resilience.thresholds.endRetry();
    }
    this.#report(outcome, this.#lastStatus, err);
    if (this.#handler.onError) this.#handler.onError(err);
  }

  #report(outcome: Outcome, status: number | undefined, error: Error | undefined): void {
    const rt = this.#rt;
    if (this.#observer !== undefined) {
      try {
        this.#observer.end(outcome, status, this.#attempt + 1, this.#current?.endpoint, error);
      } catch {}
    }
    if (!rt.events.wants('request')) return;
    rt.events.emit('request', {
      service: rt.name,
      method: this.#opts.method,
      path: this.#opts.path,
      durationMs: rt.now() - this.#start,
      outcome,
      status,
      attempts: this.#attempt + 1,
      endpoint: this.#current?.endpoint,
      error,
      transport: 'http',
    });
  }
}

/** One attempt: the handler undici's Pool calls. Callbacks of superseded attempts are ignored. */
export class Attempt implements LegacyHandler {
  readonly #req: MeshRequest;
  readonly endpoint: EndpointState;
  readonly index: number;
  readonly started: number;
  connected = false;
  ended = false;
  discardReason: string | undefined;
  retryDelayMs = 0;
  /** The breaker permit this attempt holds (settled once when it ends). */
  permit: BreakerPermit | undefined;
  /** The thresholds this attempt is counted in; `pendingCounted` while it waits for a connection. */
  thresholds: Thresholds | undefined;
  pendingCounted = true;
  /** Whether this attempt holds a max-active-retries slot. */
  retrySlot = false;
  #abort: ((err?: Error) => void) | undefined;
  #pendingAbort: Error | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(req: MeshRequest, endpoint: EndpointState, index: number, started: number) {
    this.#req = req;
    this.endpoint = endpoint;
    this.index = index;
    this.started = started;
  }

  startTimer(ms: number): void {
    this.#timer = setTimeout((self: Attempt) => self.#req.perTryTimeout(self, ms), ms, this);
  }

  clearTimer(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  abort(err: Error): void {
    if (this.#abort) this.#abort(err);
    else this.#pendingAbort = err;
  }

  /** Gives back what the attempt holds: breaker verdict, threshold counts, retry slot. */
  release(outcome: Outcome): void {
    const permit = this.permit;
    if (permit !== undefined) {
      this.permit = undefined;
      // 4xx are the caller's business and cancellations say nothing about the upstream.
      permit.done(outcome === 'success' ? 'success' : outcome === 'cancelled' ? 'ignore' : 'failure');
    }
    const t = this.thresholds;
    if (t !== undefined) {
      this.thresholds = undefined;
      t.leave(this.pendingCounted);
      this.pendingCounted = false;
      if (this.retrySlot) {
        this.retrySlot = false;
        t.endRetry();
      }
    }
  }

  onConnect(abort: (err?: Error) => void): void {
    this.connected = true;
    if (this.pendingCounted && this.thresholds !== undefined) {
      this.pendingCounted = false;
      this.thresholds.connected();
    }
    this.#abort = abort;
    if (this.#pendingAbort) abort(this.#pendingAbort);
  }
  onHeaders(status: number, raw: Buffer[], resume: () => void, text: string): boolean {
    return this.#req.onAttemptHeaders(this, status, raw, resume, text);
  }
  onData(chunk: Buffer): boolean {
    return this.#req.onAttemptData(this, chunk);
  }
  onComplete(trailers: Buffer[] | string[] | null): void {
    this.#req.onAttemptComplete(this, trailers);
  }
  onError(err: Error): void {
    this.#req.onAttemptError(this, err);
  }
  onUpgrade(status: number, raw: Buffer[] | string[] | null, socket: unknown): void {
    this.#req.onAttemptUpgrade(this, status, raw, socket);
  }
  onResponseStarted(): void {
    this.#req.onAttemptResponseStarted(this);
  }
  onBodySent(chunk: unknown): void {
    this.#req.onAttemptBodySent(this, chunk);
  }
  onRequestSent(): void {
    this.#req.onAttemptRequestSent(this);
  }
}

export type { Classified };
