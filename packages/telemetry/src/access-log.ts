import { createWriteStream, type WriteStream } from 'node:fs';
import type { Mesh, RequestEvent } from '@meshlet/core';
import type { AccessLogConfig } from './config.js';
import type { TraceStash } from './tracing.js';

/**
 * One access log entry (`accessLog.format: json`). Field names are flat snake_case so that Loki
 * (`| json`) and Elasticsearch (dynamic mapping) index them as they are; `format: ecs` writes the
 * Elastic Common Schema form instead (`toEcs`). See docs/telemetry.md.
 */
export interface AccessLogEntry {
  /** ISO 8601 time the request ended, with milliseconds (UTC). */
  time: string;
  /** `outbound` (this process called a mesh service) or `inbound` (it served a request). */
  direction: 'outbound' | 'inbound';
  /** The mesh service called (outbound) or this workload (inbound). */
  service: string;
  /** The endpoint (`address:port`) of the last attempt, or the client address (inbound). */
  endpoint: string | undefined;
  method: string;
  path: string;
  /** Response status; absent when no response arrived. */
  status: number | undefined;
  /** How the request ended (`success`, `timeout`, `connect_failure`, `circuit_open`, …). */
  outcome: string;
  duration_ms: number;
  /** Attempts made (1 without retries). */
  attempts: number;
  /** Peer SPIFFE ID: the identity required of the server (outbound) or presented by the client (inbound). */
  peer_identity: string | undefined;
  trace_id: string | undefined;
  span_id: string | undefined;
  /** Error code or message, for failed requests. */
  error: string | undefined;
  /** This workload and namespace (from `local`). */
  workload: string;
  namespace: string;
  transport: 'http' | 'grpc';
  /** The authority: the service called (outbound) or the `Host` header (inbound), when known. */
  host?: string | undefined;
  /** The client's `User-Agent` (inbound), when known. */
  user_agent?: string | undefined;
}

/** The level of an access log line: see docs/telemetry.md, "Access logs". */
export type AccessLogLevel = 'info' | 'warn' | 'error';

/** A pino-compatible logger: `logger.info(fields, message)`, and `warn`/`error` when it has them. */
export interface AccessLogLogger {
  info(obj: Record<string, unknown>, msg?: string): void;
  warn?(obj: Record<string, unknown>, msg?: string): void;
  error?(obj: Record<string, unknown>, msg?: string): void;
}

/** A pino-compatible logger, or a function receiving each entry (in meshlet's JSON form). */
export type AccessLogSink = ((entry: AccessLogEntry) => void) | AccessLogLogger;

/**
 * The level of a request's line. Successes (4xx included: the caller's business) and requests the
 * caller cancelled are `info`; a request that failed at the upstream or on the way (a 5xx, a
 * timeout, a refused connection, an open breaker, no endpoint) is `warn`: one line per failed
 * request, while the process itself works and the mesh already reacted (retries, breaker,
 * ejection); `error` is kept for what nothing classified (`outcome: error`: a handler that threw,
 * an unexpected failure), the lines worth paging on.
 */
export function accessLogLevel(outcome: string): AccessLogLevel {
  if (outcome === 'success' || outcome === 'cancelled') return 'info';
  return outcome === 'error' ? 'error' : 'warn';
}

/** The ECS version of `format: ecs` lines (that of Elastic's @elastic/ecs-pino-format 1.5). */
export const ECS_VERSION = '8.10.0';

function hostPort(address: string | undefined): { ip: string; port: number | undefined } | undefined {
  if (!address) return undefined;
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(address) ?? /^([^:]+):(\d+)$/.exec(address);
  if (m) return { ip: m[1] as string, port: Number(m[2]) };
  return { ip: address, port: undefined };
}

function message(e: AccessLogEntry): string {
  return `${e.method} ${e.path} ${e.status ?? e.outcome}`;
}

/**
 * The Elastic Common Schema form of an entry (`accessLog.format: ecs`): nested ECS objects, with
 * `@timestamp`, `log.level`, `message` and `ecs.version` as dotted keys, as Elastic's
 * `@elastic/ecs-pino-format` writes them; meshlet's own fields under `meshlet.*`. See
 * docs/telemetry.md for the field list.
 */
export function toEcs(
  e: AccessLogEntry,
  level: AccessLogLevel = accessLogLevel(e.outcome),
): Record<string, unknown> {
  const q = e.path.indexOf('?');
  const path = q < 0 ? e.path : e.path.slice(0, q);
  const url: Record<string, unknown> = { path };
  if (q >= 0) url.query = e.path.slice(q + 1);
  if (e.host) {
    url.domain = e.host.replace(/:\d+$/, '');
    if (e.transport === 'http') url.full = `http://${e.host}${e.path}`;
  }
  const failed = e.outcome !== 'success';
  const peer = hostPort(e.endpoint);
  const out: Record<string, unknown> = {
    '@timestamp': e.time,
    'log.level': level,
    message: message(e),
    'ecs.version': ECS_VERSION,
    event: {
      kind: 'event',
      category: ['web', 'network'],
      type: failed && e.outcome !== 'cancelled' ? ['access', 'error'] : ['access'],
      dataset: 'meshlet.access',
      outcome: e.outcome === 'success' ? 'success' : e.outcome === 'cancelled' ? 'unknown' : 'failure',
      duration: Math.round(e.duration_ms * 1e6),
    },
    http: {
      request: { method: e.method },
      ...(e.status === undefined ? {} : { response: { status_code: e.status } }),
    },
    url,
    service: {
      name: e.workload,
      ...(e.direction === 'outbound' ? { target: { name: e.service } } : {}),
    },
    network: { direction: e.direction === 'outbound' ? 'egress' : 'ingress', protocol: e.transport },
    orchestrator: { namespace: e.namespace },
  };
  if (peer) {
    const side: Record<string, unknown> = { address: e.endpoint, ip: peer.ip };
    if (peer.port !== undefined) side.port = peer.port;
    if (e.direction === 'outbound') out.destination = side;
    else out.client = { ...side, address: peer.ip };
  }
  if (e.trace_id) out.trace = { id: e.trace_id };
  if (e.span_id) out.span = { id: e.span_id };
  if (e.user_agent) out.user_agent = { original: e.user_agent };
  if (e.error !== undefined) {
    out.error = /^MESHLET_ERR_[A-Z_]+$/.test(e.error)
      ? { code: e.error, message: e.error }
      : { message: e.error };
  }
  out.meshlet = {
    direction: e.direction,
    outcome: e.outcome,
    attempts: e.attempts,
    ...(e.peer_identity ? { peer_identity: e.peer_identity } : {}),
  };
  return out;
}

