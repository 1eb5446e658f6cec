import type { AddressInfo } from 'node:net';
import { credentials, Metadata, Server, ServerCredentials, type ServiceError, status } from '@grpc/grpc-js';
import Fastify from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { type ControlPlane, startControlPlane } from '../../packages/control-plane/src/index.js';
import { meshPlugin } from '../../packages/fastify/src/index.js';
import { meshServerInterceptor } from '../../packages/grpc/src/index.js';
import { EchoClient, type EchoReply, echoDefinition } from '../../packages/grpc/test/helpers.js';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';
import { createCa } from '../../packages/tls/src/index.js';
import {
  ANY_PRINCIPAL,
  istioFilterChain,
  istioInboundListener,
  istioRbac,
  operationOf,
} from '../../packages/xds/test/istio-shapes.js';
import { until } from './xds/helpers.js';
import { httpCall, istioWorkloadDir, TD } from './xds/servers.js';

// "Servers need no new code": a Fastify app on its own server (meshPlugin, no server factory) and a
// grpc-js Server of the application's own with meshServerInterceptor find their inbound listener
// from the address a request arrived on, as grpc-js-xds's XdsServer does from its bound address:
// 503 / UNAVAILABLE while it is not known, then its RBAC per request; a chain that asks for mTLS
// refuses their plaintext requests (meshlet does not make their connections), never falls back.

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A mesh with a workload certificate (the "default" provider) whose servers the listener manages. */
async function workloadMesh(cp: ControlPlane): Promise<Mesh> {
  const dir = await istioWorkloadDir(await createCa(), `${TD}/reviews`, cleanups);
  const mesh = await createMesh({
    tls: { dir, layout: 'istio' },
    xds: {
      bootstrap: {
        xds_servers: [{ server_uri: cp.address, channel_creds: [{ type: 'insecure' }] }],
        node: { id: 'reviews-1' },
        server_listener_resource_name_template: 'xds.istio.io/grpc/lds/inbound/%s',
      },
    },
  });
  cleanups.push(() => mesh.close());
  return mesh;
}

/** DENY /admin* (and the gRPC Admin service) for everyone; allow the rest. */
function denyAdmin(mtls: boolean) {
  return istioFilterChain({
    mtls,
    deny: istioRbac('DENY', {
      'default-deny-admin-0': {
        principals: [ANY_PRINCIPAL],
        permissions: [operationOf({ paths: ['/admin*', '/test.Admin/*'] })],
      },
    }),
  });
}

function call(port: number, path: string): Promise<{ code: number; details: string }> {
  const client = new EchoClient(`127.0.0.1:${port}`, credentials.createInsecure());
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      path,
      (v: unknown) => Buffer.from(JSON.stringify(v)),
      (b: Buffer) => JSON.parse(b.toString()),
      { text: 'hi' },
      new Metadata(),
      { deadline: Date.now() + 3_000 },
      (err: ServiceError | null) => {
        client.close();
        resolve(err ? { code: err.code, details: err.details } : { code: status.OK, details: '' });
      },
    );
  });
}

describe('servers the application made follow their inbound listener', () => {
  it('Fastify on its own server and a grpc-js Server with meshServerInterceptor: not serving, then RBAC, then mTLS required', async () => {
    const cp = await startControlPlane({ resources: { listeners: [] } });
    cleanups.push(() => cp.close());
    const mesh = await workloadMesh(cp);

    const app = Fastify();
    await app.register(meshPlugin, { mesh, drain: false });
    app.all('/*', async (req) => `fastify ${req.url}`);
    await app.listen({ port: 0, host: '127.0.0.1' });
    cleanups.push(() => app.close());
    const fastifyPort = (app.server.address() as AddressInfo).port;

    const server = new Server({ interceptors: [meshServerInterceptor({ mesh })] });
    const handler = (call: { request: { text: string } }, cb: (e: null, r: EchoReply) => void) =>
      cb(null, { text: call.request.text, server: 'grpc' });
    server.addService(echoDefinition, { Echo: handler });
    const echo = echoDefinition.Echo as (typeof echoDefinition)[string];
    server.addService(
      { Drop: { ...echo, path: '/test.Admin/Drop', originalName: 'drop' } },
      { Drop: handler },
    );
    const grpcPort = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    cleanups.push(() => server.forceShutdown());

    // Not known yet: 503 MESHLET_ERR_NOT_SERVING / UNAVAILABLE, naming the listener.
    const early = await httpCall(fastifyPort, '/reviews', { tls: false });
    expect(early.status).toBe(503);
    expect(JSON.parse(early.body).error).toMatchObject({ code: 'MESHLET_ERR_NOT_SERVING' });
    expect(early.body).toContain(`xds.istio.io/grpc/lds/inbound/127.0.0.1:${fastifyPort}`);
    const earlyGrpc = await call(grpcPort, '/test.Echo/Echo');
    expect(earlyGrpc.code).toBe(status.UNAVAILABLE);
    expect(earlyGrpc.details).toContain('MESHLET_ERR_NOT_SERVING');

    // Known: each found by its own listening address; RBAC before the handler.
    cp.setResources({
      listeners: [fastifyPort, grpcPort].map((p) => istioInboundListener('127.0.0.1', p, denyAdmin(false))),
    });
    await until(
      async () => (await httpCall(fastifyPort, '/reviews', { tls: false })).status === 200,
      5_000,
      'serving',
    );
    expect((await httpCall(fastifyPort, '/reviews/1', { tls: false })).body).toBe('fastify /reviews/1');
    const denied = await httpCall(fastifyPort, '/admin/users', { tls: false });
    expect(denied.status).toBe(403);
    expect(denied.body).toContain('envoy.filters.http.rbac.DENY/default-deny-admin-0');
    await until(
      async () => (await call(grpcPort, '/test.Echo/Echo')).code === status.OK,
      5_000,
      'grpc serving',
    );
    const drop = await call(grpcPort, '/test.Admin/Drop');
    expect(drop.code).toBe(status.PERMISSION_DENIED);
    expect(drop.details).toContain('MESHLET_ERR_FORBIDDEN');

    // The chain now asks for mTLS: their plaintext requests are refused, not served in plaintext.
    cp.setResources({
      listeners: [fastifyPort, grpcPort].map((p) => istioInboundListener('127.0.0.1', p, denyAdmin(true))),
    });
    await until(
      async () => (await httpCall(fastifyPort, '/reviews', { tls: false })).status === 403,
      5_000,
      'mTLS required',
    );
    const refused = await httpCall(fastifyPort, '/reviews', { tls: false });
    expect(JSON.parse(refused.body).error.message).toContain(
      'the filter chain "inbound-mtls" of "xds.istio.io/grpc/lds/inbound/127.0.0.1:',
    );
    expect(refused.body).toContain('requires TLS; the connection is plaintext');
    await until(
      async () => (await call(grpcPort, '/test.Echo/Echo')).code === status.PERMISSION_DENIED,
      5_000,
      'grpc: mTLS required',
    );
  });
});
