import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_OVERLOAD, EventLoopLag, OverloadGuard, parseOverload } from '../src/index.js';

/** A heartbeat on a fake clock: `beat()` plays the timer, `t` the time. */
function fakeLag() {
  const c = { t: 1000 };
  const lag = new EventLoopLag(10, 100, () => c.t);
  return { c, lag };
}

const guards: OverloadGuard[] = [];
afterEach(() => {
  for (const g of guards.splice(0)) g.close();
});

describe('EventLoopLag', () => {
  it('is how long the loop has been busy past the heartbeat interval', () => {
    const { c, lag } = fakeLag();
    const release = lag.acquire();
    expect(lag.running).toBe(true);
    c.t += 8;
    expect(lag.lagMs()).toBe(0); // the heartbeat is not even due
    c.t += 62;
    expect(lag.lagMs()).toBe(60); // due 60 ms ago: the loop has not had a break since
    lag.beat();
    expect(lag.lagMs()).toBe(0);
    release();
    release(); // once
    expect(lag.running).toBe(false);
  });

  it('remembers the loop’s stalls and tells how long it stalled during a recent span', () => {
    const { c, lag } = fakeLag();
    expect(lag.stalledMs(100)).toBe(0); // not running: nothing measured
    const release = lag.acquire();
    c.t += 11; // 1 ms late: timer jitter, not a stall
    lag.beat();
    c.t += 10;
    lag.beat();
    expect(lag.stalledMs(21)).toBe(0);
    c.t += 60; // the beat was due 50 ms ago: a stall of 50 ms, [1031, 1081)
    lag.beat();
    c.t += 10;
    lag.beat();
    c.t += 10 + 25; // [1101, 1126): a stall of 25 ms, noticed by the next beat
    lag.beat();
    c.t += 10;
    lag.beat(); // now 1136
    expect(lag.stalledMs(200)).toBe(75);
    expect(lag.stalledMs(45)).toBe(25); // [1091, 1136) holds the second stall only
    expect(lag.stalledMs(70)).toBe(25 + 15); // [1066, 1136) holds the last 15 ms of the first
    // A stall still going on (the heartbeat is overdue) counts up to now.
    c.t += 10 + 40;
    expect(lag.stalledMs(30)).toBe(30);
    expect(lag.stalledMs(100)).toBe(40 + 25);
    release();
    expect(lag.stalledMs(100)).toBe(0);
  });

  it('runs one timer for every holder', () => {
    const { lag } = fakeLag();
    const a = lag.acquire();
    const b = lag.acquire();
    a();
    expect(lag.running).toBe(true);
    b();
    expect(lag.running).toBe(false);
  });

  it('measures the event-loop utilization of each window', async () => {
    const lag = new EventLoopLag(5, 20);
    const release = lag.acquire();
    const end = performance.now() + 100;
    while (lag.windows === 0 && performance.now() < end) await new Promise((r) => setTimeout(r, 5));
    release();
    expect(lag.windows).toBeGreaterThan(0);
    expect(lag.utilization).toBeGreaterThanOrEqual(0);
    expect(lag.utilization).toBeLessThanOrEqual(1);
  });
});

describe('OverloadGuard', () => {
  it('sheds while the loop is further behind than maxEventLoopDelay', () => {
    const { c, lag } = fakeLag();
    const g = new OverloadGuard({ ...DEFAULT_OVERLOAD, maxEventLoopDelayMs: 50 }, lag);
    guards.push(g);
    c.t += 55;
    expect(g.check()).toBeUndefined(); // 45 ms behind
    c.t += 10;
    expect(g.check()).toBe('event-loop-delay'); // 55 ms behind
    expect([g.shedByDelay, g.lastLagMs]).toEqual([1, 55]);
    lag.beat(); // the turn ended
    expect(g.check()).toBeUndefined();
  });

  it('sheds a share that follows the utilization threshold, window by window', () => {
    const { lag } = fakeLag();
    let draw = 0.15;
    const g = new OverloadGuard({ ...DEFAULT_OVERLOAD, maxUtilization: 0.9 }, lag, () => draw);
    guards.push(g);
    const window = (u: number) => {
      lag.utilization = u;
      lag.windows++;
    };
    window(0.95);
    expect(g.check()).toBeUndefined(); // share 0.1 < draw 0.15
    window(0.97);
    expect(g.check()).toBe('utilization'); // share 0.2
    expect(g.utilizationShare).toBeCloseTo(0.2);
    window(0.5);
    window(0.5);
    expect(g.check()).toBeUndefined();
    expect(g.utilizationShare).toBe(0.1);
    draw = 0;
    expect(g.check()).toBe('utilization');
    expect(g.shedByUtilization).toBe(2);
  });

  it('has the utilization threshold on by default (0.95), and 1 turns it off', () => {
    expect(DEFAULT_OVERLOAD.maxUtilization).toBe(0.95);
    const { lag } = fakeLag();
    const off = new OverloadGuard({ ...DEFAULT_OVERLOAD, maxUtilization: 1 }, lag, () => 0);
    guards.push(off);
    for (let i = 0; i < 20; i++) {
      lag.utilization = 1;
      lag.windows++;
      expect(off.check()).toBeUndefined();
    }
    expect(parseOverload({ maxUtilization: 1 }, 'overload', [])).toMatchObject({ maxUtilization: 1 });
    expect(parseOverload({}, 'overload', [])).toMatchObject({ maxUtilization: 0.95 });
  });

  it('exempts the configured paths', () => {
    const { lag } = fakeLag();
    const g = new OverloadGuard({ ...DEFAULT_OVERLOAD, exemptPaths: ['/livez'] }, lag);
    guards.push(g);
    expect([g.exempt('/livez'), g.exempt('/other')]).toEqual([true, false]);
  });

  it('parses its options like the inbound.overload section', () => {
    const issues: { path: string; message: string }[] = [];
    expect(parseOverload(true, 'overload', issues)).toBe(DEFAULT_OVERLOAD);
    expect(parseOverload(false, 'overload', issues)).toBe(false);
    expect(
      parseOverload(
        { maxEventLoopDelay: '20ms', retryAfter: '2s', maxUtilization: 0.95 },
        'overload',
        issues,
      ),
    ).toEqual({ maxEventLoopDelayMs: 20, maxUtilization: 0.95, retryAfterMs: 2000, exemptPaths: [] });
    expect(issues).toEqual([]);
    parseOverload({ maxEventLoopDelay: 0, maxUtilization: 2, extra: 1 }, 'overload', issues);
    expect(issues.map((i) => i.path).sort()).toEqual([
      'overload.extra',
      'overload.maxEventLoopDelay',
      'overload.maxUtilization',
    ]);
  });
});
