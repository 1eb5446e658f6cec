import { once } from 'node:events';
import type { ServerResponse } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { causeCode, Rig, until } from './resilience-helpers.js';

/** Responses the test releases when it chooses. */
class Gate {
  readonly waiting: Array<() => void> = [];
  #open = false;
  hold(fn: () => void): void {
    if (this.#open) fn();
    else this.waiting.push(fn);
  }
  releaseAll(): void {
    for (const fn of this.waiting.splice(0)) fn();
  }
  /** Releases everything held and lets later requests through at once. */
  open(): void {
    this.#open = true;
    this.releaseAll();
  }
}

function status(res: ServerResponse, code: number, body = '') {
  res.statusCode = code;
  res.end(body);
}

describe('circuit breaker in the fetch pipeline', () => {
  const rig = new Rig();
  afterEach(() => rig.cleanup());

  it('opens on a failing service, then fails fast without touching the server', async () => {
    // 502: a gateway error (an endpoint failure), which the default policy does not retry.
    const s = await rig.server((_req, res) => status(res, 502));
    const { fetch, mesh } = rig.mesh({
      services: {
        svc: {
          endpoints: [s.address],
          outlierDetection: false,
          circuitBreaker: { volumeThreshold: 5, resetTimeout: '1m' },
        },
      },
    });
    const states = rig.collect(mesh, 'breaker');
    const outcomes = rig.collect(mesh, 'request');
    for (let i = 0; i < 5; i++) expect((await fetch('http://svc/')).status).toBe(502);
    expect(states.map((e) => e.state)).toEqual(['open']);
    for (let i = 0; i < 10; i++) {
      const err = await fetch('http://svc/').catch((e: unknown) => e);
      expect(causeCode(err)).toBe('MESHLET_ERR_CIRCUIT_OPEN');
    }
    expect(s.requests).toHaveLength(5);
    expect(outcomes.filter((o) => o.outcome === 'circuit_open')).toHaveLength(10);
    const snap = JSON.parse(JSON.stringify(mesh.snapshot()));
    expect(snap.services.svc.resilience.breaker).toMatchObject({ state: 'open', rejected: 10 });
  });

  it('ignores 4xx responses and caller cancellations', async () => {
    const gate = new Gate();
    const s = await rig.server((req, res) => {
      if (req.url === '/hang') gate.hold(() => status(res, 200));
      else status(res, 404);
    });
    rig.defer(() => gate.open());
    const { fetch, mesh } = rig.mesh({
      services: {
        svc: { endpoints: [s.address], outlierDetection: false, circuitBreaker: { volumeThreshold: 5 } },
      },
    });
    for (let i = 0; i < 20; i++) expect((await fetch('http://svc/missing')).status).toBe(404);
    for (let i = 0; i < 10; i++) {
      const ac = new AbortController();
      const p = fetch('http://svc/hang', { signal: ac.signal }).catch((e: unknown) => e);
      await until(() => gate.waiting.length > 0, 'the request to arrive');
      ac.abort();
      expect((await p) as Error).toMatchObject({ name: 'AbortError' });
      gate.waiting.splice(0);
    }
    expect(mesh.service('svc')?.resilience.breaker?.state).toBe('closed');
    expect((await fetch('http://svc/missing')).status).toBe(404);
  });

  it('half-open lets exactly one probe through under concurrency, and its success closes the breaker', async () => {
    let mode: 'fail' | 'gated' = 'fail';
    const gate = new Gate();
    const s = await rig.server((_req, res) => {
      if (mode === 'fail') status(res, 502);
      else gate.hold(() => status(res, 200, 'ok'));
    });
    rig.defer(() => gate.open());
    const { fetch, mesh } = rig.mesh({
      services: {
        svc: {
          endpoints: [s.address],
          outlierDetection: false,
          circuitBreaker: { volumeThreshold: 3, resetTimeout: '200ms' },
        },
      },
    });
    const states = rig.collect(mesh, 'breaker');
    for (let i = 0; i < 3; i++) await fetch('http://svc/');
    expect(states.map((e) => e.state)).toEqual(['open']);
    await until(() => states.length === 2, 'half-open');
    expect(states[1]?.state).toBe('half_open');
    mode = 'gated';
    const before = s.requests.length;
    const results = Array.from({ length: 20 }, () =>
      fetch('http://svc/').then(
        async (r) => r.text(),
        (e: unknown) => causeCode(e),
      ),
    );
    await until(() => gate.waiting.length === 1, 'the probe to arrive');
    gate.releaseAll();
    const all = await Promise.all(results);
    expect(all.filter((r) => r === 'ok')).toHaveLength(1);
    expect(all.filter((r) => r === 'MESHLET_ERR_CIRCUIT_OPEN')).toHaveLength(19);
    expect(s.requests.length - before).toBe(1);
    await until(() => states.length === 3, 'closed');
    expect(states[2]?.state).toBe('closed');
    mode = 'fail';
    expect((await fetch('http://svc/')).status).toBe(502);
  });

  it('never retries into an open breaker', async () => {
    const gate = new Gate();
    const s = await rig.server((req, res) => {
      if (req.url === '/slow') gate.hold(() => status(res, 503));
      else status(res, 502);
    });
    rig.defer(() => gate.open());
    const { fetch, mesh } = rig.mesh({
      services: {
        svc: {
          endpoints: [s.address],
          outlierDetection: false,
          circuitBreaker: { volumeThreshold: 3, resetTimeout: '1m' },
        },
      },
    });
    const retries = rig.collect(mesh, 'retry');
    const slow = fetch('http://svc/slow');
    await until(() => gate.waiting.length === 1, 'the slow request');
    // The slow attempt counts as a call: two fast failures of three calls exceed 50%.
    for (let i = 0; i < 2; i++) expect((await fetch('http://svc/fast')).status).toBe(502);
    await until(() => mesh.service('svc')?.resilience.breaker?.state === 'open', 'the breaker to open');
    gate.releaseAll();
    expect((await slow).status).toBe(503);
    expect(retries).toMatchObject([{ reason: '503', allowed: false, denial: 'circuit_open' }]);
    expect(s.requests.filter((r) => r.url === '/slow')).toHaveLength(1);
  });
});

describe('thresholds in the fetch pipeline', () => {
  const rig = new Rig();
  afterEach(() => rig.cleanup());

  it('fails fast with MESHLET_ERR_OVERLOADED past maxRequests', async () => {
    const gate = new Gate();
    const s = await rig.server((_req, res) => gate.hold(() => status(res, 200, 'ok')));
    rig.defer(() => gate.open());
    const { fetch } = rig.mesh({
      services: { svc: { endpoints: [s.address], thresholds: { maxRequests: 2 } } },
    });
    const a = fetch('http://svc/');
    const b = fetch('http://svc/');
    await until(() => gate.waiting.length === 2, 'two requests in flight');
    const err = await fetch('http://svc/').catch((e: unknown) => e);
    expect(causeCode(err)).toBe('MESHLET_ERR_OVERLOADED');
    expect((err as { cause?: { details?: unknown } }).cause?.details).toMatchObject({
      threshold: 'max_requests',
      limit: 2,
    });
    gate.open();
    expect(await (await a).text()).toBe('ok');
    expect(await (await b).text()).toBe('ok');
    expect(s.requests).toHaveLength(2);
    expect(await (await fetch('http://svc/')).text()).toBe('ok');
  });

  it('caps connections with maxConnections and fails fast past maxPendingRequests', async () => {
    const gate = new Gate();
    const s = await rig.server((_req, res) => gate.hold(() => status(res, 200, 'ok')));
    let sockets = 0;
    s.server.on('connection', () => sockets++);
    rig.defer(() => gate.open());
    const { fetch, mesh } = rig.mesh({
      services: { svc: { endpoints: [s.address], thresholds: { maxConnections: 1, maxPendingRequests: 1 } } },
    });
    const a = fetch('http://svc/');
    await until(() => gate.waiting.length === 1, 'the first request');
    const b = fetch('http://svc/'); // queued behind the only connection
    await until(() => mesh.service('svc')?.resilience.thresholds.pending === 1, 'a pending attempt');
    const err = await fetch('http://svc/').catch((e: unknown) => e);
    expect(causeCode(err)).toBe('MESHLET_ERR_OVERLOADED');
    gate.releaseAll();
    expect((await a).status).toBe(200);
    await until(() => gate.waiting.length === 1, 'the queued request');
    gate.releaseAll();
    expect((await b).status).toBe(200);
    expect(sockets).toBe(1);
    expect(mesh.service('svc')?.resilience.thresholds.stats()).toMatchObject({
      requests: 0,
      pending: 0,
      retries: 0,
    });
  });

  it('bounds retries in flight with maxRetries', async () => {
    const gate = new Gate();
    let a503 = false;
    const s = await rig.server((req, res) => {
      // /a: 503 then a retry that stays in flight; /b: 503 whose retry finds no slot.
      if (req.url === '/a' && !a503) {
        a503 = true;
        status(res, 503);
      } else if (req.url === '/a') gate.hold(() => status(res, 200, 'ok'));
      else status(res, 503);
    });
    rig.defer(() => gate.open());
    const { fetch, mesh } = rig.mesh({
      services: { svc: { endpoints: [s.address], outlierDetection: false, thresholds: { maxRetries: 1 } } },
    });
    const retries = rig.collect(mesh, 'retry');
    const a = fetch('http://svc/a');
    await until(() => gate.waiting.length === 1, 'the first retry in flight');
    expect((await fetch('http://svc/b')).status).toBe(503);
    expect(retries.map((r) => r.denial)).toEqual([undefined, 'max_retries']);
    gate.releaseAll();
    expect((await a).status).toBe(200);
  });
});

describe('hedged requests', () => {
  const rig = new Rig();
  afterEach(() => rig.cleanup());

  it('sends a hedge after the delay, takes the first answer and cancels the other', async () => {
    let n = 0;
    let firstClosed: Promise<unknown> | undefined;
    const handler = (_req: unknown, res: ServerResponse) => {
      if (n++ === 0) {
        firstClosed = once(res, 'close');
        return; // the first copy hangs
      }
      status(res, 200, 'hedge');
    };
    const a = await rig.server(handler);
    const b = await rig.server(handler);
    const { fetch, mesh } = rig.mesh({
      services: { svc: { endpoints: [a.address, b.address], hedge: { delay: '50ms' } } },
    });
    const attempts = rig.collect(mesh, 'attempt');
    const res = await fetch('http://svc/');
    expect(await res.text()).toBe('hedge');
    await firstClosed;
    await until(() => attempts.length === 2, 'both attempts to end');
    expect(attempts.map((x) => x.outcome).sort()).toEqual(['cancelled', 'success']);
    expect(mesh.service('svc')?.resilience.breaker?.state).toBe('closed');
  });

  it('does not hedge non-idempotent requests', async () => {
    const gate = new Gate();
    const s = await rig.server((_req, res) => gate.hold(() => status(res, 200, 'ok')));
    rig.defer(() => gate.open());
    const { fetch, mesh } = rig.mesh({
      services: { svc: { endpoints: [s.address], hedge: { delay: '10ms' } } },
    });
    const p = fetch('http://svc/', { method: 'POST', body: 'x' });
    await until(() => gate.waiting.length === 1, 'the request');
    // The hedge delay passes several times over while the request is held (a timer, not a sleep).
    const hedges = rig.collect(mesh, 'attempt');
    await new Promise((r) => setTimeout(r, 50));
    expect(s.requests).toHaveLength(1);
    gate.open();
    expect(await (await p).text()).toBe('ok');
    expect(hedges).toHaveLength(1);
    expect(s.requests).toHaveLength(1);
  });

  it('fails only when every copy failed', async () => {
    const s = await rig.server((req) => req.socket.destroy());
    const { fetch, mesh } = rig.mesh({
      services: {
        svc: {
          endpoints: [s.address],
          hedge: { delay: '10ms', maxHedges: 2 },
          retry: false,
          outlierDetection: false,
        },
      },
    });
    const requests = rig.collect(mesh, 'request');
    const err = await fetch('http://svc/').catch((e: unknown) => e);
    expect(causeCode(err)).toBe('MESHLET_ERR_RESET');
    expect(requests.length).toBeGreaterThanOrEqual(1);
  });
});
