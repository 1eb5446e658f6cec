import type { RetryCondition, ServicePolicy } from './config.js';
import { currentDeadline } from './deadline.js';
import { clampTimer } from './duration.js';
import type { EndpointState } from './endpoint-state.js';
import { ErrorCodes, MeshError } from './errors.js';
import type { Outcome, Verdict } from './events.js';
import type { PickContext } from './lb/types.js';
import type { AdaptiveConcurrency } from './load/concurrency.js';
import type { CallHook, CallInfo, CallObserver, Transport } from './observer.js';
import type { AttemptPermit } from './resilience/breaker.js';
import { backoffDelay } from './retry.js';
import { type ServiceRuntime, verdictOf } from './service.js';

/**
 * How an attempt failed, in terms every transport can state (DESIGN.md §8):
 * - `never-sent`: the request provably never left the client (connect failure, TLS handshake,
 *   HTTP/2 REFUSED_STREAM, the endpoint's pool went away before the request was written): safe to
 *   send again whatever the method;
 * - `maybe-processed`: it was (perhaps partly) sent and no response came: a reset, a closed
 *   connection, a protocol error; sent again only when the call is idempotent;
 * - `per-try-timeout`: a timeout of the attempt itself (the mesh's per-try timeout, the
 *   transport's own headers/body timeout);
 * - `deadline`: the call's deadline expired (the caller's, or the service/route timeout);
 * - `caller`: the caller's mistake (an invalid header, an unsupported option): never retried;
 * - `cancelled`: the caller cancelled.
 */
export type FailureKind =
  | 'never-sent'
  | 'maybe-processed'
  | 'per-try-timeout'
  | 'deadline'
  | 'caller'
  | 'cancelled';

/** One way an attempt can fail: its kind, the retry condition it meets, its outcome and verdict. */
export interface AttemptFailure {
  readonly kind: FailureKind;
  /** The retry condition (Envoy `retry_on` name) it satisfies, if any. */
  readonly condition: RetryCondition | undefined;
  /** How telemetry reports it. */
  readonly outcome: Outcome;
  /** What it says about the endpoint (breaker, outlier detection, balancer). */
  readonly verdict: Verdict;
}

function failure(
  kind: FailureKind,
  condition: RetryCondition | undefined,
  outcome: Outcome,
  verdict: Verdict,
): AttemptFailure {
  return Object.freeze({ kind, condition, outcome, verdict });
}

/** The failures transports report (shared frozen objects: reporting one allocates nothing). */
export const AttemptFailures = Object.freeze({
  /** Could not connect: refused, unreachable, connect timeout, TLS handshake or peer identity. */
  connect: failure('never-sent', 'connect-failure', 'connect_failure', 'local_failure'),
  /** HTTP/2 REFUSED_STREAM: the server did not process the request. */
  refusedStream: failure('never-sent', 'refused-stream', 'reset', 'local_failure'),
  /** The endpoint's connection pool closed before the request was written (the endpoint left). */
  notSent: failure('never-sent', 'connect-failure', 'connect_failure', 'ignore'),
  /** The connection was reset or closed after the request was (perhaps partly) sent. */
  reset: failure('maybe-processed', 'reset', 'reset', 'local_failure'),
  /** Another transport failure after sending (a protocol error, a malformed response). */
  transport: failure('maybe-processed', undefined, 'error', 'local_failure'),
  /** A timeout of the attempt: the per-try timeout, or the transport's own wait for the endpoint. */
  perTryTimeout: failure('per-try-timeout', 'per-try-timeout', 'timeout', 'local_failure'),
  /** The mesh's own deadline (the service's or route's `timeout`) expired with the attempt out. */
  timeout: failure('deadline', undefined, 'timeout', 'local_failure'),
  /** The caller's deadline (its own, or the inbound request's in scope) expired. */
  callerDeadline: failure('deadline', undefined, 'timeout', 'ignore'),
  /** The caller's mistake: an invalid argument or an unsupported option. */
  caller: failure('caller', undefined, 'error', 'ignore'),
  /** The caller cancelled. */
  cancelled: failure('cancelled', undefined, 'cancelled', 'ignore'),
});

const GRPC_CONDITIONS: ReadonlyArray<readonly [RetryCondition, number]> = [
  ['unavailable', 14],
  ['cancelled', 1],
  ['deadline-exceeded', 4],
  ['resource-exhausted', 8],
  ['internal', 13],
];

/** `codes.includes(status)`, without the builtin call (the list is short: [503] by default). */
function listed(codes: readonly number[], status: number): boolean {
  for (let i = 0; i < codes.length; i++) if (codes[i] === status) return true;
  return false;
}

/**
 * How telemetry reports an answered attempt: for HTTP, 5xx are `http_error`, anything else
 * `success`; for gRPC, OK is `success`, UNAVAILABLE `reset`, DEADLINE_EXCEEDED `timeout`,
 * CANCELLED `cancelled`, INTERNAL, UNKNOWN, DATA_LOSS, RESOURCE_EXHAUSTED and UNIMPLEMENTED
 * `http_error`, and the codes that are the caller's business `success`.
 */
export function statusOutcome(transport: Transport, status: number): Outcome {
  if (transport === 'http') return status >= 500 ? 'http_error' : 'success';
  switch (status) {
    case 0:
      return 'success';
    case 14:
      return 'reset';
    case 4:
      return 'timeout';
    case 1:
      return 'cancelled';
    case 13:
    case 2:
    case 15:
    case 8:
    case 12:
      return 'http_error';
    default:
      return 'success';
  }
}

// `CallAttempt`'s flags.
const A_ENDED = 1;
const A_PENDING = 2;
const A_RETRY_SLOT = 4;
const A_SHED = 8;
const A_LIMITED = 16;

/** Clears an attempt's pending flag; true when it was set. */
function clearPending(att: CallAttempt): boolean {
  const f = att._flags;
  if ((f & A_PENDING) === 0) return false;
  att._flags = f & ~A_PENDING;
  return true;
}

