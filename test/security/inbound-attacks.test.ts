/**
 * The inbound side attacked as in Envoy's and Istio's CVE history, beyond the path tricks of
 * inbound-probe.test.ts: SPIFFE identities forged through a certificate's subject alternative
 * names, HTTP/1.1 framing and header smuggling, identity headers a client sets, Host /
 * `:authority` confusion, HTTP/2 abuse (CONTINUATION flood, rapid reset, oversized header lists),
 * hostile deadline headers and gRPC method paths with trailing data. Every request is written by
 * hand on a raw socket (HTTP/1.1 bytes, HTTP/2 frames with a hand-made HPACK block): nothing is
 * normalized on the way. The assertions are on what reached a handler.
 */
import { createServer, type Server as HttpServer, type IncomingMessage } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { type AddressInfo, connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { type Server, ServerCredentials, type ServiceDefinition } from '@grpc/grpc-js';
import express from 'express';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentDeadline } from '../../packages/core/src/index.js';
import { meshMiddleware, meshUpgrades } from '../../packages/express/src/index.js';
import { meshPlugin } from '../../packages/fastify/src/index.js';
import { createMeshServer, SERVER_MAX_CONCURRENT_STREAMS } from '../../packages/grpc/src/index.js';
import { echoDefinition } from '../../packages/grpc/test/helpers.js';
import { type AuthorizationPolicy, createAuthorizer, peerIdentity } from '../../packages/tls/src/index.js';
import { opensslCa, opensslLeaf, tempDir } from '../../packages/tls/test/helpers.js';
import { type RawResponse, rawGrpc, rawHttp, rawRequest } from '../helpers/raw-http.js';

const cleanups: Array<() => unknown> = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

type Counts = Record<string, number>;

function counter(): { counts: Counts; hit: (name: string) => void } {
  const counts: Counts = {};
  return {
    counts,
    hit: (name) => {
      counts[name] = (counts[name] ?? 0) + 1;
    },
  };
}

function closeHttp(server: HttpServer | ReturnType<typeof createHttpsServer>): void {
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  cleanups.push(() => server.closeAllConnections());
}

// ---------------------------------------------------------------------------------------------
// SPIFFE identity from the peer certificate
// ---------------------------------------------------------------------------------------------

/** One HTTP/1.1 request over TLS with a client certificate; resolves when the server closes. */
function rawHttps(
  port: number,
  ca: string,
  client: { cert: string; key: string },
  request: Buffer,
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = tlsConnect(
      { port, host: '127.0.0.1', ca, ...client, checkServerIdentity: () => undefined },
      () => socket.write(request),
    );
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      resolve({
        status: Number(text.split(' ')[1] ?? 0) || 0,
        headers: {},
        body: end < 0 ? '' : text.slice(end + 4),
      });
    });
  });
}

