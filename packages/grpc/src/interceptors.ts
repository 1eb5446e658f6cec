import {
  InterceptingCall,
  type InterceptingListener,
  type Interceptor,
  type InterceptorOptions,
  Metadata,
  type NextCall,
  type StatusObject,
  status,
} from '@grpc/grpc-js';

type InterceptingCallInterface = ReturnType<NextCall>;

import {
  type BreakerPermit,
  backoffDelay,
  type CallHook,
  type CallInfo,
  type CallObserver,
  currentDeadline,
  verdictOf as endpointVerdict,
  type Outcome,
  type ServiceRuntime,
} from '@meshlet/core';
import { outcomeOf } from './balancer.js';
import { CallTag } from './call-tag.js';

export interface RetryOptions {
  /** gRPC status codes retried (default `[UNAVAILABLE]`). */
  readonly codes?: readonly number[];
  /**
   * Retries after the first attempt; default: the service's `retry.attempts` (2). The service's
   * retry budget (`retry.budget`) and backoff (`retry.backoff`) always apply.
   */
  readonly maxRetries?: number;
}

/**
 * The outbound observer contract is core's (`CallHook`, `CallObserver`, `CallInfo`), shared with
 * the fetch transport; `CallStartInfo` is kept as a name for `CallInfo`.
 */
export type { CallHook, CallObserver };
export type CallStartInfo = CallInfo;

const noHeader = (): undefined => undefined;

/** What a hook sees of a `meshInterceptor` call (no metadata view before the call starts). */
function callInfo(rt: ServiceRuntime, path: string): CallInfo {
  return { service: rt, transport: 'grpc', method: 'POST', path, authority: rt.name, header: noHeader };
}

/** The hook for calls to `rt`: the client's own, else the mesh's (`Mesh.setCallHook`). */
export function hookFor(rt: ServiceRuntime, own: CallHook | undefined): CallHook | undefined {
  return own ?? rt.hooks.callHook;
}

export interface MeshInterceptorOptions {
  /**
   * Retry policy; `false` disables retries. Default `{ codes: [UNAVAILABLE] }`. Mesh clients retry
   * every call until it commits (streams: see `STREAM_RETRY_BUFFER_BYTES`); `meshInterceptor` retries
   * unary calls only.
   */
  readonly retry?: RetryOptions | false;
  /**
   * Apply the service's `timeout` as the call deadline when the caller set none (default true).
   * The deadline of the inbound request in scope (deadline context) always caps it.
   */
  readonly serviceTimeout?: boolean;
  /** Client spans and trace propagation (default: the mesh's, see `Mesh.setCallHook`). */
  readonly callHook?: CallHook | undefined;
}

/** Adds the hook's headers (trace context) the caller did not set. */
export function addHeaders(metadata: Metadata, headers: readonly string[] | undefined): void {
  if (!headers) return;
  for (let i = 0; i + 1 < headers.length; i += 2) {
    const name = headers[i] as string;
    if (metadata.get(name).length === 0) metadata.set(name, headers[i + 1] as string);
  }
}

/**
 * The breaker verdict of a finished attempt (core's `verdictOf`): UNAVAILABLE is a failure;
 * CANCELLED and DEADLINE_EXCEEDED say nothing about the endpoint; every other code is the
 * server's answer (application errors such as UNKNOWN or UNIMPLEMENTED included).
 */
export function verdictOf(code: number): 'success' | 'failure' | 'ignore' {
  const v = endpointVerdict('grpc', outcomeOf(code), code);
  return v === 'success' ? 'success' : v === 'ignore' ? 'ignore' : 'failure';
}

/** Status of a call refused by an open (or probing) breaker: UNAVAILABLE, MESHLET_ERR_CIRCUIT_OPEN. */
export function circuitOpenStatus(rt: ServiceRuntime): StatusObject {
  const err = rt.resilience.breaker?.openError();
  const md = new Metadata();
  md.set('x-meshlet-error', 'MESHLET_ERR_CIRCUIT_OPEN');
  return {
    code: status.UNAVAILABLE,
    details: `MESHLET_ERR_CIRCUIT_OPEN: ${err?.message ?? 'circuit open'}`,
    metadata: md,
  };
}

/** A breaker permit for one attempt: `undefined` without a breaker, `null` when refused. */
function acquire(rt: ServiceRuntime): BreakerPermit | null | undefined {
  const b = rt.resilience.breaker;
  if (b === undefined) return undefined;
  return b.tryAcquire() ?? null;
}

/** The error a non-OK status stands for (telemetry), undefined for OK. */
export function errorOf(st: StatusObject): Error | undefined {
  return st.code === status.OK ? undefined : new Error(`${status[st.code] ?? st.code}: ${st.details}`);
}

function toDeadlineMs(d: InterceptorOptions['deadline']): number | undefined {
  if (d === undefined) return undefined;
  if (d instanceof Date) return d.getTime();
  return d === Number.POSITIVE_INFINITY ? undefined : d;
}