/** An attempt's state off its common path (a retry decided on its answer, a per-try timer, an abort). */
class AttemptState {
  retryReason: string | undefined = undefined;
  retryDelayMs = 0;
  timer: NodeJS.Timeout | undefined = undefined;
  abortedFor: AttemptFailure | undefined = undefined;
}

/** The state of every attempt that has none of its own yet (read only). */
const NO_ATTEMPT_STATE: AttemptState = Object.freeze(new AttemptState());

/**
 * One attempt of a call, as the pipeline tracks it. Transports subclass it with their wire state
 * (undici's handler, a grpc-js channel call) and report what happens to it through the call's
 * `connected` / `response` / `complete` / `failed` methods.
 *
 * Kept small (it is made for every attempt): the booleans live in one flags field and what only
 * a retried, timed or aborted attempt needs in a side object made on first write; the accessors
 * read as the fields they replace.
 */
export class CallAttempt {
  declare readonly endpoint: EndpointState;
  /** 0 for the first attempt. */
  declare readonly index: number;
  /** When the attempt was dispatched (service clock). */
  declare startedAt: number;
  /** When it was on a connection (latency is measured from here); negative until then. */
  declare connectedAt: number;
  /** The response status (HTTP status, gRPC code), once known. */
  declare status: number | undefined;
  /** @internal The breaker permit the attempt holds. */
  declare permit: AttemptPermit | undefined;
  /** @internal `A_ENDED`, `A_PENDING`, … (see the accessors). */
  declare _flags: number;
  declare private _rare: AttemptState;

  constructor(endpoint: EndpointState, index: number) {
    // Every field is assigned here, none declared with an initializer or `#`: see `Call`.
    this.endpoint = endpoint;
    this.index = index;
    this.startedAt = 0;
    this.connectedAt = -1;
    this.status = undefined;
    this.permit = undefined;
    this._flags = A_PENDING;
    this._rare = NO_ATTEMPT_STATE;
  }

  private _more(): AttemptState {
    let r = this._rare;
    if (r === NO_ATTEMPT_STATE) {
      r = new AttemptState();
      this._rare = r;
    }
    return r;
  }

  /** True once the attempt's end was recorded (further reports are ignored). */
  get ended(): boolean {
    return (this._flags & A_ENDED) !== 0;
  }
  set ended(v: boolean) {
    this._flags = v ? this._flags | A_ENDED : this._flags & ~A_ENDED;
  }
  /** @internal Counted as pending in the thresholds until it has a connection. */
  get pending(): boolean {
    return (this._flags & A_PENDING) !== 0;
  }
  set pending(v: boolean) {
    this._flags = v ? this._flags | A_PENDING : this._flags & ~A_PENDING;
  }
  /** @internal Holds a max-retries slot. */
  get retrySlot(): boolean {
    return (this._flags & A_RETRY_SLOT) !== 0;
  }
  set retrySlot(v: boolean) {
    this._flags = v ? this._flags | A_RETRY_SLOT : this._flags & ~A_RETRY_SLOT;
  }
  /** The endpoint shed the request (`x-meshlet-shed`): it was not processed, and says nothing bad of the endpoint. */
  get shed(): boolean {
    return (this._flags & A_SHED) !== 0;
  }
  set shed(v: boolean) {
    this._flags = v ? this._flags | A_SHED : this._flags & ~A_SHED;
  }
  /** @internal Admitted by the service's adaptive concurrency limiter (released at its end). */
  get limited(): boolean {
    return (this._flags & A_LIMITED) !== 0;
  }
  set limited(v: boolean) {
    this._flags = v ? this._flags | A_LIMITED : this._flags & ~A_LIMITED;
  }

  /** Set when the pipeline decided at `response()` to retry: the response is being discarded. */
  get retryReason(): string | undefined {
    return this._rare.retryReason;
  }
  set retryReason(v: string | undefined) {
    if (v !== undefined || this._rare !== NO_ATTEMPT_STATE) this._more().retryReason = v;
  }
  get retryDelayMs(): number {
    return this._rare.retryDelayMs;
  }
  set retryDelayMs(v: number) {
    if (v !== 0 || this._rare !== NO_ATTEMPT_STATE) this._more().retryDelayMs = v;
  }
  /** @internal The per-try timer. */
  get timer(): NodeJS.Timeout | undefined {
    return this._rare.timer;
  }
  set timer(v: NodeJS.Timeout | undefined) {
    if (v !== undefined || this._rare !== NO_ATTEMPT_STATE) this._more().timer = v;
  }
  /** @internal Why the pipeline aborted it (per-try timeout, the call's stop), if it did. */
  get abortedFor(): AttemptFailure | undefined {
    return this._rare.abortedFor;
  }
  set abortedFor(v: AttemptFailure | undefined) {
    if (v !== undefined || this._rare !== NO_ATTEMPT_STATE) this._more().abortedFor = v;
  }
}

const IDLE = 0;
const IN_FLIGHT = 1;
const COMMITTED = 2;
const DONE = 3;

// `Call`'s flags (one small integer instead of five fields).
/** The request may be sent again after it may have been processed. */
const IDEMPOTENT = 1;
/** `begin()` ran. */
const STARTED = 2;
/** It waited for discovery's first answer once. */
const QUEUED = 4;
/** A max-retries slot is taken for the next attempt. */
const RETRY_SLOT = 8;
/** The current attempt is being handed to the transport (`send` may report its connection synchronously). */
const SENDING = 16;

/**
 * What a call needs only off its common path (a deadline, a retry, a stop, a wait for capacity):
 * made on first use (`Call._more`), so that a call without any of them is half the size — the
 * first attempt succeeding, with no deadline, is nearly every call (docs/benchmarks.md).
 */
