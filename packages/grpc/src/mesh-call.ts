import {
  type CallCredentials,
  type CallInvocationTransformer,
  type Channel,
  connectivityState,
  type Deadline,
  experimental,
  type InterceptingListener,
  type InterceptorOptions,
  Metadata,
  type MetadataOptions,
  type MetadataValue,
  type NextCall,
  propagate,
  type StatusObject,
  status,
} from '@grpc/grpc-js';
import {
  type CallHook,
  type EndpointState,
  ErrorCodes,
  isMeshError,
  ORCA_BIN_HEADER,
  parseRetryAfter,
  type RetryPolicy,
  type RouteRequest,
  type Router,
  type RouteTarget,
  readEndpointReportBytes,
  type ServicePolicy,
  type ServiceRuntime,
  SHED_HEADER,
} from '@meshlet/core';
import { type AttemptFailure, AttemptFailures, Call, CallAttempt } from '@meshlet/core/extend';
import { grpcStatusOfHttp, grpcTimeout, MetadataHeaders, metadataHeader } from './metadata.js';

/** grpc-js's channel-level call (what `Channel.createCall` returns). */
export type GrpcCall = ReturnType<Channel['createCall']>;
type MessageContext = Parameters<GrpcCall['sendMessageWithContext']>[0];
type ParentCall = Parameters<Channel['createCall']>[3];
type AuthContext = ReturnType<GrpcCall['getAuthContext']>;
type SubchannelInterface = experimental.SubchannelInterface;

/**
 * The call of one attempt: grpc-js's channel-level call (mesh clients), or the rest of an
 * interceptor chain (`meshInterceptor`). Both speak this much of grpc-js's call interface.
 */
interface AttemptCall {
  start(metadata: Metadata, listener: InterceptingListener): void;
  // biome-ignore lint/suspicious/noExplicitAny: an interceptor chain takes unserialized messages
  sendMessageWithContext(context: MessageContext, message: any): void;
  startRead(): void;
  halfClose(): void;
  cancelWithStatus(code: status, details: string): void;
  getPeer(): string;
  getAuthContext(): AuthContext;
}

/** A message of a replayable stream: its flags, bytes, and the writer's callback if still owed. */
interface QueuedMessage {
  readonly flags: number | undefined;
  readonly message: Buffer;
  callback: (() => void) | undefined;
}

/**
 * How many bytes of request messages a streaming call keeps for a replay while it is not
 * committed (gRPC's per-call retry buffer, gRFC A6: 256 KiB). Past it the call commits to its
 * current attempt: no more retries, nothing more kept.
 */
export const STREAM_RETRY_BUFFER_BYTES = 256 * 1024;

/** Method flags of a mesh client's method table. */
export const UNARY = 1;
export const IDEMPOTENT = 2;

/**
 * The flags of the call being created right now, when the client's method table is not known.
 * Set by `markUnary` (the call invocation transformer of a `meshClientOptions` client) just
 * before grpc-js synchronously builds the call's interceptor chain and creates the channel call,
 * and consumed by `MeshClientPolicy.createCall`; any other call reads 0 (a streaming call of
 * unknown idempotency).
 */
let nextCallFlags = 0;

/**
 * The call invocation transformer of a `meshClientOptions` client (no method table): it only tells
 * the channel whether the call is unary. grpc-js runs it for every call of the client, whatever
 * interceptors the call has (per-call `interceptors` replace the client's: a marker interceptor
 * would be dropped with them), and it adds no layer to the call.
 */
export const markUnary: CallInvocationTransformer = (props) => {
  const def = props.methodDefinition;
  nextCallFlags = !def.requestStream && !def.responseStream ? UNARY : 0;
  return props;
};

/** Proto `idempotency_level` (a method definition's `options`, as @grpc/proto-loader gives them). */
export function idempotencyOf(def: unknown): boolean {
  const options = (def as { options?: unknown } | undefined)?.options;
  if (options === null || typeof options !== 'object') return false;
  const o = options as Record<string, unknown>;
  const level = o.idempotency_level ?? o.idempotencyLevel;
  // IDEMPOTENCY_UNKNOWN = 0, NO_SIDE_EFFECTS = 1, IDEMPOTENT = 2
  return level === 'IDEMPOTENT' || level === 'NO_SIDE_EFFECTS' || level === 1 || level === 2;
}

export interface RetryOptions {
  /**
   * gRPC status codes retried whatever the method's idempotency (you say the code means "not
   * processed"); they replace the gRPC conditions of the service's `retry.on`.
   */
  readonly codes?: readonly number[];
  /** Retries after the first attempt; default: the service's `retry.attempts` (2). */
  readonly maxRetries?: number;
}

export interface MeshInterceptorOptions {
  /**
   * Retries; `false` turns them off (transparent ones too). Default: the service's retry policy,
   * whose gRPC conditions (`unavailable`, `cancelled`) apply to idempotent methods only; a call
   * that never left the client is retried whatever the method.
   */
  readonly retry?: RetryOptions | false;
  /**
   * Apply the service's `timeout` to unary calls (default true; streaming calls never get it). The
   * caller's deadline and the inbound request's in scope always apply.
   */
  readonly serviceTimeout?: boolean;
  /**
   * Methods retried like idempotent ones besides those the proto marks (`idempotency_level`
   * IDEMPOTENT or NO_SIDE_EFFECTS): full paths (`/pkg.Service/Method`) or whole services
   * (`pkg.Service`).
   */
  readonly idempotentMethods?: readonly string[];
  /** Client spans and trace propagation (default: the mesh's, see `Mesh.setCallHook`). */
  readonly callHook?: CallHook | undefined;
}

