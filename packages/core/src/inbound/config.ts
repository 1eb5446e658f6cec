import { isIP } from 'node:net';
import { formatDuration } from '../duration.js';
import type { ConfigIssue } from '../errors.js';
import type { OrcaHeaderFormat } from '../load/orca-header.js';
import { DEFAULT_OVERLOAD, type OverloadConfig } from '../load/overload.js';
import { s } from '../schema.js';
import { describe, join } from '../validate.js';
import {
  defaultEscapedSlashes,
  ESCAPED_SLASHES_ACTIONS,
  type EscapedSlashesAction,
  PATH_NORMALIZATIONS,
  type PathNormalization,
} from './path.js';

/** Whose deadline headers (`x-meshlet-deadline-ms`, `x-request-timeout`, `grpc-timeout`) count. */
export interface DeadlineTrust {
  /**
   * Authenticated mesh peers: mTLS with a verified client certificate whose SPIFFE ID is in this
   * workload's trust domain (any verified SPIFFE ID when the trust domain is unknown). Default true.
   */
  readonly trustMeshPeers: boolean;
  /** Peers whose connection comes from these networks (CIDR or address). Default none. */
  readonly trustedNetworks: readonly string[];
}

/** When HTTP responses carry the server's load report (`endpoint-load-metrics`). */
export type LoadReportSend = 'requested' | 'always';

/** The servers' load reports (`inbound.loadReports`; docs/load-aware.md#what-servers-send). */
export interface LoadReportsConfig {
  /**
   * HTTP: `requested` (default) answers a request that carries `endpoint-load-metrics-format`
   * (`TEXT`, `JSON` or `BIN`, any case; meshlet clients ask when their policy uses reports) in that
   * form; `always` adds the header to every response, in `format`. gRPC calls always get the
   * `endpoint-load-metrics-bin` trailer (gRFC A51: the client reads it or ignores it).
   */
  readonly send: LoadReportSend;
  /** The form of `always` reports (and of a request that names no known form). Default `text`. */
  readonly format: OrcaHeaderFormat;
  /** gRPC servers also serve `xds.service.orca.v3.OpenRcaService` (out-of-band reports). Default false. */
  readonly oob: boolean;
}

export const DEFAULT_LOAD_REPORTS: LoadReportsConfig = Object.freeze({
  send: 'requested',
  format: 'text',
  oob: false,
});

/** The `inbound:` section: how Express, Fastify and gRPC servers admit requests. */
export interface InboundConfig {
  /** Istio's `meshConfig.pathNormalization` (default `BASE`, Istio's default). */
  readonly pathNormalization: PathNormalization;
  /** Envoy's `path_with_escaped_slashes_action` (default `KEEP_UNCHANGED`; `UNESCAPE_AND_FORWARD` under DECODE_AND_MERGE_SLASHES). */
  readonly escapedSlashes: EscapedSlashesAction;
  /**
   * Proxies in front of this service that append to `X-Forwarded-For` (Istio's
   * `numTrustedProxies`, Envoy's `xff_num_trusted_hops`): the client IP is the Nth entry from the
   * right. Default 0: the connection peer, whatever the header says.
   */
  readonly xffNumTrustedHops: number;
  /**
   * The service's own inbound timeout, in ms: the deadline of requests that carry none, and the
   * cap of a caller's deadline. 0 (default): none.
   */
  readonly timeoutMs: number;
  readonly deadlines: DeadlineTrust;
  /** The servers' load reports; `false`: none. Default: on, HTTP when requested. */
  readonly loadReports: LoadReportsConfig | false;
  /** Overload protection (shedding); `false` (default): off. */
  readonly overload: OverloadConfig | false;
}

export const DEFAULT_INBOUND: InboundConfig = Object.freeze({
  pathNormalization: 'BASE',
  escapedSlashes: 'KEEP_UNCHANGED',
  xffNumTrustedHops: 0,
  timeoutMs: 0,
  deadlines: Object.freeze({ trustMeshPeers: true, trustedNetworks: Object.freeze([]) }),
  loadReports: DEFAULT_LOAD_REPORTS,
  overload: false,
});

/** Validates one network (a CIDR block or an address), pushing an issue naming `path` when bad. */
function checkNetwork(v: unknown, path: string, issues: ConfigIssue[]): string | undefined {
  const [addr = '', bits, extra] = typeof v === 'string' ? v.split('/') : [];
  const family = isIP(addr);
  if (
    typeof v !== 'string' ||
    family === 0 ||
    extra !== undefined ||
    (bits !== undefined && (!/^\d{1,3}$/.test(bits) || Number(bits) > (family === 6 ? 128 : 32)))
  ) {
    issues.push({ path, message: `must be an IP address or CIDR block, got ${describe(v)}` });
    return undefined;
  }
  return v;
}

