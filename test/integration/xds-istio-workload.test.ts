/**
 * One Istio proxyless workload, end to end: `reviews`, a bare `createMesh()` with istio-agent's
 * golden gRPC bootstrap (pkg/istio-agent/testdata/grpc-bootstrap.json, in
 * packages/xds/test/fixtures; its `default` file_watcher provider reading the workload's
 * cert-chain.pem / key.pem / root-cert.pem) and a control plane serving every resource in the
 * shape istiod gives a proxyless workload (packages/xds/test/istio-shapes.ts, after
 * pilot/pkg/networking/grpcgen lds.go, rds.go, cds.go and grpcgen.go, and the auto-mTLS socket
 * matches of pilot/pkg/networking/core/cluster_tls.go):
 *
 * - inbound: its gRPC server (`createMeshServer`), Express and Fastify (meshlet's HTTP server
 *   factory) on 127.0.0.1, each under its listener `xds.istio.io/grpc/lds/inbound/127.0.0.1:PORT`
 *   with istiod's STRICT chain (PeerAuthentication STRICT) and the RBAC filters istiod compiles
 *   from two AuthorizationPolicies: DENY `/admin*` (and the gRPC admin service) for everyone,
 *   ALLOW only `cluster.local/ns/default/sa/frontend`;
 * - outbound: `ratings` (HTTP, mesh.fetch) and `details` (gRPC, `mesh:///`), each with an
 *   injected endpoint (`tlsMode: istio`: mTLS with the provider's certificate, the server's SPIFFE
 *   ID checked by the SAN matcher) and one without (plaintext), by `transport_socket_matches`.
 *
 * Real TLS with certificates from meshlet's development CA, every server on 127.0.0.1 port 0.
 */
import { writeFileSync } from 'node:fs';
import { connect as http2Connect } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import Fastify from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { type ControlPlane, startControlPlane } from '../../packages/control-plane/src/index.js';
import { meshPlugin } from '../../packages/fastify/src/index.js';
import { meshClientOptions } from '../../packages/grpc/src/index.js';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';
import {
  CertificateSource,
  createCa,
  createMeshHttpServer,
  getMeshTls,
  type PemPair,
} from '../../packages/tls/src/index.js';
import {
  ANY_PRINCIPAL,
  istioCluster,
  istioFilterChain,
  istioInboundListener,
  istioLoadAssignment,
  istioOutboundListener,
  istioOutboundRoute,
  istioRbac,
  operationOf,
  principalsOf,
} from '../../packages/xds/test/istio-shapes.js';
import { startNamed, until } from './xds/helpers.js';
import { mtlsGrpcServer, mtlsHttpServer, WHO, who, writeIstioCerts } from './xds/security-helpers.js';
import {
  grpcCall,
  handled,
  httpCall,
  istioAgentBootstrap,
  istioWorkloadDir,
  type Served,
  startExpress,
  startFastify,
  startGrpc,
  TD,
} from './xds/servers.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const RATINGS = 'ratings.default.svc.cluster.local';
const DETAILS = 'details.default.svc.cluster.local';

/** The STRICT chain istiod builds for reviews: DENY the admin paths, ALLOW frontend only. */
function reviewsChain() {
  return istioFilterChain({
    mtls: true,
    // AuthorizationPolicy default/deny-admin: action DENY, to.operation.paths [/admin*, /test.Admin/*]
    deny: istioRbac('DENY', {
      'default-deny-admin-0': {
        principals: [ANY_PRINCIPAL],
        permissions: [operationOf({ paths: ['/admin*', '/test.Admin/*'] })],
      },
    }),
    // AuthorizationPolicy default/allow-frontend: action ALLOW, from.source.principals [frontend]
    allow: istioRbac('ALLOW', {
      'default-allow-frontend-0': {
        principals: [principalsOf(['cluster.local/ns/default/sa/frontend'])],
        permissions: [operationOf({ paths: ['/*'] })],
      },
    }),
  });
}