/**
 * The compiled per-client policy of a mesh client (built once when the client is created, read by
 * every call): the service (or, for a routed target, the router), the client's method table, and
 * its overrides of the service policy (retry codes and limit, service timeout, call hook).
 */
export class MeshClientPolicy {
  /** The target's service; undefined for a routed target (see `router`). */
  readonly runtime: ServiceRuntime | undefined;
  /** The target's router (an xDS listener): each call is routed to a service first. */
  readonly router: Router | undefined;
  readonly hook: CallHook | undefined;
  /** What `getPeer()` says before a call has an attempt (the channel's target). */
  readonly target: string;
  /**
   * False once an attempt answered that meshlet's picker never saw (a `meshInterceptor` on a
   * channel that is not a `mesh:` one): then a failure before a pick is not known to be unsent.
   */
  managedPicks = true;
  /** The channel a mesh client's calls make their attempts on (set by the client's channel handle). */
  channel: Channel | undefined = undefined;
  /** Flags (`UNARY`, `IDEMPOTENT`) by method path, when the client's method table is known. */
  readonly #methods: ReadonlyMap<string, number> | undefined;
  readonly #idempotent: ReadonlySet<string> | undefined;
  readonly #retry: RetryOptions | false | undefined;
  readonly #serviceTimeout: boolean;
  /** The client changes nothing of the service policy (then unary calls use it as it is). */
  readonly #plain: boolean;
  /** The path `flagsOf` saw last, and its flags (from the method table and `idempotentMethods`). */
  #lastPath: string | undefined = undefined;
  #lastFlags = 0;
  /** Derived policies by base policy: [with its timeout, without]. */
  readonly #derived = new WeakMap<ServicePolicy, Array<ServicePolicy | undefined>>();

  constructor(
    target: ServiceRuntime | Router,
    options: MeshInterceptorOptions,
    methods: ReadonlyMap<string, number> | undefined,
    targetName: string,
  ) {
    const isRouter = 'route' in target;
    this.runtime = isRouter ? undefined : target;
    this.router = isRouter ? target : undefined;
    this.#methods = methods;
    this.#idempotent =
      options.idempotentMethods !== undefined && options.idempotentMethods.length > 0
        ? new Set(options.idempotentMethods.map((m) => (m.startsWith('/') ? m : `/${m}`)))
        : undefined;
    this.#retry = options.retry;
    this.#serviceTimeout = options.serviceTimeout ?? true;
    this.#plain = options.retry === undefined && this.#serviceTimeout;
    this.hook = options.callHook;
    this.target = targetName;
  }

  /** Whether the method table is known (else `markUnary` tells which calls are unary). */
  get knowsMethods(): boolean {
    return this.#methods !== undefined;
  }

  /** The flags of `path`: from the method table, else `markUnary`'s, plus `idempotentMethods`. */
  flagsOf(path: string): number {
    const marker = nextCallFlags;
    nextCallFlags = 0;
    // The method of the previous call, most often the same string object: no lookup.
    if (path !== this.#lastPath) {
      const methods = this.#methods;
      let flags = methods === undefined ? 0 : (methods.get(path) ?? 0);
      const extra = this.#idempotent;
      if (extra !== undefined && (flags & IDEMPOTENT) === 0) {
        if (extra.has(path)) flags |= IDEMPOTENT;
        else {
          const slash = path.lastIndexOf('/');
          if (slash > 0 && extra.has(path.slice(0, slash))) flags |= IDEMPOTENT;
        }
      }
      this.#lastPath = path;
      this.#lastFlags = flags;
    }
    // Without a method table, whether the call is unary is `markUnary`'s (per call).
    return this.#methods === undefined ? this.#lastFlags | marker : this.#lastFlags;
  }

