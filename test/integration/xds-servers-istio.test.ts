import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { status } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { type ControlPlane, startControlPlane } from '../../packages/control-plane/src/index.js';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';
import { CertificateSource, createCa, getMeshTls } from '../../packages/tls/src/index.js';
import {
  ANY_PRINCIPAL,
  istioFilterChain,
  istioInboundListener,
  istioRbac,
  operationOf,
  principalsOf,
} from '../../packages/xds/test/istio-shapes.js';
import { until } from './xds/helpers.js';
import { writeIstioCerts } from './xds/security-helpers.js';
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

// A workload driven end to end by inbound resources in istiod's proxyless shape (grpcgen's
// buildInboundListeners / buildInboundFilterChain / buildRBAC, istio-shapes.ts), with istio-agent's
// golden bootstrap: STRICT mTLS, an AuthorizationPolicy ALLOW by principal and DENY by path. The
// same listener shape serves Express and Fastify (meshlet's HTTP server factory) and gRPC.

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** istiod's STRICT listener for the reviews workload: DENY /admin*, ALLOW from frontend only. */
function reviewsChain() {
  return istioFilterChain({
    mtls: true,
    deny: istioRbac('DENY', {
      'default-deny-admin-0': {
        principals: [ANY_PRINCIPAL],
        permissions: [operationOf({ paths: ['/admin*', '/test.Admin/*'] })],
      },
    }),
    allow: istioRbac('ALLOW', {
      'default-allow-frontend-0': {
        principals: [principalsOf(['cluster.local/ns/default/sa/frontend'])],
        permissions: [operationOf({ paths: ['/*'] })],
      },
    }),
  });
}

async function workload(opts: { tlsSection: boolean } = { tlsSection: true }): Promise<{
  mesh: Mesh;
  cp: ControlPlane;
  frontend: CertificateSource;
  attacker: CertificateSource;
  ca: string;
  caPair: { cert: string; key: string };
  dir: string;
}> {
  const ca = await createCa();
  const dir = await istioWorkloadDir(ca, `${TD}/reviews`, cleanups);
  const source = (d: string) => {
    const s = new CertificateSource({ dir: d, watch: false });
    cleanups.push(() => s.close());
    return s;
  };
  const frontend = source(await istioWorkloadDir(ca, `${TD}/frontend`, cleanups));
  const attacker = source(await istioWorkloadDir(ca, `${TD}/attacker`, cleanups));
  const cp = await startControlPlane({ resources: { listeners: [] } });
  cleanups.push(() => cp.close());
  // With tls: (the directory and the bootstrap's provider read the same files), or a bare
  // createMesh() with istio-agent's bootstrap in the environment: the provider alone.
  const mesh = opts.tlsSection
    ? await createMesh({
        tls: { dir, layout: 'istio' },
        xds: { bootstrap: istioAgentBootstrap(cp.address, dir) },
      })
    : await createMesh(
        {},
        { env: { GRPC_XDS_BOOTSTRAP_CONFIG: JSON.stringify(istioAgentBootstrap(cp.address, dir)) } },
      );
  cleanups.push(() => mesh.close());
  return { mesh, cp, frontend, attacker, ca: ca.cert, caPair: ca, dir };
}

