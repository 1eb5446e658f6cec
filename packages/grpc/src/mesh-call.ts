import {
  type CallCredentials,
  type Channel,
  type Deadline,
  type InterceptingListener,
  type Interceptor,
  Metadata,
  type StatusObject,
  status,
} from '@grpc/grpc-js';
import {
  type BreakerPermit,
  backoffDelay,
  type CallInfo,
  currentDeadline,
  isMeshError,
  type Outcome,
  type RouteRequest,
  type Router,
  type RouteTarget,
  type ServicePolicy,
  type ServiceRuntime,
} from '@meshlet/core';
import { outcomeOf } from './balancer.js';
import { CallTag } from './call-tag.js';
import {
  addHeaders,
  type CallHook,
  type CallObserver,
  circuitOpenStatus,
  errorOf,
  hookFor,
  type MeshInterceptorOptions,
  verdictOf,
} from './interceptors.js';
import { grpcStatusOfHttp, metadataHeader } from './routing.js';

/** grpc-js's channel-level call (what `Channel.createCall` returns). */
export type GrpcCall = ReturnType<Channel['createCall']>;
type MessageContext = Parameters<GrpcCall['sendMessageWithContext']>[0];

/** A message of a retryable stream: its flags, bytes, and the writer's callback if still owed. */
interface QueuedMessage {
  readonly flags: number | undefined;
  readonly message: Buffer;
  callback: (() => void) | undefined;
}

/**
 * Whether the call being created right now is unary. Set by `unaryMarker` (the innermost client
 * interceptor of a mesh client) immediately before grpc-js synchronously creates the channel call,
 * and consumed by `MeshClientPolicy.createCall`; any other call (a user interceptor creating calls
 * of its own, a client without the marker) reads false and is never held back or retried.
 */
let nextCallIsUnary = false;

/**
 * The one client interceptor of a mesh client: it only tells the channel whether the call is unary
 * (only unary calls are retried), then returns grpc-js's own call, so it adds no interceptor layer.
 */
export const unaryMarker: Interceptor = (options, nextCall) => {
  const def = options.method_definition;
  nextCallIsUnary = !def.requestStream && !def.responseStream;
  const call = nextCall(options);
  nextCallIsUnary = false;
  return call as ReturnType<Interceptor>;
};

/**
 * How many bytes of request messages a streaming call keeps for a replay while it is not
 * committed (gRPC's per-call retry buffer, gRFC A6: 256 KiB). Past it the call commits to its
 * current attempt: no more retries, nothing more kept.
 */
export const STREAM_RETRY_BUFFER_BYTES = 256 * 1024;

function maskOf(codes: readonly number[]): number {
  let mask = 0;
  for (const c of codes) if (c > 0 && c < 31) mask |= 1 << c;
  return mask;
}

/**
 * Enforces the service's default `timeout` for the calls of one client without a timer per call:
 * calls whose only deadline is that timeout are linked into a list, and one unref'd interval
 * (a twentieth of the shortest timeout seen, 5 ms to 500 ms) ends the expired ones with
 * DEADLINE_EXCEEDED. A per-call grpc-js deadline costs a timer per call (and, at concurrency 1,
 * noticeably more than the rest of meshlet's work); explicit deadlines — the caller's, the inbound
 * request's, an xDS route's — still go to grpc-js and travel as `grpc-timeout`.
 */
class TimeoutSweeper {
  head: MeshCall | undefined;
  #timer: NodeJS.Timeout | undefined;
  #periodMs = Number.POSITIVE_INFINITY;
  #idle = 0;

  add(call: MeshCall, timeoutMs: number): void {
    const head = this.head;
    call.sweepNext = head;
    call.sweepPrev = undefined;
    if (head !== undefined) head.sweepPrev = call;
    this.head = call;
    const period = Math.min(500, Math.max(5, Math.floor(timeoutMs / 20)));
    if (this.#timer === undefined || period < this.#periodMs) this.#arm(period);
  }

  remove(call: MeshCall): void {
    const prev = call.sweepPrev;
    const next = call.sweepNext;
    if (prev !== undefined) prev.sweepNext = next;
    else if (this.head === call) this.head = next;
    if (next !== undefined) next.sweepPrev = prev;
    call.sweepPrev = undefined;
    call.sweepNext = undefined;
  }

  #arm(period: number): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#periodMs = period;
    this.#idle = 0;
    this.#timer = setInterval((self: TimeoutSweeper) => self.sweep(), period, this);
    this.#timer.unref();
  }

