import {
  backoffDelay,
  type EndpointState,
  ErrorCodes,
  isIdempotentMethod,
  MeshError,
  type Outcome,
  type PickContext,
  parseRetryAfter,
  type RetryCondition,
  type ServiceRuntime,
} from '@meshlet/core';
import type { Dispatcher } from 'undici';
import { type Classified, classifyError, toMeshError } from './errors.js';
import { type LegacyHandler, rawHeader } from './handler.js';

/** What a request needs from the dispatcher that runs it. */
export interface RequestHost {
  poolFor(ep: EndpointState, runtime: ServiceRuntime): Dispatcher;
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
function withHost(
  headers: Dispatcher.DispatchOptions['headers'],
  authority: string,
): Dispatcher.DispatchOptions['headers'] {
  if (headers == null) return { host: authority };
  if (Array.isArray(headers)) {
    for (let i = 0; i < headers.length; i += 2) {
      const n = headers[i];
      if (typeof n === 'string' && n.length === 4 && n.toLowerCase() === 'host') return headers;
    }
    return [...headers, 'host', authority] as Dispatcher.DispatchOptions['headers'];
  }
  if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === 'function') {
    const out: Record<string, string | string[]> = {};
    for (const [k, v] of headers as Iterable<[string, string | string[]]>) out[k] = v;
    if (!('host' in out) && !('Host' in out)) out.host = authority;
    return out;
  }
  const h = headers as Record<string, unknown>;
  if (h.host !== undefined || h.Host !== undefined) return headers;
  return { ...(headers as Record<string, string>), host: authority };
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

  #state = State.Idle;
  #attempt = -1;
  #current: Attempt | undefined;
  #lastEndpoint: EndpointState | undefined;
  #deadline: NodeJS.Timeout | undefined;
  #backoff: NodeJS.Timeout | undefined;
  /** Why the request was stopped by us or the caller (timeout, cancellation). */
  #stopReason: Error | undefined;
  #lastStatus: number | undefined;

  constructor(
    host: RequestHost,
    rt: ServiceRuntime,
    opts: Dispatcher.DispatchOptions,
    handler: LegacyHandler,
    authority: string,
  ) {
    this.#host = host;
    this.#rt = rt;
    this.#handler = handler;
    this.#opts = { ...opts, headers: withHost(opts.headers, authority) };
    this.#ctx = { attempt: 0, headers: undefined, hash: undefined };
    this.#start = rt.now();
    const method = opts.method;
    this.#idempotent = isIdempotentMethod(method);
    this.#replayable = isReplayable(opts.body);
  }

  start(): void {
    const rt = this.#rt;
    rt.retryBudget.recordRequest(this.#start);
    const timeout = rt.policy.timeoutMs;
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
    this.#ctx.attempt = this.#attempt + 1;
    const res = rt.pick(this.#ctx, this.#lastEndpoint);
    if (res.kind === 'queue') {
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
    this.#current = att;
    const perTry = rt.policy.perTryTimeoutMs;
    if (perTry > 0) att.startTimer(perTry);
    this.#host.poolFor(ep, rt).dispatch(this.#opts, att);
  }

  /** True when the attempt's failure may be retried under the policy and budget. */
  #mayRetry(condition: RetryCondition | undefined, status: number | undefined): string | undefined {
    if (this.#stopReason || this.#state === State.Streaming) return undefined;
    const p = this.#rt.policy.retry;
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
    let delay = backoffDelay(rt.policy.retry, this.#attempt);
    if (retryAfterMs !== undefined) delay = Math.max(delay, retryAfterMs);
    const pastDeadline = rt.policy.timeoutMs > 0 && now + delay >= this.#start + rt.policy.timeoutMs;
    const allowed = !pastDeadline && rt.retryBudget.tryRetry(now);
    if (rt.events.wants('retry')) {
      rt.events.emit('retry', {
        service: rt.name,
        attempt: this.#attempt + 1,
        reason,
        allowed,
        denial: allowed ? undefined : pastDeadline ? 'deadline' : 'budget',
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
    if (status >= 500 || (status === 429 && this.#rt.policy.retry.statusCodes.includes(429))) {
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

  onAttemptComplete(att: Attempt, trailers: Buffer[] | string[] | null): void {
    const status = this.#lastStatus;
    const outcome: Outcome = status !== undefined && status >= 500 ? 'http_error' : 'success';
    this.#endAttempt(att, outcome, status, undefined, att.discardReason);
    if (att !== this.#current || this.#state === State.Done) return;
    if (att.discardReason !== undefined) {
      this.#lastEndpoint = att.endpoint;
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
      this.#lastEndpoint = att.endpoint;
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
    this.#rt.endAttempt(att.endpoint, att.started, att.index, outcome, status, err, retryReason, 'http');
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
    this.#report(outcome, this.#lastStatus, err);
    if (this.#handler.onError) this.#handler.onError(err);
  }

  #report(outcome: Outcome, status: number | undefined, error: Error | undefined): void {
    const rt = this.#rt;
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

  onConnect(abort: (err?: Error) => void): void {
    this.connected = true;
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
