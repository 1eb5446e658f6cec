import { type ChannelOptions, connectivityState, experimental, Metadata, status } from '@grpc/grpc-js';
import {
  type EndpointState,
  ORCA_BIN_HEADER,
  type Outcome,
  type PickContext,
  parseRetryAfter,
  type Router,
  type ServiceRuntime,
  SHED_HEADER,
  type Verdict,
} from '@meshlet/core';
import { AttemptFailures, allocateEndpointSlot, statusOutcome } from '@meshlet/core/extend';
import { CallTag } from './call-tag.js';
import { oobReport, oobReportWrapper } from './load.js';
import { MeshCall, recordReport } from './mesh-call.js';
import { MetadataHeaders } from './metadata.js';
import { CONFIG_SELECTOR_KEY } from './routing.js';

type ChannelControlHelper = experimental.ChannelControlHelper;
type GrpcEndpoint = experimental.Endpoint;
type GrpcLoadBalancer = experimental.LoadBalancer;
type GrpcPicker = experimental.Picker;
type PickArgs = experimental.PickArgs;
type PickResult = experimental.PickResult;
type SubchannelInterface = experimental.SubchannelInterface;
type TypedLoadBalancingConfig = experimental.TypedLoadBalancingConfig;

/** The name of meshlet's grpc-js load-balancing policy (in service configs: `{ meshlet: {} }`). */
export const LB_POLICY_NAME = 'meshlet';
/** Resolver attribute carrying the `ServiceRuntime` from the `mesh:` resolver to the balancer. */
export const RUNTIME_ATTRIBUTE = 'meshlet.runtime';
/** Resolver attribute carrying the `Router` of a routed target (an xDS listener) to the balancer. */
export const ROUTER_ATTRIBUTE = 'meshlet.router';
/**
 * Subchannel argument naming the mesh service a routed channel's subchannel serves: the routed
 * channel's credentials (`routedChannelCredentials`) secure each connection as that service's own.
 */
export const SERVICE_SUBCHANNEL_ARG = 'grpc-node.meshlet.service';

const SLOT = allocateEndpointSlot();
/**
 * How long a call waits for the first connection of the endpoint the service's balancer chose
 * before it is sent to another READY endpoint instead (1 s).
 */
const FIRST_CONNECT_GRACE_MS = 1_000;
const { READY, CONNECTING, IDLE, TRANSIENT_FAILURE } = connectivityState;
const PICK_COMPLETE = experimental.PickResultType.COMPLETE;
const PICK_QUEUE = experimental.PickResultType.QUEUE;
const PICK_FAIL = experimental.PickResultType.TRANSIENT_FAILURE;
const PICK_DROP = experimental.PickResultType.DROP;

/**
 * Maps a gRPC status to meshlet's attempt outcome (telemetry's `outcome`; core's
 * `statusOutcome`). What an outcome means for the endpoint's health is core's `verdictOf`: only
 * UNAVAILABLE counts against it.
 */
export function outcomeOf(code: number): Outcome {
  return statusOutcome('grpc', code);
}

/** One subchannel of one balancer for one endpoint. */
class Entry {
  readonly lb: MeshLoadBalancer;
  /** The service the endpoint belongs to. */
  readonly rt: ServiceRuntime;
  readonly st: EndpointState;
  readonly subchannel: SubchannelInterface;
  state: connectivityState = IDLE;
  /** True while this balancer reports the endpoint unreachable (its subchannel failed to connect). */
  reportedDown = false;
  /** The subchannel's last connection error (grpc-js's words), named by failing picks. */
  lastError: string | undefined = undefined;
  /** Whether the subchannel was READY at least once. */
  everReady = false;
  /** `Date.now()` when the subchannel was created (first-connect grace). */
  readonly createdAt = Date.now();
  /** The period of the out-of-band load report stream its subchannel keeps (undefined: none). */
  readonly oobPeriodMs: number | undefined;
  constructor(
    lb: MeshLoadBalancer,
    rt: ServiceRuntime,
    st: EndpointState,
    subchannel: SubchannelInterface,
    oobPeriodMs: number | undefined,
  ) {
    this.lb = lb;
    this.rt = rt;
    this.st = st;
    this.subchannel = subchannel;
    this.oobPeriodMs = oobPeriodMs;
  }
}