/** A plaintext gRPC server answering `Who` with `name` (a workload without a sidecar label). */
async function plainGrpcServer(name: string): Promise<{ port: number; calls: number }> {
  const out = { port: 0, calls: 0 };
  const server = new grpc.Server();
  server.addService({ Who: WHO } as grpc.ServiceDefinition, {
    Who: (_call: unknown, cb: grpc.sendUnaryData<Buffer>) => {
      out.calls++;
      cb(null, Buffer.from(name));
    },
  });
  out.port = await new Promise<number>((res, rej) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  cleanups.push(() => server.forceShutdown());
  return out;
}

/** The serial number of the certificate a TLS server presents to `client`. */
function servedSerial(port: number, client: CertificateSource, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const { key, cert } = client.pem();
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      key,
      cert,
      ca,
      checkServerIdentity: () => undefined,
    });
    socket.once('secureConnect', () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.destroy();
      resolve(serial);
    });
    socket.once('error', reject);
  });
}

interface Workload {
  readonly mesh: Mesh;
  readonly cp: ControlPlane;
  readonly ca: PemPair;
  readonly dir: string;
  readonly frontend: CertificateSource;
  readonly attacker: CertificateSource;
  readonly servers: Array<Served & { kind: 'express' | 'fastify' | 'grpc' }>;
  readonly ratings: {
    mtls: Awaited<ReturnType<typeof mtlsHttpServer>>;
    plain: Awaited<ReturnType<typeof startNamed>>;
  };
  readonly details: { mtls: Awaited<ReturnType<typeof mtlsGrpcServer>>; plain: { calls: number } };
  /** The whole resource set istiod would serve reviews (inbound listeners of `servers`, the outbound services). */
  push(): void;
}

/** The workload's certificates (reviews) and two peers', a control plane, and the mesh from istio-agent's bootstrap. */
async function istioMesh() {
  const ca = await createCa();
  const dir = await istioWorkloadDir(ca, `${TD}/reviews`, cleanups);
  const peer = async (sa: string) => {
    const s = new CertificateSource({
      dir: await istioWorkloadDir(ca, `${TD}/${sa}`, cleanups),
      watch: false,
    });
    cleanups.push(() => s.close());
    return s;
  };
  const frontend = await peer('frontend');
  const attacker = await peer('attacker');
  const cp = await startControlPlane({ resources: { listeners: [] } });
  cleanups.push(() => cp.close());
  const mesh = await createMesh(
    {},
    { env: { GRPC_XDS_BOOTSTRAP_CONFIG: JSON.stringify(istioAgentBootstrap(cp.address, dir)) } },
  );
  cleanups.push(() => mesh.close());
  return { ca, dir, frontend, attacker, cp, mesh };
}

async function reviewsWorkload(): Promise<Workload> {
  const { ca, dir, frontend, attacker, cp, mesh } = await istioMesh();
  // The upstreams: an injected (mTLS, its own identity) and a plain instance of each service.
  const ratings = {
    mtls: await mtlsHttpServer(ca, 'ratings-mtls', `${TD}/ratings`, cleanups),
    plain: await startNamed('ratings-plain'),
  };
  cleanups.push(() => ratings.plain.close());
  const details = {
    mtls: await mtlsGrpcServer(ca, 'details-mtls', `${TD}/details`, cleanups),
    plain: await plainGrpcServer('details-plain'),
  };

  const servers: Workload['servers'] = [];
  for (const [kind, start] of [
    ['express', startExpress],
    ['fastify', startFastify],
    ['grpc', startGrpc],
  ] as const) {
    const s = await start(mesh);
    cleanups.push(() => s.close());
    servers.push({ ...s, kind });
  }

  const push = () =>
    cp.setResources({
      listeners: [
        ...servers.map((s) => istioInboundListener('127.0.0.1', s.port, reviewsChain())),
        istioOutboundListener(RATINGS, 9080),
        istioOutboundListener(DETAILS, 9090),
      ],
      routes: [istioOutboundRoute(RATINGS, 9080), istioOutboundRoute(DETAILS, 9090)],
      clusters: [
        istioCluster(RATINGS, 9080, { mode: 'AUTO', sans: [`${TD}/ratings`] }),
        istioCluster(DETAILS, 9090, { mode: 'AUTO', sans: [`${TD}/details`] }),
      ],
      endpoints: [
        istioLoadAssignment(RATINGS, 9080, [
          { address: '127.0.0.1', port: ratings.mtls.port, tlsMode: 'istio', workload: 'ratings-v1;default' },
          { address: '127.0.0.1', port: ratings.plain.port },
        ]),
        istioLoadAssignment(DETAILS, 9090, [
          { address: '127.0.0.1', port: details.mtls.port, tlsMode: 'istio', workload: 'details-v1;default' },
          { address: '127.0.0.1', port: details.plain.port },
        ]),
      ],
    });
  return { mesh, cp, ca, dir, frontend, attacker, servers, ratings, details, push };
}

