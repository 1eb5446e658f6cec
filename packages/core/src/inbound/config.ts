import { isIP } from 'node:net';
import type { ConfigIssue } from '../errors.js';
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
}

export const DEFAULT_INBOUND: InboundConfig = Object.freeze({
  pathNormalization: 'BASE',
  escapedSlashes: 'KEEP_UNCHANGED',
  xffNumTrustedHops: 0,
  timeoutMs: 0,
  deadlines: Object.freeze({ trustMeshPeers: true, trustedNetworks: Object.freeze([]) }),
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
  });
}
