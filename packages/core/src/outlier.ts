import { clampTimer, formatDuration } from './duration.js';
import { allocateEndpointSlot, type EndpointState } from './endpoint-state.js';
import type { ConfigIssue } from './errors.js';
import type { MeshEvents, Verdict } from './events.js';
import { s } from './schema.js';

/**
 * Outlier detection (passive health checking) with Envoy's semantics. Every field mirrors a field
 * of Envoy's `config.cluster.v3.OutlierDetection`, with Envoy's default unless noted.
 */
export interface OutlierPolicy {
  /**
   * Consecutive endpoint errors before ejection: 5xx that speak about the endpoint (502/503/504,
   * gRPC UNAVAILABLE) and, unless split, local-origin failures; a 500 the application answers is
   * an answer, not an endpoint error (DESIGN.md §5). Envoy: 5.
   */
  readonly consecutive5xx: number;
  /** Percent chance a consecutive-5xx ejection is enforced. Envoy: 100. */
  readonly enforcingConsecutive5xx: number;
  /** Consecutive gateway errors (502/503/504, connect failures, timeouts) before ejection. 5. */
  readonly consecutiveGatewayFailure: number;
  /** Percent chance a gateway-failure ejection is enforced. Envoy: 0; meshlet: 100 (see docs). */
  readonly enforcingConsecutiveGatewayFailure: number;
  /** Count local-origin failures (connect, reset, timeout) apart from HTTP statuses. Envoy: false. */
  readonly splitExternalLocalOriginErrors: boolean;
  /** Consecutive local-origin failures before ejection (only when split). Envoy: 5. */
  readonly consecutiveLocalOriginFailure: number;
  readonly enforcingConsecutiveLocalOriginFailure: number;
  /** Time between analysis sweeps (success rate, failure percentage, multiplier decay). 10s. */
  readonly intervalMs: number;
  /** Ejection time is `baseEjectionTime × ejection multiplier`, capped by `maxEjectionTime`. 30s. */
  readonly baseEjectionTimeMs: number;
  /** Cap on one ejection's duration. Envoy: 300s (or `baseEjectionTime` if larger). */
  readonly maxEjectionTimeMs: number;
  /** A random 0..jitter added to each ejection. Envoy: 0. */
  readonly maxEjectionTimeJitterMs: number;
  /** At most this percentage of hosts ejected at once; the first ejection is always allowed. 10. */
  readonly maxEjectionPercent: number;
  /** Success-rate ejection: percent chance enforced (Envoy: 100). */
  readonly enforcingSuccessRate: number;
  /** Hosts with at least `successRateRequestVolume` requests needed to compute it (5). */
  readonly successRateMinimumHosts: number;
  /** Requests a host needs in an interval to be part of the success-rate analysis (100). */
  readonly successRateRequestVolume: number;
  /** Eject below `mean - (stdevFactor / 1000) × stdev` (1900, i.e. 1.9). */
  readonly successRateStdevFactor: number;
  /** Local-origin success rate (split mode only): percent chance enforced (100). */
  readonly enforcingLocalOriginSuccessRate: number;
  /** Failure-percentage ejection: eject at or above this failure percentage (85). */
  readonly failurePercentageThreshold: number;
  /** Percent chance enforced. Envoy: 0 (off). */
  readonly enforcingFailurePercentage: number;
  readonly enforcingFailurePercentageLocalOrigin: number;
  /** Hosts with enough volume needed (5). */
  readonly failurePercentageMinimumHosts: number;
  /** Requests a host needs in an interval (50). */
  readonly failurePercentageRequestVolume: number;
  /** A passing active health check returns an ejected host at once. Envoy: true. */
  readonly successfulActiveHealthCheckUnejectHost: boolean;
}

