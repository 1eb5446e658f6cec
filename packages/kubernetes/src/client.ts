import { ErrorCodes, isMeshError, isPlainObject, MeshError } from '@meshlet/core';
import { undiciTransport } from '@meshlet/fetch';
import type { Pool } from 'undici';
import type { ClusterAccess } from './auth.js';

/** A Kubernetes API `Status` (the body of an error response, or of a watch `ERROR` event). */
export interface KubeStatus {
  readonly code: number | undefined;
  readonly reason: string | undefined;
  readonly message: string | undefined;
  /** `details.retryAfterSeconds` (429 from API priority and fairness, 503 …). */
  readonly retryAfterSeconds?: number | undefined;
}

export function readStatus(obj: unknown): KubeStatus {
  if (!isPlainObject(obj)) return { code: undefined, reason: undefined, message: undefined };
  const details = isPlainObject(obj.details) ? obj.details : {};
  return {
    ...(typeof details.retryAfterSeconds === 'number'
      ? { retryAfterSeconds: details.retryAfterSeconds }
      : {}),
    code: typeof obj.code === 'number' ? obj.code : undefined,
    reason: typeof obj.reason === 'string' ? obj.reason : undefined,
    message: typeof obj.message === 'string' ? obj.message : undefined,
  };
}

/** An API error as a coded `MESHLET_ERR_DISCOVERY` error carrying the HTTP status and reason. */
export function apiError(status: number, kube: KubeStatus, what: string): MeshError {
  let hint = '';
  if (status === 403)
    hint =
      ' — the service account lacks RBAC permission: grant get, list and watch on services and discovery.k8s.io endpointslices (see examples/kubernetes/01-rbac.yaml)';
  else if (status === 401)
    hint = ' — the credentials were rejected (expired or invalid token or certificate)';
  else if (status === 404) hint = ' — not found';
  return new MeshError(
    ErrorCodes.DISCOVERY,
    `kubernetes: ${what} failed with HTTP ${status}${kube.reason ? ` ${kube.reason}` : ''}${kube.message ? `: ${kube.message}` : ''}${hint}`,
    {
      status,
      reason: kube.reason ?? (status === 403 ? 'Forbidden' : status === 401 ? 'Unauthorized' : undefined),
      ...(kube.retryAfterSeconds !== undefined ? { retryAfterMs: kube.retryAfterSeconds * 1000 } : {}),
    },
  );
}

/** A token bucket bounding the request rate to the API server (all watches together). */
export class RateLimiter {
  readonly #rate: number;
  readonly #burst: number;
  #tokens: number;
  #stamp: number;
  readonly #now: () => number;

  constructor(
    perSecond: number,
    burst = Math.max(1, Math.ceil(perSecond * 2)),
    now: () => number = Date.now,
  ) {
    this.#rate = perSecond;
    this.#burst = burst;
    this.#tokens = burst;
    this.#now = now;
    this.#stamp = now();
  }

  /** Takes a token; returns 0 or the ms to wait before the request may go. */
  take(): number {
    const now = this.#now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#stamp) * this.#rate) / 1000);
    this.#stamp = now;
    this.#tokens -= 1;
    return this.#tokens >= 0 ? 0 : (-this.#tokens * 1000) / this.#rate;
  }
}

/** Resolves after `ms`, or rejects when `signal` aborts. The timer is unref'ed. */
export function delay(ms: number, signal: AbortSignal): Promise<void> {
  if (ms <= 0) return signal.aborted ? Promise.reject(signal.reason) : Promise.resolve();
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    timer.unref();
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * The largest watch event accepted by default, in bytes (4 MiB). etcd refuses requests above
 * 1.5 MiB by default (`--max-request-bytes`), so no stored object — an EndpointSlice holds at most
 * 1,000 endpoints, a few hundred KiB — comes near it; the headroom covers clusters that raised it.
 */
export const DEFAULT_MAX_EVENT_BYTES = 4 * 1024 * 1024;

/** A watch line longer than the parser's limit (the watch restarts from a fresh list). */
export class WatchEventTooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`a watch event is larger than ${limit} bytes (kubernetes.maxEventSize)`);
    this.name = 'WatchEventTooLargeError';
  }
}

const NEWLINE = 0x0a;

/**
 * Splits a stream of newline-delimited JSON into values: tolerates partial chunks, several
 * events in one chunk and multi-byte characters split across chunks (a newline byte never occurs
 * inside a UTF-8 sequence, so lines are cut on bytes and decoded whole).
 *
 * Linear in the bytes it reads: each chunk is searched once, an unfinished line is kept as a list
 * of chunks and joined once when its newline arrives. A line longer than `maxEventBytes` throws
 * `WatchEventTooLargeError` as soon as the limit is passed, so memory stays bounded.
 */
