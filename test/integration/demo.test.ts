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
    const result = await runDemo({ durationSec: 4, rps: 100, out, color: false, view: 'lines' });
    const byName = new Map(result.endpoints.map((e) => [e.name, e]));

    // The faults really happened: the flaky instance answered 503s, the dying one died and the
    // mesh saw attempts to it fail, the slow one was slow.
    const flaky = byName.get('catalog-4');
    expect(flaky?.injected).toBeGreaterThan(0);
    expect(flaky?.errors).toBeGreaterThan(0);
    const dying = byName.get('catalog-5');
    expect(dying?.up).toBe(false);
    expect(dying?.errors).toBeGreaterThan(0);
    expect(byName.get('catalog-3')?.p50Ms).toBeGreaterThan(50);

    // One line per second of live view, then the summary.
    expect(out.text()).toMatch(/^\[ {2}1s\] \d+ req\/s/m);
    expect(out.text()).toContain('catalog-5 killed');
    expect(out.text()).toMatch(/summary after/);

    expect(result.requests).toBeGreaterThan(200);
    expect(result.successRate, JSON.stringify(result.failureReasons)).toBeGreaterThanOrEqual(0.999);
    expect(result.exitCode).toBe(0);
  });
});
