import { createServer as createHttpServer, request as httpRequest, type RequestListener } from 'node:http';
import { connect as h2connect } from 'node:http2';
import {
  type AddressInfo,
  createServer as createNetServer,
  connect as netConnect,
  type Socket,
} from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { isConfigError, Mesh, parseConfig } from '@meshlet/core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  CertificateSource,
  createAuthorizer,
  createCa,
  createHttp2Server,
  createHttpsServer,
  createMeshHttpServer,
  createPermissiveListener,
  forbiddenResponse,
  issueWorkloadCertificate,
  MeshTls,
  type PemPair,
  parseAuthorization,
  peerIdentity,
  requestAttributes,
  writeCertDirectory,
} from '../src/index.js';
import { tempDir } from './helpers.js';

const SERVER_ID = 'spiffe://cluster.local/ns/default/sa/reviews';
const CLIENT_ID = 'spiffe://cluster.local/ns/default/sa/productpage';
const tmp = tempDir();
let ca: PemPair;
let client: PemPair;
let source: CertificateSource;
const cleanups: Array<() => unknown> = [];

beforeAll(async () => {
  ca = await createCa();
  const s = await issueWorkloadCertificate({ ca, spiffeId: SERVER_ID });
  client = await issueWorkloadCertificate({ ca, spiffeId: CLIENT_ID });
  await writeCertDirectory(join(tmp.dir, 'server'), { ...s, ca: ca.cert });
  await writeCertDirectory(join(tmp.dir, 'client'), { ...client, ca: ca.cert });
  source = new CertificateSource({ dir: join(tmp.dir, 'server'), watch: false });
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => tmp.cleanup());

async function listen(server: {
  listen(port: number, host: string, cb: () => void): unknown;
  address(): unknown;
  close(cb?: () => void): unknown;
}) {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as AddressInfo).port;
}

const whoami: RequestListener = (req, res) => res.end(`peer=${peerIdentity(req) ?? 'none'}`);

function tlsGet(port: number, withCert: boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      port,
      host: '127.0.0.1',
      ca: ca.cert,
      ...(withCert ? { cert: client.cert, key: client.key } : {}),
      checkServerIdentity: () => undefined,
    });
    let out = '';
    socket.on('secureConnect', () => socket.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
    socket.on('data', (d) => {
      out += d.toString();
    });
    socket.on('end', () => resolve(out));
    socket.on('error', reject);
  });
}

/** Whether Node set TCP_NODELAY on an accepted socket (its listening server's `noDelay`). */
function noDelayOf(socket: Socket): boolean | undefined {
  const k = Object.getOwnPropertySymbols(socket).find((x) => x.description === 'kSetNoDelay');
  return k === undefined ? undefined : (socket as unknown as Record<symbol, boolean>)[k];
}

/** The socket `server` accepts for one connection to it. */
async function acceptedSocket(server: {
  listen(port: number, host: string, cb: () => void): unknown;
  address(): unknown;
  close(cb?: () => void): unknown;
  once(event: 'connection', fn: (s: Socket) => void): unknown;
}): Promise<Socket> {
  const port = await listen(server);
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const c = netConnect(port, '127.0.0.1');
  c.on('error', () => {});
  const s = await accepted;
  c.destroy();
  s.destroy();
  return s;
}