describe('one Istio proxyless workload: STRICT inbound with AuthorizationPolicies, auto-mTLS outbound', () => {
  it('serves its gRPC, Express and Fastify servers and calls its upstreams exactly as istiod’s resources say', async () => {
    const w = await reviewsWorkload();
    const ca = w.ca.cert;
    // The bootstrap's default provider is the mesh's certificate (no tls: section).
    expect(getMeshTls(w.mesh)?.meshSourceOrigin).toBe('certificate_providers');
    expect(getMeshTls(w.mesh)?.meshSource?.current.spiffeId).toBe(`${TD}/reviews`);

    // A36: before its listener is known a server refuses connections without a byte.
    for (const s of w.servers) {
      if (s.kind === 'grpc')
        expect((await grpcCall(s.port, { client: w.frontend })).code).toBe(grpc.status.UNAVAILABLE);
      else await expect(httpCall(s.port, '/reviews', { client: w.frontend, ca })).rejects.toThrow();
    }
    w.push();
    const first = w.servers[0] as Served;
    await until(
      async () =>
        (await httpCall(first.port, '/reviews', { client: w.frontend, ca }).catch(() => ({ status: 0 })))
          .status === 200,
      5_000,
      'serving',
    );

    // --- inbound ---------------------------------------------------------------------------
    for (const s of w.servers.filter((x) => x.kind !== 'grpc')) {
      // STRICT: an mTLS client is accepted...
      expect(await httpCall(s.port, '/reviews/1', { client: w.frontend, ca })).toMatchObject({
        status: 200,
        body: `${s.kind} /reviews/1`,
      });
      // ...a plaintext client, or TLS without a client certificate, never reaches the application.
      const before = handled.count;
      await expect(httpCall(s.port, '/reviews/1', { tls: false })).rejects.toThrow();
      await expect(httpCall(s.port, '/reviews/1', { ca })).rejects.toThrow();
      // ALLOW by principal: a valid certificate of another service account is denied, 403 before the handler.
      const denied = await httpCall(s.port, '/reviews/1', { client: w.attacker, ca });
      expect(denied.status).toBe(403);
      expect(JSON.parse(denied.body).error).toMatchObject({ code: 'MESHLET_ERR_FORBIDDEN' });
      expect(denied.body).toContain('no ALLOW policy matched');
      // DENY by path, even for the allowed principal.
      const admin = await httpCall(s.port, '/admin/users', { client: w.frontend, ca });
      expect(admin.status).toBe(403);
      expect(admin.body).toContain('envoy.filters.http.rbac.DENY/default-deny-admin-0');
      expect(handled.count).toBe(before);
    }
    const g = w.servers.find((s) => s.kind === 'grpc') as Served;
    expect(await grpcCall(g.port, { client: w.frontend })).toEqual({ code: grpc.status.OK, details: '' });
    const before = handled.count;
    expect((await grpcCall(g.port, { plaintext: true })).code).toBe(grpc.status.UNAVAILABLE);
    const wrong = await grpcCall(g.port, { client: w.attacker });
    expect(wrong.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(wrong.details).toContain('MESHLET_ERR_FORBIDDEN');
    const drop = await grpcCall(g.port, { client: w.frontend, path: '/test.Admin/Drop' });
    expect(drop.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(drop.details).toContain('envoy.filters.http.rbac.DENY/default-deny-admin-0');
    expect(handled.count).toBe(before);
    // The servers present the provider's certificate.
    expect(await servedSerial(g.port, w.frontend, ca)).toBe(
      getMeshTls(w.mesh)?.provider('default')?.current.serialNumber,
    );

    // --- outbound ----------------------------------------------------------------------------
    // One locality, round robin: four calls reach each endpoint twice.
    const answers: string[] = [];
    for (let i = 0; i < 4; i++)
      answers.push(await (await w.mesh.fetch(`http://${RATINGS}:9080/ratings/1`)).text());
    expect(answers.sort()).toEqual(['ratings-mtls', 'ratings-mtls', 'ratings-plain', 'ratings-plain']);
    // The injected endpoint saw reviews' certificate (mTLS); the other was reached in plaintext.
    expect(w.ratings.mtls.seen.map((s) => s.principal)).toEqual([`${TD}/reviews`, `${TD}/reviews`]);
    expect(w.ratings.plain.hits).toBe(2);

    const client = new grpc.Client(
      `mesh:///${DETAILS}:9090`,
      grpc.credentials.createInsecure(),
      meshClientOptions(`mesh:///${DETAILS}:9090`),
    );
    cleanups.push(() => client.close());
    const names: string[] = [];
    for (let i = 0; i < 4; i++) names.push(await who(client));
    expect(names.sort()).toEqual(['details-mtls', 'details-mtls', 'details-plain', 'details-plain']);
    expect(w.details.mtls.callers).toEqual([`${TD}/reviews`, `${TD}/reviews`]);
    expect(w.details.plain.calls).toBe(2);

    // What the workload says about itself.
    const xds = w.mesh.snapshot().extensions.xds as {
      inbound: Array<{ name: string; serving: boolean; chains: unknown[] }>;
      resources: Array<{ type: string; name: string; status: string }>;
    };
    expect(xds.inbound.map((l) => [l.name, l.serving])).toEqual(
      w.servers.map((s) => [`xds.istio.io/grpc/lds/inbound/127.0.0.1:${s.port}`, true]),
    );
    expect(xds.inbound[0]?.chains).toEqual([
      {
        name: 'inbound-mtls',
        tls: 'mTLS (default)',
        rbac: ['envoy.filters.http.rbac.DENY: DENY 1 policies', 'envoy.filters.http.rbac: ALLOW 1 policies'],
      },
    ]);
    expect(xds.resources.filter((r) => r.status !== 'ACKED')).toEqual([]);
  });

  it('the provider’s files rotated: both sides use the new certificate; corrupted: the last good stays', async () => {
    const w = await reviewsWorkload();
    const ca = w.ca.cert;
    w.push();
    const express = w.servers[0] as Served;
    const grpcServer = w.servers[2] as Served;
    await until(
      async () =>
        (await httpCall(express.port, '/reviews', { client: w.frontend, ca }).catch(() => ({ status: 0 })))
          .status === 200,
      5_000,
      'serving',
    );
    const provider = getMeshTls(w.mesh)?.provider('default');
    const first = provider?.current.serialNumber as string;
    expect(await servedSerial(express.port, w.frontend, ca)).toBe(first);
    // Outbound mTLS with the first certificate (call until the injected endpoint answered).
    const viaMtls = async () => {
      const n = w.ratings.mtls.seen.length;
      for (let i = 0; i < 4 && w.ratings.mtls.seen.length === n; i++)
        await (await w.mesh.fetch(`http://${RATINGS}:9080/`)).text();
      return w.ratings.mtls.seen.at(-1)?.serial;
    };
    expect(await viaMtls()).toBe(first);

    const next = await writeIstioCerts(w.dir, w.ca, `${TD}/reviews`);
    await provider?.reload();
    expect(next).not.toBe(first);
    expect(provider?.current.serialNumber).toBe(next);
    expect(await servedSerial(express.port, w.frontend, ca)).toBe(next);
    expect(await servedSerial(grpcServer.port, w.frontend, ca)).toBe(next);
    expect(await viaMtls()).toBe(next);
    expect((await httpCall(express.port, '/reviews/1', { client: w.frontend, ca })).status).toBe(200);
    expect((await grpcCall(grpcServer.port, { client: w.frontend })).code).toBe(grpc.status.OK);

    writeFileSync(join(w.dir, 'cert-chain.pem'), 'not a certificate');
    await provider?.reload();
    expect(provider?.current.serialNumber).toBe(next);
    expect(await servedSerial(express.port, w.frontend, ca)).toBe(next);
    expect(await viaMtls()).toBe(next);
    expect((await httpCall(express.port, '/reviews/1', { client: w.frontend, ca })).status).toBe(200);
    expect((await httpCall(express.port, '/reviews/1', { client: w.attacker, ca })).status).toBe(403);
  });
});

/** One HTTP/2 request over a session; its status, body and the session's ALPN protocol. */
function h2Get(
  port: number,
  path: string,
  opts: { client?: CertificateSource; ca?: string; plaintext?: boolean },
): Promise<{ status: number; body: string; alpn: string | false | undefined }> {
  return new Promise((resolve, reject) => {
    const pem = opts.client?.pem();
    const session = opts.plaintext
      ? http2Connect(`http://127.0.0.1:${port}`)
      : http2Connect(`https://127.0.0.1:${port}`, {
          ...(pem ? { key: pem.key, cert: pem.cert } : {}),
          ca: opts.ca,
          servername: 'reviews.default.svc',
          checkServerIdentity: () => undefined,
        });
    session.on('error', reject);
    const req = session.request({ ':path': path, ':method': 'GET' });
    let status = 0;
    let body = '';
    req.setEncoding('utf8');
    req.on('response', (h) => {
      status = Number(h[':status']);
    });
    req.on('data', (c: string) => {
      body += c;
    });
    req.on('end', () => {
      const alpn = session.alpnProtocol;
      session.close();
      if (status === 0) reject(new Error('the stream ended without a response'));
      else resolve({ status, body, alpn });
    });
    req.on('error', (e) => {
      session.destroy();
      reject(e);
    });
    req.end();
  });
}

describe('createMeshHttpServer with http2: true under the inbound listener', () => {
  it('serves HTTP/2 by ALPN on the STRICT chain, HTTP/1.1 too, with the listener’s RBAC', async () => {
    const { ca, frontend, attacker, cp, mesh } = await istioMesh();
    let handledHere = 0;
    const app = Fastify({
      http2: true,
      serverFactory: (handler) => createMeshHttpServer({ mesh, http2: true }, handler) as never,
    });
    await app.register(meshPlugin, { mesh, drain: false });
    app.get('/*', async (req) => {
      handledHere++;
      return `h${req.raw.httpVersion} ${req.url}`;
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    cleanups.push(async () => {
      (app.server as unknown as { closeAllConnections(): void }).closeAllConnections();
      await app.close();
    });
    const port = (app.server.address() as AddressInfo).port;
    cp.setResources({ listeners: [istioInboundListener('127.0.0.1', port, reviewsChain())] });
    await until(
      async () =>
        (await h2Get(port, '/reviews', { client: frontend, ca: ca.cert }).catch(() => ({ status: 0 })))
          .status === 200,
      5_000,
      'serving',
    );

    // HTTP/2 over mTLS, negotiated by ALPN.
    expect(await h2Get(port, '/reviews/1', { client: frontend, ca: ca.cert })).toEqual({
      status: 200,
      body: 'h2.0 /reviews/1',
      alpn: 'h2',
    });
    // HTTP/1.1 clients on the same port (ALPN http/1.1 or none).
    expect(await httpCall(port, '/reviews/2', { client: frontend, ca: ca.cert })).toMatchObject({
      status: 200,
      body: 'h1.1 /reviews/2',
    });
    const before = handledHere;
    // RBAC: another principal (ALLOW), the admin path (DENY), both before the handler.
    const denied = await h2Get(port, '/reviews/1', { client: attacker, ca: ca.cert });
    expect(denied.status).toBe(403);
    expect(JSON.parse(denied.body).error).toMatchObject({ code: 'MESHLET_ERR_FORBIDDEN' });
    const admin = await h2Get(port, '/admin/users', { client: frontend, ca: ca.cert });
    expect(admin.status).toBe(403);
    expect(admin.body).toContain('envoy.filters.http.rbac.DENY/default-deny-admin-0');
    // STRICT: no client certificate, or h2c in plaintext, is refused.
    await expect(h2Get(port, '/reviews/1', { ca: ca.cert })).rejects.toThrow();
    await expect(h2Get(port, '/reviews/1', { plaintext: true })).rejects.toThrow();
    expect(handledHere).toBe(before);
  });
});