  /**
   * The policy a call runs with: `base` (the service's, or a route's merge over it) with the
   * client's overrides, and without a timeout the call must not get — a streaming call never gets
   * the service's `timeout` (only a route's own), a unary one not with `serviceTimeout: false`.
   */
  policyFor(base: ServicePolicy, rt: ServiceRuntime, unary: boolean): ServicePolicy {
    if (this.#plain && (unary || base.timeoutMs === 0)) return base;
    const routeTimeout = base !== rt.policy && base.timeoutMs !== rt.policy.timeoutMs;
    const keep = base.timeoutMs === 0 || routeTimeout || (unary && this.#serviceTimeout);
    let variants = this.#derived.get(base);
    if (variants === undefined) {
      variants = [undefined, undefined];
      this.#derived.set(base, variants);
    }
    const i = keep ? 0 : 1;
    let p = variants[i];
    if (p === undefined) {
      const routeRetry = base.retry !== rt.policy.retry && base.retry.grpcCodes !== undefined;
      p = Object.freeze({
        ...base,
        timeoutMs: keep ? base.timeoutMs : 0,
        retry: this.#retryOf(base.retry, routeRetry),
      });
      variants[i] = p;
    }
    return p;
  }

  #retryOf(retry: RetryPolicy, routeRetry: boolean): RetryPolicy {
    const o = this.#retry;
    if (o === false) return retry.maxRetries === 0 ? retry : Object.freeze({ ...retry, maxRetries: 0 });
    // A route's own retry policy (xDS) replaces the client's codes and limit.
    if (o === undefined || routeRetry) return retry;
    return Object.freeze({
      ...retry,
      maxRetries: o.maxRetries ?? retry.maxRetries,
      grpcCodes: o.codes !== undefined ? Object.freeze([...o.codes]) : retry.grpcCodes,
    });
  }

  /** Creates the mesh call of one client call on the client's channel (see `MeshCall`). */
  createCall(
    method: string,
    deadline: Deadline,
    host: string | null | undefined,
    parent: ParentCall,
    flags: number | null | undefined,
  ): MeshCall {
    // As grpc-js: a deadline that is no time, and a call on a closed channel, throw where the
    // call is made.
    if (typeof deadline !== 'number' && !(deadline instanceof Date))
      throw new TypeError('Channel#createCall: deadline must be a number or Date');
    if ((this.channel as Channel).getConnectivityState(false) === connectivityState.SHUTDOWN)
      throw new Error('Channel has been shut down');
    const call = new MeshCall(this, method, this.flagsOf(method), deadline, parent, flags);
    call.onChannel(host);
    return call;
  }

  /** Creates the mesh call of one call through `meshInterceptor`. */
  interceptCall(options: InterceptorOptions, nextCall: NextCall): MeshCall {
    const def = options.method_definition;
    nextCallFlags = !def.requestStream && !def.responseStream ? UNARY : 0;
    const call = new MeshCall(
      this,
      def.path,
      this.flagsOf(def.path),
      options.deadline ?? Number.POSITIVE_INFINITY,
      options.parent ?? null,
      options.propagate_flags,
    );
    call.onInterceptor(options, nextCall);
    return call;
  }
}

/** A gRPC status as the error of a failed attempt (what the caller gets if the attempt is the last). */
export class StatusError extends Error {
  readonly status: StatusObject;
  /** The status code's name (`UNAVAILABLE`), as telemetry's `error.type`. */
  readonly code: string;
  constructor(st: StatusObject) {
    super(st.details);
    this.name = 'GrpcStatusError';
    this.status = st;
    this.code = status[st.code] ?? String(st.code);
  }
}

/** The metadata key of gRFC A6's count of earlier attempts (request headers, response headers or trailers). */
const PREVIOUS_ATTEMPTS = 'grpc-previous-rpc-attempts';

/** `GrpcAttempt.held` when nothing is held. */
const NOTHING: unique symbol = Symbol('nothing held');

/** One attempt of a mesh call: the listener of its grpc-js call. */
export class GrpcAttempt extends CallAttempt implements InterceptingListener {
  readonly owner: MeshCall;
  /** The attempt's grpc-js call. */
  call: AttemptCall | undefined = undefined;
  /** meshlet's picker gave the attempt a READY subchannel. */
  picked = false;
  /** Why meshlet's picker did not send the attempt (it never left the client). */
  pickFailure: AttemptFailure | undefined = undefined;
  /**
   * A response message that came before the call committed (an interceptor chain's unary
   * placeholder); `NOTHING` when none did.
   */
  held: unknown = NOTHING;
  /** Its response headers came. */
  gotHeaders = false;

  constructor(owner: MeshCall, endpoint: EndpointState, index: number) {
    super(endpoint, index);
    this.owner = owner;
  }