  sweep(): void {
    if (this.head === undefined) {
      // Stop after a few idle sweeps; the next call re-arms.
      if (++this.#idle > 20 && this.#timer !== undefined) {
        clearInterval(this.#timer);
        this.#timer = undefined;
        this.#periodMs = Number.POSITIVE_INFINITY;
      }
      return;
    }
    this.#idle = 0;
    const now = Date.now();
    let c: MeshCall | undefined = this.head;
    while (c !== undefined) {
      const next: MeshCall | undefined = c.sweepNext;
      if (c.expiresAt <= now) {
        this.remove(c);
        c.expire();
      }
      c = next;
    }
  }
}

/** Retry masks of route retry policies that name gRPC codes (xDS `retry_on`), per policy object. */
const routeMasks = new WeakMap<ServicePolicy, number>();

/**
 * The compiled per-client policy of a mesh client (built once when the client is created, read by
 * every call): the service (or, for a routed target, the router), retried status codes as a bit
 * mask, the retry limit override, the service-timeout switch and the call hook.
 */
export class MeshClientPolicy {
  /** The target's service; undefined for a routed target (see `router`). */
  readonly runtime: ServiceRuntime | undefined;
  /** The target's router (an xDS listener): each call is routed to a service first. */
  readonly router: Router | undefined;
  /** Bit `c` set: status code `c` is retried. 0: retries off. */
  readonly retryMask: number;
  /** False with `retry: false` (no retries, whatever a route says). */
  readonly retries: boolean;
  readonly maxRetries: number | undefined;
  readonly serviceTimeout: boolean;
  readonly hook: CallHook | undefined;
  /** The client's unary method paths when its method table is known (else `unaryMarker` tells). */
  readonly unaryPaths: ReadonlySet<string> | undefined;
  /** Ends calls past the service's default timeout (see `TimeoutSweeper`). */
  readonly sweeper = new TimeoutSweeper();

  constructor(
    target: ServiceRuntime | Router,
    options: MeshInterceptorOptions,
    unaryPaths?: ReadonlySet<string> | undefined,
  ) {
    const isRouter = 'route' in target;
    this.runtime = isRouter ? undefined : target;
    this.router = isRouter ? target : undefined;
    this.unaryPaths = unaryPaths;
    this.retries = options.retry !== false;
    this.retryMask = options.retry === false ? 0 : maskOf(options.retry?.codes ?? [status.UNAVAILABLE]);
    this.maxRetries = options.retry === false ? undefined : options.retry?.maxRetries;
    this.serviceTimeout = options.serviceTimeout ?? true;
    this.hook = options.callHook;
  }

  /** Whether calls may be retried at all (the unary marker is needed only then). */
  get mayRetry(): boolean {
    return this.retries && (this.retryMask !== 0 || this.router !== undefined);
  }

