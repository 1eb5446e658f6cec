import type { ServerResponse } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { refusedPort } from '../../../test/helpers/http.js';
import type { MeshFetch } from '../src/index.js';
import { causeCode, Rig } from './resilience-helpers.js';

interface LoadResult {
  ok: number;
  failed: Array<string | undefined>;
  statuses: Map<number, number>;
}

/** Runs `total` GETs with `concurrency` workers; `onProgress(done)` may inject a fault. */
async function load(
  fetch: MeshFetch,
  total: number,
  concurrency: number,
  onProgress?: (done: number) => Promise<void> | void,
): Promise<LoadResult> {
  const result: LoadResult = { ok: 0, failed: [], statuses: new Map() };
  let started = 0;
  let done = 0;
  const worker = async () => {
    while (started < total) {
      started++;
      try {
        const res = await fetch('http://svc/');
        await res.arrayBuffer();
        result.statuses.set(res.status, (result.statuses.get(res.status) ?? 0) + 1);
        if (res.status === 200) result.ok++;
        else result.failed.push(`status ${res.status}`);
      } catch (err) {
        result.failed.push(causeCode(err) ?? String(err));
      }
      done++;
      await onProgress?.(done);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return result;
}

const ok = (_req: unknown, res: ServerResponse) => res.end('ok');

describe('fault tests on real loopback servers (default config)', () => {
  const rig = new Rig();
  afterEach(() => rig.cleanup());

  it('survives a dead endpoint in a static list: ejected, zero failures, budget intact', async () => {
    const live = await Promise.all([rig.server(ok), rig.server(ok), rig.server(ok)]);
    const dead = `127.0.0.1:${await refusedPort()}`;
    const { fetch, mesh } = rig.mesh({ services: { svc: [...live.map((s) => s.address), dead] } });
    const ejections = rig.collect(mesh, 'ejection');
    const r = await load(fetch, 400, 20);
    expect(r.failed).toEqual([]);
    expect(r.ok).toBe(400);
    expect(ejections.filter((e) => e.ejected).map((e) => [e.endpoint, e.reason])).toEqual([
      [dead, 'consecutive_gateway_failure'],
    ]);
    expect(mesh.service('svc')?.retryBudget.exhausted).toBe(0);
  }, 60_000);

  // Istio's default retry policy does not retry resets: the requests in flight on an endpoint that
  // dies (at most the concurrency) reach the caller as MESHLET_ERR_RESET; everything after goes
  // elsewhere (connect failures are retried, then the endpoint is ejected). Opting into `reset`
  // retries those idempotent requests too: zero failures.
  it.each([
    ['default policy', undefined],
    ['on: reset', { on: ['connect-failure', 'refused-stream', 'reset', 503] }],
  ] as const)(
    'an endpoint killed under steady load (%s)',
    async (_name, retry) => {
      const servers = await Promise.all([rig.server(ok), rig.server(ok), rig.server(ok), rig.server(ok)]);
      const victim = servers[1];
      if (!victim) throw new Error('no victim');
      const endpoints = servers.map((s) => s.address);
      const { fetch, mesh } = rig.mesh({
        services: { svc: retry === undefined ? endpoints : { endpoints, retry } },
      });
      const ejections = rig.collect(mesh, 'ejection');
      const retries = rig.collect(mesh, 'retry');
      let killed = false;
      const r = await load(fetch, 1000, 20, async (done) => {
        if (!killed && done >= 200) {
          killed = true;
          await victim.close();
        }
      });
      expect(killed).toBe(true);
      if (retry === undefined) {
        expect(r.failed.every((f) => f === 'MESHLET_ERR_RESET')).toBe(true);
        expect(r.failed.length).toBeLessThan(20);
        expect(r.ok).toBe(1000 - r.failed.length);
      } else {
        expect(r.failed).toEqual([]);
        expect(r.ok).toBe(1000);
      }
      expect(ejections.some((e) => e.ejected && e.endpoint === victim.address)).toBe(true);
      expect(retries.every((x) => x.allowed)).toBe(true);
    },
    60_000,
  );

  // Two ways traffic leaves an endpoint that turns slow. Under round robin it keeps getting its
  // share until outlier detection ejects it (five per-try timeouts in a row); under the default
  // peak_ewma its latency estimate jumps at the first timeout and P2C stops choosing it, so it may
  // never reach five failures in a row — no ejection needed. Either way no request fails.
  it.each([
    ['round_robin', true],
    ['peak_ewma', false],
  ] as const)(
    'an endpoint that turns slow (%s): per-try timeouts move traffic away, no failures',
    async (lb, ejects) => {
      let slow = false;
      const held: ServerResponse[] = [];
      const fast = await Promise.all([rig.server(ok), rig.server(ok)]);
      const turning = await rig.server((_req, res) => {
        if (slow) held.push(res);
        else res.end('ok');
      });
      rig.defer(() => {
        for (const res of held) res.destroy();
      });
      const { fetch, mesh } = rig.mesh({
        services: {
          svc: {
            endpoints: [...fast.map((s) => s.address), turning.address],
            lb,
            perTryTimeout: '400ms',
            retry: { on: ['connect-failure', 'reset', 'per-try-timeout', 503] },
          },
        },
      });
      const ejections = rig.collect(mesh, 'ejection');
      let atSlow = 0;
      const r = await load(fetch, 600, 10, (done) => {
        if (done === 100) {
          slow = true;
          atSlow = turning.requests.length;
        }
      });
      expect(r.failed).toEqual([]);
      expect(r.ok).toBe(600);
      if (ejects) expect(ejections.some((e) => e.ejected && e.endpoint === turning.address)).toBe(true);
      // Once slow, it got a handful of attempts (up to the ejection, or until its estimate rose),
      // not its third of the remaining 500.
      expect(turning.requests.length - atSlow).toBeLessThan(60);
    },
    60_000,
  );

  it('all endpoints failing: fails fast once the breaker opens, no retry storm', async () => {
    const fail = (_req: unknown, res: ServerResponse) => {
      res.statusCode = 503;
      res.end('down');
    };
    const servers = await Promise.all([rig.server(fail), rig.server(fail), rig.server(fail)]);
    const { fetch, mesh } = rig.mesh({ services: { svc: servers.map((s) => s.address) } });
    const breaker = rig.collect(mesh, 'breaker');
    const r = await load(fetch, 400, 10);
    const serverSide = servers.reduce((n, s) => n + s.requests.length, 0);
    expect(r.ok).toBe(0);
    expect(breaker[0]?.state).toBe('open');
    const fastFailures = r.failed.filter((f) => f === 'MESHLET_ERR_CIRCUIT_OPEN').length;
    expect(fastFailures).toBeGreaterThan(300);
    // Without the breaker and budget, 400 requests × 3 attempts = 1200 upstream requests.
    expect(serverSide).toBeLessThan(100);
  }, 60_000);
});