describe('an Istio proxyless workload (STRICT mTLS, ALLOW by principal, DENY by path)', () => {
  it('Express, Fastify and gRPC serve only once their listener is known, then enforce it alike', async () => {
    const { mesh, cp, frontend, attacker, ca } = await workload();
    const servers: Array<Served & { kind: string }> = [];
    for (const [kind, start] of [
      ['express', startExpress],
      ['fastify', startFastify],
      ['grpc', startGrpc],
    ] as const) {
      const s = await start(mesh);
      cleanups.push(() => s.close());
      servers.push({ ...s, kind });
    }
    // Before the listener is known the servers refuse connections without a byte (A36).
    for (const s of servers) {
      if (s.kind === 'grpc')
        expect((await grpcCall(s.port, { client: frontend })).code).toBe(status.UNAVAILABLE);
      else await expect(httpCall(s.port, '/reviews', { client: frontend, ca })).rejects.toThrow();
    }
    cp.setResources({
      listeners: servers.map((s) => istioInboundListener('127.0.0.1', s.port, reviewsChain())),
    });
    const http = servers.filter((s) => s.kind !== 'grpc');
    await until(
      async () =>
        (await httpCall(http[0]!.port, '/reviews', { client: frontend, ca }).catch(() => ({ status: 0 })))
          .status === 200,
      5_000,
      'serving',
    );

    for (const s of http) {
      // ALLOW by principal
      const ok = await httpCall(s.port, '/reviews/1', { client: frontend, ca });
      expect(ok).toMatchObject({ status: 200, body: `${s.kind} /reviews/1` });
      // a valid certificate of the wrong principal: 403 before the handler runs
      const before = handled.count;
      const denied = await httpCall(s.port, '/reviews/1', { client: attacker, ca });
      expect(denied.status).toBe(403);
      expect(handled.count).toBe(before);
      expect(JSON.parse(denied.body).error).toMatchObject({ code: 'MESHLET_ERR_FORBIDDEN' });
      expect(denied.body).toContain('no ALLOW policy matched');
      // DENY by path, even for the allowed principal
      const admin = await httpCall(s.port, '/admin/users', { client: frontend, ca });
      expect(admin.status).toBe(403);
      expect(admin.body).toContain('envoy.filters.http.rbac.DENY/default-deny-admin-0');
      // STRICT: no client certificate, or plaintext, never reaches the application
      await expect(httpCall(s.port, '/reviews/1', { ca })).rejects.toThrow();
      await expect(httpCall(s.port, '/reviews/1', { tls: false })).rejects.toThrow();
    }
    const g = servers.find((s) => s.kind === 'grpc') as Served;
    expect(await grpcCall(g.port, { client: frontend })).toEqual({ code: status.OK, details: '' });
    const before = handled.count;
    const wrong = await grpcCall(g.port, { client: attacker });
    expect(wrong.code).toBe(status.PERMISSION_DENIED);
    expect(handled.count).toBe(before);
    expect(wrong.details).toContain('MESHLET_ERR_FORBIDDEN');
    expect((await grpcCall(g.port, { client: frontend, path: '/test.Admin/Drop' })).code).toBe(
      status.PERMISSION_DENIED,
    );
    expect((await grpcCall(g.port, { plaintext: true })).code).toBe(status.UNAVAILABLE);

    const inbound = (
      mesh.snapshot().extensions.xds as {
        inbound: Array<{ name: string; serving: boolean; chains: unknown[] }>;
      }
    ).inbound;
    expect(inbound.map((l) => l.serving)).toEqual([true, true, true]);
    expect(inbound[0]?.name).toMatch(/^xds\.istio\.io\/grpc\/lds\/inbound\/127\.0\.0\.1:\d+$/);
    expect(inbound[0]?.chains).toEqual([
      {
        name: 'inbound-mtls',
        tls: 'mTLS (default)',
        rbac: ['envoy.filters.http.rbac.DENY: DENY 1 policies', 'envoy.filters.http.rbac: ALLOW 1 policies'],
      },
    ]);
  });
});

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

describe('a bare createMesh() with istio-agent’s bootstrap (no tls: section)', () => {
  it('servers take their certificate from the bootstrap’s default provider, rotated in place; a corrupted rotation keeps the last good', async () => {
    const { mesh, cp, frontend, attacker, ca, caPair, dir } = await workload({ tlsSection: false });
    const tls = getMeshTls(mesh);
    expect(tls?.meshSourceOrigin).toBe('certificate_providers');
    const provider = tls?.provider('default');
    const express = await startExpress(mesh);
    cleanups.push(() => express.close());
    const grpc = await startGrpc(mesh);
    cleanups.push(() => grpc.close());
    cp.setResources({
      listeners: [express, grpc].map((s) => istioInboundListener('127.0.0.1', s.port, reviewsChain())),
    });
    await until(
      async () =>
        (await httpCall(express.port, '/reviews', { client: frontend, ca }).catch(() => ({ status: 0 })))
          .status === 200,
      5_000,
      'serving',
    );
    const first = provider?.current.serialNumber as string;
    expect(await servedSerial(express.port, frontend, ca)).toBe(first);
    expect((await httpCall(express.port, '/reviews/1', { client: attacker, ca })).status).toBe(403);
    expect((await grpcCall(grpc.port, { client: frontend })).code).toBe(status.OK);

    // Rotated: new handshakes get the new certificate, on both servers' paths.
    const next = await writeIstioCerts(dir, caPair, `${TD}/reviews`);
    await provider?.reload();
    expect(provider?.current.serialNumber).toBe(next);
    expect(next).not.toBe(first);
    expect(await servedSerial(express.port, frontend, ca)).toBe(next);
    expect((await httpCall(express.port, '/reviews/1', { client: frontend, ca })).status).toBe(200);
    expect((await grpcCall(grpc.port, { client: frontend })).code).toBe(status.OK);

    // Corrupted: rejected, the last good certificate still served.
    writeFileSync(join(dir, 'cert-chain.pem'), 'not a certificate');
    await provider?.reload();
    expect(provider?.current.serialNumber).toBe(next);
    expect(await servedSerial(express.port, frontend, ca)).toBe(next);
    expect((await httpCall(express.port, '/reviews/1', { client: frontend, ca })).status).toBe(200);
  });
});