  onReceiveMetadata(metadata: Metadata): void {
    this.owner.attemptMetadata(this, metadata);
  }
  onReceiveMessage(message: unknown): void {
    this.owner.attemptMessage(this, message);
  }
  onReceiveStatus(st: StatusObject): void {
    this.owner.attemptStatus(this, st);
  }
}

const PICK_COMPLETE = experimental.PickResultType.COMPLETE;
/** Hash policies read the metadata through one shared view (synchronously, at `start`). */
const hashHeaders = new MetadataHeaders();

/**
 * Records the ORCA report of an answer from `ep` (grpc-js gives the `-bin` trailer decoded: the
 * protobuf bytes). A report equal to the endpoint's previous one costs a comparison; a malformed
 * one is ignored.
 */
export function recordReport(rt: ServiceRuntime, ep: EndpointState, value: MetadataValue | undefined): void {
  if (typeof value === 'string' || value === undefined) return;
  const r = readEndpointReportBytes(ep, value);
  if (r.ok) rt.reportLoad(ep, r.report);
}

function firstString(values: MetadataValue[]): string | undefined {
  const v = values[0];
  return typeof v === 'string' ? v : undefined;
}

function deliverLater(call: MeshCall, st: StatusObject): void {
  call.deliverStatus(st);
}

// A mesh call's flags (one small-integer field instead of six booleans).
/** A unary call (its one message is kept for a replay). */
const F_UNARY = 1;
/** `#md` is a copy the call owns (else the caller's, which carries the call only while an attempt starts). */
const F_MD_OWNED = 2;
/** Started on its service (routing and fault delays are over). */
const F_BEGUN = 4;
/** Ended before it began (cancelled, refused by its route). */
const F_OVER = 8;
/** The caller asked to read (replayed on each attempt). */
const F_READING = 16;
/** The caller half-closed (replayed on each attempt). */
const F_HALF_CLOSED = 32;

/**
 * What a call needs only when it is not a plain call of a mesh client (made on first use): a
 * parent call, a host, per-call credentials, an interceptor chain below it, a route's fault delay.
 */
class CallExtras {
  parent: ParentCall = null;
  /** The propagation flags the attempts' calls get (the parent's deadline and cancellation are the call's own). */
  propagate: number | null | undefined = undefined;
  host: string | null | undefined = undefined;
  credentials: CallCredentials | undefined = undefined;
  /** A route's fault delay. */
  timer: NodeJS.Timeout | undefined = undefined;
  /** Attempts are the rest of an interceptor chain (`meshInterceptor`). */
  nextCall: NextCall | undefined = undefined;
  iopts: InterceptorOptions | undefined = undefined;
}

/** A streaming call's messages (see `MeshCall.sendMessageWithContext`), made when it starts. */
class StreamState {
  /** Still keeping its messages for a replay (not committed, within the buffer). */
  replay = true;
  /**
   * The messages, written to the current attempt one at a time (each after the previous one's
   * write completed, as grpc-js's calls below expect): all of them until the call commits, then
   * only those not written yet. Undefined once committed and drained.
   */
  queue: QueuedMessage[] | undefined = [];
  /** The next message of `queue` to write. */
  next = 0;
  writing = false;
  /** Bytes kept for a replay. */
  kept = 0;
  halfCloseSent = false;
  /** The write callback of the current attempt (one per attempt: a late one names its own). */
  written: (() => void) | undefined = undefined;
}

/**
 * One client call of a mesh client, at grpc-js's channel level (below serialization, above the
 * channel's own resolving, retrying and load-balancing calls) — or, through `meshInterceptor`, as
 * an interceptor over the rest of a chain. It is core's call pipeline (`Call`: deadline, breaker,
 * thresholds, pick avoiding tried endpoints, retries within the budget, accounting, observer and
 * `request` event) with a gRPC wire: an attempt is one grpc-js call that meshlet's picker sends to
 * the endpoint the pipeline chose. One object per call (the call is also its metadata's options
 * object, where the picker finds it, and the picker's result), plus one per attempt; no closures
 * on the success path of a unary call. What only some calls need (streams, parents, credentials,
 * interceptor chains, routes' delays) lives in side objects made on first use, so a unary call's
 * object stays small (docs/benchmarks.md, 2026-12-06, gRPC unary per-call cost).
 *
 * Semantics (gRFC A6, as grpc-js's own retries): the call **commits** to an attempt when its
 * response headers arrive (unary calls too: the `metadata` event and the messages then flow as
 * they come, and nothing is replayed after); a call that provably never left the client (the
 * picker could not send it) is retried whatever the method; a call that may have been processed
 * is retried only for an idempotent method (`idempotency_level`, `idempotentMethods`, grpc-js's
 * `idempotentRequest`, or `retry.nonIdempotent`) or a code the user listed. Streams keep their
 * messages for a replay up to `STREAM_RETRY_BUFFER_BYTES`, and the writer is told each was written
 * at once (as grpc-js's own retries do). The deadline is enforced by the pipeline (one timer, and
 * none without a deadline) and sent as `grpc-timeout`, what the attempt may take.
 */
export class MeshCall extends Call<GrpcAttempt> implements GrpcCall, MetadataOptions, RouteRequest {
  readonly path: string;
  // The picker's result for the current attempt (experimental.PickResult): `pickResultType`,
  // `status` and `onCallEnded` are constants on the prototype (see below the class).
  declare readonly pickResultType: typeof PICK_COMPLETE;
  declare readonly status: null;
  declare readonly onCallEnded: null;
  subchannel: SubchannelInterface | null = null;

  readonly #client: MeshClientPolicy;
  /** `F_*` flags. */
  #flags: number;
  /**
   * The caller's deadline (epoch ms; undefined: none); the parent call's, when it propagates. Not
   * Infinity for none: a field that holds a double is a heap number of its own in every call.
   */
  readonly #deadline: number | undefined;
  #listener: InterceptingListener | undefined = undefined;
  /** The metadata attempts start with: the caller's, or a copy of it the call owns. */
  #md: Metadata | undefined = undefined;
  /** The caller's metadata options (restored on the caller's metadata after each attempt starts). */
  #userOptions: MetadataOptions | undefined = undefined;
  // A unary call's message, kept for a replay.
  #context: MessageContext | undefined = undefined;
  #message: unknown = undefined;
  #extras: CallExtras | undefined = undefined;
  #stream: StreamState | undefined = undefined;

