import { Writable } from 'node:stream';
import { runDemo } from '@meshlet/demo';
import { describe, expect, it } from 'vitest';

function collector(): Writable & { text: () => string } {
  const chunks: string[] = [];
  const w = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  }) as Writable & { text: () => string };
  w.text = () => chunks.join('');
  return w;
}

// Faults from a fixed cycle rather than Math.random: one draw in ten is below the flaky
// instance's 10% rate, so it injects failures in every run, however traffic is balanced.
function cycle(): () => number {
  let draw = 0;
  return () => (draw++ % 10 === 0 ? 0.05 : 0.5);
}

describe('quickstart demo', { timeout: 60_000 }, () => {
  it('keeps the client at >= 99.9% success through frontend -> catalog (gRPC) + reviews (Fastify) while faults are injected, and exits 0', async () => {
    const out = collector();
    const result = await runDemo({
      durationSec: 4,
      rps: 100,
      out,
      color: false,
      view: 'lines',
      random: cycle(),
    });
    const byName = new Map(result.endpoints.map((e) => [e.name, e]));

    // The faults really happened: the flaky reviews instance answered 503s, the dying one died
    // and the frontend's mesh saw attempts to it fail, the slow catalog instance was slow.
    const why = JSON.stringify(result.endpoints);
    // The flaky instance answers 503 to one draw in ten. Latency-aware balancing may send it
    // little traffic (an instance that looked slower at the start is avoided), so it must have
    // failed only once it served enough; every failure it injected, the frontend's mesh saw.
    const flaky = byName.get('reviews-2');
    if ((flaky?.served ?? 0) >= 20) expect(flaky?.injected, why).toBeGreaterThan(0);
    expect(flaky?.errors ?? 0, why).toBeGreaterThanOrEqual(flaky?.injected ?? 0);
    // Its fast failures count against it in the default balancer: it gets less traffic than each
    // healthy instance (a fast 503 must not look like a fast server).
    for (const healthy of ['reviews-1', 'reviews-3'])
      expect(flaky?.attempts ?? 0, why).toBeLessThan(byName.get(healthy)?.attempts ?? 0);
    // The dying instance died, and the frontend's mesh noticed: attempts to it failed, or (when
    // a health check ran first, as can happen on a loaded machine) it was taken out of rotation.
    const dying = byName.get('reviews-4');
    expect(dying?.up).toBe(false);
    if (dying?.errors === 0) expect(dying.state, why).not.toBe('ok');
    // The slow instance was either slow when used, or (latency-aware balancing) barely used.
    const slow = byName.get('catalog-3');
    const catalogHealthy =
      (byName.get('catalog-1')?.attempts ?? 0) + (byName.get('catalog-2')?.attempts ?? 0);
    if ((slow?.attempts ?? 0) > 0) expect(slow?.p50Ms).toBeGreaterThan(50);
    expect(slow?.attempts ?? 0).toBeLessThan(catalogHealthy / 4);

    // Every hop carried the traffic, seen from both sides of the call: the caller's mesh counted
    // the logical requests of each hop (one frontend request = one catalog call + one reviews
    // call), and each service's own mesh recorded them inbound (Express middleware, gRPC server
    // interceptor, Fastify plugin).
    const hop = (to: string) => result.hops.find((h) => h.to === to);
    expect(result.hops.map((h) => `${h.from}->${h.to}/${h.transport}`)).toEqual([
      'client->frontend/http',
      'frontend->catalog/grpc',
      'frontend->reviews/http',
    ]);
    for (const to of ['frontend', 'catalog', 'reviews']) {
      expect(hop(to)?.requests, to).toBeGreaterThanOrEqual(result.requests - 5);
      expect(hop(to)?.failures, to).toBeLessThanOrEqual(1);
    }
    // the reviews hop absorbed the failures of the flaky and dead instances with retries
    if ((flaky?.errors ?? 0) + (dying?.errors ?? 0) > 0)
      expect(hop('reviews')?.retries, JSON.stringify(result.hops)).toBeGreaterThan(0);
    expect(result.inbound.frontend).toBeGreaterThanOrEqual(result.requests - 5);
    expect(result.inbound.catalog).toBeGreaterThanOrEqual(result.requests - 5);
    // retried attempts arrive as inbound requests too
    expect(result.inbound.reviews).toBeGreaterThanOrEqual(result.requests - 5);
    for (const service of ['frontend', 'catalog', 'reviews'] as const) {
      const attempts = result.endpoints
        .filter((e) => e.service === service)
        .reduce((n, e) => n + e.attempts, 0);
      expect(attempts, service).toBeGreaterThanOrEqual(result.requests - 5);
    }

    // The client's 4s deadline travelled: the frontend saw it (x-meshlet-deadline-ms), and
    // catalog (grpc-timeout) and reviews (x-meshlet-deadline-ms) saw what was left of it.
    expect(result.deadlineLeftMs.frontend).toBeGreaterThan(3000);
    expect(result.deadlineLeftMs.frontend).toBeLessThanOrEqual(4000);
    expect(result.deadlineLeftMs.catalog).toBeGreaterThan(2000);
    expect(result.deadlineLeftMs.catalog).toBeLessThanOrEqual(result.deadlineLeftMs.frontend);
    expect(result.deadlineLeftMs.reviews).toBeGreaterThan(2000);
    expect(result.deadlineLeftMs.reviews).toBeLessThanOrEqual(result.deadlineLeftMs.frontend);

    // mTLS is on by default, and the authorization policies admit only the frontend.
    expect(out.text()).toContain('mTLS with SPIFFE identities');
    expect(result.authorization).toEqual({
      catalog: 'PERMISSION_DENIED',
      reviews: 'HTTP 403 MESHLET_ERR_FORBIDDEN',
    });

    // One line per second of live view, then the summary.
    expect(out.text()).toMatch(/^\[ {2}1s\] \d+ req\/s/m);
    expect(out.text()).toContain('reviews-4 killed');
    expect(out.text()).toMatch(/summary after/);
    expect(out.text()).toMatch(/frontend -> catalog \(gRPC\) +\d+/);

    expect(result.requests).toBeGreaterThan(200);
    expect(result.successRate, JSON.stringify(result.failureReasons)).toBeGreaterThanOrEqual(0.999);
    expect(result.exitCode).toBe(0);
  });

  it('runs the same topology in plain HTTP/gRPC with --no-mtls (HTTP health checks, no policies)', async () => {
    const out = collector();
    const result = await runDemo({
      durationSec: 2,
      rps: 50,
      out,
      color: false,
      view: 'lines',
      random: cycle(),
      mtls: false,
    });
    expect(out.text()).not.toContain('mTLS');
    expect(result.authorization).toBeUndefined();
    expect(result.inbound.catalog).toBeGreaterThan(50);
    expect(result.inbound.reviews).toBeGreaterThan(50);
    expect(result.deadlineLeftMs.catalog).toBeGreaterThan(0);
    expect(result.successRate, JSON.stringify(result.failureReasons)).toBeGreaterThanOrEqual(0.999);
    expect(result.exitCode).toBe(0);
  });
});
