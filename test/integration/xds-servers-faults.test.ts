import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { status } from '@grpc/grpc-js';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { type ControlPlane, startControlPlane } from '../../packages/control-plane/src/index.js';
import { meshMiddleware } from '../../packages/express/src/index.js';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';
import { CertificateSource, createCa } from '../../packages/tls/src/index.js';
import {
  ANY_PRINCIPAL,
  istioFilterChain,
  istioInboundListener,
  istioRbac,
  operationOf,
} from '../../packages/xds/test/istio-shapes.js';
import { until } from './xds/helpers.js';
import {
  grpcCall,
  httpCall,
  istioAgentBootstrap,
  istioWorkloadDir,
  startExpress,
  startGrpc,
  TD,
} from './xds/servers.js';

// The inbound listener's faults (gRFC A36): missing, NACKed, removed, its RDS missing, an address
// that is not the listening one; the control plane gone. A server made by the application
// (express().listen) answers 503 MESHLET_ERR_NOT_SERVING while not serving; meshlet's own servers
// close connections without a byte.

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const TEMPLATE = 'xds.istio.io/grpc/lds/inbound/%s';

async function plaintextMesh(cp: ControlPlane): Promise<Mesh> {
  const mesh = await createMesh({
    xds: {
      bootstrap: {
        xds_servers: [{ server_uri: cp.address, channel_creds: [{ type: 'insecure' }] }],
        node: { id: 'reviews-1' },
        server_listener_resource_name_template: TEMPLATE,
      },
      resourceTimeout: '300ms',
    },
  });
  cleanups.push(() => mesh.close());
  return mesh;
}

/** An Express app of the application's own (app.listen), with a slow route for in-flight requests. */
async function appServer(
  mesh: Mesh,
  gate?: Promise<void>,
  entered?: () => void,
): Promise<{ port: number; server: Server }> {
  const app = express();
  app.use(meshMiddleware({ mesh }));
  app.get('/slow', async (_req, res) => {
    entered?.();
    await gate;
    res.send('slow done');
  });
  app.all(/.*/, (req, res) => {
    res.send(`ok ${req.path}`);
  });
  const server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return { port: (server.address() as AddressInfo).port, server };
}

const plainListener = (port: number, extra: Record<string, unknown> = {}) => ({
  ...istioInboundListener('127.0.0.1', port, istioFilterChain({ mtls: false })),
  ...extra,
});

async function body(port: number, path: string) {
  return httpCall(port, path, { tls: false });
}