/** Validates a list of networks (CIDR blocks or addresses), naming every bad entry by path. */
export function parseNetworks(raw: unknown, path: string, issues: ConfigIssue[]): readonly string[] {
  if (!Array.isArray(raw)) {
    issues.push({ path, message: `must be a list of CIDR blocks, got ${describe(raw)}` });
    return [];
  }
  const out: string[] = [];
  raw.forEach((v: unknown, i: number) => {
    const n = checkNetwork(v, join(path, i), issues);
    if (n !== undefined) out.push(n);
  });
  return Object.freeze(out);
}

const network = s.custom<string, string>({
  ts: 'string',
  json: { type: 'string' },
  parse: checkNetwork,
});

const deadlinesObject = s.object(
  {
    trustMeshPeers: s.boolean({
      default: DEFAULT_INBOUND.deadlines.trustMeshPeers,
      doc:
        "Honour deadline headers from mTLS peers whose verified SPIFFE ID is in this workload's trust domain " +
        '(any verified SPIFFE ID while the trust domain is unknown).',
    }),
    trustedNetworks: s.array(network, {
      default: [],
      doc: 'Also honour them from connections coming from these CIDR blocks or addresses (a plaintext mesh lists its networks here).',
    }),
  },
  {
    name: 'InboundDeadlinesInput',
    doc: 'Whose deadline headers (`x-meshlet-deadline-ms`, `x-request-timeout`, `grpc-timeout`) count.',
  },
);

const loadReportsObject = s.object(
  {
    send: s.enum(['requested', 'always'] as const, {
      default: DEFAULT_LOAD_REPORTS.send,
      doc:
        'HTTP: `requested` answers requests that carry `endpoint-load-metrics-format` (meshlet clients ask when their ' +
        'policy uses reports) in the form asked for; `always` adds the header to every response. gRPC calls always get the trailer.',
    }),
    format: s.enum(['text', 'json', 'binary'] as const, {
      default: DEFAULT_LOAD_REPORTS.format,
      doc: 'The form of `always` reports (`endpoint-load-metrics: TEXT …`, `JSON …`, `BIN …`).',
    }),
    oob: s.boolean({
      default: DEFAULT_LOAD_REPORTS.oob,
      doc: 'gRPC servers also serve `xds.service.orca.v3.OpenRcaService` (out-of-band reports, through grpc-js).',
    }),
  },
  {
    name: 'LoadReportsInput',
    doc: "The servers' ORCA load reports (event-loop utilization, CPU, rps, eps, application metrics).",
  },
);

const overloadObject = s.object(
  {
    maxEventLoopDelay: s.duration({
      positive: true,
      default: formatDuration(DEFAULT_OVERLOAD.maxEventLoopDelayMs),
      doc: 'Shed a request when the event loop is this far behind as it is admitted.',
    }),
    maxUtilization: s.number({
      min: 0.01,
      max: 1,
      default: DEFAULT_OVERLOAD.maxUtilization as number,
      doc: 'Also shed a growing share of requests while the event-loop utilization of the last 100ms is above this (1: never).',
    }),
    retryAfter: s.duration({
      min: 1,
      default: formatDuration(DEFAULT_OVERLOAD.retryAfterMs),
      doc: 'The back-off a shed answer asks for (`Retry-After` in whole seconds, at least 1); meshlet clients avoid the endpoint that long.',
    }),
    exemptPaths: s.array(s.string({ doc: 'A path.' }), {
      default: [],
      doc: 'Paths never shed, besides the liveness and readiness paths and the gRPC health service.',
    }),
  },
  {
    name: 'OverloadInput',
    doc: 'Overload protection: answer 503 (gRPC RESOURCE_EXHAUSTED) with Retry-After before running the handler.',
  },
);

