/**
 * Differential test of the server side (gRFC A36, A41): grpc-js-xds's `XdsServer` with
 * `XdsServerCredentials` (an independent implementation) and meshlet's servers — gRPC
 * (`createMeshServer`), Express and Fastify (`createMeshHttpServer`) — follow one control plane
 * serving the same inbound listener shape (istiod's grpcgen: STRICT mTLS from the `default`
 * certificate provider, RBAC DENY and ALLOW filters) with istio-agent's bootstrap, and must decide
 * a matrix of principals, methods, headers and source addresses alike.
 *
 * grpc-js-xds registers its RBAC filter only with `GRPC_XDS_EXPERIMENTAL_RBAC=true` in the
 * environment when it loads (without it, it NACKs such a listener): it is set before the module is
 * required, in this file's own process (vitest's forks pool).
 */
import { connect as http2Connect } from 'node:http2';
import { request as httpsRequest } from 'node:https';
import { createRequire } from 'node:module';
import { createServer as createNetServer, Server as NetServer, connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ControlPlane, startControlPlane } from '../../packages/control-plane/src/index.js';
import { echoDefinition } from '../../packages/grpc/test/helpers.js';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';
import { CertificateSource, createCa } from '../../packages/tls/src/index.js';
import { istioFilterChain, istioInboundListener, istioRbac } from '../../packages/xds/test/istio-shapes.js';
import { until } from './xds/helpers.js';
import {
  istioAgentBootstrap,
  istioWorkloadDir,
  type Served,
  startExpress,
  startFastify,
  startGrpc,
  TD,
} from './xds/servers.js';

const cleanups: Array<() => unknown> = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

// The policies: DENY /test.Admin/* when x-block is present; ALLOW frontend anything, ops-namespace
// peers the Echo method with a T- ticket, and any peer from 127.0.0.2 anything but /test.Admin/*.
const DENY = istioRbac('DENY', {
  'default-deny-blocked-0': {
    principals: [{ andIds: { ids: [{ any: true }] } }],
    permissions: [
      {
        andRules: {
          rules: [
            { urlPath: { path: { prefix: '/test.Admin/' } } },
            { header: { name: 'x-block', presentMatch: true } },
          ],
        },
      },
    ],
  },
});
const ALLOW = istioRbac('ALLOW', {
  'default-allow-frontend-0': {
    principals: [
      {
        andIds: {
          ids: [{ orIds: { ids: [{ authenticated: { principalName: { exact: `${TD}/frontend` } } }] } }],
        },
      },
    ],
    permissions: [{ andRules: { rules: [{ any: true }] } }],
  },
  'default-allow-ops-0': {
    principals: [
      {
        andIds: {
          ids: [
            {
              orIds: {
                ids: [{ authenticated: { principalName: { safeRegex: { regex: '.*/ns/ops/.*' } } } }],
              },
            },
            { orIds: { ids: [{ header: { name: 'x-ticket', stringMatch: { prefix: 'T-' } } }] } },
          ],
        },
      },
    ],
    permissions: [
      {
        andRules: { rules: [{ orRules: { rules: [{ urlPath: { path: { exact: '/test.Echo/Echo' } } }] } }] },
      },
    ],
  },
  'default-allow-local2-0': {
    principals: [
      {
        andIds: {
          ids: [{ orIds: { ids: [{ directRemoteIp: { addressPrefix: '127.0.0.2', prefixLen: 32 } }] } }],
        },
      },
    ],
    permissions: [
      {
        andRules: {
          rules: [{ notRule: { orRules: { rules: [{ urlPath: { path: { prefix: '/test.Admin/' } } }] } } }],
        },
      },
    ],
  },
});

const chain = () => istioFilterChain({ mtls: true, deny: DENY, allow: ALLOW });

interface Client {
  readonly name: string;
  readonly source: CertificateSource;
}

