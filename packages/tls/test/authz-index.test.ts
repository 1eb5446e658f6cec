import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compilePolicy, firstRule, firstRuleByWalk } from '../src/authz/evaluate.js';
import type { AuthorizationPolicy, Operation, RequestAttributes, Rule, Source } from '../src/index.js';

// The rule index (candidates by principal presence and method) must pick the rule the plain walk
// of every rule picks, for any policy and any request.

const principals = [
  'spiffe://cluster.local/ns/a/sa/x',
  'cluster.local/ns/b/sa/*',
  '*',
  '*/sa/y',
  'cluster.local/ns/a/sa/x',
];
const methodPatterns = ['GET', 'POST', 'HEAD', 'G*', '*T', '*', 'DELETE', 'get'];
const paths = ['/items/*', '/health', '/admin', '*', '/api/v1/*', '*/x'];

const strings = (xs: readonly string[]) =>
  fc.uniqueArray(fc.constantFrom(...xs), { minLength: 0, maxLength: 3 });
const maybe = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined });

const source: fc.Arbitrary<Source> = fc
  .record({
    principals: maybe(strings(principals)),
    notPrincipals: maybe(strings(principals)),
    namespaces: maybe(strings(['a', 'b', 'c*', '*'])),
    notNamespaces: maybe(strings(['a', 'b'])),
    ipBlocks: maybe(fc.constantFrom(['10.0.0.0/8'], ['127.0.0.1'], [])),
  })
  .map((s) => Object.fromEntries(Object.entries(s).filter(([, v]) => v !== undefined)) as Source);

const operation: fc.Arbitrary<Operation> = fc
  .record({
    methods: maybe(strings(methodPatterns)),
    notMethods: maybe(strings(methodPatterns)),
    paths: maybe(strings(paths)),
    notPaths: maybe(strings(paths)),
    hosts: maybe(fc.constantFrom(['items'], ['*.example'])),
  })
  .map((o) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Operation);

const rule: fc.Arbitrary<Rule> = fc
  .record({
    from: maybe(
      fc.array(
        source.map((s) => ({ source: s })),
        { minLength: 0, maxLength: 3 },
      ),
    ),
    to: maybe(
      fc.array(
        operation.map((o) => ({ operation: o })),
        { minLength: 0, maxLength: 3 },
      ),
    ),
    when: maybe(
      fc.constantFrom(
        [{ key: 'request.headers[x-a]', values: ['1'] }],
        [{ key: 'source.principal', notValues: ['cluster.local/ns/a/sa/x'] }],
      ),
    ),
  })
  .map((r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) as Rule);

const policy: fc.Arbitrary<AuthorizationPolicy> = fc.record({
  name: fc.constant('p'),
  action: fc.constantFrom('ALLOW', 'DENY', 'AUDIT'),
  rules: fc.array(rule, { minLength: 0, maxLength: 12 }),
});

const request: fc.Arbitrary<RequestAttributes> = fc.record({
  principal: fc.constantFrom(
    undefined,
    '',
    'spiffe://cluster.local/ns/a/sa/x',
    'spiffe://cluster.local/ns/b/sa/y',
    'spiffe://other/ns/c/sa/z',
  ),
  mtls: fc.boolean(),
  method: fc.constantFrom(undefined, '', 'GET', 'POST', 'HEAD', 'DELETE', 'PUT', 'get', 'PATCH'),
  path: fc.constantFrom('/items/42', '/health', '/admin', '/api/v1/x', '/', '/a/x', ''),
  host: fc.constantFrom(undefined, 'items', 'a.example'),
  sourceIp: fc.constantFrom(undefined, '10.1.2.3', '127.0.0.1'),
  headers: fc.constantFrom(undefined, { 'x-a': '1' }, { 'x-a': '2' }),
});

describe('authorization rule index', () => {
  it('picks the rule the plain walk picks, for generated policies and requests', () => {
    let matched = 0;
    fc.assert(
      fc.property(policy, fc.array(request, { minLength: 1, maxLength: 20 }), (p, reqs) => {
        const c = compilePolicy(p);
        // Twice over the same requests: the first fills the index, the second reads it.
        for (let round = 0; round < 2; round++) {
          for (const a of reqs) {
            const want = firstRuleByWalk(c, a);
            if (want >= 0) matched++;
            expect(firstRule(c, a)).toBe(want);
          }
        }
      }),
      { numRuns: 600, seed: 14 },
    );
    // The comparison covers matches, not only misses.
    expect(matched).toBeGreaterThan(1000);
  });

  it('leaves out rules that need a principal, or exclude the method, and keeps the order', () => {
    const c = compilePolicy({
      name: 'p',
      action: 'ALLOW',
      rules: [
        { from: [{ source: { principals: ['*'] } }] },
        { to: [{ operation: { methods: ['POST'] } }] },
        { to: [{ operation: { notMethods: ['GET'] } }, { operation: { methods: ['G*'] } }] },
        { from: [{ source: { notPrincipals: ['x'] } }, { source: { namespaces: ['a'] } }] },
        {},
      ],
    });
    expect(c.candidates(false, 'GET')).toEqual([2, 3, 4]);
    expect(c.candidates(true, 'GET')).toEqual([0, 2, 3, 4]);
    expect(c.candidates(false, 'POST')).toEqual([1, 2, 3, 4]);
    expect(c.candidates(false, '')).toEqual([0, 2, 3, 4].filter((i) => i !== 0));
  });

  it('stays exact past the bound on remembered methods', () => {
    const c = compilePolicy({
      name: 'p',
      action: 'DENY',
      rules: [{ to: [{ operation: { methods: ['M7*'] } }] }, { to: [{ operation: { notMethods: ['M1'] } }] }],
    });
    for (let i = 0; i < 100; i++) {
      const a: RequestAttributes = { method: `M${i}`, path: '/' };
      expect(firstRule(c, a)).toBe(firstRuleByWalk(c, a));
    }
    expect(firstRule(c, { method: 'M7', path: '/' })).toBe(0);
    expect(firstRule(c, { method: 'M1', path: '/' })).toBe(-1);
    expect(firstRule(c, { method: 'M2', path: '/' })).toBe(1);
  });
});