export class NdjsonParser {
  readonly #max: number;
  #parts: Buffer[] = [];
  #size = 0;
  /** Bytes searched for newlines so far (each byte once: equal to the bytes fed). */
  bytesScanned = 0;

  constructor(maxEventBytes: number = DEFAULT_MAX_EVENT_BYTES) {
    this.#max = maxEventBytes;
  }

  /** Feeds a chunk; returns the complete values it finished. Throws on a malformed line. */
  push(chunk: Uint8Array | string): unknown[] {
    const buf =
      typeof chunk === 'string'
        ? Buffer.from(chunk)
        : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const out: unknown[] = [];
    let start = 0;
    for (;;) {
      const nl = buf.indexOf(NEWLINE, start);
      if (nl < 0) break;
      let line: Buffer;
      if (this.#size === 0) {
        line = buf.subarray(start, nl);
      } else {
        this.#parts.push(buf.subarray(start, nl));
        line = Buffer.concat(this.#parts, this.#size + nl - start);
        this.#parts = [];
        this.#size = 0;
      }
      if (line.length > this.#max) throw new WatchEventTooLargeError(this.#max);
      start = nl + 1;
      this.#parse(line, out);
    }
    this.bytesScanned += buf.length;
    if (start < buf.length) {
      this.#size += buf.length - start;
      if (this.#size > this.#max) {
        this.#parts = [];
        this.#size = 0;
        throw new WatchEventTooLargeError(this.#max);
      }
      // A copy: the chunk's memory may be reused by the stream that lent it.
      this.#parts.push(Buffer.from(buf.subarray(start)));
    }
    return out;
  }

  #parse(line: Buffer, out: unknown[]): void {
    const text = line.toString('utf8').trim();
    if (text.length > 0) out.push(JSON.parse(text));
  }

  /** Whatever is left at the end of the stream (a last line without a newline). */
  end(): unknown[] {
    const rest = Buffer.concat(this.#parts, this.#size);
    this.#parts = [];
    this.#size = 0;
    const out: unknown[] = [];
    this.#parse(rest, out);
    return out;
  }
}

export interface ClientOptions {
  readonly access: ClusterAccess;
  readonly requestTimeoutMs: number;
  readonly maxRequestsPerSecond: number;
  /**
   * Requests per second for names the API server said do not exist (their look-ups after a 404),
   * a budget of their own so that they never delay the requests of real services (default 1).
   */
  readonly notFoundRequestsPerSecond?: number;
  /** The largest watch event accepted, in bytes (default 4 MiB). */
  readonly maxEventBytes?: number;
  readonly now?: () => number;
}

/** Counters for the snapshot and tests. */
export interface ClientStats {
  requests: number;
  /** Of which look-ups of names that were not found (on their own budget). */
  notFoundRequests: number;
  unauthorizedRetries: number;
  rateLimitedMs: number;
}

/**
 * A small Kubernetes API client over one undici Pool that carries the cluster CA and client
 * certificate. Every request takes a token from the rate limiter; a 401 re-reads the token file
 * and retries once, so a rotated bound token never surfaces as an error.
 */
export class KubeClient {
  readonly access: ClusterAccess;
  readonly #pool: Pool;
  readonly #limiter: RateLimiter;
  readonly #notFoundLimiter: RateLimiter;
  readonly #requestTimeoutMs: number;
  readonly #maxEventBytes: number;
  readonly #basePath: string;
  readonly stats: ClientStats = {
    requests: 0,
    notFoundRequests: 0,
    unauthorizedRetries: 0,
    rateLimitedMs: 0,
  };

  constructor(opts: ClientOptions) {
    this.access = opts.access;
    const url = new URL(opts.access.server);
    this.#basePath = url.pathname.replace(/\/+$/, '');
    const secure = url.protocol === 'https:';
    const { Pool } = undiciTransport();
    this.#pool = new Pool(url.origin, {
      connect: secure
        ? {
            ...(opts.access.ca !== undefined ? { ca: opts.access.ca } : {}),
            ...(opts.access.cert !== undefined ? { cert: opts.access.cert } : {}),
            ...(opts.access.key !== undefined ? { key: opts.access.key } : {}),
            rejectUnauthorized: !opts.access.insecureSkipTlsVerify,
          }
        : {},
      keepAliveTimeout: 30_000,
    });
    this.#limiter = new RateLimiter(opts.maxRequestsPerSecond, undefined, opts.now);
    this.#notFoundLimiter = new RateLimiter(opts.notFoundRequestsPerSecond ?? 1, undefined, opts.now);
    this.#requestTimeoutMs = opts.requestTimeoutMs;
    this.#maxEventBytes = opts.maxEventBytes ?? DEFAULT_MAX_EVENT_BYTES;
  }

  #headers(): Record<string, string> {
    const h: Record<string, string> = { accept: 'application/json', 'user-agent': 'meshlet' };
    const token = this.access.token?.get();
    if (token !== undefined) h.authorization = `Bearer ${token}`;
    else if (this.access.basic)
      h.authorization = `Basic ${Buffer.from(`${this.access.basic.username}:${this.access.basic.password}`).toString('base64')}`;
    return h;
  }

