/**
 * The inbound side probed as an attacker would: hand-written HTTP/1.1 requests on raw loopback
 * sockets (and raw HTTP/2 streams for gRPC), every path trick of issue 14's finding 1 and the
 * usual others, against Express, Fastify (default and lenient routing) and gRPC, each with a
 * DENY-list and an ALLOW-list policy. The assertion is on handler invocations: no request reaches
 * a handler the policy denies, whatever the answer was; allowed requests still work.
 */
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type Server, ServerCredentials, type ServiceDefinition } from '@grpc/grpc-js';
import express from 'express';
import Fastify, { type FastifyServerOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { meshHandler, meshMiddleware } from '../../packages/express/src/index.js';
import { meshPlugin } from '../../packages/fastify/src/index.js';
import { createMeshServer } from '../../packages/grpc/src/index.js';
import { echoDefinition } from '../../packages/grpc/test/helpers.js';
import { type AuthorizationPolicy, createAuthorizer } from '../../packages/tls/src/index.js';
import { rawGrpc, rawHttp, rawRequest } from '../helpers/raw-http.js';

const cleanups: Array<() => unknown> = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Denies the admin area, `/key`, GET `/secret`, and `/ipdeny` from loopback clients. */
const DENY_LIST: AuthorizationPolicy[] = [
  {
    name: 'deny-admin',
    action: 'DENY',
    rules: [
      { to: [{ operation: { paths: ['/admin', '/admin/*', '/panel/*', '/key'] } }] },
      { to: [{ operation: { methods: ['GET'], paths: ['/secret'] } }] },
      {
        from: [{ source: { remoteIpBlocks: ['127.0.0.0/8', '::1/128'] } }],
        to: [{ operation: { paths: ['/ipdeny'] } }],
      },
    ],
  },
];
/** Handlers the DENY-list denies: none of them may ever run. */
const DENIED_BY_DENY_LIST = ['admin', 'panel', 'key', 'secret', 'ipdeny'];

/** Allows GET on the public area, `/iponly` from 10/8, `/principal-only` to one SPIFFE ID. */
const ALLOW_LIST: AuthorizationPolicy[] = [
  {
    name: 'allow-public',
    action: 'ALLOW',
    rules: [
      { to: [{ operation: { methods: ['GET'], paths: ['/public', '/public/*'] } }] },
      { from: [{ source: { remoteIpBlocks: ['10.0.0.0/8'] } }], to: [{ operation: { paths: ['/iponly'] } }] },
      {
        from: [{ source: { principals: ['cluster.local/ns/default/sa/admin'] } }],
        to: [{ operation: { paths: ['/principal-only'] } }],
      },
    ],
  },
];
/** The only handler the ALLOW-list lets these (plaintext, loopback) clients reach. */
const ALLOWED_BY_ALLOW_LIST = ['public'];

const HANDLERS = ['admin', 'panel', 'key', 'secret', 'ipdeny', 'public', 'x', 'files', 'iponly', 'principal'];

/** Every trick: [method, target (raw bytes on the wire), extra headers]. */
const PROBES: Array<[string, string | Buffer, string[]?]> = [
  ['GET', '/admin'],
  ['GET', '/ADMIN'],
  ['GET', '/Admin'],
  ['GET', '/aDmIn/x'],
  ['GET', '/admin#x'],
  ['GET', '/admin?#x'],
  ['GET', 'http://x/admin'],
  ['GET', 'HTTP://X/Admin'],
  ['GET', 'http://x'],
  ['GET', 'http://host/admin'],
  ['GET', 'https://x/admin?y=1'],
  ['GET', '/%61dmin'],
  ['GET', '/%41DMIN'],
  ['GET', '/adm%69n/x'],
  ['GET', '//admin'],
  ['GET', '///admin//x'],
  ['GET', '/./admin'],
  ['GET', '/x/../admin'],
  ['GET', '/x/%2e%2e/admin'],
  ['GET', '/x/.%2E/admin'],
  ['GET', '/public/../admin'],
  ['GET', '/admin/'],
  ['GET', '/admin//'],
  ['GET', '/admin/.'],
  ['GET', '/admin%2F'],
  ['GET', '/admin%2fx'],
  ['GET', '/%2Fadmin'],
  ['GET', '/x%2F..%2Fadmin'],
  ['GET', '/x/..%2Fadmin'],
  ['GET', '/files/..%2F..%2Fadmin'],
  ['GET', '/admin%5C'],
  ['GET', '/x\\..\\admin'],
  ['GET', '/x%5C..%5Cadmin'],
  ['GET', '/admin;a=b'],
  ['GET', '/admin;/x'],
  ['GET', '/;/admin'],
  ['GET', '/..;/admin'],
  ['GET', '/admin%00'],
  ['GET', '/%00/../admin'],
  ['GET', '/%C0%AFadmin'],
  ['GET', '/x/%C0%AE%C0%AE/admin'],
  ['GET', '/%E0%80%AFadmin'],
  ['GET', '/%ED%A0%80admin'],
  ['GET', '/admin%'],
  ['GET', '/admin%zz'],
  ['GET', Buffer.from('/ａdmin', 'utf8')],
  ['GET', '/%EF%BD%81dmin'],
  ['GET', '/%E2%84%AAey'], // KELVIN SIGN: lower-cases to "k" (String.prototype.toLowerCase)
  ['GET', '/KEY'],
  ['GET', '/Panel/view'],
  ['GET', '/PANEL/view/'],
  ['GET', '/panel/view'],
  ['HEAD', '/secret'],
  ['HEAD', '/admin'],
  ['GET', '/secret'],
  ['OPTIONS', '/admin'],
  ['POST', '/admin'],
  ['GET', '/admin', ['Host: x', 'Host: y']],
  ['GET', 'http://evil/admin', ['Host: good']],
  ['GET', '/ipdeny', ['Host: x', 'X-Forwarded-For: 10.0.0.1']],
  ['GET', '/ipdeny', ['Host: x', 'X-Forwarded-For: 10.0.0.1, 10.0.0.2']],
  ['GET', '/iponly', ['Host: x', 'X-Forwarded-For: 10.0.0.1']],
  ['GET', '/iponly', ['Host: x', 'X-Real-IP: 10.0.0.1', 'Forwarded: for=10.0.0.1']],
  [
    'GET',
    '/principal-only',
    [
      'Host: x',
      'X-Forwarded-Client-Cert: By=spiffe://cluster.local/ns/default/sa/api;URI=spiffe://cluster.local/ns/default/sa/admin',
      'X-Spiffe-Id: spiffe://cluster.local/ns/default/sa/admin',
    ],
  ],
];

type Counts = Record<string, number>;

interface Target {
  readonly port: number;
  readonly counts: Counts;
}

function counter(): { counts: Counts; hit: (name: string) => void } {
  const counts: Counts = Object.fromEntries(HANDLERS.map((h) => [h, 0]));
  const hit = (name: string) => {
    counts[name] = (counts[name] ?? 0) + 1;
  };
  return { counts, hit };
}

async function expressServer(
  policies: AuthorizationPolicy[],
  strict: boolean,
  form: 'middleware' | 'handler' = 'middleware',
): Promise<Target> {
  const { counts, hit } = counter();
  const app = express();
  if (strict) {
    app.enable('case sensitive routing');
    app.enable('strict routing');
  }
  if (form === 'middleware') app.use(meshMiddleware({ authorizer: createAuthorizer(policies) }));
  const ok = (name: string) => (_req: express.Request, res: express.Response) => {
    hit(name);
    res.json({ handler: name });
  };
  app.get('/admin', ok('admin'));
  app.post('/admin', ok('admin'));
  app.get('/admin/:x', ok('admin'));
  const panel = express.Router();
  panel.get('/view', ok('panel'));
  app.use('/panel', panel);
  app.get('/key', ok('key'));
  app.get('/secret', ok('secret'));
  app.get('/ipdeny', ok('ipdeny'));
  app.get('/public', ok('public'));
  app.get('/public/:x', ok('public'));
  app.get('/x/:p', ok('x'));
  app.get('/files/{*rest}', ok('files'));
  app.get('/iponly', ok('iponly'));
  app.get('/principal-only', ok('principal'));
  const server = await new Promise<HttpServer>((resolve) => {
    if (form === 'middleware') {
      const s = app.listen(0, '127.0.0.1', () => resolve(s));
    } else {
      const handler = meshHandler(app, { authorizer: createAuthorizer(policies) });
      const s = createServer(handler).listen(0, '127.0.0.1', () => resolve(s));
    }
  });
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  cleanups.push(() => server.closeAllConnections());
  return { port: (server.address() as AddressInfo).port, counts };
}

async function fastifyServer(
  policies: AuthorizationPolicy[],
  options: FastifyServerOptions,
): Promise<Target> {
  const { counts, hit } = counter();
  const app = Fastify(options);
  await app.register(meshPlugin, { authorizer: createAuthorizer(policies), drain: false });
  const ok = (name: string) => async () => {
    hit(name);
    return { handler: name };
  };
  app.get('/admin', ok('admin'));
  app.post('/admin', ok('admin'));
  app.get('/admin/*', ok('admin'));
  app.get('/panel/view', ok('panel'));
  app.get('/key', ok('key'));
  app.get('/secret', ok('secret'));
  app.get('/ipdeny', ok('ipdeny'));
  app.get('/public', ok('public'));
  app.get('/public/*', ok('public'));
  app.get('/x/:p', ok('x'));
  app.get('/files/*', ok('files'));
  app.get('/iponly', ok('iponly'));
  app.get('/principal-only', ok('principal'));
  await app.listen({ port: 0, host: '127.0.0.1' });
  cleanups.push(() => app.close());
  return { port: (app.server.address() as AddressInfo).port, counts };
}

const LENIENT = {
  routerOptions: {
    caseSensitive: false,
    ignoreDuplicateSlashes: true,
    ignoreTrailingSlash: true,
    useSemicolonDelimiter: true, // accepted by Fastify 5.12, missing from its router option types
  },
} as FastifyServerOptions;

const SERVERS: Array<[string, (p: AuthorizationPolicy[]) => Promise<Target>]> = [
  ['Express (default routing)', (p) => expressServer(p, false)],
  ['Express (case sensitive, strict routing)', (p) => expressServer(p, true)],
  ['Express behind meshHandler (default routing)', (p) => expressServer(p, false, 'handler')],
  ['Express behind meshHandler (case sensitive, strict routing)', (p) => expressServer(p, true, 'handler')],
  ['Fastify (default routing)', (p) => fastifyServer(p, {})],
  [
    'Fastify (case-insensitive, duplicate and trailing slashes ignored, ; delimiter)',
    (p) => fastifyServer(p, LENIENT),
  ],
];

async function probeAll(port: number): Promise<Array<{ probe: string; status: number }>> {
  const out: Array<{ probe: string; status: number }> = [];
  for (const [method, target, headers] of PROBES) {
    const res = await rawHttp(port, rawRequest(method, target, headers));
    out.push({ probe: `${method} ${target.toString()} ${(headers ?? []).join('|')}`, status: res.status });
  }
  return out;
}

describe.each(SERVERS)('%s', (_name, start) => {
  describe('DENY-list policy', () => {
    let target: Target;
    beforeAll(async () => {
      target = await start(DENY_LIST);
    });

    it('no probe reaches a denied handler', async () => {
      const results = await probeAll(target.port);
      const reached = DENIED_BY_DENY_LIST.filter((h) => (target.counts[h] ?? 0) > 0);
      expect(reached, JSON.stringify(results)).toEqual([]);
      // the probes were answered (refused, not found, or by an allowed handler), never left hanging
      expect(results.every((r) => r.status >= 200)).toBe(true);
    });

    it('allowed requests still work', async () => {
      const pub = await rawHttp(target.port, rawRequest('GET', '/public'));
      expect(pub.status).toBe(200);
      expect(JSON.parse(pub.body)).toEqual({ handler: 'public' });
      expect((await rawHttp(target.port, rawRequest('GET', '/x/1?q=%2F'))).status).toBe(200);
      expect((await rawHttp(target.port, rawRequest('GET', '/iponly'))).status).toBe(200);
    });
  });

  describe('ALLOW-list policy', () => {
    let target: Target;
    beforeAll(async () => {
      target = await start(ALLOW_LIST);
    });

    it('no probe reaches a handler the ALLOW-list does not allow', async () => {
      const results = await probeAll(target.port);
      // the public area also by absolute-form and spelled-out escapes
      for (const t of ['/public/a', '/%70ublic', 'http://h/public/b'])
        await rawHttp(target.port, rawRequest('GET', t));
      const reached = HANDLERS.filter(
        (h) => !ALLOWED_BY_ALLOW_LIST.includes(h) && (target.counts[h] ?? 0) > 0,
      );
      expect(reached, JSON.stringify(results)).toEqual([]);
      expect(target.counts.public).toBeGreaterThan(0);
    });

    it('allowed requests still work', async () => {
      const res = await rawHttp(target.port, rawRequest('GET', '/public/a?x=1'));
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body)).toEqual({ handler: 'public' });
      const denied = await rawHttp(target.port, rawRequest('GET', '/x/1'));
      expect(denied.status).toBe(403);
      expect(JSON.parse(denied.body)).toMatchObject({ error: { code: 'MESHLET_ERR_FORBIDDEN' } });
    });
  });
});

