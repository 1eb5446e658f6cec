import { runWithDeadline } from '@meshlet/core';
import type { RequestInit } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { refusedPort } from '../../../test/helpers/http.js';
import { classifyError } from '../src/index.js';
import { causeCode, Rig } from './resilience-helpers.js';

/**
 * Retry conditions on real loopback servers: each condition is provoked for real and the
 * servers count what they received.
 */
describe('retries', () => {
  const rig = new Rig();
  afterEach(() => rig.cleanup());

  /**
   * A two-endpoint service where the first request to arrive (at either endpoint) gets `bad` and
   * every later one `ok`: the first attempt always fails, a retry always succeeds.
   */
  async function pair(bad: Parameters<Rig['server']>[0], policy: Record<string, unknown> = {}) {
    let seen = 0;
    const handler: Parameters<Rig['server']>[0] = (req, res) => {
      if (seen++ === 0) bad(req, res);
      else res.end('ok');
    };
    const b = await rig.server(handler);
    const g = await rig.server(handler);
    const { fetch, mesh } = rig.mesh({
      services: { svc: { endpoints: [b.address, g.address], outlierDetection: false, ...policy } },
    });
    const retries = rig.collect(mesh, 'retry');
    return { fetch, retries, mesh, total: () => b.requests.length + g.requests.length };
  }

  it('retries connect failures by default, for any method (the request was never sent)', async () => {
    const dead = await refusedPort();
    const g = await rig.server((_req, res) => res.end('ok'));
    const { fetch, mesh } = rig.mesh({
      services: {
        svc: { endpoints: [`127.0.0.1:${dead}`, g.address], lb: 'round_robin', outlierDetection: false },
      },
    });
    const retries = rig.collect(mesh, 'retry');
    for (let i = 0; i < 10; i++) {
      const res = await fetch('http://svc/x', { method: 'POST', body: 'payload' });
      expect(await res.text()).toBe('ok');
    }
    // Round robin sends about every other first attempt to the dead endpoint.
    expect(retries.length).toBeGreaterThanOrEqual(3);
    expect(new Set(retries.map((r) => `${r.reason}:${r.allowed}`))).toEqual(
      new Set(['connect-failure:true']),
    );
    expect(g.requests).toHaveLength(10);
  });

  it.each(['random', 'peak_ewma'])(
    'a retry avoids every endpoint already tried, not only the last one (%s)',
    async (lb) => {
      // Two endpoints answer 503, one answers 200. With 2 retries, a request must reach the healthy
      // one: its second retry may not go back to the endpoint of its first attempt (peak_ewma even
      // prefers the fast-failing endpoints).
      const busy = (_req: unknown, res: { statusCode: number; end: (b: string) => void }) => {
        res.statusCode = 503;
        res.end('busy');
      };
      const a = await rig.server(busy);
      const b = await rig.server(busy);
      const g = await rig.server((_req, res) => res.end('ok'));
      const { fetch } = rig.mesh({
        services: {
          svc: {
            endpoints: [a.address, b.address, g.address],
            lb,
            outlierDetection: false,
            circuitBreaker: false,
            retry: { attempts: 2, budget: { percent: 100, minPerSecond: 1000 } },
          },
        },
      });
      for (let i = 0; i < 60; i++) expect((await fetch('http://svc/x')).status).toBe(200);
      expect(g.requests).toHaveLength(60);
      // No request visited a busy endpoint twice: at most 2 of its 3 attempts went to busy ones.
      expect(a.requests.length + b.requests.length).toBeLessThanOrEqual(120);
    },
  );

  it('tells the next hop its deadline (x-meshlet-deadline-ms): the timeout, shortened by an inbound deadline', async () => {
    const g = await rig.server((_req, res) => res.end('ok'));
    const { fetch } = rig.mesh({
      services: {
        timed: { endpoints: [g.address], timeout: '2s' },
        untimed: { endpoints: [g.address], timeout: 0 },
      },
    });
    await (await fetch('http://timed/a')).text();
    await (await fetch('http://untimed/b')).text();
    await runWithDeadline(Date.now() + 500, async () => {
      await (await fetch('http://timed/c')).text();
    });
    const sent = g.requests.map((r) => r.headers['x-meshlet-deadline-ms']);
    expect(sent[0]).toBe('2000');
    expect(sent[1]).toBeUndefined();
    expect(Number(sent[2])).toBeGreaterThan(0);
    expect(Number(sent[2])).toBeLessThanOrEqual(500);
  });

  it("does not retry a reset by default (Istio's default policy), and does with on: reset", async () => {
    const plain = await pair((req) => req.socket.destroy());
    const err = await plain.fetch('http://svc/').catch((e: unknown) => e);
    expect(causeCode(err)).toBe('MESHLET_ERR_RESET');
    expect(plain.retries).toHaveLength(0);
    expect(plain.total()).toBe(1);
    const { fetch, total, retries } = await pair((req) => req.socket.destroy(), {
      retry: { on: ['connect-failure', 'reset'] },
    });
    expect(await (await fetch('http://svc/')).text()).toBe('ok');
    expect(retries.map((r) => r.reason)).toEqual(['reset']);
    expect(total()).toBe(2);
  });

  it('does not retry a reset POST (it may have been processed)', async () => {
    const { fetch, total, retries } = await pair((req) => req.socket.destroy(), {
      retry: { on: ['connect-failure', 'reset'] },
    });
    const err = await fetch('http://svc/', { method: 'POST', body: 'x' }).catch((e: unknown) => e);
    expect(causeCode(err)).toBe('MESHLET_ERR_RESET');
    expect(retries).toHaveLength(0);
    expect(total()).toBe(1);
  });

  it('retries 503 by default, not 500', async () => {
    const a = await pair((_req, res) => {
      res.statusCode = 503;
      res.end('busy');
    });
    expect((await a.fetch('http://svc/')).status).toBe(200);
    expect(a.retries.map((r) => r.reason)).toEqual(['503']);

    const b = await pair((_req, res) => {
      res.statusCode = 500;
      res.end('boom');
    });
    const res = await b.fetch('http://svc/');
    expect(res.status).toBe(500);
    expect(await res.text()).toBe('boom');
    expect(b.retries).toHaveLength(0);
    expect(b.total()).toBe(1);
  });

  it('retries any 5xx with on: 5xx, and 502/503/504 only with on: gateway-error', async () => {
    const five = await pair(
      (_req, res) => {
        res.statusCode = 500;
        res.end();
      },
      { retry: { on: ['5xx'] } },
    );
    expect((await five.fetch('http://svc/')).status).toBe(200);
    expect(five.retries.map((r) => r.reason)).toEqual(['5xx']);

    const gw = await pair(
      (_req, res) => {
        res.statusCode = 502;
        res.end();
      },
      { retry: { on: 'gateway-error' } },
    );
    expect((await gw.fetch('http://svc/')).status).toBe(200);
    expect(gw.retries.map((r) => r.reason)).toEqual(['gateway-error']);
    const other = await pair(
      (_req, res) => {
        res.statusCode = 501;
        res.end();
      },
      { retry: { on: 'gateway-error' } },
    );
    expect((await other.fetch('http://svc/')).status).toBe(501);
    expect(other.retries).toHaveLength(0);
  });

  it('retries listed status codes (retriable-status-codes), including 4xx', async () => {
    const { fetch, retries } = await pair(
      (_req, res) => {
        res.statusCode = 409;
        res.end();
      },
      { retry: { on: [409] } },
    );
    expect((await fetch('http://svc/')).status).toBe(200);
    expect(retries.map((r) => r.reason)).toEqual(['409']);
  });

  it('retries on per-try timeout when asked', async () => {
    // The first request is never answered; the second has a whole per-try timeout for a new
    // connection and its answer (100 ms was too short on a loaded 2-core machine).
    const { fetch, total, retries } = await pair(() => {}, {
      perTryTimeout: '500ms',
      retry: { on: ['per-try-timeout'] },
    });
    expect(await (await fetch('http://svc/')).text()).toBe('ok');
    expect(retries.map((r) => r.reason)).toEqual(['per-try-timeout']);
    expect(total()).toBe(2);
  });

  it('does not retry non-idempotent methods on 503 unless opted in', async () => {
    const busy = (_req: unknown, res: import('node:http').ServerResponse) => {
      res.statusCode = 503;
      res.end();
    };
    const a = await pair(busy);
    expect((await a.fetch('http://svc/', { method: 'POST', body: 'x' })).status).toBe(503);
    expect(a.total()).toBe(1);

    const b = await pair(busy, { retry: { nonIdempotent: true } });
    expect((await b.fetch('http://svc/', { method: 'POST', body: 'x' })).status).toBe(200);
    expect(b.total()).toBe(2);
  });

  it('replays a buffered body on retry', async () => {
    const bodies: string[] = [];
    const collect =
      (status: number) =>
      (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
        let text = '';
        req.on('data', (c) => {
          text += c;
        });
        req.on('end', () => {
          bodies.push(text);
          res.statusCode = status;
          res.end();
        });
      };
    let n = 0;
    const first503 = (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) =>
      collect(n++ === 0 ? 503 : 200)(req, res);
    const b = await rig.server(first503);
    const g = await rig.server(first503);
    const { fetch } = rig.mesh({ services: { svc: { endpoints: [b.address, g.address] } } });
    expect((await fetch('http://svc/', { method: 'PUT', body: 'same-body' })).status).toBe(200);
    expect(bodies).toEqual(['same-body', 'same-body']);
  });

  it('retries a streamed body only while it fits retry.bufferLimit', async () => {
    const respond = (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
      req.resume();
      req.on('end', () => {
        res.statusCode = 503;
        res.end();
      });
    };
    /** PUTs a 5-byte streamed body through a service whose retry buffer holds `limit` bytes. */
    const put = async (limit: number) => {
      const p = await pair(respond, { retry: { bufferLimit: limit } });
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(new TextEncoder().encode('chunk'));
          c.close();
        },
      });
      const res = await p.fetch('http://svc/', { method: 'PUT', body, duplex: 'half' } as RequestInit);
      return { ...p, res };
    };
    const small = await put(8);
    expect(small.res.status).toBe(200);
    expect(small.retries.map((r) => r.reason)).toEqual(['503']);
    const big = await put(4);
    expect(big.res.status).toBe(503);
    expect(big.retries).toHaveLength(0);
    expect(big.total()).toBe(1);
  });

  it('honours Retry-After: a delay past the deadline refuses the retry', async () => {
    const { fetch, retries } = await pair(
      (_req, res) => {
        res.statusCode = 503;
        res.setHeader('retry-after', '5');
        res.end();
      },
      { timeout: '1s' },
    );
    expect((await fetch('http://svc/')).status).toBe(503);
    expect(retries).toMatchObject([{ reason: '503', allowed: false, denial: 'deadline' }]);
  });

  it('stops retrying when the retry budget is exhausted', async () => {
    const s = await rig.server((_req, res) => {
      res.statusCode = 503;
      res.end();
    });
    const { fetch, mesh } = rig.mesh({
      services: {
        svc: {
          endpoints: [s.address],
          retry: { budget: { percent: 0, minPerSecond: 0.1, window: '10s' } },
          circuitBreaker: false,
        },
      },
    });
    const retries = rig.collect(mesh, 'retry');
    for (let i = 0; i < 5; i++) expect((await fetch('http://svc/')).status).toBe(503);
    // 10s × 0.1/s = one retry in the window; every later one is refused by the budget.
    expect(retries.filter((r) => r.allowed)).toHaveLength(1);
    expect(retries.filter((r) => r.denial === 'budget').length).toBeGreaterThanOrEqual(4);
    expect(s.requests).toHaveLength(6);
    expect(mesh.service('svc')?.retryBudget.exhausted).toBeGreaterThanOrEqual(4);
  });

  it('stops at the configured number of attempts', async () => {
    const s = await rig.server((_req, res) => {
      res.statusCode = 503;
      res.end();
    });
    const { fetch } = rig.mesh({ services: { svc: { endpoints: [s.address], retry: { attempts: 3 } } } });
    expect((await fetch('http://svc/')).status).toBe(503);
    expect(s.requests).toHaveLength(4);
  });

  it('classifies HTTP/2 REFUSED_STREAM as the refused-stream condition (never processed)', () => {
    expect(
      classifyError(new Error('stream closed with error code NGHTTP2_REFUSED_STREAM'), true),
    ).toMatchObject({ kind: 'never-sent', outcome: 'reset', condition: 'refused-stream' });
  });
});
