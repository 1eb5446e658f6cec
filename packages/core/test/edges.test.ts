import { describe, expect, it } from 'vitest';
import { isValidHost, MeshConfigError, parseConfig } from '../src/index.js';

describe('endpoint addresses are checked where they enter', () => {
  it('static endpoints: an address that is neither an IP nor a host name is a config error naming it', () => {
    let err: unknown;
    try {
      parseConfig({
        services: {
          a: { endpoints: ['not an ip:80', '127.0.0.1:8080', 'db-1.internal:5432', '[fd00::1]:80'] },
          b: {
            endpoints: [
              { address: 'http://x', port: 80 },
              { address: '10.0.0.1', port: 70000 },
            ],
          },
        },
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MeshConfigError);
    expect((err as MeshConfigError).issues).toEqual([
      {
        path: 'services.a.endpoints[0]',
        message: '"not an ip:80": "not an ip" is not an IP address or a host name',
      },
      { path: 'services.b.endpoints[0].address', message: '"http://x" is not an IP address or a host name' },
      { path: 'services.b.endpoints[1].port', message: expect.stringMatching(/65535/) },
    ]);
  });

  it('isValidHost: IP literals and DNS names only', () => {
    for (const ok of [
      '10.0.0.1',
      'fd00::1',
      'reviews',
      'reviews.default.svc.cluster.local',
      'my_service',
      'a.b.',
    ])
      expect(isValidHost(ok)).toBe(true);
    for (const bad of [
      '',
      'not an ip',
      'http://x',
      'a..b',
      '-a',
      'a/b',
      `${'a'.repeat(64)}.com`,
      '[fd00::1]',
    ])
      expect(isValidHost(bad)).toBe(false);
  });
});
