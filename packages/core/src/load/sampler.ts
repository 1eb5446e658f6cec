import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { readCapacity } from './capacity.js';
import { DEFAULT_ORCA_LIMITS, type OrcaLimits, type OrcaLoadReport, orcaLoadReport } from './orca.js';
import { formatOrcaHeader, isTextSafeName, type OrcaHeaderFormat } from './orca-header.js';
import { encodeOrcaLoadReport } from './orca-proto.js';

/**
 * Where a `LoadSampler` reads the process' numbers. The defaults read Node's own counters; tests
 * inject fakes (a fake clock and scripted counters), so nothing here needs real time to pass.
 */
export interface LoadSources {
  /** A monotonic clock in ms (`performance.now()`). */
  now(): number;
  /** Cumulative CPU time of the process, user + system, in µs (`process.cpuUsage()`). */
  cpuMicros(): number;
  /** Cumulative event-loop busy and idle time in ms (`performance.eventLoopUtilization()`). */
  eventLoop(): { readonly active: number; readonly idle: number };
  /**
   * Cumulative event-loop busy time in ms, `eventLoop().active` without the object: read at every
   * 0 ↔ 1 in-flight transition (up to twice per request). Optional: without it (or when only
   * `eventLoop` is replaced), `eventLoop().active`.
   */
  eventLoopActive?(): number;
  /**
   * The event-loop delay since the previous call, in ms beyond the sampling resolution (p99 and
   * max), then starts a new window. `undefined` while the monitor is off.
   */
  takeEventLoopDelay(): { readonly p99: number; readonly max: number } | undefined;
  /** Resident set size in bytes. */
  rssBytes(): number;
  /** CPUs the process may use (host count narrowed by a cgroup v2 quota). */
  readonly cpus: number;
  /** Memory the process may use, in bytes (host memory narrowed by a cgroup v2 limit). */
  readonly memoryBytes: number;
  /** Starts and stops whatever the sources need while sampling (the event-loop delay monitor). */
  start?(): void;
  stop?(): void;
}

export interface LoadSamplerOptions {
  /** How often the report is recomputed, in ms. Default 1000 (as A58's weight update period). */
  readonly intervalMs?: number;
  /** The form of the pre-encoded `endpoint-load-metrics` value: 'text' (default), 'json' or 'binary'. */
  readonly format?: OrcaHeaderFormat;
  /**
   * Add the sampler's own named metrics to reports: `in_flight` (the most requests in flight during
   * the interval) and `event_loop_delay_p99_ms`. Default true.
   */
  readonly builtinMetrics?: boolean;
  /** Resolution of the event-loop delay monitor in ms (`monitorEventLoopDelay`). Default 10. */
  readonly eventLoopDelayResolutionMs?: number;
  /** Limits on the reports the sampler builds (metric count, name length). */
  readonly limits?: OrcaLimits;
  /** Replaces the default sources (tests). */
  readonly sources?: Partial<LoadSources>;
}

/** One interval's measurements and the report made of them, with its encodings ready to send. */
export interface LoadSnapshot {
  /** `sources.now()` when it was taken. */
  readonly at: number;
  /** Length of the interval it covers, in ms (0 for the initial snapshot). */
  readonly intervalMs: number;
  /** Event-loop utilization over the interval (0..1), idle-time work (timers, GC between requests) included. */
  readonly eventLoopUtilization: number;
  /**
   * The report's `application_utilization`: the event loop's busy time while requests were in
   * flight over the report window (0..1), unless the application set its own.
   */
  readonly applicationUtilization: number;
  /** Process CPU time over the interval divided by the interval and by `cpus` (0..1; may exceed 1 briefly). */
  readonly cpuUtilization: number;
  /** RSS divided by the memory the process may use (0..1). */
  readonly memUtilization: number;
  /**
   * Requests finished per second over the report window: the intervals since the last one that
   * finished a request (at most `MAX_WINDOW_INTERVALS`).
   */
  readonly rps: number;
  /** Requests finished as failures per second over the report window (shed requests included). */
  readonly eps: number;
  /** Requests shed by overload protection per second over the interval (counted in `rps` and `eps` too). */
  readonly shedRps: number;
  /** Requests in flight when the snapshot was taken. */
  readonly inFlight: number;
  /** The most requests in flight at once during the interval. */
  readonly inFlightPeak: number;
  /** Event-loop delay p99 / max over the interval, in ms beyond the monitor's resolution (0 without the monitor). */
  readonly eventLoopDelayP99Ms: number;
  readonly eventLoopDelayMaxMs: number;
  /** The ORCA report. */
  readonly report: OrcaLoadReport;
  /** The `endpoint-load-metrics` header value in the configured format. */
  readonly header: string;
  /** The protobuf report (the value of a gRPC `endpoint-load-metrics-bin` trailer). */
  readonly binary: Buffer;
}

