import {
  type Endpoint,
  type EndpointInit,
  EndpointState,
  type LoadBalancerFactory,
  MeshEvents,
  makeEndpoint,
  type PickContext,
  type Picker,
  parseConfig,
  ServiceRuntime,
} from '../src/index.js';

export function ep(port: number, init: Partial<EndpointInit> = {}): Endpoint {
  return makeEndpoint({ address: '10.0.0.1', port, ...init });
}

export function states(n: number, init: (i: number) => Partial<EndpointInit> = () => ({})): EndpointState[] {
  return Array.from({ length: n }, (_, i) => new EndpointState('svc', ep(1000 + i, init(i)), 0));
}

/** Counts picks per endpoint id. */
export function countPicks(
  picker: Picker,
  n: number,
  ctx: (i: number) => PickContext = () => ({ attempt: 0 }),
) {
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const r = picker.pick(ctx(i));
    if (r.kind !== 'pick') throw new Error(`unexpected ${r.kind}`);
    counts.set(r.endpoint.id, (counts.get(r.endpoint.id) ?? 0) + 1);
  }
  return counts;
}

/**
 * Pearson's chi-square statistic of `observed` against expected shares (`weights`, any scale).
 */
export function chiSquare(observed: readonly number[], weights: readonly number[]): number {
  const total = observed.reduce((a, b) => a + b, 0);
  const wsum = weights.reduce((a, b) => a + b, 0);
  let x = 0;
  for (let i = 0; i < observed.length; i++) {
    const e = (total * (weights[i] as number)) / wsum;
    x += ((observed[i] as number) - e) ** 2 / e;
  }
  return x;
}

/**
 * Critical value of chi-square at p = 0.001 for `df` degrees of freedom (Wilson–Hilferty
 * approximation, accurate to ~1% for df >= 2). A correct sampler exceeds it once in 1000 runs.
 */
export function chiSquareCritical(df: number): number {
  const z = 3.0902; // upper 0.1% of the standard normal
  const a = 2 / (9 * df);
  return df * (1 - a + z * Math.sqrt(a)) ** 3;
}

/** A runtime for one service built from real config, with a controllable clock. */
export function runtime(
  service: Record<string, unknown>,
  opts: { now?: () => number; local?: { region: string; zone: string } } = {},
): ServiceRuntime {
  const config = parseConfig({ services: { svc: { endpoints: ['127.0.0.1:1'], ...service } } });
  const policy = config.services.svc;
  if (!policy) throw new Error('no service');
  return new ServiceRuntime('svc', policy, 'static', new MeshEvents(), opts.now ?? (() => 0), {
    local: opts.local,
  });
}

export type { LoadBalancerFactory };
