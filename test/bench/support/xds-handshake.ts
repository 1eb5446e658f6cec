/**
 * The mTLS handshake with certificates from the xDS bootstrap's certificate provider vs the `tls:`
 * directory (issue 12: "≤ 1.05×"), both sides, the same workload certificate read by each:
 *
 * - client: meshlet's connector of a `tls:` service (`createTlsConnector` over the directory's
 *   source, SPIFFE ID check) vs the connector of an xDS cluster's `UpstreamTlsContext`
 *   (`createUpstreamTlsConnector` over the `default` provider instance MeshTls builds from
 *   istio-agent's bootstrap, an exact URI SAN matcher), against one TLS server;
 * - server: the HTTPS server `tls:` gives (`createHttpsServer` over the directory) vs meshlet's HTTP
 *   server factory serving an inbound Listener's STRICT chain in istiod's shape (its
 *   `DownstreamTlsContext` names the provider: first-byte check, chain match, hand-off), each
 *   handshaken by the same `tls.connect` client.
 *
 * Every handshake is a full one (the servers issue no session tickets, as a fresh peer would see).
 * Rounds alternate the two paths; per path the median over rounds of wall time and of process CPU
 * time (user + system: client and server run in this process, and CPU time is less disturbed by
 * other processes on a shared machine) per handshake.
 */
import { constants } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createServer as createTlsServer, connect as tlsConnect } from 'node:tls';
import { startControlPlane } from '../../../packages/control-plane/src/index.js';
import type { SanMatcher } from '../../../packages/core/src/index.js';
import { createMesh } from '../../../packages/meshlet/src/index.js';
import { createUpstreamTlsConnector } from '../../../packages/tls/src/client.js';
import {
  type CertificateSource,
  type Connector,
  createCa,
  createHttpsServer,
  createMeshHttpServer,
  createTlsConnector,
  getMeshTls,
  issueWorkloadCertificate,
} from '../../../packages/tls/src/index.js';
import { istioFilterChain, istioInboundListener } from '../../../packages/xds/test/istio-shapes.js';
import { istioAgentBootstrap, istioWorkloadDir } from '../../integration/xds/servers.js';

const TD = 'spiffe://cluster.local/ns/default/sa';
const NO_TICKETS = constants.SSL_OP_NO_TICKET;

export interface HandshakeSide {
  /** Wall time per handshake (ms), median over rounds. */
  readonly wallMs: { readonly tlsDir: number; readonly provider: number; readonly ratio: number };
  /** Process CPU time per handshake (ms), median over rounds. */
  readonly cpuMs: { readonly tlsDir: number; readonly provider: number; readonly ratio: number };
}

export interface HandshakeResult {
  readonly handshakesPerRound: number;
  readonly rounds: number;
  readonly client: HandshakeSide;
  readonly server: HandshakeSide;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
};
const r4 = (x: number) => Math.round(x * 10_000) / 10_000;

/** `n` handshakes one after the other: wall and CPU ms per handshake. */
async function timed(n: number, one: () => Promise<void>): Promise<{ wall: number; cpu: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await one();
  const wall = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { wall: wall / n, cpu: (c.user + c.system) / 1000 / n };
}

/** Alternating rounds of two paths; medians and the ratio provider / tlsDir. */
async function compare(
  rounds: number,
  n: number,
  tlsDir: () => Promise<void>,
  provider: () => Promise<void>,
): Promise<HandshakeSide> {
  await timed(Math.max(5, n >> 2), tlsDir);
  await timed(Math.max(5, n >> 2), provider);
  const a: Array<{ wall: number; cpu: number }> = [];
  const b: Array<{ wall: number; cpu: number }> = [];
  for (let r = 0; r < rounds; r++) {
    if (r % 2 === 0) {
      a.push(await timed(n, tlsDir));
      b.push(await timed(n, provider));
    } else {
      b.push(await timed(n, provider));
      a.push(await timed(n, tlsDir));
    }
  }
  const side = (k: 'wall' | 'cpu') => {
    const x = median(a.map((v) => v[k]));
    const y = median(b.map((v) => v[k]));
    return { tlsDir: r4(x), provider: r4(y), ratio: Math.round((y / x) * 1000) / 1000 };
  };
  return { wallMs: side('wall'), cpuMs: side('cpu') };
}

/** One connection through an undici connector, closed once the handshake is done. */
function viaConnector(connector: Connector, port: number): () => Promise<void> {
  const opts = {
    hostname: '127.0.0.1',
    host: '127.0.0.1',
    protocol: 'https:',
    port: String(port),
    servername: '',
  };
  return () =>
    new Promise<void>((resolve, reject) =>
      connector(opts as never, (err, socket) => {
        if (err) reject(err);
        else {
          socket?.destroy();
          resolve();
        }
      }),
    );
}

