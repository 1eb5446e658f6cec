import type { ConfigIssue } from '../errors.js';
import { type HealthCheckPolicy, healthCheckSchema, parseHealthCheckPolicy } from '../health/checker.js';
import { adaptiveConcurrencySchema, parseAdaptiveConcurrency } from '../load/concurrency.js';
import type { AdaptiveConcurrencyConfig } from '../load/concurrency-state.js';
import { DEFAULT_OUTLIER, type OutlierPolicy, outlierSchema, parseOutlierPolicy } from '../outlier.js';
import { s } from '../schema.js';
import { join } from '../validate.js';
import { type BreakerPolicy, breakerSchema, DEFAULT_BREAKER, parseBreakerPolicy } from './breaker.js';
import {
  DEFAULT_THRESHOLDS,
  parseThresholdsPolicy,
  type ThresholdsPolicy,
  thresholdsSchema,
} from './thresholds.js';

/** Hedged requests: for idempotent calls, more attempts in parallel after a delay; first answer wins. */
export interface HedgePolicy {
  /** Time to wait for the first attempt before sending a hedge (no default: required). */
  readonly delayMs: number;
  /** Extra attempts at most (1). */
  readonly maxHedges: number;
}

/** The resilience fields of a service policy (see docs/resilience.md for every default). */
export interface ResiliencePolicy {
  /** Envoy-style outlier detection; on by default, `false` turns it off. */
  readonly outlierDetection: OutlierPolicy | undefined;
  /** Active health checks; off unless configured. */
  readonly healthCheck: HealthCheckPolicy | undefined;
  /** The error-rate circuit breaker; on by default, `false` turns it off. */
  readonly circuitBreaker: BreakerPolicy | undefined;
  /** Envoy-style concurrency thresholds (Istio defaults: unlimited). */
  readonly thresholds: ThresholdsPolicy;
  /** Hedged requests; off unless configured. */
  readonly hedge: HedgePolicy | undefined;
  /** Adaptive concurrency per endpoint (docs/load-aware.md); off unless configured. */
  readonly adaptiveConcurrency: AdaptiveConcurrencyConfig | undefined;
}

export const DEFAULT_RESILIENCE: ResiliencePolicy = Object.freeze({
  outlierDetection: DEFAULT_OUTLIER,
  healthCheck: undefined,
  circuitBreaker: DEFAULT_BREAKER,
  thresholds: DEFAULT_THRESHOLDS,
  hedge: undefined,
  adaptiveConcurrency: undefined,
});

export const hedgeSchema = s.object(
  {
    delay: s.duration({
      required: 'is required (e.g. 50ms, about the p95 latency)',
      doc: 'Time to wait for the first attempt before sending a hedge (about the p95 latency).',
    }),
    maxHedges: s.integer({ min: 1, max: 5, default: 1, doc: 'Extra attempts at most.' }),
  },
  {
    name: 'HedgeInput',
    doc: 'Hedged requests: for idempotent calls, more attempts in parallel after a delay; the first answer wins.',
  },
);

/** The resilience fields of a policy (`defaults` and every service); docs/resilience.md. */
export const resilienceFields = {
  outlierDetection: s.union([s.boolean(), outlierSchema], {
    doc: 'Envoy-style outlier detection (passive health checking); `false` turns it off.',
    defaultText: "on, with Envoy's defaults",
  }),
  healthCheck: s.union([s.literal(false), healthCheckSchema], healthCheckSchema.meta),
  circuitBreaker: s.union([s.boolean(), breakerSchema], {
    doc: 'The error-rate circuit breaker; `false` turns it off.',
    defaultText: 'on (opens above 50% failures of at least 20 attempts in 10s)',
  }),
  thresholds: thresholdsSchema.with({
    doc: 'Envoy-style concurrency caps of the service.',
    defaultText: 'unlimited (as in Istio)',
  }),
  hedge: s.union([s.literal(false), hedgeSchema], {
    doc: 'Hedged requests; `false` turns them off.',
    defaultText: 'off',
  }),
  adaptiveConcurrency: adaptiveConcurrencySchema.with({
    doc:
      "Adaptive concurrency per endpoint (Envoy's gradient controller): a limit on attempts in flight that follows " +
      'the latency; `true` for the defaults, `false` turns it off.',
    defaultText: 'off',
  }),
};

function parseHedge(raw: unknown, path: string, issues: ConfigIssue[]): HedgePolicy | undefined {
  if (raw === false) return undefined;
  const o = hedgeSchema.parse(raw, path, issues);
  if (!o || o.delay === undefined) return undefined;
  return Object.freeze({ delayMs: o.delay, maxHedges: o.maxHedges });
}

/** Parses the resilience keys of `obj` on top of `base` (each key given replaces the base's). */
export function parseResiliencePolicy(
  obj: Record<string, unknown>,
  path: string,
  issues: ConfigIssue[],
  base: ResiliencePolicy,
): ResiliencePolicy {
  return {
    outlierDetection:
      obj.outlierDetection === undefined
        ? base.outlierDetection
        : parseOutlierPolicy(
            obj.outlierDetection,
            join(path, 'outlierDetection'),
            issues,
            base.outlierDetection,
          ),
    healthCheck:
      obj.healthCheck === undefined
        ? base.healthCheck
        : parseHealthCheckPolicy(obj.healthCheck, join(path, 'healthCheck'), issues),
    circuitBreaker:
      obj.circuitBreaker === undefined
        ? base.circuitBreaker
        : parseBreakerPolicy(obj.circuitBreaker, join(path, 'circuitBreaker'), issues, base.circuitBreaker),
    thresholds:
      obj.thresholds === undefined
        ? base.thresholds
        : parseThresholdsPolicy(obj.thresholds, join(path, 'thresholds'), issues, base.thresholds),
    hedge: obj.hedge === undefined ? base.hedge : parseHedge(obj.hedge, join(path, 'hedge'), issues),
    adaptiveConcurrency:
      obj.adaptiveConcurrency === undefined
        ? base.adaptiveConcurrency
        : obj.adaptiveConcurrency === false
          ? undefined
          : parseAdaptiveConcurrency(obj.adaptiveConcurrency, join(path, 'adaptiveConcurrency'), issues),
  };
}