export const DEFAULT_LOAD_INTERVAL_MS = 1000;

/** The longest report window, in sample intervals (see `LoadSampler`). */
export const MAX_WINDOW_INTERVALS = 10;

const round = (x: number, digits: number) => {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
};

/** The least utilization reported for a window that finished requests (and the rounding step). */
const MIN_UTILIZATION = 1e-6;

/**
 * A utilization rounded to 4 significant digits and to 1e-6, and not below 1e-6 unless 0: a lightly
 * used server's ~1e-4 keeps its precision (A58's weight divides by it), and the TEXT form stays a
 * plain decimal (JavaScript writes numbers under 1e-6 with an exponent).
 */
function smallFigure(x: number): number {
  if (x <= 0) return 0;
  return Math.max(MIN_UTILIZATION, round(Number(x.toPrecision(4)), 6));
}

const NAME_RE = /^[\w.\-:/]{1,128}$/;

function checkName(name: string): void {
  if (typeof name !== 'string' || !NAME_RE.test(name) || !isTextSafeName(name))
    throw new TypeError(
      `load metric name must be 1-128 characters of letters, digits, '_', '.', '-', ':' or '/', got ${JSON.stringify(name)}`,
    );
}

function checkValue(name: string, value: number): void {
  if (typeof value !== 'number' || !Number.isFinite(value))
    throw new TypeError(`load metric ${name} must be a finite number, got ${value}`);
}

/** The process' own counters. The event-loop delay monitor runs only between `start` and `stop`. */
export function processLoadSources(resolutionMs = 10): LoadSources {
  const capacity = readCapacity();
  const timing = performance.nodeTiming;
  let histogram: ReturnType<typeof monitorEventLoopDelay> | undefined;
  return {
    now: () => performance.now(),
    cpuMicros: () => {
      const u = process.cpuUsage();
      return u.user + u.system;
    },
    eventLoop: () => performance.eventLoopUtilization(),
    // What eventLoopUtilization() computes for `active` (now − loop start − idle time), with no
    // result object and its three numbers per read.
    eventLoopActive: () => {
      const start = timing.loopStart;
      return start <= 0 ? 0 : performance.now() - start - timing.idleTime;
    },
    takeEventLoopDelay: () => {
      const h = histogram;
      if (h === undefined) return undefined;
      // Node records the time between the monitor's timer runs, the resolution included: the delay
      // is what exceeds it (as @fastify/under-pressure reports it).
      const p99 = h.count > 0 ? h.percentile(99) / 1e6 - resolutionMs : 0;
      const max = h.count > 0 ? h.max / 1e6 - resolutionMs : 0;
      h.reset();
      return { p99: Math.max(0, p99), max: Math.max(0, max) };
    },
    rssBytes: () => process.memoryUsage.rss(),
    cpus: capacity.cpus,
    memoryBytes: capacity.memoryBytes,
    start: () => {
      if (histogram !== undefined) return;
      histogram = monitorEventLoopDelay({ resolution: resolutionMs });
      histogram.enable();
    },
    stop: () => {
      histogram?.disable();
      histogram = undefined;
    },
  };
}

