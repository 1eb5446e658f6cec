/**
 * The server side of xDS (gRFC A36, A41) in the xds suite:
 *
 * 1. RBAC evaluation per request for a 20-rule policy: the same 20 rules (support/admission.ts's
 *    POLICY_20) evaluated by the local evaluator from the `authorization:` form, and as the control
 *    plane serves them (an RBAC ALLOW filter of an inbound listener: encoded, decoded and
 *    translated as a server reads it, then the filter chain's authorizer), side by side; and the
 *    whole admission step with the inbound listener port (listener lookup, chain, route, RBAC).
 * 2. An inbound Listener update under load: Express (meshlet's HTTP server factory, keep-alive
 *    clients) and gRPC (createMeshServer) serve a steady stream of requests — each held 20 ms in
 *    its handler, so requests are in flight at every update — while the control plane pushes a new
 *    listener version every 200 ms: failed requests (the target is 0), the versions applied, and
 *    latency p99 steady vs during updates.
 */
import { Agent, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { credentials, Metadata, ServerCredentials, type ServiceError } from '@grpc/grpc-js';
import express from 'express';
import {
  buildSnapshot,
  parseControlPlaneConfig,
  resourcesFromConfig,
  startControlPlane,
} from '../../../packages/control-plane/src/index.js';
import {
  Mesh as CoreMesh,
  InboundAdmission,
  type InboundPeer,
  parseConfig,
  setInboundListeners,
} from '../../../packages/core/src/index.js';
import { meshMiddleware } from '../../../packages/express/src/index.js';
import { createMeshServer } from '../../../packages/grpc/src/index.js';
import { EchoClient, echoDefinition } from '../../../packages/grpc/test/helpers.js';
import { createMesh } from '../../../packages/meshlet/src/index.js';
import { createAuthorizer, createMeshHttpServer } from '../../../packages/tls/src/index.js';
import {
  decodeAny,
  LDS_TYPE,
  type ServerListenerUpdate,
  translateServerListener,
  XdsInboundListeners,
} from '../../../packages/xds/src/index.js';
import { nsPerOp, POLICY_20 } from './admission.js';

/** The `p`th percentile (0–100) of unsorted samples. */
export const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
};
export const r3 = (x: number): number => Math.round(x * 1000) / 1000;

/** The inbound listener of `address` for a service with `policies`, as a server decodes it. */
function servedListener(address: string, policies: unknown): ServerListenerUpdate {
  const set = resourcesFromConfig(
    parseControlPlaneConfig({
      services: { bench: { inbound: [address], mtls: 'DISABLE', authorization: policies } },
    }),
  );
  const snap = buildSnapshot(set, '1');
  const r = [...(snap.resources.get(LDS_TYPE)?.values() ?? [])].find((x) => x.name.endsWith(address));
  if (r === undefined) throw new Error('no inbound listener');
  return translateServerListener(decodeAny(r.any.typeUrl, r.any.value), {
    certificateProviders: new Set(['default']),
  });
}

export interface RbacMicro {
  readonly localNs: number;
  readonly xdsFilterNs: number;
  readonly xdsChainNs: number;
  readonly admitLocalNs: number;
  readonly admitXdsNs: number;
}

export async function rbacMicro(quick: boolean): Promise<RbacMicro> {
  const n = quick ? 20_000 : 200_000;
  const reps = quick ? 3 : 7;
  const headers = { host: 'bench', 'user-agent': 'bench' };
  const attrs = {
    method: 'GET',
    path: '/items/42',
    sourceIp: '127.0.0.1',
    headers,
    mtls: false,
    host: 'bench',
  };
  const local = createAuthorizer(POLICY_20);
  const l = servedListener('127.0.0.1:8080', POLICY_20);
  const filter = l.chains[0]?.hcm.filters.find((f) => f.kind === 'rbac')?.rbac?.authorizer;
  if (filter === undefined) throw new Error('no RBAC filter');
  // The port as the admission step uses it (a stub client hands it the translated listener).
  const client = {
    watch: (_t: string, _n: string, w: { onUpdate(v: unknown): void }) => {
      queueMicrotask(() => w.onUpdate(l));
      return () => {};
    },
  };
  const port = new XdsInboundListeners(client as never, 'xds.istio.io/grpc/lds/inbound/%s');
  const handle = port.listener('127.0.0.1', 8080);
  await sleep(1);
  const chain = handle.config?.match({
    localAddress: '127.0.0.1',
    localPort: 8080,
    remoteAddress: '127.0.0.1',
    remotePort: 40000,
    transport: 'raw_buffer',
  });
  if (chain?.authorizer === undefined) throw new Error('no chain');
  const chainAttrs = { ...attrs, chainRoute: undefined as unknown };
  chain.route(chainAttrs as never);
  const mesh = new CoreMesh(parseConfig({}));
  setInboundListeners(mesh, port);
  const peer: InboundPeer = Object.freeze({
    remoteAddress: '127.0.0.1',
    localAddress: '127.0.0.1',
    localPort: 8080,
    principal: undefined,
    mtls: false,
    sni: undefined,
    listenHost: '127.0.0.1',
    listenPort: 8080,
  });
  const admitWith = (a: InboundAdmission) => (i: number) => {
    const r = a.admitHttp('GET', i & 1 ? '/items/42?x=1' : '/items/7', headers, undefined, peer, undefined);
    if (r.status !== 0) throw new Error(`refused: ${r.errorBody()}`);
    return r;
  };
  const result = {
    localNs: nsPerOp(n, reps, () => (local(attrs).allowed ? undefined : 1)),
    xdsFilterNs: nsPerOp(n, reps, () => (filter(attrs).allowed ? undefined : 1)),
    xdsChainNs: nsPerOp(n, reps, () =>
      (chain.authorizer as typeof filter)(chainAttrs).allowed ? undefined : 1,
    ),
    admitLocalNs: nsPerOp(n, reps, admitWith(new InboundAdmission({ transport: 'grpc', authorizer: local }))),
    admitXdsNs: nsPerOp(
      n,
      reps,
      admitWith(new InboundAdmission({ transport: 'grpc', mesh, authorizer: false })),
    ),
  };
  port.close();
  await mesh.close();
  return result;
}

