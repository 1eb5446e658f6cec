/**
 * Compiled by `pnpm typecheck`, never run: proves that `MeshConfig` (as a consumer imports it from
 * `meshlet`) accepts what the runtime accepts and refuses typos at compile time. Each
 * `@ts-expect-error` fails the typecheck if the line below it compiles.
 */
import type { Duration } from '@meshlet/core';
import { createMesh, type MeshConfig } from 'meshlet';

// A third-party policy adds itself to the type, as its package would (registry: registerLoadBalancer).
declare module '@meshlet/core' {
  interface LbPolicies {
    least_latency: { readonly window?: Duration };
  }
}

export const everything: MeshConfig = {
  services: {
    reviews: { endpoints: ['127.0.0.1:9001', { address: '::1', port: 9002, zone: 'z1' }], lb: 'peak_ewma' },
    ratings: { dns: { name: 'ratings.example.com:8080', resolver: 'system' }, timeout: '2s', retry: false },
    details: { file: './details.yaml', lb: { policy: 'ring_hash', hashPolicy: [{ header: 'x-user' }] } },
    search: {
      discovery: { type: 'dns', name: '_http._tcp.search', recordType: 'SRV' },
      lb: { policy: 'least_latency', window: '10s' },
      healthCheck: { type: 'http', path: '/healthz', interval: '5s' },
      circuitBreaker: { errorThresholdPercentage: 40 },
      tls: false,
      balancing: { slowStart: { window: '30s' } },
    },
    bare: ['10.0.0.1:80'],
  },
  defaults: { timeout: 5000, retry: { attempts: 3, on: ['reset', 503], backoff: { base: '25ms' } } },
  readyTimeout: '10s',
  tls: { dir: '/var/run/secrets/meshlet' },
  authorization: { mode: 'STRICT', policies: [{ name: 'p', action: 'ALLOW', rules: [{}] }] },
  telemetry: { metrics: { naming: 'both' }, accessLog: true },
  admin: { port: 9901 },
  kubernetes: { namespaces: ['shop'] },
  xds: { protocol: 'delta' },
};

export async function typosDoNotCompile(): Promise<void> {
  // @ts-expect-error misspelt top-level key
  await createMesh({ servicez: {} });
  // @ts-expect-error unknown load-balancing policy
  await createMesh({ services: { r: { endpoints: ['a:1'], lb: 'fastest' } } });
  // @ts-expect-error misspelt policy field
  await createMesh({ services: { r: { endpoints: ['a:1'], timout: '1s' } } });
  // @ts-expect-error not a duration
  await createMesh({ defaults: { timeout: '2 seconds' } });
  // @ts-expect-error an option of another policy
  await createMesh({ defaults: { lb: { policy: 'round_robin', choiceCount: 2 } } });
  // @ts-expect-error misspelt retry option
  await createMesh({ defaults: { retry: { attemps: 3 } } });
  // @ts-expect-error unknown discovery type
  await createMesh({ services: { r: { discovery: { type: 'consul', name: 'r' } } } });
  // @ts-expect-error unknown DNS resolver
  await createMesh({ services: { r: { dns: { name: 'r:80', resolver: 'bind' } } } });
  // @ts-expect-error unknown health checker
  await createMesh({ defaults: { healthCheck: { type: 'icmp' } } });
  // @ts-expect-error misspelt key of a section registered by another package (tls)
  await createMesh({ tls: { dirr: '/certs' } });
  // @ts-expect-error misspelt Kubernetes option
  await createMesh({ kubernetes: { namespac: 'shop' } });
  // @ts-expect-error unknown metrics naming
  await createMesh({ telemetry: { metrics: { naming: 'statsd' } } });
  // @ts-expect-error an endpoint without its port
  await createMesh({ services: { r: { endpoints: [{ address: '10.0.0.1' }] } } });
}
