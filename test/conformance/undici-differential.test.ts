import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type { Duplex } from 'node:stream';
import { PassThrough, Readable, Writable } from 'node:stream';
import { pipeline as streamPipeline } from 'node:stream/promises';
import {
  Agent,
  type Dispatcher,
  getGlobalDispatcher,
  setGlobalDispatcher,
  FormData as UndiciFormData,
  fetch as undiciFetch,
} from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';
import { BIG, bigChunks, bigSha256, EchoServer, type Received } from './http-echo-server.js';

/**
 * Differential test: the same requests through raw undici (an `Agent` to the server's address)
 * and through meshlet (`mesh.fetch`, `mesh.dispatcher`, Node's own fetch with the dispatcher or
 * after `installGlobalDispatcher()`: undici 8's fetch on Node 26), against one real loopback
 * server. Each case compares, field by field, what the caller got (status, headers, body bytes,
 * error classes and codes) and what the server received (method, path, headers in order, body
 * bytes). The only differences allowed are
 * the documented mesh features (docs/semantics.md): the `Host` the mesh sends is the service's
 * authority, and the response URL names it. Nothing else is normalised except what changes
 * between any two runs of the same request (the date header, a multipart boundary) and what fetch
 * itself derives from the URL: undici 8's fetch (Node 26's global fetch) sends `Sec-Fetch-Mode`
 * only to a potentially trustworthy URL (https, loopback), which the raw side's
 * `http://127.0.0.1:PORT` is and the mesh's `http://svc` is not.
 */

type FetchFn = (url: string, init?: Record<string, unknown>) => Promise<Response>;

interface Side {
  readonly name: 'raw' | 'mesh';
  /** `http://127.0.0.1:PORT` (raw) or `http://svc` (mesh). */
  readonly base: string;
  readonly dispatcher: Dispatcher;
  readonly fetch: FetchFn;
}

let server: EchoServer;
let mesh: Mesh;
let agent: Agent;
let sides: Side[];
let rawBase: string;

beforeAll(async () => {
  server = await new EchoServer().start();
  rawBase = `http://127.0.0.1:${server.port}`;
  agent = new Agent();
  mesh = await createMesh({ services: { svc: [`127.0.0.1:${server.port}`] } });
  await mesh.ready();
  sides = [
    {
      name: 'raw',
      base: rawBase,
      dispatcher: agent,
      fetch: (url, init) => undiciFetch(url, { ...init, dispatcher: agent } as never) as Promise<Response>,
    },
    {
      name: 'mesh',
      base: 'http://svc',
      dispatcher: mesh.dispatcher,
      fetch: mesh.fetch as unknown as FetchFn,
    },
  ];
});

afterAll(async () => {
  await mesh?.close();
  await agent?.close();
  await server?.close();
});

/**
 * What the server received, minus the documented mesh difference (`host`) and fetch's URL-derived
 * `sec-fetch-mode`.
 */
function seen(records: Received[], boundary?: string) {
  return records.map((r) => ({
    ...r,
    headers: r.headers
      .filter(([k]) => k !== 'host' && k !== 'sec-fetch-mode')
      .map(([k, v]) => [k, boundary ? v.replaceAll(boundary, '<boundary>') : v]),
    bodyText: boundary ? r.bodyText?.replaceAll(boundary, '<boundary>') : r.bodyText,
    bodySha256: boundary ? '<varies with the boundary>' : r.bodySha256,
  }));
}

/** The multipart boundary undici chose for a request, if it sent one. */
function boundaryOf(records: Received[]): string | undefined {
  for (const r of records) {
    const ct = r.headers.find(([k]) => k === 'content-type')?.[1];
    const m = ct ? /boundary=(.+)$/.exec(ct) : null;
    if (m) return m[1];
  }
  return undefined;
}

function headersOf(h: Headers | Record<string, string | string[] | undefined>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const entries = h instanceof Headers ? [...h.entries()] : Object.entries(h);
  for (const [k, v] of entries) if (k !== 'date' && k !== 'keep-alive') out[k] = v;
  return out;
}

