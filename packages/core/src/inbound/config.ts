import { isIP } from 'node:net';
import { parseDuration } from '../duration.js';
import type { ConfigIssue } from '../errors.js';
import { checkKeys, describe, expectObject, join, optBoolean, optEnum, optNumber } from '../validate.js';
import {
  defaultEscapedSlashes,
  ESCAPED_SLASHES_ACTIONS,
  type EscapedSlashesAction,
  PATH_NORMALIZATIONS,
  type PathNormalization,
} from './path.js';

/** The longest delay a Node timer can hold (2^31 - 1 ms, about 24.8 days). */
export const MAX_TIMER_MS = 2_147_483_647;

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

const KEYS = ['pathNormalization', 'escapedSlashes', 'xffNumTrustedHops', 'timeout', 'deadlines'];

/** Validates a list of networks (CIDR blocks or addresses), naming every bad entry by path. */
export function parseNetworks(raw: unknown, path: string, issues: ConfigIssue[]): readonly string[] {
  if (!Array.isArray(raw)) {
    issues.push({ path, message: `must be a list of CIDR blocks, got ${describe(raw)}` });
    return [];
  }
  const out: string[] = [];
  raw.forEach((v: unknown, i: number) => {
    const p = join(path, i);
    const [addr = '', bits, extra] = typeof v === 'string' ? v.split('/') : [];
    const family = isIP(addr);
    if (
      typeof v !== 'string' ||
      family === 0 ||
      extra !== undefined ||
      (bits !== undefined && (!/^\d{1,3}$/.test(bits) || Number(bits) > (family === 6 ? 128 : 32)))
    ) {
      issues.push({ path: p, message: `must be an IP address or CIDR block, got ${describe(v)}` });
      return;
    }
    out.push(v);
  });
  return Object.freeze(out);
}

/** Parses the `inbound:` section (every bad field named by path). */
export function parseInboundSection(raw: unknown, path: string, issues: ConfigIssue[]): InboundConfig {
  const obj = expectObject(raw, path, issues);
  if (!obj) return DEFAULT_INBOUND;
  checkKeys(obj, KEYS, path, issues);
  const pathNormalization = optEnum(
    obj,
    'pathNormalization',
    path,
    issues,
    PATH_NORMALIZATIONS,
    DEFAULT_INBOUND.pathNormalization,
  );
  const escapedSlashes = optEnum(
    obj,
    'escapedSlashes',
    path,
    issues,
    ESCAPED_SLASHES_ACTIONS,
    defaultEscapedSlashes(pathNormalization),
  );
  const xffNumTrustedHops = optNumber(obj, 'xffNumTrustedHops', path, issues, 0, {
    min: 0,
    max: 64,
    integer: true,
  });
  let timeoutMs = 0;
  if (obj.timeout !== undefined) {
    const p = join(path, 'timeout');
    const t = parseDuration(obj.timeout, p, issues);
    if (t !== undefined && t > MAX_TIMER_MS) {
      issues.push({
        path: p,
        message: `must be at most ${MAX_TIMER_MS}ms (what a timer can hold), got ${t}ms`,
      });
    } else if (t !== undefined) timeoutMs = Math.ceil(t);
  }
  let deadlines = DEFAULT_INBOUND.deadlines;
  if (obj.deadlines !== undefined) {
    const dp = join(path, 'deadlines');
    const d = expectObject(obj.deadlines, dp, issues);
    if (d) {
      checkKeys(d, ['trustMeshPeers', 'trustedNetworks'], dp, issues);
      deadlines = Object.freeze({
        trustMeshPeers: optBoolean(d, 'trustMeshPeers', dp, issues, true),
        trustedNetworks:
          d.trustedNetworks === undefined
            ? DEFAULT_INBOUND.deadlines.trustedNetworks
            : parseNetworks(d.trustedNetworks, join(dp, 'trustedNetworks'), issues),
      });
    }
  }
  return Object.freeze({ pathNormalization, escapedSlashes, xffNumTrustedHops, timeoutMs, deadlines });
}