class CallState {
  /** The endpoint of the last failed attempt, and every endpoint tried from the second retry on. */
  lastEndpoint: EndpointState | undefined = undefined;
  tried: EndpointState[] | undefined = undefined;
  /** The call's deadline on the service clock (Infinity: none) and whether it is the caller's. */
  deadlineAt = Number.POSITIVE_INFINITY;
  callerDeadline = false;
  deadlineTimer: NodeJS.Timeout | undefined = undefined;
  /** The backoff timer of a retry, or of a wait for capacity. */
  backoff: NodeJS.Timeout | undefined = undefined;
  /** Why the call was stopped (cancelled, deadline), and the error the caller gets. */
  stop: AttemptFailure | undefined = undefined;
  stopError: Error | undefined = undefined;
  /**
   * What the first attempt may take under the deadline (`attemptBudgetMs`), known at `begin()`
   * without a clock read; -1: compute it from the clock.
   */
  firstBudget = -1;
  /** Until when the call may wait for an endpoint under its concurrency limit (-1: has not waited). */
  waitUntil = -1;
  /** The limiter the call waits on, while it does. */
  waitingOn: AdaptiveConcurrency | undefined = undefined;
  /** When the current wait for capacity began (its timer was set). */
  waitFrom = 0;
}

/** The state of every call that has none of its own yet (read only: `Call._more` replaces it). */
const NO_STATE: CallState = Object.freeze(new CallState());

function startObserver(hook: CallHook, call: CallInfo): CallObserver | undefined {
  try {
    return hook.start(call);
  } catch {
    return undefined;
  }
}

/**
 * One logical call through the mesh — the one request pipeline of every transport:
 *
 *   deadline → (breaker → thresholds → pick → attempt → outcome → retry or deliver)* → events
 *
 * A transport subclasses it (one object per call, which is also the call's `CallInfo` for
 * observers and its `PickContext` for pickers), supplies only the wire — `createAttempt`, `send`,
 * `abort`, `deliverError`, and whether the request can be replayed — and reports each attempt's
 * outcome in transport-neutral terms (`AttemptFailure`, or a response status of its transport's
 * kind). The pipeline answers "retry (elsewhere) after N ms" or "deliver", and keeps every rule
 * that must not differ between transports in one place:
 *
 * - **deadline composition**: the earliest of the caller's deadline, the inbound request's in
 *   scope (`runWithDeadline`) and the service's or route's `timeout` (none by default);
 * - **retry admission**: the policy's conditions; a request that may have been processed only when
 *   the call is idempotent (or `retry.nonIdempotent`) and its body can be replayed; never after
 *   the response was committed to the caller; within the attempts, the deadline, the breaker (never
 *   into an open one), `thresholds.maxRetries` and the retry budget; backoff with full jitter,
 *   stretched by Retry-After; each retry avoids every endpoint already tried;
 * - **breaker permits and thresholds** per attempt; **accounting** of every attempt (latency from
 *   when it had a connection, verdict, events) and of the call (`request` event, observer).
 *
 * Allocation on the success path: the call object and one attempt object (both the transport's).
 */
export abstract class Call<A extends CallAttempt = CallAttempt> implements CallInfo, PickContext {
  /** The service the call goes to (a transport that routes at `begin()` sets it with `retarget`). */
  declare service: ServiceRuntime;
  /** The policy in force: the service's, or a route's merge over it. */
  declare policy: ServicePolicy;
  declare readonly transport: Transport;
  /** `PickContext`: the 0-based number of the attempt being picked. */
  declare attempt: number;
  /** `PickContext`: the request's affinity hash for hash-based balancers. */
  declare hash: number | undefined;
  /** `PickContext`: request headers, for policies that read them. */
  declare headers: Readonly<Record<string, string | string[] | undefined>> | undefined;

  declare private _state: number;
  /** `IDEMPOTENT`, `STARTED`, `QUEUED`, `RETRY_SLOT`, `SENDING`. */
  declare private _flags: number;
  /** Attempts started. */
  declare private _attempts: number;
  declare private _current: A | undefined;
  declare private _startedAt: number;
  declare private _lastStatus: number | undefined;
  declare private _observer: CallObserver | undefined;
  /** Deadline, retry, stop and wait state (`NO_STATE` until the call needs any: `_more()`). */
  declare private _rare: CallState;

  /**
   * `service` undefined: a call routed when it starts (gRPC routes on metadata, which comes with
   * grpc-js's `start`); the transport calls `retarget` before `begin()`.
   */
  constructor(
    service: ServiceRuntime | undefined,
    policy: ServicePolicy | undefined,
    transport: Transport,
    idempotent: boolean,
  ) {
    // Every field is assigned here, in one order, none declared with an initializer or `#`, and
    // the class has no `#` methods: on Node 20, a base class that declares instance fields or
    // private methods makes every `new` of a subclass go through V8's generic construct stub
    // (~230 instructions more per object, measured: docs/benchmarks.md). Privacy is TypeScript's.
    this.service = service as ServiceRuntime;
    this.policy = (policy ?? service?.policy) as ServicePolicy;
    this.transport = transport;
    this.attempt = 0;
    this.hash = undefined;
    this.headers = undefined;
    this._state = IDLE;
    this._flags = idempotent ? IDEMPOTENT : 0;
    this._attempts = 0;
    this._current = undefined;
    this._startedAt = 0;
    this._lastStatus = undefined;
    this._observer = undefined;
    this._rare = NO_STATE;
  }

  /** The call's off-path state, made on first use. */
  private _more(): CallState {
    let r = this._rare;
    if (r === NO_STATE) {
      r = new CallState();
      this._rare = r;
    }
    return r;
  }

  // ---- what the transport supplies ----------------------------------------------------------