export const DEFAULT_OUTLIER: OutlierPolicy = Object.freeze({
  consecutive5xx: 5,
  enforcingConsecutive5xx: 100,
  consecutiveGatewayFailure: 5,
  enforcingConsecutiveGatewayFailure: 100,
  splitExternalLocalOriginErrors: false,
  consecutiveLocalOriginFailure: 5,
  enforcingConsecutiveLocalOriginFailure: 100,
  intervalMs: 10_000,
  baseEjectionTimeMs: 30_000,
  maxEjectionTimeMs: 300_000,
  maxEjectionTimeJitterMs: 0,
  maxEjectionPercent: 10,
  enforcingSuccessRate: 100,
  successRateMinimumHosts: 5,
  successRateRequestVolume: 100,
  successRateStdevFactor: 1900,
  enforcingLocalOriginSuccessRate: 100,
  failurePercentageThreshold: 85,
  enforcingFailurePercentage: 0,
  enforcingFailurePercentageLocalOrigin: 0,
  failurePercentageMinimumHosts: 5,
  failurePercentageRequestVolume: 50,
  successfulActiveHealthCheckUnejectHost: true,
});

const D = DEFAULT_OUTLIER;
const percent = (def: number, doc: string) => s.number({ min: 0, max: 100, default: def, doc });
const count = (def: number, doc: string) => s.integer({ min: 1, default: def, doc });

/** `outlierDetection: { ... }`: every field is Envoy's `OutlierDetection` field of the same name. */
export const outlierSchema = s.object(
  {
    consecutive5xx: count(
      D.consecutive5xx,
      'Consecutive 5xx (and, unless split, local-origin failures) before ejection.',
    ),
    enforcingConsecutive5xx: percent(
      D.enforcingConsecutive5xx,
      'Percent chance a consecutive-5xx ejection is enforced.',
    ),
    consecutiveGatewayFailure: count(
      D.consecutiveGatewayFailure,
      'Consecutive gateway errors (502/503/504, connect failures, timeouts) before ejection.',
    ),
    enforcingConsecutiveGatewayFailure: percent(
      D.enforcingConsecutiveGatewayFailure,
      "Percent chance a gateway-failure ejection is enforced (Envoy's default is 0; see docs/resilience.md).",
    ),
    splitExternalLocalOriginErrors: s.boolean({
      default: D.splitExternalLocalOriginErrors,
      doc: 'Count local-origin failures (connect, reset, timeout) apart from HTTP statuses.',
    }),
    consecutiveLocalOriginFailure: count(
      D.consecutiveLocalOriginFailure,
      'Consecutive local-origin failures before ejection (split mode only).',
    ),
    enforcingConsecutiveLocalOriginFailure: percent(
      D.enforcingConsecutiveLocalOriginFailure,
      'Percent chance a local-origin ejection is enforced (split mode only).',
    ),
    interval: s.duration({
      positive: true,
      default: formatDuration(D.intervalMs),
      doc: 'Time between analysis sweeps (success rate, failure percentage, multiplier decay).',
    }),
    baseEjectionTime: s.duration({
      default: formatDuration(D.baseEjectionTimeMs),
      doc: 'An ejection lasts baseEjectionTime × the ejection multiplier, capped by maxEjectionTime.',
    }),
    maxEjectionTime: s.duration({
      default: formatDuration(D.maxEjectionTimeMs),
      doc: "Cap on one ejection's duration.",
    }),
    maxEjectionTimeJitter: s.duration({
      default: D.maxEjectionTimeJitterMs,
      doc: 'A random 0..jitter added to each ejection.',
    }),
    maxEjectionPercent: percent(
      D.maxEjectionPercent,
      'At most this percentage of hosts ejected at once; the first ejection is always allowed.',
    ),
    enforcingSuccessRate: percent(D.enforcingSuccessRate, 'Success-rate ejection: percent chance enforced.'),
    successRateMinimumHosts: count(
      D.successRateMinimumHosts,
      'Hosts with at least successRateRequestVolume requests needed to compute the success rate.',
    ),
    successRateRequestVolume: count(
      D.successRateRequestVolume,
      'Requests a host needs in an interval to be part of the success-rate analysis.',
    ),
    successRateStdevFactor: count(
      D.successRateStdevFactor,
      'Eject below mean - (stdevFactor / 1000) × stdev (1900 is 1.9).',
    ),
    enforcingLocalOriginSuccessRate: percent(
      D.enforcingLocalOriginSuccessRate,
      'Local-origin success rate (split mode only): percent chance enforced.',
    ),
    failurePercentageThreshold: percent(
      D.failurePercentageThreshold,
      'Failure-percentage ejection: eject at or above this failure percentage.',
    ),
    enforcingFailurePercentage: percent(
      D.enforcingFailurePercentage,
      'Failure-percentage ejection: percent chance enforced (0: off).',
    ),
    enforcingFailurePercentageLocalOrigin: percent(
      D.enforcingFailurePercentageLocalOrigin,
      'Local-origin failure-percentage ejection (split mode only): percent chance enforced.',
    ),
    failurePercentageMinimumHosts: count(
      D.failurePercentageMinimumHosts,
      'Hosts with enough volume needed for the failure-percentage analysis.',
    ),
    failurePercentageRequestVolume: count(
      D.failurePercentageRequestVolume,
      'Requests a host needs in an interval for the failure-percentage analysis.',
    ),
    successfulActiveHealthCheckUnejectHost: s.boolean({
      default: D.successfulActiveHealthCheckUnejectHost,
      doc: 'A passing active health check returns an ejected host at once.',
    }),
  },
  {
    name: 'OutlierDetectionInput',
    doc: "Outlier detection (passive health checking) with Envoy's semantics and defaults.",
  },
);