describe('inbound listener faults', () => {
  it('not known yet, then does not exist: 503 MESHLET_ERR_NOT_SERVING naming why; serving once it comes', async () => {
    const cp = await startControlPlane({ resources: { listeners: [] } });
    cleanups.push(() => cp.close());
    const mesh = await plaintextMesh(cp);
    const { port } = await appServer(mesh);
    const first = await body(port, '/a');
    expect(first.status).toBe(503);
    expect(JSON.parse(first.body).error).toMatchObject({ code: 'MESHLET_ERR_NOT_SERVING' });
    expect(first.connection).toBe('close');
    await until(
      async () => (await body(port, '/a')).body.includes('does not exist'),
      5_000,
      'does not exist',
    );
    cp.setResources({ listeners: [plainListener(port)] });
    await until(async () => (await body(port, '/a')).status === 200, 5_000, 'serving');
    expect((await body(port, '/a')).body).toBe('ok /a');
    const inbound = (
      mesh.snapshot().extensions.xds as { inbound: Array<{ serving: boolean; generation: number }> }
    ).inbound;
    expect(inbound).toMatchObject([{ serving: true, generation: 1 }]);
  });

  it('NACKed at first: not serving, the NACK named; a later NACK keeps the last good version', async () => {
    let nacks = 0;
    const cp = await startControlPlane({
      resources: { listeners: [] },
      onEvent: (e) => {
        if (e.kind === 'nack') nacks++;
      },
    });
    cleanups.push(() => cp.close());
    const mesh = await plaintextMesh(cp);
    const { port } = await appServer(mesh);
    const bad = plainListener(port, { listenerFilters: [{ name: 'envoy.filters.listener.tls_inspector' }] });
    cp.setResources({ listeners: [bad] });
    await until(async () => (await body(port, '/a')).body.includes('NACKed'), 5_000, 'NACK');
    expect((await body(port, '/a')).body).toContain('listener_filters: are not supported');
    cp.setResources({ listeners: [plainListener(port)] });
    await until(async () => (await body(port, '/a')).status === 200, 5_000, 'serving');
    cp.setResources({ listeners: [bad] });
    await until(() => nacks >= 2, 5_000, 'second NACK');
    expect((await body(port, '/a')).status).toBe(200);
  });

  it('removed: in-flight requests finish, new ones get 503 and their connection closes', async () => {
    const cp = await startControlPlane({ resources: { listeners: [] } });
    cleanups.push(() => cp.close());
    const mesh = await plaintextMesh(cp);
    let open: () => void = () => {};
    const gate = new Promise<void>((r) => {
      open = r;
    });
    let entered = false;
    const { port } = await appServer(mesh, gate, () => {
      entered = true;
    });
    cp.setResources({ listeners: [plainListener(port)] });
    await until(async () => (await body(port, '/a')).status === 200, 5_000, 'serving');
    const inflight = body(port, '/slow');
    await until(() => entered, 5_000, 'the slow request in its handler');
    cp.setResources({ listeners: [] });
    await until(async () => (await body(port, '/a')).status === 503, 5_000, 'not serving');
    const after = await body(port, '/a');
    expect(after.connection).toBe('close');
    expect(after.body).toContain('does not exist');
    open();
    expect(await inflight).toMatchObject({ status: 200, body: 'slow done' });
  });

  it('a route configuration from RDS: the listener waits for it; missing, requests are refused naming it', async () => {
    const cp = await startControlPlane({ resources: { listeners: [], routes: [] } });
    cleanups.push(() => cp.close());
    const mesh = await plaintextMesh(cp);
    const { port } = await appServer(mesh);
    const chain = istioFilterChain({ mtls: false }) as {
      filters: Array<{ typedConfig: Record<string, unknown> }>;
    };
    const hcm = chain.filters[0]?.typedConfig as Record<string, unknown>;
    delete hcm.routeConfig;
    hcm.rds = { routeConfigName: 'inbound-routes', configSource: { ads: {} } };
    cp.setResources({ listeners: [istioInboundListener('127.0.0.1', port, chain)], routes: [] });
    await until(
      async () => (await body(port, '/a')).body.includes('route configuration \\"inbound-routes\\"'),
      5_000,
      'RDS missing',
    );
    expect((await body(port, '/a')).body).toContain('does not exist');
    cp.setResources({
      listeners: [istioInboundListener('127.0.0.1', port, chain)],
      routes: [
        {
          name: 'inbound-routes',
          virtualHosts: [
            {
              domains: ['*'],
              routes: [
                { match: { prefix: '/x' }, route: { cluster: 'elsewhere' } },
                { match: { prefix: '/' }, nonForwardingAction: {} },
              ],
            },
          ],
        },
      ],
    });
    await until(async () => (await body(port, '/a')).status === 200, 5_000, 'RDS');
    // A route whose action is not non_forwarding_action takes no request on a server (A36).
    const x = await body(port, '/x');
    expect(x.status).toBe(503);
    expect(x.body).toContain('not non_forwarding_action');
  });

  it('a listener whose address is not the listening address: not serving', async () => {
    const cp = await startControlPlane({ resources: { listeners: [] } });
    cleanups.push(() => cp.close());
    const mesh = await plaintextMesh(cp);
    const { port } = await appServer(mesh);
    const l = plainListener(port) as { address: unknown };
    l.address = { socketAddress: { address: '10.0.0.7', portValue: port } };
    cp.setResources({ listeners: [l as Record<string, unknown>] });
    await until(
      async () => (await body(port, '/a')).body.includes('is not the listening address'),
      5_000,
      'address',
    );
  });

  it('meshlet’s servers close connections without a byte while not serving (A36)', async () => {
    const cp = await startControlPlane({ resources: { listeners: [] } });
    cleanups.push(() => cp.close());
    const mesh = await plaintextMesh(cp);
    const http = await startExpress(mesh);
    cleanups.push(() => http.close());
    const grpc = await startGrpc(mesh);
    cleanups.push(() => grpc.close());
    await expect(body(http.port, '/a')).rejects.toThrow(/socket hang up|ECONNRESET/);
    expect((await grpcCall(grpc.port, { plaintext: true })).code).toBe(status.UNAVAILABLE);
    cp.setResources({ listeners: [plainListener(http.port), plainListener(grpc.port)] });
    await until(
      async () => (await body(http.port, '/a').catch(() => ({ status: 0 }))).status === 200,
      5_000,
      'http serving',
    );
    await until(
      async () => (await grpcCall(grpc.port, { plaintext: true })).code === status.OK,
      5_000,
      'grpc serving',
    );
  });

  it('listener updates under load: no request fails, in-flight ones finish, old connections drain', async () => {
    const cp = await startControlPlane({ resources: { listeners: [] } });
    cleanups.push(() => cp.close());
    const mesh = await plaintextMesh(cp);
    const http = await startExpress(mesh);
    cleanups.push(() => http.close());
    const grpc = await startGrpc(mesh);
    cleanups.push(() => grpc.close());
    // Each version denies another unused path, so every update is a new listener version.
    const version = (n: number) => {
      const deny = istioRbac('DENY', {
        [`v${n}`]: { principals: [ANY_PRINCIPAL], permissions: [operationOf({ paths: [`/unused/${n}`] })] },
      });
      return {
        listeners: [http.port, grpc.port].map((p) =>
          istioInboundListener('127.0.0.1', p, istioFilterChain({ mtls: false, deny })),
        ),
      };
    };
    cp.setResources(version(0));
    await until(
      async () => (await body(http.port, '/a').catch(() => ({ status: 0 }))).status === 200,
      5_000,
      'serving',
    );
    const { Agent, request } = await import('node:http');
    const agent = new Agent({ keepAlive: true, maxSockets: 4 });
    cleanups.push(() => agent.destroy());
    const sockets = new Set<unknown>();
    const keepAlive = () =>
      new Promise<number>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: http.port, path: '/a', agent }, (res) => {
          sockets.add(res.socket);
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.end();
      });
    const failures: string[] = [];
    let done = 0;
    let stop = false;
    const loop = async (call: () => Promise<boolean>) => {
      while (!stop) {
        try {
          if (await call()) done++;
          else failures.push('refused');
        } catch (e) {
          failures.push((e as Error).message);
        }
      }
    };
    const loops = [
      loop(async () => (await keepAlive()) === 200),
      loop(async () => (await keepAlive()) === 200),
      loop(async () => (await grpcCall(grpc.port, { plaintext: true })).code === status.OK),
    ];
    for (let n = 1; n <= 5; n++) {
      const before = done;
      cp.setResources(version(n));
      await until(() => done >= before + 20, 10_000, `requests after update ${n}`);
    }
    stop = true;
    await Promise.all(loops);
    expect(failures).toEqual([]);
    expect(done).toBeGreaterThan(100);
    // keep-alive connections of old versions were closed (Connection: close after their response)
    expect(sockets.size).toBeGreaterThan(1);
    const inbound = (mesh.snapshot().extensions.xds as { inbound: Array<{ generation: number }> }).inbound;
    expect(inbound.map((l) => l.generation)).toEqual([6, 6]);
  });

  it('a listener update drains gRPC connections as gRPC servers do: first a GOAWAY naming the largest stream ID, so no stream on the wire is refused', async () => {
    const cp = await startControlPlane({ resources: { listeners: [] } });
    cleanups.push(() => cp.close());
    const mesh = await plaintextMesh(cp);
    const grpc = await startGrpc(mesh);
    cleanups.push(() => grpc.close());
    const deny = (n: number) =>
      istioRbac('DENY', {
        [`v${n}`]: { principals: [ANY_PRINCIPAL], permissions: [operationOf({ paths: [`/unused/${n}`] })] },
      });
    const version = (n: number) => ({
      listeners: [
        istioInboundListener('127.0.0.1', grpc.port, istioFilterChain({ mtls: false, deny: deny(n) })),
      ],
    });
    cp.setResources(version(0));
    await until(
      async () => (await grpcCall(grpc.port, { plaintext: true })).code === status.OK,
      5_000,
      'serving',
    );
    // A raw HTTP/2 client on one connection: which GOAWAY frames it receives, in order.
    const { connect } = await import('node:http2');
    const session = connect(`http://127.0.0.1:${grpc.port}`);
    cleanups.push(() => session.destroy());
    const goaways: Array<{ code: number; lastStreamID: number }> = [];
    session.on('goaway', (code, lastStreamID) => goaways.push({ code, lastStreamID }));
    session.on('error', () => {});
    await new Promise<void>((r) => session.once('remoteSettings', () => r()));
    cp.setResources(version(1));
    await until(() => goaways.length > 0, 5_000, 'GOAWAY');
    // Not the last stream received (streams already on the wire would be refused): every stream
    // the client sent before it heard of the drain is still served.
    expect(goaways[0]).toEqual({ code: 0, lastStreamID: 2 ** 31 - 1 });
  });

  it('the control plane gone: the last good security configuration stays (mTLS and RBAC)', async () => {
    const ca = await createCa();
    const dir = await istioWorkloadDir(ca, `${TD}/reviews`, cleanups);
    const client = new CertificateSource({
      dir: await istioWorkloadDir(ca, `${TD}/frontend`, cleanups),
      watch: false,
    });
    cleanups.push(() => client.close());
    const cp = await startControlPlane({ resources: { listeners: [] } });
    const mesh = await createMesh({
      tls: { dir, layout: 'istio' },
      xds: { bootstrap: istioAgentBootstrap(cp.address, dir) },
    });
    cleanups.push(() => mesh.close());
    const http = await startExpress(mesh);
    cleanups.push(() => http.close());
    const chain = istioFilterChain({
      mtls: true,
      deny: istioRbac('DENY', {
        'default-deny-0': { principals: [ANY_PRINCIPAL], permissions: [operationOf({ paths: ['/admin'] })] },
      }),
    });
    cp.setResources({ listeners: [istioInboundListener('127.0.0.1', http.port, chain)] });
    const call = (path: string) => httpCall(http.port, path, { client, ca: ca.cert });
    await until(async () => (await call('/a').catch(() => ({ status: 0 }))).status === 200, 5_000, 'serving');
    await cp.close();
    await until(
      () => !(mesh.snapshot().extensions.xds as { connected: boolean }).connected,
      5_000,
      'disconnected',
    );
    expect((await call('/a')).status).toBe(200);
    expect((await call('/admin')).status).toBe(403);
    await expect(httpCall(http.port, '/a', { tls: false })).rejects.toThrow();
  });
});
