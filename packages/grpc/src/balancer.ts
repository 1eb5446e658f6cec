import { type ChannelOptions, connectivityState, experimental, Metadata, status } from '@grpc/grpc-js';
import {
  allocateEndpointSlot,
  type EndpointState,
  type Outcome,
  type PickContext,
  type ServiceRuntime,
} from '@meshlet/core';
import { CallTag } from './call-tag.js';

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

/**
 * Maps a gRPC status to meshlet's attempt outcome. Statuses that are the caller's business
 * (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, …) count as `success` for the endpoint's health,
 * like HTTP 4xx; UNAVAILABLE, INTERNAL, UNKNOWN, DATA_LOSS and RESOURCE_EXHAUSTED are failures.
 */
export function outcomeOf(code: number): Outcome {
  switch (code) {
    case status.OK:
      return 'success';
    case status.UNAVAILABLE:
      return 'reset';
    case status.DEADLINE_EXCEEDED:
      return 'timeout';
    case status.CANCELLED:
      return 'cancelled';
    case status.INTERNAL:
    case status.UNKNOWN:
    case status.DATA_LOSS:
    case status.RESOURCE_EXHAUSTED:
    case status.UNIMPLEMENTED:
      return 'http_error';
    default:
      return 'success';
  }
}

/** One subchannel of one balancer for one endpoint. */
class Entry {
  readonly lb: MeshLoadBalancer;
  readonly st: EndpointState;
  readonly subchannel: SubchannelInterface;
  state: connectivityState = IDLE;
  /** True when this balancer marked the endpoint unhealthy after TRANSIENT_FAILURE. */
  marked = false;
  /** Whether the subchannel was READY at least once. */
  everReady = false;
  /** `Date.now()` when the subchannel was created (first-connect grace). */
  readonly createdAt = Date.now();
  constructor(lb: MeshLoadBalancer, st: EndpointState, subchannel: SubchannelInterface) {
    this.lb = lb;
    this.st = st;
    this.subchannel = subchannel;
  }
}

/**
 * The per-call pick result: COMPLETE with a READY subchannel, plus the start/end hooks that feed
 * the service runtime (in-flight count, peak-EWMA latency, outlier detection, telemetry).
 */
class MeshPick implements PickResult {
  readonly pickResultType = PICK_COMPLETE;
  readonly subchannel: SubchannelInterface;
  readonly status = null;
  readonly onCallEnded: (code: number) => void;
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
    this.onCallEnded = (code: number) => {
      if (this.#start < 0) return;
      const start = this.#start;
      this.#start = -1;
      const t = this.#tag;
      this.#rt.endAttempt(
        this.#ep,
        start,
        t ? t.attempt : 0,
        outcomeOf(code),
        code,
        undefined,
        undefined,
        'grpc',
      );
    };
  }

  onCallStarted(): void {
    this.#start = this.#rt.startAttempt(this.#ep);
    if (this.#tag) this.#tag.endpoint = this.#ep;
  }
}

/**
 * A read-only view of call metadata as pick headers (lower-case names → first value), so hashing
 * policies (`ring_hash` on a header) see gRPC metadata. One per balancer; re-pointed per pick.
 */
class MetadataHeaders {
  metadata: Metadata | undefined;
  readonly view: Readonly<Record<string, string | string[] | undefined>>;
  constructor() {
    const self = this;
    this.view = new Proxy(Object.create(null) as Record<string, string | undefined>, {
      get(_t, name) {
        if (typeof name !== 'string' || !self.metadata) return undefined;
        const v = self.metadata.get(name);
        if (v.length === 0) return undefined;
        const first = v[0];
        return typeof first === 'string' ? first : undefined;
      },
      has(_t, name) {
        return typeof name === 'string' && self.metadata !== undefined && self.metadata.get(name).length > 0;
      },
      ownKeys() {
        return self.metadata ? Object.keys(self.metadata.getMap()) : [];
      },
      getOwnPropertyDescriptor(_t, name) {
        if (typeof name !== 'string' || !self.metadata) return undefined;
        const v = self.metadata.get(name);
        if (v.length === 0) return undefined;
        return { value: typeof v[0] === 'string' ? v[0] : undefined, enumerable: true, configurable: true };
      },
    });
  }
}