const DURATIONS = {
  interval: 'intervalMs',
  baseEjectionTime: 'baseEjectionTimeMs',
  maxEjectionTime: 'maxEjectionTimeMs',
  maxEjectionTimeJitter: 'maxEjectionTimeJitterMs',
} as const;

/**
 * Parses `outlierDetection: { ... } | false` on top of `base`. `false` turns detection off (returns
 * undefined); `true` or `{}` keeps the defaults.
 */
export function parseOutlierPolicy(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
  base: OutlierPolicy | undefined,
): OutlierPolicy | undefined {
  if (raw === false) return undefined;
  const from = base ?? DEFAULT_OUTLIER;
  if (raw === true) return from;
  const given = outlierSchema.given(raw, path, issues);
  if (!given) return from;
  const out: Record<string, unknown> = { ...from };
  for (const [key, value] of Object.entries(given)) {
    if (value === undefined) continue;
    const field = (DURATIONS as Record<string, string>)[key] ?? key;
    out[field] = value;
  }
  return Object.freeze(out as unknown as OutlierPolicy);
}

/** What outlier detection needs from the service it watches (`ServiceRuntime` satisfies it). */
export interface OutlierHost {
  readonly name: string;
  readonly events: MeshEvents;
  readonly endpoints: readonly EndpointState[];
  now(): number;
  rebuild(): void;
}

/** Per-endpoint counters, kept in an `EndpointState` slot (an array index, not a map lookup). */
class HostMonitor {
  consecutive5xx = 0;
  consecutiveGateway = 0;
  consecutiveLocal = 0;
  /** Counters of the current interval: external (HTTP) and local-origin outcomes. */
  success = 0;
  total = 0;
  localSuccess = 0;
  localTotal = 0;
  /** When the current ejection started (0 when not ejected by us). */
  ejectedAt = 0;
}

const MONITOR_SLOT = allocateEndpointSlot();

/** An answer that says the endpoint works (the external-error rules' success). */
function success(m: HostMonitor): void {
  m.success++;
  m.consecutive5xx = 0;
  m.consecutiveGateway = 0;
}

function monitorOf(ep: EndpointState): HostMonitor {
  let m = ep.slots[MONITOR_SLOT] as HostMonitor | undefined;
  if (m === undefined) {
    m = new HostMonitor();
    ep.slots[MONITOR_SLOT] = m;
  }
  return m;
}

export type EjectionReason =
  | 'consecutive_5xx'
  | 'consecutive_gateway_failure'
  | 'consecutive_local_origin_failure'
  | 'success_rate'
  | 'local_origin_success_rate'
  | 'failure_percentage'
  | 'failure_percentage_local_origin';

