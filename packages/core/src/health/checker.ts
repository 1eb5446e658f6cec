import { parseDuration } from '../duration.js';
import type { EndpointState } from '../endpoint-state.js';
import type { ConfigIssue } from '../errors.js';
import type { MeshEvents } from '../events.js';
import { describe, expectObject, join, optNumber } from '../validate.js';
import { type HealthChecker, healthCheckers } from './types.js';

/** Active health checking of a service (Envoy's `HealthCheck`, trimmed to what a client needs). */
export interface HealthCheckPolicy {
  /** The registered checker (`http`, `tcp`, …) and its parsed options. */
  readonly type: string;
  readonly config: unknown;
  /** Time between checks of one endpoint (10s). */
  readonly intervalMs: number;
  /** A random 0..jitter added to every interval (1s). The first check waits a random part of one interval. */
  readonly jitterMs: number;
  /** A check not answered within this fails (1s). */
  readonly timeoutMs: number;
  /** Consecutive passes to turn an unhealthy endpoint healthy (2). An unchecked one needs one. */
  readonly healthyThreshold: number;
  /** Consecutive failures to turn an endpoint unhealthy (3). */
  readonly unhealthyThreshold: number;
}

const COMMON = ['type', 'interval', 'jitter', 'timeout', 'healthyThreshold', 'unhealthyThreshold'];

/** Parses `healthCheck: { type, interval, ... } | false`. Undefined means no active checks. */
export function parseHealthCheckPolicy(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
): HealthCheckPolicy | undefined {
  if (raw === false) return undefined;
  const obj = expectObject(raw, path, issues);
  if (!obj) return undefined;
  const typeName = obj.type === undefined ? 'http' : obj.type;
  if (typeof typeName !== 'string') {
    issues.push({
      path: join(path, 'type'),
      message: `must name a health checker, got ${describe(typeName)}`,
    });
    return undefined;
  }
  const factory = healthCheckers.lookup(typeName, join(path, 'type'), issues);
  const own: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) if (!COMMON.includes(k)) own[k] = v;
  const config = factory?.parseConfig(own, path, issues);
  const dur = (key: string, def: number): number =>
    obj[key] === undefined ? def : (parseDuration(obj[key], join(path, key), issues) ?? def);
  const intervalMs = dur('interval', 10_000);
  const timeoutMs = dur('timeout', 1_000);
  if (intervalMs <= 0) issues.push({ path: join(path, 'interval'), message: 'must be > 0' });
  if (timeoutMs <= 0) issues.push({ path: join(path, 'timeout'), message: 'must be > 0' });
  return Object.freeze({
    type: typeName,
    config,
    intervalMs,
    jitterMs: dur('jitter', 1_000),
    timeoutMs,
    healthyThreshold: optNumber(obj, 'healthyThreshold', path, issues, 2, { min: 1, integer: true }),
    unhealthyThreshold: optNumber(obj, 'unhealthyThreshold', path, issues, 3, { min: 1, integer: true }),
  });
}

/** What the checker needs from its service (`ServiceRuntime` satisfies it). */
export interface HealthCheckHost {
  readonly name: string;
  readonly events: MeshEvents;
  readonly endpoints: readonly EndpointState[];
  rebuild(): void;
}

class EndpointCheck {
  timer: NodeJS.Timeout | undefined;
  passes = 0;
  failures = 0;
  inFlight: AbortController | undefined;
  stopped = false;
  constructor(readonly ep: EndpointState) {}
}

/**
 * Runs the active health checks of one service: one timer per endpoint (unref'd), started at a
 * random offset within the first interval so that a fleet restarting together does not probe in
 * lockstep, then every `interval + random(jitter)`. Results set `EndpointState.activeHealth`,
 * rebuild the service's picker on a change and emit `health` events.
 */
export class ActiveHealthChecker {
  readonly #host: HealthCheckHost;
  readonly policy: HealthCheckPolicy;
  readonly #checker: HealthChecker;
  readonly #random: () => number;
  readonly #checks = new Map<EndpointState, EndpointCheck>();
  #closed = false;
  /** Called when an endpoint passes a check (outlier detection may return it). */
  onPass: ((ep: EndpointState) => void) | undefined;