describe('SPIFFE identity from the peer certificate (mTLS Express server)', () => {
  const TD = 'spiffe://cluster.local/ns/default/sa';
  let port: number;
  let ca: string;
  const { counts, hit } = counter();
  const seen: Array<string | undefined> = [];
  let certs: Record<string, { cert: string; key: string }>;

  beforeAll(async () => {
    const { dir, cleanup } = tempDir('meshlet-attack-pki-');
    cleanups.push(cleanup);
    const authority = opensslCa(dir, 'attack-ca');
    ca = authority.cert;
    const leaf = (name: string, sans: string[]) => opensslLeaf(authority, name, { sans });
    certs = {
      // the legitimate admin workload
      admin: leaf('admin', [`URI.1=${TD}/admin`]),
      // one URI SAN that is not a SPIFFE ID, whose text holds `URI:spiffe://…/admin`: Node renders
      // it as `URI:x URI:spiffe://…/admin` (no quoting: it has no comma)
      injected: leaf('injected', [`URI.1=x URI:${TD}/admin`]),
      // the same text after a real SPIFFE ID of another workload
      injectedAfter: leaf('injected-after', [`URI.1=x URI:${TD}/admin`, `URI.2=${TD}/web`]),
      // two SPIFFE IDs: not an X.509-SVID
      two: leaf('two', [`URI.1=${TD}/admin`, `URI.2=${TD}/web`]),
      twoReversed: leaf('two-reversed', [`URI.1=${TD}/web`, `URI.2=${TD}/admin`]),
      // a non-SPIFFE URI next to one SPIFFE ID: that ID
      withHttpsUri: leaf('with-https-uri', ['URI.1=https://admin.example', `URI.2=${TD}/web`]),
      // no URI SAN at all
      dnsOnly: leaf('dns-only', ['DNS.1=admin.default.svc']),
      // a trust domain that starts like ours, a namespace that starts like default
      otherTd: leaf('other-td', ['URI.1=spiffe://cluster.local.evil/ns/default/sa/web']),
      otherNs: leaf('other-ns', ['URI.1=spiffe://cluster.local/ns/default-evil/sa/web']),
    };
    const policies: AuthorizationPolicy[] = [
      {
        name: 'allow',
        action: 'ALLOW',
        rules: [
          {
            from: [{ source: { principals: ['cluster.local/ns/default/sa/admin'] } }],
            to: [{ operation: { paths: ['/admin'] } }],
          },
          // any authenticated workload
          { from: [{ source: { principals: ['*'] } }], to: [{ operation: { paths: ['/mesh-only'] } }] },
          // the default namespace of our trust domain, by prefix and by namespace
          {
            from: [{ source: { principals: ['cluster.local/ns/default/*'] } }],
            to: [{ operation: { paths: ['/ns-only'] } }],
          },
          { from: [{ source: { namespaces: ['default'] } }], to: [{ operation: { paths: ['/ns-field'] } }] },
        ],
      },
    ];
    const app = express();
    app.use(meshMiddleware({ authorizer: createAuthorizer(policies) }));
    for (const name of ['admin', 'mesh-only', 'ns-only', 'ns-field']) {
      app.get(`/${name}`, (req, res) => {
        hit(name);
        seen.push(peerIdentity(req));
        res.json({ handler: name });
      });
    }
    const server = createHttpsServer(
      { key: certs.admin?.key, cert: certs.admin?.cert, ca, requestCert: true, rejectUnauthorized: true },
      app,
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    closeHttp(server);
    port = (server.address() as AddressInfo).port;
  });

  const get = (cert: string, path: string) =>
    rawHttps(port, ca, certs[cert] as { cert: string; key: string }, rawRequest('GET', path));

  it('the legitimate workload is admitted (the policy works)', async () => {
    expect((await get('admin', '/admin')).status).toBe(200);
    expect(seen.at(-1)).toBe(`${TD}/admin`);
  });

  it('a URI SAN whose text holds "URI:spiffe://…" is not read as a second entry', async () => {
    const before = counts.admin ?? 0;
    const a = await get('injected', '/admin');
    const b = await get('injectedAfter', '/admin');
    expect([a.status, b.status]).toEqual([403, 403]);
    expect(counts.admin ?? 0).toBe(before);
    // the one real SPIFFE ID of the second certificate is still its identity
    expect((await get('injectedAfter', '/mesh-only')).status).toBe(200);
    expect(seen.at(-1)).toBe(`${TD}/web`);
  });

  it('a certificate with two SPIFFE IDs is not an X.509-SVID: no identity, whatever their order', async () => {
    const before = counts.admin ?? 0;
    const statuses = [
      (await get('two', '/admin')).status,
      (await get('twoReversed', '/admin')).status,
      (await get('two', '/mesh-only')).status,
    ];
    expect(statuses).toEqual([403, 403, 403]);
    expect(counts.admin ?? 0).toBe(before);
  });

  it('a non-SPIFFE URI next to one SPIFFE ID: that ID; no URI SAN: no identity (`*` needs one)', async () => {
    expect((await get('withHttpsUri', '/mesh-only')).status).toBe(200);
    expect(seen.at(-1)).toBe(`${TD}/web`);
    expect((await get('withHttpsUri', '/admin')).status).toBe(403);
    expect((await get('dnsOnly', '/mesh-only')).status).toBe(403);
  });

  it('wildcard principals: a look-alike trust domain or namespace does not match', async () => {
    const statuses = [
      (await get('otherTd', '/ns-only')).status,
      (await get('otherNs', '/ns-only')).status,
      (await get('otherNs', '/ns-field')).status,
      (await get('withHttpsUri', '/ns-only')).status,
      (await get('withHttpsUri', '/ns-field')).status,
    ];
    expect(statuses).toEqual([403, 403, 403, 200, 200]);
  });
});

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 framing and header smuggling, identity headers, Host confusion (Express and Fastify)
// ---------------------------------------------------------------------------------------------

/** Denies the admin area and requests for the admin host. */
const DENY: AuthorizationPolicy[] = [
  {
    name: 'deny-admin',
    action: 'DENY',
    rules: [
      { to: [{ operation: { paths: ['/admin', '/admin/*'] } }] },
      { to: [{ operation: { hosts: ['admin.example.com'] } }] },
    ],
  },
];

interface Target {
  readonly port: number;
  readonly counts: Counts;
  /** What the last handler saw of the identity headers and its deadline. */
  readonly last: { xfcc?: unknown; rawXfcc?: boolean; deadline?: number | undefined; host?: unknown };
}

async function expressTarget(inbound: Parameters<typeof meshMiddleware>[0] = {}): Promise<Target> {
  const { counts, hit } = counter();
  const last: Target['last'] = {};
  const app = express();
  app.use(meshMiddleware({ authorizer: createAuthorizer(DENY), ...inbound }));
  const ok = (name: string) => (req: express.Request, res: express.Response) => {
    hit(name);
    see(last, req);
    res.json({ handler: name });
  };
  app.all('/admin', ok('admin'));
  app.all('/public', ok('public'));
  const server = createServer(app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  closeHttp(server);
  return { port: (server.address() as AddressInfo).port, counts, last };
}

async function fastifyTarget(inbound: Parameters<typeof meshMiddleware>[0] = {}): Promise<Target> {
  const { counts, hit } = counter();
  const last: Target['last'] = {};
  const app = Fastify();
  await app.register(meshPlugin, { authorizer: createAuthorizer(DENY), drain: false, ...inbound });
  const ok = (name: string) => async (req: { raw: IncomingMessage }) => {
    hit(name);
    see(last, req.raw);
    return { handler: name };
  };
  app.all('/admin', ok('admin'));
  app.all('/public', ok('public'));
  await app.listen({ port: 0, host: '127.0.0.1' });
  cleanups.push(() => app.close());
  return { port: (app.server.address() as AddressInfo).port, counts, last };
}

function see(last: Target['last'], req: IncomingMessage): void {
  last.xfcc = req.headers['x-forwarded-client-cert'];
  last.rawXfcc =
    req.rawHeaders.some((h) => h.toLowerCase() === 'x-forwarded-client-cert') ||
    req.headersDistinct['x-forwarded-client-cert'] !== undefined;
  last.deadline = currentDeadline();
  last.host = req.headers.host;
}

const HTTP_SERVERS: Array<[string, typeof expressTarget]> = [
  ['Express', expressTarget],
  ['Fastify', fastifyTarget],
];

/** Malformed framing: each must be refused (400 / 431) without any handler running. */
const SMUGGLING: Array<[string, string]> = [
  [
    'two different Content-Lengths',
    'POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!',
  ],
  ['Content-Length list', 'POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!'],
  [
    'Content-Length and Transfer-Encoding (CL.TE)',
    'POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n',
  ],
  [
    'Transfer-Encoding not ending in chunked',
    'POST /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n',
  ],
  [
    'obsolete line folding',
    'GET /public HTTP/1.1\r\nHost: x\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n\r\n',
  ],
  ['whitespace before the colon', 'POST /public HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello'],
  ['NUL in a header value', 'GET /public HTTP/1.1\r\nHost: x\r\nX-A: a\u0000b\r\n\r\n'],
  ['bare CR in a header value', 'GET /public HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n'],
  ['bare LF line ends', 'GET /admin HTTP/1.1\nHost: x\n\n'],
  ['LF in the request target', 'GET /public\n/admin HTTP/1.1\r\nHost: x\r\n\r\n'],
  ['a header line without a colon', 'GET /public HTTP/1.1\r\nHost: x\r\nGET /admin\r\n\r\n'],
  ['a 20 KiB header', `GET /public HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n`],
  ['no Host header', 'GET /public HTTP/1.1\r\n\r\n'],
];

const SMUGGLED = 'GET /admin HTTP/1.1\r\nHost: x\r\n\r\n';
/**
 * Malformed bodies: Node's parser has handed the headers to the (allowed) handler when it meets
 * them; it must then fail the connection, so the request smuggled after them is never parsed.
 */
const BODY_SMUGGLING: Array<[string, string]> = [
  [
    'Transfer-Encoding: xchunked',
    `POST /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${SMUGGLED}`,
  ],
  [
    'an invalid chunk size',
    `POST /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n${SMUGGLED}`,
  ],
  [
    'chunk size with trailing junk',
    `POST /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3x\r\nabc\r\n0\r\n\r\n${SMUGGLED}`,
  ],
  [
    'chunk extension with a bare LF',
    `POST /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nb\r\nx\r\n0\r\n\r\n${SMUGGLED}`,
  ],
  [
    'chunk data longer than its size',
    `POST /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n0\r\n\r\n${SMUGGLED}`,
  ],
];

describe.each(HTTP_SERVERS)('%s: HTTP/1.1 framing, identity headers, Host', (_name, start) => {
  let t: Target;
  beforeAll(async () => {
    t = await start();
  });

  it('refuses every header-level smuggling shape without running a handler', async () => {
    const out: string[] = [];
    for (const [what, req] of SMUGGLING) {
      const r = await rawHttp(t.port, Buffer.from(req, 'latin1'));
      out.push(`${what}: ${r.status}`);
    }
    expect(t.counts, out.join('\n')).toEqual({});
    expect(out.filter((o) => !/: (400|431)$/.test(o))).toEqual([]);
  });

  it('a malformed body fails the connection: the request smuggled after it never runs', async () => {
    const out: string[] = [];
    for (const [what, req] of BODY_SMUGGLING) {
      const r = await rawHttp(t.port, Buffer.from(req, 'latin1'));
      out.push(`${what}: ${r.status}`);
    }
    expect(t.counts.admin ?? 0, out.join('\n')).toBe(0);
  });

  it('removes x-forwarded-client-cert however a client spells or repeats it', async () => {
    const r = await rawHttp(
      t.port,
      rawRequest('GET', '/public', [
        'Host: x',
        'X-Forwarded-Client-Cert: By=spiffe://cluster.local/ns/default/sa/api;URI=spiffe://cluster.local/ns/default/sa/admin',
        'x-forwarded-client-cert: URI=spiffe://cluster.local/ns/default/sa/admin',
      ]),
    );
    expect(r.status, r.body).toBe(200);
    expect(t.last.xfcc).toBeUndefined();
    // nor through Node's other views of the request's headers
    expect(t.last.rawXfcc).toBe(false);
  });

  it('Host: port, case, trailing dot and repetition never dodge a host rule', async () => {
    const before = t.counts.public ?? 0;
    const hosts = [
      ['Host: admin.example.com'],
      ['Host: ADMIN.Example.COM'],
      ['Host: admin.example.com:8080'],
      ['Host: admin.example.com:'],
      ['Host: admin.example.com:80:80'],
      ['Host: admin.example.com.'],
      ['Host: Admin.Example.Com.:8080'],
      ['Host: x', 'Host: admin.example.com'],
      ['Host: admin.example.com', 'Host: x'],
    ];
    const statuses: number[] = [];
    for (const h of hosts) statuses.push((await rawHttp(t.port, rawRequest('GET', '/public', h))).status);
    // absolute-form: its authority is the host (and must agree with Host)
    statuses.push((await rawHttp(t.port, rawRequest('GET', 'http://admin.example.com/public', []))).status);
    statuses.push(
      (await rawHttp(t.port, rawRequest('GET', 'http://x/public', ['Host: admin.example.com']))).status,
    );
    statuses.push(
      (await rawHttp(t.port, rawRequest('GET', 'http://admin.example.com/public', ['Host: x']))).status,
    );
    expect(t.counts.public ?? 0, statuses.join(',')).toBe(before);
    expect(statuses.every((s) => s === 403 || s === 400)).toBe(true);
  });

  it('request targets `*` and authority-form reach no handler', async () => {
    const statuses: number[] = [];
    for (const [m, target] of [
      ['OPTIONS', '*'],
      ['GET', '*'],
      ['CONNECT', 'admin.example.com:443'],
      ['GET', 'admin'],
      ['GET', 'file:///admin'],
      ['GET', 'http://u@x/admin'],
    ] as const)
      statuses.push((await rawHttp(t.port, rawRequest(m, target))).status);
    expect(t.counts.admin ?? 0, statuses.join(',')).toBe(0);
    // CONNECT: Node closes the connection (no 'connect' listener); the rest: 400 or 404
    expect(statuses.every((s) => s === 0 || (s >= 400 && s < 500))).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// HTTP/2: raw frames
// ---------------------------------------------------------------------------------------------

/** An HPACK integer with an `n`-bit prefix whose other bits are `first`. */
function hpackInt(value: number, n: number, first = 0): number[] {
  const max = (1 << n) - 1;
  if (value < max) return [first | value];
  const out = [first | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

/** A literal header field without indexing, new name, no Huffman coding. */
function literal(name: string, value: string): Buffer {
  const n = Buffer.from(name, 'latin1');
  const v = Buffer.from(value, 'latin1');
  return Buffer.concat([
    Buffer.from([0]),
    Buffer.from(hpackInt(n.length, 7)),
    n,
    Buffer.from(hpackInt(v.length, 7)),
    v,
  ]);
}

/** The header block of a gRPC call to `path` (`:method POST` and `:scheme http` from the static table). */
function grpcBlock(path: string, extra: Array<[string, string]> = []): Buffer {
  return Buffer.concat([
    Buffer.from([0x83, 0x86]),
    literal(':path', path),
    literal(':authority', 'x'),
    literal('content-type', 'application/grpc'),
    literal('te', 'trailers'),
    ...extra.map(([n, v]) => literal(n, v)),
  ]);
}

const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, GOAWAY: 7, CONTINUATION: 9 } as const;

function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}

/** One gRPC message frame (`{"text":"x"}`, the echo definition's JSON). */
const GRPC_MESSAGE = (() => {
  const m = Buffer.from(JSON.stringify({ text: 'x' }));
  const b = Buffer.alloc(5 + m.length);
  b.writeUInt32BE(m.length, 1);
  m.copy(b, 5);
  return b;
})();

/**
 * A raw HTTP/2 connection: the client preface is sent on connect; the frames the server sends are
 * parsed (their types counted, a GOAWAY's error code kept); `closed` resolves when the server
 * closes the connection or sends GOAWAY.
 */
class RawH2 {
  readonly socket: Socket;
  readonly seen: Record<number, number> = {};
  goawayCode: number | undefined;
  /** Streams the server ended (END_STREAM or RST_STREAM), with their waiters. */
  readonly ended = new Set<number>();
  readonly #waiters = new Map<number, () => void>();
  /** The server's SETTINGS, by identifier. */
  readonly settings: Record<number, number> = {};
  readonly closed: Promise<void>;
  #buf = Buffer.alloc(0);

  constructor(port: number) {
    this.socket = netConnect(port, '127.0.0.1');
    this.socket.on('error', () => {}); // a reset while the flood is written is an outcome, not an error
    this.socket.write(
      Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), frame(FRAME.SETTINGS, 0, 0)]),
    );
    this.closed = new Promise<void>((resolve) => {
      this.socket.on('close', () => resolve());
      this.socket.on('data', (c: Buffer) => {
        this.#buf = Buffer.concat([this.#buf, c]);
        while (this.#buf.length >= 9) {
          const len = this.#buf.readUIntBE(0, 3);
          if (this.#buf.length < 9 + len) break;
          const type = this.#buf[3] as number;
          const flags = this.#buf[4] as number;
          this.seen[type] = (this.seen[type] ?? 0) + 1;
          if (type === FRAME.SETTINGS && (flags & 1) === 0) {
            for (let o = 9; o + 6 <= 9 + len; o += 6)
              this.settings[this.#buf.readUInt16BE(o)] = this.#buf.readUInt32BE(o + 2);
            this.write(frame(FRAME.SETTINGS, 1, 0));
          }
          const id = this.#buf.readUInt32BE(5) & 0x7fffffff;
          if (
            id !== 0 &&
            (type === FRAME.RST_STREAM || ((type === FRAME.HEADERS || type === FRAME.DATA) && flags & 1))
          ) {
            this.ended.add(id);
            this.#waiters.get(id)?.();
          }
          if (type === FRAME.GOAWAY) {
            this.goawayCode = this.#buf.readUInt32BE(13);
            resolve();
          }
          this.#buf = this.#buf.subarray(9 + len);
        }
      });
    });
    cleanups.push(() => this.socket.destroy());
  }

  /** Resolves when the server has ended stream `id`. */
  streamEnd(id: number): Promise<void> {
    if (this.ended.has(id)) return Promise.resolve();
    return new Promise((r) => this.#waiters.set(id, r));
  }

  write(b: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(b);
  }
}

describe('gRPC server: HTTP/2 abuse, :authority confusion, method paths with trailing data', () => {
  const adminDefinition: ServiceDefinition = {
    Get: {
      ...(echoDefinition.Echo as ServiceDefinition[string]),
      path: '/test.Admin/Get',
      originalName: 'get',
    },
  };
  let port: number;
  const { counts, hit } = counter();
  const hosts: unknown[] = [];
  /** Calls whose metadata reached the admission step. */
  let admitted = 0;
  const counted = (policies: AuthorizationPolicy[]) => {
    const a = createAuthorizer(policies);
    return (attrs: Parameters<typeof a>[0]) => {
      admitted++;
      return a(attrs);
    };
  };

  beforeAll(async () => {
    const ms = createMeshServer({
      authorizer: counted([
        {
          name: 'deny',
          action: 'DENY',
          rules: [
            { to: [{ operation: { paths: ['/test.Admin/Get'] } }] },
            { to: [{ operation: { hosts: ['admin.example.com'] } }] },
          ],
        },
      ]),
      health: false,
    });
    const reply =
      (name: string) =>
      (
        call: { request: { text: string }; metadata: { get(k: string): unknown[] } },
        cb: (e: null, r: object) => void,
      ) => {
        hit(name);
        hosts.push(call.metadata.get('host')[0]);
        cb(null, { text: call.request.text });
      };
    ms.server.addService(echoDefinition, { Echo: reply('echo'), Get: reply('echo') });
    ms.server.addService(adminDefinition, { Get: reply('admin') });
    port = await new Promise<number>((resolve, reject) =>
      ms.server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    cleanups.push(() => (ms.server as Server).forceShutdown());
  });

  it('method paths with trailing data never reach the method an exact rule denies', async () => {
    const statuses: number[] = [];
    for (const p of [
      '/test.Admin/Get/',
      '/test.Admin/Get/x',
      '/test.Admin/Get;x',
      '/test.Admin/Get%20',
      '/test.Admin/Get.',
      '/test.Admin/Get?',
      '/test.Admin/Get#',
      '/test.Admin/Get//',
      '/test.Admin//Get',
      '/test.Admin/./Get',
    ])
      statuses.push((await rawGrpc(port, p, GRPC_MESSAGE.subarray(5))).grpcStatus);
    expect(counts.admin ?? 0, statuses.join(',')).toBe(0);
    expect((await rawGrpc(port, '/test.Echo/Echo', GRPC_MESSAGE.subarray(5))).grpcStatus).toBe(0);
  });

  it('a host header that differs from :authority is refused (the policy reads :authority)', async () => {
    const before = counts.echo ?? 0;
    const c = new RawH2(port);
    c.write(frame(FRAME.HEADERS, 4, 1, grpcBlock('/test.Echo/Echo', [['host', 'admin.example.com']])));
    c.write(frame(FRAME.DATA, 1, 1, GRPC_MESSAGE));
    await c.streamEnd(1);
    c.socket.destroy();
    expect(counts.echo ?? 0, JSON.stringify(hosts)).toBe(before);
    // the same call with only :authority: admitted (the probe works)
    const d = new RawH2(port);
    d.write(frame(FRAME.HEADERS, 4, 1, grpcBlock('/test.Echo/Echo')));
    d.write(frame(FRAME.DATA, 1, 1, GRPC_MESSAGE));
    await d.streamEnd(1);
    d.socket.destroy();
    expect(counts.echo ?? 0).toBe(before + 1);
  });

  it('a CONTINUATION flood ends the connection before the flood does', async () => {
    const before = JSON.stringify(counts);
    const c = new RawH2(port);
    c.write(frame(FRAME.HEADERS, 0, 1, grpcBlock('/test.Echo/Echo')));
    const junk = literal('x-flood', 'a'.repeat(64));
    let sent = 0;
    for (; sent < 20_000 && !c.socket.destroyed && c.goawayCode === undefined; sent++) {
      c.write(frame(FRAME.CONTINUATION, 0, 1, junk));
      if (sent % 500 === 499) await new Promise<void>((r) => setImmediate(r));
    }
    await c.closed;
    expect(sent).toBeLessThan(20_000);
    expect(JSON.stringify(counts)).toBe(before);
  });

  it('rapid reset: a client that opens and cancels streams without end gets GOAWAY', async () => {
    const c = new RawH2(port);
    const block = grpcBlock('/test.Echo/Echo');
    const cancel = Buffer.alloc(4);
    cancel.writeUInt32BE(8); // CANCEL
    let sent = 0;
    for (; sent < 50_000 && !c.socket.destroyed && c.goawayCode === undefined; sent++) {
      const id = 2 * sent + 1;
      c.write(Buffer.concat([frame(FRAME.HEADERS, 4, id, block), frame(FRAME.RST_STREAM, 0, id, cancel)]));
      if (sent % 200 === 199) await new Promise<void>((r) => setImmediate(r));
    }
    await c.closed;
    expect(sent).toBeLessThan(50_000);
  });

  it('a header block beyond what nghttp2 takes (CONTINUATION frames past its cap) ends the connection', async () => {
    const before = JSON.stringify(counts);
    const c = new RawH2(port);
    const big = Array.from({ length: 40 }, (_, i): [string, string] => [`x-big-${i}`, 'a'.repeat(8000)]);
    const block = grpcBlock('/test.Echo/Echo', big);
    const parts: Buffer[] = [];
    for (let i = 0; i < block.length; i += 16_000) parts.push(block.subarray(i, i + 16_000));
    parts.forEach((p, i) => {
      c.write(frame(i === 0 ? FRAME.HEADERS : FRAME.CONTINUATION, i === parts.length - 1 ? 4 : 0, 1, p));
    });
    c.write(frame(FRAME.DATA, 1, 1, GRPC_MESSAGE));
    await c.closed;
    expect(JSON.stringify(counts)).toBe(before);
  });

  it('one connection holds at most SERVER_MAX_CONCURRENT_STREAMS open calls; streams beyond are refused', async () => {
    const c = new RawH2(port);
    const block = grpcBlock('/test.Echo/Echo', [['x-pad', 'a'.repeat(4000)]]);
    const from = admitted;
    const extra = 200;
    // the limit is announced in the server's first SETTINGS
    await new Promise<void>((resolve) => {
      const check = () => ((c.seen[FRAME.SETTINGS] ?? 0) > 0 ? resolve() : setImmediate(check));
      check();
    });
    expect(c.settings[3]).toBe(SERVER_MAX_CONCURRENT_STREAMS);
    for (let i = 0; i < SERVER_MAX_CONCURRENT_STREAMS + extra; i++) {
      c.write(frame(FRAME.HEADERS, 4, 2 * i + 1, block)); // END_HEADERS, the call left open
      if (i % 200 === 199) await new Promise<void>((r) => setImmediate(r));
    }
    // Node 20 refuses each stream past the limit (RST_STREAM); Node 24 ends the connection (GOAWAY)
    await Promise.race([
      c.closed,
      new Promise<void>((resolve) => {
        const check = () => ((c.seen[FRAME.RST_STREAM] ?? 0) >= extra ? resolve() : setImmediate(check));
        check();
      }),
    ]);
    expect(admitted - from).toBeLessThanOrEqual(SERVER_MAX_CONCURRENT_STREAMS);
    c.socket.destroy();
  });
});

// ---------------------------------------------------------------------------------------------
// HTTP/2 to an HTTP server (Fastify h2c): Host vs :authority
// ---------------------------------------------------------------------------------------------

describe('Fastify over HTTP/2: a host header that differs from :authority', () => {
  it('is refused before the handler; :authority alone is served', async () => {
    const { counts, hit } = counter();
    const app = Fastify({ http2: true });
    await app.register(meshPlugin, { authorizer: createAuthorizer(DENY), drain: false });
    app.get('/public', async () => {
      hit('public');
      return { handler: 'public' };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    cleanups.push(() => app.close());
    const port = (app.server.address() as AddressInfo).port;
    const get = (extra: Array<[string, string]>) =>
      Buffer.concat([
        Buffer.from([0x82, 0x86]), // :method GET, :scheme http
        literal(':path', '/public'),
        literal(':authority', 'x'),
        ...extra.map(([n, v]) => literal(n, v)),
      ]);
    const c = new RawH2(port);
    c.write(frame(FRAME.HEADERS, 5, 1, get([['host', 'admin.example.com']])));
    c.write(frame(FRAME.HEADERS, 5, 3, get([['host', 'X']]))); // the same host in another case
    c.write(frame(FRAME.HEADERS, 5, 5, get([])));
    c.write(frame(FRAME.HEADERS, 5, 7, get([['host', 'x:1']])));
    await Promise.all([c.streamEnd(1), c.streamEnd(3), c.streamEnd(5), c.streamEnd(7)]);
    c.socket.destroy();
    expect(counts.public).toBe(2);
  });
});

describe('Fastify over HTTP/2: :method spellings HTTP/1.1 cannot send', () => {
  it('a lower-case or unknown :method never reaches a handler a method rule denies', async () => {
    const { counts, hit } = counter();
    const app = Fastify({ http2: true });
    await app.register(meshPlugin, {
      authorizer: createAuthorizer([
        {
          name: 'deny-get-secret',
          action: 'DENY',
          rules: [{ to: [{ operation: { methods: ['GET'], paths: ['/secret'] } }] }],
        },
      ]),
      drain: false,
    });
    app.get('/secret', async () => {
      hit('secret');
      return { handler: 'secret' };
    });
    app.post('/secret', async () => {
      hit('post');
      return { handler: 'post' };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    cleanups.push(() => app.close());
    const port = (app.server.address() as AddressInfo).port;
    const c = new RawH2(port);
    const methods = ['get', 'Get', 'GET ', 'head', 'HEAD', 'GET', 'POST'];
    methods.forEach((m, i) => {
      c.write(
        frame(
          FRAME.HEADERS,
          5,
          2 * i + 1,
          Buffer.concat([
            literal(':method', m),
            Buffer.from([0x86]),
            literal(':path', '/secret'),
            literal(':authority', 'x'),
          ]),
        ),
      );
    });
    await Promise.race([c.closed, Promise.all(methods.map((_, i) => c.streamEnd(2 * i + 1)))]);
    c.socket.destroy();
    // only POST is served
    expect(counts).toEqual({ post: 1 });
  });
});

// ---------------------------------------------------------------------------------------------
// Upgrade requests (WebSocket): they go to the server's `upgrade` listeners, not the middleware
// ---------------------------------------------------------------------------------------------

describe.each([
  ['Express + meshUpgrades', 'express'],
  ['Fastify', 'fastify'],
] as const)('%s: upgrade requests', (_name, kind) => {
  it('are admitted by the same policy before any upgrade listener runs', async () => {
    const reached: string[] = [];
    let server: HttpServer;
    if (kind === 'express') {
      const app = express();
      app.use(meshMiddleware({ authorizer: createAuthorizer(DENY) }));
      server = meshUpgrades(createServer(app), { authorizer: createAuthorizer(DENY) });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      closeHttp(server);
    } else {
      const app = Fastify();
      await app.register(meshPlugin, { authorizer: createAuthorizer(DENY), drain: false });
      await app.listen({ port: 0, host: '127.0.0.1' });
      cleanups.push(() => app.close());
      server = app.server;
    }
    // a WebSocket library's listener, added after the mesh
    server.on('upgrade', (req: IncomingMessage, socket: Socket) => {
      reached.push(`${req.url} ${req.headers['x-forwarded-client-cert'] ?? ''}`);
      socket.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    });
    const port = (server.address() as AddressInfo).port;
    const upgrade = (target: string, extra: string[] = ['Host: x']) =>
      rawHttp(
        port,
        rawRequest('GET', target, [...extra, 'Upgrade: websocket', 'Connection: Upgrade'], false),
      );
    const statuses = [
      (await upgrade('/admin')).status,
      (await upgrade('/ADMIN/x')).status,
      (await upgrade('/x/../admin')).status,
      (await upgrade('/public', ['Host: admin.example.com'])).status,
      (await upgrade('/public', ['Host: x', 'Host: y'])).status,
    ];
    expect(statuses).toEqual([403, 403, 403, 403, 400]);
    expect(reached).toEqual([]);
    // allowed: the listener runs, with the normalized path and without a client's certificate header
    const ok = await upgrade('/x/../public', ['Host: x', 'X-Forwarded-Client-Cert: URI=spiffe://td/admin']);
    expect(ok.status).toBe(101);
    expect(reached).toEqual(['/public ']);
  });
});

// ---------------------------------------------------------------------------------------------
// Hostile deadline headers from a trusted peer
// ---------------------------------------------------------------------------------------------

describe.each(HTTP_SERVERS)('%s: hostile x-meshlet-deadline-ms values', (_name, start) => {
  it('a trusted caller gets a deadline within [now, now + 2^31-1 ms] or none; an untrusted one none', async () => {
    const trusted = await start({ deadlines: { trustedNetworks: ['127.0.0.0/8', '::1'] } });
    const untrusted = await start();
    const VALUES = [
      '-1',
      '-0',
      '1e400',
      'NaN',
      'Infinity',
      '-Infinity',
      '0x7fffffff',
      '99999999999',
      '9'.repeat(13),
    ];
    VALUES.push('1, 2', '1.5e3', '0', '', '1e308', '0b11', '4294967296');
    const bad: string[] = [];
    for (const t of [trusted, untrusted]) {
      for (const v of VALUES) {
        const before = Date.now();
        const r = await rawHttp(
          t.port,
          rawRequest('GET', '/public', ['Host: x', `x-meshlet-deadline-ms: ${v}`]),
        );
        const d = t.last.deadline;
        const ok =
          r.status === 200 &&
          (d === undefined || (t === trusted && d >= before && d <= Date.now() + 2 ** 31 - 1));
        if (!ok)
          bad.push(`${t === trusted ? 'trusted' : 'untrusted'} ${JSON.stringify(v)}: ${r.status} ${d}`);
        t.last.deadline = undefined;
      }
    }
    expect(bad).toEqual([]);
    // the control: an ordinary value counts from the trusted caller only
    const before = Date.now();
    await rawHttp(trusted.port, rawRequest('GET', '/public', ['Host: x', 'x-meshlet-deadline-ms: 5000']));
    expect(trusted.last.deadline).toBeGreaterThanOrEqual(before + 5000);
    await rawHttp(untrusted.port, rawRequest('GET', '/public', ['Host: x', 'x-meshlet-deadline-ms: 5000']));
    expect(untrusted.last.deadline).toBeUndefined();
  });
});