  constructor(
    client: MeshClientPolicy,
    path: string,
    flags: number,
    deadline: Deadline,
    parent: ParentCall,
    propagateFlags: number | null | undefined,
  ) {
    const rt = client.runtime;
    const unary = (flags & UNARY) !== 0;
    super(
      rt,
      rt === undefined ? undefined : client.policyFor(rt.policy, rt, unary),
      'grpc',
      (flags & IDEMPOTENT) !== 0,
    );
    this.#client = client;
    this.path = path;
    this.#flags = unary ? F_UNARY : 0;
    let d = typeof deadline === 'number' ? deadline : deadline.getTime();
    // A NaN deadline (an invalid Date, arithmetic on a missing value) has passed, as in grpc-js.
    if (Number.isNaN(d)) d = 0;
    if (parent !== null && parent !== undefined) {
      const x = this.#extrasOf();
      x.parent = parent;
      // The parent's deadline and cancellation are the call's own (the pipeline enforces them).
      const all = propagateFlags ?? propagate.DEFAULTS;
      x.propagate = all & ~(propagate.DEADLINE | propagate.CANCELLATION);
      if ((all & propagate.DEADLINE) !== 0) {
        const pd = parent.getDeadline();
        const pms = typeof pd === 'number' ? pd : pd.getTime();
        if (pms < d) d = pms;
      }
      if ((all & propagate.CANCELLATION) !== 0)
        parent.on('cancelled', () => this.cancelWithStatus(status.CANCELLED, 'Cancelled by parent call'));
    } else if (propagateFlags !== undefined) this.#extrasOf().propagate = propagateFlags;
    this.#deadline = d === Number.POSITIVE_INFINITY ? undefined : d;
  }

  #extrasOf(): CallExtras {
    let x = this.#extras;
    if (x === undefined) {
      x = new CallExtras();
      this.#extras = x;
    }
    return x;
  }

  /** Attempts are channel calls on the client's channel (mesh clients); `host` as grpc-js's. */
  onChannel(host: string | null | undefined): void {
    if (host !== undefined && host !== null) this.#extrasOf().host = host;
  }

  /** Attempts are the rest of an interceptor chain (`meshInterceptor`). */
  onInterceptor(options: InterceptorOptions, nextCall: NextCall): void {
    const x = this.#extrasOf();
    x.nextCall = nextCall;
    x.iopts =
      options.deadline === undefined && options.parent == null
        ? options
        : {
            ...options,
            deadline: undefined,
            parent: undefined,
            propagate_flags: x.propagate ?? undefined,
          };
  }

  // ---- MetadataOptions: the caller's, read through the call (grpc-js reads `waitForReady`) ----

  get idempotentRequest(): boolean | undefined {
    return this.#userOptions?.idempotentRequest;
  }
  get waitForReady(): boolean | undefined {
    return this.#userOptions?.waitForReady;
  }
  get cacheableRequest(): boolean | undefined {
    return this.#userOptions?.cacheableRequest;
  }
  get corked(): boolean | undefined {
    return this.#userOptions?.corked;
  }

  // ---- what a router and the call hook see ----------------------------------------------------

  get method(): string {
    return 'POST';
  }

  get authority(): string {
    return this.service.name;
  }

  header(name: string): string | undefined {
    return this.#md === undefined ? undefined : metadataHeader(this.#md, name);
  }

  protected override callHook(): CallHook | undefined {
    return this.#client.hook ?? this.service.hooks.callHook;
  }

  // ---- grpc-js's call interface (towards grpc-js's client above) ------------------------------

