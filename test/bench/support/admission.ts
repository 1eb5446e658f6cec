/**
 * The inbound admission step measured alone (no sockets, no framework): normalization, a 20-rule
 * policy, the routed view, deadline and peer, as the servers bench's meshed variants run them.
 * Used by `suites/servers.ts` (in-process micro-benchmark; it passes the same policy to the server
 * processes, `support/inbound-servers.mjs`).
 */
import { performance } from 'node:perf_hooks';
import {
  InboundAdmission,
  type InboundPeer,
  normalizeTarget,
  type RouteView,
  routeView,
  type TargetParts,
} from '../../../packages/core/src/index.js';
import { createAuthorizer } from '../../../packages/tls/src/index.js';
import { BENCH_DEADLINES, POLICY_20 } from './policy20.js';

export { BENCH_DEADLINES, POLICY_20 };

const PEER: InboundPeer = Object.freeze({
  remoteAddress: '127.0.0.1',
  localAddress: '127.0.0.1',
  localPort: 8080,
  principal: undefined,
  mtls: false,
  sni: undefined,
});

/** ns per operation of `fn` over `n` calls, best of `reps` (the least disturbed by the machine). */
export function nsPerOp(n: number, reps: number, fn: (i: number) => unknown): number {
  let best = Number.POSITIVE_INFINITY;
  let sink = 0;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) if (fn(i) !== undefined) sink++;
    best = Math.min(best, ((performance.now() - t0) * 1e6) / n);
  }
  if (sink < 0) console.log(sink);
  return best;
}

export interface AdmissionMicro {
  /** normalizeTarget of an ordinary target (`/items/42?x=1`). */
  readonly normalizeNs: number;
  /** normalizeTarget of a target with escapes and dot segments. */
  readonly normalizeSlowNs: number;
  /** The 20-rule policy evaluated once. */
  readonly policyNs: number;
  /** normalization + the 20-rule policy, what the budget of 1 µs covers. */
  readonly normalizeAndPolicyNs: number;
  /** The whole step for Express's routing view (normalize, authorize in both views as needed, deadline, peer). */
  readonly admitExpressNs: number;
  /** The same for Fastify's routing view. */
  readonly admitFastifyNs: number;
}

export function admissionMicro(quick: boolean): AdmissionMicro {
  const n = quick ? 20_000 : 200_000;
  const reps = quick ? 3 : 7;
  const authorizer = createAuthorizer(POLICY_20);
  const options = { normalization: 'BASE', escapedSlashes: 'KEEP_UNCHANGED' } as const;
  const parts = {} as TargetParts;
  const headers = { host: 'items', 'x-meshlet-deadline-ms': '5000', 'user-agent': 'bench' };
  const attrs = { method: 'GET', path: '/items/42', sourceIp: '127.0.0.1', headers, mtls: false };
  const express: RouteView = routeView({
    caseInsensitive: true,
    ignoresTrailingSlash: true,
    headAsGet: true,
  });
  const fastify: RouteView = routeView({ routesReceivedPath: true, decodes: true, headAsGet: true });
  const admit = (view: RouteView) => {
    const a = new InboundAdmission({
      transport: 'http',
      authorizer,
      deadlines: BENCH_DEADLINES,
      routeView: view,
    });
    return (i: number) => {
      const r = a.admitHttp('GET', i & 1 ? '/items/42?x=1' : '/items/7', headers, undefined, PEER, undefined);
      if (r.status !== 0) throw new Error(`admission refused the benchmark request: ${r.errorBody()}`);
      return r;
    };
  };
  return {
    normalizeNs: nsPerOp(n, reps, () => normalizeTarget('/items/42?x=1', options, parts)),
    normalizeSlowNs: nsPerOp(n, reps, () => normalizeTarget('/items/./%34%32/../42?x=1', options, parts)),
    policyNs: nsPerOp(n, reps, () => (authorizer(attrs).allowed ? undefined : 1)),
    normalizeAndPolicyNs: nsPerOp(n, reps, () => {
      normalizeTarget('/items/42?x=1', options, parts);
      attrs.path = parts.path;
      return authorizer(attrs).allowed ? undefined : 1;
    }),
    admitExpressNs: nsPerOp(n, reps, admit(express)),
    admitFastifyNs: nsPerOp(n, reps, admit(fastify)),
  };
}
