import { routeView } from '@meshlet/core';
import { describe, expect, it } from 'vitest';
import {
  type AuthorizationPolicy,
  createAuthorizer,
  type RequestAttributes,
  type RequestCondition,
  rfc2253Subject,
} from '../src/index.js';

// Condition trees (Envoy RBAC's Permission/Principal shapes) in the one evaluator: each case is a
// single ALLOW policy whose only rule is the tree, so `allowed` is "the tree matched".

function matches(tree: RequestCondition, a: RequestAttributes): boolean {
  const policies: AuthorizationPolicy[] = [{ name: 'p', action: 'ALLOW', rules: [{ match: tree }] }];
  return createAuthorizer(policies)(a).allowed;
}

const CERT = {
  subjectaltname: 'DNS:reviews.default.svc, URI:spiffe://cluster.local/ns/default/sa/reviews',
  subject: { C: 'US', O: 'Acme, Inc.', CN: 'reviews' },
};

describe('condition trees', () => {
  it('and / or / not / any / never compose', () => {
    const get = { header: { name: ':method', match: { exact: 'GET' } } };
    const a = { method: 'GET', path: '/x' };
    expect(matches({ and: [get, { any: true }] }, a)).toBe(true);
    expect(matches({ and: [get, { never: 'metadata' }] }, a)).toBe(false);
    expect(matches({ or: [{ never: 'metadata' }, get] }, a)).toBe(true);
    expect(matches({ not: get }, a)).toBe(false);
    expect(matches({ not: { never: 'metadata' } }, a)).toBe(true);
    expect(matches({ or: [] }, a)).toBe(false);
  });

  it('string matches: exact, prefix, suffix, contains, regex, ignoreCase (not on regex)', () => {
    const p = (m: object) => matches({ urlPath: m }, { path: '/Reviews/42' });
    expect(p({ exact: '/Reviews/42' })).toBe(true);
    expect(p({ exact: '/reviews/42' })).toBe(false);
    expect(p({ exact: '/reviews/42', ignoreCase: true })).toBe(true);
    expect(p({ prefix: '/Rev' })).toBe(true);
    expect(p({ suffix: '/42' })).toBe(true);
    expect(p({ contains: 'views/' })).toBe(true);
    expect(p({ regex: { test: (v: string) => /^\/Reviews\/\d+$/.test(v) } })).toBe(true);
    expect(p({})).toBe(false);
  });

  it('url_path ignores the query; a :path header sees it', () => {
    const a = { path: '/a', query: '?x=1' };
    expect(matches({ urlPath: { exact: '/a' } }, a)).toBe(true);
    expect(matches({ header: { name: ':path', match: { exact: '/a' } } }, a)).toBe(false);
    expect(matches({ header: { name: ':path', match: { exact: '/a?x=1' } } }, a)).toBe(true);
  });

  it('headers: an absent one fails every check but a presence check with present == invert (A41)', () => {
    const none = { headers: {} };
    const h = (x: object) => matches({ header: { name: 'x-a', ...x } }, none);
    expect(h({ match: { exact: 'v' } })).toBe(false);
    expect(h({ match: { exact: 'v' }, invert: true })).toBe(false);
    expect(h({ present: true })).toBe(false);
    expect(h({ present: true, invert: true })).toBe(true);
    expect(h({ present: false })).toBe(true);
    expect(h({ present: false, invert: true })).toBe(false);
    const some = { headers: { 'x-a': 'v' } };
    expect(matches({ header: { name: 'x-a', match: { exact: 'w' }, invert: true } }, some)).toBe(true);
    expect(matches({ header: { name: 'X-A', present: true } }, some)).toBe(true);
  });

  it('headers: range, repeated values joined with ",", -bin in base64, hop-by-hop never present', () => {
    const a = {
      headers: {
        'x-n': '42',
        'x-list': ['a', 'b'],
        'x-id-bin': Buffer.from([1, 2, 3]) as unknown as string,
        te: 'trailers',
        connection: 'keep-alive',
      },
    };
    expect(matches({ header: { name: 'x-n', range: { start: 40, end: 43 } } }, a)).toBe(true);
    expect(matches({ header: { name: 'x-n', range: { start: 43, end: 50 } } }, a)).toBe(false);
    expect(matches({ header: { name: 'x-list', match: { exact: 'a,b' } } }, a)).toBe(true);
    expect(matches({ header: { name: 'x-id-bin', match: { exact: 'AQID' } } }, a)).toBe(true);
    expect(matches({ header: { name: 'te', present: true } }, a)).toBe(false);
    expect(matches({ header: { name: 'connection', present: true } }, a)).toBe(false);
  });

  it(':authority and host are one header; :method is the method', () => {
    const a = { host: 'reviews:9080', method: 'POST', headers: { host: 'ignored' } };
    expect(matches({ header: { name: ':authority', match: { prefix: 'reviews' } } }, a)).toBe(true);
    expect(matches({ header: { name: 'host', match: { exact: 'reviews:9080' } } }, a)).toBe(true);
    expect(matches({ header: { name: ':method', match: { exact: 'POST' } } }, a)).toBe(true);
  });

  it('destination ip, port and port range; direct and original client addresses', () => {
    const a = {
      destinationIp: '10.0.0.7',
      destinationPort: 9080,
      sourceIp: '10.1.2.3',
      remoteIp: '203.0.113.9',
    };
    expect(matches({ destinationIp: '10.0.0.0/8' }, a)).toBe(true);
    expect(matches({ destinationIp: '192.168.0.0/16' }, a)).toBe(false);
    expect(matches({ destinationPort: 9080 }, a)).toBe(true);
    expect(matches({ destinationPortRange: { start: 9000, end: 9080 } }, a)).toBe(false);
    expect(matches({ destinationPortRange: { start: 9000, end: 9081 } }, a)).toBe(true);
    expect(matches({ directRemoteIp: '10.1.0.0/16' }, a)).toBe(true);
    expect(matches({ remoteIp: '10.1.0.0/16' }, a)).toBe(false);
    expect(matches({ remoteIp: '203.0.113.0/24' }, a)).toBe(true);
    expect(matches({ remoteIp: '10.1.0.0/16' }, { sourceIp: '10.1.2.3' })).toBe(true);
  });

  it('requested server name: the SNI, "" without one', () => {
    expect(matches({ serverName: { exact: 'reviews' } }, { sni: 'reviews' })).toBe(true);
    expect(matches({ serverName: { exact: '' } }, {})).toBe(true);
    expect(matches({ serverName: { exact: 'reviews' } }, {})).toBe(false);
  });

  it('authenticated: URI SANs first, else DNS SANs, else the RFC 2253 subject; "" without a certificate', () => {
    const tls = { tls: true, mtls: true, peerCertificate: CERT };
    const auth = (m: object | null) => matches({ authenticated: m as null }, tls);
    expect(auth({ exact: 'spiffe://cluster.local/ns/default/sa/reviews' })).toBe(true);
    // URI SANs exist: DNS SANs are not consulted
    expect(auth({ exact: 'reviews.default.svc' })).toBe(false);
    const dnsOnly = {
      tls: true,
      mtls: true,
      peerCertificate: { subjectaltname: 'DNS:a.example, DNS:b.example' },
    };
    expect(matches({ authenticated: { exact: 'b.example' } }, dnsOnly)).toBe(true);
    const subjectOnly = { tls: true, mtls: true, peerCertificate: { subject: CERT.subject } };
    expect(matches({ authenticated: { exact: 'CN=reviews,O=Acme\\, Inc.,C=US' } }, subjectOnly)).toBe(true);
    expect(matches({ authenticated: { exact: '' } }, { tls: false })).toBe(true);
    expect(matches({ authenticated: { exact: 'x' } }, { tls: false })).toBe(false);
    // no name: any TLS connection
    expect(matches({ authenticated: null }, { tls: true })).toBe(true);
    expect(matches({ authenticated: null }, { tls: false })).toBe(false);
  });

  it('rfc2253Subject escapes and orders the most specific attribute first', () => {
    expect(rfc2253Subject({ C: 'US', O: 'a+b', CN: ' x' })).toBe('CN=\\ x,O=a\\+b,C=US');
    expect(rfc2253Subject(undefined)).toBe('');
  });

  it('url_path literals fold with the routed view, and say so (pathMatchingMatters)', () => {
    const view = routeView({ caseInsensitive: true });
    const a = createAuthorizer([
      { name: 'deny', action: 'DENY', rules: [{ match: { urlPath: { exact: '/Admin' } } }] },
    ]);
    expect(a.pathMatchingMatters(view)).toBe(true);
    expect(a({ path: '/admin', pathMatching: view }).allowed).toBe(false);
    const lower = createAuthorizer([
      { name: 'd', action: 'DENY', rules: [{ match: { urlPath: { exact: '/admin' } } }] },
    ]);
    expect(lower.pathMatchingMatters(view)).toBe(false);
    const regex = createAuthorizer([
      { name: 'd', action: 'DENY', rules: [{ match: { urlPath: { regex: { test: () => true } } } }] },
    ]);
    expect(regex.pathMatchingMatters(view)).toBe(true);
  });

  it('a rule’s tree is ANDed with its from / to', () => {
    const a = createAuthorizer([
      {
        name: 'p',
        action: 'ALLOW',
        rules: [{ to: [{ operation: { methods: ['GET'] } }], match: { urlPath: { prefix: '/api/' } } }],
      },
    ]);
    expect(a({ method: 'GET', path: '/api/x' }).allowed).toBe(true);
    expect(a({ method: 'POST', path: '/api/x' }).allowed).toBe(false);
    expect(a({ method: 'GET', path: '/other' }).allowed).toBe(false);
  });
});
