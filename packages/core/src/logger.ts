import type { MeshEventMap, MeshEvents } from './events.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/**
 * Where the mesh says what happened to it: a pino logger as it is (`logger.warn(fields, message)`),
 * or anything with the same four methods. See docs/telemetry.md, "Logs".
 */
export interface MeshLogger {
  debug(obj: Record<string, unknown>, msg: string): void;
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
  error(obj: Record<string, unknown>, msg: string): void;
}

/** At most `lines` lines of one kind per `intervalMs`; the rest are counted and summarized. */
export interface LogRateLimit {
  readonly lines: number;
  readonly intervalMs: number;
}

/** 10 lines per kind (one event type of one service) per minute. */
export const DEFAULT_LOG_RATE_LIMIT: LogRateLimit = Object.freeze({ lines: 10, intervalMs: 60_000 });

const LEVELS: Readonly<Record<LogLevel, number>> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface ConsoleLoggerOptions {
  /** Lines below this level are dropped (default `info`). */
  readonly level?: LogLevel | undefined;
  /** Where lines go (default the global `console`: debug/info to stdout, warn/error to stderr). */
  readonly console?: Pick<Console, LogLevel> | undefined;
}

function fieldText(value: unknown, msg: string): string {
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    // The message usually is the error's: the code is what the line lacks.
    const text = msg.includes(value.message) ? '' : value.message;
    return typeof code === 'string' ? (text ? `${code}: ${text}` : code) : JSON.stringify(text || value.name);
  }
  if (typeof value === 'string') return /[\s"=]/.test(value) ? JSON.stringify(value) : value;
  return JSON.stringify(value) ?? String(value);
}

/**
 * The default logger: one readable line per message on the console,
 * `meshlet warn: <message> (service=reviews endpoint=10.0.0.7:8080)`.
 */
