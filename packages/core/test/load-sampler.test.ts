import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  decodeOrcaLoadReport,
  LoadSampler,
  type LoadSources,
  MAX_WINDOW_INTERVALS,
  parseCpuMax,
  parseMemoryMax,
  parseOrcaHeader,
  parseProcCgroup,
  processLoad,
  processLoadSources,
  readCapacity,
} from '../src/index.js';

/** Scripted process counters on a fake clock: each test moves them by hand. */
function fakeSources(cpus = 4) {
  const s = {
    t: 1000,
    cpuUs: 0,
    active: 0,
    idle: 0,
    rss: 512 * 2 ** 20,
    delay: { p99: 3.2, max: 12.7 } as { p99: number; max: number } | undefined,
    started: 0,
    stopped: 0,
  };
  const sources: LoadSources = {
    now: () => s.t,
    cpuMicros: () => s.cpuUs,
    eventLoop: () => ({ active: s.active, idle: s.idle }),
    takeEventLoopDelay: () => s.delay,
    rssBytes: () => s.rss,
    cpus,
    memoryBytes: 2 * 2 ** 30,
    start: () => {
      s.started++;
    },
    stop: () => {
      s.stopped++;
    },
  };
  /** One interval of `ms` with the event loop busy `busy` of it and `cpuMs` of CPU time. */
  const advance = (ms: number, busy: number, cpuMs: number) => {
    s.t += ms;
    s.active += ms * busy;
    s.idle += ms * (1 - busy);
    s.cpuUs += cpuMs * 1000;
  };
  return { s, sources, advance };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('LoadSampler', () => {
  it('turns one interval of counters into a report and its pre-encoded headers', () => {
    const { s, sources, advance } = fakeSources(4);
    const load = new LoadSampler({ sources });
    for (let i = 0; i < 30; i++) load.requestStarted();
    for (let i = 0; i < 25; i++) load.requestFinished(i < 2);
    advance(1000, 0.8, 2000);
    const snap = load.sample();
    expect(snap.intervalMs).toBe(1000);
    expect(snap.eventLoopUtilization).toBe(0.8);
    expect(snap.cpuUtilization).toBe(0.5); // 2 s of CPU in 1 s over 4 CPUs
    expect(snap.memUtilization).toBe(0.25);
    expect([snap.rps, snap.eps, snap.inFlight, snap.inFlightPeak]).toEqual([25, 2, 5, 30]);
    expect([snap.eventLoopDelayP99Ms, snap.eventLoopDelayMaxMs]).toEqual([3.2, 12.7]);
    const r = snap.report;
    expect([r.applicationUtilization, r.cpuUtilization, r.memUtilization, r.rpsFractional, r.eps]).toEqual([
      0.8, 0.5, 0.25, 25, 2,
    ]);
    expect({ ...r.namedMetrics }).toEqual({ in_flight: 30, event_loop_delay_p99_ms: 3.2 });
    expect(snap.header).toBe(
      'TEXT cpu_utilization=0.5,mem_utilization=0.25,rps_fractional=25,eps=2,application_utilization=0.8,named_metrics.in_flight=30,named_metrics.event_loop_delay_p99_ms=3.2',
    );
    const parsed = parseOrcaHeader(snap.header);
    expect(parsed.ok && parsed.report).toEqual(r);
    const decoded = decodeOrcaLoadReport(snap.binary);
    expect(decoded.ok && decoded.report).toEqual(r);

    // The next interval measures only what happened in it; the peak restarts from those in flight.
    s.delay = undefined;
    advance(500, 0.1, 50);
    load.requestFinished();
    const next = load.sample();
    expect([next.rps, next.eps, next.inFlightPeak, next.inFlight]).toEqual([2, 0, 5, 4]);
    expect([next.eventLoopUtilization, next.cpuUtilization, next.eventLoopDelayP99Ms]).toEqual([
      0.1, 0.025, 0,
    ]);
  });

  it('carries application metrics, utilizations and an application utilization override', () => {
    const { sources, advance } = fakeSources();
    const load = new LoadSampler({ sources, builtinMetrics: false, format: 'json' });
    load.set('queue_depth', 12);
    load.set('db.pool/wait-ms', 3.5);
    load.setUtilization('pool', 0.75);
    load.setApplicationUtilization(0.9);
    advance(1000, 0.2, 10);
    let snap = load.sample();
    expect({ ...snap.report.namedMetrics }).toEqual({ queue_depth: 12, 'db.pool/wait-ms': 3.5 });
    expect({ ...snap.report.utilization }).toEqual({ pool: 0.75 });
    expect(snap.report.applicationUtilization).toBe(0.9);
    expect(snap.header.startsWith('JSON {')).toBe(true);
    load.delete('queue_depth');
    load.deleteUtilization('pool');
    load.setApplicationUtilization(undefined);
    advance(1000, 0.2, 10);
    snap = load.sample();
    expect({ ...snap.report.namedMetrics }).toEqual({ 'db.pool/wait-ms': 3.5 });
    // Back to the sampler's own: no request was in flight, so none of the loop's busy time was
    // requests' (the event-loop utilization is still measured).
    expect(snap.report.applicationUtilization).toBe(0);
    expect(snap.eventLoopUtilization).toBe(0.2);
  });

  it('reads the loop’s busy time at in-flight transitions from eventLoopActive when the sources have one', () => {
    const { s, sources } = fakeSources();
    let busy = 0;
    const load = new LoadSampler({ sources: { ...sources, eventLoopActive: () => busy } });
    load.requestStarted();
    s.t += 10;
    // eventLoop() says 10 ms busy; eventLoopActive 4 ms: the transitions read the latter.
    s.active += 10;
    busy += 4;
    load.requestFinished();
    s.t += 990;
    s.idle += 990;
    expect(load.sample().applicationUtilization).toBeCloseTo(4 / 1000, 4);
  });

  it('reads the process’ loop busy time as eventLoopUtilization() computes it', () => {
    const active = processLoadSources().eventLoopActive as () => number;
    const before = performance.eventLoopUtilization().active;
    const read = active();
    const after = performance.eventLoopUtilization().active;
    expect(before).toBeGreaterThan(0);
    expect(read).toBeGreaterThanOrEqual(before);
    expect(read).toBeLessThanOrEqual(after);
  });

  it('reports as application_utilization the loop’s busy time while requests are in flight, not its idle baseline', () => {
    const { s, sources, advance } = fakeSources();
    const load = new LoadSampler({ sources });
    // 100 ms with nothing in flight: timers, GC, the sampler — 5% busy.
    advance(100, 0.05, 5);
    // Ten requests of 2 ms of loop each, one after the other, 50 ms apart.
    for (let i = 0; i < 10; i++) {
      load.requestStarted();
      s.t += 2;
      s.active += 2;
      load.requestFinished();
      advance(48, 0.05, 2);
    }
    // A request in flight across the sample: its busy time so far counts in this window.
    load.requestStarted();
    s.t += 3;
    s.active += 3;
    const snap = load.sample();
    const seconds = (100 + 500 + 3) / 1000;
    expect(snap.rps).toBeCloseTo(10 / seconds, 6);
    // 23 ms of request work in 603 ms, where the loop was busy 23 + 29 ms in all.
    expect(snap.applicationUtilization).toBeCloseTo(23 / 603, 4);
    expect(snap.eventLoopUtilization).toBeCloseTo(52 / 603, 4);
    expect(snap.report.applicationUtilization).toBe(snap.applicationUtilization);
    // A58's weight, qps / utilization, is then 1000 / (ms of loop per request) — the server's
    // capacity — where the whole event-loop utilization would make it 40% lower and would fall
    // with the traffic the server gets.
    const weight = snap.report.rpsFractional / snap.report.applicationUtilization;
    expect(weight).toBeGreaterThan(10 / (23 / 1000) - 1);
    expect(weight).toBeLessThan(10 / (23 / 1000) + 1);
    // The request still in flight carries its 3 ms into the next window.
    s.t += 97;
    s.active += 7;
    load.requestFinished();
    advance(903, 0, 0);
    const next = load.sample();
    expect(next.applicationUtilization).toBeCloseTo(7 / 1000, 4);
    expect(next.rps).toBeCloseTo(1, 6);
  });

  it('stretches the report window over intervals that finish nothing, so a rarely called server reports its rate, not 0', () => {
    const { sources, advance } = fakeSources();
    const load = new LoadSampler({ sources, intervalMs: 100 });
    const call = () => {
      load.requestStarted();
      advance(1, 1, 1);
      load.requestFinished();
    };
    // One call every 400 ms; samples every 100 ms.
    call();
    advance(99, 0, 0);
    let snap = load.sample();
    expect(snap.rps).toBeCloseTo(10, 6); // 1 in 100 ms
    const reports: number[] = [];
    for (let k = 0; k < 3; k++) {
      for (let i = 0; i < 3; i++) {
        advance(100, 0, 0);
        reports.push(load.sample().report.rpsFractional); // nothing finished: the last window's
      }
      call();
      advance(99, 0, 0);
      snap = load.sample();
      reports.push(snap.report.rpsFractional);
    }
    expect(reports).toEqual([10, 10, 10, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5]);
    expect(reports.every((r) => r > 0)).toBe(true);
    expect(snap.applicationUtilization).toBeCloseTo(1 / 400, 6);
    // A quick call's share of a window keeps its precision, and is never 0 with requests finished
    // (A58 clients read utilization 0 as no report).
    load.requestStarted();
    advance(0.05, 1, 0);
    load.requestFinished();
    advance(99.95, 0, 0);
    expect(load.sample().report.applicationUtilization).toBe(0.0005);
    load.requestStarted();
    load.requestFinished();
    advance(100, 0.01, 0);
    expect(load.sample().report.applicationUtilization).toBe(0.000001);
    // An idle server: after MAX_WINDOW_INTERVALS empty intervals its report says 0.
    for (let i = 0; i < MAX_WINDOW_INTERVALS; i++) {
      advance(100, 0.01, 0);
      snap = load.sample();
    }
    expect([snap.rps, snap.applicationUtilization]).toEqual([0, 0]);
  });

  it('rejects bad metric names and values with a clear error', () => {
    const load = new LoadSampler({
      sources: fakeSources().sources,
      limits: { maxEntries: 4, maxHeaderBytes: 4096, maxNameLength: 128 },
    });
    expect(() => load.set('a b', 1)).toThrow(/load metric name/);
    expect(() => load.set('a=b', 1)).toThrow(/load metric name/);
    expect(() => load.set('', 1)).toThrow(/load metric name/);
    expect(() => load.set('q', Number.NaN)).toThrow(/q must be a finite number/);
    expect(() => load.set('in_flight', 1)).toThrow(/sampler's own/);
    expect(() => load.setUtilization('u', 1.5)).toThrow(/within 0..1/);
    expect(() => load.setApplicationUtilization(-1)).toThrow(/>= 0/);
    load.set('a', 1);
    load.set('b', 2);
    expect(() => load.set('c', 3)).toThrow(/too many load metrics/);
    load.set('a', 5); // replacing one is fine
    expect(() => new LoadSampler({ intervalMs: 1 })).toThrow(/intervalMs/);
  });

  it('counts shed requests as failures and in shed_rps, and encodes other forms and the overloaded report on demand', () => {
    const { sources, advance } = fakeSources(4);
    const load = new LoadSampler({ sources });
    for (let i = 0; i < 10; i++) load.requestStarted();
    for (let i = 0; i < 10; i++) load.requestFinished(false);
    for (let i = 0; i < 5; i++) load.requestShed();
    advance(1000, 0.5, 100);
    const seen: number[] = [];
    const remove = load.onSample((snap) => seen.push(snap.rps));
    load.onSample(() => {
      throw new Error('a bad listener');
    });
    const snap = load.sample();
    expect(seen).toEqual([15]);
    expect([snap.rps, snap.eps, snap.shedRps, snap.inFlight]).toEqual([15, 5, 5, 0]);
    expect(snap.report.namedMetrics.shed_rps).toBe(5);
    expect(load.header('text')).toBe(snap.header);
    const json = load.header('json');
    expect(json.startsWith('JSON {')).toBe(true);
    expect(load.header('json')).toBe(json); // kept for the interval
    const bin = load.header('binary');
    for (const h of [json, bin]) {
      const p = parseOrcaHeader(h);
      expect(p.ok && p.report).toEqual(snap.report);
    }
    // A shed answer's report says the loop is saturated, whatever the interval measured.
    const over = parseOrcaHeader(load.overloaded('text'));
    expect(over.ok && over.report.applicationUtilization).toBe(1);
    expect(over.ok && over.report.rpsFractional).toBe(15);
    expect(decodeOrcaLoadReport(load.overloadedBinary())).toMatchObject({
      ok: true,
      report: { applicationUtilization: 1 },
    });
    remove();
    advance(1000, 0.5, 100);
    const next = load.sample();
    expect(seen).toEqual([15]);
    expect(next.shedRps).toBe(0);
    expect('shed_rps' in next.report.namedMetrics).toBe(false);
    expect(load.header('json')).not.toBe(json);
    expect(() => load.set('shed_rps', 1)).toThrow(/sampler's own/);
  });

  it('samples on an unref’d timer between start and stop', () => {
    vi.useFakeTimers();
    const { s, sources, advance } = fakeSources();
    const load = new LoadSampler({ sources, intervalMs: 250 });
    expect(load.current.intervalMs).toBe(0);
    load.start();
    load.start(); // idempotent
    expect(s.started).toBe(1);
    expect(load.running).toBe(true);
    load.requestStarted();
    load.requestFinished();
    advance(250, 0.5, 0);
    vi.advanceTimersByTime(250);
    expect(load.current.rps).toBe(4);
    expect(load.current.eventLoopUtilization).toBe(0.5);
    load.stop();
    expect(s.stopped).toBe(1);
    expect(load.running).toBe(false);
    advance(250, 1, 0);
    vi.advanceTimersByTime(1000);
    expect(load.current.eventLoopUtilization).toBe(0.5);
  });

  it('reads real process counters', async () => {
    const load = new LoadSampler({ sources: processLoadSources(10) }).start();
    const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));
    try {
      // The delay monitor records from its second timer run on, and a loaded machine may delay
      // that run: block the loop, let the monitor run, and look again (a few times at most).
      let best = { elu: 0, cpu: 0, mem: 0, delay: 0 };
      for (let i = 0; i < 5 && best.delay <= 20; i++) {
        await tick(15);
        const end = performance.now() + 60;
        while (performance.now() < end) {
          // block the event loop for 60 ms
        }
        await tick(1);
        const snap = load.sample();
        best = {
          elu: Math.max(best.elu, snap.eventLoopUtilization),
          cpu: Math.max(best.cpu, snap.cpuUtilization),
          mem: Math.max(best.mem, snap.memUtilization),
          delay: Math.max(best.delay, snap.eventLoopDelayMaxMs),
        };
      }
      expect(best.elu).toBeGreaterThan(0.3);
      expect(best.cpu).toBeGreaterThan(0);
      expect(best.mem).toBeGreaterThan(0);
      expect(best.delay).toBeGreaterThan(20);
    } finally {
      load.stop();
    }
  });
});

describe('processLoad', () => {
  it('is one running sampler per process, created on first use', () => {
    const load = processLoad({ intervalMs: 500 });
    try {
      expect(load.running).toBe(true);
      expect(load.intervalMs).toBe(500);
      expect(processLoad({ intervalMs: 2000 })).toBe(load); // options apply to the first call only
    } finally {
      load.stop();
    }
  });
});

describe('process capacity (cgroup v2)', () => {
  it('parses cpu.max, memory.max and /proc/self/cgroup', () => {
    expect(parseCpuMax('200000 100000\n')).toBe(2);
    expect(parseCpuMax('50000 100000')).toBe(0.5);
    expect(parseCpuMax('max 100000')).toBe(Number.POSITIVE_INFINITY);
    expect(parseCpuMax('garbage')).toBeNaN();
    expect(parseMemoryMax('max\n')).toBe(Number.POSITIVE_INFINITY);
    expect(parseMemoryMax('268435456')).toBe(268435456);
    expect(parseProcCgroup('0::/kubepods/pod1/ctr\n')).toBe('/kubepods/pod1/ctr');
    expect(parseProcCgroup('12:memory:/x\n1:cpu:/\n')).toBeUndefined();
  });

  it('takes the smallest limit along the cgroup path, and the host count without one', () => {
    const files: Record<string, string> = {
      '/proc/self/cgroup': '0::/kubepods/pod1/ctr\n',
      '/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max': 'max 100000',
      '/sys/fs/cgroup/kubepods/pod1/cpu.max': '50000 100000',
      '/sys/fs/cgroup/kubepods/cpu.max': '400000 100000',
      '/sys/fs/cgroup/kubepods/pod1/ctr/memory.max': '268435456',
    };
    const c = readCapacity((p) => files[p]);
    expect(c.cpus).toBe(0.5);
    expect(c.memoryBytes).toBe(268435456);
    expect(c.source).toEqual({ cpus: 'cgroup', memory: 'cgroup' });
    const host = readCapacity(() => undefined);
    expect(host.cpus).toBeGreaterThanOrEqual(1);
    expect(host.source).toEqual({ cpus: 'host', memory: 'host' });
  });
});
