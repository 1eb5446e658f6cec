import { afterEach, describe, expect, it } from 'vitest';
import { type ControlPlane, startControlPlane } from '../../packages/control-plane/src/index.js';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';
import { bootstrapJson, type NamedServer, startNamed, until } from './xds/helpers.js';

// `xds: { protocol: 'delta' }` in the mesh config: the mesh speaks incremental ADS to the control
// plane, and falls back to state of the world (with one warning) against a server without it.

let cleanup: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

async function setup(delta: boolean): Promise<{ cp: ControlPlane; a: NamedServer; b: NamedServer }> {
  const a = await startNamed('a');
  const b = await startNamed('b');
  cleanup.push(
    () => a.close(),
    () => b.close(),
  );
  const cp = await startControlPlane({
    delta,
    config: {
      services: {
        'svc-a': { endpoints: [a.address], listener: false },
        'svc-b': { endpoints: [b.address], listener: false },
        front: {
          routes: [
            { match: { headers: [{ name: 'x-to', exact: 'b' }] }, cluster: 'svc-b' },
            { cluster: 'svc-a' },
          ],
        },
      },
    },
  });
  cleanup.push(() => cp.close());
  return { cp, a, b };
}

async function mesh(cp: ControlPlane, logs: string[] = []): Promise<Mesh> {
  const m = await createMesh(
    { xds: { protocol: 'delta' } },
    { env: { GRPC_XDS_BOOTSTRAP_CONFIG: bootstrapJson([cp.address]) } },
  );
  cleanup.push(() => m.close());
  m.events.on('log', (e) => {
    if (e.scope === 'xds') logs.push(`${e.level}: ${e.message}`);
  });
  return m;
}

const text = async (m: Mesh, headers: Record<string, string> = {}) =>
  (await m.fetch('http://front/', { headers })).text();

describe("xds: { protocol: 'delta' }", () => {
  it('routes through a delta ADS stream', async () => {
    const { cp } = await setup(true);
    const m = await mesh(cp);
    expect(await text(m)).toBe('a');
    expect(await text(m, { 'x-to': 'b' })).toBe('b');
    expect(cp.clients().map((c) => c.protocol)).toEqual(['delta']);
  });

  it('falls back to state of the world against a control plane without delta, saying so once', async () => {
    const { cp } = await setup(false);
    const logs: string[] = [];
    const m = await mesh(cp, logs);
    await until(async () => (await text(m).catch(() => '')) === 'a', 10_000, 'routing after the fallback');
    expect(await text(m, { 'x-to': 'b' })).toBe('b');
    expect(cp.clients().map((c) => c.protocol ?? 'sotw')).toEqual(['sotw']);
    expect(logs.filter((l) => l.includes('state-of-the-world'))).toHaveLength(1);
    expect(logs[0]).toMatch(/^warn: /);
  });

  it('rejects an unknown protocol with a config error naming the field', async () => {
    // @ts-expect-error: the input type already refuses it; the runtime check is for untyped configs
    await expect(createMesh({ xds: { protocol: 'incremental' } }, { env: {} })).rejects.toMatchObject({
      code: 'MESHLET_ERR_CONFIG',
      message: expect.stringContaining('xds.protocol'),
    });
  });
});