/** The call's deadline: the smallest of the caller's, the inbound request's and the service timeout. */
function callDeadline(
  options: InterceptorOptions,
  rt: ServiceRuntime,
  serviceTimeout: boolean,
): number | undefined {
  let d = toDeadlineMs(options.deadline);
  const inbound = currentDeadline();
  if (inbound !== undefined && (d === undefined || inbound < d)) d = inbound;
  if (serviceTimeout && rt.policy.timeoutMs > 0) {
    const svc = Date.now() + rt.policy.timeoutMs;
    if (d === undefined || svc < d) d = svc;
  }
  return d;
}

/**
 * meshlet's client interceptor for a `mesh:` channel:
 * - **deadline propagation**: the call's deadline becomes the smallest of the caller's deadline,
 *   the deadline of the inbound request being served (Express/Fastify/gRPC server deadline
 *   context) and the service's `timeout`; grpc-js sends it as `grpc-timeout`;
 * - **retries** of unary calls whose status is in `retry.codes` (UNAVAILABLE by default), at most
 *   `retry.attempts` times, with the service's backoff, within the deadline and the service's retry
 *   budget, each retry preferring another endpoint than the failed attempt's;
 * - **telemetry**: a `request` event per logical call (transport `grpc`), plus `retry` events.
 */
export function meshInterceptor(runtime: ServiceRuntime, options: MeshInterceptorOptions = {}): Interceptor {
  const retry = options.retry === false ? undefined : options.retry;
  const codes = options.retry === false ? [] : [...(retry?.codes ?? [status.UNAVAILABLE])];
  const serviceTimeout = options.serviceTimeout ?? true;
  const maxRetriesOverride = retry?.maxRetries;
  const own = options.callHook;
  return (callOptions: InterceptorOptions, nextCall: NextCall): InterceptingCall => {
    const rt = runtime;
    const def0 = callOptions.method_definition;
    const hook = hookFor(rt, own);
    let obs: CallObserver | undefined;
    try {
      obs = hook?.start(callInfo(rt, def0.path));
    } catch {
      obs = undefined;
    }
    const deadline = callDeadline(callOptions, rt, serviceTimeout);
    const opts = deadline === undefined ? callOptions : { ...callOptions, deadline };
    const def = callOptions.method_definition;
    const unary = !def.requestStream && !def.responseStream;
    const maxRetries = maxRetriesOverride ?? rt.policy.retry.maxRetries;
    if (!unary || codes.length === 0 || maxRetries === 0) {
      return new InterceptingCall(nextCall(opts), {
        start(metadata, listener, next) {
          const tag = new CallTag(metadata.getOptions());
          metadata.setOptions(tag);
          addHeaders(metadata, obs?.headers);
          const permit = acquire(rt);
          if (permit === null) {
            const st = circuitOpenStatus(rt);
            obs?.end('circuit_open', st.code, 0, undefined, errorOf(st));
            setImmediate(() => listener.onReceiveStatus(st));
            return;
          }
          if (!obs && permit === undefined) {
            next(metadata, listener);
            return;
          }
          next(metadata, {
            onReceiveMetadata: (md, n) => n(md),
            onReceiveMessage: (m, n) => n(m),
            onReceiveStatus: (st, n) => {
              permit?.done(verdictOf(st.code));
              obs?.end(outcomeOf(st.code), st.code, 1, tag.endpoint, errorOf(st));
              n(st);
            },
          });
        },
      });
    }
    return new RetryingCall(rt, nextCall, opts, codes, maxRetries, deadline, def.path, obs).call;
  };
}

/**
 * A unary call that may be sent more than once. The request message and metadata are kept; the
 * response metadata and message of an attempt are held back until its status says whether the
 * call is retried, so the caller sees exactly one response.
 */
class RetryingCall {
  readonly call: InterceptingCall;
  readonly #rt: ServiceRuntime;
  readonly #nextCall: NextCall;
  readonly #options: InterceptorOptions;
  readonly #codes: readonly number[];
  readonly #maxRetries: number;
  readonly #deadline: number | undefined;
  readonly #path: string;
  readonly #start: number;
  readonly #obs: CallObserver | undefined;
  #tag: CallTag | undefined;
  #metadata: Metadata | undefined;
  #message: unknown;
  #listener: InterceptingListener | undefined;
  #attemptCall: InterceptingCallInterface | undefined;
  #attempt = 0;
  #cancelled = false;
  #timer: NodeJS.Timeout | undefined;
  #respMetadata: Metadata | undefined;
  #permit: BreakerPermit | undefined;
  #delivered = false;
  #respMessage: unknown;
  #hasMessage = false;