/** What a logger sink gets: the fields without those the logger writes itself. */
function loggerFields(
  e: AccessLogEntry,
  format: 'json' | 'ecs',
  level: AccessLogLevel,
): Record<string, unknown> {
  if (format === 'ecs') {
    const { '@timestamp': _t, 'log.level': _l, message: _m, 'ecs.version': _v, ...rest } = toEcs(e, level);
    return rest;
  }
  const { time: _t, ...rest } = e;
  return rest;
}

/**
 * Buffers JSON lines and writes them in one `write()` per event-loop turn, so that logging never
 * blocks the request that produced the line.
 */
export class JsonLineWriter {
  readonly #out: { write(chunk: string): unknown };
  readonly #own: WriteStream | undefined;
  #buffer: string[] = [];
  #scheduled = false;

  constructor(output: string) {
    if (output === 'stdout') this.#out = process.stdout;
    else if (output === 'stderr') this.#out = process.stderr;
    else {
      this.#own = createWriteStream(output, { flags: 'a' });
      this.#own.on('error', () => {});
      this.#out = this.#own;
    }
  }

  write = (entry: object): void => {
    this.#buffer.push(JSON.stringify(entry));
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.flush());
    }
  };

  flush(): void {
    this.#scheduled = false;
    if (this.#buffer.length === 0) return;
    const text = `${this.#buffer.join('\n')}\n`;
    this.#buffer = [];
    this.#out.write(text);
  }

  async close(): Promise<void> {
    this.flush();
    if (this.#own) await new Promise<void>((resolve) => this.#own?.end(resolve));
  }
}

function toFn(sink: AccessLogSink, format: 'json' | 'ecs'): (entry: AccessLogEntry) => void {
  if (typeof sink === 'function') return sink;
  // A logger writes its own time, level and message: passing `time` too made pino lines with two
  // `time` keys. Each line goes at its level (accessLogLevel), with a short message.
  return (entry) => {
    const level = accessLogLevel(entry.outcome);
    const fields = loggerFields(entry, format, level);
    const msg = message(entry);
    if (level === 'error' && sink.error) sink.error(fields, msg);
    else if (level !== 'info' && sink.warn) sink.warn(fields, msg);
    else sink.info(fields, msg);
  };
}

/** Writes access log entries for the mesh's requests, sampled as configured. */
export class AccessLog {
  readonly #config: AccessLogConfig;
  readonly #sink: (entry: AccessLogEntry) => void;
  readonly #writer: JsonLineWriter | undefined;
  readonly #mesh: Mesh;
  readonly #random: () => number;

  constructor(mesh: Mesh, config: AccessLogConfig, sink?: AccessLogSink, random: () => number = Math.random) {
    this.#mesh = mesh;
    this.#config = config;
    this.#random = random;
    if (sink) {
      this.#sink = toFn(sink, config.format);
    } else {
      const writer = new JsonLineWriter(config.output);
      this.#writer = writer;
      this.#sink = config.format === 'ecs' ? (entry) => writer.write(toEcs(entry)) : writer.write;
    }
  }

  /** True when this request should be logged (errors always, when so configured). */
  sampled(failed: boolean): boolean {
    if (failed && this.#config.alwaysLogErrors) return true;
    const r = this.#config.sampleRate;
    return r >= 1 || (r > 0 && this.#random() < r);
  }

  /**
   * Logs an outbound mesh request that `sampled` kept (telemetry's call listener asks first, so
   * that a request sampling drops costs no line's fields).
   */
  writeRequest(e: RequestEvent, stash: TraceStash): void {
    const local = this.#mesh.config.local;
    const err = e.error as (Error & { code?: unknown }) | undefined;
    this.write({
      time: new Date().toISOString(),
      direction: 'outbound',
      service: e.service,
      endpoint: e.endpoint?.id,
      method: e.method,
      path: e.path,
      status: e.status,
      outcome: e.outcome,
      duration_ms: Math.round(e.durationMs * 1000) / 1000,
      attempts: e.attempts,
      peer_identity: this.#mesh.service(e.service)?.policy.identity,
      trace_id: stash.traceId,
      span_id: stash.spanId,
      error: err === undefined ? undefined : typeof err.code === 'string' ? err.code : err.message,
      workload: local.workload,
      namespace: local.namespace,
      transport: e.transport,
      host: e.service,
    });
  }

  write(entry: AccessLogEntry): void {
    try {
      this.#sink(entry);
    } catch {
      // A failing sink must not break the request that is being logged.
    }
  }

  async close(): Promise<void> {
    await this.#writer?.close();
  }
}
