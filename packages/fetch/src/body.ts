/**
 * Request bodies and retries. undici reads a body afresh for each dispatch when it is a value —
 * a string, bytes, a Blob, FormData (a new multipart boundary each time, with its own
 * content-type), an array — so a retry may send it again as given. A Node stream or an iterable
 * (undici's `fetch` hands every body it has to a dispatcher as a one-shot async generator) is
 * read once: such a body is replayed only through a `ReplayBody` that keeps what it reads, up to
 * `retry.bufferLimit` bytes (Envoy's per-request buffer limit, Linkerd's 64 KiB).
 */

/** A value undici reads afresh on each dispatch. */
export const VALUE = 0;
/** A Node stream: read once, through events; never replayed once read. */
export const STREAM = 1;
/** A sync or async iterable (not an array): read once; replayable through a `ReplayBody`. */
export const ITERABLE = 2;
export type BodyKind = typeof VALUE | typeof STREAM | typeof ITERABLE;

/** Classifies a dispatch body (anything undici does not accept is left to undici: `VALUE`). */
export function bodyKind(body: unknown): BodyKind {
  if (body == null || typeof body !== 'object') return VALUE;
  if (ArrayBuffer.isView(body) || body instanceof ArrayBuffer || Array.isArray(body)) return VALUE;
  const b = body as Record<string | symbol, unknown>;
  if (typeof b.pipe === 'function' && typeof b.on === 'function') return STREAM;
  const tag = b[Symbol.toStringTag];
  if (tag === 'FormData' || tag === 'Blob' || tag === 'File') return VALUE;
  if (typeof b[Symbol.asyncIterator] === 'function' || typeof b[Symbol.iterator] === 'function')
    return ITERABLE;
  return VALUE;
}

const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

function byteLength(chunk: unknown): number {
  if (typeof chunk === 'string') return Buffer.byteLength(chunk);
  if (ArrayBuffer.isView(chunk)) return chunk.byteLength;
  return Number.POSITIVE_INFINITY; // not something to keep
}

/** A copy of a chunk (the producer may reuse its buffer after yielding it). */
function copyOf(chunk: unknown): unknown {
  if (typeof chunk === 'string') return chunk;
  const v = chunk as ArrayBufferView;
  return Buffer.from(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
}

/** One attempt's reading of a `ReplayBody`. */
class ReplayIterator implements AsyncIterator<unknown> {
  readonly #body: ReplayBody;
  readonly gen: number;
  /** Chunks this reader has had. */
  index = 0;

  constructor(body: ReplayBody, gen: number) {
    this.#body = body;
    this.gen = gen;
  }

  next(): Promise<IteratorResult<unknown>> {
    return this.#body.read(this);
  }

  /** A reader that stops (undici after an aborted attempt) leaves the source open for a replay. */
  return(): Promise<IteratorResult<unknown>> {
    this.index = -1;
    this.#body.stopped(this);
    return Promise.resolve(DONE);
  }
}

/**
 * A one-shot body (an iterable) that can be read more than once: the first reading pulls from
 * the source and keeps each chunk (a copy) while the total stays within `limit` bytes; a later
 * reading (a retry) gets the kept chunks, then what the source has not given yet. Only the newest
 * reading is served: an older one (an attempt given up) gets the end. Once the source gave more
 * than `limit` bytes nothing is kept and the body is no longer replayable.
 */
export class ReplayBody implements AsyncIterable<unknown> {
  readonly #source: AsyncIterable<unknown> | Iterable<unknown>;
  readonly #limit: number;
  #iterator: AsyncIterator<unknown> | Iterator<unknown> | undefined = undefined;
  /** The chunks read so far (undefined once more than `limit` bytes were read). */
  #kept: unknown[] | undefined = [];
  #keptBytes = 0;
  /** Chunks pulled from the source. */
  #read = 0;
  #done = false;
  #gen = 0;
  #pending: Promise<IteratorResult<unknown>> | undefined = undefined;
  /** The newest reading has not finished. */
  #reading = false;
  /** The call is over: no new reading will come. */
  #released = false;
  /** The error the source failed with, if it did (the caller's body, not the endpoint). */
  error: unknown = undefined;

  constructor(source: AsyncIterable<unknown> | Iterable<unknown>, limit: number) {
    this.#source = source;
    this.#limit = limit;
  }

  [Symbol.asyncIterator](): AsyncIterator<unknown> {
    this.#reading = true;
    return new ReplayIterator(this, ++this.#gen);
  }

  /** @internal A reading ended (returned early, or read to the end). */
  stopped(it: ReplayIterator): void {
    if (it.gen !== this.#gen) return;
    this.#reading = false;
    if (this.#released) this.#close();
  }

  /** Whether a new reading would see the whole body. */
  get replayable(): boolean {
    return this.#kept !== undefined && this.error === undefined;
  }

  /** @internal */
  async read(it: ReplayIterator): Promise<IteratorResult<unknown>> {
    for (;;) {
      if (it.gen !== this.#gen || it.index < 0) return DONE;
      const kept = this.#kept;
      if (kept !== undefined && it.index < kept.length) return { done: false, value: kept[it.index++] };
      if (this.#done) {
        this.stopped(it);
        return DONE;
      }
      const pending = this.#pending;
      if (pending !== undefined) {
        // Another reading's pull is under way: its chunk is kept for this one too.
        await pending.catch(() => undefined);
        continue;
      }
      if (kept === undefined && it.index !== this.#read)
        throw new Error('meshlet: the request body outgrew the retry buffer and cannot be sent again');
      const p = this.#pull();
      this.#pending = p;
      let r: IteratorResult<unknown>;
      try {
        r = await p;
      } finally {
        if (this.#pending === p) this.#pending = undefined;
      }
      if (r.done === true) {
        this.stopped(it);
        return DONE;
      }
      if (this.#kept !== undefined) continue; // kept: served by index above
      if (it.gen !== this.#gen || it.index < 0) return DONE;
      it.index++;
      return r;
    }
  }

  async #pull(): Promise<IteratorResult<unknown>> {
    let iterator = this.#iterator;
    if (iterator === undefined) {
      const src = this.#source as AsyncIterable<unknown> & Iterable<unknown>;
      iterator =
        typeof src[Symbol.asyncIterator] === 'function'
          ? src[Symbol.asyncIterator]()
          : src[Symbol.iterator]();
      this.#iterator = iterator;
    }
    let r: IteratorResult<unknown>;
    try {
      r = await iterator.next();
    } catch (err) {
      this.error = err;
      throw err;
    }
    if (r.done === true) {
      this.#done = true;
      return r;
    }
    this.#read++;
    const kept = this.#kept;
    if (kept !== undefined) {
      const size = byteLength(r.value);
      if (this.#keptBytes + size > this.#limit) this.#kept = undefined;
      else {
        kept.push(copyOf(r.value));
        this.#keptBytes += size;
      }
    }
    return r;
  }

  /**
   * The call is over: no reading will follow. The source is closed (if a reading started it and
   * it is not finished) once the newest reading is done with it — at once when none is going on.
   */
  release(): void {
    this.#released = true;
    if (!this.#reading) this.#close();
  }

  #close(): void {
    const iterator = this.#iterator;
    this.#kept = undefined;
    if (iterator === undefined || this.#done) return;
    this.#done = true;
    try {
      const r = iterator.return?.();
      if (r !== undefined && typeof (r as Promise<unknown>).then === 'function')
        (r as Promise<unknown>).then(undefined, () => {});
    } catch {
      // the source's own cleanup failed: nothing to do for the finished call
    }
  }
}