const inboundObject = s.object(
  {
    pathNormalization: s.enum(PATH_NORMALIZATIONS, {
      default: DEFAULT_INBOUND.pathNormalization,
      doc: "How request paths are normalized, Istio's `meshConfig.pathNormalization` names.",
    }),
    escapedSlashes: s.enum(ESCAPED_SLASHES_ACTIONS, {
      defaultText:
        '`KEEP_UNCHANGED` (`UNESCAPE_AND_FORWARD` under `DECODE_AND_MERGE_SLASHES`, as Istio sets it)',
      doc: "What `%2F` and `%5C` become: Envoy's `path_with_escaped_slashes_action`.",
    }),
    xffNumTrustedHops: s.integer({
      min: 0,
      max: 64,
      default: DEFAULT_INBOUND.xffNumTrustedHops,
      doc:
        "Proxies in front of the service that append to `X-Forwarded-For` (Istio's `numTrustedProxies`): the client IP " +
        'is the Nth entry from the right. 0: the connection peer, whatever the header says.',
    }),
    timeout: s.duration({
      default: 0,
      doc: "The service's own inbound timeout: the deadline of a request that carries none, and the cap of a caller's. 0: none.",
    }),
    deadlines: deadlinesObject.with({
      defaultText: 'mesh peers only',
      doc: deadlinesObject.meta.doc,
    }),
    loadReports: s.union([s.literal(false), loadReportsObject], {
      defaultText: 'on (HTTP: when requested)',
      doc: "The servers' ORCA load reports; `false` turns them off.",
    }),
    overload: s.union([s.boolean(), overloadObject], {
      defaultText: 'off',
      doc: 'Overload protection (load shedding); `true` for the defaults.',
    }),
  },
  {
    name: 'InboundInput',
    doc: 'How the Express, Fastify and gRPC servers admit requests: path normalization, client IP, deadlines (docs/security.md).',
  },
);

/** The `inbound:` section's schema (types, JSON Schema and validation). */
export const inboundSchema = inboundObject.with({
  defaultText: "Istio's defaults",
  doc: inboundObject.meta.doc,
});

/** Parses the `inbound:` section (every bad field named by path). */
export function parseInboundSection(raw: unknown, path: string, issues: ConfigIssue[]): InboundConfig {
  const o = inboundObject.parse(raw, path, issues);
  if (!o) return DEFAULT_INBOUND;
  const pathNormalization = o.pathNormalization ?? DEFAULT_INBOUND.pathNormalization;
  const d = o.deadlines;
  return Object.freeze({
    pathNormalization,
    escapedSlashes: o.escapedSlashes ?? defaultEscapedSlashes(pathNormalization),
    xffNumTrustedHops: o.xffNumTrustedHops ?? 0,
    timeoutMs: Math.ceil(o.timeout ?? 0),
    deadlines:
      d === undefined
        ? DEFAULT_INBOUND.deadlines
        : Object.freeze({
            trustMeshPeers: d.trustMeshPeers ?? true,
            trustedNetworks: Object.freeze([...(d.trustedNetworks ?? [])]),
          }),
    loadReports: parsedLoadReports(o.loadReports),
    overload: parsedOverload(o.overload),
  });
}

type LoadReportsOut = ReturnType<typeof loadReportsObject.parse>;
type OverloadOut = ReturnType<typeof overloadObject.parse>;

function parsedLoadReports(o: false | LoadReportsOut): LoadReportsConfig | false {
  if (o === false) return false;
  if (o === undefined) return DEFAULT_LOAD_REPORTS;
  return Object.freeze({
    send: o.send ?? DEFAULT_LOAD_REPORTS.send,
    format: o.format ?? DEFAULT_LOAD_REPORTS.format,
    oob: o.oob ?? DEFAULT_LOAD_REPORTS.oob,
  });
}

function parsedOverload(o: boolean | OverloadOut): OverloadConfig | false {
  if (o === false || o === undefined) return false;
  if (o === true) return DEFAULT_OVERLOAD;
  return Object.freeze({
    maxEventLoopDelayMs: o.maxEventLoopDelay ?? DEFAULT_OVERLOAD.maxEventLoopDelayMs,
    maxUtilization: o.maxUtilization ?? DEFAULT_OVERLOAD.maxUtilization,
    retryAfterMs: o.retryAfter ?? DEFAULT_OVERLOAD.retryAfterMs,
    exemptPaths: Object.freeze([...(o.exemptPaths ?? [])]),
  });
}

/** Parses an `overload` value given in code (a server adapter's option) like the config section. */
export function parseOverload(raw: unknown, path: string, issues: ConfigIssue[]): OverloadConfig | false {
  const o = s.union([s.boolean(), overloadObject]).parse(raw, path, issues);
  return parsedOverload(o ?? false);
}

/** Parses a `loadReports` value given in code like the config section. */
export function parseLoadReports(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
): LoadReportsConfig | false {
  const o = s.union([s.literal(false), loadReportsObject]).parse(raw, path, issues);
  return parsedLoadReports(o);
}