/** grpc-js's words for a connection that could not be made, with the error that says why. */
function noConnection(lastError: string | undefined): string {
  return `No connection established. Last error: ${lastError ?? 'unknown'}`;
}

/**
 * The pick of an attempt that is not sent: DROP, so that grpc-js ends it at once even for a
 * `waitForReady` call (the mesh call then retries it elsewhere, it never left the client; a
 * `waitForReady` attempt is queued instead while no endpoint of its service is READY).
 */
function dropResult(details: string): PickResult {
  return failResult(details, PICK_DROP);
}
/**
 * The per-call pick result: COMPLETE with a READY subchannel, plus the start/end hooks that feed
 * the service runtime (in-flight count, peak-EWMA latency, outlier detection, telemetry).
 */
class MeshPick implements PickResult {
  readonly pickResultType = PICK_COMPLETE;
  readonly subchannel: SubchannelInterface;
  readonly status = null;
  readonly onCallEnded: (code: number, details: string, metadata: Metadata) => void;
  readonly #rt: ServiceRuntime;
  readonly #ep: EndpointState;
  readonly #tag: CallTag | undefined;
  #start = -1;

  constructor(
    rt: ServiceRuntime,
    ep: EndpointState,
    subchannel: SubchannelInterface,
    tag: CallTag | undefined,
  ) {
    this.#rt = rt;
    this.#ep = ep;
    this.subchannel = subchannel;
    this.#tag = tag;
    this.onCallEnded = (code: number, _details: string, metadata: Metadata) => {
      if (this.#start < 0) return;
      const start = this.#start;
      this.#start = -1;
      const t = this.#tag;
      const rt = this.#rt;
      const ep = this.#ep;
      // The endpoint's load report (per-call trailer), and a shed answer: "not me, back off" —
      // the endpoint is avoided for its Retry-After and the answer says nothing bad of it.
      let outcome = outcomeOf(code);
      let verdict: Verdict | undefined;
      if (metadata !== undefined) {
        const report = metadata.get(ORCA_BIN_HEADER);
        if (report.length > 0) recordReport(rt, ep, report[0]);
        if (code === status.RESOURCE_EXHAUSTED && metadata.get(SHED_HEADER).length > 0) {
          const ra = metadata.get('retry-after')[0];
          rt.penalize(ep, code, parseRetryAfter(typeof ra === 'string' ? ra : undefined), true);
          outcome = 'overloaded';
          verdict = 'ignore';
        }
      }
      rt.endAttempt(ep, start, t ? t.attempt : 0, outcome, code, undefined, undefined, 'grpc', verdict);
    };
  }

  onCallStarted(): void {
    this.#start = this.#rt.startAttempt(this.#ep);
    if (this.#tag) this.#tag.endpoint = this.#ep;
  }
}

/** UNAVAILABLE with `details` (TRANSIENT_FAILURE: grpc-js queues a `waitForReady` call instead). */
function failResult(details: string, type: typeof PICK_FAIL | typeof PICK_DROP = PICK_FAIL): PickResult {
  return {
    pickResultType: type,
    subchannel: null,
    status: { code: status.UNAVAILABLE, details, metadata: new Metadata() },
    onCallStarted: null,
    onCallEnded: null,
  };
}

const QUEUE_RESULT: PickResult = Object.freeze({
  pickResultType: PICK_QUEUE,
  subchannel: null,
  status: null,
  onCallStarted: null,
  onCallEnded: null,
});

/** What a picker knows of one service's subchannels as of its publication. */
interface ServiceView {
  /** READY entries of the service (used when the service's own choice has no connection yet). */
  readonly ready: readonly Entry[];
  /** No subchannel of the service is READY, CONNECTING or IDLE. */
  readonly allFailed: boolean;
  /** The service's first connections are still being made (calls wait, see `#publish`). */
  readonly warming: boolean;
  /** The last connection error of its subchannels. */
  readonly lastError: string | undefined;
}

/**
 * The grpc-js picker of the `meshlet` policy.
 *
 * - A mesh call's attempt (a `MeshCall` rides on its metadata) was already placed by core's call
 *   pipeline: it goes to the chosen endpoint's subchannel once that is READY (the call waits while
 *   it connects; an IDLE one is asked to connect); one in TRANSIENT_FAILURE, or an endpoint that
 *   left, ends the attempt unsent (a DROP naming the connection error), which the pipeline
 *   retries elsewhere: it provably never left the client. A `waitForReady` attempt waits instead
 *   while no endpoint of its service is READY (gRPC's wait-for-ready).
 * - A plain grpc-js call asks meshlet's service picker (`runtime.pick`) itself, so the service's
 *   balancer, health, outlier ejection and panic threshold decide where each call goes. When the
 *   chosen endpoint has no READY subchannel, it is asked to connect and the pick is retried; then
 *   any READY subchannel is used; with none READY the call queues (or fails with UNAVAILABLE,
 *   naming the last connection error, when every subchannel is in TRANSIENT_FAILURE).
 *
 * On a routed channel (an xDS listener) a plain call's service is its route target (on its
 * `CallTag`); a service seen for the first time gets its subchannels then, and its calls wait.
 */
class MeshPicker implements GrpcPicker {
  readonly #lb: MeshLoadBalancer;
  /** The channel's service (undefined on a routed channel). */
  readonly #rt: ServiceRuntime | undefined;
  readonly #view: ServiceView | undefined;
  readonly #views: ReadonlyMap<ServiceRuntime, ServiceView>;
  readonly #ctx: PickContext = { attempt: 0, headers: undefined, hash: undefined };
  #rr = 0;

  constructor(
    lb: MeshLoadBalancer,
    rt: ServiceRuntime | undefined,
    views: ReadonlyMap<ServiceRuntime, ServiceView>,
  ) {
    this.#lb = lb;
    this.#rt = rt;
    this.#views = views;
    this.#view = rt === undefined ? undefined : views.get(rt);
  }

  pick(args: PickArgs): PickResult {
    const md = args.metadata;
    const opts = md.getOptions();
    if (opts instanceof MeshCall) return this.#lb.pickAttempt(opts);
    const lb = this.#lb;
    const tag = opts instanceof CallTag ? opts : undefined;
    const target = tag?.target;
    let rt = this.#rt;
    let view = this.#view;
    if (target !== undefined && target.runtime !== rt) {
      rt = target.runtime;
      view = this.#views.get(rt);
      if (view === undefined) {
        if (rt.closed) return failResult(`service "${rt.name}" was removed`);
        // A service this channel has not connected to yet: connect, and wait for it.
        lb.track(rt);
        return QUEUE_RESULT;
      }
    }
    if (rt === undefined || view === undefined) return failResult('the call was not routed');
    if (view.warming) return QUEUE_RESULT;
    const ctx = this.#ctx;
    if (tag !== undefined) {
      // A grpc-js retry (a route's retry policy) says which attempt this is: it avoids the
      // endpoints the earlier ones went to.
      const prev = md.get('grpc-previous-rpc-attempts');
      tag.attempt = prev.length > 0 ? Number(prev[0]) || 0 : 0;
    }
    ctx.attempt = tag ? tag.attempt : 0;
    lb.headers.metadata = md;
    ctx.headers = lb.headers.view;
    // Hash policies (ring_hash, maglev) hash on the route's hash policy, or on metadata through
    // the headers view; others skip it.
    ctx.hash = target?.hash ?? rt.requestHash(lb.headers.view);
    let res = rt.pick(ctx, tag?.avoid());
    for (let i = 0; i < 3 && res.kind === 'pick'; i++) {
      const entry = lb.entryOf(res.endpoint);
      if (entry !== undefined) {
        if (entry.state === READY) {
          lb.headers.metadata = undefined;
          return new MeshPick(rt, res.endpoint, entry.subchannel, tag);
        }
        if (entry.state === IDLE) entry.subchannel.startConnecting();
        // The first choice is still making its first connection (within the grace period): wait
        // for it (the call is re-picked on the next state change) rather than skew the first
        // calls towards whichever endpoint connected first.
        if (
          i === 0 &&
          !entry.everReady &&
          entry.state !== TRANSIENT_FAILURE &&
          lb.inFirstConnectGrace(entry)
        ) {
          lb.headers.metadata = undefined;
          return QUEUE_RESULT;
        }
      }
      if (i < 2) res = rt.pick(ctx, res.endpoint);
    }
    lb.headers.metadata = undefined;
    if (res.kind === 'queue') return QUEUE_RESULT;
    if (res.kind === 'fail') return failResult(res.error.message);
    // The service's choice has no connection yet: use a READY one meanwhile.
    const ready = view.ready;
    if (ready.length > 0) {
      const e = ready[this.#rr++ % ready.length] as Entry;
      return new MeshPick(rt, e.st, e.subchannel, tag);
    }
    if (view.allFailed) return failResult(`service "${rt.name}": ${noConnection(view.lastError)}`);
    return QUEUE_RESULT;
  }
}

/** Fails plain calls (mesh calls' attempts are placed as always). */
class FailPicker implements GrpcPicker {
  readonly #lb: MeshLoadBalancer;
  readonly #result: PickResult;
  constructor(lb: MeshLoadBalancer, details: string) {
    this.#lb = lb;
    this.#result = failResult(details);
  }
  pick(args: PickArgs): PickResult {
    const opts = args.metadata.getOptions();
    return opts instanceof MeshCall ? this.#lb.pickAttempt(opts) : this.#result;
  }
}

/** Queues plain calls (mesh calls' attempts are placed as always). */
class QueuePicker implements GrpcPicker {
  readonly #lb: MeshLoadBalancer;
  constructor(lb: MeshLoadBalancer) {
    this.#lb = lb;
  }
  pick(args: PickArgs): PickResult {
    const opts = args.metadata.getOptions();
    return opts instanceof MeshCall ? this.#lb.pickAttempt(opts) : QUEUE_RESULT;
  }
}

/** Service-config form of the policy (no options: the mesh's service policy governs). */
export class MeshLbConfig implements TypedLoadBalancingConfig {
  getLoadBalancerName(): string {
    return LB_POLICY_NAME;
  }
  toJsonObject(): object {
    return { [LB_POLICY_NAME]: {} };
  }
  static createFromJson(_obj: unknown): MeshLbConfig {
    return new MeshLbConfig();
  }
}

interface Tracked {
  /** True until the service's first set of subchannels has connected (see `#publish`). */
  warmup: boolean;
  /** Stops following the service's endpoint updates (routed services only). */
  readonly stop: (() => void) | undefined;
}

/**
 * meshlet's grpc-js load-balancing policy. It keeps one subchannel per endpoint of the service
 * (connecting eagerly, reconnecting after IDLE), reports subchannel connectivity to the service
 * (`ServiceRuntime.reportConnectivity`: TRANSIENT_FAILURE keeps the endpoint out of rotation for
 * every transport, READY brings it back) and publishes a `MeshPicker` that sends each mesh call's
 * attempt where core's pipeline placed it, and balances every plain call with the service's own
 * picker.
 *
 * On a routed channel (`mesh:///NAME` where NAME is an xDS listener) there is no single service:
 * the balancer follows every service the channel's calls were routed to (the first call to a
 * service creates its subchannels) and keeps one subchannel per endpoint of each.
 */
export class MeshLoadBalancer implements GrpcLoadBalancer {
  readonly #helper: ChannelControlHelper;
  /** The channel's service (non-routed channels). */
  #rt: ServiceRuntime | undefined;
  /** The channel's router (routed channels). */
  #router: Router | undefined;
  readonly #tracked = new Map<ServiceRuntime, Tracked>();
  readonly #entries = new Map<EndpointState, Entry>();
  #options: ChannelOptions = {};
  #destroyed = false;
  #scheduled = false;
  /**
   * An entry may be IDLE (set when one is created or reports IDLE, cleared by `exitIdle` when none
   * is): grpc-js calls `exitIdle` on every call, which then costs a field read, not a walk over
   * every endpoint's entry.
   */
  #maybeIdle = false;
  readonly headers = new MetadataHeaders();
  readonly #onState = (
    sub: SubchannelInterface,
    _prev: connectivityState,
    next: connectivityState,
    _keepalive: number,
    errorMessage?: string,
  ) => this.#subchannelState(sub, next, errorMessage);

  constructor(helper: ChannelControlHelper) {
    this.#helper = helper;
  }

  getTypeName(): string {
    return LB_POLICY_NAME;
  }

  /** True while a never-connected subchannel is within its first-connect grace period. */
  inFirstConnectGrace(entry: Entry): boolean {
    return Date.now() - entry.createdAt < FIRST_CONNECT_GRACE_MS;
  }

  /** The entry of `st` for this balancer: the endpoint's slot when this balancer owns it, else the map. */
  entryOf(st: EndpointState): Entry | undefined {
    const e = st.slots[SLOT] as Entry | undefined;
    if (e !== undefined && e.lb === this) return e;
    return this.#entries.get(st);
  }

  /**
   * The pick of a mesh call's current attempt: the subchannel of the endpoint core's pipeline chose
   * for it, once READY. Queued while it connects; an endpoint whose subchannel failed (or that left
   * its service) ends the attempt unsent, and the call says why (`pickFailure`).
   */
  pickAttempt(call: MeshCall): PickResult {
    const att = call.current;
    if (att === undefined || att.ended) return dropResult('the call has no attempt in flight');
    const ep = att.endpoint;
    const entry = this.entryOf(ep);
    if (entry === undefined) {
      const rt = call.service;
      if (rt.closed || rt.endpoint(ep.id) !== ep) {
        att.pickFailure = AttemptFailures.notSent;
        return dropResult(`endpoint ${ep.id} left service "${rt.name}" before the call was sent`);
      }
      // An endpoint (or a routed service) this channel has no subchannel for yet: connect, wait.
      if (!this.#tracked.has(rt) && rt !== this.#rt) this.track(rt);
      else this.#scheduleReconcile(rt);
      return QUEUE_RESULT;
    }
    const state = entry.state;
    if (state === READY) {
      att.picked = true;
      call.subchannel = entry.subchannel;
      // The call is its attempt's pick result (no object per pick): COMPLETE, that subchannel,
      // and `onCallStarted` telling the pipeline the attempt is on a stream.
      return call as unknown as PickResult;
    }
    if (state === TRANSIENT_FAILURE) {
      // gRPC's wait-for-ready (as grpc-js): a `waitForReady` call is not failed because no
      // connection can be made; it waits, re-picked at every connectivity change and bounded by
      // its deadline, until its endpoint reconnects — or, once another endpoint of its service is
      // READY, ends unsent so that the pipeline retries it there.
      if (call.waitForReady === true && !this.#anyReady(call.service)) return QUEUE_RESULT;
      att.pickFailure = AttemptFailures.connect;
      return dropResult(`${noConnection(entry.lastError)} (endpoint ${ep.id})`);
    }
    if (state === IDLE) entry.subchannel.startConnecting();
    return QUEUE_RESULT;
  }

  /** Whether a subchannel of `rt` is READY (a `waitForReady` attempt's failure path only). */
  #anyReady(rt: ServiceRuntime): boolean {
    for (const e of this.#entries.values()) if (e.rt === rt && e.state === READY) return true;
    return false;
  }

  #reconcileScheduled: Set<ServiceRuntime> | undefined;

  /** Re-reads `rt`'s endpoints soon (a mesh call picked one this balancer has not seen yet). */
  #scheduleReconcile(rt: ServiceRuntime): void {
    if (this.#reconcileScheduled === undefined) this.#reconcileScheduled = new Set();
    else if (this.#reconcileScheduled.has(rt)) return;
    this.#reconcileScheduled.add(rt);
    queueMicrotask(() => {
      this.#reconcileScheduled?.delete(rt);
      if (this.#destroyed || rt.closed) return;
      // A non-routed channel's endpoints come from its resolver: it reports them shortly.
      if (!this.#tracked.has(rt) || (rt === this.#rt && this.#router === undefined)) return;
      this.#reconcile(rt);
      this.#schedulePublish();
    });
  }

  updateAddressList(
    endpointList: { ok: true; value: GrpcEndpoint[] } | { ok: false; error: { details: string } },
    _config: TypedLoadBalancingConfig,
    options: ChannelOptions,
  ): boolean {
    if (this.#destroyed) return false;
    if (!endpointList.ok) {
      if (this.#entries.size === 0) {
        this.#helper.updateState(
          TRANSIENT_FAILURE,
          new FailPicker(this, endpointList.error.details),
          endpointList.error.details,
        );
      }
      return true;
    }
    const attrs = options as Record<string, unknown>;
    const rt = attrs[RUNTIME_ATTRIBUTE] as ServiceRuntime | undefined;
    const router = attrs[ROUTER_ATTRIBUTE] as Router | undefined;
    if (rt === undefined && router === undefined) {
      const msg = 'the meshlet load-balancing policy needs a mesh: target (mesh:///service)';
      this.#helper.updateState(TRANSIENT_FAILURE, new FailPicker(this, msg), msg);
      return false;
    }
    const {
      [RUNTIME_ATTRIBUTE]: _rt,
      [ROUTER_ATTRIBUTE]: _router,
      [CONFIG_SELECTOR_KEY]: _selector,
      ...subchannelOptions
    } = attrs;
    this.#options = subchannelOptions as ChannelOptions;
    if (rt !== undefined) {
      if (this.#rt !== rt) this.#untrackAll();
      this.#rt = rt;
      this.#router = undefined;
      if (!this.#tracked.has(rt)) this.#tracked.set(rt, { warmup: true, stop: undefined });
      this.#reconcile(rt);
    } else {
      if (this.#rt !== undefined) this.#untrackAll();
      this.#rt = undefined;
      this.#router = router;
    }
    this.#publish();
    return true;
  }

  /** Follows `rt` (a service a routed call was sent to): creates its subchannels, tracks its updates. */
  track(rt: ServiceRuntime): void {
    if (this.#destroyed || rt.closed || this.#tracked.has(rt)) return;
    const stop = rt.watchEndpoints(() => {
      if (!this.#tracked.has(rt) || this.#destroyed) return;
      // A service that goes away (its cluster was removed) gives up its subchannels.
      if (rt.closed) {
        this.#untrack(rt);
        return;
      }
      this.#reconcile(rt);
      this.#schedulePublish();
    });
    this.#tracked.set(rt, { warmup: true, stop });
    this.#reconcile(rt);
    this.#schedulePublish();
  }

  #untrack(rt: ServiceRuntime): void {
    const t = this.#tracked.get(rt);
    if (t === undefined) return;
    t.stop?.();
    this.#tracked.delete(rt);
    for (const e of [...this.#entries.values()]) if (e.rt === rt) this.#drop(e);
    this.#schedulePublish();
  }

  #untrackAll(): void {
    for (const [rt, t] of this.#tracked) {
      t.stop?.();
      for (const e of [...this.#entries.values()]) if (e.rt === rt) this.#drop(e);
    }
    this.#tracked.clear();
  }

  #reconcile(rt: ServiceRuntime): void {
    const seen = new Set<EndpointState>();
    let created = false;
    // grpc-js's ORCA client module is loaded only for a policy that asks for OOB reports.
    const period = rt.oobLoadReportPeriodMs;
    const oob = period !== undefined && oobReportWrapper() !== undefined ? period : undefined;
    for (const st of rt.endpoints) {
      seen.add(st);
      const had = this.#entries.get(st);
      if (had !== undefined && had.oobPeriodMs === oob) continue;
      let sub = this.#helper.createSubchannel(
        { host: st.endpoint.address, port: st.endpoint.port },
        this.#router === undefined ? this.#options : { ...this.#options, [SERVICE_SUBCHANNEL_ARG]: rt.name },
      );
      // The policy asks for out-of-band reports: grpc-js's own ORCA client keeps the stream.
      if (oob !== undefined) sub = this.#withOobReports(sub, rt, st, oob);
      const entry = new Entry(this, rt, st, sub, oob);
      // The policy's OOB setting changed: the new subchannel (same connection, grpc-js pools it)
      // takes the old one's place.
      if (had !== undefined) this.#drop(had);
      this.#entries.set(st, entry);
      if (st.slots[SLOT] === undefined || (st.slots[SLOT] as Entry).lb.#destroyed) st.slots[SLOT] = entry;
      sub.ref();
      sub.addConnectivityStateListener(this.#onState);
      entry.state = sub.getConnectivityState();
      this.#maybeIdle = true;
      if (entry.state === READY) entry.everReady = true;
      sub.startConnecting();
      created = true;
    }
    if (created) {
      // Calls queued for a first connection are re-picked when the grace period ends.
      const t = setTimeout(() => this.#schedulePublish(), FIRST_CONNECT_GRACE_MS + 1);
      t.unref();
    }
    for (const [st, entry] of this.#entries) {
      if (entry.rt === rt && !seen.has(st)) this.#drop(entry);
    }
  }

  /** `sub` wrapped by grpc-js's OOB ORCA client, its reports recorded against `st`. */
  #withOobReports(
    sub: SubchannelInterface,
    rt: ServiceRuntime,
    st: EndpointState,
    periodMs: number,
  ): SubchannelInterface {
    const Wrapper = oobReportWrapper() as NonNullable<ReturnType<typeof oobReportWrapper>>;
    return new Wrapper(
      sub,
      (m) => {
        if (this.#destroyed || rt.closed) return;
        const report = oobReport(m);
        if (report !== undefined) rt.reportLoad(st, report);
      },
      periodMs,
    );
  }

  #drop(entry: Entry): void {
    this.#entries.delete(entry.st);
    if (entry.st.slots[SLOT] === entry) entry.st.slots[SLOT] = undefined;
    entry.subchannel.removeConnectivityStateListener(this.#onState);
    entry.subchannel.unref();
    if (entry.reportedDown) {
      entry.reportedDown = false;
      entry.rt.reportConnectivity(entry.st, true, 'grpc subchannel removed');
    }
  }

  #subchannelState(
    sub: SubchannelInterface,
    next: connectivityState,
    errorMessage: string | undefined,
  ): void {
    if (this.#destroyed) return;
    let entry: Entry | undefined;
    for (const e of this.#entries.values()) {
      if (e.subchannel === sub || e.subchannel.realSubchannelEquals(sub)) {
        entry = e;
        break;
      }
    }
    if (!entry) return;
    entry.state = next;
    if (next === READY) {
      entry.everReady = true;
      if (entry.reportedDown) {
        entry.reportedDown = false;
        entry.rt.reportConnectivity(entry.st, true, 'grpc subchannel READY');
      }
    } else if (next === TRANSIENT_FAILURE) {
      if (errorMessage !== undefined) entry.lastError = errorMessage;
      if (!entry.reportedDown) {
        entry.reportedDown = true;
        entry.rt.reportConnectivity(
          entry.st,
          false,
          `grpc subchannel TRANSIENT_FAILURE${errorMessage === undefined ? '' : `: ${errorMessage}`}`,
        );
      }
    } else if (next === IDLE) {
      // Keep a connection to every endpoint so that picks find READY subchannels.
      this.#maybeIdle = true;
      sub.startConnecting();
    }
    this.#schedulePublish();
  }

  #schedulePublish(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      if (!this.#destroyed) this.#publish();
    });
  }

  /**
   * Publishes a picker with a view of each service's subchannels. A service's first connections
   * hold its calls until every endpoint connected (or failed, or the grace period ended), so the
   * first burst is balanced over all of them rather than sent to whichever connected first.
   * Endpoints added later never hold calls back.
   */
  #publish(): void {
    const views = new Map<ServiceRuntime, ServiceView>();
    const acc = new Map<
      ServiceRuntime,
      { ready: Entry[]; connecting: number; warming: number; lastError: string | undefined }
    >();
    for (const rt of this.#tracked.keys())
      acc.set(rt, { ready: [], connecting: 0, warming: 0, lastError: undefined });
    for (const e of this.#entries.values()) {
      const a = acc.get(e.rt);
      if (a === undefined) continue;
      if (e.lastError !== undefined) a.lastError = e.lastError;
      if (e.state === READY) a.ready.push(e);
      else if (e.state === CONNECTING || e.state === IDLE) {
        a.connecting++;
        if (!e.everReady && this.inFirstConnectGrace(e)) a.warming++;
      }
    }
    for (const [rt, a] of acc) {
      const t = this.#tracked.get(rt) as Tracked;
      const warming = t.warmup && a.warming > 0;
      if (!warming) t.warmup = false;
      views.set(rt, {
        ready: a.ready,
        allFailed: a.ready.length === 0 && a.connecting === 0,
        warming,
        lastError: a.lastError,
      });
    }
    const rt = this.#rt;
    if (rt === undefined) {
      // A routed channel is READY to route; each service's calls wait for its own connections.
      if (this.#router !== undefined)
        this.#helper.updateState(READY, new MeshPicker(this, undefined, views), null);
      return;
    }
    const view = views.get(rt) as ServiceView;
    if (view.warming) {
      // Plain calls wait for the first connections; mesh calls' attempts go where they were placed.
      this.#helper.updateState(CONNECTING, new MeshPicker(this, rt, views), null);
      return;
    }
    if (this.#entries.size === 0) {
      if (rt.discovery.hasData || rt.discovery.errors > 0) {
        const msg = `service "${rt.name}" has no endpoints${rt.discovery.lastError ? ` (discovery: ${rt.discovery.lastError})` : ''}`;
        this.#helper.updateState(TRANSIENT_FAILURE, new FailPicker(this, msg), msg);
      } else {
        this.#helper.updateState(CONNECTING, new QueuePicker(this), null);
      }
      return;
    }
    const state = view.ready.length > 0 ? READY : view.allFailed ? TRANSIENT_FAILURE : CONNECTING;
    this.#helper.updateState(
      state,
      new MeshPicker(this, rt, views),
      view.allFailed ? `service "${rt.name}": ${noConnection(view.lastError)}` : null,
    );
  }

  /** Asks every IDLE subchannel to connect (grpc-js calls this at every call). */
  exitIdle(): void {
    if (!this.#maybeIdle) return;
    let idle = false;
    for (const e of this.#entries.values()) {
      if (e.state !== IDLE) continue;
      idle = true;
      e.subchannel.startConnecting();
    }
    // Still IDLE until the subchannel says CONNECTING: keep looking until none is.
    this.#maybeIdle = idle;
  }

  resetBackoff(): void {
    // Subchannels manage their own backoff; nothing is cached here.
  }

  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    for (const t of this.#tracked.values()) t.stop?.();
    this.#tracked.clear();
    for (const e of [...this.#entries.values()]) this.#drop(e);
    this.#rt = undefined;
    this.#router = undefined;
  }

  /** For tests and the admin page: the connectivity state of each endpoint's subchannel. */
  states(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const e of this.#entries.values()) out[e.st.id] = connectivityState[e.state] ?? String(e.state);
    return out;
  }
}

let registered = false;
/** Registers the `meshlet` policy with the application's grpc-js (idempotent). */
export function registerMeshBalancer(): void {
  if (registered) return;
  registered = true;
  experimental.registerLoadBalancerType(LB_POLICY_NAME, MeshLoadBalancer, MeshLbConfig);
}
