/**
 * Differential: grpc-js-xds (its `XdsChannelCredentials`, gRFC A29) and meshlet's gRPC client read
 * the same control plane and the same bootstrap (istio-agent's, its `default` file_watcher
 * provider pointing at the same certificate files) and must agree: both reach an mTLS server
 * whose identity the cluster's SAN matchers accept, presenting the provider's certificate, and
 * both are refused by a server whose identity they do not accept — never falling back to
 * plaintext. The clusters are in the shape istiod's grpcgen builds (both the current and the
 * deprecated certificate-provider fields; grpc-js-xds reads only the current ones).
 *
 * grpc-js-xds registers itself and caches its bootstrap per process: this file runs alone (vitest
 * runs each file in its own process).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ControlPlane, startControlPlane } from '../../packages/control-plane/src/index.js';
import { meshClientOptions } from '../../packages/grpc/src/index.js';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';
import { createCa } from '../../packages/tls/src/index.js';
import { istioAgentBootstrap, mtlsGrpcServer, TD, who, writeIstioCerts } from './xds/security-helpers.js';

const cleanups: Array<() => unknown> = [];
let cp: ControlPlane;
let mesh: Mesh;
let callers: string[];
const clients: grpc.Client[] = [];
let XdsChannelCredentials: new (fallback: grpc.ChannelCredentials) => grpc.ChannelCredentials;

beforeAll(async () => {
  const ca = await createCa();
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-istio-certs-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  await writeIstioCerts(dir, ca, `${TD}/frontend`);
  const ratings = await mtlsGrpcServer(ca, 'ratings', `${TD}/ratings`, cleanups);
  callers = ratings.callers;
  cp = await startControlPlane({
    config: {
      services: {
        ratings: { identity: `${TD}/ratings`, endpoints: [`127.0.0.1:${ratings.port}`] },
        impostor: { identity: `${TD}/reviews`, endpoints: [`127.0.0.1:${ratings.port}`] },
      },
    },
  });
  const bootstrap = istioAgentBootstrap(cp.address, dir);
  process.env.GRPC_XDS_BOOTSTRAP_CONFIG = bootstrap;
  const xds = createRequire(import.meta.url)('@grpc/grpc-js-xds') as {
    register(): void;
    XdsChannelCredentials: typeof XdsChannelCredentials;
  };
  xds.register();
  XdsChannelCredentials = xds.XdsChannelCredentials;
  mesh = await createMesh({}, { env: { GRPC_XDS_BOOTSTRAP_CONFIG: bootstrap } });
}, 30_000);

afterAll(async () => {
  for (const c of clients) c.close();
  await mesh?.close();
  await cp?.close();
  for (const c of cleanups.splice(0).reverse()) await c();
  delete process.env.GRPC_XDS_BOOTSTRAP_CONFIG;
});

function grpcJsXds(name: string): grpc.Client {
  const c = new grpc.Client(`xds:///${name}`, new XdsChannelCredentials(grpc.credentials.createInsecure()));
  clients.push(c);
  return c;
}

function meshlet(name: string): grpc.Client {
  const target = `mesh:///${name}`;
  const c = new grpc.Client(
    target,
    grpc.credentials.createInsecure(),
    meshClientOptions(target, { retry: false }),
  );
  clients.push(c);
  return c;
}

const outcome = (p: Promise<string>) =>
  p.then(
    (v) => ({ ok: v }),
    (e: grpc.ServiceError) => ({ code: e.code }),
  );

describe('grpc-js-xds and meshlet under xDS-managed mTLS (gRFC A29)', () => {
  it('both reach the server the SAN matchers accept, with the provider’s certificate', async () => {
    expect(await outcome(who(grpcJsXds('ratings')))).toEqual({ ok: 'ratings' });
    expect(await outcome(who(meshlet('ratings')))).toEqual({ ok: 'ratings' });
    expect(callers).toEqual([`${TD}/frontend`, `${TD}/frontend`]);
  });

  it('both are refused by a server whose identity the SAN matchers do not accept', async () => {
    const theirs = await outcome(who(grpcJsXds('impostor')));
    const ours = await outcome(who(meshlet('impostor')));
    expect(theirs).toEqual({ code: grpc.status.UNAVAILABLE });
    expect(ours).toEqual(theirs);
    expect(callers).toHaveLength(2); // no handler ran for either
  });
});