/**
 * Envoy-style outlier detection for one service. Consecutive-failure rules run inline on each
 * attempt (via `observe`, registered with `ServiceRuntime.addObserver`); success-rate and
 * failure-percentage rules run on an interval sweep, which also decays the ejection multiplier of
 * hosts that stayed in rotation. An ejected host is left out of the picker until its ejection time
 * (`baseEjectionTime × multiplier`, capped) passes; it then returns with a fresh slate.
 *
 * Ejection is bounded by `maxEjectionPercent`, except that one host may always be ejected (as in
 * Envoy). A service whose only host is ejected then falls under its panic threshold and routes to
 * it anyway — the panic threshold, not outlier detection, decides whether traffic still flows.
 */
export class OutlierDetector {
  readonly #host: OutlierHost;
  #policy: OutlierPolicy;
  readonly #random: () => number;
  #sweepTimer: NodeJS.Timeout | undefined;
  #returnTimer: NodeJS.Timeout | undefined;
  #returnAt = Number.POSITIVE_INFINITY;
  #closed = false;
  /** Ejections performed since creation (for snapshots and tests). */
  ejections = 0;

  /** The per-attempt observer; a bound method so `addObserver` gets one stable function. */
  readonly observe: (
    ep: EndpointState,
    verdict: Verdict,
    status: number | undefined,
    durationMs: number,
    now: number,
  ) => void;

  constructor(host: OutlierHost, policy: OutlierPolicy, random: () => number = Math.random) {
    this.#host = host;
    this.#policy = policy;
    this.#random = random;
    // A success in the default (not split) mode, nearly every attempt, is counted right here: no
    // further call, and no heap number made for `now` to pass it.
    this.observe = (ep, verdict, _status, _duration, now) => {
      if (verdict === 'success' && !this.#closed && !this.#policy.splitExternalLocalOriginErrors) {
        const m = monitorOf(ep);
        m.total++;
        success(m);
        return;
      }
      this.#observe(ep, verdict, now);
    };
    this.#armSweep();
  }

  get policy(): OutlierPolicy {
    return this.#policy;
  }

  setPolicy(policy: OutlierPolicy): void {
    const intervalChanged = policy.intervalMs !== this.#policy.intervalMs;
    this.#policy = policy;
    if (intervalChanged) this.#armSweep();
  }

