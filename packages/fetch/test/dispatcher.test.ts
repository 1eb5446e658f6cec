import type { IncomingMessage } from 'node:http';
import { Mesh, parseConfig } from '@meshlet/core';
import {
  getGlobalDispatcher,
  type RequestInit,
  request,
  setGlobalDispatcher,
  fetch as undiciFetch,
} from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { refusedPort, startServer, type TestServer } from '../../../test/helpers/http.js';
import { createMeshFetch, MeshDispatcher } from '../src/index.js';

describe('MeshDispatcher', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function servers(
    n: number,
    handler?: (i: number, req: IncomingMessage, res: import('node:http').ServerResponse) => void,
  ) {
    const list: TestServer[] = [];
    for (let i = 0; i < n; i++) {
      const s = await startServer((req, res) => {
        if (handler) handler(i, req, res);
        else res.end(JSON.stringify({ server: i, host: req.headers.host, path: req.url }));
      });
      cleanups.push(() => s.close());
      list.push(s);
    }
    return list;
  }

  function meshOf(services: Record<string, unknown>, extra: Record<string, unknown> = {}) {
    const mesh = new Mesh(parseConfig({ services, ...extra }));
    const dispatcher = new MeshDispatcher(mesh);
    cleanups.push(async () => {
      await dispatcher.close();
      await mesh.close();
    });
    return { mesh, dispatcher, fetch: createMeshFetch(dispatcher) };
  }

  it('routes each request to an endpoint and keeps the logical host', async () => {
    const s = await servers(3);
    const { fetch } = meshOf({ reviews: { endpoints: s.map((x) => x.address), lb: 'round_robin' } });
    const seen = new Set<number>();
    for (let i = 0; i < 6; i++) {
      const body = (await (await fetch('http://reviews/ratings?x=1')).json()) as {
        server: number;
        host: string;
        path: string;
      };
      expect(body.host).toBe('reviews');
      expect(body.path).toBe('/ratings?x=1');
      seen.add(body.server);
    }
    expect(seen).toEqual(new Set([0, 1, 2]));
  });

  it('reuses one connection pool per endpoint (keep-alive)', async () => {
    const s = await servers(1);
    const sockets = new Set<unknown>();
    s[0]?.server.on('connection', (sock) => sockets.add(sock));
    const { fetch } = meshOf({ reviews: [s[0]?.address] });
    for (let i = 0; i < 20; i++) await (await fetch('http://reviews/')).text();
    // undici may open a second connection when a request is dispatched in the very tick the
    // previous response completed; what matters is that connections are reused, not per request.
    expect(sockets.size).toBeLessThanOrEqual(2);
  });

  it('passes hosts the mesh does not know through to a plain Agent', async () => {
    const s = await servers(1);
    const { fetch } = meshOf({ reviews: ['127.0.0.1:1'] });
    const body = (await (await fetch(`http://${s[0]?.address}/direct`)).json()) as {
      path: string;
      host: string;
    };
    expect(body.path).toBe('/direct');
    expect(body.host).toBe(s[0]?.address);
  });

  it('refuses unknown hosts when passthrough is off', async () => {
    const s = await servers(1);
    const { fetch } = meshOf({ reviews: ['127.0.0.1:1'] }, { passthrough: false });
    const err = await fetch(`http://${s[0]?.address}/`).catch((e: unknown) => e);
    expect((err as { cause?: { code?: string } }).cause?.code).toBe('MESHLET_ERR_UNKNOWN_SERVICE');
    expect(s[0]?.requests.length).toBe(0);
  });

  it('meshes unchanged fetch code when installed as the global dispatcher', async () => {
    const s = await servers(2);
    const { dispatcher } = meshOf({ reviews: s.map((x) => x.address) });
    const previous = getGlobalDispatcher();
    setGlobalDispatcher(dispatcher);
    cleanups.push(() => setGlobalDispatcher(previous));
    // undici's fetch and request, and Node's own global fetch, all go through the mesh.
    const a = (await (await undiciFetch('http://reviews/a')).json()) as { host: string };
    const b = await request('http://reviews/b');
    const c = (await (await globalThis.fetch('http://reviews/c')).json()) as { host: string };
    expect(a.host).toBe('reviews');
    expect(((await b.body.json()) as { host: string }).host).toBe('reviews');
    expect(c.host).toBe('reviews');
  });

  it('aborts the underlying request at the deadline; the next call is not pre-aborted', async () => {
    let closedByClient = 0;
    const s = await servers(1, (_i, req, res) => {
      if (req.url === '/slow') {
        res.on('close', () => {
          if (!res.writableEnded) closedByClient++;
        });
        return; // never answers
      }
      res.end('fast');
    });
    const { fetch, mesh } = meshOf({ reviews: { endpoints: [s[0]?.address], timeout: '100ms' } });
    const aborted = new Promise<void>((resolve) =>
      s[0]?.server.once('request', (req: IncomingMessage) => req.socket.once('close', () => resolve())),
    );
    const err = await fetch('http://reviews/slow').catch((e: unknown) => e);
    expect((err as { cause?: { code?: string } }).cause?.code).toBe('MESHLET_ERR_TIMEOUT');
    await aborted;
    expect(closedByClient).toBe(1);
    const ok = await fetch('http://reviews/fast');
    expect(await ok.text()).toBe('fast');
    expect(mesh.service('reviews')?.endpoints[0]?.active).toBe(0);
  });

  it('a caller abort cancels the request with the caller reason', async () => {
    const s = await servers(1, () => {
      /* never answers */
    });
    const { fetch } = meshOf({ reviews: [s[0]?.address] });
    const controller = new AbortController();
    const p = fetch('http://reviews/', { signal: controller.signal }).catch((e: unknown) => e);
    await new Promise<void>((resolve) => s[0]?.server.once('request', () => resolve()));
    controller.abort();
    const err = await p;
    expect((err as Error).name).toBe('AbortError');
  });

  it('retries a refused connection on another endpoint', async () => {
    const s = await servers(1);
    const dead = await refusedPort();
    const { fetch, mesh } = meshOf({
      reviews: { endpoints: [`127.0.0.1:${dead}`, s[0]?.address], lb: 'round_robin' },
    });
    const retries: string[] = [];
    mesh.events.on('retry', (e) => retries.push(e.reason));
    for (let i = 0; i < 10; i++) expect((await fetch('http://reviews/')).status).toBe(200);
    expect(retries.length).toBeGreaterThan(0);
    expect(new Set(retries)).toEqual(new Set(['connect-failure']));
    // Connect failures are retried for any method: the request never reached a server.
    expect((await fetch('http://reviews/', { method: 'POST', body: 'x' })).status).toBe(200);
  });

  it('retries a reset idempotent request when asked (on: reset), but never a reset POST', async () => {
    let calls = 0;
    const s = await servers(2, (i, req, res) => {
      calls++;
      if (i === 0) req.socket.destroy();
      else res.end('ok');
    });
    // Istio's default policy does not retry resets: the reset GET reaches the caller.
    const plain = meshOf({ plain: { endpoints: [s[0]?.address] } });
    const err = await plain.fetch('http://plain/').catch((e: { cause?: { code?: string } }) => e);
    expect((err as { cause?: { code?: string } }).cause?.code).toBe('MESHLET_ERR_RESET');
    const { fetch } = meshOf({
      reviews: {
        endpoints: s.map((x) => x.address),
        lb: 'round_robin',
        retry: { on: ['connect-failure', 'reset'] },
      },
    });
    for (let i = 0; i < 4; i++) expect(await (await fetch('http://reviews/')).text()).toBe('ok');
    calls = 0;
    const results = await Promise.all(
      Array.from({ length: 4 }, () =>
        fetch('http://reviews/', { method: 'POST', body: 'payload' }).then(
          (r) => r.status,
          (e: { cause?: { code?: string } }) => e.cause?.code,
        ),
      ),
    );
    expect(results).toContain('MESHLET_ERR_RESET');
    expect(calls).toBe(4); // no POST was sent twice
  });

  it('retries 503 answers (Istio default) and delivers the final answer', async () => {
    const s = await servers(2, (i, _req, res) => {
      res.statusCode = i === 0 ? 503 : 200;
      res.end(i === 0 ? 'unavailable' : 'ok');
    });
    const { fetch } = meshOf({ reviews: { endpoints: s.map((x) => x.address), lb: 'round_robin' } });
    for (let i = 0; i < 4; i++) {
      const r = await fetch('http://reviews/');
      expect(r.status).toBe(200);
      expect(await r.text()).toBe('ok');
    }
    // With retries off the caller sees the 503 itself.
    const off = meshOf({ other: { endpoints: [s[0]?.address], retry: false } });
    expect((await off.fetch('http://other/')).status).toBe(503);
  });

  it('queues requests until discovery answers, then fails fast with a coded error when empty', async () => {
    const { fetch } = meshOf({ empty: { endpoints: [] } });
    const err = await fetch('http://empty/').catch((e: unknown) => e);
    expect((err as { cause?: { code?: string } }).cause?.code).toBe('MESHLET_ERR_NO_HEALTHY_ENDPOINT');
  });

  it('replays a streamed body that fits the retry buffer, and sends one that outgrows it once', async () => {
    const bodies: string[] = [];
    const s = await servers(1, (_i, req, res) => {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        bodies.push(body);
        res.statusCode = 503;
        res.end(body);
      });
    });
    const { fetch } = meshOf({
      reviews: { endpoints: [s[0]?.address], retry: { on: [503], bufferLimit: 16 } },
    });
    const stream = (parts: string[]) =>
      new ReadableStream({
        start(c) {
          for (const p of parts) c.enqueue(new TextEncoder().encode(p));
          c.close();
        },
      });
    // 8 bytes in two chunks: kept, sent three times (two retries), identical each time.
    const r = await fetch('http://reviews/', {
      method: 'PUT',
      body: stream(['stre', 'amed']),
      duplex: 'half',
    } as RequestInit);
    expect(r.status).toBe(503);
    expect(await r.text()).toBe('streamed');
    expect(bodies).toEqual(['streamed', 'streamed', 'streamed']);
    // 24 bytes: past the 16-byte buffer, so it cannot be sent again.
    bodies.length = 0;
    const big = await fetch('http://reviews/', {
      method: 'PUT',
      body: stream(['0123456789', '0123456789', 'abcd']),
      duplex: 'half',
    } as RequestInit);
    expect(big.status).toBe(503);
    expect(await big.text()).toBe('01234567890123456789abcd');
    expect(bodies).toHaveLength(1);
  });

  it("accepts handlers in undici's controller form (interceptors, compose)", async () => {
    const s = await servers(1);
    const { dispatcher } = meshOf({ reviews: [s[0]?.address] });
    const result = await new Promise<{ status: number; body: string; host: unknown }>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let status = 0;
      let host: unknown;
      dispatcher.dispatch(
        { origin: 'http://reviews', path: '/ctl', method: 'GET' },
        {
          onRequestStart() {},
          onResponseStart(_c, statusCode) {
            status = statusCode;
          },
          onResponseData(_c, chunk) {
            chunks.push(chunk);
          },
          onResponseEnd() {
            const body = Buffer.concat(chunks).toString();
            host = (JSON.parse(body) as { host: string }).host;
            resolve({ status, body, host });
          },
          onResponseError(_c, err) {
            reject(err);
          },
        },
      );
    });
    expect(result.status).toBe(200);
    expect(result.host).toBe('reviews');
    // An interceptor composed on top sees mesh routing underneath.
    const seen: string[] = [];
    const composed = dispatcher.compose((dispatch) => (opts, handler) => {
      seen.push(String(opts.path));
      return dispatch(opts, handler);
    });
    const r = await request('http://reviews/composed', { dispatcher: composed });
    expect(((await r.body.json()) as { path: string }).path).toBe('/composed');
    expect(seen).toEqual(['/composed']);
  });

  it("close() during a retry's backoff: the retry fails with undici's error for a closed dispatcher, no new pool", async () => {
    let answered = 0;
    let closing: Promise<void> | undefined;
    const [s] = await servers(1, (_i, _req, res) => {
      answered++;
      res.statusCode = 503;
      res.end('unavailable');
      // The mesh retries a 503 after a backoff; close the dispatcher while that request is out.
      closing ??= dispatcher.close();
    });
    const { dispatcher } = meshOf({ reviews: { endpoints: [s?.address] } });
    const err = await request('http://reviews/', { dispatcher }).then(
      () => undefined,
      (e: unknown) => e,
    );
    await closing;
    // As undici's own dispatchers answer once close() was called: ClientClosedError, and
    // ClientDestroyedError once it has finished (which it may have, its pools being idle).
    expect(err).toBeInstanceOf(Error);
    const shape = [(err as Error).constructor.name, (err as { code?: string }).code];
    expect([
      ['ClientClosedError', 'UND_ERR_CLOSED'],
      ['ClientDestroyedError', 'UND_ERR_DESTROYED'],
    ]).toContainEqual(shape);
    // One attempt reached the server: the retry made no pool (which close() would never close).
    expect(answered).toBe(1);
  });

  it('close() leaves no sockets or timers behind', async () => {
    const count = () => {
      const by = new Map<string, number>();
      for (const r of process.getActiveResourcesInfo()) by.set(r, (by.get(r) ?? 0) + 1);
      return {
        sockets: by.get('TCPSocketWrap') ?? 0,
        servers: by.get('TCPServerWrap') ?? 0,
        timers: by.get('Timeout') ?? 0,
      };
    };
    const before = count();
    const s = await servers(2);
    const { fetch, dispatcher, mesh } = meshOf({
      reviews: { endpoints: s.map((x) => x.address), timeout: '5s' },
    });
    for (let i = 0; i < 4; i++) await (await fetch('http://reviews/')).text();
    expect(count().sockets).toBeGreaterThan(before.sockets);
    await dispatcher.close();
    await mesh.close();
    for (const x of s) await x.close();
    // Handles finish closing asynchronously: poll a bounded number of event-loop turns.
    // (Handles of earlier tests may still be closing in `before`, hence "at most".)
    const settled = () => {
      const c = count();
      return c.sockets <= before.sockets && c.servers <= before.servers && c.timers <= before.timers;
    };
    for (let i = 0; i < 200 && !settled(); i++) await new Promise((resolve) => setImmediate(resolve));
    const after = count();
    expect(after.sockets).toBeLessThanOrEqual(before.sockets);
    expect(after.servers).toBeLessThanOrEqual(before.servers);
    expect(after.timers).toBeLessThanOrEqual(before.timers);
  });
});
