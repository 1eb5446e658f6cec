import {
  MAX_TIMER_MS,
  MeshConfigError,
  parseConfig,
  parseDeadlineHeader,
  runWithDeadline,
} from '@meshlet/core';
import { afterEach, describe, expect, it } from 'vitest';
import { Rig } from './resilience-helpers.js';

// Node's timers fire after 1 ms for any delay above 2^31−1 ms: every duration from outside
// (config, xDS, headers) must stay within what a timer holds, or every request fails at once.
const rig = new Rig();
afterEach(() => rig.cleanup());

describe('durations are capped at what a timer can hold', () => {
  it('config: a duration above 2^31-1 ms is MESHLET_ERR_CONFIG naming the field', () => {
    let err: unknown;
    try {
      parseConfig({
        readyTimeout: '720h',
        services: { reviews: { endpoints: ['127.0.0.1:1'], timeout: '720h', perTryTimeout: 3e9 } },
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MeshConfigError);
    const paths = (err as MeshConfigError).issues.map((i) => i.path);
    expect(paths).toEqual(
      expect.arrayContaining(['readyTimeout', 'services.reviews.timeout', 'services.reviews.perTryTimeout']),
    );
    expect((err as MeshConfigError).message).toMatch(
      /services\.reviews\.timeout: must be at most 2147483647ms/,
    );
    // The largest a timer holds is still accepted.
    expect(
      parseConfig({ services: { a: { endpoints: ['h:1'], timeout: MAX_TIMER_MS } } }).services.a?.timeoutMs,
    ).toBe(MAX_TIMER_MS);
  });

  it('headers: a deadline header of 1e308 is clamped, and a request under it succeeds', async () => {
    const now = 1_000;
    expect(parseDeadlineHeader('1e308', now)).toBe(now + MAX_TIMER_MS);
    const server = await rig.server((_req, res) => setTimeout(() => res.end('ok'), 5));
    const { fetch } = rig.mesh({ services: { reviews: { endpoints: [server.address], timeout: 0 } } });
    const deadline = parseDeadlineHeader('1e308') as number;
    const res = await runWithDeadline(deadline, () => fetch('http://reviews/'));
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('ok');
  });

  it('a deadline in scope beyond a timer (from a gRPC caller) does not fire the request timer at once', async () => {
    const server = await rig.server((_req, res) => setTimeout(() => res.end('ok'), 5));
    const { fetch } = rig.mesh({ services: { reviews: { endpoints: [server.address], timeout: 0 } } });
    const res = await runWithDeadline(Date.now() + 30 * 86_400_000, () => fetch('http://reviews/'));
    expect(await res.text()).toBe('ok');
  });
});
