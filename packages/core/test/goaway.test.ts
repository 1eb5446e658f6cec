import { afterEach, describe, expect, it, vi } from 'vitest';
import { closeConnectionAfter, type DrainableSession, gracefulGoaway } from '../src/index.js';

/** A session that records what it was sent; its PING is answered when `answer()` is called. */
function session() {
  const sent: string[] = [];
  let pong: ((err: Error | null) => void) | undefined;
  const s: DrainableSession & { sent: string[]; answer(): void } = {
    sent,
    closed: false,
    destroyed: false,
    goaway: (code, last) => sent.push(`goaway ${code} ${last}`),
    ping: (cb) => {
      sent.push('ping');
      pong = cb;
      return true;
    },
    close: () => sent.push('close'),
    answer: () => pong?.(null),
  };
  return s;
}

afterEach(() => {
  vi.useRealTimers();
});

describe('gracefulGoaway (HTTP/2 drain as gRPC servers do it)', () => {
  it('GOAWAY naming the largest stream ID and a PING first; the final step once every PING is answered', () => {
    const a = session();
    const b = session();
    let done = 0;
    gracefulGoaway([a, b], () => done++);
    expect(a.sent).toEqual([`goaway 0 ${2 ** 31 - 1}`, 'ping']);
    expect(done).toBe(0);
    a.answer();
    expect(done).toBe(0);
    b.answer();
    expect(done).toBe(1);
    b.answer();
    expect(done).toBe(1);
  });

  it('goes on after the wait when a PING is never answered; a session already going away is left alone', () => {
    vi.useFakeTimers();
    const a = session();
    let done = 0;
    gracefulGoaway([a], () => done++, 500);
    vi.advanceTimersByTime(499);
    expect(done).toBe(0);
    vi.advanceTimersByTime(1);
    expect(done).toBe(1);
    let again = 0;
    gracefulGoaway([a], () => again++);
    expect(a.sent).toEqual([`goaway 0 ${2 ** 31 - 1}`, 'ping']);
    expect(again).toBe(1);
  });

  it('closeConnectionAfter: HTTP/2 sessions close after the response through a graceful GOAWAY; HTTP/1.1 gets Connection: close', () => {
    const s = session();
    let finish: (() => void) | undefined;
    const headers: Record<string, string> = {};
    const res = {
      setHeader: (k: string, v: string) => {
        headers[k] = v;
      },
      once: (_e: 'finish', l: () => void) => {
        finish = l;
      },
    };
    closeConnectionAfter({ httpVersionMajor: 2, stream: { session: s } }, res);
    expect(s.sent).toEqual([]);
    finish?.();
    expect(s.sent).toEqual([`goaway 0 ${2 ** 31 - 1}`, 'ping']);
    s.answer();
    expect(s.sent.at(-1)).toBe('close');
    closeConnectionAfter({ httpVersionMajor: 1 }, res);
    expect(headers).toEqual({ connection: 'close' });
  });
});