/** An error as the caller sees it: class, code, and the same for its cause chain. */
function errorShape(err: unknown): unknown {
  if (!(err instanceof Error)) return { thrown: typeof err };
  const e = err as Error & { code?: unknown };
  return {
    name: e.name,
    constructor: e.constructor.name,
    code: e.code,
    cause: e.cause === undefined ? undefined : errorShape(e.cause),
  };
}

/** A fetch response as the caller sees it (the URL with the side's base replaced). */
async function fetchResult(side: Side, p: Promise<Response>): Promise<unknown> {
  try {
    const res = await p;
    const body = Buffer.from(await res.arrayBuffer());
    return {
      status: res.status,
      statusText: res.statusText,
      type: res.type,
      redirected: res.redirected,
      url: res.url.replace(side.base, '<base>'),
      headers: headersOf(res.headers),
      body: body.length <= 4096 ? body.toString('latin1') : `${body.length} bytes`,
    };
  } catch (err) {
    return { error: errorShape(err) };
  }
}

/** Runs `run` once per side (raw first) and returns what the caller and the server saw. */
async function both(
  run: (side: Side) => Promise<unknown>,
): Promise<Record<'raw' | 'mesh', { caller: unknown; server: unknown }>> {
  const out = {} as Record<'raw' | 'mesh', { caller: unknown; server: unknown }>;
  for (const side of sides) {
    server.take();
    const caller = await run(side);
    // Let the server finish recording (aborted requests end a little later).
    await new Promise((r) => setTimeout(r, 20));
    const records = server.take();
    const boundary = boundaryOf(records);
    out[side.name] = {
      // The echo shows the caller the multipart boundary too: random per send.
      caller:
        boundary === undefined
          ? caller
          : JSON.parse(JSON.stringify(caller).replaceAll(boundary, '<boundary>')),
      server: seen(records, boundary),
    };
  }
  return out;
}

async function expectSame(run: (side: Side) => Promise<unknown>): Promise<void> {
  const r = await both(run);
  expect(r.mesh.caller).toEqual(r.raw.caller);
  expect(r.mesh.server).toEqual(r.raw.server);
}

/** Every body kind `fetch` takes, fresh per call (one-shot bodies are used once). */
const FETCH_BODIES: Record<string, () => unknown> = {
  string: () => 'a string body',
  Buffer: () => Buffer.from('a buffer body'),
  Uint8Array: () => new TextEncoder().encode('a typed array body'),
  ArrayBuffer: () => new TextEncoder().encode('an array buffer body').buffer,
  Blob: () => new Blob(['a blob body'], { type: 'text/x-blob' }),
  FormData: () => formData(),
  URLSearchParams: () => new URLSearchParams({ a: '1', b: 'two words' }),
  ReadableStream: () =>
    new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode('a readable '));
        c.enqueue(new TextEncoder().encode('stream body'));
        c.close();
      },
    }),
  'async iterable': () =>
    (async function* () {
      yield new TextEncoder().encode('an async ');
      yield new TextEncoder().encode('iterable body');
    })(),
  'Node Readable': () => Readable.from([Buffer.from('a node '), Buffer.from('readable body')]),
};

const STREAMED = new Set(['ReadableStream', 'async iterable', 'Node Readable']);

/**
 * A form with a field and a file, of undici's `FormData` (for `mesh.fetch`, undici's fetch) or of
 * Node's (for Node's own fetch: a different class from a different copy of undici).
 */
function formData(Form: typeof UndiciFormData | typeof FormData = UndiciFormData): FormData {
  const f = new Form() as FormData;
  f.set('field', 'value');
  f.set('file', new Blob(['file contents'], { type: 'text/plain' }), 'a.txt');
  return f;
}