export interface UpdateUnderLoad {
  readonly seconds: number;
  readonly requests: { http: number; grpc: number };
  readonly failed: { http: number; grpc: number };
  readonly failures: string[];
  readonly versionsApplied: number;
  readonly pushes: number;
  readonly p99Ms: { steady: number; duringUpdates: number };
}

export async function listenerUpdateUnderLoad(quick: boolean): Promise<UpdateUnderLoad> {
  const TEMPLATE = 'xds.istio.io/grpc/lds/inbound/%s';
  const cp = await startControlPlane({ resources: { listeners: [] } });
  const mesh = await createMesh(
    {
      xds: {
        bootstrap: {
          xds_servers: [{ server_uri: cp.address, channel_creds: [{ type: 'insecure' }] }],
          node: { id: 'bench-server' },
          server_listener_resource_name_template: TEMPLATE,
        },
      },
    },
    { logger: false },
  );
  const app = express();
  app.use(meshMiddleware({ mesh }));
  app.get('/items/:id', async (_req, res) => {
    await sleep(20);
    res.send('ok');
  });
  const http = createMeshHttpServer({ mesh }, app);
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  const httpPort = (http.address() as AddressInfo).port;
  const ms = createMeshServer({ mesh, health: false });
  ms.server.addService(echoDefinition, {
    Echo: (call: { request: { text: string } }, cb: (e: null, r: object) => void) => {
      setTimeout(() => cb(null, { text: call.request.text, server: 'bench' }), 20);
    },
  });
  const grpcPort = await new Promise<number>((resolve, reject) =>
    ms.server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  // Every version differs (a DENY rule on another unused path): each is a new listener version.
  const version = (v: number) =>
    resourcesFromConfig(
      parseControlPlaneConfig({
        services: {
          bench: {
            inbound: [`127.0.0.1:${httpPort}`, `127.0.0.1:${grpcPort}`],
            mtls: 'DISABLE',
            authorization: [
              ...POLICY_20,
              {
                name: 'grpc',
                action: 'ALLOW',
                rules: [{ to: [{ operation: { paths: ['/test.Echo/*'] } }] }],
              },
              {
                name: `v${v}`,
                action: 'DENY',
                rules: [{ to: [{ operation: { paths: [`/unused/${v}`] } }] }],
              },
            ],
          },
        },
      }),
    );
  cp.setResources(version(0));
  const agent = new Agent({ keepAlive: true, maxSockets: 8 });
  const grpcClient = new EchoClient(`127.0.0.1:${grpcPort}`, credentials.createInsecure()) as unknown as {
    echo(r: object, md: Metadata, o: object, cb: (e: ServiceError | null) => void): void;
    close(): void;
  };
  const httpOnce = () =>
    new Promise<void>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: httpPort, path: '/items/1', agent }, (res) => {
        res.resume();
        res.on('end', () =>
          res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`)),
        );
      });
      req.on('error', reject);
      req.end();
    });
  const grpcOnce = () =>
    new Promise<void>((resolve, reject) =>
      grpcClient.echo({ text: 'x' }, new Metadata(), { deadline: Date.now() + 5_000 }, (e) =>
        e ? reject(e) : resolve(),
      ),
    );
  // Wait until both serve.
  for (let i = 0; i < 500; i++) {
    const ok = await Promise.all([
      httpOnce().then(
        () => true,
        () => false,
      ),
      grpcOnce().then(
        () => true,
        () => false,
      ),
    ]);
    if (ok[0] && ok[1]) break;
    await sleep(10);
  }
  const seconds = quick ? 1 : 8;
  const failures: string[] = [];
  const counts = { http: 0, grpc: 0 };
  const failed = { http: 0, grpc: 0 };
  const run = async (updating: boolean): Promise<number[]> => {
    const lat: number[] = [];
    const end = Date.now() + seconds * 1000;
    const worker = async (kind: 'http' | 'grpc') => {
      while (Date.now() < end) {
        const t0 = performance.now();
        try {
          await (kind === 'http' ? httpOnce() : grpcOnce());
          lat.push(performance.now() - t0);
        } catch (e) {
          if (updating) {
            failed[kind]++;
            if (failures.length < 5) failures.push(`${kind}: ${(e as Error).message}`);
          }
        }
        if (updating) counts[kind]++;
      }
    };
    await Promise.all([
      ...Array.from({ length: 8 }, () => worker('http')),
      ...Array.from({ length: 4 }, () => worker('grpc')),
    ]);
    return lat;
  };
  const steady = await run(false);
  const handle = http.inboundListener;
  const before = handle?.config?.generation ?? 0;
  let pushes = 0;
  const timer = setInterval(() => cp.setResources(version(++pushes)), 200);
  const during = await run(true);
  clearInterval(timer);
  const versionsApplied = (handle?.config?.generation ?? 0) - before;
  grpcClient.close();
  agent.destroy();
  http.closeAllConnections();
  await new Promise<void>((r) => http.close(() => r()));
  ms.server.forceShutdown();
  await mesh.close();
  await cp.close();
  return {
    seconds,
    requests: counts,
    failed,
    failures,
    versionsApplied,
    pushes,
    p99Ms: { steady: r3(pct(steady, 99)), duringUpdates: r3(pct(during, 99)) },
  };
}
