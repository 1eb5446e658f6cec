import type { Dispatcher } from 'undici';
import { util } from 'undici';

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
  return util.parseHeaders(raw as Buffer[]) as Record<string, string | string[]>;
}

/** Adapts a handler written against undici's controller API (`onRequestStart`, …) to the legacy form. */
class ControllerAdapter implements LegacyHandler {
  readonly #h: NewHandler;
  #abort: ((err?: Error) => void) | undefined;
  #resume: (() => void) | undefined;
  #paused = false;
  #aborted = false;
  #reason: Error | null = null;
  readonly controller = {
    abort: (reason?: Error) => {
      if (this.#aborted) return;
      this.#aborted = true;
      this.#reason = reason ?? null;
      this.#abort?.(reason);
    },
    pause: () => {
      this.#paused = true;
    },
    resume: () => {
      if (this.#paused) {
        this.#paused = false;
        this.#resume?.();
      }
    },
    get paused() {
      return false;
    },
    get aborted() {
      return false;
    },
    get reason() {
      return null as Error | null;
    },
  };

  constructor(h: NewHandler) {
    this.#h = h;
    Object.defineProperties(this.controller, {
      paused: { get: () => this.#paused },
      aborted: { get: () => this.#aborted },
      reason: { get: () => this.#reason },
    });
  }

  onConnect(abort: (err?: Error) => void, context?: unknown): void {
    this.#abort = abort;
    // biome-ignore lint/suspicious/noExplicitAny: undici's controller type is structural
    this.#h.onRequestStart?.(this.controller as any, context);
  }
  onUpgrade(statusCode: number, rawHeaders: Buffer[] | string[] | null, socket: unknown): void {
    // biome-ignore lint/suspicious/noExplicitAny: see above
    this.#h.onRequestUpgrade?.(this.controller as any, statusCode, headersObject(rawHeaders), socket as any);
  }
  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    this.#resume = resume;
    // biome-ignore lint/suspicious/noExplicitAny: see above
    this.#h.onResponseStart?.(this.controller as any, statusCode, headersObject(rawHeaders), statusText);
    return !this.#paused;
  }
  onData(chunk: Buffer): boolean {
    // biome-ignore lint/suspicious/noExplicitAny: see above
    this.#h.onResponseData?.(this.controller as any, chunk);
    return !this.#paused;
  }
  onComplete(trailers: Buffer[] | string[] | null): void {
    // biome-ignore lint/suspicious/noExplicitAny: see above
    this.#h.onResponseEnd?.(this.controller as any, headersObject(trailers));
  }
  onError(err: Error): void {
    // biome-ignore lint/suspicious/noExplicitAny: see above
    if (this.#h.onResponseError) this.#h.onResponseError(this.controller as any, err);
    else throw err;
  }
}

/** Returns a legacy-form handler for whatever handler form the caller used. */
export function toLegacyHandler(handler: object): LegacyHandler {
  return typeof (handler as NewHandler).onRequestStart === 'function'
    ? new ControllerAdapter(handler as NewHandler)
    : (handler as LegacyHandler);
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