describe('gRPC server', () => {
  const adminDefinition: ServiceDefinition = {
    Get: {
      ...(echoDefinition.Echo as ServiceDefinition[string]),
      path: '/test.Admin/Get',
      originalName: 'get',
    },
  };
  const GRPC_PROBES = [
    '/test.Admin/Get',
    '/TEST.ADMIN/GET',
    '/test.admin/get',
    '/test.Admin/Get/',
    '//test.Admin/Get',
    '/x/../test.Admin/Get',
    '/test.Echo/../test.Admin/Get',
    '/test.Admin%2FGet',
    '/%74est.Admin/Get',
    '/test.Admin/Get?x=1',
    '/test.Admin/Get#x',
    '/test.Admin/Get%00',
    '/test.Admin\\Get',
  ];

  async function grpcServer(policies: AuthorizationPolicy[]) {
    const counts: Counts = { echo: 0, admin: 0 };
    const ms = createMeshServer({ authorizer: createAuthorizer(policies), health: false });
    const reply =
      (name: string) => (call: { request: { text: string } }, cb: (e: null, r: object) => void) => {
        counts[name] = (counts[name] ?? 0) + 1;
        cb(null, { text: call.request.text, server: name });
      };
    ms.server.addService(echoDefinition, { Echo: reply('echo') });
    ms.server.addService(adminDefinition, { Get: reply('admin') });
    const port = await new Promise<number>((resolve, reject) =>
      ms.server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    cleanups.push(() => (ms.server as Server).forceShutdown());
    return { port, counts };
  }

  const message = Buffer.from(JSON.stringify({ text: 'x' }));

  it('DENY-list: no raw :path variant reaches the denied method; allowed calls work', async () => {
    const { port, counts } = await grpcServer([
      { name: 'deny-admin', action: 'DENY', rules: [{ to: [{ operation: { paths: ['/test.Admin/*'] } }] }] },
    ]);
    const statuses: number[] = [];
    for (const p of GRPC_PROBES) statuses.push((await rawGrpc(port, p, message)).grpcStatus);
    expect(counts.admin, JSON.stringify(statuses)).toBe(0);
    expect(statuses[0]).toBe(7); // PERMISSION_DENIED
    expect((await rawGrpc(port, '/test.Echo/Echo', message)).grpcStatus).toBe(0);
    expect(counts.echo).toBe(1);
  });

  it('ALLOW-list: only the allowed method runs, whatever the :path spelling or spoofed metadata', async () => {
    const { port, counts } = await grpcServer([
      {
        name: 'allow-echo',
        action: 'ALLOW',
        rules: [{ to: [{ operation: { paths: ['/test.Echo/Echo'] } }] }],
      },
    ]);
    for (const p of GRPC_PROBES) {
      await rawGrpc(port, p, message, {
        'x-forwarded-client-cert': 'URI=spiffe://cluster.local/ns/default/sa/admin',
        'x-forwarded-for': '10.0.0.1',
      });
    }
    expect(counts.admin).toBe(0);
    expect((await rawGrpc(port, '/test.Echo/Echo', message)).grpcStatus).toBe(0);
    expect(counts.echo).toBe(1);
  });
});