export function consoleLogger(options: ConsoleLoggerOptions = {}): MeshLogger {
  const min = LEVELS[options.level ?? 'info'];
  const out = options.console ?? console;
  const line = (level: LogLevel) => (obj: Record<string, unknown>, msg: string) => {
    if (LEVELS[level] < min) return;
    const fields = Object.entries(obj)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${fieldText(v, msg)}`);
    out[level](`meshlet ${level}: ${msg}${fields.length > 0 ? ` (${fields.join(' ')})` : ''}`);
  };
  return { debug: line('debug'), info: line('info'), warn: line('warn'), error: line('error') };
}

interface Window {
  start: number;
  count: number;
  suppressed: number;
  level: LogLevel;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Rate-limits a logger per message kind: at most `lines` lines of a kind per `intervalMs` (a
 * window that starts with the kind's first line); the rest are counted, and one summary line
 * (`suppressed K more "kind" messages`, at the highest level suppressed) follows when the window
 * ends. A flood of ejections or discovery errors thus costs a bounded number of lines, and says so.
 */
export class RateLimitedLogger {
  readonly #logger: MeshLogger;
  readonly #limit: LogRateLimit;
  readonly #now: () => number;
  readonly #windows = new Map<string, Window>();

  constructor(
    logger: MeshLogger,
    limit: LogRateLimit = DEFAULT_LOG_RATE_LIMIT,
    now: () => number = Date.now,
  ) {
    this.#logger = logger;
    this.#limit = limit;
    this.#now = now;
  }

  /** Logs one line of `kind` (e.g. `breaker:reviews`), unless the kind is over its rate. */
  log(kind: string, level: LogLevel, obj: Record<string, unknown>, msg: string): void {
    const t = this.#now();
    let w = this.#windows.get(kind);
    if (w && t - w.start >= this.#limit.intervalMs) {
      this.#summarize(kind, w);
      w = undefined;
    }
    if (!w) {
      w = { start: t, count: 0, suppressed: 0, level, timer: undefined };
      this.#windows.set(kind, w);
    }
    if (w.count < this.#limit.lines) {
      w.count++;
      this.#write(level, obj, msg);
      return;
    }
    w.suppressed++;
    if (LEVELS[level] > LEVELS[w.level]) w.level = level;
    if (!w.timer) {
      const window = w;
      window.timer = setTimeout(
        () => {
          window.timer = undefined;
          if (this.#windows.get(kind) === window) {
            this.#summarize(kind, window);
            this.#windows.delete(kind);
          }
        },
        Math.max(0, w.start + this.#limit.intervalMs - t),
      );
      window.timer.unref?.();
    }
  }

  /** Writes the pending summaries and stops the timers (the mesh closes). */
  flush(): void {
    for (const [kind, w] of this.#windows) this.#summarize(kind, w);
    this.#windows.clear();
  }

  #summarize(kind: string, w: Window): void {
    if (w.timer) clearTimeout(w.timer);
    w.timer = undefined;
    if (w.suppressed === 0) return;
    const seconds = Math.round(this.#limit.intervalMs / 1000);
    this.#write(
      w.level,
      { scope: 'meshlet', kind, suppressed: w.suppressed },
      `suppressed ${w.suppressed} more "${kind}" message${w.suppressed === 1 ? '' : 's'} in ${seconds}s`,
    );
    w.suppressed = 0;
  }

  #write(level: LogLevel, obj: Record<string, unknown>, msg: string): void {
    try {
      this.#logger[level](obj, msg);
    } catch {
      // A failing logger must not break the mesh that reports through it.
    }
  }
}

function ms(v: number): string {
  return v >= 1000 && v % 1000 === 0 ? `${v / 1000}s` : `${Math.round(v)}ms`;
}

/**
 * Writes what happens to the mesh to `logger`, from its events: discovery failures (and
 * recoveries), circuit breaker transitions, outlier ejections and returns, panic mode, active
 * health changes, and the `log` events of extensions (xDS NACKs and stream failures, certificate
 * rotations, rejections and expiry, Kubernetes, authorization). Returns a function that detaches
 * it (and writes the pending rate-limit summaries).
 */
export function attachLogger(
  events: MeshEvents,
  logger: MeshLogger,
  limit: LogRateLimit | false = DEFAULT_LOG_RATE_LIMIT,
  now: () => number = Date.now,
): () => void {
  const limiter = new RateLimitedLogger(
    logger,
    limit === false ? { lines: Infinity, intervalMs: 1 } : limit,
    now,
  );
  const failing = new Set<string>();
  const unhealthy = new Set<string>();
  const on = <K extends keyof MeshEventMap>(name: K, fn: (e: MeshEventMap[K]) => void) => events.on(name, fn);
  const offs = [
    on('discoveryError', (e) => {
      failing.add(e.service);
      limiter.log(
        `discovery:${e.service}`,
        'warn',
        { scope: 'discovery', service: e.service, source: e.source, err: e.error },
        e.error.message,
      );
    }),
    on('endpoints', (e) => {
      if (!failing.delete(e.service)) return;
      limiter.log(
        `discovery-recovered:${e.service}`,
        'info',
        { scope: 'discovery', service: e.service, endpoints: e.endpoints.length, version: e.version },
        `discovery of ${e.service} recovered: ${e.endpoints.length} endpoint${e.endpoints.length === 1 ? '' : 's'}`,
      );
    }),
    on('breaker', (e) => {
      const text =
        e.state === 'open'
          ? `circuit breaker of ${e.service} opened: calls fail fast with MESHLET_ERR_CIRCUIT_OPEN`
          : e.state === 'half_open'
            ? `circuit breaker of ${e.service} half-open: one probe call goes through`
            : `circuit breaker of ${e.service} closed`;
      limiter.log(
        `breaker:${e.service}`,
        e.state === 'open' ? 'warn' : 'info',
        { scope: 'breaker', service: e.service, state: e.state },
        text,
      );
    }),
    on('ejection', (e) => {
      const fields = {
        scope: 'outlier',
        service: e.service,
        endpoint: e.endpoint,
        reason: e.reason,
        durationMs: e.durationMs,
      };
      if (e.ejected)
        limiter.log(
          `ejection:${e.service}`,
          'warn',
          fields,
          `ejected ${e.endpoint} from ${e.service} for ${ms(e.durationMs)} (${e.reason})`,
        );
      else
        limiter.log(
          `ejection:${e.service}`,
          'info',
          fields,
          `${e.endpoint} of ${e.service} returned after ejection`,
        );
    }),
    on('panic', (e) => {
      const fields = { scope: 'panic', service: e.service, usable: e.usable, total: e.total };
      if (e.panic)
        limiter.log(
          `panic:${e.service}`,
          'warn',
          fields,
          `${e.service} is in panic mode: ${e.usable} of ${e.total} endpoints usable, balancing over all of them`,
        );
      else
        limiter.log(
          `panic:${e.service}`,
          'info',
          fields,
          `${e.service} left panic mode: ${e.usable} of ${e.total} endpoints usable`,
        );
    }),
    on('health', (e) => {
      // An endpoint's first pass (unchecked → healthy) is no news: only a return from unhealthy is.
      const key = `${e.service} ${e.endpoint}`;
      if (e.healthy && !unhealthy.delete(key)) return;
      if (!e.healthy) unhealthy.add(key);
      limiter.log(
        `health:${e.service}`,
        e.healthy ? 'info' : 'warn',
        { scope: 'health', service: e.service, endpoint: e.endpoint, healthy: e.healthy, reason: e.reason },
        `${e.endpoint} of ${e.service} is ${e.healthy ? 'healthy' : 'unhealthy'} (${e.reason})`,
      );
    }),
    on('log', (e) => {
      const data =
        e.data !== null && typeof e.data === 'object'
          ? (e.data as Record<string, unknown>)
          : e.data === undefined
            ? {}
            : { data: e.data };
      limiter.log(`log:${e.scope}`, e.level, { scope: e.scope, ...data }, e.message);
    }),
  ];
  return () => {
    for (const off of offs) off();
    limiter.flush();
  };
}
