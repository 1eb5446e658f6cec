import { performance } from 'node:perf_hooks';

/**
 * How far behind the event loop is *now*, for overload protection: an unref'd heartbeat timer
 * notes when it last ran, so that a request being admitted can tell how long the loop has been
 * busy without a break (the heartbeat could not run meanwhile) in one `performance.now()` call:
 *
 *     lag = now − last heartbeat − interval
 *
 * While the loop keeps up, the heartbeat runs on time and the lag stays under a millisecond or
 * two. When work arrives faster than the loop serves it, one turn of the loop processes
 * everything that arrived during the previous one: the heartbeat waits for the whole turn, and a
 * request admitted k requests into the turn sees the time the k before it took — its own wait in
 * the process, as CoDel's sojourn time is a packet's wait in the queue. A histogram of delays
 * (`monitorEventLoopDelay`, what the load report's `event_loop_delay_p99_ms` comes from) only
 * knows a turn's delay once the turn is over; shedding needs it while the turn runs.
 *
 * Every `windowMs` the heartbeat also measures the event-loop utilization of the window just
 * ended (`performance.eventLoopUtilization`), for a utilization threshold.
 *
 * It also remembers the recent **stalls** — heartbeats that ran at least `STALL_MIN_MS` late, as
 * intervals of time during which the loop could not run callbacks — so that a client can tell how
 * much of a latency it measured was its own loop's delay rather than the endpoint's
 * (`stalledMs`: the adaptive concurrency limiter discounts it).
 *
 * One per process (`processEventLoopLag()`): the event loop is the process'. The timer runs while
 * at least one holder has `acquire`d it.
 */
export class EventLoopLag implements LocalStalls {
  readonly intervalMs: number;
  readonly windowMs: number;
  #last: number;
  #timer: NodeJS.Timeout | undefined = undefined;
  #holders = 0;
  #beats = 0;
  #beatsPerWindow: number;
  #elu = performance.eventLoopUtilization();
  /** The event-loop utilization of the last complete window (0 until one completed). */
  utilization = 0;
  /** Windows completed since the heartbeat started (guards notice a new one by it). */
  windows = 0;
  readonly #now: () => number;
  /** Recent stalls as [start, end) pairs in a ring (`#stallNext` is the next slot to write). */
  readonly #stalls = new Float64Array(2 * STALL_RING);
  #stallNext = 0;
  #stallCount = 0;

  constructor(intervalMs = 10, windowMs = 100, now: () => number = () => performance.now()) {
    this.intervalMs = intervalMs;
    this.windowMs = windowMs;
    this.#beatsPerWindow = Math.max(1, Math.round(windowMs / intervalMs));
    this.#now = now;
    this.#last = now();
  }

  /** Starts the heartbeat (if not running) for one more holder; returns its release. */
  acquire(): () => void {
    if (this.#holders++ === 0) {
      this.#last = this.#now();
      this.#beats = 0;
      this.#elu = performance.eventLoopUtilization();
      this.#timer = setInterval(EventLoopLag.#beat, this.intervalMs, this);
      this.#timer.unref();
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--this.#holders === 0 && this.#timer !== undefined) {
        clearInterval(this.#timer);
        this.#timer = undefined;
      }
    };
  }

  get running(): boolean {
    return this.#timer !== undefined;
  }

  static #beat(self: EventLoopLag): void {
    const now = self.#now();
    const late = now - self.#last - self.intervalMs;
    if (late >= STALL_MIN_MS) self.#recordStall(now - late, now);
    self.#last = now;
    if (++self.#beats >= self.#beatsPerWindow) {
      self.#beats = 0;
      const e = performance.eventLoopUtilization();
      self.utilization = performance.eventLoopUtilization(e, self.#elu).utilization;
      self.#elu = e;
      self.windows++;
    }
  }

  /** How long the loop has been busy beyond the heartbeat's interval, in ms (0 when on time). */
  lagMs(now: number = this.#now()): number {
    const lag = now - this.#last - this.intervalMs;
    return Math.max(lag, 0);
  }

  /** @internal Tests: a heartbeat now (as the timer would). */
  beat(): void {
    EventLoopLag.#beat(this);
  }

  #recordStall(start: number, end: number): void {
    const i = this.#stallNext;
    this.#stalls[2 * i] = start;
    this.#stalls[2 * i + 1] = end;
    this.#stallNext = (i + 1) % STALL_RING;
    if (this.#stallCount < STALL_RING) this.#stallCount++;
  }