/** One gRPC unary call on a fresh TLS connection from `localAddress`: OK → true, PERMISSION_DENIED → false. */
function grpcDecision(
  port: number,
  client: Client,
  path: string,
  headers: Record<string, string>,
  localAddress: string,
  ca: string,
): Promise<boolean | string> {
  return new Promise((resolve) => {
    const pem = client.source.pem();
    const session = http2Connect(`https://127.0.0.1:${port}`, {
      createConnection: () =>
        tlsConnect({
          socket: netConnect({ host: '127.0.0.1', port, localAddress }),
          ALPNProtocols: ['h2'],
          key: pem.key,
          cert: pem.cert,
          ca,
          servername: 'reviews.default.svc',
          checkServerIdentity: () => undefined,
        }),
    });
    session.on('error', (e) => resolve(`session error: ${e.message}`));
    const req = session.request({
      ':method': 'POST',
      ':path': path,
      ':authority': 'reviews.default.svc:8080',
      'content-type': 'application/grpc',
      te: 'trailers',
      ...headers,
    });
    let grpcStatus: string | undefined;
    const take = (h: Record<string, unknown>) => {
      if (h['grpc-status'] !== undefined) grpcStatus = String(h['grpc-status']);
    };
    req.on('response', take);
    req.on('trailers', take);
    req.on('data', () => {});
    req.on('error', (e) => resolve(`stream error: ${e.message}`));
    req.on('close', () => {
      session.close();
      resolve(
        grpcStatus === '0'
          ? true
          : grpcStatus === String(grpc.status.PERMISSION_DENIED)
            ? false
            : `grpc-status ${grpcStatus}`,
      );
    });
    const msg = Buffer.from(JSON.stringify({ text: 'hi' }));
    const frame = Buffer.alloc(5 + msg.length);
    frame.writeUInt32BE(msg.length, 1);
    msg.copy(frame, 5);
    req.end(frame);
  });
}

/** One HTTPS request from `localAddress`: 200 → true, 403 → false. */
function httpDecision(
  port: number,
  client: Client,
  path: string,
  headers: Record<string, string>,
  localAddress: string,
  ca: string,
): Promise<boolean | string> {
  return new Promise((resolve) => {
    const pem = client.source.pem();
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'POST',
        headers,
        localAddress,
        key: pem.key,
        cert: pem.cert,
        ca,
        agent: false,
        servername: 'reviews.default.svc',
        checkServerIdentity: () => undefined,
      },
      (res) => {
        res.resume();
        res.on('end', () =>
          resolve(res.statusCode === 200 ? true : res.statusCode === 403 ? false : `HTTP ${res.statusCode}`),
        );
      },
    );
    req.on('error', (e) => resolve(`error: ${e.message}`));
    req.end();
  });
}

async function freePort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const p = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

let cp: ControlPlane;
let mesh: Mesh;
let ca: string;
let clients: Client[];
const targets: Array<{ kind: string; port: number }> = [];

beforeAll(async () => {
  const pki = await createCa();
  ca = pki.cert;
  const dir = await istioWorkloadDir(pki, `${TD}/reviews`, cleanups);
  clients = [];
  for (const name of ['frontend', 'attacker']) {
    const source = new CertificateSource({
      dir: await istioWorkloadDir(pki, `${TD}/${name}`, cleanups),
      watch: false,
    });
    cleanups.push(() => source.close());
    clients.push({ name, source });
  }
  const ops = new CertificateSource({
    dir: await istioWorkloadDir(pki, 'spiffe://cluster.local/ns/ops/sa/oncall', cleanups),
    watch: false,
  });
  cleanups.push(() => ops.close());
  clients.push({ name: 'ops', source: ops });
  cp = await startControlPlane({ resources: { listeners: [] } });
  cleanups.push(() => cp.close());
  const bootstrap = istioAgentBootstrap(cp.address, dir);

  // grpc-js-xds's XdsServer: its own xDS client on the same bootstrap, credentials from the provider.
  process.env.GRPC_XDS_EXPERIMENTAL_RBAC = 'true';
  const xds = createRequire(import.meta.url)('@grpc/grpc-js-xds') as {
    register(): void;
    XdsServer: new (options: object) => grpc.Server;
    XdsServerCredentials: new (fallback: grpc.ServerCredentials) => grpc.ServerCredentials;
  };
  xds.register();
  const ref = new xds.XdsServer({
    'grpc.TEST_ONLY_DO_NOT_USE_IN_PROD.xds_bootstrap_config': JSON.stringify(bootstrap),
  });
  const handler = (call: { request: { text: string } }, cb: (e: null, r: object) => void) =>
    cb(null, { text: call.request.text });
  ref.addService(echoDefinition, { Echo: handler });
  const echo = echoDefinition.Echo as (typeof echoDefinition)[string];
  ref.addService({ Drop: { ...echo, path: '/test.Admin/Drop', originalName: 'drop' } }, { Drop: handler });
  const refPort = await freePort();
  // grpc-js-xds 1.14.1 listens on the bound port of every interface (`listen(port)`, i.e. [::]),
  // whatever address it was given: its IPv4 peers arrive IPv4-mapped (::ffff:127.0.0.2), which its
  // RBAC never matches with IPv4 ranges (and IPv6 ranges make its CIDR parser throw on them). Its
  // socket is bound to the address it names instead, so that its peers are what they would be on
  // an IPv4 listener (docs/xds.md lists the quirk).
  const listen = NetServer.prototype.listen as (this: NetServer, ...a: unknown[]) => NetServer;
  NetServer.prototype.listen = function (this: NetServer, ...args: unknown[]) {
    if (args[0] === refPort && typeof args[1] === 'function')
      return listen.call(this, refPort, '127.0.0.1', args[1]);
    return listen.apply(this, args);
  } as typeof NetServer.prototype.listen;
  cleanups.push(() => {
    NetServer.prototype.listen = listen as typeof NetServer.prototype.listen;
  });
  // Its bind completes once the listener of that address is known and valid (it serves then).
  const bound = new Promise<void>((resolve, reject) =>
    ref.bindAsync(
      `127.0.0.1:${refPort}`,
      new xds.XdsServerCredentials(grpc.ServerCredentials.createInsecure()),
      (e) => (e ? reject(e) : resolve()),
    ),
  );
  cleanups.push(() => ref.forceShutdown());
  targets.push({ kind: 'grpc-js-xds', port: refPort });

  mesh = await createMesh({ tls: { dir, layout: 'istio' }, xds: { bootstrap } });
  cleanups.push(() => mesh.close());
  for (const [kind, start] of [
    ['meshlet-grpc', startGrpc],
    ['express', startExpress],
    ['fastify', startFastify],
  ] as const) {
    const s: Served = await start(mesh);
    cleanups.push(() => s.close());
    targets.push({ kind, port: s.port });
  }
  cp.setResources({ listeners: targets.map((t) => istioInboundListener('127.0.0.1', t.port, chain())) });
  await bound;
  const frontend = clients[0] as Client;
  for (const t of targets) {
    const call = t.kind.includes('grpc') ? grpcDecision : httpDecision;
    await until(
      async () => (await call(t.port, frontend, '/test.Echo/Echo', {}, '127.0.0.1', ca)) === true,
      10_000,
      `${t.kind} serving`,
    );
  }
}, 30_000);