  /** Creates the mesh call of one client call on `channel` (see `MeshCall`). */
  createCall(
    channel: Channel,
    method: string,
    deadline: Deadline,
    host: string | null | undefined,
    parent: Parameters<Channel['createCall']>[3],
    flags: number | null | undefined,
  ): MeshCall {
    const paths = this.unaryPaths;
    const unary = paths === undefined ? nextCallIsUnary : paths.has(method);
    nextCallIsUnary = false;
    // The caller's deadline and the deadline of the inbound request in scope (deadline context);
    // the service (or route) timeout is added when the call starts.
    let d = typeof deadline === 'number' ? deadline : deadline.getTime();
    const inbound = currentDeadline();
    if (inbound !== undefined && inbound < d) d = inbound;
    return new MeshCall(this, channel, method, d, host, parent, flags, unary);
  }
}

/**
 * One client call of a mesh client, at grpc-js's channel level (below serialization, above the
 * channel's own resolving/retrying/load-balancing calls): one object per call, no closures on the
 * success path. It applies, per call:
 * - **deadline propagation**: the smallest of the caller's deadline, the deadline of the inbound
 *   request in scope and the service `timeout` (grpc-js sends it as `grpc-timeout`);
 * - **the breaker**: a permit per attempt; an open (or probing) breaker fails the call with
 *   UNAVAILABLE `MESHLET_ERR_CIRCUIT_OPEN` without sending it;
 * - **retries** of calls whose status is retried, at most `maxRetries` times, with the service's
 *   backoff, within the deadline and the retry budget, each retry avoiding every endpoint already
 *   tried; the request (metadata and the serialized messages) is replayed. A unary call's response
 *   is held back until its status says whether it is retried. A streaming call is retried only
 *   until it **commits** (gRFC A6): when the server's response headers arrive (from then on its
 *   messages flow to the caller as they come), or when its sent messages outgrow
 *   `STREAM_RETRY_BUFFER_BYTES`; until then its messages are kept for a replay and the writer is
 *   told each was written at once (as grpc-js's own retries do);
 * - **attempt accounting** for the balancer (in-flight count, latency, outlier detection) with the
 *   endpoint the `meshlet` picker chose, and **telemetry**: the call hook and a `request` event.
 */
export class MeshCall implements GrpcCall, RouteRequest, CallInfo {
  readonly transport = 'grpc' as const;
  readonly #policy: MeshClientPolicy;
  #rt: ServiceRuntime | undefined;
  /** The policy of this call: the service's, or the route's merge over it. */
  #svc: ServicePolicy | undefined;
  readonly #channel: Channel;
  readonly #method: string;
  /** The explicit deadline (caller's, inbound request's, route's): grpc-js enforces and sends it. */
  #deadline: number;
  /** When the call fails with DEADLINE_EXCEEDED: `#deadline`, or the service timeout if sooner. */
  expiresAt = Number.POSITIVE_INFINITY;
  /** Links of the policy's `TimeoutSweeper` list (calls whose service timeout is pending). */
  sweepPrev: MeshCall | undefined = undefined;
  sweepNext: MeshCall | undefined = undefined;
  #swept = false;
  #expired = false;
  readonly #host: string | null | undefined;
  readonly #parent: Parameters<Channel['createCall']>[3];
  readonly #flags: number | null | undefined;
  readonly #unary: boolean;
  #retryMask = 0;
  #maxRetries = 0;
  #credentials: CallCredentials | undefined;
  #attempt: GrpcCall | undefined;
  #attemptNo = 0;
  #tag: CallTag | undefined;
  #metadata: Metadata | undefined;
  #listener: InterceptingListener | undefined;
  #obs: CallObserver | undefined;
  #permit: BreakerPermit | undefined;
  #start = 0;
  /** Messages sent while the call was still being routed: context, message, … */
  #early: Array<MessageContext | Buffer> | undefined;
  // Replay state (retryable calls only): a unary call's one message,
  #context: MessageContext | undefined;
  #message: Buffer | undefined;
  /** A unary call whose response is held back until its status (it may be retried). */
  #holdBack = false;
  /** A streaming call that may be retried and has not committed: its messages are kept. */
  #replay: boolean;
  /**
   * A retryable streaming call's messages, written to the current attempt one at a time (each
   * after the previous one's write completed, as grpc-js's calls below expect): all of them until
   * the call commits, then only those not written yet. Undefined once committed and drained (the
   * messages then go straight to the attempt) and for every other call.
   */
  #queue: QueuedMessage[] | undefined;
  /** The next message of `#queue` to write to the current attempt. */
  #queueNext = 0;
  /** A write to the current attempt is pending (its callback has not come back). */
  #writing = false;
  /** Bytes kept for a replay (at most `STREAM_RETRY_BUFFER_BYTES`). */
  #keptBytes = 0;
  /** The write callback of the current attempt (a new one per attempt: stale callbacks are ignored). */
  #written: (() => void) | undefined;
  #halfClosed = false;
  /** `halfClose` reached the current attempt (queued calls half-close once the queue drained). */
  #halfCloseSent = false;
  #reading = false;
  // Held-back response of the current attempt (retryable calls only).
  #respMetadata: Metadata | undefined;
  #respMessage: unknown;
  #hasMessage = false;
  #cancelled = false;
  #delivered = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    policy: MeshClientPolicy,
    channel: Channel,
    method: string,
    deadline: number,
    host: string | null | undefined,
    parent: Parameters<Channel['createCall']>[3],
    flags: number | null | undefined,
    unary: boolean,
  ) {
    this.#policy = policy;
    this.#channel = channel;
    this.#method = method;
    this.#deadline = deadline;
    this.#host = host;
    this.#parent = parent;
    this.#flags = flags;
    this.#unary = unary;
    this.#replay = !unary && policy.mayRetry;
    this.#queue = this.#replay ? [] : undefined;
  }

