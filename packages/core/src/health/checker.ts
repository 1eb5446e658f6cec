import type { EndpointState } from '../endpoint-state.js';
import type { ConfigIssue } from '../errors.js';
import type { MeshEvents } from '../events.js';
import { s, taggedJson } from '../schema.js';
import { describe, expectObject, isPlainObject, join } from '../validate.js';
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

/** The fields every `healthCheck` has, whatever its type. */
export const healthCheckCommonSchema = s.object(
  {
    interval: s.duration({ positive: true, default: '10s', doc: 'Time between checks of one endpoint.' }),
    jitter: s.duration({
      default: '1s',
      doc: 'A random 0..jitter added to every interval; the first check waits a random part of one interval.',
    }),
    timeout: s.duration({ positive: true, default: '1s', doc: 'A check not answered within this fails.' }),
    healthyThreshold: s.integer({
      min: 1,
      default: 2,
      doc: 'Consecutive passes to turn an unhealthy endpoint healthy (an unchecked one needs one).',
    }),
    unhealthyThreshold: s.integer({
      min: 1,
      default: 3,
      doc: 'Consecutive failures to turn an endpoint unhealthy.',
    }),
  },
  { name: 'HealthCheckCommonInput', doc: 'Active health checking of every endpoint of a service.' },
);

const COMMON = ['type', ...Object.keys(healthCheckCommonSchema.fields)];

/** `healthCheck`: `{ type?, ...common, ...the checker's options }` (HealthCheckers in the generated types). */
export const healthCheckSchema = s.custom<unknown, HealthCheckPolicy>(
  {
    ts: (e) => {
      e.use('HealthCheckInput');
      return 'HealthCheckInput';
    },
    json: (e) =>
      e.ref('HealthCheckInput', () => ({
        description:
          "Active health checks: `type` (default `http`), the common fields and the checker's own.",
        anyOf: healthCheckers.names().map((n) => {
          const own = healthCheckers.get(n)?.schema;
          const merged = s.object({
            ...healthCheckCommonSchema.fields,
            ...(own?.fields ?? {}),
          });
          return taggedJson(e, 'type', n, merged, n !== 'http');
        }),
      })),
    accepts: isPlainObject,
    parse: (raw, path, issues) => parseHealthCheckPolicy(raw, path, issues),
  },
  { doc: 'Active health checks (off unless configured); `false` turns them off.', defaultText: 'off' },
);

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
  const common: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    if (!COMMON.includes(k)) own[k] = v;
    else if (k !== 'type') common[k] = v;
  }
  const config = factory?.parseConfig(own, path, issues);
  const c = healthCheckCommonSchema.parse(common, path, issues);
  if (!c) return undefined;
  return Object.freeze({
    type: typeName,
    config,
    intervalMs: c.interval,
    jitterMs: c.jitter,
    timeoutMs: c.timeout,
    healthyThreshold: c.healthyThreshold,
    unhealthyThreshold: c.unhealthyThreshold,
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