describe('RBAC decisions: grpc-js-xds and meshlet’s gRPC, Express and Fastify servers', () => {
  it('agree over principals × methods × headers × source addresses', { timeout: 60_000 }, async () => {
    const rows: string[] = [];
    const table: Record<string, Record<string, boolean | string>> = {};
    for (const client of clients)
      for (const path of ['/test.Echo/Echo', '/test.Admin/Drop'])
        for (const [hname, headers] of [
          ['none', {}],
          ['ticket', { 'x-ticket': 'T-1' }],
          ['block', { 'x-block': '1' }],
        ] as const)
          for (const local of ['127.0.0.1', '127.0.0.2']) {
            const row = `${client.name} ${path} ${hname} from ${local}`;
            rows.push(row);
            table[row] = {};
            for (const t of targets) {
              const call = t.kind.includes('grpc') ? grpcDecision : httpDecision;
              (table[row] as Record<string, boolean | string>)[t.kind] = await call(
                t.port,
                client,
                path,
                headers,
                local,
                ca,
              );
            }
          }
    const reference = Object.fromEntries(rows.map((r) => [r, table[r]?.['grpc-js-xds']]));
    for (const kind of ['meshlet-grpc', 'express', 'fastify'])
      expect({ kind, decisions: Object.fromEntries(rows.map((r) => [r, table[r]?.[kind]])) }).toEqual({
        kind,
        decisions: reference,
      });
    // The reference decided every request (no errors), both ways, as the policies say.
    const values = Object.values(reference);
    expect(values.every((v) => typeof v === 'boolean')).toBe(true);
    expect(reference['frontend /test.Echo/Echo none from 127.0.0.1']).toBe(true);
    expect(reference['frontend /test.Admin/Drop block from 127.0.0.1']).toBe(false);
    expect(reference['ops /test.Echo/Echo ticket from 127.0.0.1']).toBe(true);
    expect(reference['ops /test.Echo/Echo none from 127.0.0.1']).toBe(false);
    expect(reference['attacker /test.Echo/Echo none from 127.0.0.2']).toBe(true);
    expect(reference['attacker /test.Admin/Drop none from 127.0.0.2']).toBe(false);
    expect(reference['attacker /test.Echo/Echo none from 127.0.0.1']).toBe(false);
  });
});