  abstract readonly method: string;
  abstract readonly path: string;
  abstract readonly authority: string;
  abstract header(name: string): string | undefined;
  /** A new attempt object for `endpoint` (a subclass of `CallAttempt` with the transport's state). */
  protected abstract createAttempt(endpoint: EndpointState, index: number): A;
  /** Puts the attempt on the wire. Its outcome comes back through `connected`, `response`, … */
  protected abstract send(attempt: A): void;
  /**
   * Aborts an attempt in flight with `reason`. The transport reports it through `failed()`
   * afterwards (synchronously when nothing else would, e.g. the attempt was still queued).
   */
  protected abstract abort(attempt: A, reason: Error): void;
  /** Gives the caller the call's final error (after any response committed, or instead of one). */
  protected abstract deliverError(error: Error): void;
  /**
   * Whether the request can be sent again. `consumed`: the attempt had a connection, so the wire
   * may have read (part of) the request body; false when it never had one (nothing was read).
   */
  protected replayable(_consumed: boolean): boolean {
    return true;
  }
  /**
   * The status the caller gets with `error` when the transport always answers with one (gRPC: the
   * code of a mesh error); reported on the call's `request` event and to its observer. Undefined:
   * the last attempt's response status, if any (HTTP).
   */
  protected errorStatus(_error: Error): number | undefined {
    return undefined;
  }
  /** Runs in `begin()` before the first attempt (e.g. handing the caller its abort function). */
  protected onStart(): void {}
  /** The outbound call hook: the mesh's (see `Mesh.setCallHook`) unless a transport overrides it. */
  protected callHook(): CallHook | undefined {
    return this.service.hooks.callHook;
  }

  /**
   * Sets the service and policy of a call routed after it was created (a gRPC call is routed on its
   * metadata, which arrives with grpc-js's `start`). Only before `begin()`.
   */
  protected retarget(service: ServiceRuntime, policy: ServicePolicy | undefined): void {
    if ((this._flags & STARTED) !== 0) return;
    this.service = service;
    this.policy = policy ?? service.policy;
  }

  /** Marks the call idempotent (a per-call signal that arrives with grpc-js's `start`). Only before `begin()`. */
  protected markIdempotent(): void {
    if ((this._flags & STARTED) === 0) this._flags |= IDEMPOTENT;
  }

  /** True when the call's deadline is the caller's (its own, or the inbound request's in scope). */
  protected get callersDeadline(): boolean {
    return this._rare.callerDeadline;
  }

  /** Milliseconds since `begin()` (service clock). */
  protected elapsedMs(): number {
    return this.service.now() - this._startedAt;
  }

  // ---- state the transport reads ------------------------------------------------------------

  /** The attempt in flight (or the last one). */
  get current(): A | undefined {
    return this._current;
  }

  /** Attempts started so far. */
  get attempts(): number {
    return this._attempts;
  }

  /** True once the call ended (delivered or failed). */
  get finished(): boolean {
    return this._state === DONE;
  }

  /**
   * True while the transport's `send()` runs: a failure it reports now was raised by its own
   * dispatch, synchronously (e.g. a request its library refused as given).
   */
  protected get sending(): boolean {
    return (this._flags & SENDING) !== 0;
  }

  /** True once the response was committed to the caller (no more retries). */
  get committed(): boolean {
    return this._state === COMMITTED;
  }

  /** Headers the call's observer adds (trace context), flat `[name, value, …]`. */
  get extraHeaders(): readonly string[] | undefined {
    return this._observer?.headers;
  }

  /**
   * Milliseconds the next attempt may take: what is left of the call's deadline, capped by the
   * per-try timeout; Infinity when neither applies. Transports tell the next hop (`grpc-timeout`,
   * `x-meshlet-deadline-ms`).
   */
  attemptBudgetMs(): number {
    const perTry = this.policy.perTryTimeoutMs;
    let ms = perTry > 0 ? perTry : Number.POSITIVE_INFINITY;
    const r = this._rare;
    if (r.deadlineAt !== Number.POSITIVE_INFINITY) {
      // The first attempt, started in the same tick as the call: nothing has elapsed.
      if (this._attempts <= 1 && r.firstBudget >= 0) return r.firstBudget;
      const left = r.deadlineAt - this.service.now();
      if (left < ms) ms = Math.max(1, left);
    }
    return ms;
  }

  // ---- lifecycle ----------------------------------------------------------------------------

  /**
   * Starts the call. `callerDeadline`: an absolute deadline the caller gave (epoch ms), if any;
   * the deadline of the inbound request in scope and the policy's `timeout` are added here.
   */
  begin(callerDeadline?: number): void {
    this._flags |= STARTED;
    const rt = this.service;
    const now = rt.now();
    this._startedAt = now;
    rt.retryBudget.recordRequest(now);
    const ms = this._composeDeadline(callerDeadline);
    const hook = this.callHook();
    if (hook !== undefined) this._observer = startObserver(hook, this);
    if (ms !== Number.POSITIVE_INFINITY) {
      const r = this._more();
      const perTry = this.policy.perTryTimeoutMs;
      r.firstBudget = perTry > 0 && perTry < ms ? perTry : ms;
      r.deadlineAt = now + ms;
      if (ms > 0) r.deadlineTimer = setTimeout(Call.#deadlineFired, ms, this);
    }
    this.onStart();
    if (this._state === DONE || this._rare.stop !== undefined) return; // cancelled in onStart
    if (ms <= 0) {
      // Already past the deadline: fail without sending anything.
      this._deadlineExpired();
      return;
    }
    this._next(true);
  }

  /**
   * The one deadline composition: milliseconds from now to the earliest of the caller's deadline,
   * the inbound request's deadline in scope and the policy's timeout (Infinity: none). Records
   * whose deadline it is (an expiry of the caller's says nothing about the endpoint).
   */
  private _composeDeadline(callerDeadline: number | undefined): number {
    const timeout = this.policy.timeoutMs;
    let ms = timeout > 0 ? timeout : Number.POSITIVE_INFINITY;
    const inbound = currentDeadline();
    if (inbound !== undefined || callerDeadline !== undefined) {
      const epoch = Date.now();
      if (inbound !== undefined && inbound - epoch < ms) {
        ms = Math.max(0, inbound - epoch);
        this._more().callerDeadline = true;
      }
      if (callerDeadline !== undefined && callerDeadline - epoch < ms) {
        ms = Math.max(0, callerDeadline - epoch);
        this._more().callerDeadline = true;
      }
    }
    // Never more than a timer can hold (a longer wait would fire at once).
    return ms === Number.POSITIVE_INFINITY ? ms : clampTimer(ms);
  }

  /** The caller cancelled (its abort function, a cancelled gRPC call). `reason` is what it gets. */
  cancel(reason?: Error): void {
    this._stopWith(
      AttemptFailures.cancelled,
      reason ??
        new MeshError(ErrorCodes.CANCELLED, 'the request was cancelled', { service: this.service.name }),
    );
  }

  static #deadlineFired(call: Call): void {
    call._rare.deadlineTimer = undefined;
    call._deadlineExpired();
  }

