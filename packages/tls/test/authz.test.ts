import { isConfigError, parseConfig } from '@meshlet/core';
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import {
  createAuthorizer,
  forbiddenBody,
  forbiddenError,
  forbiddenResponse,
  parseAuthorization,
  type RequestAttributes,
} from '../src/index.js';

const PP = 'spiffe://cluster.local/ns/default/sa/productpage';
const RATINGS = 'spiffe://cluster.local/ns/prod/sa/ratings';

const base: RequestAttributes = {
  principal: PP,
  sourceIp: '10.0.0.5',
  destinationPort: 9080,
  method: 'GET',
  path: '/api/v1/reviews?x=1',
  host: 'reviews.default.svc:9080',
  headers: { 'x-user': 'alice', 'x-multi': ['a', 'b'] },
};

function allowOnly(rule: Record<string, unknown>) {
  return createAuthorizer(parseAuthorization({ policies: [{ name: 'p', action: 'ALLOW', rules: [rule] }] }));
}

describe('authorization defaults', () => {
  it('allows everything without policies, in PERMISSIVE mode without identity too', () => {
    const authz = createAuthorizer(parseAuthorization({}));
    expect(authz(base)).toMatchObject({ allowed: true, reason: 'no ALLOW policy applies' });
    expect(authz({ ...base, principal: undefined }).allowed).toBe(true);
  });

  it('STRICT mode requires mTLS', () => {
    const authz = createAuthorizer(parseAuthorization({ mode: 'STRICT' }));
    expect(authz({ ...base, principal: undefined })).toMatchObject({
      allowed: false,
      reason: 'mTLS is required (STRICT mode)',
    });
    expect(authz({ ...base, principal: undefined, mtls: true }).allowed).toBe(true);
    expect(authz(base).allowed).toBe(true);
  });

  it('denies when ALLOW policies exist and none matches; an ALLOW policy without rules allows nothing', () => {
    expect(createAuthorizer(parseAuthorization({ policies: [{ name: 'deny-all' }] }))(base)).toMatchObject({
      allowed: false,
      reason: 'no ALLOW policy matched',
    });
    // An empty rule matches everything.
    expect(
      createAuthorizer(parseAuthorization({ policies: [{ name: 'allow-all', rules: [{}] }] }))(base),
    ).toMatchObject({
      allowed: true,
      policy: 'allow-all',
      rule: 0,
    });
  });

  it('evaluates DENY before ALLOW, and AUDIT never changes the decision', () => {
    const onDeny = vi.fn();
    const onAudit = vi.fn();
    const authz = createAuthorizer(
      parseAuthorization({
        policies: [
          { name: 'allow-all', action: 'ALLOW', rules: [{}] },
          { name: 'no-admin', action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin*'] } }] }] },
          { name: 'audit-get', action: 'AUDIT', rules: [{ to: [{ operation: { methods: ['GET'] } }] }] },
        ],
      }),
      { onDeny, onAudit },
    );
    expect(authz({ ...base, path: '/admin/users' })).toMatchObject({
      allowed: false,
      policy: 'no-admin',
      rule: 0,
      audited: ['audit-get'],
    });
    expect(authz(base)).toMatchObject({ allowed: true, policy: 'allow-all', audited: ['audit-get'] });
    expect(authz({ ...base, method: 'POST' })).toMatchObject({ allowed: true, audited: [] });
    expect(onDeny).toHaveBeenCalledTimes(1);
    expect(onAudit).toHaveBeenCalledTimes(2);
    expect(authz.stats).toEqual({ allowed: 2, denied: 1, audited: 2 });
  });
});

describe('the rule matrix', () => {
  const cases: Array<[string, Record<string, unknown>, RequestAttributes, boolean]> = [
    // from.source
    [
      'principals exact (Istio form)',
      { from: [{ source: { principals: ['cluster.local/ns/default/sa/productpage'] } }] },
      base,
      true,
    ],
    ['principals exact (spiffe:// form)', { from: [{ source: { principals: [PP] } }] }, base, true],
    ['principals other', { from: [{ source: { principals: [RATINGS] } }] }, base, false],
    ['principals prefix', { from: [{ source: { principals: ['cluster.local/ns/default/*'] } }] }, base, true],
    ['principals suffix', { from: [{ source: { principals: ['*/sa/productpage'] } }] }, base, true],
    [
      'principals * needs an identity',
      { from: [{ source: { principals: ['*'] } }] },
      { ...base, principal: undefined },
      false,
    ],
    ['principals * with identity', { from: [{ source: { principals: ['*'] } }] }, base, true],
    ['notPrincipals', { from: [{ source: { notPrincipals: [PP] } }] }, base, false],
    ['notPrincipals other', { from: [{ source: { notPrincipals: [RATINGS] } }] }, base, true],
    ['namespaces', { from: [{ source: { namespaces: ['default'] } }] }, base, true],
    ['namespaces other', { from: [{ source: { namespaces: ['prod'] } }] }, base, false],
    [
      'namespaces absent identity',
      { from: [{ source: { namespaces: ['default'] } }] },
      { ...base, principal: undefined },
      false,
    ],
    [
      'principals, empty identity',
      { from: [{ source: { principals: ['*'] } }] },
      { ...base, principal: '' },
      false,
    ],
    [
      'principals in one source, an IP block in another: the IP block still admits without identity',
      { from: [{ source: { principals: [PP] } }, { source: { ipBlocks: ['10.0.0.0/24'] } }] },
      { ...base, principal: undefined },
      true,
    ],
    [
      'principals and namespaces in every source, no identity',
      { from: [{ source: { principals: [PP] } }, { source: { namespaces: ['default'] } }] },
      { ...base, principal: undefined },
      false,
    ],
    [
      'notPrincipals only, no identity',
      { from: [{ source: { notPrincipals: [PP] } }] },
      { ...base, principal: undefined },
      true,
    ],
    ['notNamespaces', { from: [{ source: { notNamespaces: ['default'] } }] }, base, false],
    ['notNamespaces other', { from: [{ source: { notNamespaces: ['prod'] } }] }, base, true],
    ['ipBlocks CIDR', { from: [{ source: { ipBlocks: ['10.0.0.0/24'] } }] }, base, true],
    ['ipBlocks single', { from: [{ source: { ipBlocks: ['10.0.0.6'] } }] }, base, false],
    [
      'ipBlocks IPv4-mapped',
      { from: [{ source: { ipBlocks: ['10.0.0.0/8'] } }] },
      { ...base, sourceIp: '::ffff:10.1.2.3' },
      true,
    ],
    [
      'ipBlocks IPv6',
      { from: [{ source: { ipBlocks: ['fd00::/8'] } }] },
      { ...base, sourceIp: 'fd00::1' },
      true,
    ],
    ['notIpBlocks', { from: [{ source: { notIpBlocks: ['10.0.0.0/24'] } }] }, base, false],
    [
      'remoteIpBlocks',
      { from: [{ source: { remoteIpBlocks: ['192.168.0.0/16'] } }] },
      { ...base, remoteIp: '192.168.1.1' },
      true,
    ],
    ['notRemoteIpBlocks', { from: [{ source: { notRemoteIpBlocks: ['10.0.0.5'] } }] }, base, false],
    [
      'two sources are ORed',
      { from: [{ source: { principals: [RATINGS] } }, { source: { namespaces: ['default'] } }] },
      base,
      true,
    ],
    [
      'fields of a source are ANDed',
      { from: [{ source: { namespaces: ['default'], ipBlocks: ['1.1.1.1'] } }] },
      base,
      false,
    ],
    // to.operation
    ['methods', { to: [{ operation: { methods: ['GET', 'HEAD'] } }] }, base, true],
    ['methods other', { to: [{ operation: { methods: ['POST'] } }] }, base, false],
    ['notMethods', { to: [{ operation: { notMethods: ['GET'] } }] }, base, false],
    ['paths exact (query ignored)', { to: [{ operation: { paths: ['/api/v1/reviews'] } }] }, base, true],
    ['paths prefix', { to: [{ operation: { paths: ['/api/*'] } }] }, base, true],
    ['paths suffix', { to: [{ operation: { paths: ['*/reviews'] } }] }, base, true],
    ['paths other', { to: [{ operation: { paths: ['/api/v2/*'] } }] }, base, false],
    ['notPaths', { to: [{ operation: { notPaths: ['/api/*'] } }] }, base, false],
    ['ports', { to: [{ operation: { ports: ['9080'] } }] }, base, true],
    ['ports as numbers', { to: [{ operation: { ports: [8080] } }] }, base, false],
    ['notPorts', { to: [{ operation: { notPorts: ['9080'] } }] }, base, false],
    [
      'hosts (port ignored, case-insensitive)',
      { to: [{ operation: { hosts: ['Reviews.default.svc'] } }] },
      base,
      true,
    ],
    ['hosts suffix', { to: [{ operation: { hosts: ['*.svc'] } }] }, base, true],
    [
      'hosts: cut at the first colon (a Host of admin:80:80 is admin, as frameworks read it)',
      { to: [{ operation: { hosts: ['reviews.default.svc'] } }] },
      { ...base, host: 'reviews.default.svc:80:80' },
      true,
    ],
    [
      'hosts: a trailing dot names the same host',
      { to: [{ operation: { hosts: ['reviews.default.svc'] } }] },
      { ...base, host: 'Reviews.default.svc.:9080' },
      true,
    ],
    [
      'hosts: an IPv6 literal keeps its colons',
      { to: [{ operation: { hosts: ['[::1]'] } }] },
      { ...base, host: '[::1]:9080' },
      true,
    ],
    ['notHosts', { to: [{ operation: { notHosts: ['reviews.*'] } }] }, base, false],
    // when
    ['when header', { when: [{ key: 'request.headers[X-User]', values: ['alice', 'bob'] }] }, base, true],
    ['when header prefix', { when: [{ key: 'request.headers[x-user]', values: ['al*'] }] }, base, true],
    ['when header other', { when: [{ key: 'request.headers[x-user]', values: ['bob'] }] }, base, false],
    ['when header absent', { when: [{ key: 'request.headers[x-none]', values: ['*'] }] }, base, false],
    [
      'when header notValues',
      { when: [{ key: 'request.headers[x-user]', notValues: ['alice'] }] },
      base,
      false,
    ],
    [
      'when multi-valued header',
      { when: [{ key: 'request.headers[x-multi]', values: ['a,b'] }] },
      base,
      true,
    ],
    [
      'when Headers object',
      { when: [{ key: 'request.headers[x-user]', values: ['alice'] }] },
      { ...base, headers: new Headers({ 'X-User': 'alice' }) },
      true,
    ],
    ['when source.ip', { when: [{ key: 'source.ip', values: ['10.0.0.0/8'] }] }, base, true],
    ['when source.namespace', { when: [{ key: 'source.namespace', values: ['prod'] }] }, base, false],
    [
      'when source.principal',
      { when: [{ key: 'source.principal', values: ['cluster.local/ns/default/sa/productpage'] }] },
      base,
      true,
    ],
    ['when destination.port', { when: [{ key: 'destination.port', values: ['9080'] }] }, base, true],
    [
      'when connection.sni',
      { when: [{ key: 'connection.sni', values: ['reviews*'] }] },
      { ...base, sni: 'reviews.local' },
      true,
    ],
    [
      'when conditions are ANDed',
      {
        when: [
          { key: 'source.ip', values: ['10.0.0.5'] },
          { key: 'destination.port', values: ['1'] },
        ],
      },
      base,
      false,
    ],
    // combined: from AND to AND when
    [
      'from+to+when all match',
      {
        from: [{ source: { namespaces: ['default'] } }],
        to: [{ operation: { methods: ['GET'] } }],
        when: [{ key: 'request.headers[x-user]', values: ['alice'] }],
      },
      base,
      true,
    ],
    [
      'from+to, to fails',
      { from: [{ source: { namespaces: ['default'] } }], to: [{ operation: { methods: ['DELETE'] } }] },
      base,
      false,
    ],
  ];
  it.each(cases)('%s', (_name, rule, attrs, allowed) => {
    expect(allowOnly(rule)(attrs).allowed).toBe(allowed);
  });
});

describe('policy parsing', () => {
  it('names every bad field by path', () => {
    try {
      parseAuthorization({
        mode: 'LAX',
        policies: [
          {
            name: 'a',
            action: 'PERMIT',
            rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/33', 'x'], principal: ['p'] } }] }],
          },
          {
            name: 'b',
            rules: [
              {
                to: [{ operation: { paths: ['/a*b'], ports: ['http'] } }],
                when: [{ key: 'request.auth.claims[iss]', values: ['x'] }],
              },
            ],
          },
          { name: 'c', action: 'CUSTOM', rules: 'all' },
        ],
      });
      throw new Error('expected a config error');
    } catch (err) {
      expect(isConfigError(err)).toBe(true);
      const paths = (err as { issues: Array<{ path: string }> }).issues.map((i) => i.path);
      expect(paths).toEqual(
        expect.arrayContaining([
          'authorization.mode',
          'authorization.policies[0].action',
          'authorization.policies[0].rules[0].from[0].source.ipBlocks[0]',
          'authorization.policies[0].rules[0].from[0].source.ipBlocks[1]',
          'authorization.policies[0].rules[0].from[0].source.principal',
          'authorization.policies[1].rules[0].to[0].operation.paths[0]',
          'authorization.policies[1].rules[0].to[0].operation.ports[0]',
          'authorization.policies[1].rules[0].when[0].key',
          'authorization.policies[2].action',
          'authorization.policies[2].rules',
        ]),
      );
    }
  });

  it('accepts Kubernetes AuthorizationPolicy objects', () => {
    const cfg = parseAuthorization({
      mode: 'STRICT',
      policies: [
        {
          apiVersion: 'security.istio.io/v1',
          kind: 'AuthorizationPolicy',
          metadata: { name: 'deny-ratings', namespace: 'default' },
          spec: { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['prod'] } }] }] },
        },
      ],
    });
    expect(cfg.policies[0]).toMatchObject({ name: 'default/deny-ratings', action: 'DENY' });
    const authz = createAuthorizer(cfg);
    expect(authz({ ...base, principal: RATINGS })).toMatchObject({
      allowed: false,
      policy: 'default/deny-ratings',
    });
  });

  it('is a mesh config section (authorization) and validated by parseConfig', () => {
    const cfg = parseConfig({ authorization: { mode: 'STRICT', policies: [{ name: 'x', rules: [{}] }] } });
    expect(cfg.extensions.authorization).toMatchObject({ mode: 'STRICT' });
    expect(() => parseConfig({ authorization: { policies: 3 } })).toThrow(/authorization\.policies/);
  });

  it('never crashes on malformed input: only coded config errors (property-based)', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 6 }), (raw) => {
        try {
          const cfg = parseAuthorization(raw);
          createAuthorizer(cfg)(base);
        } catch (err) {
          expect(isConfigError(err)).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
    // Structured near-misses reach deeper into the parser.
    const str = fc.oneof(
      fc.string(),
      fc.constantFrom('*', '10.0.0.0/8', '::1/200', '/a*', '*b', 'GET', '80', 'request.headers[x]'),
    );
    const list = fc.oneof(fc.array(fc.oneof(str, fc.integer(), fc.constant(null))), str);
    const rule = fc.record(
      {
        from: fc.array(
          fc.record({
            source: fc.dictionary(
              fc.constantFrom('principals', 'namespaces', 'ipBlocks', 'notIpBlocks', 'x'),
              list,
            ),
          }),
        ),
        to: fc.array(
          fc.record({
            operation: fc.dictionary(fc.constantFrom('paths', 'methods', 'ports', 'hosts', 'notPorts'), list),
          }),
        ),
        when: fc.array(fc.record({ key: str, values: list, notValues: list }, { requiredKeys: ['key'] })),
      },
      { requiredKeys: [] },
    );
    const policy = fc.record(
      { name: str, action: fc.constantFrom('ALLOW', 'DENY', 'AUDIT', 'CUSTOM', 7), rules: fc.array(rule) },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(
        fc.record({
          mode: fc.constantFrom('STRICT', 'PERMISSIVE', 'x'),
          policies: fc.array(policy, { maxLength: 4 }),
        }),
        (raw) => {
          try {
            const cfg = parseAuthorization(raw);
            const d = createAuthorizer(cfg)(base);
            expect(typeof d.allowed).toBe('boolean');
          } catch (err) {
            expect(isConfigError(err)).toBe(true);
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('403 answers', () => {
  it('builds a coded body, a response and an error', () => {
    const d = createAuthorizer(parseAuthorization({ policies: [{ name: 'p' }] }))(base);
    expect(forbiddenBody(d)).toEqual({
      error: {
        code: 'MESHLET_ERR_FORBIDDEN',
        message: 'RBAC: access denied (no ALLOW policy matched)',
        policy: undefined,
        rule: undefined,
      },
    });
    const r = forbiddenResponse(d);
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body).error.code).toBe('MESHLET_ERR_FORBIDDEN');
    expect(forbiddenError(d).code).toBe('MESHLET_ERR_FORBIDDEN');
  });
});

describe('paths as a framework routes them (pathMatching)', () => {
  const routed = {
    // a case-insensitive router ignoring one trailing slash
    foldPattern: (s: string) => s.toLowerCase(),
    trimTrailingSlash: true,
  };
  const authz = createAuthorizer([
    {
      name: 'deny',
      action: 'DENY',
      rules: [{ to: [{ operation: { paths: ['/Admin/', '/Ops/*', '*.PHP'] } }] }],
    },
  ]);

  it('folds exact, prefix and suffix patterns the way the routed path was folded', () => {
    const at = (path: string) => authz({ ...base, path, pathMatching: routed }).allowed;
    expect(at('/admin')).toBe(false); // exact, trailing slash trimmed on both sides
    expect(at('/ops/x')).toBe(false); // prefix, folded, its slash kept
    expect(at('/ops')).toBe(true); // not under the prefix
    expect(at('/x.php')).toBe(false); // suffix
    // without pathMatching the patterns compare as written (Istio's semantics)
    expect(authz({ ...base, path: '/admin' }).allowed).toBe(true);
    expect(authz({ ...base, path: '/Admin/' }).allowed).toBe(false);
  });

  it('says whether a folding changes any path pattern (the routed view is then evaluated)', () => {
    expect(authz.pathMatchingMatters(routed)).toBe(true);
    const lower = createAuthorizer([
      {
        name: 'l',
        action: 'DENY',
        rules: [{ to: [{ operation: { paths: ['/admin', '/ops/*'], notPaths: ['*'] } }] }],
      },
    ]);
    expect(lower.pathMatchingMatters(routed)).toBe(false);
    expect(lower.pathMatchingMatters({ foldPattern: (s) => s, trimTrailingSlash: false })).toBe(false);
    const slash = createAuthorizer([
      { name: 's', action: 'DENY', rules: [{ to: [{ operation: { paths: ['/a/'] } }] }] },
    ]);
    expect(slash.pathMatchingMatters(routed)).toBe(true);
  });
});
