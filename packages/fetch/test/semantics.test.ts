import type { IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import { makeEndpoint, runWithDeadline } from '@meshlet/core';
import {
  type buildConnector,
  errors,
  getGlobalDispatcher,
  setGlobalDispatcher,
  FormData as UndiciFormData,
} from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { causeCode, Rig, until } from './resilience-helpers.js';

/** The raw body of a request. */
async function bodyOf(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** An undici connector whose every connection takes `ms` to set up, then dials plain TCP. */
function slowConnect(ms: number): buildConnector.connector {
  return (opts, cb) => {
    setTimeout(() => {
      const socket = connect({ host: opts.hostname, port: Number(opts.port) });
      socket.once('connect', () => cb(null, socket));
      socket.once('error', (err) => cb(err, null));
    }, ms);
  };
}

/**
 * HTTP call semantics through the mesh that must match undici's, and the failure semantics of
 * DESIGN.md §5 — each provoked on real loopback servers.
 */
describe('HTTP call semantics', () => {
  const rig = new Rig();
  afterEach(() => rig.cleanup());

  /** A server that parses multipart bodies with the boundary its content-type announces. */
  async function formServer() {
    const parsed: Array<Record<string, string>> = [];
    const s = await rig.server(async (req, res) => {
      const body = await bodyOf(req);
      const form = await new Response(body, {
        headers: { 'content-type': String(req.headers['content-type']) },
      }).formData();
      const out: Record<string, string> = {};
      for (const [k, v] of form) out[k] = typeof v === 'string' ? v : `file:${v.name}:${await v.text()}`;
      parsed.push(out);
      res.end('ok');
    });
    return { s, parsed };
  }

  /** A form with a file; `mesh.fetch` is undici's fetch, which takes undici's FormData. */
  function form(Form: typeof UndiciFormData | typeof FormData = UndiciFormData): FormData {
    const f = new Form() as FormData;
    f.set('name', 'value');
    f.set('upload', new Blob(['file contents'], { type: 'text/plain' }), 'a.txt');
    return f;
  }

  it('sends FormData as undici does (one boundary in the header and the body), mesh and passthrough hosts', async () => {
    const { s, parsed } = await formServer();
    const { fetch } = rig.mesh({ services: { svc: [s.address] } });
    expect((await fetch('http://svc/', { method: 'POST', body: form() as never })).status).toBe(200);
    expect((await fetch(`http://${s.address}/`, { method: 'POST', body: form() as never })).status).toBe(200);
    expect(parsed).toEqual([
      { name: 'value', upload: 'file:a.txt:file contents' },
      { name: 'value', upload: 'file:a.txt:file contents' },
    ]);
  });

  it("Node's global fetch sends FormData through the installed mesh dispatcher", async () => {
    const { s, parsed } = await formServer();
    const { dispatcher } = rig.mesh({ services: { svc: [s.address] } });
    const previous = getGlobalDispatcher();
    setGlobalDispatcher(dispatcher);
    try {
      const res = await globalThis.fetch('http://svc/', { method: 'POST', body: form(FormData) });
      expect(res.status).toBe(200);
      await res.text();
    } finally {
      setGlobalDispatcher(previous);
    }
    expect(parsed).toEqual([{ name: 'value', upload: 'file:a.txt:file contents' }]);
  });

  it("gives the caller undici's own error for its mistakes: no retry, no endpoint penalty, no breaker failure", async () => {
    const s = await rig.server((_req, res) => res.end('ok'));
    const { dispatcher, mesh } = rig.mesh({
      services: { svc: { endpoints: [s.address], circuitBreaker: { volumeThreshold: 5 } } },
    });
    const retries = rig.collect(mesh, 'retry');
    const ejections = rig.collect(mesh, 'ejection');
    for (let i = 0; i < 20; i++) {
      const bad = await dispatcher
        .request({ origin: 'http://svc', path: '/', method: 'GET', headers: { 'x-bad': 'a\r\nb' } })
        .catch((e: unknown) => e);
      expect(bad).toBeInstanceOf(errors.InvalidArgumentError);
      const expect100 = await dispatcher
        .request({
          origin: 'http://svc',
          path: '/',
          method: 'PUT',
          body: 'x',
          headers: { expect: '100-continue' },
        })
        .catch((e: unknown) => e);
      expect(expect100).toBeInstanceOf(errors.NotSupportedError);
    }
    expect(retries).toEqual([]);
    expect(ejections).toEqual([]);
    const rt = mesh.service('svc');
    expect(rt?.resilience.breaker?.stats()).toMatchObject({ state: 'closed', failures: 0 });
    expect(rt?.endpoints[0]?.failures).toBe(0);
    expect(s.requests).toHaveLength(0);
    // and the endpoint serves as before
    expect((await dispatcher.request({ origin: 'http://svc', path: '/', method: 'GET' })).statusCode).toBe(
      200,
    );
  });

  it('a handler that throws from its headers, data or completion gets its error back; the endpoint is not blamed', async () => {
    const s = await rig.server((_req, res) => res.end('ok'));
    const { dispatcher, mesh } = rig.mesh({
      services: {
        svc: { endpoints: [s.address], circuitBreaker: { volumeThreshold: 5 } },
        // A hedged request delivers through its winning copy.
        hedged: { endpoints: [s.address], circuitBreaker: { volumeThreshold: 5 }, hedge: { delay: '10s' } },
      },
    });
    const retries = rig.collect(mesh, 'retry');
    const ejections = rig.collect(mesh, 'ejection');
    for (let i = 0; i < 10; i++) {
      for (const [at, origin] of ['headers', 'data', 'complete'].flatMap((w) => [
        [w, 'http://svc'],
        [w, 'http://hedged'],
      ])) {
        const thrown = new Error(at);
        const got = await new Promise<unknown>((resolve) => {
          const fail = (where: string) => {
            if (where === at) throw thrown;
          };
          dispatcher.dispatch({ origin, path: '/', method: 'GET' }, {
            onConnect() {},
            onHeaders() {
              fail('headers');
              return true;
            },
            onData() {
              fail('data');
              return true;
            },
            onComplete() {
              fail('complete');
              resolve('completed');
            },
            onError: resolve,
          } as never);
        });
        expect(got).toBe(thrown);
      }
    }
    expect(retries).toEqual([]);
    expect(ejections).toEqual([]);
    for (const name of ['svc', 'hedged']) {
      const rt = mesh.service(name);
      expect(rt?.resilience.breaker?.stats()).toMatchObject({ state: 'closed', failures: 0 });
      expect(rt?.endpoints[0]?.failures).toBe(0);
    }
    // One request each: the caller's exception is not retried.
    expect(s.requests).toHaveLength(60);
  });

  it("a caller's Host header in any case replaces the mesh's authority: one Host header", async () => {
    const s = await rig.server((req, res) => res.end(JSON.stringify(req.rawHeaders)));
    const { dispatcher } = rig.mesh({ services: { svc: [s.address] } });
    for (const name of ['host', 'Host', 'HOST', 'hOsT']) {
      const res = await dispatcher.request({
        origin: 'http://svc',
        path: '/',
        method: 'GET',
        headers: { [name]: 'custom.example' },
      });
      const raw = (await res.body.json()) as string[];
      const hosts = raw.filter((_v, i) => i % 2 === 0 && raw[i]?.toLowerCase() === 'host').length;
      expect(hosts, name).toBe(1);
      expect(raw[raw.findIndex((v) => v.toLowerCase() === 'host') + 1]).toBe('custom.example');
    }
    const res = await dispatcher.request({ origin: 'http://svc', path: '/', method: 'GET' });
    const raw = (await res.body.json()) as string[];
    expect(raw[raw.findIndex((v) => v.toLowerCase() === 'host') + 1]).toBe('svc');
  });

  it('has no default timeout: a long response is not cut, and no deadline header is sent', async () => {
    const s = await rig.server((req, res) => {
      res.setHeader('x-deadline', String(req.headers['x-meshlet-deadline-ms'] ?? 'none'));
      res.write('a');
      setTimeout(() => res.end('b'), 300);
    });
    const { fetch, mesh } = rig.mesh({ services: { svc: [s.address] } });
    expect(mesh.service('svc')?.policy.timeoutMs).toBe(0);
    const res = await fetch('http://svc/');
    expect(res.headers.get('x-deadline')).toBe('none');
    expect(await res.text()).toBe('ab');
  });

  it('100 application errors (4xx, a 500 with a body) leave the breaker closed and every endpoint in rotation', async () => {
    const servers = await Promise.all(
      [0, 1, 2].map(() =>
        rig.server((req, res) => {
          res.statusCode = req.url === '/missing' ? 404 : req.url === '/bad' ? 400 : 500;
          res.end(`error body for ${req.url}`);
        }),
      ),
    );
    const { fetch, mesh } = rig.mesh({
      services: { svc: { endpoints: servers.map((s) => s.address), circuitBreaker: { volumeThreshold: 5 } } },
    });
    const ejections = rig.collect(mesh, 'ejection');
    const retries = rig.collect(mesh, 'retry');
    const paths = ['/missing', '/bad', '/boom'];
    for (let i = 0; i < 100; i++) {
      const res = await fetch(`http://svc${paths[i % 3]}`);
      expect(res.status).toBe([404, 400, 500][i % 3]);
      expect(await res.text()).toBe(`error body for ${paths[i % 3]}`);
    }
    const rt = mesh.service('svc');
    expect(rt?.resilience.breaker?.stats()).toMatchObject({ state: 'closed', failures: 0 });
    expect(ejections).toEqual([]);
    expect(retries).toEqual([]);
    for (const ep of rt?.endpoints ?? []) {
      expect(ep.failures).toBe(0);
      expect(ep.isEjected(rt?.now() ?? 0)).toBe(false);
    }
    for (const s of servers) expect(s.requests.length).toBeGreaterThan(0);
  });

  it("100 expiries of the caller's deadline (deadline context, AbortSignal) leave the breaker closed and every endpoint in rotation", async () => {
    const held: Array<import('node:http').ServerResponse> = [];
    const servers = await Promise.all(
      [0, 1, 2].map(() =>
        rig.server((req, res) => {
          if (req.url === '/hang') held.push(res);
          else res.end('ok');
        }),
      ),
    );
    rig.defer(() => {
      for (const r of held) r.destroy();
    });
    const { fetch, mesh } = rig.mesh({
      services: { svc: { endpoints: servers.map((s) => s.address), circuitBreaker: { volumeThreshold: 5 } } },
    });
    const ejections = rig.collect(mesh, 'ejection');
    const requests = rig.collect(mesh, 'request');
    await Promise.all(
      Array.from({ length: 50 }, async () => {
        const err = await runWithDeadline(Date.now() + 30, () => fetch('http://svc/hang')).catch(
          (e: unknown) => e,
        );
        expect(causeCode(err)).toBe('MESHLET_ERR_TIMEOUT');
      }),
    );
    await Promise.all(
      Array.from({ length: 50 }, async () => {
        const err = await fetch('http://svc/hang', { signal: AbortSignal.timeout(30) }).catch(
          (e: unknown) => e,
        );
        expect((err as Error).name).toBe('TimeoutError');
      }),
    );
    await until(() => requests.length === 100, 'every call to end');
    const rt = mesh.service('svc');
    expect(rt?.resilience.breaker?.stats()).toMatchObject({ state: 'closed', failures: 0 });
    expect(ejections).toEqual([]);
    for (const ep of rt?.endpoints ?? []) {
      expect(ep.failures).toBe(0);
      expect(ep.isEjected(rt?.now() ?? 0)).toBe(false);
    }
    // In rotation: none ejected or marked unhealthy, no panic, and the service answers. (Their
    // latency estimates did rise: a call cut at 30 ms says the endpoint takes at least that.)
    const snap = mesh.snapshot().services.svc;
    expect(snap?.panic).toBe(false);
    expect(snap?.endpoints.map((e) => [e.ejected, e.activeHealth])).toEqual([
      [false, 'unknown'],
      [false, 'unknown'],
      [false, 'unknown'],
    ]);
    for (let i = 0; i < 30; i++) expect((await fetch('http://svc/ok')).status).toBe(200);
  });

  it('an instance answering 10% of its requests with a fast 503 gets less traffic than each healthy one', async () => {
    let draw = 0;
    const healthy = () =>
      rig.server((_req, res) => {
        setTimeout(() => res.end('ok'), 1);
      });
    const a = await healthy();
    const b = await healthy();
    const flaky = await rig.server((_req, res) => {
      if (draw++ % 10 === 0) {
        res.statusCode = 503;
        res.end('busy');
      } else setTimeout(() => res.end('ok'), 1);
    });
    const { fetch } = rig.mesh({
      services: { svc: { endpoints: [a.address, b.address, flaky.address], outlierDetection: false } },
    });
    let next = 0;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (next++ < 400) expect((await fetch('http://svc/')).status).toBe(200);
      }),
    );
    expect(flaky.requests.length).toBeLessThan(a.requests.length);
    expect(flaky.requests.length).toBeLessThan(b.requests.length);
  });

  it("measures an endpoint's latency from when its request has a connection, not its connection setup", async () => {
    const s = await rig.server((_req, res) => res.end('ok'));
    const { fetch, mesh } = rig.mesh(
      { services: { svc: { endpoints: [s.address] } } },
      {
        // Every new connection takes 300 ms to set up (as a slow TLS handshake would).
        poolOptions: { connect: slowConnect(300) },
      },
    );
    const attempts = rig.collect(mesh, 'attempt');
    expect(await (await fetch('http://svc/')).text()).toBe('ok');
    const ep = mesh.service('svc')?.endpoints[0];
    expect(attempts[0]?.durationMs).toBeGreaterThanOrEqual(290); // the attempt, as the caller saw it
    expect(ep?.ewmaMs).toBeLessThan(100); // the endpoint's request latency
  });

  it('three equal servers at concurrency 1 each get at least 15% of 300 requests under the default balancer, though each first request paid for a slow connection', async () => {
    const servers = await Promise.all([0, 1, 2].map(() => rig.server((_req, res) => res.end('ok'))));
    const { fetch, mesh } = rig.mesh(
      // No `lb`: the default balancer (peak-EWMA, power of two choices).
      { services: { svc: { endpoints: servers.map((s) => s.address) } } },
      {
        // Every new connection takes 40 ms to set up (as a TLS handshake over a distance would).
        poolOptions: { connect: slowConnect(40) },
      },
    );
    expect(mesh.service('svc')?.policy.lb.policy).toBe('peak_ewma');
    for (let i = 0; i < 300; i++) expect(await (await fetch('http://svc/')).text()).toBe('ok');
    const counts = servers.map((s) => s.requests.length);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(300);
    for (const n of counts) expect(n).toBeGreaterThanOrEqual(45);
  });

  it('frees the pool of an endpoint that leaves its service (a watch, not the event bus)', async () => {
    const s = await rig.server((_req, res) => res.end('ok'));
    const other = await rig.server((_req, res) => res.end('ok'));
    let open = 0;
    s.server.on('connection', (socket) => {
      open++;
      socket.on('close', () => open--);
    });
    const { fetch, mesh } = rig.mesh({ services: { svc: { endpoints: [s.address] } } });
    await (await fetch('http://svc/')).text();
    expect(open).toBe(1);
    mesh
      .service('svc')
      ?.applyUpdate({ endpoints: [makeEndpoint({ address: '127.0.0.1', port: other.port })] });
    await until(() => open === 0, 'the removed endpoint’s connection to close');
    expect(await (await fetch('http://svc/')).text()).toBe('ok');
    expect(other.requests).toHaveLength(1);
  });
});