  #armSweep(): void {
    if (this.#sweepTimer) clearInterval(this.#sweepTimer);
    if (this.#closed) return;
    this.#sweepTimer = setInterval((self: OutlierDetector) => self.sweep(), this.#policy.intervalMs, this);
    this.#sweepTimer.unref();
  }

  /**
   * One attempt's verdict. Local failures (connect failure, reset, the mesh's own timeout) are
   * local-origin errors; gateway errors (502/503/504, gRPC UNAVAILABLE) are the external errors
   * Envoy's 5xx and gateway-failure rules count; every other answer — 4xx, a 500 from the
   * application, gRPC UNKNOWN or UNIMPLEMENTED — is a success for the endpoint. Attempts that say
   * nothing about the endpoint (cancelled, the caller's deadline) never reach here.
   */
  #observe(ep: EndpointState, verdict: Verdict, now: number): void {
    if (verdict === 'ignore' || this.#closed) return;
    const p = this.#policy;
    const m = monitorOf(ep);
    const local = verdict === 'local_failure';
    if (p.splitExternalLocalOriginErrors) {
      if (local) {
        m.localTotal++;
        if (++m.consecutiveLocal >= p.consecutiveLocalOriginFailure) {
          this.#maybeEject(
            ep,
            m,
            'consecutive_local_origin_failure',
            p.enforcingConsecutiveLocalOriginFailure,
            now,
          );
        }
        return;
      }
      // A response arrived: the connection worked.
      m.localTotal++;
      m.localSuccess++;
      m.consecutiveLocal = 0;
    }
    m.total++;
    if (verdict === 'success') {
      success(m);
      return;
    }
    // A gateway error, or (without split mode) a local failure, which Envoy maps to 503/504.
    if (++m.consecutiveGateway >= p.consecutiveGatewayFailure) {
      if (this.#maybeEject(ep, m, 'consecutive_gateway_failure', p.enforcingConsecutiveGatewayFailure, now))
        return;
    }
    if (++m.consecutive5xx >= p.consecutive5xx) {
      this.#maybeEject(ep, m, 'consecutive_5xx', p.enforcingConsecutive5xx, now);
    }
  }

  /** Ejects `ep` if the rule is enforced this time and the max-ejection-percent allows it. */
  #maybeEject(
    ep: EndpointState,
    m: HostMonitor,
    reason: EjectionReason,
    enforcing: number,
    now: number,
  ): boolean {
    if (ep.isEjected(now)) return false;
    if (enforcing < 100 && this.#random() * 100 >= enforcing) return false;
    const all = this.#host.endpoints;
    let ejected = 0;
    for (let i = 0; i < all.length; i++) if ((all[i] as EndpointState).isEjected(now)) ejected++;
    // Envoy: the first ejection is always allowed, then only while within the percentage.
    if (ejected > 0 && ((ejected + 1) * 100) / all.length > this.#policy.maxEjectionPercent) return false;
    const p = this.#policy;
    ep.ejectionCount++;
    const cap = Math.max(p.baseEjectionTimeMs, p.maxEjectionTimeMs);
    const duration =
      Math.min(p.baseEjectionTimeMs * ep.ejectionCount, cap) +
      (p.maxEjectionTimeJitterMs > 0 ? this.#random() * p.maxEjectionTimeJitterMs : 0);
    ep.ejectedUntil = now + duration;
    m.ejectedAt = now;
    m.consecutive5xx = 0;
    m.consecutiveGateway = 0;
    m.consecutiveLocal = 0;
    this.ejections++;
    this.#host.rebuild();
    this.#host.events.emit('ejection', {
      service: this.#host.name,
      endpoint: ep.id,
      ejected: true,
      reason,
      durationMs: duration,
    });
    this.#scheduleReturn(ep.ejectedUntil, now);
    return true;
  }

  /** Keeps one timer, armed for the earliest ejection end. */
  #scheduleReturn(at: number, now: number): void {
    if (this.#closed || at >= this.#returnAt) return;
    if (this.#returnTimer) clearTimeout(this.#returnTimer);
    this.#returnAt = at;
    this.#returnTimer = setTimeout(
      (self: OutlierDetector) => self.#returnHosts(),
      // base × count + jitter may exceed what a timer holds: wake at the cap and re-arm then.
      clampTimer(Math.max(0, at - now)),
      this,
    );
    this.#returnTimer.unref();
  }

  #returnHosts(): void {
    this.#returnTimer = undefined;
    this.#returnAt = Number.POSITIVE_INFINITY;
    if (this.#closed) return;
    const now = this.#host.now();
    let next = Number.POSITIVE_INFINITY;
    let changed = false;
    for (const ep of this.#host.endpoints) {
      if (ep.ejectedUntil === 0) continue;
      if (ep.ejectedUntil <= now) {
        changed = true;
        this.#return(ep, 'ejection_time_elapsed');
      } else if (ep.ejectedUntil < next) {
        next = ep.ejectedUntil;
      }
    }
    if (changed) this.#host.rebuild();
    if (next !== Number.POSITIVE_INFINITY) this.#scheduleReturn(next, now);
  }

  #return(ep: EndpointState, reason: string): void {
    const m = monitorOf(ep);
    const duration = m.ejectedAt > 0 ? this.#host.now() - m.ejectedAt : 0;
    ep.ejectedUntil = 0;
    m.ejectedAt = 0;
    m.consecutive5xx = 0;
    m.consecutiveGateway = 0;
    m.consecutiveLocal = 0;
    this.#host.events.emit('ejection', {
      service: this.#host.name,
      endpoint: ep.id,
      ejected: false,
      reason,
      durationMs: duration,
    });
  }

  /** Returns an ejected host at once (a passing active health check does this). */
  uneject(ep: EndpointState, reason: string): void {
    if (ep.ejectedUntil === 0) return;
    this.#return(ep, reason);
    this.#host.rebuild();
  }

  /**
   * The interval sweep: decays the ejection multiplier of hosts in rotation, runs the
   * success-rate and failure-percentage rules over the interval's counters, then resets them.
   */
  sweep(): void {
    if (this.#closed) return;
    const p = this.#policy;
    const now = this.#host.now();
    const eps = this.#host.endpoints;
    for (const ep of eps) {
      if (!ep.isEjected(now) && ep.ejectionCount > 0) ep.ejectionCount--;
    }
    this.#rateRules(eps, now, false);
    if (p.splitExternalLocalOriginErrors) this.#rateRules(eps, now, true);
    for (const ep of eps) {
      const m = ep.slots[MONITOR_SLOT] as HostMonitor | undefined;
      if (m === undefined) continue;
      m.success = 0;
      m.total = 0;
      m.localSuccess = 0;
      m.localTotal = 0;
    }
  }

  #rateRules(eps: readonly EndpointState[], now: number, local: boolean): void {
    const p = this.#policy;
    const srEnforcing = local ? p.enforcingLocalOriginSuccessRate : p.enforcingSuccessRate;
    const fpEnforcing = local ? p.enforcingFailurePercentageLocalOrigin : p.enforcingFailurePercentage;
    // Success rate: hosts far below the mean (in standard deviations) are outliers.
    if (srEnforcing > 0) {
      const rates: Array<[EndpointState, number]> = [];
      for (const ep of eps) {
        const m = ep.slots[MONITOR_SLOT] as HostMonitor | undefined;
        if (m === undefined || ep.isEjected(now)) continue;
        const total = local ? m.localTotal : m.total;
        if (total >= p.successRateRequestVolume)
          rates.push([ep, ((local ? m.localSuccess : m.success) * 100) / total]);
      }
      if (rates.length >= p.successRateMinimumHosts) {
        let sum = 0;
        for (const [, r] of rates) sum += r;
        const mean = sum / rates.length;
        let variance = 0;
        for (const [, r] of rates) variance += (r - mean) ** 2;
        const stdev = Math.sqrt(variance / rates.length);
        const threshold = mean - (p.successRateStdevFactor / 1000) * stdev;
        for (const [ep, r] of rates) {
          if (r < threshold)
            this.#maybeEject(
              ep,
              monitorOf(ep),
              local ? 'local_origin_success_rate' : 'success_rate',
              srEnforcing,
              now,
            );
        }
      }
    }
    // Failure percentage: hosts failing at or above an absolute threshold.
    if (fpEnforcing > 0) {
      const candidates: Array<[EndpointState, number]> = [];
      for (const ep of eps) {
        const m = ep.slots[MONITOR_SLOT] as HostMonitor | undefined;
        if (m === undefined || ep.isEjected(now)) continue;
        const total = local ? m.localTotal : m.total;
        if (total >= p.failurePercentageRequestVolume)
          candidates.push([ep, ((total - (local ? m.localSuccess : m.success)) * 100) / total]);
      }
      if (candidates.length >= p.failurePercentageMinimumHosts) {
        for (const [ep, failPct] of candidates) {
          if (failPct >= p.failurePercentageThreshold)
            this.#maybeEject(
              ep,
              monitorOf(ep),
              local ? 'failure_percentage_local_origin' : 'failure_percentage',
              fpEnforcing,
              now,
            );
        }
      }
    }
  }

  /** Stops the timers; ejected hosts stay as they are. */
  close(): void {
    this.#closed = true;
    if (this.#sweepTimer) clearInterval(this.#sweepTimer);
    if (this.#returnTimer) clearTimeout(this.#returnTimer);
    this.#sweepTimer = undefined;
    this.#returnTimer = undefined;
  }
}
