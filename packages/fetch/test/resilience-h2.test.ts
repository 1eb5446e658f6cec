import { once } from 'node:events';
import { constants, createServer, type Http2Server, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { Mesh, parseConfig } from '@meshlet/core';
import { afterEach, describe, expect, it } from 'vitest';
import { createMeshFetch, MeshDispatcher } from '../src/index.js';

/** HTTP/2 (cleartext) endpoints: the refused-stream retry condition, provoked for real. */
describe('retries over HTTP/2', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function h2Server(
    onStream: (stream: ServerHttp2Stream, n: number) => void,
  ): Promise<{ port: number; streams: () => number }> {
    let n = 0;
    const server: Http2Server = createServer();
    const sessions = new Set<import('node:http2').ServerHttp2Session>();
    server.on('session', (s) => sessions.add(s));
    server.on('stream', (stream) => {
      stream.on('error', () => {}); // a stream we reset errors on our side too
      onStream(stream, n++);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    cleanups.push(async () => {
      for (const s of sessions) s.destroy();
      await new Promise((r) => server.close(r));
    });
    return { port: (server.address() as AddressInfo).port, streams: () => n };
  }

  function meshFor(endpoints: string[], extra: Record<string, unknown> = {}) {
    const mesh = new Mesh(
      parseConfig({ services: { svc: { endpoints, outlierDetection: false, ...extra } } }),
    );
    // undici 7 supports cleartext HTTP/2 (`useH2c`) in its connector but not yet in its types.
    const dispatcher = new MeshDispatcher(mesh, {
      poolOptions: { allowH2: true, connect: { useH2c: true } as never },
    });
    cleanups.push(async () => {
      await dispatcher.destroy();
      await mesh.close();
    });
    return { mesh, fetch: createMeshFetch(dispatcher) };
  }

  it('retries a REFUSED_STREAM, even for POST (the server never processed it)', async () => {
    const s = await h2Server((stream, n) => {
      if (n === 0) stream.close(constants.NGHTTP2_REFUSED_STREAM);
      else {
        stream.respond({ ':status': 200 });
        stream.end('ok');
      }
    });
    const { fetch, mesh } = meshFor([`127.0.0.1:${s.port}`]);
    const retries: string[] = [];
    mesh.events.on('retry', (e) => retries.push(`${e.reason}:${e.allowed}`));
    const res = await fetch('http://svc/', { method: 'POST', body: 'x' });
    expect(await res.text()).toBe('ok');
    expect(retries).toEqual(['refused-stream:true']);
    expect(s.streams()).toBe(2);
  });

  it('does not retry other stream errors of a POST', async () => {
    const s = await h2Server((stream) => stream.close(constants.NGHTTP2_INTERNAL_ERROR));
    const { fetch, mesh } = meshFor([`127.0.0.1:${s.port}`]);
    const retries: string[] = [];
    mesh.events.on('retry', (e) => retries.push(e.reason));
    await expect(fetch('http://svc/', { method: 'POST', body: 'x' })).rejects.toThrow();
    expect(retries).toEqual([]);
    expect(s.streams()).toBe(1);
  });
});