  private _deadlineExpired(): void {
    const name = this.service.name;
    const caller = this._rare.callerDeadline;
    const err = caller
      ? new MeshError(ErrorCodes.TIMEOUT, `request to service "${name}" exceeded the caller's deadline`, {
          service: name,
          endpoint: this._current?.endpoint.id,
        })
      : new MeshError(
          ErrorCodes.TIMEOUT,
          `request to service "${name}" exceeded its ${this.policy.timeoutMs}ms timeout`,
          { service: name, endpoint: this._current?.endpoint.id },
        );
    this._stopWith(caller ? AttemptFailures.callerDeadline : AttemptFailures.timeout, err);
  }

  /** Ends the call with `error`: aborts the attempt in flight, or fails at once if none is. */
  private _stopWith(reason: AttemptFailure, error: Error): void {
    if (this._state === DONE || this._rare.stop !== undefined) return;
    const r = this._more();
    r.stop = reason;
    r.stopError = error;
    const att = this._current;
    if (att !== undefined && !att.ended && (this._state === IN_FLIGHT || this._state === COMMITTED)) {
      att.abortedFor = reason;
      this.abort(att, error);
      // The transport reports the aborted attempt through failed(), which finishes the call.
      return;
    }
    this._finish(error, reason.outcome);
  }

  /** Admits and starts the next attempt: breaker, thresholds, pick (avoiding endpoints tried). */
  /**
   * `firstTick`: called from `begin()`, in the call's first tick: the call's clock read
   * (`_startedAt`) is the attempt's start (a flag, not the time: a double passed to a function that
   * is not inlined is a heap number made per call).
   */
  private _next(firstTick = false): void {
    if (this._state === DONE) return;
    const rt = this.service;
    const resilience = rt.resilience;
    const breaker = resilience.breaker;
    let permit: AttemptPermit | undefined;
    if (breaker !== undefined) {
      permit = breaker.acquire();
      if (permit === undefined) {
        this._finish(breaker.openError(this._rare.lastEndpoint?.id), 'circuit_open');
        return;
      }
    }
    const thresholds = resilience.thresholds;
    const overflow = thresholds.enter();
    if (overflow !== undefined) {
      permit?.done('ignore');
      this._finish(thresholds.overloadedError(overflow), 'overloaded');
      return;
    }
    this.attempt = this._attempts;
    const limiter = resilience.concurrency;
    const r = this._rare;
    const res = rt.pick(this, r.tried ?? r.lastEndpoint, limiter);
    if (res.kind !== 'pick') {
      permit?.done('ignore');
      thresholds.leave(true);
      if (res.kind === 'fail') {
        this._finish(res.error, 'no_endpoint');
        return;
      }
      // Discovery has not answered yet: wait for its first answer (bounded by the deadline).
      // A second `queue` means the service closed meanwhile.
      if ((this._flags & QUEUED) !== 0 || rt.closed) {
        this._finish(
          new MeshError(ErrorCodes.CLOSED, `service "${rt.name}" was closed`, { service: rt.name }),
          'no_endpoint',
        );
        return;
      }
      this._flags |= QUEUED;
      this._state = IDLE;
      rt.whenDiscovered().then(() => this._next());
      return;
    }
    const ep = res.endpoint;
    if (limiter !== undefined && !limiter.tryAcquire(ep)) {
      // Every usable endpoint is at its limit: wait for an attempt to end (bounded), or fail.
      permit?.done('ignore');
      thresholds.leave(true);
      this._waitForCapacity(limiter);
      return;
    }
    const att = this.createAttempt(ep, this._attempts++);
    if (limiter !== undefined) att.limited = true;
    // The first attempt starts in the same tick as the call: the call's clock read serves.
    if (!firstTick && r !== NO_STATE) r.firstBudget = -1; // not the call's first tick: compute from the clock
    att.startedAt = rt.startAttempt(ep, firstTick ? this._startedAt : undefined);
    att.permit = permit;
    if ((this._flags & RETRY_SLOT) !== 0) {
      att.retrySlot = true;
      this._flags &= ~RETRY_SLOT;
    }
    this._current = att;
    this._state = IN_FLIGHT;
    const perTry = this.policy.perTryTimeoutMs;
    if (perTry > 0 && att.startedAt + perTry < r.deadlineAt)
      att.timer = setTimeout(Call.#perTryFired, perTry, this, att);
    this._flags |= SENDING;
    try {
      this.send(att);
    } catch (err) {
      // The transport could not even hand the attempt to the wire (e.g. an authority it cannot
      // make a connection pool for): the caller's request, not the endpoint's failure.
      this.failed(att, AttemptFailures.caller, err instanceof Error ? err : new Error(String(err)));
    } finally {
      this._flags &= ~SENDING;
    }
  }

  /**
   * Every usable endpoint is at its adaptive concurrency limit: the call waits for an attempt of
   * the service to end, at most `maxWait` in all and never past its deadline, then picks again;
   * when the wait is over it fails with `MESHLET_ERR_OVERLOADED` (nothing was sent).
   */
  private _waitForCapacity(limiter: AdaptiveConcurrency): void {
    const rt = this.service;
    const now = rt.now();
    const r = this._more();
    if (r.waitUntil < 0) r.waitUntil = Math.min(now + limiter.config.maxWaitMs, r.deadlineAt);
    const left = r.waitUntil - now;
    if (!(left > 0)) {
      this._finish(
        new MeshError(
          ErrorCodes.OVERLOADED,
          `every endpoint of service "${rt.name}" is at its adaptive concurrency limit`,
          { service: rt.name, limit: 'adaptiveConcurrency' },
        ),
        'overloaded',
      );
      return;
    }
    this._state = IDLE;
    // The next attempt starts later than the call: its budget is computed afresh.
    r.firstBudget = -1;
    r.waitingOn = limiter;
    limiter.wait(this);
    r.waitFrom = now;
    r.backoff = setTimeout(Call.#waitEnded, left, this);
  }

  /** @internal An attempt of the service ended while the call waited for capacity: pick again. */
  capacityFreed(): void {
    const r = this._rare;
    if (r.waitingOn === undefined || this._state === DONE) return;
    r.waitingOn = undefined;
    if (r.backoff !== undefined) clearTimeout(r.backoff);
    r.backoff = undefined;
    this._next();
  }

  static #waitEnded(call: Call): void {
    const r = call._rare;
    r.backoff = undefined;
    const limiter = r.waitingOn;
    limiter?.cancelWait(call);
    r.waitingOn = undefined;
    // The client's own stall is not a wait for the endpoints: when its loop could not run during
    // the wait, the answers that free capacity may be unread yet (timers run before I/O after a
    // long turn). The stalled time is added to the wait, within the deadline.
    const stalled = limiter?.localStallMs(call.service.now() - r.waitFrom) ?? 0;
    if (stalled > 0) r.waitUntil = Math.min(r.waitUntil + stalled, r.deadlineAt);
    call._next();
  }

  static #perTryFired(call: Call, att: CallAttempt): void {
    att.timer = undefined;
    // A response being read away before a retry already decided this attempt's fate.
    if (att !== call._current || call._state !== IN_FLIGHT || att.ended || att.retryReason !== undefined)
      return;
    const name = call.service.name;
    const err = new MeshError(
      ErrorCodes.PER_TRY_TIMEOUT,
      `attempt to service "${name}" exceeded its ${call.policy.perTryTimeoutMs}ms per-try timeout`,
      { service: name, endpoint: att.endpoint.id },
    );
    att.abortedFor = AttemptFailures.perTryTimeout;
    call.abort(att, err);
  }