  // --- RouteRequest (what a router sees of this call) and CallInfo (what the call hook sees) ---

  get service(): ServiceRuntime {
    return this.#rt as ServiceRuntime;
  }

  get authority(): string {
    return (this.#rt as ServiceRuntime).name;
  }

  get method(): string {
    return 'POST';
  }

  get path(): string {
    return this.#method;
  }

  header(name: string): string | undefined {
    return this.#metadata === undefined ? undefined : metadataHeader(this.#metadata, name);
  }

  start(metadata: Metadata, listener: InterceptingListener): void {
    const tag = new CallTag(metadata.getOptions());
    tag.managed = true;
    metadata.setOptions(tag);
    this.#tag = tag;
    this.#metadata = metadata;
    this.#listener = listener;
    const rt = this.#policy.runtime;
    if (rt !== undefined) this.#begin(rt, rt.policy);
    else this.#route(false);
  }

  /** Routes the call (routed targets): picks its service and route policy, applies faults. */
  #route(waited: boolean): void {
    if (this.#cancelled) return;
    const router = this.#policy.router as Router;
    const result = router.route(this);
    if (result === undefined) {
      if (waited) this.#fail(status.UNAVAILABLE, `no route table for "${router.name}"`, !waited);
      else router.whenReady().then(() => this.#route(true));
      return;
    }
    if (isMeshError(result)) {
      this.#fail(status.UNAVAILABLE, `${result.code}: ${result.message}`, !waited);
      return;
    }
    const target = result as RouteTarget;
    (this.#tag as CallTag).target = target;
    if (target.delayMs > 0) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        if (!this.#cancelled) this.#routed(target, false);
      }, target.delayMs);
      return;
    }
    this.#routed(target, !waited);
  }

  #routed(target: RouteTarget, sync: boolean): void {
    if (target.abortStatus > 0) {
      this.#fail(grpcStatusOfHttp(target.abortStatus), 'fault filter abort', sync);
      return;
    }
    this.#begin(target.runtime, target.policy ?? target.runtime.policy);
  }

  /** Ends a call that could not be routed (nothing was sent); `sync`: still inside `start()`. */
  #fail(code: status, details: string, sync: boolean): void {
    const st: StatusObject = { code, details, metadata: new Metadata() };
    if (sync) setImmediate(() => this.#deliver(st, 'http_error'));
    else this.#deliver(st, 'http_error');
  }