  constructor(host: HealthCheckHost, policy: HealthCheckPolicy, random: () => number = Math.random) {
    const factory = healthCheckers.get(policy.type);
    if (!factory) throw new Error(`health checker "${policy.type}" is not registered`);
    this.#host = host;
    this.policy = policy;
    this.#checker = factory.create(policy.config);
    this.#random = random;
    this.reconcile();
  }

  /** Starts checking new endpoints and stops checking removed ones. */
  reconcile(): void {
    if (this.#closed) return;
    const current = new Set(this.#host.endpoints);
    for (const [ep, check] of this.#checks) {
      if (!current.has(ep)) {
        this.#stop(check);
        this.#checks.delete(ep);
      }
    }
    for (const ep of current) {
      if (this.#checks.has(ep)) continue;
      const check = new EndpointCheck(ep);
      this.#checks.set(ep, check);
      this.#schedule(check, this.#random() * this.policy.intervalMs);
    }
  }

  #schedule(check: EndpointCheck, delay: number): void {
    if (check.stopped || this.#closed) return;
    check.timer = setTimeout((c: EndpointCheck) => this.#run(c), delay, check);
    check.timer.unref();
  }

  #run(check: EndpointCheck): void {
    check.timer = undefined;
    if (check.stopped || this.#closed) return;
    const ep = check.ep;
    const ac = new AbortController();
    check.inFlight = ac;
    const timeout = setTimeout(() => ac.abort(), this.policy.timeoutMs);
    timeout.unref();
    const target = {
      service: this.#host.name,
      address: ep.endpoint.address,
      port: ep.endpoint.port,
      hostname: ep.endpoint.hostname,
    };
    this.#checker
      .check(target, ac.signal)
      .then(
        (r) => r,
        (err: unknown) => ({ healthy: false, reason: (err as Error)?.message ?? String(err) }),
      )
      .then((result) => {
        clearTimeout(timeout);
        check.inFlight = undefined;
        if (check.stopped || this.#closed) return;
        this.#record(check, result.healthy, result.reason);
        const p = this.policy;
        this.#schedule(check, p.intervalMs + (p.jitterMs > 0 ? this.#random() * p.jitterMs : 0));
      });
  }

  #record(check: EndpointCheck, healthy: boolean, reason: string): void {
    const ep = check.ep;
    const p = this.policy;
    if (healthy) {
      check.failures = 0;
      check.passes++;
      // An endpoint never checked before needs one pass; an unhealthy one needs the threshold.
      if (
        ep.activeHealth === 'unknown' ||
        (ep.activeHealth === 'unhealthy' && check.passes >= p.healthyThreshold)
      ) {
        this.#set(ep, 'healthy', reason);
      }
      this.onPass?.(ep);
    } else {
      check.passes = 0;
      check.failures++;
      if (ep.activeHealth !== 'unhealthy' && check.failures >= p.unhealthyThreshold) {
        this.#set(ep, 'unhealthy', reason);
      }
    }
  }

  #set(ep: EndpointState, health: 'healthy' | 'unhealthy', reason: string): void {
    const was = ep.activeHealth;
    ep.activeHealth = health;
    // unknown → healthy changes nothing for routing; still rebuild so the balancer sees it.
    this.#host.rebuild();
    if (was !== health)
      this.#host.events.emit('health', {
        service: this.#host.name,
        endpoint: ep.id,
        healthy: health === 'healthy',
        reason: `active health check: ${reason}`,
      });
  }

  #stop(check: EndpointCheck): void {
    check.stopped = true;
    if (check.timer) clearTimeout(check.timer);
    check.timer = undefined;
    check.inFlight?.abort();
  }

  /** Stops every timer and aborts checks in flight. */
  close(): void {
    this.#closed = true;
    for (const check of this.#checks.values()) this.#stop(check);
    this.#checks.clear();
  }
}