describe('servers', () => {
  it('the TCP listeners in front of HTTP servers accept with TCP_NODELAY, as Node’s HTTP servers do', async () => {
    // The reference: an http.Server sets it, a bare net.Server does not (so the check can fail).
    expect(noDelayOf(await acceptedSocket(createHttpServer()))).toBe(true);
    expect(noDelayOf(await acceptedSocket(createNetServer()))).toBe(false);
    const mesh = new Mesh(parseConfig({}));
    cleanups.push(() => mesh.close());
    expect(noDelayOf(await acceptedSocket(createMeshHttpServer({ mesh })))).toBe(true);
    expect(
      noDelayOf(await acceptedSocket(createMeshHttpServer({ mesh, serverOptions: { noDelay: false } }))),
    ).toBe(false);
    const permissive = createPermissiveListener(createHttpsServer({ source }), createHttpServer());
    expect(noDelayOf(await acceptedSocket(permissive))).toBe(true);
  });

  it('HTTP/2 server exposes the peer identity to handlers', async () => {
    const server = createHttp2Server({ source }, (req, res) => res.end(`peer=${peerIdentity(req)}`));
    const port = await listen(server);
    const session = h2connect(`https://127.0.0.1:${port}`, {
      ca: ca.cert,
      cert: client.cert,
      key: client.key,
      checkServerIdentity: () => undefined,
    });
    cleanups.push(() => session.close());
    const body = await new Promise<string>((resolve, reject) => {
      const req = session.request({ ':path': '/' });
      let out = '';
      req.on('data', (d) => {
        out += d;
      });
      req.on('end', () => resolve(out));
      req.on('error', reject);
      req.end();
    });
    expect(body).toBe(`peer=${CLIENT_ID}`);
  });

  it('PERMISSIVE: one port takes plaintext (no identity) and mTLS (identity)', async () => {
    const tlsServer = createHttpsServer({ source, mode: 'PERMISSIVE' }, whoami);
    const plain = createHttpServer(whoami);
    const listener = createPermissiveListener(tlsServer, plain);
    const port = await listen(listener);
    cleanups.push(() => tlsServer.closeAllConnections());
    cleanups.push(() => plain.closeAllConnections());
    const plainBody = await new Promise<string>((resolve, reject) => {
      const req = httpRequest({ port, host: '127.0.0.1', path: '/', agent: false }, (res) => {
        let out = '';
        res.on('data', (d) => {
          out += d;
        });
        res.on('end', () => resolve(out));
      });
      req.on('error', reject);
      req.end();
    });
    expect(plainBody).toBe('peer=none');
    expect(await tlsGet(port, true)).toContain(`peer=${CLIENT_ID}`);
    // PERMISSIVE accepts a TLS client without a certificate, with no identity.
    expect(await tlsGet(port, false)).toContain('peer=none');
  });

  it('authorizes with requestAttributes and answers 403 with a coded body', async () => {
    const authz = createAuthorizer(
      parseAuthorization({
        mode: 'STRICT',
        policies: [
          {
            name: 'pp-only',
            rules: [
              {
                from: [{ source: { principals: ['cluster.local/ns/default/sa/productpage'] } }],
                to: [{ operation: { paths: ['/ok*'] } }],
              },
            ],
          },
        ],
      }),
    );
    const server = createHttpsServer({ source }, (req, res) => {
      const d = authz(requestAttributes(req));
      if (!d.allowed) {
        const r = forbiddenResponse(d);
        res.writeHead(r.status, r.headers).end(r.body);
        return;
      }
      res.end('fine');
    });
    const port = await listen(server);
    const get = (path: string) =>
      new Promise<string>((resolve, reject) => {
        const s = tlsConnect({
          port,
          host: '127.0.0.1',
          ca: ca.cert,
          cert: client.cert,
          key: client.key,
          checkServerIdentity: () => undefined,
        });
        let out = '';
        s.on('secureConnect', () => s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
        s.on('data', (d) => {
          out += d;
        });
        s.on('end', () => resolve(out));
        s.on('error', reject);
      });
    expect(await get('/ok/1')).toContain('fine');
    const denied = await get('/nope');
    expect(denied).toContain('HTTP/1.1 403');
    expect(denied).toContain('"code":"MESHLET_ERR_FORBIDDEN"');
  });
});

describe('tls config sections', () => {
  it('parses mesh-wide tls and per-service overrides, naming bad fields', () => {
    const cfg = parseConfig(
      {
        tls: { dir: 'client', debounce: '50ms', minVersion: 'TLSv1.3' },
        services: {
          a: ['127.0.0.1:1'],
          b: { endpoints: ['127.0.0.1:2'], tls: false },
          c: { endpoints: ['127.0.0.1:3'], tls: { dir: 'server' } },
        },
      },
      { baseDir: tmp.dir },
    );
    expect(cfg.extensions.tls).toMatchObject({
      dir: join(tmp.dir, 'client'),
      debounceMs: 50,
      minVersion: 'TLSv1.3',
      watch: true,
      pollIntervalMs: 60_000,
    });
    const tls = new MeshTls(cfg);
    expect(tls.sourceFor(cfg.services.a as never)?.current.spiffeId).toBe(CLIENT_ID);
    expect(tls.sourceFor(cfg.services.b as never)).toBeUndefined();
    expect(tls.sourceFor(cfg.services.c as never)?.current.spiffeId).toBe(SERVER_ID);
    expect(tls.sources).toHaveLength(2);
    tls.close();
    try {
      parseConfig({
        tls: { debounce: 'soon', minVersion: 'TLSv1', colour: 1 },
        services: { a: { endpoints: ['127.0.0.1:1'], tls: 7 } },
      });
      throw new Error('expected a config error');
    } catch (err) {
      expect(isConfigError(err)).toBe(true);
      const paths = (err as { issues: Array<{ path: string }> }).issues.map((i) => i.path);
      expect(paths).toEqual(expect.arrayContaining(['tls.dir', 'tls.colour', 'services.a.tls']));
    }
    expect(() => parseConfig({ tls: { dir: 'x', minVersion: 'TLSv1' } })).toThrow(/tls\.minVersion/);
  });

  it('fails with MESHLET_ERR_TLS when the directory holds no usable certificates', () => {
    const cfg = parseConfig({ tls: { dir: join(tmp.dir, 'nothing-here') } });
    expect(() => new MeshTls(cfg)).toThrow(expect.objectContaining({ code: 'MESHLET_ERR_TLS' }));
  });
});

describe('requestAttributes: the client IP (issue 14, finding 4)', () => {
  it('is the connection peer, whatever X-Forwarded-For says, unless trusted hops are configured', async () => {
    const seen: Array<{ sourceIp?: string; remoteIp?: string; hops?: string }> = [];
    const server = createHttpServer((req, res) => {
      const a = requestAttributes(req);
      const b = requestAttributes(req, { xffNumTrustedHops: 1 });
      seen.push({ sourceIp: a.sourceIp, remoteIp: a.remoteIp, hops: b.remoteIp });
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as AddressInfo).port;
      await fetch(`http://127.0.0.1:${port}/`, { headers: { 'x-forwarded-for': '10.0.0.1, 192.168.1.9' } });
      expect(seen).toEqual([{ sourceIp: '127.0.0.1', remoteIp: '127.0.0.1', hops: '192.168.1.9' }]);
      // DENY 127.0.0.0/8 and ALLOW 10.0.0.0/8 on remoteIpBlocks can no longer be dodged by the header
      const authz = createAuthorizer([
        {
          name: 'deny-local',
          action: 'DENY',
          rules: [{ from: [{ source: { remoteIpBlocks: ['127.0.0.0/8'] } }] }],
        },
      ]);
      expect(authz({ sourceIp: seen[0]?.sourceIp, remoteIp: seen[0]?.remoteIp }).allowed).toBe(false);
    } finally {
      server.close();
    }
  });
});
