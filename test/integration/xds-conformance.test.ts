/**
 * Differential conformance: grpc-js-xds (Google's xDS client for grpc-js, an independent
 * implementation) and meshlet's own xDS client are pointed at meshlet's control plane serving the
 * same routing config, and must route the same way: header routes exactly, weighted splits within
 * statistical tolerance, priority failover. grpc-js-xds sends real gRPC calls to grpc-js servers;
 * meshlet sends real HTTP requests through `mesh.fetch` to HTTP servers. The two control planes
 * serve identical topologies that differ only in the backends' ports.
 *
 * grpc-js-xds' `register()` installs the `xds:` resolver and its LB policies into grpc-js globally
 * and caches the bootstrap per process, so this file runs it alone (vitest runs each file in its
 * own process with the `forks` pool).
 */
import { createRequire } from 'node:module';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ControlPlane, startControlPlane } from '../../packages/control-plane/src/index.js';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';
import { bootstrapJson, type NamedServer, startNamed } from './xds/helpers.js';
import { WHO } from './xds/security-helpers.js';

const NAMES = ['v1', 'v2', 'p0', 'p1a', 'p1b'] as const;
type Name = (typeof NAMES)[number];

function topology(addr: Record<Name, string>) {
  const [p0host, p0port] = addr.p0.split(':');
  return {
    services: {
      'echo-v1': { endpoints: [addr.v1], listener: false },
      'echo-v2': { endpoints: [addr.v2], listener: false },
      echo: {
        routes: [
          { match: { headers: [{ name: 'x-canary', exact: 'yes' }] }, cluster: 'echo-v2' },
          { match: { prefix: '/', headers: [{ name: 'x-team', prefix: 'blue-' }] }, cluster: 'echo-v1' },
          { match: { prefix: '/' }, weighted: { 'echo-v1': 75, 'echo-v2': 25 } },
        ],
      },
      failover: {
        endpoints: [
          { address: p0host, port: Number(p0port), priority: 0, health: 'unhealthy' },
          `${addr.p1a}`,
          `${addr.p1b}`,
        ].map((e, i) =>
          typeof e === 'string'
            ? { address: e.split(':')[0], port: Number(e.split(':')[1]), priority: i === 0 ? 0 : 1 }
            : e,
        ),
      },
    },
  };
}

interface GrpcBackend {
  name: string;
  port: number;
  server: grpc.Server;
}

async function grpcBackend(name: string): Promise<GrpcBackend> {
  const server = new grpc.Server();
  server.addService({ Who: WHO } as grpc.ServiceDefinition, {
    Who: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
      cb(null, Buffer.from(name)),
  });
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  return { name, port, server };
}

let grpcBackends: GrpcBackend[] = [];
let httpBackends: NamedServer[] = [];
let cpGrpc: ControlPlane;
let cpHttp: ControlPlane;
let mesh: Mesh;
let client: grpc.Client;

beforeAll(async () => {
  grpcBackends = await Promise.all(NAMES.map(grpcBackend));
  httpBackends = await Promise.all(NAMES.map(startNamed));
  const addrOf = (list: Array<{ name: string; port: number }>) =>
    Object.fromEntries(list.map((b) => [b.name, `127.0.0.1:${b.port}`])) as Record<Name, string>;
  cpGrpc = await startControlPlane({ config: topology(addrOf(grpcBackends)) });
  cpHttp = await startControlPlane({ config: topology(addrOf(httpBackends)) });
  process.env.GRPC_XDS_BOOTSTRAP_CONFIG = bootstrapJson([cpGrpc.address], 'grpc-js-xds');
  const xds = createRequire(import.meta.url)('@grpc/grpc-js-xds') as { register(): void };
  xds.register();
  client = new grpc.Client('xds:///echo', grpc.credentials.createInsecure());
  mesh = await createMesh(
    {},
    { env: { GRPC_XDS_BOOTSTRAP_CONFIG: bootstrapJson([cpHttp.address], 'meshlet') } },
  );
}, 30_000);

afterAll(async () => {
  client?.close();
  await mesh?.close();
  await cpGrpc?.close();
  await cpHttp?.close();
  for (const b of grpcBackends) b.server.forceShutdown();
  for (const b of httpBackends) await b.close();
  delete process.env.GRPC_XDS_BOOTSTRAP_CONFIG;
});

function grpcCall(target: grpc.Client, headers: Record<string, string>): Promise<string> {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  return new Promise((resolve, reject) =>
    target.makeUnaryRequest(
      WHO.path,
      WHO.requestSerialize,
      WHO.responseDeserialize,
      Buffer.alloc(0),
      md,
      { deadline: Date.now() + 10_000 },
      (err, res) => (err ? reject(err) : resolve(String(res))),
    ),
  );
}

async function meshCall(authority: string, headers: Record<string, string>): Promise<string> {
  const res = await mesh.fetch(`http://${authority}${WHO.path}`, { method: 'POST', headers });
  return res.text();
}

/** Makes `n` calls, ten at a time, and counts which backend answered. */
async function tally(n: number, call: () => Promise<string>): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i += 10) {
    const batch = await Promise.all(Array.from({ length: Math.min(10, n - i) }, call));
    for (const who of batch) out[who] = (out[who] ?? 0) + 1;
  }
  return out;
}

describe('grpc-js-xds and meshlet route alike from the same control plane', () => {
  it('header routes: exact and prefix matchers pick the same cluster', async () => {
    for (const [headers, want] of [
      [{ 'x-canary': 'yes' }, 'v2'],
      [{ 'x-team': 'blue-7' }, 'v1'],
      [{ 'x-canary': 'yes', 'x-team': 'blue-7' }, 'v2'],
    ] as const) {
      const g = await tally(20, () => grpcCall(client, headers));
      const m = await tally(20, () => meshCall('echo', headers));
      expect(g).toEqual({ [want]: 20 });
      expect(m).toEqual(g);
    }
  });

  it('weighted clusters: 75/25 within statistical tolerance on both', async () => {
    const n = 600;
    const g = await tally(n, () => grpcCall(client, {}));
    const m = await tally(n, () => meshCall('echo', {}));
    const share = (t: Record<string, number>) => (t.v1 ?? 0) / n;
    // sd of a binomial share at n=600, p=0.75 is 1.8 points: allow 6 points each, 8 between them.
    expect(Math.abs(share(g) - 0.75)).toBeLessThan(0.06);
    expect(Math.abs(share(m) - 0.75)).toBeLessThan(0.06);
    expect(Math.abs(share(g) - share(m))).toBeLessThan(0.08);
    expect(Object.keys(g).sort()).toEqual(['v1', 'v2']);
    expect(Object.keys(m).sort()).toEqual(['v1', 'v2']);
  });

  it('priority failover: an unhealthy priority 0 sends both to priority 1, spread over its endpoints', async () => {
    const failover = new grpc.Client('xds:///failover', grpc.credentials.createInsecure());
    try {
      const g = await tally(60, () => grpcCall(failover, {}));
      const m = await tally(60, () => meshCall('failover', {}));
      expect(g.p0).toBeUndefined();
      expect(m.p0).toBeUndefined();
      expect(Object.keys(g).sort()).toEqual(['p1a', 'p1b']);
      expect(Object.keys(m).sort()).toEqual(['p1a', 'p1b']);
    } finally {
      failover.close();
    }
  });
});
