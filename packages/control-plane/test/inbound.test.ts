import { isConfigError } from '@meshlet/core';
import { createAuthorizer, parsePolicies, type RequestAttributes } from '@meshlet/tls';
import { decodeAny, LDS_TYPE, translateServerListener } from '@meshlet/xds';
import { describe, expect, it } from 'vitest';
import { buildSnapshot, parseControlPlaneConfig, resourcesFromConfig } from '../src/index.js';

// The control plane's YAML → inbound Listeners in istiod's shape → (encoded, decoded, translated
// as a server reads them) → decisions equal to those of the same policies in the local evaluator.

const POLICIES = [
  {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'deny-admin', namespace: 'default' },
    spec: { action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin*'], notMethods: ['GET'] } }] }] },
  },
  {
    name: 'allow-frontend',
    action: 'ALLOW',
    rules: [
      {
        from: [{ source: { principals: ['cluster.local/ns/default/sa/frontend'] } }],
        to: [{ operation: { methods: ['GET', 'POST'], paths: ['/api/*', '/admin/*'] } }],
      },
      {
        from: [{ source: { namespaces: ['ops'], notIpBlocks: ['10.9.0.0/16'] } }],
        when: [{ key: 'request.headers[x-ticket]', values: ['T-*'] }],
      },
      {
        from: [{ source: { ipBlocks: ['192.168.0.0/16'] } }],
        to: [{ operation: { hosts: ['*.example.com'], ports: ['9080'] } }],
      },
    ],
  },
];

const config = (svc: Record<string, unknown>) =>
  parseControlPlaneConfig({ services: { reviews: { endpoints: ['10.0.0.7:9080'], ...svc } } });

/** The inbound listeners as a client decodes them (encoded in a snapshot, then decoded). */
function decodedListeners(svc: Record<string, unknown>) {
  const snap = buildSnapshot(resourcesFromConfig(config(svc)), '1');
  return [...(snap.resources.get(LDS_TYPE)?.values() ?? [])]
    .filter((r) => r.name.startsWith('xds.istio.io/'))
    .map((r) =>
      translateServerListener(decodeAny(r.any.typeUrl, r.any.value), {
        certificateProviders: new Set(['default']),
      }),
    );
}

describe('the control plane serves inbound listeners from its YAML', () => {
  it('one per listening address, named by istio-agent’s template, with the service’s mTLS mode', () => {
    const strict = decodedListeners({
      identity: 'spiffe://cluster.local/ns/default/sa/reviews',
      mtls: 'STRICT',
      inbound: ['0.0.0.0:9080', '[::]:9080'],
    });
    expect(strict.map((l) => l.name)).toEqual([
      'xds.istio.io/grpc/lds/inbound/0.0.0.0:9080',
      'xds.istio.io/grpc/lds/inbound/[::]:9080',
    ]);
    expect(strict[1]?.address).toEqual({ host: '::', port: 9080 });
    expect(strict[0]?.chains.map((c) => [c.name, c.tls?.requireClientCertificate])).toEqual([
      ['inbound-mtls', true],
    ]);
    const permissive = decodedListeners({
      identity: 'spiffe://cluster.local/ns/default/sa/reviews',
      inbound: ['0.0.0.0:9080'],
    });
    expect(permissive[0]?.chains.map((c) => c.name)).toEqual(['inbound-mtls', 'inbound-plaintext']);
    expect(permissive[0]?.needsTransport).toBe(true);
    const plain = decodedListeners({ inbound: ['0.0.0.0:9080'] });
    expect(plain[0]?.chains.map((c) => [c.name, c.tls])).toEqual([['inbound-plaintext', undefined]]);
  });

  it('a template of the control plane’s own names them', () => {
    const set = resourcesFromConfig(config({ inbound: ['0.0.0.0:1'] }), 'grpc/server?listening_address=%s');
    expect(set.listeners?.map((l) => l.name)).toContain('grpc/server?listening_address=0.0.0.0:1');
  });

  it('names every bad field', () => {
    try {
      config({ inbound: ['reviews:80', 'x'], mtls: 'SOMETIMES', authorization: [{ action: 'MAYBE' }] });
      expect.unreachable();
    } catch (err) {
      expect(isConfigError(err)).toBe(true);
      const paths = (err as { issues: { path: string }[] }).issues.map((i) => i.path);
      expect(paths).toEqual(
        expect.arrayContaining([
          'services.reviews.inbound[0]',
          'services.reviews.inbound[1]',
          'services.reviews.mtls',
          'services.reviews.authorization[0].action',
        ]),
      );
    }
  });

  it('AuthorizationPolicies become RBAC filters that decide as the local evaluator decides', () => {
    const [l] = decodedListeners({ mtls: 'DISABLE', inbound: ['0.0.0.0:9080'], authorization: POLICIES });
    expect(l?.chains[0]?.hcm.filters.map((f) => f.name)).toEqual([
      'envoy.filters.http.rbac.DENY',
      'envoy.filters.http.rbac',
      'envoy.filters.http.router',
    ]);
    const issues: { path: string; message: string }[] = [];
    const local = createAuthorizer({ mode: 'PERMISSIVE', policies: parsePolicies(POLICIES, 'p', issues) });
    expect(issues).toEqual([]);
    const filters = (l?.chains[0]?.hcm.filters ?? []).filter((f) => f.rbac?.authorizer);
    const xds = (a: RequestAttributes) => filters.every((f) => f.rbac?.authorizer?.(a).allowed);
    const principals = [
      undefined,
      'spiffe://cluster.local/ns/default/sa/frontend',
      'spiffe://cluster.local/ns/ops/sa/admin',
      'spiffe://cluster.local/ns/default/sa/other',
    ];
    const requests: RequestAttributes[] = [];
    for (const principal of principals)
      for (const [method, path] of [
        ['GET', '/api/x'],
        ['POST', '/admin/users'],
        ['GET', '/admin/users'],
        ['DELETE', '/api/x'],
        ['GET', '/other'],
      ])
        for (const sourceIp of ['10.0.0.1', '10.9.1.1', '192.168.3.4'])
          for (const headers of [{}, { 'x-ticket': 'T-17' }])
            for (const host of ['reviews', 'api.example.com'])
              for (const destinationPort of [9080, 9090])
                requests.push({
                  principal,
                  mtls: principal !== undefined,
                  tls: principal !== undefined,
                  method,
                  path,
                  sourceIp,
                  headers,
                  host,
                  destinationPort,
                });
    let allowed = 0;
    for (const a of requests) {
      const want = local(a).allowed;
      if (want) allowed++;
      expect({ a, allowed: xds(a) }).toEqual({ a, allowed: want });
    }
    // the matrix exercises both outcomes
    expect(allowed).toBeGreaterThan(10);
    expect(allowed).toBeLessThan(requests.length - 10);
  });
});
