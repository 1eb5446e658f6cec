import { status } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { Mesh, parseConfig } from '../../packages/core/src/index.js';
import {
  attachGrpc,
  createMeshClient,
  createMeshServer,
  meshChannelCredentials,
  meshServerCredentials,
} from '../../packages/grpc/src/index.js';
import { EchoClient, type EchoReply, echo, echoDefinition } from '../../packages/grpc/test/helpers.js';
import { CertificateSource, createCa, rotateCertDirectory } from '../../packages/tls/src/index.js';
import { issuedWorkloadDir } from '../../packages/tls/test/helpers.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const TD = 'spiffe://cluster.local/ns/default/sa';

const workloadDir = (ca: { cert: string; key: string }, name: string): Promise<string> =>
  issuedWorkloadDir(ca, `${TD}/${name}`, cleanups);

describe('gRPC mTLS with rotating credentials', () => {
  it('verifies both sides by SPIFFE ID, exposes the peer identity, and uses rotated certificates for new connections', async () => {
    const ca = await createCa();
    const serverDir = await workloadDir(ca, 'reviews');
    const serverSource = new CertificateSource({ dir: serverDir, watch: false });
    const clientDir = await workloadDir(ca, 'frontend');
    const clientSource = new CertificateSource({ dir: clientDir, watch: false });
    cleanups.push(() => serverSource.close());
    cleanups.push(() => clientSource.close());

    const principals: Array<string | undefined> = [];
    const ms = createMeshServer({
      health: false,
      authorizer: (a) => {
        principals.push(a.principal);
        return { allowed: a.mtls === true, reason: a.mtls ? 'mTLS peer' : 'mTLS required' };
      },
    });
    ms.server.addService(echoDefinition, {
      Echo: (call: { request: { text: string } }, cb: (e: null, r: EchoReply) => void) =>
        cb(null, { text: call.request.text, server: 'reviews' }),
    });
    const port = await new Promise<number>((resolve, reject) =>
      ms.server.bindAsync('127.0.0.1:0', meshServerCredentials(serverSource), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    cleanups.push(() => ms.server.forceShutdown());

    const mesh = new Mesh(parseConfig({ services: { reviews: { endpoints: [`127.0.0.1:${port}`] } } }));
    attachGrpc(mesh);
    cleanups.push(() => mesh.close());
    await mesh.ready();

    const good = meshChannelCredentials(clientSource, { identity: `${TD}/reviews` });
    const client = createMeshClient(EchoClient, 'mesh:///reviews', { credentials: good });
    cleanups.push(() => client.close());
    expect((await echo(client, { text: 'hi' })).server).toBe('reviews');
    expect(principals).toEqual([`${TD}/frontend`]);

    // a server that is not who the service expects: the handshake fails, no plaintext fallback
    const wrong = createMeshClient(EchoClient, 'mesh:///reviews', {
      credentials: meshChannelCredentials(clientSource, { identity: `${TD}/ratings` }),
      retry: false,
    });
    cleanups.push(() => wrong.close());
    await expect(echo(wrong, { text: 'x' }, { deadline: Date.now() + 3_000 })).rejects.toMatchObject({
      code: status.UNAVAILABLE,
    });
    expect(principals).toHaveLength(1);

    // plaintext to the mTLS server fails too
    const plain = createMeshClient(EchoClient, 'mesh:///reviews', { retry: false });
    cleanups.push(() => plain.close());
    await expect(echo(plain, { text: 'x' }, { deadline: Date.now() + 3_000 })).rejects.toMatchObject({
      code: expect.any(Number),
    });

    // rotation: new connections present the new certificate, the open one keeps working
    await rotateCertDirectory(clientDir, { ca, spiffeId: `${TD}/frontend-v2` });
    await clientSource.reload();
    expect(clientSource.current.spiffeId).toBe(`${TD}/frontend-v2`);
    const fresh = createMeshClient(EchoClient, 'mesh:///reviews', {
      credentials: good,
      channelOptions: { 'grpc.meshlet_test_generation': 2 },
    });
    cleanups.push(() => fresh.close());
    await echo(fresh, { text: 'new' });
    await echo(client, { text: 'old connection' });
    expect(principals.slice(1)).toEqual([`${TD}/frontend-v2`, `${TD}/frontend`]);

    // server rotation: new handshakes get the server's new certificate (its new SPIFFE ID)
    await rotateCertDirectory(serverDir, { ca, spiffeId: `${TD}/reviews-v2` });
    await serverSource.reload();
    const v2 = createMeshClient(EchoClient, 'mesh:///reviews', {
      credentials: meshChannelCredentials(clientSource, { identity: `${TD}/reviews-v2` }),
      retry: false,
    });
    cleanups.push(() => v2.close());
    expect((await echo(v2, { text: 'rotated server' })).server).toBe('reviews');
    await echo(client, { text: 'old connection still fine' });
  });
});
