import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';

/**
 * `installGlobalDispatcher()` against undici's process-wide slots: `undici.globalDispatcher.2`,
 * which undici 8 (Node 26's fetch) reads, and `.1`, which undici 6 and 7 read (Node 20's, 22's and
 * 24's fetch). undici 8 keeps its dispatcher in `.2` and a wrapper of it in `.1`; undici 7 before
 * 7.27 writes only `.1`. Also run at the lowest undici meshlet admits
 * (scripts/test-dependency-floors.mjs).
 */
describe('installGlobalDispatcher() and undici’s global slots', () => {
  const v2 = Symbol.for('undici.globalDispatcher.2');
  const v1 = Symbol.for('undici.globalDispatcher.1');
  const g = globalThis as unknown as Record<symbol, unknown>;
  let server: Server;
  let mesh: Mesh;

  beforeAll(async () => {
    server = createServer((req, res) => res.end(`mesh ${req.url}`)).listen(0, '127.0.0.1');
    await once(server, 'listening');
    mesh = await createMesh({
      services: { svc: [`127.0.0.1:${(server.address() as AddressInfo).port}`] },
    });
  });
  afterAll(async () => {
    await mesh?.close();
    server?.close();
  });

  it('sets both slots, so that every Node’s fetch goes through the mesh, and its undo puts back what each held', async () => {
    const before = [g[v2], g[v1]];
    const mine = new Agent();
    const wrapper = { dispatch: mine.dispatch.bind(mine) };
    try {
      // As undici 8 leaves them: its dispatcher in `.2`, a wrapper of it in `.1`.
      g[v2] = mine;
      g[v1] = wrapper;
      const undo = mesh.installGlobalDispatcher();
      expect(g[v2]).toBe(mesh.dispatcher);
      expect(g[v1]).toBe(mesh.dispatcher);
      const res = await globalThis.fetch('http://svc/via-global');
      expect(await res.text()).toBe('mesh /via-global');
      undo();
      expect(g[v2]).toBe(mine);
      expect(g[v1]).toBe(wrapper);
      // A slot set by someone else meanwhile keeps what they set.
      const again = mesh.installGlobalDispatcher();
      const later = new Agent();
      g[v2] = later;
      again();
      expect(g[v2]).toBe(later);
      expect(g[v1]).toBe(wrapper);
      await later.close();
    } finally {
      g[v2] = before[0];
      g[v1] = before[1];
      await mine.close();
    }
  });

  it('close() undoes it', async () => {
    const before = [g[v2], g[v1]];
    const other = await createMesh({ services: { other: ['127.0.0.1:9'] } });
    other.installGlobalDispatcher();
    expect(g[v2]).toBe(other.dispatcher);
    await other.close();
    expect([g[v2], g[v1]]).toEqual(before);
  });
});
