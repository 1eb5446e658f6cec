import type { OrcaLoadReport, OrcaParseResult } from './orca.js';

/** The parts of a weighted-round-robin config a weight lookup needs (gRFC A58). */
export interface WeightRules {
  readonly blackoutPeriodMs: number;
  readonly weightExpirationPeriodMs: number;
  readonly errorUtilizationPenalty: number;
}

/**
 * What an endpoint reported about its load (ORCA, per call or out of band), kept on its
 * `EndpointState.load` by `ServiceRuntime.reportLoad` and read by load-aware policies and the
 * admin page. It outlives picker rebuilds like the rest of the endpoint's state.
 *
 * The weight bookkeeping is gRFC A58's: a report counts for the weight only when it has both
 * `rps_fractional > 0` and a utilization > 0 (`application_utilization`, else `cpu_utilization`);
 * `lastUpdated` is the time of the latest such report and `nonEmptySince` the time of the first
 * one since the weight was last unusable (the start of the blackout period).
 */
export class EndpointLoad {
  /** The latest report, whatever it held. */
  report: OrcaLoadReport | undefined = undefined;
  /** When it arrived (the runtime's clock, ms). */
  reportedAt = Number.NEGATIVE_INFINITY;
  /** Reports received over the endpoint's life. */
  reports = 0;
  /** Inputs of the weight, from the latest report that had both a rate and a utilization. */
  qps = 0;
  eps = 0;
  utilization = 0;
  /** A58 `last_update_time`: when such a report last arrived. */
  lastUpdated = Number.NEGATIVE_INFINITY;
  /** A58 `non_empty_since`: when the current run of such reports began (Infinity: none yet). */
  nonEmptySince = Number.POSITIVE_INFINITY;
  /** The weight the last scheduler built from this endpoint used (0: none), for telemetry. */
  weight = 0;
  /**
   * @internal The last report header value read from this endpoint and what parsing it gave
   * (`readEndpointReport`): a server re-sends the same pre-encoded value for a whole sample
   * interval, so most responses cost a string comparison, not a parse.
   */
  lastHeader: string | undefined = undefined;
  lastHeaderBinary = false;
  lastParse: OrcaParseResult | undefined = undefined;
  /** @internal The last protobuf report (a gRPC trailer) read from this endpoint, when it was one. */
  lastBytes: Buffer | undefined = undefined;

  /** Records a report that arrived at `now`. */
  record(report: OrcaLoadReport, now: number): void {
    this.report = report;
    this.reportedAt = now;
    this.reports++;
    const qps = report.rpsFractional;
    const utilization =
      report.applicationUtilization > 0 ? report.applicationUtilization : report.cpuUtilization;
    if (!(qps > 0 && utilization > 0)) return;
    if (this.nonEmptySince === Number.POSITIVE_INFINITY) this.nonEmptySince = now;
    this.lastUpdated = now;
    this.qps = qps;
    this.eps = report.eps;
    this.utilization = utilization;
  }

  /**
   * A58's `GetWeight` at `now`: 0 while no usable report has arrived, during the blackout period
   * after the first one, and once the latest is older than the expiration period (which restarts
   * the blackout for the next one); otherwise
   *
   *     weight = qps / (utilization + eps / qps × errorUtilizationPenalty)
   */
  weightAt(now: number, rules: WeightRules): number {
    if (now - this.lastUpdated >= rules.weightExpirationPeriodMs) {
      this.nonEmptySince = Number.POSITIVE_INFINITY;
      return 0;
    }
    if (rules.blackoutPeriodMs > 0 && now - this.nonEmptySince < rules.blackoutPeriodMs) return 0;
    const penalty =
      this.eps > 0 && rules.errorUtilizationPenalty > 0
        ? (this.eps / this.qps) * rules.errorUtilizationPenalty
        : 0;
    return this.qps / (this.utilization + penalty);
  }

  /**
   * Restarts the blackout period (A58's "subchannel becomes READY"): a transport calls it when it
   * has a new connection to the endpoint, whose process may be a new one with a new load.
   */
  restartBlackout(): void {
    this.nonEmptySince = Number.POSITIVE_INFINITY;
  }
}
