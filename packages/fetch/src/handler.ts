import type { Dispatcher } from 'undici';
import { undiciTransport } from './undici.js';

/**
 * The callbacks undici 7's clients call internally (`onConnect`, `onHeaders`, …). meshlet's
 * request handler speaks this form so that a request handed to a Pool is not wrapped again.
 */
export interface LegacyHandler {
  onConnect?(abort: (err?: Error) => void, context?: unknown): void;
  onHeaders?(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean;
  onData?(chunk: Buffer): boolean;
  onComplete?(trailers: Buffer[] | string[] | null): void;
  onError?(err: Error): void;
  onUpgrade?(statusCode: number, rawHeaders: Buffer[] | string[] | null, socket: unknown): void;
  onResponseStarted?(): void;
  onBodySent?(chunk: unknown): void;
  onRequestSent?(): void;
}

type NewHandler = Dispatcher.DispatchHandler;

function headersObject(raw: Buffer[] | string[] | null | undefined): Record<string, string | string[]> {
  if (!raw) return {};
  return undiciTransport().parseHeaders(raw as Buffer[]) as Record<string, string | string[]>;
}

/**
 * The controller a controller-form handler receives; backed by the legacy abort/resume pair. Like
 * undici's own controller it carries the response's raw header and trailer lists: undici 8's
 * fetch (Node 26's global fetch) reads the response headers from `rawHeaders`, not from the
 * parsed object.
 */
class AdapterController {
  #abort: ((err?: Error) => void) | undefined;
  #resume: (() => void) | undefined;
  #paused = false;
  #aborted = false;
  /** As undici's controller keeps it: the reason given (undefined when none was), null before. */
  #reason: Error | null | undefined = null;
  /** The response's raw headers (`[name, value, …]`), set when they arrive. */
  rawHeaders: Buffer[] | string[] | null = null;
  /** The response's raw trailers, set when the response ends. */
  rawTrailers: Buffer[] | string[] | null = null;

  get paused(): boolean {
    return this.#paused;
  }
  get aborted(): boolean {
    return this.#aborted;
  }
  get reason(): Error | null {
    return this.#reason as Error | null;
  }
  bind(abort: (err?: Error) => void): void {
    this.#abort = abort;
  }
  bindResume(resume: () => void): void {
    this.#resume = resume;
  }
  abort(reason?: Error): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason;
    this.#abort?.(reason);
  }
  pause(): void {
    this.#paused = true;
  }
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#resume?.();
  }
}

/** Adapts a handler written against undici's controller API (`onRequestStart`, …) to the legacy form. */
class ControllerAdapter implements LegacyHandler {
  readonly #h: NewHandler;
  readonly #c = new AdapterController();
  // undici's controller type is structural; ours implements every member it declares.
  readonly #controller = this.#c as unknown as Dispatcher.DispatchController;

  constructor(h: NewHandler) {
    this.#h = h;
  }

  onConnect(abort: (err?: Error) => void, context?: unknown): void {
    this.#c.bind(abort);
    this.#h.onRequestStart?.(this.#controller, context);
  }
  /** Forwarded as undici's own adapter does (`UnwrapHandler`); body-sent callbacks are not. */
  onResponseStarted(): void {
    this.#h.onResponseStarted?.();
  }
  onUpgrade(statusCode: number, rawHeaders: Buffer[] | string[] | null, socket: unknown): void {
    this.#c.rawHeaders = rawHeaders;
    this.#h.onRequestUpgrade?.(
      this.#controller,
      statusCode,
      headersObject(rawHeaders),
      socket as import('node:stream').Duplex,
    );
  }
  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    this.#c.bindResume(resume);
    this.#c.rawHeaders = rawHeaders;
    this.#h.onResponseStart?.(this.#controller, statusCode, headersObject(rawHeaders), statusText);
    return !this.#c.paused;
  }
  onData(chunk: Buffer): boolean {
    this.#h.onResponseData?.(this.#controller, chunk);
    return !this.#c.paused;
  }
  onComplete(trailers: Buffer[] | string[] | null): void {
    this.#c.rawTrailers = trailers;
    this.#h.onResponseEnd?.(this.#controller, headersObject(trailers));
  }
  onError(err: Error): void {
    if (!this.#h.onResponseError) throw err;
    this.#h.onResponseError(this.#controller, err);
  }
}

/**
 * Gives the caller its completion. A handler that throws from it gets the error in its error
 * callback, as undici gives it (undici's own interceptors rely on it: the retry interceptor throws
 * from its completion to retry a status).
 */
export function deliverComplete(h: LegacyHandler, trailers: Buffer[] | string[] | null): void {
  try {
    h.onComplete?.(trailers);
  } catch (err) {
    h.onError?.(err as Error);
  }
}

/** Returns a legacy-form handler for whatever handler form the caller used. */
export function toLegacyHandler(handler: object): LegacyHandler {
  return typeof (handler as NewHandler).onRequestStart === 'function'
    ? new ControllerAdapter(handler as NewHandler)
    : (handler as LegacyHandler);
}

/**
 * True when a raw header name (undici gives Buffers) is `lowerName`, compared without allocating:
 * ASCII case folded byte by byte. `lowerName` is lower-case ASCII.
 */
export function rawNameIs(name: Buffer | string, lowerName: string): boolean {
  const n = lowerName.length;
  if (name.length !== n) return false;
  if (typeof name === 'string') return name === lowerName || name.toLowerCase() === lowerName;
  for (let i = 0; i < n; i++) {
    let c = name[i] as number;
    if (c >= 65 && c <= 90) c |= 0x20;
    if (c !== lowerName.charCodeAt(i)) return false;
  }
  return true;
}

/** Finds a header value in undici's raw header list (`[name, value, name, value, …]`). */
export function rawHeader(
  raw: Buffer[] | string[] | null | undefined,
  lowerName: string,
): string | undefined {
  if (!raw) return undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as Buffer | string;
    if (name.length === lowerName.length && name.toString().toLowerCase() === lowerName)
      return (raw[i + 1] as Buffer | string).toString();
  }
  return undefined;
}
