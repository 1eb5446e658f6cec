import {
  type AttemptEvent,
  type EndpointState,
  ErrorCodes,
  isMeshError,
  type Mesh,
  type RequestEvent,
} from '@meshlet/core';
import { allocateEndpointSlot } from '@meshlet/core/extend';

/**
 * What the admin page knows beyond the mesh's own state: recent latency quantiles and outcomes per
 * service (logical requests), per endpoint (attempts) and per inbound route, request rates over the
 * last minute, and the last authorization denials. Recorded only while the admin server runs.
 *
 * Why not prom-client's histograms: they are cumulative since start (a quantile of the last minute
 * needs two scrapes and a subtraction), their buckets are the user's (OpenTelemetry's default puts
 * every loopback request below 5 ms), they are split by method/status/outcome (a per-service
 * quantile would merge dozens of children at read time) and per-endpoint ones exist only with
 * `metrics.perEndpoint`. The window below costs a table lookup and two typed-array increments per
 * request or attempt, with no allocation and no clock read, and its quantiles are within ±4.9 %.
 */

/** Buckets per power of two (Prometheus native-histogram schema 3): ±4.4 % from the bucket width. */
const PER_OCTAVE = 8;
/** The first bucket holds everything up to 2^MIN_EXP ms (15.6 µs). */
const MIN_EXP = -6;
/** The last bucket holds everything above 2^MAX_EXP ms (262 s). */
const MAX_EXP = 18;
const MIN_MS = 2 ** MIN_EXP;
/** Bucket count: one at or below the minimum, PER_OCTAVE per octave up to the maximum, one above. */
export const LATENCY_BUCKETS = (MAX_EXP - MIN_EXP) * PER_OCTAVE + 2;

/** A window is two sub-windows of this many seconds: quantiles cover the last 30 to 60 seconds. */
export const SUB_WINDOW_SECONDS = 30;
const SUB_WINDOWS = 2;
/** Seconds of per-second rates kept (the page's sparklines). */
export const RATE_SECONDS = 60;

/**
 * The bucket of a latency in ms, from the bits of the double: the exponent gives the octave, the
 * top 8 bits of the mantissa index a table of the octave's 8 logarithmic sub-buckets (no
 * `Math.log2`, which costs ~130 instructions; this ~20). A value within 1/256 of an octave of a
 * sub-bucket boundary may land in the neighbouring sub-bucket: +0.4 % on the error bound.
 */
export function latencyBucket(ms: number): number {
  if (!(ms > MIN_MS)) return 0;
  F64[0] = ms;
  const hi = U32[HI] as number;
  const octave = (hi >>> 20) - 1023 - MIN_EXP;
  if (octave >= MAX_EXP - MIN_EXP) return LATENCY_BUCKETS - 1;
  return octave * PER_OCTAVE + (SUB_BUCKET[(hi >>> 12) & 255] as number) + 1;
}

const F64 = new Float64Array(1);
const U32 = new Uint32Array(F64.buffer);
/** Index of the word holding the sign, exponent and top mantissa bits. */
const HI = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0;
/** Mantissa slice (1/256 of an octave) → logarithmic sub-bucket 0..7, by the slice's middle. */
const SUB_BUCKET = Uint8Array.from({ length: 256 }, (_, j) =>
  Math.min(PER_OCTAVE - 1, Math.floor(PER_OCTAVE * Math.log2(1 + (j + 0.5) / 256))),
);

/** The value a bucket stands for: the geometric middle of its bounds (its bound at the ends). */
export function bucketValue(i: number): number {
  if (i <= 0) return MIN_MS;
  if (i >= LATENCY_BUCKETS - 1) return 2 ** MAX_EXP;
  return 2 ** ((i - 0.5) / PER_OCTAVE + MIN_EXP);
}

/**
 * A second counter advanced by an unref'd interval: windows compare integers instead of reading a
 * clock per record. `tick()` advances it by hand (tests; `intervalMs: 0` starts no timer).
 */
export class StatsClock {
  second = 0;
  /** `floor(second / SUB_WINDOW_SECONDS)`. */
  epoch = 0;
  /**
   * `Date.now()` as of the last tick: what "when" records use (a clock read costs 40-150 ns on
   * some virtual machines; one a second is free).
   */
  wallMs = Date.now();
  readonly #timer: NodeJS.Timeout | undefined;
  readonly #listeners: Array<() => void> = [];

  constructor(intervalMs = 1_000) {
    if (intervalMs > 0) {
      this.#timer = setInterval(() => this.tick(), intervalMs);
      this.#timer.unref();
    }
  }