  /**
   * How long the loop was stalled during the last `spanMs` ms, in ms: the overlap of that span
   * with the recorded stalls and with the current one (the heartbeat is overdue by at least
   * `STALL_MIN_MS`: the caller runs late in a long turn, or right after the process was not
   * scheduled — I/O callbacks run before the timers that would notice). 0 while the heartbeat
   * is not running. A few reads of a ring, newest first, until a stall ends before the span.
   */
  stalledMs(spanMs: number, now: number = this.#now()): number {
    if (this.#timer === undefined || !(spanMs > 0)) return 0;
    const from = now - spanMs;
    let total = 0;
    const due = this.#last + this.intervalMs;
    if (now - due >= STALL_MIN_MS) total += now - Math.max(due, from);
    const st = this.#stalls;
    let i = this.#stallNext;
    for (let n = 0; n < this.#stallCount; n++) {
      i = i === 0 ? STALL_RING - 1 : i - 1;
      const end = st[2 * i + 1] as number;
      if (end <= from) break;
      total += Math.min(end, now) - Math.max(st[2 * i] as number, from);
    }
    return Math.min(total, spanMs);
  }
}

/**
 * What a client needs to know of its own event loop's stalls (`EventLoopLag` in production; a fake
 * in tests): how long the loop could not run callbacks during the last `spanMs` ms, and a way to
 * keep the measurement running while it is needed.
 */
export interface LocalStalls {
  stalledMs(spanMs: number): number;
  acquire(): () => void;
}

/** A heartbeat this late (ms past its interval) counts as a stall of the loop. */
export const STALL_MIN_MS = 2;
/** Stalls remembered (at least ~1.5 s of history at one stall per 10 ms heartbeat). */
const STALL_RING = 128;

let sharedLag: EventLoopLag | undefined;

/** The process' heartbeat (created on first use, never on import; runs while acquired). */
export function processEventLoopLag(): EventLoopLag {
  sharedLag ??= new EventLoopLag();
  return sharedLag;
}

/** Overload protection of a server (`inbound.overload`; docs/load-aware.md#overload-protection). */
export interface OverloadConfig {
  /**
   * Shed a request when the event loop is this far behind as it is admitted (`EventLoopLag`),
   * in ms. Default 50.
   */
  readonly maxEventLoopDelayMs: number;
  /**
   * Also shed while the event-loop utilization of the last 100 ms window is above this (0..1):
   * a share of requests that grows by `UTILIZATION_STEP` per window above it and falls back as
   * fast below it. Default 0.95; 1 (or undefined) turns it off. A surge whose queue forms outside
   * the event loop (in connections a client replaced after timing out, in the accept queue) keeps
   * the loop busy without making one turn long: the utilization sees it, the delay does not.
   */
  readonly maxUtilization: number | undefined;
  /** The back-off a shed answer asks for (`Retry-After`, whole seconds, at least 1), in ms. Default 1000. */
  readonly retryAfterMs: number;
  /** Paths never shed besides the adapters' liveness and readiness paths and gRPC's health service. */
  readonly exemptPaths: readonly string[];
}

export const DEFAULT_OVERLOAD: OverloadConfig = Object.freeze({
  maxEventLoopDelayMs: 50,
  maxUtilization: 0.95,
  retryAfterMs: 1000,
  exemptPaths: Object.freeze([]),
});

/** Why a request was shed (the value of the `x-meshlet-shed` response header). */
export type ShedReason = 'event-loop-delay' | 'utilization';

/** The response header that marks an answer as shed by overload protection. */
export const SHED_HEADER = 'x-meshlet-shed';

/** How much the shed share moves per window of the utilization threshold. */
const UTILIZATION_STEP = 0.1;

/**
 * The shedding decision of one server: `check()` per request, a few field reads and one clock
 * read. Never sheds what the admission step exempts (probes, the health and load report services).
 */
export class OverloadGuard {
  readonly config: OverloadConfig;
  readonly #lag: EventLoopLag;
  readonly #release: () => void;
  readonly #exempt: ReadonlySet<string>;
  #window = -1;
  /** The share of requests shed for utilization (0..1). */
  #share = 0;
  readonly #random: () => number;
  /** Requests shed, by reason, over the guard's life. */
  shedByDelay = 0;
  shedByUtilization = 0;
  /** The lag the last shed request saw, ms. */
  lastLagMs = 0;
  #closed = false;

  constructor(config: OverloadConfig, lag: EventLoopLag = processEventLoopLag(), random = Math.random) {
    this.config = config;
    this.#lag = lag;
    this.#release = lag.acquire();
    this.#exempt = new Set(config.exemptPaths);
    this.#random = random;
  }

  /** Whether `path` is never shed (configured exemptions). */
  exempt(path: string): boolean {
    return this.#exempt.size > 0 && this.#exempt.has(path);
  }

  /** The reason to shed a request admitted now, or undefined to admit it. */
  check(): ShedReason | undefined {
    const lag = this.#lag.lagMs();
    if (lag > this.config.maxEventLoopDelayMs) {
      this.shedByDelay++;
      this.lastLagMs = lag;
      return 'event-loop-delay';
    }
    const max = this.config.maxUtilization;
    if (max === undefined) return undefined;
    const l = this.#lag;
    if (l.windows !== this.#window) {
      this.#window = l.windows;
      this.#share =
        l.utilization > max
          ? Math.min(1, this.#share + UTILIZATION_STEP)
          : Math.max(0, this.#share - UTILIZATION_STEP);
    }
    if (this.#share > 0 && this.#random() < this.#share) {
      this.shedByUtilization++;
      return 'utilization';
    }
    return undefined;
  }

  /** The share of requests the utilization threshold sheds now (0..1). */
  get utilizationShare(): number {
    return this.#share;
  }

  /** The current lag of the event loop, ms. */
  lagMs(): number {
    return this.#lag.lagMs();
  }

  /** Stops this guard's use of the heartbeat. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#release();
  }
}
