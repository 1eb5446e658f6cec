import { describe, expect, it } from 'vitest';
import {
  addInboundPolicy,
  decodeForRouting,
  forwardedClientIp,
  InboundAdmission,
  type InboundAttributes,
  type InboundPeer,
  isConfigError,
  MAX_TIMER_MS,
  Mesh,
  networkMatcher,
  normalizeTarget,
  type PathMatching,
  type PathNormalization,
  parseConfig,
  routeView,
  setTrustDomain,
  spiffeIdFromSubjectAltName,
  type TargetParts,
} from '../src/index.js';

function norm(target: string, normalization: PathNormalization = 'BASE'): string {
  const out = {} as TargetParts;
  const escapedSlashes =
    normalization === 'DECODE_AND_MERGE_SLASHES' ? 'UNESCAPE_AND_FORWARD' : 'KEEP_UNCHANGED';
  const err = normalizeTarget(target, { normalization, escapedSlashes }, out);
  return err === undefined ? out.path : `400: ${err}`;
}

describe('path normalization (Istio pathNormalization)', () => {
  // Istio's own expectations (tests/integration/security/normalization_test.go), hex in upper case
  // (RFC 3986 §6.2.2.1) where Envoy keeps the received case.
  const ISTIO: Array<[string, string, string, string]> = [
    // input, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES
    ['/', '/', '/', '/'],
    ['/app#foo', '/app', '/app', '/app'],
    ['/app/', '/app/', '/app/', '/app/'],
    ['/app/../admin', '/admin', '/admin', '/admin'],
    ['/app//', '/app//', '/app/', '/app/'],
    ['/app/%2f', '/app/%2F', '/app/%2F', '/app/'],
    ['/app%2f/', '/app%2F/', '/app%2F/', '/app/'],
    ['/xyz%30..//abc', '/xyz0..//abc', '/xyz0../abc', '/xyz0../abc'],
    ['/app/%2E./admin', '/admin', '/admin', '/admin'],
    ['/app\\admin', '/app/admin', '/app/admin', '/app/admin'],
    ['/app/\\/\\/\\admin', '/app//////admin', '/app/admin', '/app/admin'],
    ['/%2Fapp%5cadmin%5Cabc', '/%2Fapp%5Cadmin%5Cabc', '/%2Fapp%5Cadmin%5Cabc', '/app/admin/abc'],
    [
      '/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\\abc',
      '/%5Capp%2F%5C%2F..%2Fadmin%5C/abc',
      '/%5Capp%2F%5C%2F..%2Fadmin%5C/abc',
      '/app/admin/abc',
    ],
    ['/app//../admin', '/app/admin', '/app/admin', '/app/admin'],
    ['/app//../../admin', '/admin', '/admin', '/admin'],
    ['/..;/admin', '/..;/admin', '/..;/admin', '/..;/admin'],
    ['/admin;a=b/xyz', '/admin;a=b/xyz', '/admin;a=b/xyz', '/admin;a=b/xyz'],
    ['/ADMIN', '/ADMIN', '/ADMIN', '/ADMIN'],
  ];
  it.each(ISTIO)('%s', (input, base, merge, decode) => {
    expect(norm(input, 'BASE')).toBe(base);
    expect(norm(input, 'MERGE_SLASHES')).toBe(merge);
    expect(norm(input, 'DECODE_AND_MERGE_SLASHES')).toBe(decode);
    expect(norm(input, 'NONE')).toBe(input.replace(/#.*$/, ''));
  });

  it('decodes exactly the unreserved characters (%01-%FF as Istio lists them)', () => {
    for (let b = 1; b < 0x80; b++) {
      const c = String.fromCharCode(b);
      const hex = b.toString(16).toUpperCase().padStart(2, '0');
      const unreserved = /[A-Za-z0-9\-._~]/.test(c);
      const out = norm(`/a%${hex.toLowerCase()}b`);
      if (unreserved) expect(out, hex).toBe(c === '.' ? '/a.b' : `/a${c}b`);
      else expect(out, hex).toBe(`/a%${hex}b`);
    }
  });

  it('rejects %00, malformed escapes, invalid UTF-8 and raw control or non-ASCII characters', () => {
    for (const bad of [
      '/admin%00',
      '/a%zz',
      '/a%',
      '/a%4',
      '/%C0%AFadmin', // overlong "/"
      '/%E0%80%AF', // overlong, 3 bytes
      '/%ED%A0%80', // surrogate
      '/%F4%90%80%80', // above U+10FFFF
      '/%C3', // truncated
      '/%80', // lone continuation byte
      '/%C3%41', // bad continuation
      '/a\u0001b',
      '/a b',
      '/ａdmin',
    ]) {
      expect(norm(bad), bad).toMatch(/^400: /);
    }
    expect(norm('/caf%c3%a9')).toBe('/caf%C3%A9');
    expect(norm('/%F0%9F%98%80')).toBe('/%F0%9F%98%80');
  });

  it('reduces absolute-form targets and fragments to the path, keeps the query', () => {
    const out = {} as TargetParts;
    expect(
      normalizeTarget(
        'HTTP://Host:8080/a/./b?x=%2F#frag',
        { normalization: 'BASE', escapedSlashes: 'KEEP_UNCHANGED' },
        out,
      ),
    ).toBeUndefined();
    expect(out).toMatchObject({
      path: '/a/b',
      rawPath: '/a/./b',
      query: '?x=%2F',
      authority: 'Host:8080',
      changed: true,
    });
    normalizeTarget('http://h', { normalization: 'BASE', escapedSlashes: 'KEEP_UNCHANGED' }, out);
    expect(out).toMatchObject({ path: '/', authority: 'h', changed: true });
    normalizeTarget('/plain?q', { normalization: 'BASE', escapedSlashes: 'KEEP_UNCHANGED' }, out);
    expect(out).toMatchObject({ path: '/plain', query: '?q', changed: false, authority: undefined });
    expect(
      normalizeTarget('ftp://h/a', { normalization: 'BASE', escapedSlashes: 'KEEP_UNCHANGED' }, out),
    ).toMatch(/path or an absolute http/);
    expect(
      normalizeTarget('http://user@h/a', { normalization: 'BASE', escapedSlashes: 'KEEP_UNCHANGED' }, out),
    ).toMatch(/user information/);
  });

  it("applies Envoy's escaped-slash actions", () => {
    const out = {} as TargetParts;
    const with_ = (escapedSlashes: 'REJECT_REQUEST' | 'UNESCAPE_AND_REDIRECT' | 'UNESCAPE_AND_FORWARD') =>
      normalizeTarget('/a%2Fb%5cc', { normalization: 'BASE', escapedSlashes }, out);
    expect(with_('REJECT_REQUEST')).toMatch(/escaped slash/);
    expect(with_('UNESCAPE_AND_FORWARD')).toBeUndefined();
    expect(out).toMatchObject({ path: '/a/b/c', redirect: false });
    expect(with_('UNESCAPE_AND_REDIRECT')).toBeUndefined();
    expect(out).toMatchObject({ path: '/a/b/c', redirect: true });
  });
});

describe('route views', () => {
  it('fold paths as find-my-way does: decoded but reserved characters, slashes merged, trailing slash, lower case', () => {
    const v = routeView({
      routesReceivedPath: true,
      decodes: true,
      caseInsensitive: true,
      mergesSlashes: true,
      ignoresTrailingSlash: true,
    });
    expect(v.routePath({ path: '/x', rawPath: '//%41dmin%2F//' })).toBe('/admin%2f');
    expect(v.routePath({ path: '/x', rawPath: '/%E2%84%AAey' })).toBe('/key'); // KELVIN SIGN
    expect(v.foldPattern('/Admin/')).toBe('/admin/');
    expect(v.routeMethod('HEAD')).toBe('HEAD');
    expect(routeView({ headAsGet: true }).routeMethod('HEAD')).toBe('GET');
    expect(routeView({ caseInsensitive: true })).toBe(routeView({ caseInsensitive: true }));
    expect(decodeForRouting('/a%3Bb%25%23%C3%A9%zz')).toBe('/a%3Bb%25%23é%zz');
  });
});

describe('peer helpers', () => {
  it('takes the client IP from X-Forwarded-For only with trusted hops, counted from the right', () => {
    const xff = '6.6.6.6, 1.2.3.4, 10.0.0.1';
    expect(forwardedClientIp(xff, 0)).toBeUndefined();
    expect(forwardedClientIp(xff, 1)).toBe('10.0.0.1');
    expect(forwardedClientIp(xff, 2)).toBe('1.2.3.4');
    expect(forwardedClientIp(xff, 3)).toBe('6.6.6.6');
    expect(forwardedClientIp(xff, 4)).toBeUndefined();
    expect(forwardedClientIp(['6.6.6.6', '1.2.3.4'], 1)).toBe('1.2.3.4');
    expect(forwardedClientIp('not-an-ip', 1)).toBeUndefined();
  });

  it('matches IPv4 and IPv6 addresses against CIDR blocks (what net.BlockList would say)', async () => {
    const { BlockList } = await import('node:net');
    const blocks = [
      '10.0.0.0/8',
      '192.168.1.7',
      '0.0.0.0/0',
      '2001:db8::/32',
      '::1',
      'fe80::/10',
      '172.16.0.0/12',
    ];
    const cases = [
      '10.1.2.3',
      '11.0.0.1',
      '192.168.1.7',
      '192.168.1.8',
      '::ffff:10.0.0.1',
      '2001:db8:1::5',
      '2001:db9::1',
      '::1',
      '::2',
      'fe80::1%eth0',
      'febf::1',
      'fec0::1',
      '172.31.255.255',
      '172.32.0.0',
      '::ffff:172.20.0.1',
    ];
    for (const subset of [blocks, blocks.filter((b) => b !== '0.0.0.0/0')]) {
      const mine = networkMatcher(subset);
      const list = new BlockList();
      for (const b of subset) {
        const [addr = '', bits] = b.split('/');
        const type = addr.includes(':') ? 'ipv6' : 'ipv4';
        if (bits === undefined) list.addAddress(addr, type);
        else list.addSubnet(addr, Number(bits), type);
      }
      for (const ip of cases) {
        const plain = ip.replace(/%.*$/, '');
        const v4 = plain.startsWith('::ffff:') ? plain.slice(7) : plain;
        const expected = v4.includes(':') ? list.check(v4, 'ipv6') : list.check(v4, 'ipv4');
        expect(mine(ip), `${ip} in ${subset.join(',')}`).toBe(expected);
      }
    }
    expect(networkMatcher(['10.0.0.0/8'])('not-an-ip')).toBe(false);
    expect(networkMatcher(['10.0.0.0/8'])(undefined)).toBe(false);
  });

  it('reads the SPIFFE ID from subject alternative names as Node renders them', () => {
    expect(spiffeIdFromSubjectAltName('DNS:a, URI:https://x, URI:spiffe://td/ns/a/sa/b')).toBe(
      'spiffe://td/ns/a/sa/b',
    );
    expect(spiffeIdFromSubjectAltName('URI:"spiffe://td/x, y", DNS:b')).toBe('spiffe://td/x, y');
    expect(spiffeIdFromSubjectAltName('DNS:URI:spiffe://no')).toBeUndefined();
    // text inside another entry's value is not an entry (a URI SAN `x URI:spiffe://td/admin`)
    expect(spiffeIdFromSubjectAltName('URI:x URI:spiffe://td/admin')).toBeUndefined();
    expect(spiffeIdFromSubjectAltName('URI:x URI:spiffe://td/admin, URI:spiffe://td/web')).toBe(
      'spiffe://td/web',
    );
    expect(spiffeIdFromSubjectAltName('DNS:"a\\"b, URI:spiffe://td/admin", URI:spiffe://td/web')).toBe(
      'spiffe://td/web',
    );
    // two SPIFFE IDs: not an X.509-SVID, no identity
    expect(spiffeIdFromSubjectAltName('URI:spiffe://td/a, URI:spiffe://td/b')).toBeUndefined();
    expect(spiffeIdFromSubjectAltName(undefined)).toBeUndefined();
  });
});

const PLAIN: InboundPeer = {
  remoteAddress: '127.0.0.1',
  localAddress: '127.0.0.1',
  localPort: 8080,
  principal: undefined,
  mtls: false,
  sni: undefined,
};
const MESH_PEER: InboundPeer = { ...PLAIN, principal: 'spiffe://cluster.local/ns/a/sa/b', mtls: true };

describe('InboundAdmission', () => {
  it('refuses repeated or conflicting Hosts and malformed targets with 400 MESHLET_ERR_BAD_REQUEST', () => {
    const a = new InboundAdmission({ transport: 'http' });
    const admit = (target: string, headers: Record<string, string>, raw?: string[]) =>
      a.admitHttp('GET', target, headers, raw, PLAIN, undefined);
    expect(admit('/x', { host: 'a' }, ['Host', 'a', 'host', 'b']).status).toBe(400);
    expect(admit('/x', { host: 'a', ':authority': 'b' }).status).toBe(400);
    expect(admit('http://b/x', { host: 'a' }).status).toBe(400);
    const ok = admit('http://A/x', { host: 'a' });
    expect([ok.status, ok.host]).toEqual([0, 'A']);
    const bad = admit('/x%00', { host: 'a' });
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.errorBody())).toEqual({
      error: { code: 'MESHLET_ERR_BAD_REQUEST', message: 'the path holds %00' },
    });
  });

  it('redirects to the unescaped path under UNESCAPE_AND_REDIRECT (HTTP), refuses it for gRPC', () => {
    const a = new InboundAdmission({ transport: 'http', escapedSlashes: 'UNESCAPE_AND_REDIRECT' });
    const r = a.admitHttp('GET', '/a%2Fb?q=1', {}, undefined, PLAIN, undefined);
    expect([r.status, r.location]).toEqual([307, '/a/b?q=1']);
    const g = new InboundAdmission({ transport: 'grpc', escapedSlashes: 'UNESCAPE_AND_REDIRECT' });
    expect(g.admitGrpc('/a%2Fb', {}, PLAIN, undefined).status).toBe(400);
  });

  it('evaluates every policy source on the normalized path and as the framework routes it', () => {
    const seen: Array<[string | undefined, string | undefined, boolean]> = [];
    const denying = (pattern: string) =>
      Object.assign(
        (attrs: InboundAttributes) => {
          seen.push([attrs.method, attrs.path, attrs.pathMatching !== undefined]);
          const p = attrs.pathMatching ? attrs.pathMatching.foldPattern(pattern) : pattern;
          return attrs.path === p ? { allowed: false, reason: 'admin' } : { allowed: true, reason: 'ok' };
        },
        { pathMatchingMatters: (pm: PathMatching) => pm.foldPattern(pattern) !== pattern },
      );
    const view = routeView({ caseInsensitive: true, headAsGet: true });
    // a pattern in mixed case on a case-insensitive router: the routed view is always evaluated
    const a = new InboundAdmission({ transport: 'http', authorizer: denying('/Admin'), routeView: view });
    expect(a.admitHttp('GET', '/admin', {}, undefined, PLAIN, undefined).status).toBe(403);
    expect(seen).toEqual([
      ['GET', '/admin', false],
      ['GET', '/admin', true],
    ]);
    const r = a.admitHttp('HEAD', '/x/../ADMIN', {}, undefined, PLAIN, undefined);
    expect(r.status).toBe(403);
    expect(r.error?.message).toContain('as the server routes it: GET /admin');
    expect(r.path).toBe('/ADMIN'); // the attributes are restored after the routed view
    // lower-case patterns fold to themselves: a path already in routed form is evaluated once
    seen.length = 0;
    const b = new InboundAdmission({ transport: 'http', authorizer: denying('/admin'), routeView: view });
    expect(b.admitHttp('GET', '/other', {}, undefined, PLAIN, undefined).status).toBe(0);
    expect(seen).toEqual([['GET', '/other', false]]);
    expect(b.admitHttp('GET', '/ADMIN', {}, undefined, PLAIN, undefined).status).toBe(403);
    // a plain function (no pathMatchingMatters): evaluated in both views whenever the view folds
    seen.length = 0;
    const plain = new InboundAdmission({
      transport: 'http',
      authorizer: (x) => denying('/admin')(x),
      routeView: view,
    });
    plain.admitHttp('GET', '/other', {}, undefined, PLAIN, undefined);
    expect(seen).toHaveLength(2);
  });

  it("uses the mesh's policy sources, in order, live; an explicit authorizer replaces them", async () => {
    const mesh = new Mesh(parseConfig({}));
    try {
      const a = new InboundAdmission({ transport: 'http', mesh });
      const admit = (path: string) => a.admitHttp('GET', path, {}, undefined, PLAIN, undefined).status;
      expect(admit('/a')).toBe(0);
      const remove = addInboundPolicy(mesh, 'local', (x) => ({ allowed: x.path !== '/a', reason: 'local' }));
      addInboundPolicy(mesh, 'xds', (x) => ({ allowed: x.path !== '/b', reason: 'xds' }));
      expect([admit('/a'), admit('/b'), admit('/c')]).toEqual([403, 403, 0]);
      remove();
      expect([admit('/a'), admit('/b')]).toEqual([0, 403]);
      const own = new InboundAdmission({
        transport: 'http',
        mesh,
        authorizer: () => ({ allowed: true, reason: '' }),
      });
      expect(own.admitHttp('GET', '/b', {}, undefined, PLAIN, undefined).status).toBe(0);
      const none = new InboundAdmission({ transport: 'http', mesh, authorizer: false });
      expect(none.admitHttp('GET', '/b', {}, undefined, PLAIN, undefined).status).toBe(0);
    } finally {
      await mesh.close();
    }
  });

  it('honours deadline headers only from mesh peers of our trust domain or trusted networks, clamped', async () => {
    const header = { 'x-meshlet-deadline-ms': '50000' };
    const left = (a: InboundAdmission, peer: InboundPeer, h: Record<string, string> = header) => {
      const d = a.admitHttp('GET', '/', h, undefined, peer, undefined).deadline;
      return d === undefined ? undefined : Math.round((d - Date.now()) / 1000);
    };
    const plain = new InboundAdmission({ transport: 'http' });
    expect(left(plain, PLAIN)).toBeUndefined();
    expect(left(plain, MESH_PEER)).toBe(50); // trust domain unknown: any verified SPIFFE peer
    const mesh = new Mesh(parseConfig({ inbound: { timeout: '10s' } }));
    try {
      const a = new InboundAdmission({ transport: 'http', mesh });
      expect(left(a, PLAIN)).toBe(10); // the service's own timeout, whatever the header
      expect(left(a, MESH_PEER)).toBe(10); // clamped
      expect(left(a, MESH_PEER, { 'x-request-timeout': '2000' })).toBe(2);
      setTrustDomain(mesh, 'spiffe://other.domain/ns/x/sa/y');
      expect(left(a, MESH_PEER, { 'x-request-timeout': '2000' })).toBe(10); // not our trust domain
      setTrustDomain(mesh, 'cluster.local');
      expect(left(a, MESH_PEER, { 'x-request-timeout': '2000' })).toBe(2);
      const nets = new InboundAdmission({
        transport: 'http',
        deadlines: { trustedNetworks: ['127.0.0.0/8'] },
      });
      expect(left(nets, PLAIN, { 'x-meshlet-deadline-ms': '1e308' })).toBe(Math.round(MAX_TIMER_MS / 1000));
      // x-meshlet-deadline-ms first; x-request-timeout when it is absent or unusable
      expect(left(nets, PLAIN, { 'x-meshlet-deadline-ms': '4000', 'x-request-timeout': '9000' })).toBe(4);
      expect(left(nets, PLAIN, { 'x-meshlet-deadline-ms': 'soon', 'x-request-timeout': '9000' })).toBe(9);
      expect(left(nets, PLAIN, { 'x-meshlet-deadline-ms': 'soon' })).toBeUndefined();
      const g = new InboundAdmission({ transport: 'grpc', timeoutMs: 3000 });
      const grpc = g.admitGrpc('/s/M', {}, MESH_PEER, Date.now() + 1000);
      expect(Math.round(((grpc.deadline ?? 0) - Date.now()) / 1000)).toBe(1);
      expect(
        Math.round(((g.admitGrpc('/s/M', {}, PLAIN, Date.now() + 1000).deadline ?? 0) - Date.now()) / 1000),
      ).toBe(3);
    } finally {
      await mesh.close();
    }
  });

  it('takes the client IP from the connection peer unless hops are trusted; removes a client-sent x-forwarded-client-cert', () => {
    const headers: Record<string, string> = {
      'x-forwarded-for': '6.6.6.6, 10.0.0.1',
      'x-forwarded-client-cert': 'URI=spiffe://x',
    };
    const r = new InboundAdmission({ transport: 'http' }).admitHttp(
      'GET',
      '/',
      headers,
      undefined,
      PLAIN,
      undefined,
    );
    expect([r.sourceIp, r.remoteIp, r.principal]).toEqual(['127.0.0.1', '127.0.0.1', undefined]);
    expect(headers['x-forwarded-client-cert']).toBeUndefined();
    const hop = new InboundAdmission({ transport: 'http', xffNumTrustedHops: 1 });
    expect(
      hop.admitHttp('GET', '/', { 'x-forwarded-for': '6.6.6.6, 10.0.0.1' }, undefined, PLAIN, undefined)
        .remoteIp,
    ).toBe('10.0.0.1');
  });
});