  tick(seconds = 1): void {
    this.second += seconds;
    this.wallMs = Date.now();
    this.epoch = Math.floor(this.second / SUB_WINDOW_SECONDS);
    for (const l of this.#listeners) l();
  }

  /** Calls `fn` after every tick. */
  onTick(fn: () => void): void {
    this.#listeners.push(fn);
  }

  close(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
  }
}

/** Quantiles and counts of one window. */
export interface WindowSummary {
  /** Records in the window. */
  readonly count: number;
  /** Median and 99th percentile in ms, undefined when the window is empty. */
  readonly p50: number | undefined;
  readonly p99: number | undefined;
  /** Per-kind counts (failures, connect failures, denials, … as the owner numbers them). */
  readonly kinds: readonly number[];
}

/**
 * A latency histogram and a few outcome counters over a sliding window of two sub-windows,
 * allocated on first use (one `Uint32Array` of 2 × (194 + kinds) counters, about 1.6 KB).
 */
export class LatencyWindow {
  readonly #clock: StatsClock;
  readonly #kinds: number;
  readonly #stride: number;
  #data: Uint32Array | undefined;
  /** The clock epoch of the current sub-window. */
  #epoch = 0;
  /** Index (0 or 1) of the current sub-window. */
  #cur = 0;

  constructor(clock: StatsClock, kinds: number) {
    this.#clock = clock;
    this.#kinds = kinds;
    this.#stride = LATENCY_BUCKETS + kinds;
  }