function failResult(details: string): PickResult {
  return {
    pickResultType: PICK_FAIL,
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

/**
 * The grpc-js picker: asks meshlet's service picker (`runtime.pick`) for every call, so the
 * service's balancer (`peak_ewma`, `ring_hash`, `least_request`, …), health, outlier ejection and
 * panic threshold decide where each call goes. When the chosen endpoint has no READY subchannel,
 * it is asked to connect and the pick is retried; then any READY subchannel is used; with none
 * READY the call queues (or fails with UNAVAILABLE when every subchannel is in TRANSIENT_FAILURE).
 */
class MeshPicker implements GrpcPicker {
  readonly #lb: MeshLoadBalancer;
  readonly #rt: ServiceRuntime;
  readonly #ready: readonly Entry[];
  readonly #allFailed: boolean;
  readonly #ctx: PickContext = { attempt: 0, headers: undefined, hash: undefined };
  #rr = 0;

  constructor(lb: MeshLoadBalancer, rt: ServiceRuntime, ready: readonly Entry[], allFailed: boolean) {
    this.#lb = lb;
    this.#rt = rt;
    this.#ready = ready;
    this.#allFailed = allFailed;
  }

  pick(args: PickArgs): PickResult {
    const lb = this.#lb;
    const md = args.metadata;
    const opts = md.getOptions();
    const tag = opts instanceof CallTag ? opts : undefined;
    const ctx = this.#ctx;
    ctx.attempt = tag ? tag.attempt : 0;
    lb.headers.metadata = md;
    ctx.headers = lb.headers.view;
    const rt = this.#rt;
    // Hash policies (ring_hash, maglev) hash on metadata through the headers view; others skip it.
    ctx.hash = rt.requestHash(lb.headers.view);
    let res = rt.pick(ctx, tag?.endpoint);
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
    const ready = this.#ready;
    if (ready.length > 0) {
      const e = ready[this.#rr++ % ready.length] as Entry;
      return new MeshPick(rt, e.st, e.subchannel, tag);
    }
    if (this.#allFailed)
      return failResult(`no connection to any endpoint of service "${rt.name}" could be made`);
    return QUEUE_RESULT;
  }
}

class FailPicker implements GrpcPicker {
  readonly #result: PickResult;
  constructor(details: string) {
    this.#result = failResult(details);
  }
  pick(): PickResult {
    return this.#result;
  }
}

class QueuePicker implements GrpcPicker {
  pick(): PickResult {
    return QUEUE_RESULT;
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

/**
 * meshlet's grpc-js load-balancing policy. It keeps one subchannel per endpoint of the service
 * (connecting eagerly, reconnecting after IDLE), feeds subchannel connectivity into endpoint
 * health (TRANSIENT_FAILURE marks the endpoint unhealthy, READY restores it) and publishes a
 * `MeshPicker` that balances every call with the service's own picker.
 */
export class MeshLoadBalancer implements GrpcLoadBalancer {
  readonly #helper: ChannelControlHelper;
  #rt: ServiceRuntime | undefined;
  readonly #entries = new Map<EndpointState, Entry>();
  #options: ChannelOptions = {};
  #destroyed = false;
  #scheduled = false;
  /** True until the first set of subchannels has connected (see `#publish`). */
  #warmup = true;
  readonly headers = new MetadataHeaders();
  readonly #onState = (sub: SubchannelInterface, _prev: connectivityState, next: connectivityState) =>
    this.#subchannelState(sub, next);

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
          new FailPicker(endpointList.error.details),
          endpointList.error.details,
        );
      }
      return true;
    }
    const rt = (options as Record<string, unknown>)[RUNTIME_ATTRIBUTE] as ServiceRuntime | undefined;
    if (rt === undefined) {
      const msg = 'the meshlet load-balancing policy needs a mesh: target (mesh:///service)';
      this.#helper.updateState(TRANSIENT_FAILURE, new FailPicker(msg), msg);
      return false;
    }
    const { [RUNTIME_ATTRIBUTE]: _drop, ...subchannelOptions } = options as Record<string, unknown>;
    this.#options = subchannelOptions as ChannelOptions;
    this.#rt = rt;
    this.#reconcile(rt);
    this.#publish();
    return true;
  }

  #reconcile(rt: ServiceRuntime): void {
    const seen = new Set<EndpointState>();
    let created = false;
    for (const st of rt.endpoints) {
      seen.add(st);
      if (this.#entries.has(st)) continue;
      const sub = this.#helper.createSubchannel(
        { host: st.endpoint.address, port: st.endpoint.port },
        this.#options,
      );
      const entry = new Entry(this, st, sub);
      this.#entries.set(st, entry);
      if (st.slots[SLOT] === undefined || (st.slots[SLOT] as Entry).lb.#destroyed) st.slots[SLOT] = entry;
      sub.ref();
      sub.addConnectivityStateListener(this.#onState);
      entry.state = sub.getConnectivityState();
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
      if (!seen.has(st)) this.#drop(entry);
    }
  }

  #drop(entry: Entry): void {
    this.#entries.delete(entry.st);
    if (entry.st.slots[SLOT] === entry) entry.st.slots[SLOT] = undefined;
    entry.subchannel.removeConnectivityStateListener(this.#onState);
    entry.subchannel.unref();
    if (entry.marked && entry.st.activeHealth === 'unhealthy') entry.st.activeHealth = 'unknown';
  }

  #subchannelState(sub: SubchannelInterface, next: connectivityState): void {
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
    if (next === READY) entry.everReady = true;
    const rt = this.#rt;
    if (next === TRANSIENT_FAILURE) {
      if (rt && entry.st.activeHealth !== 'unhealthy') {
        entry.st.activeHealth = 'unhealthy';
        entry.marked = true;
        rt.rebuild();
        if (rt.events.wants('health')) {
          rt.events.emit('health', {
            service: rt.name,
            endpoint: entry.st.id,
            healthy: false,
            reason: 'grpc subchannel TRANSIENT_FAILURE',
          });
        }
      }
    } else if (next === READY) {
      if (rt && entry.marked) {
        entry.marked = false;
        if (entry.st.activeHealth === 'unhealthy') entry.st.activeHealth = 'healthy';
        rt.rebuild();
        if (rt.events.wants('health')) {
          rt.events.emit('health', {
            service: rt.name,
            endpoint: entry.st.id,
            healthy: true,
            reason: 'grpc subchannel READY',
          });
        }
      }
    } else if (next === IDLE) {
      // Keep a connection to every endpoint so per-call picks find READY subchannels.
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

  #publish(): void {
    const rt = this.#rt;
    if (!rt) return;
    const ready: Entry[] = [];
    let connecting = 0;
    let warming = 0;
    for (const e of this.#entries.values()) {
      if (e.state === READY) ready.push(e);
      else if (e.state === CONNECTING || e.state === IDLE) {
        connecting++;
        if (!e.everReady && this.inFirstConnectGrace(e)) warming++;
      }
    }
    // The channel's first connections: hold calls until every endpoint connected (or failed, or
    // the grace period ended), so the first burst is balanced over all of them rather than sent
    // to whichever connected first. Endpoints added later never hold the channel back.
    if (this.#warmup && warming > 0) {
      this.#helper.updateState(CONNECTING, new QueuePicker(), null);
      return;
    }
    this.#warmup = false;
    if (this.#entries.size === 0) {
      if (rt.discovery.hasData || rt.discovery.errors > 0) {
        const msg = `service "${rt.name}" has no endpoints${rt.discovery.lastError ? ` (discovery: ${rt.discovery.lastError})` : ''}`;
        this.#helper.updateState(TRANSIENT_FAILURE, new FailPicker(msg), msg);
      } else {
        this.#helper.updateState(CONNECTING, new QueuePicker(), null);
      }
      return;
    }
    const allFailed = ready.length === 0 && connecting === 0;
    const state = ready.length > 0 ? READY : allFailed ? TRANSIENT_FAILURE : CONNECTING;
    this.#helper.updateState(
      state,
      new MeshPicker(this, rt, ready, allFailed),
      allFailed ? `no connection to any endpoint of service "${rt.name}"` : null,
    );
  }

  exitIdle(): void {
    for (const e of this.#entries.values()) if (e.state === IDLE) e.subchannel.startConnecting();
  }

  resetBackoff(): void {
    // Subchannels manage their own backoff; nothing is cached here.
  }

  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    for (const e of [...this.#entries.values()]) this.#drop(e);
    this.#rt = undefined;
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
