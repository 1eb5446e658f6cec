import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes, Mesh, makeEndpoint, type NameResolver, parseConfig } from '../src/index.js';

describe('Mesh', () => {
  const meshes: Mesh[] = [];
  afterEach(async () => {
    for (const m of meshes.splice(0)) await m.close();
  });
  const make = (raw: unknown) => {
    const m = new Mesh(parseConfig(raw));
    meshes.push(m);
    return m;
  };

  it('is ready once static services are known and snapshots as JSON', async () => {
    const mesh = make({
      services: {
        reviews: { endpoints: ['127.0.0.1:9001', { address: '127.0.0.1', port: 9002, zone: 'z1' }] },
      },
    });
    await mesh.ready();
    expect(mesh.isReady).toBe(true);
    const snap = JSON.parse(JSON.stringify(mesh.snapshot()));
    expect(snap.ready).toBe(true);
    expect(snap.services.reviews.discovery.type).toBe('static');
    expect(snap.services.reviews.endpoints.map((e: { id: string }) => e.id)).toEqual([
      '127.0.0.1:9001',
      '127.0.0.1:9002',
    ]);
    expect(snap.services.reviews.endpoints[1].locality.zone).toBe('z1');
  });

  it('resolves declared services by host and host:port, and nothing else', () => {
    const mesh = make({ services: { reviews: ['127.0.0.1:1'], 'ratings:8080': ['127.0.0.1:2'] } });
    expect(mesh.resolve('reviews')?.name).toBe('reviews');
    expect(mesh.resolve('reviews', 9999)?.name).toBe('reviews');
    expect(mesh.resolve('ratings', 8080)?.name).toBe('ratings:8080');
    expect(mesh.resolve('ratings', 8081)).toBeUndefined();
    expect(mesh.resolve('example.com')).toBeUndefined();
  });

  it('asks resolvers for undeclared names once per authority', async () => {
    const mesh = make({});
    let asked = 0;
    let closed = false;
    const resolver: NameResolver = {
      name: 'test',
      resolve(host) {
        asked++;
        if (!host.endsWith('.internal')) return undefined;
        return {
          key: host,
          discoveryType: 'test',
          createSource: () => ({
            start: (l) => l.onUpdate({ endpoints: [makeEndpoint({ address: '10.0.0.1', port: 80 })] }),
            close: () => {
              closed = true;
            },
          }),
        };
      },
    };
    mesh.addResolver(resolver);
    const a = mesh.resolve('db.internal');
    expect(a?.endpoints.map((e) => e.id)).toEqual(['10.0.0.1:80']);
    expect(mesh.resolve('db.internal')).toBe(a);
    expect(mesh.resolve('example.com')).toBeUndefined();
    mesh.resolve('example.com');
    expect(asked).toBe(2);
    await mesh.close();
    expect(closed).toBe(true);
  });

  it('fails picks with a coded error when a service has no endpoints', async () => {
    const mesh = make({ services: { empty: { endpoints: [] } } });
    await mesh.ready();
    const r = mesh.service('empty')?.pick({ attempt: 0 });
    expect(r?.kind).toBe('fail');
    expect(r?.kind === 'fail' && (r.error as { code?: string }).code).toBe(ErrorCodes.NO_HEALTHY_ENDPOINT);
  });

  it('balances over all endpoints below the panic threshold', async () => {
    const mesh = make({
      services: {
        s: { endpoints: ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3', '127.0.0.1:4'], lb: 'round_robin' },
      },
    });
    await mesh.ready();
    const rt = mesh.service('s');
    if (!rt) throw new Error('no runtime');
    const panics: boolean[] = [];
    mesh.events.on('panic', (e) => panics.push(e.panic));
    for (const id of ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3']) {
      const st = rt.endpoint(id);
      if (st) st.activeHealth = 'unhealthy';
    }
    rt.rebuild();
    expect(rt.panic).toBe(true);
    const picked = new Set(
      Array.from({ length: 8 }, () => {
        const r = rt.pick({ attempt: 0 });
        return r.kind === 'pick' ? r.endpoint.id : '';
      }),
    );
    expect(picked.size).toBe(4);
    expect(panics).toEqual([true]);
  });

  it('close() is idempotent and ready() rejects afterwards', async () => {
    const mesh = make({ services: { a: ['127.0.0.1:1'] } });
    await mesh.close();
    await mesh.close();
    await expect(mesh.ready()).rejects.toMatchObject({ code: ErrorCodes.CLOSED });
  });
});
