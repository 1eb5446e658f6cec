import { Mesh, parseConfig } from '@meshlet/core';
import { afterEach, describe, expect, it } from 'vitest';
import { startServer, type TestServer } from '../../../test/helpers/http.js';
import { createMeshFetch, MeshDispatcher } from '../src/index.js';

/** Load-balancing features that need the transport: request hashing and Retry-After penalties. */
describe('load balancing through mesh fetch', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function servers(n: number, handler: (i: number, res: import('node:http').ServerResponse) => void) {
    const list: TestServer[] = [];
    for (let i = 0; i < n; i++) {
      const s = await startServer((_req, res) => handler(i, res));
      cleanups.push(() => s.close());
      list.push(s);
    }
    return list;
  }

  function meshFetch(services: Record<string, unknown>) {
    const mesh = new Mesh(parseConfig({ services }));
    const dispatcher = new MeshDispatcher(mesh);
    cleanups.push(async () => {
      await dispatcher.close();
      await mesh.close();
    });
    return { mesh, fetch: createMeshFetch(dispatcher) };
  }

  it('avoids an endpoint that answered 503 with Retry-After for the penalty', async () => {
    const s = await servers(3, (i, res) => {
      if (i === 0) {
        res.writeHead(503, { 'retry-after': '30' });
        res.end('shedding');
      } else res.end(String(i));
    });
    const { fetch, mesh } = meshFetch({
      api: { endpoints: s.map((x) => x.address), lb: 'round_robin', retry: false },
    });
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) {
      const res = await fetch('http://api/');
      await res.text();
      statuses.push(res.status);
    }
    // Round robin would have sent it 10 requests; after its first 503 it gets none for 30 s.
    expect(s[0]?.requests.length).toBe(1);
    expect(statuses.filter((x) => x === 503)).toHaveLength(1);
    const penalized = mesh.service('api')?.endpoint(s[0]?.address as string);
    expect(penalized?.penaltyUntil).toBeGreaterThan(mesh.now() + 25_000);
  });

  it('hashes each request once on the configured header: a key sticks to one endpoint', async () => {
    const s = await servers(4, (i, res) => res.end(String(i)));
    const { fetch } = meshFetch({
      api: {
        endpoints: s.map((x) => x.address),
        lb: { policy: 'maglev', hashPolicy: [{ header: 'x-user' }] },
      },
    });
    const byUser = new Map<string, Set<string>>();
    for (let round = 0; round < 3; round++) {
      for (let u = 0; u < 20; u++) {
        const res = await fetch('http://api/', { headers: { 'x-user': `user-${u}` } });
        const body = await res.text();
        const seen = byUser.get(`user-${u}`) ?? new Set<string>();
        seen.add(body);
        byUser.set(`user-${u}`, seen);
      }
    }
    for (const seen of byUser.values()) expect(seen.size).toBe(1);
    const used = new Set([...byUser.values()].map((x) => [...x][0]));
    expect(used.size).toBeGreaterThan(1);
  });
});