  start(metadata: Metadata, listener: InterceptingListener): void {
    if ((this.#flags & F_OVER) !== 0) return;
    this.#listener = listener;
    const opts = metadata.getOptions();
    this.#userOptions = opts;
    if (opts.idempotentRequest === true) this.markIdempotent();
    this.#md = metadata;
    const chained = this.#extras?.nextCall !== undefined;
    // A chain below an interceptor may start its call later: the call keeps its own metadata.
    if (chained) this.#ownMetadata();
    // A stream keeps its messages for a replay (not below an interceptor: its messages go straight
    // to the chain's call).
    if ((this.#flags & F_UNARY) === 0 && !chained) this.#stream = new StreamState();
    if (this.#client.router !== undefined) this.#route(false);
    else this.#begin();
  }

  sendMessageWithContext(context: MessageContext, message: Buffer): void {
    if ((this.#flags & F_OVER) !== 0 || this.finished) {
      // The call is over: the message goes nowhere, and the writer is called back, as grpc-js's
      // calls do (a writer waiting for it would wait forever).
      const cb = context.callback;
      if (cb !== undefined) process.nextTick(cb);
      return;
    }
    const s = this.#stream;
    if (s !== undefined && s.queue !== undefined) {
      let cb = context.callback;
      if (s.replay) {
        if (s.kept + message.length <= STREAM_RETRY_BUFFER_BYTES) {
          // Kept for a replay: the writer may go on at once (next tick, as after a write).
          s.kept += message.length;
          if (cb !== undefined) process.nextTick(cb);
          cb = undefined;
        } else this.#overflow(s);
      }
      s.queue.push({ flags: context.flags, message, callback: cb });
      this.#pump();
      return;
    }
    if ((this.#flags & F_UNARY) !== 0) {
      this.#context = context;
      this.#message = message;
    }
    const att = this.current;
    if (att !== undefined && !att.ended) att.call?.sendMessageWithContext(context, message);
  }

  /** `InterceptingCallInterface.sendMessage` (interceptor chains). */
  sendMessage(message: unknown): void {
    this.sendMessageWithContext({}, message as Buffer);
  }

  startRead(): void {
    this.#flags |= F_READING;
    const att = this.current;
    if (att !== undefined && !att.ended) att.call?.startRead();
  }

  halfClose(): void {
    this.#flags |= F_HALF_CLOSED;
    if (this.#stream?.queue !== undefined) {
      this.#pump();
      return;
    }
    const att = this.current;
    if (att !== undefined && !att.ended) att.call?.halfClose();
  }

  cancelWithStatus(code: status, details: string): void {
    if ((this.#flags & F_OVER) !== 0 || this.finished) return;
    const st: StatusObject = { code, details, metadata: new Metadata() };
    if ((this.#flags & F_BEGUN) === 0) {
      // Still being routed (or waiting out a fault delay): nothing was sent.
      this.#end(st);
      return;
    }
    this.cancel(new StatusError(st));
  }

  getPeer(): string {
    return this.current?.call?.getPeer() ?? this.#client.target;
  }

  getCallNumber(): number {
    const c = this.current?.call as { getCallNumber?: () => number } | undefined;
    return c?.getCallNumber?.() ?? 0;
  }

  setCredentials(credentials: CallCredentials): void {
    this.#extrasOf().credentials = credentials;
    const att = this.current;
    if (att !== undefined && !att.ended) (att.call as GrpcCall | undefined)?.setCredentials(credentials);
  }

  getAuthContext(): AuthContext {
    return this.current?.call?.getAuthContext() ?? null;
  }

  // ---- routing (routed targets: an xDS listener) ----------------------------------------------

  #route(waited: boolean): void {
    if ((this.#flags & F_OVER) !== 0) return;
    const router = this.#client.router as Router;
    const result = router.route(this);
    if (result === undefined) {
      if (waited) this.#refuse(status.UNAVAILABLE, `no route table for "${router.name}"`);
      else router.whenReady().then(() => this.#route(true));
      return;
    }
    if (isMeshError(result)) {
      this.#refuse(status.UNAVAILABLE, `${result.code}: ${result.message}`);
      return;
    }
    const target = result as RouteTarget;
    const rt = target.runtime;
    this.hash = target.hash;
    this.retarget(rt, this.#client.policyFor(target.policy ?? rt.policy, rt, (this.#flags & F_UNARY) !== 0));
    if (target.delayMs > 0) {
      this.#extrasOf().timer = setTimeout(MeshCall.#delayed, target.delayMs, this, target);
      return;
    }
    this.#routed(target);
  }

  static #delayed(call: MeshCall, target: RouteTarget): void {
    (call.#extras as CallExtras).timer = undefined;
    if ((call.#flags & F_OVER) === 0) call.#routed(target);
  }

  #routed(target: RouteTarget): void {
    if (target.abortStatus > 0) this.#refuse(grpcStatusOfHttp(target.abortStatus), 'fault filter abort');
    else this.#begin(true);
  }

  /** Ends a call its route refused (nothing was sent). */
  #refuse(code: status, details: string): void {
    this.#end({ code, details, metadata: new Metadata() });
  }

  /** Ends a call that never began on a service. */
  #end(st: StatusObject): void {
    if ((this.#flags & F_OVER) !== 0) return;
    this.#flags |= F_OVER;
    const x = this.#extras;
    if (x?.timer !== undefined) {
      clearTimeout(x.timer);
      x.timer = undefined;
    }
    this.#releaseReplay();
    if (this.#listener !== undefined) process.nextTick(deliverLater, this, st);
  }

  /** Starts the call on its service: the pipeline (deadline, breaker, thresholds, pick, attempts). */
  #begin(routed = false): void {
    this.#flags |= F_BEGUN;
    if (!routed) {
      // Hash-based balancers hash on the metadata (a route brings its own hash).
      hashHeaders.metadata = this.#md;
      this.hash = this.service.requestHash(hashHeaders.view);
      hashHeaders.metadata = undefined;
    }
    this.begin(this.#deadline);
  }

  protected override onStart(): void {
    const extra = this.extraHeaders;
    if (extra === undefined || extra.length === 0) return;
    // Trace context, once per logical call; a key the caller set is left alone.
    const md = this.#ownMetadata();
    for (let i = 0; i + 1 < extra.length; i += 2) {
      const name = extra[i] as string;
      if (md.get(name).length === 0) md.set(name, extra[i + 1] as string);
    }
  }

  /** The metadata attempts start with, as a copy the call owns (made once). */
  #ownMetadata(): Metadata {
    let md = this.#md as Metadata;
    if ((this.#flags & F_MD_OWNED) === 0) {
      md = md.clone();
      md.setOptions(this);
      this.#md = md;
      this.#flags |= F_MD_OWNED;
    }
    return md;
  }

  // ---- the wire (core's pipeline calls these) -------------------------------------------------

  protected createAttempt(endpoint: EndpointState, index: number): GrpcAttempt {
    return new GrpcAttempt(this, endpoint, index);
  }

  protected send(att: GrpcAttempt): void {
    const x = this.#extras;
    let call: AttemptCall;
    if (x === undefined) {
      call = (this.#client.channel as Channel).createCall(
        this.path,
        Number.POSITIVE_INFINITY,
        undefined,
        null,
        undefined,
      );
    } else {
      call =
        x.nextCall !== undefined
          ? x.nextCall(x.iopts as InterceptorOptions)
          : (this.#client.channel as Channel).createCall(
              this.path,
              Number.POSITIVE_INFINITY,
              x.host,
              x.parent,
              x.propagate,
            );
      if (x.credentials !== undefined) (call as GrpcCall).setCredentials(x.credentials);
    }
    att.call = call;
    // A retry tells the server how many attempts came before (gRFC A6, as grpc-js's retries).
    if (att.index > 0) this.#ownMetadata().set(PREVIOUS_ATTEMPTS, String(att.index));
    const budget = this.attemptBudgetMs();
    if (budget !== Number.POSITIVE_INFINITY) this.#ownMetadata().set('grpc-timeout', grpcTimeout(budget));
    const md = this.#md as Metadata;
    const flags = this.#flags;
    if ((flags & F_MD_OWNED) !== 0) call.start(md, att);
    else {
      // grpc-js copies the metadata (and its options object) at once: the caller's metadata
      // carries the call only while the attempt starts.
      md.setOptions(this);
      call.start(md, att);
      md.setOptions(this.#userOptions as MetadataOptions);
    }
    // Replay what the client did before this attempt existed (a retry, or a call that waited
    // for its route).
    if ((flags & F_READING) !== 0) call.startRead();
    const s = this.#stream;
    if (s !== undefined && s.queue !== undefined) {
      s.written = () => this.#onWritten(att);
      s.writing = false;
      s.next = 0;
      s.halfCloseSent = false;
      this.#pump();
      return;
    }
    if (this.#message !== undefined) call.sendMessageWithContext(this.#context ?? {}, this.#message);
    if ((flags & F_HALF_CLOSED) !== 0) call.halfClose();
  }

  protected abort(att: GrpcAttempt, reason: Error): void {
    let code = status.CANCELLED;
    let details = 'Cancelled on client';
    if (reason instanceof StatusError) {
      code = reason.status.code;
      details = reason.status.details;
    } else if (isMeshError(reason)) {
      if (reason.code === ErrorCodes.TIMEOUT || reason.code === ErrorCodes.PER_TRY_TIMEOUT)
        code = status.DEADLINE_EXCEEDED;
      details = reason.message;
    }
    att.call?.cancelWithStatus(code, details);
    // grpc-js reports the cancelled call later; the pipeline learns it now (that report is ignored).
    this.failed(att, AttemptFailures.cancelled, reason);
  }

  protected deliverError(error: Error): void {
    this.#releaseReplay();
    if (this.#listener === undefined) return;
    // As grpc-js, never inside the caller's own call (start, cancel): on the next tick.
    process.nextTick(deliverLater, this, error instanceof StatusError ? error.status : this.#statusOf(error));
  }

  protected override replayable(_consumed: boolean): boolean {
    return (this.#flags & F_UNARY) !== 0 || this.#stream?.replay === true;
  }

  protected override errorStatus(error: Error): number {
    if (error instanceof StatusError) return error.status.code;
    if (!isMeshError(error)) return status.UNAVAILABLE;
    const code = error.code;
    if (code === ErrorCodes.TIMEOUT || code === ErrorCodes.PER_TRY_TIMEOUT) return status.DEADLINE_EXCEEDED;
    return code === ErrorCodes.CANCELLED ? status.CANCELLED : status.UNAVAILABLE;
  }

  /** The status the caller gets for a mesh error (its code: `errorStatus`). */
  #statusOf(error: Error): StatusObject {
    const metadata = new Metadata();
    const code = this.errorStatus(error);
    if (!isMeshError(error)) return { code, details: error.message, metadata };
    // The caller's deadline, and a cancellation: in grpc-js's words.
    if (error.code === ErrorCodes.TIMEOUT && this.callersDeadline)
      return { code, details: `Deadline exceeded after ${(this.elapsedMs() / 1000).toFixed(3)}s`, metadata };
    if (code === status.CANCELLED) return { code, details: 'Cancelled on client', metadata };
    metadata.set('x-meshlet-error', error.code);
    return { code, details: `${error.code}: ${error.message}`, metadata };
  }

  /** @internal Gives the caller the call's status. */
  deliverStatus(st: StatusObject): void {
    this.#listener?.onReceiveStatus(st);
  }

  #releaseReplay(): void {
    this.#message = undefined;
    this.#context = undefined;
    const s = this.#stream;
    if (s === undefined) return;
    s.replay = false;
    if (!s.writing) s.queue = undefined;
  }

  // ---- the picker (balancer.ts) ----------------------------------------------------------------

  /** grpc-js started the current attempt's stream on the picked subchannel: it left the client. */
  onCallStarted(): void {
    const att = this.current;
    if (att !== undefined) this.connected(att);
  }

  // ---- what the attempts' grpc-js calls report ------------------------------------------------

  /** @internal */
  attemptMetadata(att: GrpcAttempt, metadata: Metadata): void {
    if (att !== this.current || att.ended || this.finished) return;
    if (!att.picked) this.#client.managedPicks = false;
    // Response headers: the call commits to this attempt (gRFC A6); the stream keeps no more.
    this.commit(att);
    att.gotHeaders = true;
    const s = this.#stream;
    if (s !== undefined && s.queue !== undefined) this.#commitStream(s);
    // A retried call tells the caller how many attempts came before (gRFC A6, as grpc-js).
    if (att.index > 0) metadata.set(PREVIOUS_ATTEMPTS, String(att.index));
    this.#listener?.onReceiveMetadata(metadata);
  }

  /** @internal */
  attemptMessage(att: GrpcAttempt, message: unknown): void {
    if (att !== this.current || att.ended || this.finished) return;
    if (!this.committed) {
      // Only an interceptor chain's unary placeholder comes before the headers: decided at the status.
      att.held = message;
      return;
    }
    this.#listener?.onReceiveMessage(message);
  }

  /** @internal */
  attemptStatus(att: GrpcAttempt, st: StatusObject): void {
    if (att.ended) return;
    let f = att.pickFailure;
    if (f === undefined && att.connectedAt < 0 && st.code !== status.OK) {
      // The attempt never had a stream: picked but not started (call credentials, metadata) is
      // the caller's; never picked at all (name resolution, a closed channel: UNAVAILABLE), never
      // sent; any other code before a pick (a message over grpc.max_send_message_length) is the
      // caller's too, and another attempt would fail alike.
      if (att.picked || st.code !== status.UNAVAILABLE) f = AttemptFailures.caller;
      else if (this.#client.managedPicks) f = AttemptFailures.notSent;
    }
    if (f !== undefined) {
      this.failed(att, f, new StatusError(st));
      return;
    }
    if (att.connectedAt < 0 && !att.picked && st.code === status.OK) this.#client.managedPicks = false;
    const md = st.metadata;
    // The endpoint's load report (ORCA, gRFC A51) rides on the trailers of any answer.
    const report = md.get(ORCA_BIN_HEADER);
    if (report.length > 0) recordReport(this.service, att.endpoint, report[0]);
    if (st.code === status.RESOURCE_EXHAUSTED && md.get(SHED_HEADER).length > 0) {
      // Overload protection shed it, unprocessed: go elsewhere now, back off this endpoint.
      this.response(att, st.code, parseRetryAfter(firstString(md.get('retry-after'))), true);
    } else this.response(att, st.code);
    if (!this.complete(att)) return;
    this.#releaseReplay();
    const l = this.#listener;
    if (l === undefined) return;
    if (att.held !== NOTHING) l.onReceiveMessage(att.held);
    // Without headers, the trailers say how many attempts came before (gRFC A6, as grpc-js).
    if (att.index > 0 && !att.gotHeaders) md.set(PREVIOUS_ATTEMPTS, String(att.index));
    l.onReceiveStatus(st);
  }

  // ---- a replayable stream's messages ----------------------------------------------------------

  /**
   * Writes the next queued message to the current attempt when no write is pending; once the
   * queue is drained, half-closes the attempt if the caller did, and, for a committed call, stops
   * queueing.
   */
  #pump(): void {
    const s = this.#stream;
    const queue = s?.queue;
    const att = this.current;
    if (s === undefined || queue === undefined || att === undefined || att.ended || s.writing) return;
    const call = att.call;
    if (call === undefined) return;
    const m = queue[s.next];
    if (m !== undefined) {
      s.writing = true;
      call.sendMessageWithContext({ flags: m.flags, callback: s.written }, m.message);
      return;
    }
    if (!s.replay) s.queue = undefined; // committed and drained: straight through now
    if ((this.#flags & F_HALF_CLOSED) !== 0 && !s.halfCloseSent) {
      s.halfCloseSent = true;
      call.halfClose();
    }
  }

  /** The current attempt finished writing a queued message. */
  #onWritten(att: GrpcAttempt): void {
    if (att !== this.current || att.ended) return; // an attempt given up (retried, or ended)
    const s = this.#stream as StreamState;
    s.writing = false;
    const queue = s.queue;
    if (queue === undefined) return;
    const m = queue[s.next] as QueuedMessage | undefined;
    if (m === undefined) return;
    // Committed: what the attempt wrote is not kept; kept for a replay: move on.
    if (s.replay) s.next++;
    else queue.shift();
    const cb = m.callback;
    if (cb !== undefined) {
      m.callback = undefined;
      cb();
    }
    this.#pump();
  }

  /**
   * A streaming call commits (its response headers came, or its messages outgrew the buffer): no
   * more messages kept; those the current attempt already wrote are dropped (those not written yet
   * still go to it, or to the next attempt when none is out).
   */
  #commitStream(s: StreamState): void {
    s.replay = false;
    const queue = s.queue;
    const att = this.current;
    if (queue !== undefined && att !== undefined && !att.ended && s.next > 0) {
      queue.splice(0, s.next);
      s.next = 0;
    }
  }

  /** The stream's messages outgrew the buffer: it commits to the attempt in flight. */
  #overflow(s: StreamState): void {
    this.#commitStream(s);
    const att = this.current;
    if (att !== undefined && !att.ended) this.commit(att);
  }
}

// The picker's result constants, shared by every call (see `MeshCall`).
Object.defineProperties(MeshCall.prototype, {
  pickResultType: { value: PICK_COMPLETE },
  status: { value: null },
  onCallEnded: { value: null },
});