  // ---- what the transport reports -----------------------------------------------------------

  /** The attempt is on a connection (request written): latency is measured from now. */
  connected(att: A): void {
    if (att.ended || att.connectedAt >= 0) return;
    // A pooled connection takes the request while it is being sent: no time has passed.
    att.connectedAt =
      (this._flags & SENDING) !== 0 && att === this._current ? att.startedAt : this.service.now();
    // The flag itself, not the `pending` accessors: this runs for every attempt.
    if (clearPending(att)) this.service.resilience.thresholds.connected();
  }

  /**
   * The attempt's response status arrived (HTTP status ≥ 200; a gRPC status, or response headers
   * for a streaming call). Returns true when the response is to be delivered — the call is then
   * committed to this attempt — and false when the call will be retried instead: the transport
   * drops what follows (HTTP: reads the body away) and reports `complete()`.
   */
  response(att: A, status: number, retryAfterMs?: number, shed = false): boolean {
    att.status = status;
    if (att !== this._current || this._state !== IN_FLIGHT || att.ended) return false;
    this._lastStatus = status;
    const rt = this.service;
    if (shed) return this._shedResponse(att, status, retryAfterMs);
    // A shedding endpoint (429/503 + Retry-After) is avoided until the penalty ends.
    if (this.transport === 'http' && (status === 429 || status >= 500))
      rt.penalize(att.endpoint, status, retryAfterMs);
    const reason = this._statusRetryReason(status);
    // gRPC codes the user listed (a client's `retry.codes`, an xDS route's `retry_on`) are retried
    // whatever the method's idempotency: the user said the code means "not processed".
    const explicit = this.transport === 'grpc' && this.policy.retry.grpcCodes !== undefined;
    return this._retryOrCommit(att, reason, explicit, retryAfterMs);
  }

  /**
   * Retries the answered attempt for `reason` when the policy and the budget allow (false: the
   * transport drops what follows), or commits the call to it (true).
   */
  private _retryOrCommit(
    att: A,
    reason: string | undefined,
    anyMethod: boolean,
    retryAfterMs: number | undefined,
  ): boolean {
    if (reason !== undefined && this._retryAllowed(anyMethod, true)) {
      const delay = this._admitRetry(reason, retryAfterMs);
      if (delay !== undefined) {
        att.retryReason = reason;
        att.retryDelayMs = delay;
        return false;
      }
    }
    this.commit(att);
    return true;
  }

  /**
   * The endpoint shed the request (overload protection: `x-meshlet-shed`): "go elsewhere now, back
   * off this endpoint". The endpoint is avoided for its Retry-After (`balancing.penalty`, whatever
   * the status), the attempt says nothing bad of it (no breaker, outlier or balancer failure), and
   * the request — which the server did not process, like an HTTP/2 REFUSED_STREAM — is sent to
   * another endpoint at once (after the usual jittered backoff, not after Retry-After) whatever
   * its method, when the policy retries refused streams (or the status) and the budget allows.
   */
  private _shedResponse(att: A, status: number, retryAfterMs: number | undefined): boolean {
    att.shed = true;
    this.service.penalize(att.endpoint, status, retryAfterMs, true);
    const reason = this.policy.retry.on.has('refused-stream')
      ? 'refused-stream'
      : this._statusRetryReason(status);
    return this._retryOrCommit(att, reason, true, undefined);
  }

