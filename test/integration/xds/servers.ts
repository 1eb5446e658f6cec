import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import {
  type Client,
  credentials,
  Metadata,
  type ServerCredentials,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import express from 'express';
import Fastify from 'fastify';
import { meshMiddleware } from '../../../packages/express/src/index.js';
import { meshPlugin } from '../../../packages/fastify/src/index.js';
import {
  createMeshServer,
  type MeshServer,
  meshChannelCredentials,
} from '../../../packages/grpc/src/index.js';
import { EchoClient, type EchoReply, echoDefinition } from '../../../packages/grpc/test/helpers.js';
import type { Mesh } from '../../../packages/meshlet/src/index.js';
import {
  type CertificateSource,
  createMeshHttpServer,
  issueWorkloadCertificate,
  writeCertDirectory,
} from '../../../packages/tls/src/index.js';
import { tempDir } from '../../../packages/tls/test/helpers.js';

export const TD = 'spiffe://cluster.local/ns/default/sa';

/** A workload certificate directory in Istio's layout (the files istio-agent's bootstrap names). */
export async function istioWorkloadDir(
  ca: { cert: string; key: string },
  spiffeId: string,
  cleanups: Array<() => unknown>,
): Promise<string> {
  const { dir, cleanup } = tempDir('meshlet-istio-');
  cleanups.push(cleanup);
  const leaf = await issueWorkloadCertificate({ ca, spiffeId });
  await writeCertDirectory(dir, { cert: leaf.cert, key: leaf.key, ca: ca.cert }, 'istio');
  return dir;
}

const FIXTURE = join(
  import.meta.dirname,
  '../../../packages/xds/test/fixtures/istio-agent-grpc-bootstrap-golden.json',
);

/**
 * istio-agent's golden gRPC bootstrap (`pkg/istio-agent/grpcxds` testdata), with its paths
 * rewritten: the xDS server is `server` (insecure, as istio-agent's local proxy is), the
 * `default` file_watcher provider reads `certDir`.
 */
export function istioAgentBootstrap(server: string, certDir: string): Record<string, unknown> {
  const raw = JSON.parse(readFileSync(FIXTURE, 'utf8')) as Record<string, unknown>;
  const servers = raw.xds_servers as Array<Record<string, unknown>>;
  (servers[0] as Record<string, unknown>).server_uri = server;
  const providers = raw.certificate_providers as Record<string, { config: Record<string, string> }>;
  const cfg = (providers.default as { config: Record<string, string> }).config;
  cfg.certificate_file = join(certDir, 'cert-chain.pem');
  cfg.private_key_file = join(certDir, 'key.pem');
  cfg.ca_certificate_file = join(certDir, 'root-cert.pem');
  return raw;
}

export interface Answer {
  readonly status: number;
  readonly body: string;
  readonly connection: string | undefined;
}

/** One HTTP(S) request; `cert` a client certificate source (mTLS), `tls` false for plaintext. */
export function httpCall(
  port: number,
  path: string,
  opts: {
    tls?: boolean;
    client?: CertificateSource | undefined;
    ca?: string;
    method?: string;
    headers?: Record<string, string>;
    agent?: false;
  } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const base = {
      host: '127.0.0.1',
      port,
      path,
      method: opts.method ?? 'GET',
      headers: opts.headers ?? {},
      agent: false as const,
    };
    const done = (res: import('node:http').IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          body,
          connection: res.headers.connection as string | undefined,
        }),
      );
    };
    const req =
      opts.tls === false
        ? httpRequest(base, done)
        : httpsRequest(
            {
              ...base,
              ...(opts.client ? { key: opts.client.pem().key, cert: opts.client.pem().cert } : {}),
              ca: opts.ca,
              servername: 'reviews.default.svc',
              // workload certificates name SPIFFE IDs, not host names
              checkServerIdentity: () => undefined,
            },
            done,
          );
    req.on('error', reject);
    req.end();
  });
}

/** Requests that reached an application handler of the servers below (RBAC runs before them). */
export const handled = { count: 0 };

