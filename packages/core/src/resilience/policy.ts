import { parseDuration } from '../duration.js';
import type { ConfigIssue } from '../errors.js';
import { type HealthCheckPolicy, parseHealthCheckPolicy } from '../health/checker.js';
import { DEFAULT_OUTLIER, type OutlierPolicy, parseOutlierPolicy } from '../outlier.js';
import { checkKeys, expectObject, join, optNumber } from '../validate.js';
import { type BreakerPolicy, DEFAULT_BREAKER, parseBreakerPolicy } from './breaker.js';
import { DEFAULT_THRESHOLDS, parseThresholdsPolicy, type ThresholdsPolicy } from './thresholds.js';

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
}

export const DEFAULT_RESILIENCE: ResiliencePolicy = Object.freeze({
  outlierDetection: DEFAULT_OUTLIER,
  healthCheck: undefined,
  circuitBreaker: DEFAULT_BREAKER,
  thresholds: DEFAULT_THRESHOLDS,
  hedge: undefined,
});

export const RESILIENCE_KEYS = ['outlierDetection', 'healthCheck', 'circuitBreaker', 'thresholds', 'hedge'];

function parseHedge(raw: unknown, path: string, issues: ConfigIssue[]): HedgePolicy | undefined {
  if (raw === false) return undefined;
  const obj = expectObject(raw, path, issues);
  if (!obj) return undefined;
  checkKeys(obj, ['delay', 'maxHedges'], path, issues);
  if (obj.delay === undefined) {
    issues.push({ path: join(path, 'delay'), message: 'is required (e.g. 50ms, about the p95 latency)' });
    return undefined;
  }
  const delayMs = parseDuration(obj.delay, join(path, 'delay'), issues);
  if (delayMs === undefined) return undefined;
  return Object.freeze({
    delayMs,
    maxHedges: optNumber(obj, 'maxHedges', path, issues, 1, { min: 1, max: 5, integer: true }),
  });
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
  };
}