  /**
   * The call commits to this attempt: what it received goes to the caller and it is never retried
   * (gRPC: on response headers, gRFC A6). The per-try timeout stops applying.
   */
  commit(att: A): void {
    if (att !== this._current || this._state !== IN_FLIGHT) return;
    this._state = COMMITTED;
    if (att.timer !== undefined) {
      clearTimeout(att.timer);
      att.timer = undefined;
    }
  }

  /**
   * The attempt's response ended normally. Returns true when the transport must give the caller
   * its completion (the call is finished); false for a response being discarded (the retry is
   * scheduled) or an attempt that is no longer the call's.
   */
  complete(att: A): boolean {
    const status = att.status;
    const outcome: Outcome = att.shed
      ? 'overloaded'
      : status === undefined
        ? 'success'
        : statusOutcome(this.transport, status);
    const verdict: Verdict = att.shed
      ? 'ignore'
      : status === undefined
        ? 'success'
        : verdictOf(this.transport, outcome, status);
    const recorded = this._endAttempt(att, outcome, status, undefined, verdict, att.retryReason);
    if (att !== this._current || this._state === DONE) return false;
    if (att.retryReason !== undefined) {
      const r = this._rare;
      if (r.stop !== undefined) {
        this._finish(r.stopError as Error, r.stop.outcome);
        return false;
      }
      this._triedEndpoint(att.endpoint);
      this._scheduleRetry(att.retryDelayMs);
      return false;
    }
    this._state = DONE;
    this._clearTimers();
    // The attempt's end just read the clock: the call ends then too.
    this._report(outcome, status, undefined, recorded ? this.service.clockMs : -1);
    return true;
  }

  /** The attempt failed (`failure` classifies it; `error` is what the caller gets if it is final). */
  failed(att: A, reported: AttemptFailure, error: Error): void {
    // An attempt the pipeline aborted (per-try timeout, the call's deadline or cancellation) fails
    // for that reason, whatever the transport made of the abort.
    const f = att.abortedFor ?? reported;
    this._endAttempt(att, f.outcome, att.status, error, att.shed ? 'ignore' : f.verdict, undefined);
    if (att !== this._current || this._state === DONE) return;
    const r = this._rare;
    const stop = r.stop;
    if (stop !== undefined) {
      this._finish(r.stopError as Error, stop.outcome);
      return;
    }
    if (att.retryReason !== undefined && this._state === IN_FLIGHT) {
      // Reading away a response already decided to be retried failed: the retry stands.
      this._triedEndpoint(att.endpoint);
      this._scheduleRetry(att.retryDelayMs);
      return;
    }
    if (this._state === IN_FLIGHT) {
      const reason = this._failureRetryReason(f);
      if (reason !== undefined && this._retryAllowed(f.kind === 'never-sent', att.connectedAt >= 0)) {
        const delay = this._admitRetry(reason, undefined);
        if (delay !== undefined) {
          this._triedEndpoint(att.endpoint);
          this._scheduleRetry(delay);
          return;
        }
      }
    }
    this._finish(error, f.outcome);
  }

  // ---- retry rules --------------------------------------------------------------------------

  /** The retry condition a response status meets under the policy, if any. */
  private _statusRetryReason(status: number): string | undefined {
    const p = this.policy.retry;
    const on = p.on;
    if (this.transport === 'http') {
      if (status >= 500 && on.has('5xx')) return '5xx';
      if ((status === 502 || status === 503 || status === 504) && on.has('gateway-error'))
        return 'gateway-error';
      // The codes first (a short array, scanned inline): a 2xx answer then costs no Set lookup and
      // no `includes` builtin call (~200 instructions per request together).
      if (listed(p.statusCodes, status) && on.has('retriable-status-codes')) return String(status);
      return undefined;
    }
    if (status === 0) return undefined;
    const codes = p.grpcCodes;
    if (codes !== undefined) {
      if (!codes.includes(status)) return undefined;
      for (let i = 0; i < GRPC_CONDITIONS.length; i++) {
        const [name, code] = GRPC_CONDITIONS[i] as readonly [RetryCondition, number];
        if (code === status) return name;
      }
      return String(status);
    }
    for (let i = 0; i < GRPC_CONDITIONS.length; i++) {
      const [name, code] = GRPC_CONDITIONS[i] as readonly [RetryCondition, number];
      if (code === status && on.has(name)) return name;
    }
    return undefined;
  }

  /** The retry condition a failure meets under the policy (Envoy's implications included). */
  private _failureRetryReason(f: AttemptFailure): string | undefined {
    const c = f.condition;
    if (c === undefined) return undefined;
    const on = this.policy.retry.on;
    if (on.has(c)) return c;
    if (c === 'connect-failure' && (on.has('5xx') || on.has('gateway-error'))) return c;
    if ((c === 'reset' || c === 'per-try-timeout') && on.has('5xx')) return c;
    if (c === 'per-try-timeout' && on.has('gateway-error')) return c;
    return undefined;
  }

  /**
   * Whether the call may be sent again at all: not stopped or committed, attempts left, idempotent
   * (or opted in) unless the request provably never reached the server or the user listed the
   * status (`anyMethod`), and a request the transport can send again (`consumed`: the attempt may
   * have read its body).
   */
  private _retryAllowed(anyMethod: boolean, consumed: boolean): boolean {
    if (this._rare.stop !== undefined || this._state !== IN_FLIGHT) return false;
    const p = this.policy.retry;
    if (this._attempts > p.maxRetries) return false;
    if (!anyMethod && (this._flags & IDEMPOTENT) === 0 && !p.nonIdempotent) return false;
    return this.replayable(consumed);
  }

