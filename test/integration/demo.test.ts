import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { runDemo } from '../../packages/meshlet/src/demo/run.js';

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

describe('quickstart demo', { timeout: 60_000 }, () => {
  it('keeps the client at >= 99.9% success while the faults are injected, and exits 0', async () => {
    const out = collector();
    // Faults from a fixed cycle rather than Math.random: one draw in ten is below the flaky
    // instance's 10% rate, so it injects failures in every run, however traffic is balanced.
    let draw = 0;
    const random = () => (draw++ % 10 === 0 ? 0.05 : 0.5);
    const result = await runDemo({ durationSec: 4, rps: 100, out, color: false, view: 'lines', random });
    const byName = new Map(result.endpoints.map((e) => [e.name, e]));

    // The faults really happened: the flaky instance answered 503s, the dying one died and the
    // mesh saw attempts to it fail, the slow one was slow.
    const flaky = byName.get('catalog-4');
    expect(flaky?.injected).toBeGreaterThan(0);
    expect(flaky?.errors).toBeGreaterThan(0);
    const dying = byName.get('catalog-5');
    expect(dying?.up).toBe(false);
    expect(dying?.errors).toBeGreaterThan(0);
    // The slow instance was either slow when used, or (latency-aware balancing) barely used.
    const slow = byName.get('catalog-3');
    const healthy = byName.get('catalog-1');
    if ((slow?.attempts ?? 0) > 0) expect(slow?.p50Ms).toBeGreaterThan(50);
    expect(slow?.attempts ?? 0).toBeLessThan((healthy?.attempts ?? 0) / 2);

    // One line per second of live view, then the summary.
    expect(out.text()).toMatch(/^\[ {2}1s\] \d+ req\/s/m);
    expect(out.text()).toContain('catalog-5 killed');
    expect(out.text()).toMatch(/summary after/);
    // mTLS is on by default: every instance demanded a client certificate and was checked.
    expect(out.text()).toContain('mTLS with SPIFFE identities');

    expect(result.requests).toBeGreaterThan(200);
    expect(result.successRate, JSON.stringify(result.failureReasons)).toBeGreaterThanOrEqual(0.999);
    expect(result.exitCode).toBe(0);
  });
});