/**
 * Measures this process' load and keeps its ORCA report ready to attach to responses, so that a
 * response costs one header set and no encoding (gRFC A51 per-call reports; Envoy's
 * `endpoint-load-metrics` header):
 *
 * - **application_utilization**: the event loop's busy time while requests were in flight, over
 *   the report window (`performance.eventLoopUtilization`, read when the first request comes in
 *   after none and when the last one leaves). A Node server saturates when its event loop does,
 *   long before its CPUs do (one busy loop on an 8-CPU host is 12.5% CPU), so this is the figure
 *   balancers should weigh by (A58 prefers it over `cpu_utilization`). Busy time with no request in
 *   flight (timers, GC, the sampler itself, and on a shared machine the time the process was not
 *   scheduled mid-turn) is left out: A58's weight is qps / utilization, an estimate of the
 *   requests the server serves per unit of its capacity, and an idle baseline in the utilization
 *   makes a lightly used server look expensive (weight ≈ qps / baseline: the fewer requests it
 *   gets, the fewer it is sent). At saturation requests are always in flight and it is the
 *   event-loop utilization. `setApplicationUtilization()` replaces it.
 * - **rps_fractional / eps** and the utilization are measured over the *report window*: the sample
 *   intervals since the last one that finished a request (at most `MAX_WINDOW_INTERVALS`), so that
 *   a server called less often than once per interval reports the rate it serves, not 0 in most
 *   intervals (A58 clients ignore reports with qps 0).
 * - **cpu_utilization**: process CPU time (`process.cpuUsage`) over the interval, divided by the
 *   interval and by the CPUs the process may use (the host count, or a cgroup v2 quota when lower:
 *   see `readCapacity`). Includes GC and libuv threadpool work.
 * - **mem_utilization**: RSS over the memory the process may use (host memory or cgroup limit).
 * - **rps_fractional / eps**: requests (and failed requests) finished per second, from the counters
 *   the inbound side bumps once per request (`requestStarted` / `requestFinished`), over the report
 *   window.
 * - **named_metrics**: the application's own (`set(name, value)`), plus `in_flight` (the most in
 *   flight at once during the interval), `event_loop_delay_p99_ms` and, while overload protection
 *   sheds, `shed_rps` unless `builtinMetrics` is off.
 * - **utilization**: the application's own 0..1 resource figures (`setUtilization`).
 *
 * Everything is computed on an unref'd timer every `intervalMs` (default 1 s), never per request;
 * the per-request cost is one increment and one decrement. Values are rounded (utilizations to
 * 1e-4, rates to 1e-3) so the TEXT header stays short.
 */
export class LoadSampler {
  readonly intervalMs: number;
  readonly format: OrcaHeaderFormat;
  readonly #builtin: boolean;
  readonly #limits: OrcaLimits;
  readonly #src: LoadSources;
  /** The loop's cumulative busy time (`LoadSources.eventLoopActive`). */
  readonly #active: () => number;
  #timer: NodeJS.Timeout | undefined;

  #inFlight = 0;
  #peak = 0;
  #finished = 0;
  #failed = 0;
  #shed = 0;
  #lastShed = 0;
  #named = new Map<string, number>();
  #utilization = new Map<string, number>();
  #appUtilization: number | undefined;

  #lastAt: number;
  #lastCpu: number;
  #lastLoop: { readonly active: number; readonly idle: number };
  /** Event-loop busy time (ms) while requests were in flight, in the current report window. */
  #requestBusy = 0;
  /** The loop's cumulative busy time when the current stretch with requests in flight began. */
  #busySince = 0;
  /** Start of the current report window: time, and finished and failed counts then. */
  #windowAt: number;
  #windowFinished = 0;
  #windowFailed = 0;
  /** The figures of the last complete report window. */
  #window = { rps: 0, eps: 0, utilization: 0 };
  #current: LoadSnapshot;
  /** The current snapshot's header in each form, and its overloaded variant, made on first use. */
  #forms: LoadForms | undefined;
  #listeners: Array<(snapshot: LoadSnapshot) => void> = [];

