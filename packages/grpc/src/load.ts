import { createRequire } from 'node:module';
import type {
  experimental,
  Metadata,
  Server,
  ServerInterceptingCallInterface,
  StatusObject,
} from '@grpc/grpc-js';
import * as grpcjs from '@grpc/grpc-js';

/** A status as grpc-js server interceptors pass it on (`SentStatus`). */
type SentStatus = Pick<StatusObject, 'code' | 'details'> & { metadata?: Metadata | null };

import {
  grpcServerFailure,
  type InboundAdmission,
  type InboundRequest,
  type LoadSampler,
  type LoadSnapshot,
  ORCA_BIN_HEADER,
  type OrcaLoadReport,
  orcaLoadReport,
  SHED_HEADER,
} from '@meshlet/core';

/**
 * Load reports and shedding on a gRPC server, through grpc-js's own ORCA support:
 *
 * - **per call**: the `endpoint-load-metrics-bin` trailer (grpc-js's `GRPC_METRICS_HEADER`) with
 *   the sampler's pre-encoded report — the protobuf bytes grpc-js's `PerRequestMetricRecorder`
 *   writes (tested byte for byte), set as one trailer, with no encoding per call. grpc-js's own
 *   per-call path (`grpc.server_call_metric_recording`) serializes each call's recorder by loading
 *   its `.proto` files again (grpc-js 1.14.7 `orca.js` never keeps the loaded proto: tens of ms per
 *   call), so it is used only when the application turns it on to record per-call costs itself:
 *   then the sampler's figures are recorded into the call's recorder and grpc-js writes the trailer.
 * - **out of band**: grpc-js's `ServerMetricRecorder` (the `xds.service.orca.v3.OpenRcaService`
 *   stream) filled from every sample (`inbound.loadReports.oob`).
 */

/** The recorder grpc-js (1.14+) gives each call, as far as meshlet fills it. */
interface CallRecorder {
  recordCPUUtilizationMetric(v: number): void;
  recordMemoryUtilizationMetric(v: number): void;
  recordApplicationUtilizationMetric(v: number): void;
  recordQpsMetric(v: number): void;
  recordEpsMetric(v: number): void;
  recordUtilizationMetric(name: string, v: number): void;
  recordNamedMetric(name: string, v: number): void;
}

/** What the server interceptor does with an admitted call's report at its end. */
export class GrpcLoadReporter {
  readonly #sampler: LoadSampler;
  readonly #perCallRecorder: boolean;
  readonly #reports: boolean;

  constructor(admission: InboundAdmission, perCallRecorder: boolean) {
    this.#sampler = admission.sampler as LoadSampler;
    this.#reports = admission.loadReports !== undefined;
    this.#perCallRecorder = perCallRecorder;
  }