  constructor(
    rt: ServiceRuntime,
    nextCall: NextCall,
    options: InterceptorOptions,
    codes: readonly number[],
    maxRetries: number,
    deadline: number | undefined,
    path: string,
    obs: CallObserver | undefined,
  ) {
    this.#rt = rt;
    this.#obs = obs;
    this.#nextCall = nextCall;
    this.#options = options;
    this.#codes = codes;
    this.#maxRetries = maxRetries;
    this.#deadline = deadline;
    this.#path = path;
    this.#start = rt.now();
    rt.retryBudget.recordRequest(this.#start);
    const first = nextCall(options);
    this.#attemptCall = first;
    this.call = new InterceptingCall(first, {
      start: (metadata, listener, next) => {
        this.#tag = new CallTag(metadata.getOptions());
        metadata.setOptions(this.#tag);
        addHeaders(metadata, this.#obs?.headers);
        this.#metadata = metadata;
        this.#listener = listener;
        const permit = acquire(rt);
        if (permit === null) {
          // Fail fast without sending anything: the breaker is open (or its probe is out). The
          // unstarted first call is cancelled so that its deadline timer goes away.
          this.#attemptCall = undefined;
          first.cancelWithStatus(status.CANCELLED, 'circuit open');
          const st = circuitOpenStatus(rt);
          setImmediate(() => this.#deliver(st, 'circuit_open'));
          return;
        }
        this.#permit = permit;
        next(metadata, this.#attemptListener(first));
      },
      sendMessage: (message, next) => {
        this.#message = message;
        next(message);
      },
      cancel: (next) => {
        this.#cancelled = true;
        this.#permit?.done('ignore');
        this.#permit = undefined;
        if (this.#timer) {
          // Cancelled while backing off before a retry: no attempt is in flight to report it.
          clearTimeout(this.#timer);
          this.#timer = undefined;
          this.#deliver(
            { code: status.CANCELLED, details: 'Cancelled on client', metadata: new Metadata() },
            'cancelled',
          );
          return;
        }
        if (this.#attemptCall === first) next();
        else this.#attemptCall?.cancelWithStatus(status.CANCELLED, 'Cancelled on client');
      },
    });
  }

  #attemptListener(call: InterceptingCallInterface): InterceptingListener {
    this.#respMetadata = undefined;
    this.#respMessage = undefined;
    this.#hasMessage = false;
    return {
      onReceiveMetadata: (md: Metadata) => {
        if (call === this.#attemptCall) this.#respMetadata = md;
      },
      onReceiveMessage: (msg: unknown) => {
        if (call !== this.#attemptCall) return;
        this.#respMessage = msg;
        this.#hasMessage = true;
      },
      onReceiveStatus: (st: StatusObject) => {
        if (call === this.#attemptCall) this.#onStatus(st);
      },
    };
  }

  #onStatus(st: StatusObject): void {
    const rt = this.#rt;
    this.#permit?.done(verdictOf(st.code));
    this.#permit = undefined;
    if (
      st.code !== status.OK &&
      !this.#cancelled &&
      this.#codes.includes(st.code) &&
      this.#attempt < this.#maxRetries
    ) {
      const now = rt.now();
      const delay = backoffDelay(rt.policy.retry, this.#attempt);
      const pastDeadline = this.#deadline !== undefined && Date.now() + delay >= this.#deadline;
      // Never retry into an open (or probing) breaker.
      const breakerOpen = rt.resilience.breaker !== undefined && rt.resilience.breaker.state !== 'closed';
      const allowed = !pastDeadline && !breakerOpen && rt.retryBudget.tryRetry(now);
      if (rt.events.wants('retry')) {
        rt.events.emit('retry', {
          service: rt.name,
          attempt: this.#attempt + 1,
          reason: status[st.code] ?? String(st.code),
          allowed,
          denial: allowed ? undefined : pastDeadline ? 'deadline' : breakerOpen ? 'circuit_open' : 'budget',
        });
      }
      if (allowed) {
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          if (!this.#cancelled) this.#send();
        }, delay);
        return;
      }
    }
    this.#deliver(st);
  }

  #send(): void {
    const permit = acquire(this.#rt);
    if (permit === null) {
      this.#deliver(circuitOpenStatus(this.#rt), 'circuit_open');
      return;
    }
    this.#permit = permit;
    this.#attempt++;
    if (this.#tag) this.#tag.attempt = this.#attempt;
    const call = this.#nextCall(this.#options);
    this.#attemptCall = call;
    call.start(this.#metadata as Metadata, this.#attemptListener(call));
    call.sendMessage(this.#message);
    call.halfClose();
  }

  #deliver(st: StatusObject, outcome: Outcome = outcomeOf(st.code)): void {
    if (this.#delivered) return;
    this.#delivered = true;
    const l = this.#listener;
    const rt = this.#rt;
    this.#obs?.end(outcome, st.code, this.#attempt + 1, this.#tag?.endpoint, errorOf(st));
    if (rt.events.wants('request')) {
      rt.events.emit('request', {
        service: rt.name,
        method: 'POST',
        path: this.#path,
        durationMs: rt.now() - this.#start,
        outcome,
        status: st.code,
        attempts: this.#attempt + 1,
        endpoint: this.#tag?.endpoint,
        error: undefined,
        transport: 'grpc',
      });
    }
    if (!l) return;
    if (this.#respMetadata) l.onReceiveMetadata(this.#respMetadata);
    else if (st.code === status.OK) l.onReceiveMetadata(new Metadata());
    if (this.#hasMessage) l.onReceiveMessage(this.#respMessage);
    l.onReceiveStatus(st);
  }
}
