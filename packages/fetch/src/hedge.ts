import { type HedgePolicy, isIdempotentMethod, type RouteTarget, type ServiceRuntime } from '@meshlet/core';
import type { Dispatcher } from 'undici';
import { bodyKind, VALUE } from './body.js';
import { deliverComplete, type LegacyHandler } from './handler.js';
import { MeshRequest, type RequestHost } from './request.js';

/**
 * Starts a mesh request — plain or routed (`route`: an xDS route's target and policy): a
 * `MeshRequest`, or — when the policy has `hedge` and the request is idempotent with a body undici
 * reads afresh for each copy (none, a string, bytes, a Blob, FormData) — a hedged one.
 */
export function startMeshRequest(
  host: RequestHost,
  rt: ServiceRuntime,
  opts: Dispatcher.DispatchOptions,
  handler: LegacyHandler,
  authority: string,
  route?: RouteTarget,
): void {
  const hedge = route === undefined ? rt.policy.hedge : (route.policy ?? rt.policy).hedge;
  if (hedge !== undefined && isIdempotentMethod(opts.method) && bodyKind(opts.body) === VALUE) {
    // Each copy is a full mesh request of the same options, reporting to its own handler.
    const send = (copy: LegacyHandler): void =>
      new MeshRequest(host, rt, opts, copy, authority, route).begin();
    new HedgedRequest(send, handler, hedge).start();
    return;
  }
  new MeshRequest(host, rt, opts, handler, authority, route).begin();
}

/**
 * A hedged request: the first copy goes out at once, one more every `delay` until `maxHedges`
 * extra copies are out or a copy answered. The first copy to deliver final response headers wins
 * and streams to the caller; the others are cancelled (their attempts end `cancelled`, which
 * neither the breaker nor outlier detection count). Errors are swallowed while another copy is
 * still running; the caller sees an error only when every copy failed. Each copy is a full mesh
 * request (its own retries within the shared retry budget and breaker).
 */
class HedgedRequest {
  /** Sends one copy of the request, reporting to `copy`. */
  readonly #send: (copy: LegacyHandler) => void;
  readonly #handler: LegacyHandler;
  /** When the next copy goes out, and how many extra copies may. */
  readonly #hedge: HedgePolicy;
  readonly #copies: HedgeCopy[] = [];
  #winner: HedgeCopy | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** No further copies may be launched. */
  #done = false;
  /** The caller got its terminal callback (complete, error or upgrade). */
  #reported = false;
  /** The caller was told a response started (`onResponseStarted`). */
  #started = false;
  #lastError: Error | undefined;

  constructor(send: (copy: LegacyHandler) => void, handler: LegacyHandler, hedge: HedgePolicy) {
    this.#send = send;
    this.#handler = handler;
    this.#hedge = hedge;
  }

  start(): void {
    this.#handler.onConnect?.((reason?: Error) => this.#abortAll(reason));
    if (this.#done) return;
    this.#launch();
  }

  #launch(): void {
    const copy = new HedgeCopy(this);
    this.#copies.push(copy);
    this.#send(copy);
    if (this.#copies.length <= this.#hedge.maxHedges && !this.#done) {
      this.#timer = setTimeout(
        (self: HedgedRequest) => {
          self.#timer = undefined;
          if (!self.#done && self.#winner === undefined) self.#launch();
        },
        this.#hedge.delayMs,
        this,
      );
      this.#timer.unref();
    }
  }

  #abortAll(reason?: Error): void {
    if (this.#reported) return;
    this.#stopLaunching();
    for (const c of this.#copies) c.abort(reason);
  }

  /** A copy got final headers: it wins unless another already did. */
  claim(copy: HedgeCopy): boolean {
    if (this.#winner !== undefined) return this.#winner === copy;
    if (this.#done) return false;
    this.#winner = copy;
    if (this.#timer) clearTimeout(this.#timer);
    for (const c of this.#copies) if (c !== copy) c.abort(undefined);
    return true;
  }

  get handler(): LegacyHandler {
    return this.#handler;
  }

  /** Another copy won: what this one reports about its request no longer reaches the caller. */
  lost(copy: HedgeCopy): boolean {
    return this.#winner !== undefined && this.#winner !== copy;
  }

  /** True for the first copy whose response starts (the caller hears of it once). */
  responseStarted(): boolean {
    if (this.#started) return false;
    this.#started = true;
    return true;
  }

  /** A copy failed: report it only if it had won, or if no other copy can still answer. */
  copyFailed(copy: HedgeCopy, err: Error): void {
    copy.finished = true;
    if (this.#winner === copy) {
      this.#report(err);
      return;
    }
    if (this.#winner !== undefined) return;
    this.#lastError = err;
    if (this.#copies.some((c) => !c.finished)) return;
    if (this.#timer !== undefined && !this.#done) {
      // The next hedge has not gone out yet: send it now rather than fail.
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#launch();
      return;
    }
    this.#report(this.#lastError);
  }

  #report(err: Error): void {
    this.#stopLaunching();
    if (this.#reported) return;
    this.#reported = true;
    this.#handler.onError?.(err);
  }

  #stopLaunching(): void {
    this.#done = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** The winner is about to give the caller its terminal callback (complete or upgrade). */
  finished(): void {
    this.#stopLaunching();
    this.#reported = true;
  }
}

/** The handler one copy of a hedged request reports to. */
class HedgeCopy implements LegacyHandler {
  readonly #parent: HedgedRequest;
  #abort: ((err?: Error) => void) | undefined;
  #aborted = false;
  #won = false;
  finished = false;

  constructor(parent: HedgedRequest) {
    this.#parent = parent;
  }

  abort(reason: Error | undefined): void {
    if (this.#aborted || this.finished) return;
    this.#aborted = true;
    this.#abort?.(reason);
  }

  onConnect(abort: (err?: Error) => void): void {
    this.#abort = abort;
    if (this.#aborted) abort();
  }

  onHeaders(status: number, raw: Buffer[], resume: () => void, text: string): boolean {
    if (status < 200) return true;
    if (!this.#won) {
      if (!this.#parent.claim(this)) return false;
      this.#won = true;
    }
    const h = this.#parent.handler;
    return h.onHeaders ? h.onHeaders(status, raw, resume, text) : true;
  }

  onData(chunk: Buffer): boolean {
    if (!this.#won) return true;
    const h = this.#parent.handler;
    return h.onData ? h.onData(chunk) : true;
  }

  onComplete(trailers: Buffer[] | string[] | null): void {
    this.finished = true;
    if (!this.#won) return;
    this.#parent.finished();
    deliverComplete(this.#parent.handler, trailers);
  }

  onError(err: Error): void {
    if (this.finished) return;
    this.#parent.copyFailed(this, err);
  }

  onUpgrade(status: number, raw: Buffer[] | string[] | null, socket: unknown): void {
    if (!this.#parent.claim(this)) return;
    this.#won = true;
    this.finished = true;
    this.#parent.finished();
    this.#parent.handler.onUpgrade?.(status, raw, socket);
  }

  /** Before any copy won, as for any attempt (docs/semantics.md: once per attempt). */
  onBodySent(chunk: unknown): void {
    if (!this.#parent.lost(this)) this.#parent.handler.onBodySent?.(chunk);
  }

  onRequestSent(): void {
    if (!this.#parent.lost(this)) this.#parent.handler.onRequestSent?.();
  }

  /** Comes before a copy can win (with the response's headers): the first copy's is passed on. */
  onResponseStarted(): void {
    if (!this.#parent.lost(this) && this.#parent.responseStarted())
      this.#parent.handler.onResponseStarted?.();
  }
}
