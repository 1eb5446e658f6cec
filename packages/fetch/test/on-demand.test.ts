import {
  type DiscoverySource,
  MAX_UNKNOWN_AUTHORITIES,
  Mesh,
  makeEndpoint,
  type NameResolver,
  parseConfig,
} from '@meshlet/core';
import { afterEach, describe, expect, it } from 'vitest';
import { createMeshFetch, MeshDispatcher } from '../src/index.js';
import { Rig } from './resilience-helpers.js';

const rig = new Rig();
afterEach(() => rig.cleanup());

/** Claims `*.dyn` names, each fed by a source with one endpoint; counts what it was asked and closed. */
function dynResolver(address: string) {
  const stats = { asked: 0, created: 0, closed: 0 };
  const [host, port] = address.split(':') as [string, string];
  const resolver: NameResolver = {
    name: 'dyn',
    resolve(h) {
      stats.asked++;
      if (!h.endsWith('.dyn')) return undefined;
      return {
        key: h,
        discoveryType: 'dyn',
        createSource(): DiscoverySource {
          stats.created++;
          return {
            start: (l) => l.onUpdate({ endpoints: [makeEndpoint({ address: host, port: Number(port) })] }),
            close: () => {
              stats.closed++;
            },
          };
        },
      };
    },
  };
  return { resolver, stats };
}

describe('names resolved on demand are bounded', () => {
  it('"not a mesh service" answers are remembered up to a bound, the oldest forgotten first', async () => {
    const mesh = new Mesh(parseConfig({}));
    rig.defer(() => mesh.close());
    const { resolver, stats } = dynResolver('127.0.0.1:1');
    mesh.addResolver(resolver);
    const n = MAX_UNKNOWN_AUTHORITIES + 5_000;
    for (let i = 0; i < n; i++) mesh.resolve(`host-${i}.example.com`);
    expect(stats.asked).toBe(n);
    mesh.resolve(`host-${n - 1}.example.com`); // recent: still remembered
    expect(stats.asked).toBe(n);
    mesh.resolve('host-0.example.com'); // the oldest was forgotten: asked again
    expect(stats.asked).toBe(n + 1);
  });

  it('an idle on-demand service is closed; the next request resolves the name again and succeeds', async () => {
    const server = await rig.server((_req, res) => res.end('ok'));
    let now = 0;
    const mesh = new Mesh(parseConfig({ idleServiceTimeout: '1m' }), { now: () => now });
    const dispatcher = new MeshDispatcher(mesh);
    rig.defer(async () => {
      await dispatcher.destroy();
      await mesh.close();
    });
    const fetch = createMeshFetch(dispatcher);
    const { resolver, stats } = dynResolver(server.address);
    mesh.addResolver(resolver);
    expect(await (await fetch('http://a.dyn/')).text()).toBe('ok');
    const first = mesh.service('a.dyn');
    now += 30_000;
    expect(mesh.sweepIdle()).toBe(0); // used since the last sweep
    now += 61_000;
    expect(mesh.sweepIdle()).toBe(1);
    expect(first?.closed).toBe(true);
    expect(stats.closed).toBe(1);
    expect(mesh.service('a.dyn')).toBeUndefined();
    expect(await (await fetch('http://a.dyn/')).text()).toBe('ok');
    expect(stats.created).toBe(2);
    expect(mesh.service('a.dyn')).not.toBe(first);
  });

  it('a retained service (a gRPC channel holds it) is not closed while held', () => {
    let now = 0;
    const mesh = new Mesh(parseConfig({ idleServiceTimeout: '1m' }), { now: () => now });
    rig.defer(() => mesh.close());
    const { resolver } = dynResolver('127.0.0.1:1');
    mesh.addResolver(resolver);
    const rt = mesh.resolve('held.dyn');
    const release = mesh.retain(rt as NonNullable<typeof rt>);
    now += 120_000;
    expect(mesh.sweepIdle()).toBe(0);
    release();
    now += 61_000;
    expect(mesh.sweepIdle()).toBe(1);
  });
});