/** An Express app answering `express <path>` for every path, behind meshMiddleware. */
export function expressApp(mesh: Mesh): express.Express {
  const app = express();
  app.use(meshMiddleware({ mesh }));
  app.all(/.*/, (req, res) => {
    handled.count++;
    res.send(`express ${req.path}`);
  });
  return app;
}

export interface Served {
  readonly port: number;
  close(): Promise<void>;
}

/** Express on meshlet's HTTP server factory (TLS per connection from the inbound listener). */
export async function startExpress(mesh: Mesh): Promise<Served> {
  const server = createMeshHttpServer({ mesh }, expressApp(mesh));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** Fastify with meshlet's HTTP server factory as its `serverFactory`. */
export async function startFastify(mesh: Mesh): Promise<Served> {
  const app = Fastify({ serverFactory: (handler) => createMeshHttpServer({ mesh }, handler) as never });
  await app.register(meshPlugin, { mesh, drain: false });
  app.all('/*', async (req) => {
    handled.count++;
    return `fastify ${req.url.split('?')[0]}`;
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  return {
    port: (app.server.address() as AddressInfo).port,
    close: async () => {
      (app.server as unknown as { closeAllConnections(): void }).closeAllConnections();
      await app.close();
    },
  };
}

/** A meshlet gRPC echo server bound with insecure credentials: the inbound listener decides TLS. */
export async function startGrpc(mesh: Mesh, creds?: ServerCredentials): Promise<Served & { ms: MeshServer }> {
  const ms = createMeshServer({ mesh, health: false });
  const handler = (call: { request: { text: string } }, cb: (e: null, r: EchoReply) => void) => {
    handled.count++;
    cb(null, { text: call.request.text, server: 'grpc' });
  };
  ms.server.addService(echoDefinition, { Echo: handler });
  // A second method, for policies on the path: /test.Admin/Drop
  const echo = echoDefinition.Echo as (typeof echoDefinition)[string];
  ms.server.addService(
    { Drop: { ...echo, path: '/test.Admin/Drop', originalName: 'drop' } },
    { Drop: handler },
  );
  const { ServerCredentials } = await import('@grpc/grpc-js');
  const port = await new Promise<number>((resolve, reject) =>
    ms.server.bindAsync('127.0.0.1:0', creds ?? ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  return { port, ms, close: async () => ms.server.forceShutdown() };
}

export interface GrpcOutcome {
  readonly code: number;
  readonly details: string;
}

/** One unary call to `/test.Echo/Echo` (or `path`): its status code (0 = OK) and details. */
export function grpcCall(
  port: number,
  opts: {
    client?: CertificateSource | undefined;
    plaintext?: boolean;
    path?: string;
    metadata?: Record<string, string>;
  } = {},
): Promise<GrpcOutcome> {
  const creds =
    opts.plaintext === true || opts.client === undefined
      ? credentials.createInsecure()
      : meshChannelCredentials(opts.client);
  // grpc-js sends the target's host as the TLS server name, and Node 26 refuses an IP address
  // there (RFC 6066): a TLS channel to `127.0.0.1:port` names the server as grpc-js documents
  // for such targets. The mesh credentials check the SPIFFE ID, not the name.
  const client = new EchoClient(
    `127.0.0.1:${port}`,
    creds,
    creds._isSecure() ? { 'grpc.ssl_target_name_override': 'localhost' } : {},
  ) as Client;
  const md = new Metadata();
  for (const [k, v] of Object.entries(opts.metadata ?? {})) md.set(k, v);
  const path = opts.path ?? '/test.Echo/Echo';
  return new Promise<GrpcOutcome>((resolve) => {
    client.makeUnaryRequest(
      path,
      (v: unknown) => Buffer.from(JSON.stringify(v)),
      (b: Buffer) => JSON.parse(b.toString()),
      { text: 'hi' },
      md,
      { deadline: Date.now() + 3_000 },
      (err: ServiceError | null) => {
        client.close();
        resolve(err ? { code: err.code, details: err.details } : { code: status.OK, details: '' });
      },
    );
  });
}
