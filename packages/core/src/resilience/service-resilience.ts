import type { EndpointState } from '../endpoint-state.js';
import type { MeshEvents } from '../events.js';
import { ActiveHealthChecker } from '../health/checker.js';
import { AdaptiveConcurrency } from '../load/concurrency.js';
import type { LocalStalls } from '../load/overload.js';
import { OutlierDetector } from '../outlier.js';
import type { AttemptObserver } from '../service.js';
import { CircuitBreaker } from './breaker.js';
import type { ResiliencePolicy } from './policy.js';
import { Thresholds } from './thresholds.js';

/** What the resilience layer needs from its service (`ServiceRuntime` satisfies it). */
export interface ResilienceHost {
  readonly name: string;
  readonly events: MeshEvents;
  readonly endpoints: readonly EndpointState[];
  now(): number;
  /**
   * The client's own event-loop stalls on the `now` time scale (the process' heartbeat when `now`
   * is `performance.now`), which the adaptive concurrency limiter keeps out of latency samples;
   * undefined (a test's fake clock): none.
   */
  readonly localStalls?: LocalStalls | undefined;
  rebuild(): void;
  addObserver(observer: AttemptObserver): () => void;
}

/**
 * The resilience state of one service, shared by every transport (fetch, gRPC): the error-rate
 * circuit breaker, the concurrency thresholds, outlier detection and active health checks. Created
 * by `ServiceRuntime`; `close()` stops every timer.
 */
export class ServiceResilience {
  readonly #host: ResilienceHost;
  #policy: ResiliencePolicy;
  /** Undefined when `circuitBreaker: false`. */
  breaker: CircuitBreaker | undefined;
  readonly thresholds: Thresholds;
  /** Undefined when `outlierDetection: false`. */
  outlier: OutlierDetector | undefined;
  /** Undefined unless `healthCheck` is configured. */
  health: ActiveHealthChecker | undefined;
  /** The adaptive concurrency limiter; undefined unless `adaptiveConcurrency` is configured. */
  concurrency: AdaptiveConcurrency | undefined;
  #removeObserver: (() => void) | undefined;
  #closed = false;

  constructor(host: ResilienceHost, policy: ResiliencePolicy) {
    this.#host = host;
    this.#policy = policy;
    this.thresholds = new Thresholds(host.name, policy.thresholds);
    this.breaker = policy.circuitBreaker
      ? new CircuitBreaker(host.name, policy.circuitBreaker, host.events)
      : undefined;
    this.#setOutlier(policy);
    this.#setHealth(policy);
    this.concurrency = this.#limiter(policy);
  }

  #limiter(policy: ResiliencePolicy): AdaptiveConcurrency | undefined {
    const c = policy.adaptiveConcurrency;
    const host = this.#host;
    return c ? new AdaptiveConcurrency(c, () => host.now(), Math.random, host.localStalls) : undefined;
  }

  #setOutlier(policy: ResiliencePolicy): void {
    const p = policy.outlierDetection;
    if (p === undefined) {
      this.#removeObserver?.();
      this.#removeObserver = undefined;
      const had = this.outlier;
      this.outlier = undefined;
      if (had) {
        had.close();
        // Nothing would return hosts ejected by the detector that is going away.
        for (const ep of this.#host.endpoints)
          if (ep.ejectedUntil > 0) had.uneject(ep, 'outlier detection turned off');
      }
      return;
    }
    if (this.outlier) {
      this.outlier.setPolicy(p);
      return;
    }
    this.outlier = new OutlierDetector(this.#host, p);
    this.#removeObserver = this.#host.addObserver(this.outlier.observe);
  }

  #setHealth(policy: ResiliencePolicy): void {
    this.health?.close();
    this.health = undefined;
    const p = policy.healthCheck;
    if (p === undefined) {
      // Without active checks nothing would ever clear an old verdict.
      let changed = false;
      for (const ep of this.#host.endpoints) {
        if (ep.activeHealth !== 'unknown') {
          ep.activeHealth = 'unknown';
          changed = true;
        }
      }
      if (changed) this.#host.rebuild();
      return;
    }
    const checker = new ActiveHealthChecker(this.#host, p);
    checker.onPass = (ep) => {
      const o = this.outlier;
      if (o?.policy.successfulActiveHealthCheckUnejectHost && ep.ejectedUntil > 0)
        o.uneject(ep, 'active health check passed');
    };
    this.health = checker;
  }

  /** Applies a new policy (config reload): recreates what changed. */
  setPolicy(policy: ResiliencePolicy): void {
    if (this.#closed) return;
    const old = this.#policy;
    this.#policy = policy;
    this.thresholds.policy = policy.thresholds;
    if (policy.circuitBreaker !== old.circuitBreaker) {
      this.breaker?.close();
      this.breaker = policy.circuitBreaker
        ? new CircuitBreaker(this.#host.name, policy.circuitBreaker, this.#host.events)
        : undefined;
    }
    if (policy.outlierDetection !== old.outlierDetection) this.#setOutlier(policy);
    if (policy.healthCheck !== old.healthCheck) this.#setHealth(policy);
    if (policy.adaptiveConcurrency !== old.adaptiveConcurrency) {
      // New limits start from a fresh measurement; attempts in flight release into nothing.
      for (const ep of this.#host.endpoints) ep.concurrency = undefined;
      this.concurrency?.close();
      this.concurrency = this.#limiter(policy);
    }
  }

  /** The service's endpoint set changed: health checks follow it. */
  endpointsChanged(): void {
    this.health?.reconcile();
  }

  snapshot(): Record<string, unknown> {
    return {
      breaker: this.breaker?.stats(),
      thresholds: this.thresholds.stats(),
      ejections: this.outlier?.ejections ?? 0,
      healthCheck: this.health ? this.health.policy.type : undefined,
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#removeObserver?.();
    this.outlier?.close();
    this.health?.close();
    this.breaker?.close();
    this.concurrency?.close();
  }
}