/** Every body kind `Dispatcher.request` takes (the values as for fetch; chunks as Buffers). */
const REQUEST_BODIES: Record<string, () => unknown> = {
  ...Object.fromEntries(
    ['string', 'Buffer', 'Uint8Array', 'ArrayBuffer', 'Blob', 'FormData', 'Node Readable'].map((k) => [
      k,
      FETCH_BODIES[k] as () => unknown,
    ]),
  ),
  'async iterable': () =>
    (async function* () {
      yield Buffer.from('an async ');
      yield Buffer.from('iterable body');
    })(),
};

/** A `Dispatcher.request` result as the caller sees it. */
async function requestResult(p: Promise<Dispatcher.ResponseData>): Promise<unknown> {
  try {
    const res = await p;
    const body = Buffer.from(await res.body.arrayBuffer());
    return {
      status: res.statusCode,
      headers: headersOf(res.headers as Record<string, string | string[] | undefined>),
      trailers: { ...res.trailers },
      body: body.length <= 4096 ? body.toString('latin1') : `${body.length} bytes`,
    };
  } catch (err) {
    return { error: errorShape(err) };
  }
}

describe('undici differential: mesh vs raw undici on the same requests', { timeout: 60_000 }, () => {
  describe('fetch: every body kind', () => {
    for (const [kind, make] of Object.entries(FETCH_BODIES)) {
      it(kind, async () => {
        await expectSame((s) =>
          fetchResult(
            s,
            s.fetch(`${s.base}/echo`, {
              method: 'POST',
              body: make(),
              ...(STREAMED.has(kind) ? { duplex: 'half' } : {}),
            }),
          ),
        );
      });
    }
  });

  describe('Dispatcher.request: every body kind', () => {
    for (const [kind, make] of Object.entries(REQUEST_BODIES)) {
      it(kind, async () => {
        await expectSame((s) =>
          requestResult(
            s.dispatcher.request({ origin: s.base, path: '/echo', method: 'PUT', body: make() as never }),
          ),
        );
      });
    }
    it('URLSearchParams (not a body undici takes: the same error)', async () => {
      await expectSame((s) =>
        requestResult(
          s.dispatcher.request({
            origin: s.base,
            path: '/echo',
            method: 'PUT',
            body: new URLSearchParams({ a: '1' }) as never,
          }),
        ),
      );
    });
  });

  it('Dispatcher.stream and Dispatcher.pipeline', async () => {
    await expectSame(async (s) => {
      const chunks: Buffer[] = [];
      const data = await s.dispatcher.stream(
        { origin: s.base, path: '/echo', method: 'POST', body: 'streamed' },
        ({ statusCode, headers }) => {
          chunks.push(Buffer.from(`${statusCode} ${headers['content-type']} `));
          return new Writable({
            write(c, _e, cb) {
              chunks.push(c);
              cb();
            },
          });
        },
      );
      const piped: Buffer[] = [];
      await streamPipeline(
        Readable.from([Buffer.from('piped '), Buffer.from('body')]),
        s.dispatcher.pipeline({ origin: s.base, path: '/echo', method: 'PUT' }, ({ statusCode, body }) => {
          piped.push(Buffer.from(`${statusCode} `));
          return body;
        }),
        new Writable({
          write(c, _e, cb) {
            piped.push(c);
            cb();
          },
        }),
      );
      return {
        stream: Buffer.concat(chunks).toString(),
        trailers: data.trailers,
        pipeline: Buffer.concat(piped).toString(),
      };
    });
  });

  it("Node's global fetch after installGlobalDispatcher(), with a FormData body", async () => {
    const previous = getGlobalDispatcher();
    try {
      await expectSame(async (s) => {
        if (s.name === 'mesh') mesh.installGlobalDispatcher();
        else setGlobalDispatcher(agent);
        const results = [
          await fetchResult(
            s,
            globalThis.fetch(`${s.base}/echo`, { method: 'POST', body: formData(FormData) }),
          ),
          await fetchResult(s, globalThis.fetch(`${s.base}/status/201`)),
        ];
        if (s.name === 'mesh') mesh.installGlobalDispatcher()();
        return results;
      });
    } finally {
      setGlobalDispatcher(previous);
    }
  });

  describe("a handler that throws: undici gives it its own error back (undici's interceptors rely on it)", () => {
    for (const form of ['callback', 'controller'] as const)
      for (const at of ['headers', 'data', 'end'] as const)
        it(`${form} form, thrown at the response's ${at}`, async () => {
          await expectSame(
            (s) =>
              new Promise((resolve) => {
                const seen: unknown[] = [];
                const thrown = new Error(`thrown at ${at}`);
                const fail = (where: string) => {
                  seen.push(where);
                  if (where === at) throw thrown;
                };
                const onError = (err: Error) => {
                  seen.push(['error', err === thrown ? 'the thrown error' : errorShape(err)]);
                  resolve(seen);
                };
                const handler =
                  form === 'callback'
                    ? {
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
                          fail('end');
                          resolve(seen);
                        },
                        onError,
                      }
                    : {
                        onRequestStart() {},
                        onResponseStart() {
                          fail('headers');
                        },
                        onResponseData() {
                          fail('data');
                        },
                        onResponseEnd() {
                          fail('end');
                          resolve(seen);
                        },
                        onResponseError(_c: unknown, err: Error) {
                          onError(err);
                        },
                      };
                s.dispatcher.dispatch(
                  { origin: s.base, path: '/echo', method: 'GET' },
                  handler as unknown as Dispatcher.DispatchHandler,
                );
              }),
          );
        });
  });

  it("undici's retry interceptor composed on the dispatcher retries a status (it throws from its end callback)", async () => {
    // 500: a status the mesh itself does not retry by default (Istio's retry_on), so both sides
    // send exactly what the interceptor sends.
    const { interceptors } = await import('undici');
    await expectSame(async (s) => {
      const d = s.dispatcher.compose(
        interceptors.retry({ statusCodes: [500], minTimeout: 1, maxRetries: 1 }),
      );
      return requestResult(d.request({ origin: s.base, path: '/status/500', method: 'GET' }));
    });
  });

  it("undici's other interceptors composed on the dispatcher: redirect, responseError, dump, decompress, deduplicate", async () => {
    const { interceptors } = await import('undici');
    for (const [name, interceptor] of [
      ['redirect', interceptors.redirect({ maxRedirections: 2 })],
      ['responseError', interceptors.responseError()],
      ['dump', interceptors.dump({ maxSize: 1024 })],
      ['decompress', interceptors.decompress()],
      ['deduplicate', interceptors.deduplicate()],
    ] as const) {
      await expectSame(async (s) => {
        const d = s.dispatcher.compose(interceptor);
        const out: unknown[] = [name];
        for (const path of ['/redirect/302', '/status/404', '/gzip', '/trailers'])
          out.push(await requestResult(d.request({ origin: s.base, path, method: 'GET' })));
        return out;
      });
    }
  });

  it("a handler in undici's controller form (onRequestStart, …) sees what undici gives it", async () => {
    // The form Node 26's global fetch (undici 8) dispatches with: it reads the response headers
    // from `controller.rawHeaders`, and trailers from `controller.rawTrailers`.
    const text = (raw: unknown) => {
      if (!Array.isArray(raw)) return raw;
      const out: string[] = [];
      for (let i = 0; i + 1 < raw.length; i += 2) {
        const name = String(raw[i]);
        if (!/^(date|keep-alive)$/i.test(name)) out.push(name, String(raw[i + 1]));
      }
      return out;
    };
    await expectSame(
      (s) =>
        new Promise((resolve) => {
          const seen: unknown[] = [];
          const body: Buffer[] = [];
          s.dispatcher.dispatch(
            { origin: s.base, path: '/trailers', method: 'POST', body: 'controller form' },
            {
              onRequestStart(c) {
                seen.push(['start', c.aborted, c.paused, c.reason]);
              },
              onResponseStarted() {
                seen.push(['response started']);
              },
              onResponseStart(c, status, headers, statusText) {
                const { date: _d, 'keep-alive': _k, ...rest } = headers;
                seen.push(['headers', status, statusText, rest, text(c.rawHeaders)]);
              },
              onResponseData(_c, chunk) {
                body.push(chunk);
              },
              onResponseEnd(c, trailers) {
                seen.push(['end', Buffer.concat(body).toString(), trailers, text(c.rawTrailers)]);
                resolve(seen);
              },
              onResponseError(_c, err) {
                seen.push(['error', errorShape(err)]);
                resolve(seen);
              },
            } as Dispatcher.DispatchHandler,
          );
        }),
    );
  });

  describe("Node's own fetch (the undici Node bundles: 6 on Node 20, 7 on 24, 8 on 26) with the dispatcher", () => {
    // `fetch(url, { dispatcher })` with Node's global fetch, as an application that keeps Node's
    // fetch and passes `mesh.dispatcher` (or installs it globally) does.
    const nodeFetch = (s: Side): Side => ({
      ...s,
      fetch: (url, init) =>
        globalThis.fetch(url, {
          ...init,
          dispatcher: s.dispatcher,
        } as unknown as RequestInit) as Promise<Response>,
    });
    it('every body kind', async () => {
      for (const [kind, make] of Object.entries(FETCH_BODIES)) {
        await expectSame((s) =>
          fetchResult(
            s,
            nodeFetch(s).fetch(`${s.base}/echo`, {
              method: 'POST',
              body: kind === 'FormData' ? formData(FormData) : make(),
              ...(STREAMED.has(kind) ? { duplex: 'half' } : {}),
            }),
          ),
        );
      }
    });
    it('redirects, compression, HEAD, 204, 304, error statuses, trailers', async () => {
      await expectSame(async (s0) => {
        const s = nodeFetch(s0);
        const out: unknown[] = [];
        for (const redirect of ['follow', 'manual', 'error'])
          for (const code of [303, 307])
            out.push(
              await fetchResult(
                s,
                s.fetch(`${s.base}/redirect/${code}`, { method: 'POST', body: 'posted', redirect }),
              ),
            );
        for (const enc of ['gzip', 'br', 'deflate'])
          out.push(await fetchResult(s, s.fetch(`${s.base}/${enc}`)));
        out.push(await fetchResult(s, s.fetch(`${s.base}/status/200`, { method: 'HEAD' })));
        for (const st of [204, 304, 404, 500])
          out.push(await fetchResult(s, s.fetch(`${s.base}/status/${st}`)));
        out.push(await fetchResult(s, s.fetch(`${s.base}/trailers`)));
        return out;
      });
    });
    it("aborts, and the caller's mistakes", async () => {
      await expectSame(async (s0) => {
        const s = nodeFetch(s0);
        const ac = new AbortController();
        const p = fetchResult(s, s.fetch(`${s.base}/hang-headers`, { signal: ac.signal }));
        await waitForRequest();
        ac.abort();
        return [
          await p,
          await fetchResult(s, s.fetch(`${s.base}/echo`, { signal: AbortSignal.abort(new Error('stop')) })),
          await fetchResult(s, s.fetch(`${s.base}/echo`, { headers: { 'x-bad': 'a\nb' } })),
          await fetchResult(
            s,
            s.fetch(`${s.base}/echo`, { method: 'PUT', body: 'x', headers: { expect: '100-continue' } }),
          ),
        ];
      });
    });
  });

  describe('aborts', () => {
    it('before the request is sent', async () => {
      await expectSame((s) =>
        fetchResult(s, s.fetch(`${s.base}/echo`, { signal: AbortSignal.abort(new Error('stop')) })),
      );
      await expectSame(async (s) => {
        const ac = new AbortController();
        ac.abort();
        return requestResult(
          s.dispatcher.request({ origin: s.base, path: '/echo', method: 'GET', signal: ac.signal }),
        );
      });
    });

    it('while waiting for the response headers', async () => {
      await expectSame(async (s) => {
        const ac = new AbortController();
        const p = fetchResult(s, s.fetch(`${s.base}/hang-headers`, { signal: ac.signal }));
        await waitForRequest();
        ac.abort();
        const a = await p;
        const ac2 = new AbortController();
        const q = requestResult(
          s.dispatcher.request({ origin: s.base, path: '/hang-headers', method: 'GET', signal: ac2.signal }),
        );
        await waitForRequest();
        ac2.abort();
        return [a, await q];
      });
    });

    it('while reading the response body', async () => {
      await expectSame(async (s) => {
        const ac = new AbortController();
        const res = await s.fetch(`${s.base}/hang-body`, { signal: ac.signal });
        const reader = (res.body as ReadableStream<Uint8Array>).getReader();
        const first = Buffer.from((await reader.read()).value ?? []).toString();
        ac.abort();
        const rest = await reader.read().then(
          () => 'no error',
          (e: unknown) => errorShape(e),
        );
        return { status: res.status, first, rest };
      });
    });
  });

  describe('redirects', () => {
    for (const code of [301, 302, 303, 307, 308]) {
      it(`${code} with a POST body: follow, manual, error`, async () => {
        for (const redirect of ['follow', 'manual', 'error']) {
          await expectSame((s) =>
            fetchResult(
              s,
              s.fetch(`${s.base}/redirect/${code}`, { method: 'POST', body: 'posted', redirect }),
            ),
          );
        }
      });
    }
  });

  it('trailers (request API)', async () => {
    await expectSame((s) =>
      requestResult(s.dispatcher.request({ origin: s.base, path: '/trailers', method: 'GET' })),
    );
  });

  it('compression: gzip, br and deflate decoded by fetch, kept by request', async () => {
    for (const enc of ['gzip', 'br', 'deflate']) {
      await expectSame(async (s) => [
        await fetchResult(s, s.fetch(`${s.base}/${enc}`)),
        await requestResult(s.dispatcher.request({ origin: s.base, path: `/${enc}`, method: 'GET' })),
      ]);
    }
  });

  it('HEAD, 204 and 304', async () => {
    await expectSame(async (s) => [
      await fetchResult(s, s.fetch(`${s.base}/status/200`, { method: 'HEAD' })),
      await fetchResult(s, s.fetch(`${s.base}/status/204`)),
      await fetchResult(s, s.fetch(`${s.base}/status/304`)),
      await requestResult(s.dispatcher.request({ origin: s.base, path: '/status/204', method: 'GET' })),
      await requestResult(s.dispatcher.request({ origin: s.base, path: '/status/200', method: 'HEAD' })),
    ]);
  });

  it('error statuses the mesh does not retry by default are delivered as they are (404, 418, 500)', async () => {
    await expectSame(async (s) => [
      await fetchResult(s, s.fetch(`${s.base}/status/404`)),
      await fetchResult(s, s.fetch(`${s.base}/status/500`)),
      await requestResult(s.dispatcher.request({ origin: s.base, path: '/status/418', method: 'GET' })),
    ]);
  });

  it("the caller's mistakes: bad header values, Expect: 100-continue", async () => {
    await expectSame(async (s) => [
      await fetchResult(s, s.fetch(`${s.base}/echo`, { headers: { 'x-bad': 'a\nb' } })),
      await fetchResult(
        s,
        s.fetch(`${s.base}/echo`, { method: 'PUT', body: 'x', headers: { expect: '100-continue' } }),
      ),
      await requestResult(
        s.dispatcher.request({
          origin: s.base,
          path: '/echo',
          method: 'GET',
          headers: { 'x-bad': 'a\r\nb' },
        }),
      ),
      await requestResult(
        s.dispatcher.request({
          origin: s.base,
          path: '/echo',
          method: 'PUT',
          body: 'x',
          headers: { expect: '100-continue' },
        }),
      ),
      await requestResult(s.dispatcher.request({ origin: s.base, path: 'no-slash', method: 'GET' })),
      await requestResult(s.dispatcher.request({ origin: s.base, path: '/echo', method: 'BAD METHOD' })),
    ]);
  });

  it('headers as sent: case, order, repeated names, and a Host given in any case', async () => {
    await expectSame(async (s) => [
      await requestResult(
        s.dispatcher.request({
          origin: s.base,
          path: '/echo',
          method: 'GET',
          headers: ['X-First', '1', 'x-multi', 'a', 'X-Multi', 'b', 'HOST', 'custom.example', 'x-last', 'z'],
        }),
      ),
      await fetchResult(s, s.fetch(`${s.base}/echo`, { headers: { 'X-Upper': 'v', accept: 'text/plain' } })),
    ]);
  });

  it('upgrade and CONNECT', async () => {
    const talk = async (socket: Duplex): Promise<string> => {
      socket.write('ping');
      const [data] = (await once(socket, 'data')) as [Buffer];
      socket.destroy();
      return data.toString();
    };
    await expectSame(async (s) => {
      // undici's types omit `origin` from upgrade options, but an Agent (and the mesh) route by it.
      const up = (await s.dispatcher.upgrade({
        origin: s.base,
        path: '/chat',
        protocol: 'meshlet-test',
      } as Dispatcher.UpgradeOptions)) as unknown as Dispatcher.UpgradeData;
      const connected = await s.dispatcher.connect({ origin: s.base, path: '/' });
      return {
        upgrade: { headers: headersOf(up.headers as Record<string, string>), echo: await talk(up.socket) },
        connect: { status: connected.statusCode, echo: await talk(connected.socket) },
      };
    });
  });

  it('64 MiB streamed both ways (fetch and request)', async () => {
    const sha = bigSha256();
    const r = await both(async (s) => {
      const down = await s.fetch(`${s.base}/big`);
      let downBytes = 0;
      const downHash = createHash('sha256');
      for await (const c of down.body as unknown as AsyncIterable<Uint8Array>) {
        downBytes += c.length;
        downHash.update(c);
      }
      const up = await s.fetch(`${s.base}/echo`, {
        method: 'POST',
        body: Readable.from(bigChunks()),
        duplex: 'half',
      });
      const upEcho = (await up.json()) as { length: number };
      const req = await s.dispatcher.request({
        origin: s.base,
        path: '/echo',
        method: 'PUT',
        body: Readable.from(bigChunks()),
      });
      const reqEcho = (await req.body.json()) as { length: number };
      const viaStream = new PassThrough();
      let streamBytes = 0;
      const streamHash = createHash('sha256');
      viaStream.on('data', (c: Buffer) => {
        streamBytes += c.length;
        streamHash.update(c);
      });
      await s.dispatcher.stream({ origin: s.base, path: '/big', method: 'GET' }, () => viaStream);
      return {
        downBytes,
        downSha256: downHash.digest('hex'),
        upLength: upEcho.length,
        reqLength: reqEcho.length,
        streamBytes,
        streamSha256: streamHash.digest('hex'),
      };
    });
    expect(r.mesh).toEqual(r.raw);
    // Every byte both ways, as the server sent and received them.
    expect(r.raw.caller).toEqual({
      downBytes: BIG,
      downSha256: sha,
      upLength: BIG,
      reqLength: BIG,
      streamBytes: BIG,
      streamSha256: sha,
    });
    const uploads = (r.mesh.server as Received[]).filter((x) => x.method !== 'GET');
    expect(uploads.map((u) => u.bodySha256)).toEqual([sha, sha]);
  });

  it('the mesh sends its service authority as Host (a documented difference) and nothing else of its own', async () => {
    const hosts: string[] = [];
    for (const s of sides) {
      server.take();
      await (await s.fetch(`${s.base}/echo`)).text();
      hosts.push(server.take()[0]?.headers.find(([k]) => k === 'host')?.[1] ?? '');
    }
    expect(hosts).toEqual([`127.0.0.1:${server.port}`, 'svc']);
  });
});

/** Resolves once the server has received one more request. */
async function waitForRequest(): Promise<void> {
  const n = server.received.length;
  const start = Date.now();
  while (server.received.length === n) {
    if (Date.now() - start > 5000) throw new Error('the request never arrived');
    await new Promise((r) => setTimeout(r, 2));
  }
}
