import { describe, expect, it } from 'vitest';
import { parseBootstrap } from '../src/bootstrap.js';

describe('bootstrap: delta ADS server feature', () => {
  it('turns delta on per server with delta_ads, off by default', () => {
    const b = parseBootstrap(
      {
        xds_servers: [
          {
            server_uri: 'a:1',
            channel_creds: [{ type: 'insecure' }],
            server_features: ['xds_v3', 'delta_ads'],
          },
          { server_uri: 'b:1', channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] },
        ],
        node: { id: 'n' },
      },
      'test',
    );
    expect(b.servers.map((s) => s.delta === true)).toEqual([true, false]);
  });
});