  /** Starts the call on its service: deadline, retry limits, telemetry, then the first attempt. */
  #begin(rt: ServiceRuntime, svc: ServicePolicy): void {
    this.#rt = rt;
    this.#svc = svc;
    const policy = this.#policy;
    this.#start = rt.now();
    this.expiresAt = this.#deadline;
    if (policy.serviceTimeout && svc.timeoutMs > 0) {
      const d = Date.now() + svc.timeoutMs;
      if (svc !== rt.policy) {
        // A route's timeout (xDS): the call's deadline, sent as grpc-timeout (gRFC A31).
        if (d < this.#deadline) this.#deadline = this.expiresAt = d;
      } else if (d < this.#deadline) {
        this.expiresAt = d;
        this.#swept = true;
        policy.sweeper.add(this, svc.timeoutMs);
      }
    }
    if (policy.retries) {
      const retry = svc.retry;
      if (retry.grpcCodes !== undefined && retry !== rt.policy.retry) {
        // The route's own retry policy (xDS): its codes and attempts.
        let mask = routeMasks.get(svc);
        if (mask === undefined) {
          mask = maskOf(retry.grpcCodes);
          routeMasks.set(svc, mask);
        }
        this.#retryMask = mask;
        this.#maxRetries = mask === 0 ? 0 : retry.maxRetries;
      } else if (policy.retryMask !== 0) {
        this.#retryMask = policy.retryMask;
        this.#maxRetries = policy.maxRetries ?? retry.maxRetries;
      }
    }
    this.#holdBack = this.#unary && this.#maxRetries > 0;
    if (!this.#unary && (this.#maxRetries === 0 || !this.#replay)) {
      // Not retried (or already committed while it was being routed): nothing more to keep.
      this.#maxRetries = 0;
      if (this.#replay) this.#commit();
    }
    const hook = hookFor(rt, policy.hook);
    if (hook !== undefined) {
      try {
        this.#obs = hook.start(this);
      } catch {
        this.#obs = undefined;
      }
      addHeaders(this.#metadata as Metadata, this.#obs?.headers);
    }
    if (this.#maxRetries > 0) rt.retryBudget.recordRequest(this.#start);
    this.#send(false);
  }

  /** Starts an attempt (the first, or a retry): breaker permit, a new channel call, the replay. */
  #send(retry: boolean): void {
    const rt = this.#rt as ServiceRuntime;
    const breaker = rt.resilience.breaker;
    if (breaker !== undefined) {
      const permit = breaker.tryAcquire();
      if (permit === undefined) {
        // Fail fast without sending anything: the breaker is open (or its probe is out).
        this.#attempt = undefined;
        const st = circuitOpenStatus(rt);
        if (!retry) setImmediate(() => this.#deliver(st, 'circuit_open'));
        else this.#deliver(st, 'circuit_open');
        return;
      }
      this.#permit = permit;
    }
    if (retry) this.#attemptNo++;
    const call = this.#channel.createCall(
      this.#method,
      this.#deadline,
      this.#host,
      this.#parent,
      this.#flags,
    );
    if (this.#credentials !== undefined) call.setCredentials(this.#credentials);
    this.#attempt = call;
    (this.#tag as CallTag).attempt = this.#attemptNo;
    const queued = this.#queue !== undefined;
    if (queued) {
      // A retryable stream: its kept messages go to this attempt from the first, one at a time.
      this.#written = () => this.#onWritten(call);
      this.#writing = false;
      this.#queueNext = 0;
      this.#halfCloseSent = false;
    }
    call.start(this.#metadata as Metadata, this);
    // Replay what the client did before this attempt existed (a retry, or a call that waited
    // for its route).
    if (this.#reading) call.startRead();
    if (queued) {
      if (this.#attempt === call) this.#pump();
      return;
    }
    const early = this.#early;
    if (early !== undefined) {
      this.#early = undefined;
      for (let i = 0; i + 1 < early.length; i += 2)
        call.sendMessageWithContext(early[i] as MessageContext, early[i + 1] as Buffer);
    } else if (this.#message !== undefined) {
      call.sendMessageWithContext(this.#context ?? {}, this.#message);
    }
    if (this.#halfClosed) call.halfClose();
  }

  // --- Call (towards grpc-js's client above) ---

  sendMessageWithContext(context: MessageContext, message: Buffer): void {
    const queue = this.#queue;
    if (queue !== undefined) {
      let cb = context.callback;
      if (this.#replay) {
        if (this.#keptBytes + message.length <= STREAM_RETRY_BUFFER_BYTES) {
          // Kept for a replay: the writer may go on at once (next tick, as after a write).
          this.#keptBytes += message.length;
          if (cb !== undefined) process.nextTick(cb);
          cb = undefined;
        } else this.#commit();
      }
      queue.push({ flags: context.flags, message, callback: cb });
      this.#pump();
      return;
    }
    if (this.#rt === undefined) {
      // Still being routed: keep every message until the first attempt exists.
      if (this.#early === undefined) this.#early = [];
      this.#early.push(context, message);
    }
    if (this.#maxRetries > 0 || this.#rt === undefined) {
      this.#context = context;
      this.#message = message;
    }
    this.#attempt?.sendMessageWithContext(context, message);
  }

  startRead(): void {
    this.#reading = true;
    this.#attempt?.startRead();
  }

  halfClose(): void {
    this.#halfClosed = true;
    if (this.#queue !== undefined) this.#pump();
    else this.#attempt?.halfClose();
  }

  /**
   * Writes the next queued message to the current attempt when no write is pending; once the
   * queue is drained, half-closes the attempt if the caller did, and, for a committed call, stops
   * queueing.
   */
  #pump(): void {
    const queue = this.#queue;
    const call = this.#attempt;
    if (queue === undefined || call === undefined || this.#writing) return;
    const m = queue[this.#queueNext];
    if (m !== undefined) {
      this.#writing = true;
      call.sendMessageWithContext({ flags: m.flags, callback: this.#written }, m.message);
      return;
    }
    if (!this.#replay) this.#queue = undefined; // committed and drained: straight through now
    if (this.#halfClosed && !this.#halfCloseSent) {
      this.#halfCloseSent = true;
      call.halfClose();
    }
  }

  /** The current attempt finished writing a queued message. */
  #onWritten(attempt: GrpcCall): void {
    if (attempt !== this.#attempt) return; // an attempt given up (retried, or the call ended)
    this.#writing = false;
    const queue = this.#queue;
    if (queue === undefined) return;
    const m = queue[this.#queueNext] as QueuedMessage;
    // Committed: what the attempt wrote is not kept; kept for a replay: move on.
    if (this.#replay) this.#queueNext++;
    else queue.shift();
    const cb = m.callback;
    if (cb !== undefined) {
      m.callback = undefined;
      cb();
    }
    this.#pump();
  }

  cancelWithStatus(code: status, details: string): void {
    if (this.#cancelled || this.#delivered) return;
    this.#cancelled = true;
    this.#permit?.done('ignore');
    this.#permit = undefined;
    if (this.#timer !== undefined) {
      // Cancelled while backing off before a retry: no attempt is in flight to report it.
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#deliver({ code, details, metadata: new Metadata() }, 'cancelled');
      return;
    }
    if (this.#attempt !== undefined) this.#attempt.cancelWithStatus(code, details);
    else if (this.#listener === undefined) this.#delivered = true;
    // Not sent (still being routed, or refused by the breaker): nothing else will report it.
    else this.#deliver({ code, details, metadata: new Metadata() }, 'cancelled');
  }

  getPeer(): string {
    return this.#attempt?.getPeer() ?? this.#channel.getTarget();
  }

  getCallNumber(): number {
    return this.#attempt?.getCallNumber() ?? 0;
  }

  setCredentials(credentials: CallCredentials): void {
    this.#credentials = credentials;
    this.#attempt?.setCredentials(credentials);
  }

  getAuthContext(): ReturnType<GrpcCall['getAuthContext']> {
    return this.#attempt?.getAuthContext() ?? null;
  }

  /** The service timeout passed (called by the sweeper, which already unlinked the call). */
  expire(): void {
    this.#swept = false;
    if (this.#delivered || this.#cancelled) return;
    this.#expired = true;
    const details = 'Deadline exceeded (the service timeout of the mesh client)';
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#deliver({ code: status.DEADLINE_EXCEEDED, details, metadata: new Metadata() }, 'timeout');
      return;
    }
    if (this.#attempt !== undefined) this.#attempt.cancelWithStatus(status.DEADLINE_EXCEEDED, details);
    else this.#deliver({ code: status.DEADLINE_EXCEEDED, details, metadata: new Metadata() }, 'timeout');
  }

  // --- InterceptingListener (from the current attempt's channel call) ---

  onReceiveMetadata(metadata: Metadata): void {
    if (this.#holdBack) this.#respMetadata = metadata;
    else {
      // The server answered: a streaming call commits to this attempt.
      if (this.#replay) this.#commit();
      this.#listener?.onReceiveMetadata(metadata);
    }
  }

  onReceiveMessage(message: unknown): void {
    if (this.#holdBack) {
      this.#respMessage = message;
      this.#hasMessage = true;
    } else this.#listener?.onReceiveMessage(message);
  }

  onReceiveStatus(st: StatusObject): void {
    const rt = this.#rt as ServiceRuntime;
    const code = st.code;
    const tag = this.#tag as CallTag;
    const ep = tag.pending;
    if (ep !== undefined) {
      tag.pending = undefined;
      rt.endAttempt(ep, tag.startedAt, this.#attemptNo, outcomeOf(code), code, undefined, undefined, 'grpc');
    }
    const permit = this.#permit;
    if (permit !== undefined) {
      this.#permit = undefined;
      permit.done(verdictOf(code));
    }
    if (
      code !== status.OK &&
      this.#attemptNo < this.#maxRetries &&
      ((this.#retryMask >>> code) & 1) === 1 &&
      !this.#cancelled &&
      !this.#expired &&
      this.#retry(code)
    ) {
      return;
    }
    this.#deliver(st, outcomeOf(code));
  }

  /**
   * A streaming call commits to its current attempt (gRFC A6): no more retries, no more messages
   * kept (those kept go to the next attempt when none is out yet, then are dropped).
   */
  #commit(): void {
    this.#replay = false;
    if (this.#maxRetries > this.#attemptNo) this.#maxRetries = this.#attemptNo;
    const queue = this.#queue;
    if (queue !== undefined && this.#attempt !== undefined && this.#queueNext > 0) {
      // What the current attempt already wrote is not needed any more.
      queue.splice(0, this.#queueNext);
      this.#queueNext = 0;
    }
  }

  /** Decides on and schedules a retry after a failed attempt; false when it is not allowed. */
  #retry(code: number): boolean {
    const rt = this.#rt as ServiceRuntime;
    const now = rt.now();
    const delay = backoffDelay((this.#svc as ServicePolicy).retry, this.#attemptNo);
    const pastDeadline = Date.now() + delay >= this.expiresAt;
    // Never retry into an open (or probing) breaker.
    const breakerOpen = rt.resilience.breaker !== undefined && rt.resilience.breaker.state !== 'closed';
    const allowed = !pastDeadline && !breakerOpen && rt.retryBudget.tryRetry(now);
    if (rt.events.wants('retry')) {
      rt.events.emit('retry', {
        service: rt.name,
        attempt: this.#attemptNo + 1,
        reason: status[code] ?? String(code),
        allowed,
        denial: allowed ? undefined : pastDeadline ? 'deadline' : breakerOpen ? 'circuit_open' : 'budget',
      });
    }
    if (!allowed) return false;
    this.#respMetadata = undefined;
    this.#respMessage = undefined;
    this.#hasMessage = false;
    this.#attempt = undefined;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (!this.#cancelled) this.#send(true);
    }, delay);
    return true;
  }

  #deliver(st: StatusObject, outcome: Outcome): void {
    if (this.#delivered) return;
    this.#delivered = true;
    if (this.#swept) {
      this.#swept = false;
      this.#policy.sweeper.remove(this);
    }
    this.#attempt = undefined;
    const rt = this.#rt;
    const tag = this.#tag;
    const obs = this.#obs;
    if (obs !== undefined) obs.end(outcome, st.code, this.#attemptNo + 1, tag?.endpoint, errorOf(st));
    if (rt?.events.wants('request')) {
      rt.events.emit('request', {
        service: rt.name,
        method: 'POST',
        path: this.#method,
        durationMs: rt.now() - this.#start,
        outcome,
        status: st.code,
        attempts: this.#attemptNo + 1,
        endpoint: tag?.endpoint,
        error: undefined,
        transport: 'grpc',
      });
    }
    const l = this.#listener;
    if (l === undefined) return;
    if (this.#holdBack) {
      if (this.#respMetadata !== undefined) l.onReceiveMetadata(this.#respMetadata);
      else if (st.code === status.OK) l.onReceiveMetadata(new Metadata());
      if (this.#hasMessage) l.onReceiveMessage(this.#respMessage);
    }
    l.onReceiveStatus(st);
  }
}