/** One `tls.connect` handshake with `client`'s certificate, closed once done. */
function viaTlsConnect(port: number, client: { key: string; cert: string }, ca: string): () => Promise<void> {
  return () =>
    new Promise<void>((resolve, reject) => {
      const s = tlsConnect(
        {
          host: '127.0.0.1',
          port,
          key: client.key,
          cert: client.cert,
          ca,
          checkServerIdentity: () => undefined,
        },
        () => {
          s.destroy();
          resolve();
        },
      );
      s.once('error', reject);
    });
}

/** One handshake along each of the four paths, over one setup. */
export interface HandshakePaths {
  readonly clientDir: () => Promise<void>;
  readonly clientProvider: () => Promise<void>;
  readonly serverDir: () => Promise<void>;
  readonly serverProvider: () => Promise<void>;
  close(): Promise<void>;
}

/** The workload, its two meshes, the upstream, the two servers and the inbound listener. */
export async function handshakePaths(): Promise<HandshakePaths> {
  const cleanups: Array<() => unknown> = [];
  const close = async () => {
    for (const c of cleanups.reverse()) await c();
  };
  try {
    const ca = await createCa();
    // The workload (reviews): its directory in Istio's layout, read by `tls:` and by the
    // bootstrap's `default` file_watcher instance alike.
    const dir = await istioWorkloadDir(ca, `${TD}/reviews`, cleanups);
    const cp = await startControlPlane({ resources: { listeners: [] } });
    cleanups.push(() => cp.close());
    const meshDir = await createMesh({ tls: { dir, layout: 'istio' } });
    cleanups.push(() => meshDir.close());
    const meshProvider = await createMesh(
      {},
      { env: { GRPC_XDS_BOOTSTRAP_CONFIG: JSON.stringify(istioAgentBootstrap(cp.address, dir)) } },
    );
    cleanups.push(() => meshProvider.close());
    const dirSource = getMeshTls(meshDir)?.meshSource as CertificateSource;
    const provider = getMeshTls(meshProvider)?.provider('default') as CertificateSource;
    if (!dirSource || !provider) throw new Error('no certificate sources');

    // Client side: both connectors handshake with one upstream (ratings), mTLS, no tickets.
    const ratings = await issueWorkloadCertificate({ ca, spiffeId: `${TD}/ratings` });
    const upstream = createTlsServer(
      {
        key: ratings.key,
        cert: ratings.cert,
        ca: ca.cert,
        requestCert: true,
        rejectUnauthorized: true,
        secureOptions: NO_TICKETS,
      },
      (s) => s.end(),
    );
    upstream.on('tlsClientError', () => {});
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => upstream.close(r)));
    const upPort = (upstream.address() as AddressInfo).port;
    const san: SanMatcher = {
      kind: 'exact',
      value: `${TD}/ratings`,
      regex: undefined,
      ignoreCase: false,
      sanType: 'URI',
    };
    const dirConnector = createTlsConnector(dirSource, { identity: `${TD}/ratings` });
    const xdsConnector = createUpstreamTlsConnector({
      identity: provider,
      roots: provider,
      sanMatchers: [san],
    });

    // Server side: the tls: server vs meshlet's server under the inbound listener's STRICT chain.
    const handler = (_req: unknown, res: { end(): void }) => res.end();
    const dirServer = createHttpsServer({ source: dirSource, secureOptions: NO_TICKETS }, handler);
    await new Promise<void>((r) => dirServer.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => dirServer.close(r)));
    const meshServer = createMeshHttpServer(
      { mesh: meshProvider, serverOptions: { secureOptions: NO_TICKETS } },
      handler as never,
    );
    await new Promise<void>((r) => meshServer.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => meshServer.close(() => r(undefined))));
    const dirPort = (dirServer.address() as AddressInfo).port;
    const meshPort = (meshServer.address() as AddressInfo).port;
    cp.setResources({
      listeners: [istioInboundListener('127.0.0.1', meshPort, istioFilterChain({ mtls: true }))],
    });
    const frontend = await issueWorkloadCertificate({ ca, spiffeId: `${TD}/frontend` });
    const serverProvider = viaTlsConnect(meshPort, frontend, ca.cert);
    const t0 = Date.now();
    for (;;) {
      if (
        (await serverProvider().then(
          () => true,
          () => false,
        )) === true
      )
        break;
      if (Date.now() - t0 > 10_000) throw new Error('the inbound listener never served');
      await new Promise((r) => setTimeout(r, 20));
    }
    return {
      clientDir: viaConnector(dirConnector, upPort),
      clientProvider: viaConnector(xdsConnector, upPort),
      serverDir: viaTlsConnect(dirPort, frontend, ca.cert),
      serverProvider,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

export async function handshakeProviderVsDir(quick: boolean): Promise<HandshakeResult> {
  const p = await handshakePaths();
  try {
    const rounds = quick ? 2 : 10;
    const n = quick ? 8 : 200;
    const client = await compare(rounds, n, p.clientDir, p.clientProvider);
    const server = await compare(rounds, n, p.serverDir, p.serverProvider);
    return { handshakesPerRound: n, rounds, client, server };
  } finally {
    await p.close();
  }
}
