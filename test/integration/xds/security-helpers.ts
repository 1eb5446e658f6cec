import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { meshServerCredentials } from '../../../packages/grpc/src/index.js';
import {
  CertificateSource,
  createHttpsServer,
  issueWorkloadCertificate,
  type PemPair,
  writeCertDirectory,
} from '../../../packages/tls/src/index.js';
import { tempDir } from '../../../packages/tls/test/helpers.js';

export const TD = 'spiffe://cluster.local/ns/default/sa';

/**
 * istio-agent's gRPC bootstrap (pkg/istio-agent/testdata/grpc-bootstrap.json, copied into
 * packages/xds/test/fixtures) with its paths rewritten: the xDS server is `server`, and the
 * `default` certificate provider's files (cert-chain.pem, key.pem, root-cert.pem) live in `dir`.
 */
export function istioAgentBootstrap(server: string, dir: string): string {
  const text = readFileSync(
    join(import.meta.dirname, '../../../packages/xds/test/fixtures/istio-agent-grpc-bootstrap-golden.json'),
    'utf8',
  );
  const b = JSON.parse(text.replaceAll('/cert/path', dir)) as {
    xds_servers: Array<{ server_uri: string }>;
  };
  (b.xds_servers[0] as { server_uri: string }).server_uri = server;
  return JSON.stringify(b);
}

/** Writes a workload certificate for `spiffeId` in Istio's file names; returns its serial number. */
export async function writeIstioCerts(dir: string, ca: PemPair, spiffeId: string): Promise<string> {
  const leaf = await issueWorkloadCertificate({ ca, spiffeId });
  writeFileSync(join(dir, 'cert-chain.pem'), leaf.cert);
  writeFileSync(join(dir, 'key.pem'), leaf.key);
  writeFileSync(join(dir, 'root-cert.pem'), ca.cert);
  return new X509Certificate(leaf.cert).serialNumber;
}

/** A directory with a workload certificate (Kubernetes layout) for a server. */
async function serverSource(ca: PemPair, spiffeId: string, cleanups: Array<() => unknown>) {
  const { dir, cleanup } = tempDir('meshlet-server-');
  cleanups.push(cleanup);
  const leaf = await issueWorkloadCertificate({ ca, spiffeId });
  await writeCertDirectory(dir, { cert: leaf.cert, key: leaf.key, ca: ca.cert });
  const source = new CertificateSource({ dir, watch: false });
  cleanups.push(() => source.close());
  return source;
}

/** What an mTLS server saw of one request: its client's SPIFFE ID and certificate serial. */
export interface Seen {
  principal: string | undefined;
  serial: string | undefined;
}

/**
 * A STRICT mTLS HTTPS server presenting `spiffeId`, answering with `name`, closing each connection
 * after its response (so every request is a new handshake), and recording its clients.
 */
export async function mtlsHttpServer(
  ca: PemPair,
  name: string,
  spiffeId: string,
  cleanups: Array<() => unknown>,
): Promise<{ port: number; seen: Seen[] }> {
  const source = await serverSource(ca, spiffeId, cleanups);
  const seen: Seen[] = [];
  const server = createHttpsServer({ source }, (req: IncomingMessage, res: ServerResponse) => {
    const cert = (req.socket as import('node:tls').TLSSocket).getPeerCertificate();
    const uri = /URI:(spiffe:\/\/[^,]+)/.exec(cert?.subjectaltname ?? '')?.[1];
    seen.push({ principal: uri, serial: cert?.serialNumber });
    res.setHeader('connection', 'close');
    res.end(name);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return { port: (server.address() as AddressInfo).port, seen };
}

export const WHO = {
  path: '/meshlet.test.Echo/Who',
  requestStream: false,
  responseStream: false,
  requestSerialize: (b: Buffer) => b,
  requestDeserialize: (b: Buffer) => b,
  responseSerialize: (b: Buffer) => b,
  responseDeserialize: (b: Buffer) => b,
};

/** A STRICT mTLS gRPC server presenting `spiffeId`, answering `Who` with `name` and recording callers. */
export async function mtlsGrpcServer(
  ca: PemPair,
  name: string,
  spiffeId: string,
  cleanups: Array<() => unknown>,
): Promise<{ port: number; callers: string[] }> {
  const source = await serverSource(ca, spiffeId, cleanups);
  const callers: string[] = [];
  const server = new grpc.Server();
  server.addService({ Who: WHO } as grpc.ServiceDefinition, {
    Who: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const san = call.getAuthContext().sslPeerCertificate?.subjectaltname ?? '';
      callers.push(/URI:(spiffe:\/\/[^,]+)/.exec(san)?.[1] ?? 'none');
      cb(null, Buffer.from(name));
    },
  });
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync('127.0.0.1:0', meshServerCredentials(source), (e, p) => (e ? rej(e) : res(p))),
  );
  cleanups.push(() => server.forceShutdown());
  return { port, callers };
}

/** Calls `Who` on `client` (a grpc-js client of any channel); resolves the answering server's name. */
export function who(client: grpc.Client): Promise<string> {
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(
      WHO.path,
      WHO.requestSerialize,
      WHO.responseDeserialize,
      Buffer.alloc(0),
      new grpc.Metadata(),
      { deadline: Date.now() + 5_000 },
      (err, res) => (err ? reject(err) : resolve(String(res))),
    ),
  );
}