  /**
   * The one retry admission: backoff (full jitter, at least Retry-After), then the deadline, the
   * breaker (never retry into an open one), `thresholds.maxRetries` and the retry budget. Emits a
   * `retry` event; returns the delay, or undefined when the retry is refused.
   */
  private _admitRetry(reason: string, retryAfterMs: number | undefined): number | undefined {
    const rt = this.service;
    const now = rt.now();
    let delay = backoffDelay(this.policy.retry, this._attempts - 1);
    if (retryAfterMs !== undefined && retryAfterMs > delay) delay = retryAfterMs;
    const resilience = rt.resilience;
    let denial: string | undefined;
    if (now + delay >= this._rare.deadlineAt) denial = 'deadline';
    else if (resilience.breaker !== undefined && resilience.breaker.state !== 'closed')
      denial = 'circuit_open';
    else if (!resilience.thresholds.startRetry()) denial = 'max_retries';
    else if (!rt.retryBudget.tryRetry(now)) {
      resilience.thresholds.endRetry();
      denial = 'budget';
    }
    const allowed = denial === undefined;
    if (allowed) this._flags |= RETRY_SLOT;
    if (rt.events.wants('retry')) {
      rt.events.emit('retry', { service: rt.name, attempt: this._attempts, reason, allowed, denial });
    }
    return allowed ? delay : undefined;
  }

  private _scheduleRetry(delay: number): void {
    this._state = IDLE;
    this._more().backoff = setTimeout(Call.#backoffEnded, delay, this);
  }

  static #backoffEnded(call: Call): void {
    call._rare.backoff = undefined;
    call._next();
  }

  /** Records the endpoint of a failed attempt before a retry (no array for a first retry). */
  private _triedEndpoint(ep: EndpointState): void {
    const r = this._more();
    const last = r.lastEndpoint;
    r.lastEndpoint = ep;
    if (last === undefined || last === ep) return;
    if (r.tried === undefined) r.tried = [last, ep];
    else if (!r.tried.includes(ep)) r.tried.push(ep);
  }

  // ---- accounting ---------------------------------------------------------------------------

  /**
   * Records an attempt's end once: breaker verdict, thresholds, retry slot, runtime, observer.
   * False when it was recorded before; the clock read is then `service.clockMs`.
   */
  private _endAttempt(
    att: A,
    outcome: Outcome,
    status: number | undefined,
    error: Error | undefined,
    verdict: Verdict,
    retryReason: string | undefined,
  ): boolean {
    // The flags read and cleared at once (ended set; pending, retry slot and limiter released
    // below), not through their accessors: this runs for every attempt.
    const flags = att._flags;
    if ((flags & A_ENDED) !== 0) return false;
    att._flags = (flags | A_ENDED) & ~(A_PENDING | A_RETRY_SLOT | A_LIMITED);
    if (att.timer !== undefined) {
      clearTimeout(att.timer);
      att.timer = undefined;
    }
    const rt = this.service;
    const permit = att.permit;
    if (permit !== undefined) {
      att.permit = undefined;
      permit.done(verdict === 'success' ? 'success' : verdict === 'ignore' ? 'ignore' : 'failure');
    }
    const thresholds = rt.resilience.thresholds;
    thresholds.leave((flags & A_PENDING) !== 0);
    if ((flags & A_RETRY_SLOT) !== 0) thresholds.endRetry();
    rt.endAttempt(
      att.endpoint,
      att.startedAt,
      att.index,
      outcome,
      status,
      error,
      retryReason,
      this.transport,
      verdict,
      att.connectedAt,
    );
    const now = rt.clockMs;
    if ((flags & A_LIMITED) !== 0) {
      // The limit follows latency: shed answers, fast failures and cancellations are not sampled.
      rt.resilience.concurrency?.release(
        att.endpoint,
        att.connectedAt >= 0 ? now - att.connectedAt : -1,
        outcome,
      );
    }
    const o = this._observer;
    if (o?.attemptEnd !== undefined) {
      try {
        o.attemptEnd(att.endpoint, att.index, outcome, status, now - att.startedAt, error, retryReason);
      } catch {}
    }
    return true;
  }

  private _clearTimers(): void {
    const r = this._rare;
    if (r === NO_STATE) return;
    if (r.deadlineTimer !== undefined) clearTimeout(r.deadlineTimer);
    if (r.backoff !== undefined) clearTimeout(r.backoff);
    r.deadlineTimer = undefined;
    r.backoff = undefined;
    if (r.waitingOn !== undefined) {
      r.waitingOn.cancelWait(this);
      r.waitingOn = undefined;
    }
  }

  /** Ends the call with `error`, which the caller gets. */
  private _finish(error: Error, outcome: Outcome): void {
    if (this._state === DONE) return;
    this._state = DONE;
    this._clearTimers();
    if ((this._flags & RETRY_SLOT) !== 0) {
      this._flags &= ~RETRY_SLOT;
      this.service.resilience.thresholds.endRetry();
    }
    this._report(outcome, this.errorStatus(error) ?? this._lastStatus, error);
    this.deliverError(error);
  }

  /** `now`: the time of the call's end when the caller just read it (< 0: read the clock). */
  private _report(outcome: Outcome, status: number | undefined, error: Error | undefined, now = -1): void {
    const rt = this.service;
    const endpoint = this._current?.endpoint;
    const o = this._observer;
    if (o !== undefined) {
      try {
        o.end(outcome, status, this._attempts, endpoint, error);
      } catch {}
    }
    const hooks = rt.hooks;
    const requests = rt.events.requests;
    const listen = hooks.listensToCalls;
    if (!listen && !requests.wanted) return;
    const durationMs = (now >= 0 ? now : rt.now()) - this._startedAt;
    if (listen) hooks.callEnded(this, durationMs, outcome, status, this._attempts, endpoint, error);
    if (!requests.wanted) return;
    requests.emit({
      service: rt.name,
      method: this.method,
      path: this.path,
      durationMs,
      outcome,
      status,
      attempts: this._attempts,
      endpoint,
      error,
      transport: this.transport,
    });
  }
}