describe('the inbound config section', () => {
  it('parses with defaults and names every bad field', () => {
    const c = parseConfig({ inbound: { pathNormalization: 'DECODE_AND_MERGE_SLASHES', timeout: '2s' } });
    expect(c.extensions.inbound).toMatchObject({
      pathNormalization: 'DECODE_AND_MERGE_SLASHES',
      escapedSlashes: 'UNESCAPE_AND_FORWARD',
      timeoutMs: 2000,
      xffNumTrustedHops: 0,
      deadlines: { trustMeshPeers: true, trustedNetworks: [] },
    });
    let err: unknown;
    try {
      parseConfig({
        inbound: {
          pathNormalization: 'FULL',
          escapedSlashes: 'DROP',
          xffNumTrustedHops: -1,
          timeout: '720h',
          deadlines: { trustedNetworks: ['10.0.0.0/33', 'x'], trustAll: true },
        },
      });
    } catch (e) {
      err = e;
    }
    expect(isConfigError(err)).toBe(true);
    const paths = (err as { issues: Array<{ path: string }> }).issues.map((i) => i.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        'inbound.pathNormalization',
        'inbound.escapedSlashes',
        'inbound.xffNumTrustedHops',
        'inbound.timeout',
        'inbound.deadlines.trustedNetworks[0]',
        'inbound.deadlines.trustedNetworks[1]',
        'inbound.deadlines.trustAll',
      ]),
    );
  });
});
