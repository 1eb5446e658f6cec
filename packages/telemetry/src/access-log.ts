import { createWriteStream, type WriteStream } from 'node:fs';
import type { Mesh, RequestEvent } from '@meshlet/core';
import type { AccessLogConfig } from './config.js';
import type { TraceStash } from './tracing.js';

/**
 * One access log entry. Field names are flat snake_case so that Elasticsearch (dynamic mapping or
 * an ECS pipeline) and Loki (`| json`) index them as they are; see docs/telemetry.md.
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
}

/** A pino-compatible logger (`logger.info(obj)`) or a plain function. */
export type AccessLogSink = ((entry: AccessLogEntry) => void) | { info(entry: AccessLogEntry): void };

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

  write = (entry: AccessLogEntry): void => {
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

function toFn(sink: AccessLogSink): (entry: AccessLogEntry) => void {
  if (typeof sink === 'function') return sink;
  return (entry) => sink.info(entry);
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
      this.#sink = toFn(sink);
    } else {
      this.#writer = new JsonLineWriter(config.output);
      this.#sink = this.#writer.write;
    }
  }

  /** True when this request should be logged (errors always, when so configured). */
  sampled(failed: boolean): boolean {
    if (failed && this.#config.alwaysLogErrors) return true;
    const r = this.#config.sampleRate;
    return r >= 1 || (r > 0 && this.#random() < r);
  }

  /** Logs an outbound mesh request (the telemetry's `request` listener calls it). */
  onRequest(e: RequestEvent, stash: TraceStash): void {
    if (!this.sampled(e.outcome !== 'success')) return;
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
