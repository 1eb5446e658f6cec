import { afterEach, describe, expect, it } from 'vitest';
import { Rig, until } from './resilience-helpers.js';

describe('active health checks through mesh fetch', () => {
  const rig = new Rig();
  afterEach(() => rig.cleanup());

  it('stops sending traffic to an endpoint whose health check fails, and resumes when it passes', async () => {
    let bHealthy = true;
    const a = await rig.server((req, res) => {
      if (req.url === '/healthz') res.end();
      else res.end('a');
    });
    const b = await rig.server((req, res) => {
      if (req.url === '/healthz') {
        res.statusCode = bHealthy ? 200 : 503;
        res.end();
      } else res.end('b');
    });
    const { fetch, mesh } = rig.mesh({
      services: {
        svc: {
          endpoints: [a.address, b.address],
          healthCheck: { interval: '25ms', jitter: 0, unhealthyThreshold: 2, healthyThreshold: 2 },
        },
      },
    });
    const health = rig.collect(mesh, 'health');
    await until(() => health.length === 2, 'both endpoints checked');
    bHealthy = false;
    await until(() => health.some((h) => h.endpoint === b.address && !h.healthy), 'b marked down');
    const bodies = new Set<string>();
    for (let i = 0; i < 30; i++) bodies.add(await (await fetch('http://svc/work')).text());
    expect(bodies).toEqual(new Set(['a']));
    expect(mesh.snapshot().services.svc?.endpoints.find((e) => e.id === b.address)?.activeHealth).toBe(
      'unhealthy',
    );
    bHealthy = true;
    await until(() => health.filter((h) => h.endpoint === b.address && h.healthy).length === 2, 'b back up');
    for (let i = 0; i < 60 && !bodies.has('b'); i++)
      bodies.add(await (await fetch('http://svc/work')).text());
    expect(bodies).toEqual(new Set(['a', 'b']));
    expect(b.requests.every((r) => r.headers.host === 'svc')).toBe(true);
  });
});