  /**
   * The call ends with `st`: the request counts out of the sampler, and its trailers get the
   * report (or grpc-js's per-call recorder gets the figures). Returns the status to send on.
   */
  end(r: InboundRequest, call: ServerInterceptingCallInterface, st: SentStatus): SentStatus {
    r.finished(grpcServerFailure(st.code));
    if (!this.#reports) return st;
    if (this.#perCallRecorder) {
      const rec = (call as { getMetricsRecorder?: () => CallRecorder }).getMetricsRecorder?.();
      if (rec !== undefined) {
        record(rec, this.#sampler.current);
        return st;
      }
    }
    const md = st.metadata ?? new grpcjs.Metadata();
    md.set(ORCA_BIN_HEADER, this.#sampler.current.binary);
    return st.metadata === md ? st : { ...st, metadata: md };
  }
}

function record(rec: CallRecorder, s: LoadSnapshot): void {
  const r = s.report;
  rec.recordCPUUtilizationMetric(r.cpuUtilization);
  rec.recordMemoryUtilizationMetric(r.memUtilization);
  rec.recordApplicationUtilizationMetric(r.applicationUtilization);
  rec.recordQpsMetric(r.rpsFractional);
  rec.recordEpsMetric(r.eps);
  for (const k in r.utilization) rec.recordUtilizationMetric(k, r.utilization[k] as number);
  for (const k in r.namedMetrics) rec.recordNamedMetric(k, r.namedMetrics[k] as number);
}

/**
 * The trailers of a call overload protection shed: `retry-after` (seconds), `x-meshlet-shed`
 * (why) and the overloaded report (when reports are on), with `x-meshlet-error`.
 */
export function shedMetadata(admission: InboundAdmission, r: InboundRequest, md: Metadata): void {
  md.set('retry-after', r.retryAfter ?? '1');
  md.set(SHED_HEADER, r.shed ?? 'event-loop-delay');
  if (admission.loadReports !== undefined && admission.sampler !== undefined)
    md.set(ORCA_BIN_HEADER, admission.sampler.overloadedBinary());
}

/** grpc-js's out-of-band recorder (1.14+), as far as meshlet fills it. */
interface OobRecorder {
  setCpuUtilizationMetric(v: number): void;
  setApplicationUtilizationMetric(v: number): void;
  setQpsMetric(v: number): void;
  setEpsMetric(v: number): void;
  setAllUtilizationMetrics(m: Record<string, number>): void;
  addToServer(server: Server): void;
}

/**
 * Serves `xds.service.orca.v3.OpenRcaService` on `server` with grpc-js's `ServerMetricRecorder`,
 * filled from every sample of `sampler` (its API carries CPU, application utilization, qps, eps
 * and the utilization map; named metrics travel per call only). Returns the remover of the sample
 * listener, or undefined when this grpc-js has no `ServerMetricRecorder` (before 1.14).
 */
export function serveOobReports(server: Server, sampler: LoadSampler): (() => void) | undefined {
  const Recorder = (grpcjs as unknown as { ServerMetricRecorder?: new () => OobRecorder })
    .ServerMetricRecorder;
  if (Recorder === undefined) return undefined;
  const rec = new Recorder();
  const fill = (s: LoadSnapshot) => {
    const r = s.report;
    rec.setCpuUtilizationMetric(r.cpuUtilization);
    rec.setApplicationUtilizationMetric(r.applicationUtilization);
    rec.setQpsMetric(r.rpsFractional);
    rec.setEpsMetric(r.eps);
    rec.setAllUtilizationMetrics({ ...r.utilization });
  };
  fill(sampler.current);
  rec.addToServer(server);
  return sampler.onSample(fill);
}

// ---- the client side: out-of-band reports -----------------------------------------------------

/** An `xds.data.orca.v3.OrcaLoadReport` as grpc-js's ORCA client decodes it (`keepCase`). */
export interface OobReportMessage {
  readonly cpu_utilization?: number;
  readonly mem_utilization?: number;
  readonly application_utilization?: number;
  readonly rps_fractional?: number;
  readonly eps?: number;
  readonly request_cost?: Record<string, number>;
  readonly utilization?: Record<string, number>;
  readonly named_metrics?: Record<string, number>;
}

type OobWrapperClass = new (
  child: experimental.SubchannelInterface,
  listener: (report: OobReportMessage) => void,
  intervalMs: number,
) => experimental.SubchannelInterface;

let oobWrapper: OobWrapperClass | null | undefined;

/**
 * grpc-js's own OOB ORCA client (1.14+): `OrcaOobMetricsSubchannelWrapper`, the subchannel wrapper
 * its `weighted_round_robin` uses — one `OpenRcaService.StreamCoreMetrics` stream per connection,
 * reopened with backoff, given up on UNIMPLEMENTED. grpc-js does not export it from its index, so
 * it is loaded from its module (the copy `@grpc/grpc-js` resolves to here); undefined when this
 * grpc-js has none.
 */
export function oobReportWrapper(): OobWrapperClass | undefined {
  if (oobWrapper === undefined) {
    try {
      const require = createRequire(import.meta.url);
      const orca = require('@grpc/grpc-js/build/src/orca.js') as {
        OrcaOobMetricsSubchannelWrapper?: OobWrapperClass;
      };
      oobWrapper = orca.OrcaOobMetricsSubchannelWrapper ?? null;
    } catch {
      oobWrapper = null;
    }
  }
  return oobWrapper ?? undefined;
}

/**
 * A report from the OOB stream as core's `OrcaLoadReport`, validated like one parsed from a header
 * (the proto's rules and `DEFAULT_ORCA_LIMITS`); undefined when it breaks them (it is ignored).
 */
export function oobReport(m: OobReportMessage): OrcaLoadReport | undefined {
  try {
    return orcaLoadReport({
      cpuUtilization: m.cpu_utilization,
      memUtilization: m.mem_utilization,
      applicationUtilization: m.application_utilization,
      rpsFractional: m.rps_fractional,
      eps: m.eps,
      requestCost: m.request_cost,
      utilization: m.utilization,
      namedMetrics: m.named_metrics,
    });
  } catch {
    return undefined;
  }
}
