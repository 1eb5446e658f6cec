import { Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { startControlPlane } from '../../packages/control-plane/src/index.js';
import { createMeshClient, createMeshServer, meshServerCredentials } from '../../packages/grpc/src/index.js';
import { EchoClient, type EchoReply, echoDefinition } from '../../packages/grpc/test/helpers.js';
import { createMesh } from '../../packages/meshlet/src/index.js';
import { CertificateSource, createCa } from '../../packages/tls/src/index.js';
import { issuedWorkloadDir } from '../../packages/tls/test/helpers.js';
import { bootstrapJson } from './xds/helpers.js';

// A routed gRPC target (`mesh:///NAME`, NAME an xDS listener) reaches several clusters over one
// channel; with mTLS on, each connection is secured as the cluster it serves: that cluster's
// expected identity (xDS UpstreamTlsContext SAN matchers), never plaintext.

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const TD = 'spiffe://cluster.local/ns/default/sa';

const workloadDir = (ca: { cert: string; key: string }, name: string): Promise<string> =>
  issuedWorkloadDir(ca, `${TD}/${name}`, cleanups);

/** An mTLS gRPC echo server answering with `name`; records the callers' SPIFFE IDs. */
async function mtlsServer(
  ca: { cert: string; key: string },
  name: string,
  principals: string[],
): Promise<number> {
  const source = new CertificateSource({ dir: await workloadDir(ca, name), watch: false });
  cleanups.push(() => source.close());
  const ms = createMeshServer({
    health: false,
    authorizer: (a) => {
      principals.push(a.principal ?? 'none');
      return { allowed: a.mtls === true, reason: a.mtls ? 'mTLS peer' : 'mTLS required' };
    },
  });
  ms.server.addService(echoDefinition, {
    Echo: (call: { request: { text: string } }, cb: (e: null, r: EchoReply) => void) =>
      cb(null, { text: call.request.text, server: name }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    ms.server.bindAsync('127.0.0.1:0', meshServerCredentials(source), (e, p) => (e ? reject(e) : resolve(p))),
  );
  cleanups.push(() => ms.server.forceShutdown());
  return port;
}

function call(client: unknown, to: string): Promise<EchoReply> {
  const md = new Metadata();
  md.set('x-to', to);
  return new Promise((resolve, reject) =>
    (
      client as {
        echo(r: object, md: Metadata, o: object, cb: (e: ServiceError | null, r?: EchoReply) => void): void;
      }
    ).echo({ text: 'x' }, md, { deadline: Date.now() + 3_000 }, (e, r) =>
      e ? reject(e) : resolve(r as EchoReply),
    ),
  );
}

describe('xDS-routed gRPC channels under mTLS', () => {
  it('secure each cluster’s connections with that cluster’s identity', async () => {
    const ca = await createCa();
    const principals: string[] = [];
    const a = await mtlsServer(ca, 'ratings', principals);
    const b = await mtlsServer(ca, 'reviews', principals);
    const cp = await startControlPlane({
      config: {
        services: {
          ratings: { endpoints: [`127.0.0.1:${a}`], identity: `${TD}/ratings`, listener: false },
          reviews: { endpoints: [`127.0.0.1:${b}`], identity: `${TD}/reviews`, listener: false },
          // The ratings server, but expected to be reviews: its handshake must fail.
          impostor: { endpoints: [`127.0.0.1:${a}`], identity: `${TD}/reviews`, listener: false },
          front: {
            routes: [
              { match: { headers: [{ name: 'x-to', exact: 'reviews' }] }, cluster: 'reviews' },
              { match: { headers: [{ name: 'x-to', exact: 'impostor' }] }, cluster: 'impostor' },
              { cluster: 'ratings' },
            ],
          },
        },
      },
    });
    cleanups.push(() => cp.close());
    const mesh = await createMesh(
      { tls: { dir: await workloadDir(ca, 'frontend') } },
      { env: { GRPC_XDS_BOOTSTRAP_CONFIG: bootstrapJson([cp.address]) } },
    );
    cleanups.push(() => mesh.close());
    const client = createMeshClient(EchoClient, 'mesh:///front', { retry: false });
    cleanups.push(() => client.close());

    expect((await call(client, 'ratings')).server).toBe('ratings');
    expect((await call(client, 'reviews')).server).toBe('reviews');
    expect((await call(client, 'ratings')).server).toBe('ratings');
    expect(principals).toEqual([`${TD}/frontend`, `${TD}/frontend`, `${TD}/frontend`]);
    await expect(call(client, 'impostor')).rejects.toMatchObject({ code: status.UNAVAILABLE });
    // The impostor's call never reached a handler (the handshake failed, no plaintext fallback).
    expect(principals).toHaveLength(3);
  });
});
