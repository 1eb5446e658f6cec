import { afterEach, describe, expect, it } from 'vitest';
import {
  parseControlPlaneConfig,
  type ResourceSet,
  resourcesFromConfig,
  startControlPlane,
} from '../../packages/control-plane/src/index.js';
import { createMesh } from '../../packages/meshlet/src/index.js';
import type { Msg } from '../../packages/xds/src/index.js';
import { bootstrapJson, until } from './xds/helpers.js';

let cleanup: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

/** 500 endpoints in 5 localities; `edit` may change the lb endpoint objects. */
function assignment(edit: (lbe: Msg, i: number) => void = () => {}): Msg {
  return {
    clusterName: 'big',
    endpoints: Array.from({ length: 5 }, (_, l) => ({
      locality: { zone: `z${l}` },
      loadBalancingWeight: { value: 1 },
      lbEndpoints: Array.from({ length: 100 }, (_, j) => {
        const i = l * 100 + j;
        const lbe: Msg = {
          endpoint: { address: { socketAddress: { address: `10.1.${i >> 8}.${i & 255}`, portValue: 8080 } } },
          healthStatus: 'HEALTHY',
        };
        edit(lbe, i);
        return lbe;
      }),
    })),
  };
}

interface XdsDump {
  resources: Array<{ type: string; name: string; status: string; version: string; error?: string }>;
}

describe('xDS EDS updates through the client are incremental', () => {
  it('a one-endpoint change keeps every other endpoint object and state; a re-send changes nothing; a bad version is NACKed', async () => {
    const base = resourcesFromConfig(
      parseControlPlaneConfig({ services: { big: { endpoints: ['127.0.0.1:1'], listener: true } } }),
    ) as ResourceSet & { endpoints: Msg[] };
    const cp = await startControlPlane({});
    cleanup.push(() => cp.close());
    const serve = (cla: Msg, extra: Msg[] = []) =>
      cp.setResources({ ...base, endpoints: [cla, ...extra] } as ResourceSet);
    serve(assignment());
    const mesh = await createMesh({}, { env: { GRPC_XDS_BOOTSTRAP_CONFIG: bootstrapJson([cp.address]) } });
    cleanup.push(() => mesh.close());
    await mesh.fetch('http://big/').catch(() => undefined); // subscribes LDS → RDS → CDS → EDS
    await until(() => (mesh.service('big')?.endpoints.length ?? 0) === 500, 5_000, '500 endpoints');
    const rt = mesh.service('big');
    if (!rt) throw new Error('no runtime');
    const states = [...rt.endpoints];
    const endpoints = states.map((s) => s.endpoint);
    const updates = rt.discovery.updates;

    // One weight changes: same states, same Endpoint objects for the other 499.
    serve(assignment((lbe, i) => i === 321 && Object.assign(lbe, { loadBalancingWeight: { value: 7 } })));
    await until(() => rt.discovery.updates > updates, 5_000, 'the change');
    expect(rt.endpoints.every((s, i) => s === states[i])).toBe(true);
    const changed = rt.endpoints.filter((s, i) => s.endpoint !== endpoints[i]);
    expect(changed.map((s) => [s.id, s.endpoint.weight])).toEqual([['10.1.1.65:8080', 7]]);

    // The same assignment re-sent with a new version (another resource changed): not applied again.
    const applied = rt.discovery.updates;
    const other = { clusterName: 'other', endpoints: [] };
    serve(
      assignment((lbe, i) => i === 321 && Object.assign(lbe, { loadBalancingWeight: { value: 7 } })),
      [other],
    );
    const version = cp.version;
    await until(
      () =>
        (mesh.snapshot().extensions.xds as XdsDump).resources.some(
          (r) => r.type === 'endpoints' && r.name === 'big' && r.version === version,
        ),
      5_000,
      'the re-send',
    );
    expect(rt.discovery.updates).toBe(applied);

    // An invalid version: NACKed with the field path, the last good endpoints stay.
    serve(
      assignment((lbe, i) => {
        if (i === 450) lbe.endpoint = { address: { socketAddress: { address: '10.9.9.9', portValue: 0 } } };
      }),
    );
    await until(
      () =>
        (mesh.snapshot().extensions.xds as XdsDump).resources.some(
          (r) => r.type === 'endpoints' && r.status === 'NACKED',
        ),
      5_000,
      'the NACK',
    );
    const nacked = (mesh.snapshot().extensions.xds as XdsDump).resources.find((r) => r.type === 'endpoints');
    expect(nacked?.error).toContain(
      'endpoints[4].lb_endpoints[50].endpoint.address.socket_address.port_value',
    );
    expect(rt.endpoints).toHaveLength(500);
    expect(rt.endpoint('10.1.1.65:8080')?.endpoint.weight).toBe(7);

    // The next good version is diffed against the last good one.
    const before = rt.discovery.updates;
    serve(assignment((lbe, i) => i === 0 && Object.assign(lbe, { healthStatus: 'DRAINING' })));
    await until(() => rt.discovery.updates > before, 5_000, 'the recovery');
    expect(rt.endpoint('10.1.0.0:8080')?.endpoint.health).toBe('draining');
    expect(rt.endpoint('10.1.1.65:8080')?.endpoint.weight).toBe(1);
    expect(rt.endpoints.every((s, i) => s === states[i])).toBe(true);
    expect(rt.endpoints[200]?.endpoint).toBe(endpoints[200]);
  });
});