  #advance(): Uint32Array {
    let data = this.#data;
    const epoch = this.#clock.epoch;
    if (data === undefined) {
      data = new Uint32Array(this.#stride * SUB_WINDOWS);
      this.#data = data;
      this.#epoch = epoch;
      return data;
    }
    const steps = epoch - this.#epoch;
    if (steps === 0) return data;
    this.#epoch = epoch;
    if (steps >= SUB_WINDOWS) {
      data.fill(0);
      return data;
    }
    // One step: the older sub-window becomes the current one, emptied.
    this.#cur ^= 1;
    const from = this.#cur * this.#stride;
    data.fill(0, from, from + this.#stride);
    return data;
  }

  /** Records one latency (ms); `kind` counts it in one of the owner's counters too (-1: none). */
  record(ms: number, kind: number): void {
    let data = this.#data;
    if (data === undefined || this.#epoch !== this.#clock.epoch) data = this.#advance();
    const base = this.#cur * this.#stride;
    const i = base + latencyBucket(ms);
    data[i] = (data[i] as number) + 1;
    if (kind >= 0) {
      const k = base + LATENCY_BUCKETS + kind;
      data[k] = (data[k] as number) + 1;
    }
  }

  summary(): WindowSummary {
    if (this.#data === undefined)
      return { count: 0, p50: undefined, p99: undefined, kinds: zeros(this.#kinds) };
    const data = this.#advance();
    const s = this.#stride;
    const merged = new Array<number>(LATENCY_BUCKETS);
    let count = 0;
    for (let i = 0; i < LATENCY_BUCKETS; i++) {
      const n = (data[i] as number) + (data[s + i] as number);
      merged[i] = n;
      count += n;
    }
    const kinds: number[] = [];
    for (let k = 0; k < this.#kinds; k++)
      kinds.push((data[LATENCY_BUCKETS + k] as number) + (data[s + LATENCY_BUCKETS + k] as number));
    return { count, p50: quantile(merged, count, 0.5), p99: quantile(merged, count, 0.99), kinds };
  }
}

function zeros(n: number): number[] {
  return new Array<number>(n).fill(0);
}

/** The value of the bucket holding the `q` quantile (nearest rank). */
function quantile(buckets: readonly number[], count: number, q: number): number | undefined {
  if (count === 0) return undefined;
  const rank = Math.max(1, Math.ceil(q * count));
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    seen += buckets[i] as number;
    if (seen >= rank) return bucketValue(i);
  }
  return bucketValue(buckets.length - 1);
}

/** Per-second counts of two things (requests and errors, or served and denied) over the last minute. */
export class RateSeries {
  readonly #clock: StatsClock;
  readonly #a = new Uint32Array(RATE_SECONDS);
  readonly #b = new Uint32Array(RATE_SECONDS);
  #second: number;
  /** `#second % RATE_SECONDS`. */
  #slot: number;

  constructor(clock: StatsClock) {
    this.#clock = clock;
    this.#second = clock.second;
    this.#slot = clock.second % RATE_SECONDS;
  }

  #advance(): void {
    const now = this.#clock.second;
    const steps = now - this.#second;
    if (steps <= 0) return;
    if (steps >= RATE_SECONDS) {
      this.#a.fill(0);
      this.#b.fill(0);
    } else {
      for (let s = this.#second + 1; s <= now; s++) {
        this.#a[s % RATE_SECONDS] = 0;
        this.#b[s % RATE_SECONDS] = 0;
      }
    }
    this.#second = now;
    this.#slot = now % RATE_SECONDS;
  }

  add(b: boolean): void {
    if (this.#second !== this.#clock.second) this.#advance();
    const i = this.#slot;
    const a = this.#a;
    a[i] = (a[i] as number) + 1;
    if (b) {
      const bb = this.#b;
      bb[i] = (bb[i] as number) + 1;
    }
  }

  /**
   * The last `RATE_SECONDS - 1` complete seconds, oldest first (the current second is still
   * filling, so it is left out).
   */
  series(): { a: number[]; b: number[] } {
    this.#advance();
    const a: number[] = [];
    const b: number[] = [];
    for (let k = RATE_SECONDS - 1; k >= 1; k--) {
      const s = this.#second - k;
      if (s < 0) {
        a.push(0);
        b.push(0);
        continue;
      }
      a.push(this.#a[s % RATE_SECONDS] as number);
      b.push(this.#b[s % RATE_SECONDS] as number);
    }
    return { a, b };
  }
}

/** Kinds counted in an endpoint's window. */
export const EP_FAILURE = 0;
export const EP_CONNECT_FAILURE = 1;

/** What the admin page knows of an endpoint's recent attempts. */
export class EndpointWindow {
  readonly window: LatencyWindow;
  /** The last failed attempt: outcome and reason, with the time (epoch ms, to the second). */
  lastFailure: { outcome: string; reason: string; at: number } | undefined;
  /** Epoch ms of the last successful attempt, to the second. */
  lastSuccessAt: number | undefined;

  constructor(clock: StatsClock) {
    this.window = new LatencyWindow(clock, 2);
  }
}

/** Kinds counted in a service's window. */
export const SVC_ERROR = 0;

export class ServiceWindow {
  readonly window: LatencyWindow;
  readonly rate: RateSeries;
  constructor(clock: StatsClock) {
    this.window = new LatencyWindow(clock, 1);
    this.rate = new RateSeries(clock);
  }
}

/** Kinds counted in an inbound route's window. */
export const IN_DENIED = 0;
export const IN_CLIENT_ERROR = 1;
export const IN_SERVER_ERROR = 2;

export class RouteWindow {
  readonly window: LatencyWindow;
  readonly transport: string;
  /** Since the admin server started. */
  total = 0;
  denied = 0;
  constructor(clock: StatsClock, transport: string) {
    this.window = new LatencyWindow(clock, 3);
    this.transport = transport;
  }
}

/** One request refused by authorization, as the page lists it. */
export interface Denial {
  readonly time: string;
  readonly transport: string;
  readonly method: string;
  readonly path: string;
  readonly principal: string | undefined;
  readonly client: string | undefined;
  readonly reason: string;
}

/**
 * Inbound routes tracked one by one; more share the row `(other routes)` (framework route templates
 * are few; `(no route)` is always its own row).
 */
export const MAX_ROUTES = 100;
/** Denials remembered. */
export const MAX_DENIALS = 20;
/** Route key of requests no route matched (404s, requests refused before routing). */
export const NO_ROUTE = '(no route)';
/** Route key of routes beyond `MAX_ROUTES`. */
export const OTHER_ROUTES = '(other routes)';

const ENDPOINT_SLOT = allocateEndpointSlot();

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** True when `error` is an authorization denial (`MESHLET_ERR_FORBIDDEN`, also as gRPC details). */
export function isDenial(error: Error | undefined): boolean {
  if (error === undefined) return false;
  if (isMeshError(error)) return error.code === ErrorCodes.FORBIDDEN;
  return typeof error.message === 'string' && error.message.startsWith(`${ErrorCodes.FORBIDDEN}:`);
}

/** The inbound side as `ServerRequest.end` reports it. */
export interface InboundRecord {
  readonly transport: 'http' | 'grpc';
  readonly method: string;
  readonly path: string;
  readonly route: string | undefined;
  readonly status: number | undefined;
  readonly error: Error | undefined;
  readonly durationMs: number;
  readonly principal: string | undefined;
  readonly client: string | undefined;
}

/**
 * The admin page's recorder: subscribes to the mesh's `request` and `attempt` events and receives
 * every inbound request from the telemetry's `ServerRequest.end`.
 */
export class AdminStats {
  readonly clock: StatsClock;
  readonly #mesh: Mesh;
  readonly #services = new Map<string, ServiceWindow>();
  readonly #routes = new Map<string, RouteWindow>();
  readonly #denials: Denial[] = [];
  #namedRoutes = 0;
  readonly inboundRate: RateSeries;
  inboundTotal = 0;
  inboundDenied = 0;
  readonly #disposers: Array<() => void> = [];

  constructor(mesh: Mesh, clock: StatsClock = new StatsClock()) {
    this.#mesh = mesh;
    this.clock = clock;
    this.inboundRate = new RateSeries(clock);
    this.#disposers.push(mesh.events.on('request', (e) => this.onRequest(e)));
    this.#disposers.push(mesh.events.on('attempt', (e) => this.onAttempt(e)));
    // Services the mesh no longer has (evicted runtimes) are forgotten once a window.
    clock.onTick(() => {
      if (clock.second % SUB_WINDOW_SECONDS !== 0 || this.#services.size === 0) return;
      const live = new Set(mesh.services().map((s) => s.name));
      for (const name of this.#services.keys()) if (!live.has(name)) this.#services.delete(name);
    });
  }

  service(name: string): ServiceWindow | undefined {
    return this.#services.get(name);
  }

  endpoint(st: EndpointState): EndpointWindow | undefined {
    return st.slots[ENDPOINT_SLOT] as EndpointWindow | undefined;
  }

  onRequest(e: RequestEvent): void {
    let s = this.#services.get(e.service);
    if (s === undefined) {
      s = new ServiceWindow(this.clock);
      this.#services.set(e.service, s);
    }
    const failed = e.outcome !== 'success' && e.outcome !== 'cancelled';
    s.window.record(e.durationMs, failed ? SVC_ERROR : -1);
    s.rate.add(failed);
  }

  onAttempt(e: AttemptEvent): void {
    const st = e.endpoint;
    let w = st.slots[ENDPOINT_SLOT] as EndpointWindow | undefined;
    if (w === undefined) {
      w = new EndpointWindow(this.clock);
      st.slots[ENDPOINT_SLOT] = w;
    }
    // The pipeline's verdict on the endpoint, as the breaker and outlier detection count it: an
    // application's own 500 is an answer; the caller's cancel or deadline says nothing.
    const verdict = e.verdict;
    if (verdict === 'ignore') return;
    if (verdict === 'success') {
      w.window.record(e.durationMs, -1);
      w.lastSuccessAt = this.clock.wallMs;
      return;
    }
    const outcome = e.outcome;
    w.window.record(e.durationMs, outcome === 'connect_failure' ? EP_CONNECT_FAILURE : EP_FAILURE);
    const reason =
      e.error !== undefined
        ? clip(e.error.message, 200)
        : e.status !== undefined
          ? `status ${e.status}`
          : outcome;
    const last = w.lastFailure;
    if (last === undefined) w.lastFailure = { outcome, reason, at: this.clock.wallMs };
    else {
      last.outcome = outcome;
      last.reason = reason;
      last.at = this.clock.wallMs;
    }
  }

  /** Records one inbound request (called by `ServerRequest.end`). */
  onInbound(r: InboundRecord): void {
    const denied = isDenial(r.error);
    this.inboundTotal++;
    if (denied) this.inboundDenied++;
    this.inboundRate.add(denied);
    let key = r.route === undefined || r.route === '' ? NO_ROUTE : r.route;
    let w = this.#routes.get(key);
    if (w === undefined) {
      if (key !== NO_ROUTE && this.#namedRoutes >= MAX_ROUTES) {
        key = OTHER_ROUTES;
        w = this.#routes.get(key);
      }
      if (w === undefined) {
        w = new RouteWindow(this.clock, r.transport);
        this.#routes.set(key, w);
        if (key !== NO_ROUTE && key !== OTHER_ROUTES) this.#namedRoutes++;
      }
    }
    w.total++;
    const status = r.status;
    let kind = -1;
    if (denied) {
      w.denied++;
      kind = IN_DENIED;
    } else if (r.transport === 'grpc') {
      // gRPC: the server's own failures (UNKNOWN, INTERNAL, UNAVAILABLE, DATA_LOSS) vs the rest.
      if (status === 2 || status === 13 || status === 14 || status === 15) kind = IN_SERVER_ERROR;
      else if (status !== undefined && status !== 0) kind = IN_CLIENT_ERROR;
    } else if (status === undefined || status >= 500) kind = IN_SERVER_ERROR;
    else if (status >= 400) kind = IN_CLIENT_ERROR;
    w.window.record(r.durationMs, kind);
    if (denied) {
      if (this.#denials.length >= MAX_DENIALS) this.#denials.shift();
      this.#denials.push({
        time: new Date().toISOString(),
        transport: r.transport,
        method: clip(r.method, 16),
        path: clip(r.path, 200),
        principal: r.principal === undefined ? undefined : clip(r.principal, 200),
        client: r.client,
        reason: clip((r.error as Error).message, 300),
      });
    }
  }

  routes(): ReadonlyMap<string, RouteWindow> {
    return this.#routes;
  }

  /** The last denials, newest first. */
  denials(): Denial[] {
    return [...this.#denials].reverse();
  }

  close(): void {
    for (const d of this.#disposers.splice(0)) d();
    this.clock.close();
    for (const rt of this.#mesh.services())
      for (const ep of rt.endpoints) ep.slots[ENDPOINT_SLOT] = undefined;
  }
}
