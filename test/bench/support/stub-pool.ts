import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Dispatcher } from 'undici';

/**
 * CPU cost of a dispatch path without a network: a stub pool answers every request synchronously
 * (connect, 200 headers, a small body, complete), so what is measured is the caller's own work per
 * request. Process CPU time (`process.cpuUsage`) is used, which other processes on a shared machine
 * disturb far less than wall-clock latency. Microtasks and timers are drained every 1000 requests,
 * so asynchronous work the path starts (promises, timers) is counted too.
 */
const RAW_HEADERS = [Buffer.from('content-length'), Buffer.from('2')];
const BODY = Buffer.from('ok');
const noop = () => {};

interface LegacyHandlerLike {
  onConnect?(abort: (err?: Error) => void): void;
  onHeaders?(status: number, raw: Buffer[], resume: () => void, text: string): boolean;
  onData?(chunk: Buffer): boolean;
  onComplete?(trailers: null): void;
}

/** A `Dispatcher`-shaped stub that answers synchronously. */
export const stubPool = {
  dispatch(_opts: unknown, handler: LegacyHandlerLike): boolean {
    handler.onConnect?.(noop);
    handler.onHeaders?.(200, RAW_HEADERS, noop, 'OK');
    handler.onData?.(BODY);
    handler.onComplete?.(null);
    return true;
  },
} as unknown as Dispatcher;

/** A minimal caller handler in undici's legacy form (what `fetch` and `request` hand over). */
export const sinkHandler = {
  onConnect: noop,
  onHeaders: () => true,
  onData: () => true,
  onComplete: noop,
  onError(err: Error): void {
    throw err;
  },
};

/** Best-of-`rounds` CPU nanoseconds per call of `fn` over `n` calls. */
export async function cpuNsPerCall(fn: () => void, n: number, rounds = 5): Promise<number> {
  for (let i = 0; i < Math.min(n, 20_000); i++) fn();
  await yieldToLoop();
  let best = Number.POSITIVE_INFINITY;
  for (let r = 0; r < rounds; r++) {
    const c0 = process.cpuUsage();
    for (let i = 0; i < n; i += 1000) {
      for (let j = 0; j < 1000; j++) fn();
      await yieldToLoop();
    }
    const c = process.cpuUsage(c0);
    best = Math.min(best, ((c.user + c.system) * 1000) / n);
  }
  return best;
}