  async #send(
    path: string,
    signal: AbortSignal,
    what: string,
    watch: boolean,
    notFound: boolean,
  ): Promise<{
    status: number;
    body: AsyncIterable<Uint8Array> & {
      text(): Promise<string>;
      json(): Promise<unknown>;
      dump(): Promise<void>;
    };
  }> {
    for (let attempt = 0; ; attempt++) {
      const wait = (notFound ? this.#notFoundLimiter : this.#limiter).take();
      if (wait > 0) {
        this.stats.rateLimitedMs += wait;
        await delay(wait, signal);
      }
      this.stats.requests++;
      if (notFound) this.stats.notFoundRequests++;
      let res: Awaited<ReturnType<Pool['request']>>;
      try {
        res = await this.#pool.request({
          path: this.#basePath + path,
          method: 'GET',
          headers: this.#headers(),
          signal,
          headersTimeout: this.#requestTimeoutMs,
          bodyTimeout: watch ? 0 : this.#requestTimeoutMs,
        });
      } catch (err) {
        if (signal.aborted) throw err;
        throw new MeshError(
          ErrorCodes.DISCOVERY,
          `kubernetes: ${what}: cannot reach the API server ${this.access.server}: ${(err as Error).message}`,
          { reason: 'Unavailable' },
          { cause: err },
        );
      }
      if (res.statusCode === 401 && attempt === 0 && this.access.token?.file !== undefined) {
        // Bound service-account tokens rotate: re-read the file and try once more.
        await res.body.dump();
        this.access.token.refresh();
        this.stats.unauthorizedRetries++;
        continue;
      }
      return { status: res.statusCode, body: res.body };
    }
  }

  /**
   * GETs a JSON resource. Non-2xx responses throw a coded error (see `apiError`). `notFound`: a
   * look-up of a name the API server said does not exist, on its own request budget.
   */
  async get(path: string, signal: AbortSignal, what: string, notFound = false): Promise<unknown> {
    const { status, body } = await this.#send(path, signal, what, false, notFound);
    let parsed: unknown;
    try {
      parsed = await body.json();
    } catch (err) {
      if (signal.aborted) throw err;
      if (status >= 200 && status < 300)
        throw new MeshError(
          ErrorCodes.DISCOVERY,
          `kubernetes: ${what}: invalid JSON from the API server`,
          {},
          { cause: err },
        );
      parsed = undefined;
    }
    if (status < 200 || status >= 300) throw apiError(status, readStatus(parsed), what);
    return parsed;
  }

  /**
   * Opens a watch and feeds each decoded event to `onEvents` (all events of one chunk at once).
   * Resolves when the server ends the stream; rejects on a non-2xx answer or a broken stream.
   */
  async watch(
    path: string,
    signal: AbortSignal,
    what: string,
    onEvents: (events: unknown[]) => void,
  ): Promise<void> {
    const { status, body } = await this.#send(path, signal, what, true, false);
    if (status < 200 || status >= 300) {
      let parsed: unknown;
      try {
        parsed = await body.json();
      } catch {
        parsed = undefined;
      }
      throw apiError(status, readStatus(parsed), what);
    }
    onEvents([]); // headers arrived: the watch is established
    const parser = new NdjsonParser(this.#maxEventBytes);
    try {
      for await (const chunk of body) {
        const events = parser.push(chunk);
        if (events.length > 0) onEvents(events);
      }
      const rest = parser.end();
      if (rest.length > 0) onEvents(rest);
    } catch (err) {
      if (signal.aborted || isMeshError(err)) throw err;
      if (err instanceof WatchEventTooLargeError)
        throw new MeshError(
          ErrorCodes.DISCOVERY,
          `kubernetes: ${what}: ${err.message}; the watch restarts from a fresh list`,
          { reason: 'EventTooLarge', limit: err.limit },
          { cause: err },
        );
      if (err instanceof SyntaxError)
        throw new MeshError(
          ErrorCodes.DISCOVERY,
          `kubernetes: ${what}: malformed watch event: ${err.message}`,
          {},
          { cause: err },
        );
      throw new MeshError(
        ErrorCodes.DISCOVERY,
        `kubernetes: ${what}: watch stream broke: ${(err as Error).message}`,
        { reason: 'Unavailable' },
        { cause: err },
      );
    }
  }

  async close(): Promise<void> {
    await this.#pool.destroy();
  }
}