  constructor(options: LoadSamplerOptions = {}) {
    const interval = options.intervalMs ?? DEFAULT_LOAD_INTERVAL_MS;
    if (!(interval >= 10 && interval <= 3_600_000))
      throw new RangeError(`intervalMs must be within 10..3600000, got ${interval}`);
    this.intervalMs = interval;
    this.format = options.format ?? 'text';
    this.#builtin = options.builtinMetrics ?? true;
    this.#limits = options.limits ?? DEFAULT_ORCA_LIMITS;
    const defaults =
      options.sources !== undefined &&
      ['now', 'cpuMicros', 'eventLoop', 'takeEventLoopDelay', 'rssBytes', 'cpus', 'memoryBytes'].every(
        (k) => k in (options.sources as object),
      )
        ? undefined
        : processLoadSources(options.eventLoopDelayResolutionMs ?? 10);
    const src = { ...defaults, ...options.sources } as LoadSources;
    this.#src = src;
    // A replaced `eventLoop` without its own `eventLoopActive` is read for both.
    const active =
      options.sources?.eventLoop !== undefined && options.sources.eventLoopActive === undefined
        ? undefined
        : src.eventLoopActive;
    this.#active = active ?? (() => src.eventLoop().active);
    this.#lastAt = this.#src.now();
    this.#lastCpu = this.#src.cpuMicros();
    this.#lastLoop = this.#src.eventLoop();
    this.#windowAt = this.#lastAt;
    this.#current = this.#snapshot(this.#lastAt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  }

  /** Starts sampling every `intervalMs` on an unref'd timer (idempotent). */
  start(): this {
    if (this.#timer !== undefined) return this;
    this.#src.start?.();
    this.#timer = setInterval(() => this.sample(), this.intervalMs);
    this.#timer.unref();
    return this;
  }

  /** Stops the timer and the event-loop delay monitor; the last snapshot stays readable. */
  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#src.stop?.();
  }

  get running(): boolean {
    return this.#timer !== undefined;
  }

  /**
   * Counts a request in (the inbound side calls it once per request). The first request in flight
   * after none also reads the event loop's busy time (~0.2 µs): the loop time requests account for
   * is the busy time while any is in flight (see `application_utilization`).
   */
  requestStarted(): void {
    if (this.#inFlight++ === 0) this.#busySince = this.#active();
    if (this.#inFlight > this.#peak) this.#peak = this.#inFlight;
  }

  /** Counts a request out; `failed` when it ended as a server-side error (it then counts in `eps`). */
  requestFinished(failed = false): void {
    if (this.#inFlight > 0 && --this.#inFlight === 0) this.#requestBusy += this.#active() - this.#busySince;
    this.#finished++;
    if (failed) this.#failed++;
  }

  /**
   * Counts a request that overload protection answered without running it: it finished, as a
   * failure (so `eps` tells load-aware clients, A58's error penalty lowering the weight), and in
   * `shed_rps`. It is not counted in flight.
   */
  requestShed(): void {
    this.#finished++;
    this.#failed++;
    this.#shed++;
  }

  /** Requests shed over the sampler's life. */
  get shedTotal(): number {
    return this.#shed;
  }

  /** Requests in flight now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Sets an application metric (`named_metrics.<name>`) sent from the next sample on. */
  set(name: string, value: number): void {
    checkName(name);
    if (this.#builtin && BUILTIN_METRICS.has(name))
      throw new TypeError(`load metric name ${name} is the sampler's own (builtinMetrics)`);
    checkValue(name, value);
    if (!this.#named.has(name) && this.#named.size + this.#utilization.size >= this.#limits.maxEntries - 2)
      throw new RangeError(`too many load metrics (at most ${this.#limits.maxEntries - 2})`);
    this.#named.set(name, value);
  }

  /** Removes an application metric. */
  delete(name: string): boolean {
    return this.#named.delete(name);
  }

  /** Sets an application resource utilization (`utilization.<name>`, 0..1). */
  setUtilization(name: string, value: number): void {
    checkName(name);
    checkValue(name, value);
    if (value < 0 || value > 1) throw new RangeError(`utilization ${name} must be within 0..1, got ${value}`);
    if (
      !this.#utilization.has(name) &&
      this.#named.size + this.#utilization.size >= this.#limits.maxEntries - 2
    )
      throw new RangeError(`too many load metrics (at most ${this.#limits.maxEntries - 2})`);
    this.#utilization.set(name, value);
  }

  deleteUtilization(name: string): boolean {
    return this.#utilization.delete(name);
  }

  /**
   * Replaces the event-loop utilization as `application_utilization` (e.g. the max of several
   * resources, as the proto suggests); `undefined` goes back to the event loop's.
   */
  setApplicationUtilization(value: number | undefined): void {
    if (value !== undefined) {
      checkValue('application_utilization', value);
      if (value < 0) throw new RangeError(`application_utilization must be >= 0, got ${value}`);
    }
    this.#appUtilization = value;
  }

  /** The latest snapshot (taken by the timer, or by `sample()`). */
  get current(): LoadSnapshot {
    return this.#current;
  }

  /**
   * The `endpoint-load-metrics` value of the current report in `format` (the configured one is
   * `current.header`; another form is encoded on its first use in a sample interval and kept).
   */
  header(format: OrcaHeaderFormat): string {
    if (format === this.format) return this.#current.header;
    const f = this.#formsOf();
    let v = f.header[format];
    if (v === undefined) {
      v = headerIn(this.#current.report, this.#current.binary, format);
      f.header[format] = v;
    }
    return v;
  }

  /**
   * The report of a response that overload protection shed: the current one with
   * `application_utilization` at least 1 (the event loop is saturated, whatever the last interval
   * measured), so that load-aware clients read the overload from the report itself as well as
   * from the shed answer. Encoded on first use per sample interval: `{ header(format), binary }`.
   */
  overloaded(format: OrcaHeaderFormat): string {
    const f = this.#formsOf();
    let v = f.overloaded[format];
    if (v === undefined) {
      v = headerIn(this.#overloadedReport(f), this.overloadedBinary(), format);
      f.overloaded[format] = v;
    }
    return v;
  }

  /** The protobuf form of `overloaded()` (a gRPC `endpoint-load-metrics-bin` trailer). */
  overloadedBinary(): Buffer {
    const f = this.#formsOf();
    let b = f.overloadedBinary;
    if (b === undefined) {
      b = encodeOrcaLoadReport(this.#overloadedReport(f));
      f.overloadedBinary = b;
    }
    return b;
  }

  #overloadedReport(f: LoadForms): OrcaLoadReport {
    let r = f.overloadedReport;
    if (r === undefined) {
      const c = this.#current.report;
      r =
        c.applicationUtilization >= 1 ? c : orcaLoadReport({ ...c, applicationUtilization: 1 }, this.#limits);
      f.overloadedReport = r;
    }
    return r;
  }

  #formsOf(): LoadForms {
    let f = this.#forms;
    if (f === undefined || f.of !== this.#current) {
      f = {
        of: this.#current,
        header: {},
        overloaded: {},
        overloadedReport: undefined,
        overloadedBinary: undefined,
      };
      this.#forms = f;
    }
    return f;
  }

  /**
   * Calls `listener` with every new snapshot (after each sample); returns a remover. Listeners
   * must be quick; one that throws does not stop the others.
   */
  onSample(listener: (snapshot: LoadSnapshot) => void): () => void {
    this.#listeners = [...this.#listeners, listener];
    return () => {
      this.#listeners = this.#listeners.filter((l) => l !== listener);
    };
  }

  /** Takes a snapshot now: measures the interval since the previous one and rebuilds the report. */
  sample(): LoadSnapshot {
    const src = this.#src;
    const at = src.now();
    const elapsed = at - this.#lastAt;
    if (!(elapsed > 0)) return this.#current;
    const cpu = src.cpuMicros();
    const loop = src.eventLoop();
    const dActive = loop.active - this.#lastLoop.active;
    const dIdle = loop.idle - this.#lastLoop.idle;
    const elu = dActive + dIdle > 0 ? dActive / (dActive + dIdle) : 0;
    const cpuUtil = (cpu - this.#lastCpu) / 1000 / elapsed / src.cpus;
    const seconds = elapsed / 1000;
    const shedRps = (this.#shed - this.#lastShed) / seconds;
    const w = this.#closeWindow(at, loop.active);
    const delay = src.takeEventLoopDelay() ?? { p99: 0, max: 0 };
    this.#current = this.#snapshot(
      at,
      elapsed,
      elu,
      cpuUtil,
      src.rssBytes() / src.memoryBytes,
      w.rps,
      w.eps,
      w.utilization,
      shedRps,
      delay.p99,
      delay.max,
    );
    this.#lastAt = at;
    this.#lastCpu = cpu;
    this.#lastLoop = loop;
    this.#lastShed = this.#shed;
    this.#peak = this.#inFlight;
    const snapshot = this.#current;
    for (const l of this.#listeners) {
      try {
        l(snapshot);
      } catch {
        // a listener must not stop the others, nor the sampler
      }
    }
    return snapshot;
  }

  /**
   * The report window (rps, eps, application utilization): the intervals since the last one that
   * finished a request, so that a server called less often than once per interval reports the rate
   * it serves rather than 0 in most intervals (gRFC A58 clients ignore a report with qps 0, and a
   * lightly used server would keep no weight); at most `MAX_WINDOW_INTERVALS` intervals, after
   * which an idle server reports 0. While a window stays empty, the last complete one is reported.
   */
  #closeWindow(at: number, active: number): { rps: number; eps: number; utilization: number } {
    if (this.#inFlight > 0) {
      this.#requestBusy += active - this.#busySince;
      this.#busySince = active;
    }
    const ms = at - this.#windowAt;
    const done = this.#finished - this.#windowFinished;
    if (done === 0 && ms < MAX_WINDOW_INTERVALS * this.intervalMs) return this.#window;
    this.#window = {
      rps: done / (ms / 1000),
      eps: (this.#failed - this.#windowFailed) / (ms / 1000),
      // Requests that finished took some of the loop, however little: never 0 with them (A58
      // clients take utilization 0 for "no report"; a server of a few quick calls a second uses
      // ~1e-4 of its loop).
      utilization: done > 0 ? Math.max(MIN_UTILIZATION, Math.min(1, this.#requestBusy / ms)) : 0,
    };
    this.#windowAt = at;
    this.#windowFinished = this.#finished;
    this.#windowFailed = this.#failed;
    this.#requestBusy = 0;
    return this.#window;
  }

  #snapshot(
    at: number,
    intervalMs: number,
    elu: number,
    cpu: number,
    mem: number,
    rps: number,
    eps: number,
    requestUtilization: number,
    shedRps: number,
    delayP99: number,
    delayMax: number,
  ): LoadSnapshot {
    const eventLoopUtilization = round(Math.min(1, Math.max(0, elu)), 4);
    const applicationUtilization =
      this.#appUtilization ?? smallFigure(Math.min(1, Math.max(0, requestUtilization)));
    const cpuUtilization = round(Math.max(0, cpu), 4);
    const memUtilization = round(Math.min(1, Math.max(0, mem)), 4);
    const named: Record<string, number> = Object.create(null);
    for (const [k, v] of this.#named) named[k] = v;
    const peak = intervalMs === 0 ? this.#inFlight : this.#peak;
    const eventLoopDelayP99Ms = round(delayP99, 1);
    if (this.#builtin) {
      named.in_flight = peak;
      named.event_loop_delay_p99_ms = eventLoopDelayP99Ms;
      if (shedRps > 0) named.shed_rps = round(shedRps, 3);
    }
    const report = orcaLoadReport(
      {
        cpuUtilization,
        memUtilization,
        applicationUtilization,
        rpsFractional: round(rps, 3),
        eps: round(eps, 3),
        utilization: this.#utilization,
        namedMetrics: named,
      },
      this.#limits,
    );
    const binary = encodeOrcaLoadReport(report);
    return Object.freeze({
      at,
      intervalMs,
      eventLoopUtilization,
      applicationUtilization,
      cpuUtilization,
      memUtilization,
      rps,
      eps,
      shedRps,
      inFlight: this.#inFlight,
      inFlightPeak: peak,
      eventLoopDelayP99Ms,
      eventLoopDelayMaxMs: round(delayMax, 1),
      report,
      header: headerIn(report, binary, this.format),
      binary,
    });
  }
}

/** The sampler's own named metrics (`builtinMetrics`). */
const BUILTIN_METRICS: ReadonlySet<string> = new Set(['in_flight', 'event_loop_delay_p99_ms', 'shed_rps']);

interface LoadForms {
  readonly of: LoadSnapshot;
  readonly header: Partial<Record<OrcaHeaderFormat, string>>;
  readonly overloaded: Partial<Record<OrcaHeaderFormat, string>>;
  overloadedReport: OrcaLoadReport | undefined;
  overloadedBinary: Buffer | undefined;
}

function headerIn(report: OrcaLoadReport, binary: Buffer, format: OrcaHeaderFormat): string {
  return format === 'binary' ? `BIN ${binary.toString('base64')}` : formatOrcaHeader(report, format);
}

let shared: LoadSampler | undefined;

/**
 * The process-wide sampler the inbound side uses (created and started on first call, never on
 * import): the event loop is the process', so every server in it reports the same load, and the
 * application sets its named metrics here (`processLoad().set('queue_depth', 12)`). Options apply
 * only to the call that creates it.
 */
export function processLoad(options?: LoadSamplerOptions): LoadSampler {
  if (shared === undefined) shared = new LoadSampler(options).start();
  return shared;
}

/** The process-wide sampler if a server (or the application) started it; never creates one. */
export function runningProcessLoad(): LoadSampler | undefined {
  return shared;
}
