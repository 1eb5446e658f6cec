import { isIP } from 'node:net';
import type { ConfigIssue } from './errors.js';

/** Where an endpoint runs, as in Envoy's `Locality`. Empty strings mean "unspecified". */
export interface Locality {
  readonly region: string;
  readonly zone: string;
  readonly subZone: string;
}

export const UNSPECIFIED_LOCALITY: Locality = Object.freeze({ region: '', zone: '', subZone: '' });

/**
 * Health as reported by discovery (EDS health status, EndpointSlice conditions) — not the mesh's
 * own view, which adds active health checks and outlier ejection on top.
 * - `healthy`/`unknown`: may take traffic;
 * - `degraded`: may take traffic, preferred last;
 * - `draining`: finish in-flight work, take new requests only in panic mode;
 * - `unhealthy`: takes no traffic except in panic mode.
 */
export type HealthStatus = 'healthy' | 'unknown' | 'degraded' | 'draining' | 'unhealthy';

export const HEALTH_STATUSES: readonly HealthStatus[] = [
  'healthy',
  'unknown',
  'degraded',
  'draining',
  'unhealthy',
];

/** One network endpoint of a service, as discovery sees it. Immutable. */
export interface Endpoint {
  /** `address:port` (`[v6]:port`); unique within a service. */
  readonly id: string;
  /** IPv4/IPv6 literal, or a host name to be resolved when connecting. */
  readonly address: string;
  readonly port: number;
  /** Relative weight for weighted policies; >= 1. */
  readonly weight: number;
  readonly locality: Locality;
  /** Failover priority: 0 is used first (Envoy semantics). */
  readonly priority: number;
  /**
   * Weight of this endpoint's locality within its priority (EDS `load_balancing_weight` of the
   * `LocalityLbEndpoints`), for locality-weighted balancing; undefined when discovery gives none.
   */
  readonly localityWeight?: number | undefined;
  readonly health: HealthStatus;
  /** Free-form labels (pod name, version, …). */
  readonly metadata: Readonly<Record<string, string>>;
  /** TLS server name / logical host name, when discovery knows one. */
  readonly hostname?: string | undefined;
  /**
   * The instance's own name when discovery knows one, for people (the admin page, snapshots, logs):
   * the Pod of a Kubernetes EndpointSlice endpoint (`targetRef.name`, else its `hostname`), the xDS
   * `Endpoint.hostname`, or `name` in config and endpoint files. Never used for routing.
   */
  readonly name?: string | undefined;
}

export interface EndpointInit {
  address: string;
  port: number;
  weight?: number | undefined;
  locality?: Partial<Locality> | undefined;
  priority?: number | undefined;
  localityWeight?: number | undefined;
  health?: HealthStatus | undefined;
  metadata?: Record<string, string> | undefined;
  hostname?: string | undefined;
  name?: string | undefined;
}

export function endpointId(address: string, port: number): string {
  return isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

export function makeEndpoint(init: EndpointInit): Endpoint {
  const locality: Locality =
    init.locality === undefined
      ? UNSPECIFIED_LOCALITY
      : Object.freeze({
          region: init.locality.region ?? '',
          zone: init.locality.zone ?? '',
          subZone: init.locality.subZone ?? '',
        });
  return Object.freeze({
    id: endpointId(init.address, init.port),
    address: init.address,
    port: init.port,
    weight: init.weight ?? 1,
    locality,
    priority: init.priority ?? 0,
    localityWeight: init.localityWeight,
    health: init.health ?? 'healthy',
    metadata: Object.freeze({ ...(init.metadata ?? {}) }),
    hostname: init.hostname,
    name: init.name,
  });
}

export function localityKey(l: Locality): string {
  return `${l.region}/${l.zone}/${l.subZone}`;
}

/** True when two localities name the same place (without building their keys). */
export function sameLocality(a: Locality, b: Locality): boolean {
  return a === b || (a.zone === b.zone && a.region === b.region && a.subZone === b.subZone);
}

/** True when two endpoints are interchangeable for the balancer (same id and same attributes). */
export function sameEndpoint(a: Endpoint, b: Endpoint): boolean {
  return a === b || (a.weight === b.weight && sameButWeight(a, b));
}

/** True when two endpoints differ at most in their weight. */
export function sameButWeight(a: Endpoint, b: Endpoint): boolean {
  if (a === b) return true;
  if (
    a.id !== b.id ||
    a.priority !== b.priority ||
    a.localityWeight !== b.localityWeight ||
    a.health !== b.health ||
    a.hostname !== b.hostname ||
    a.name !== b.name ||
    !sameLocality(a.locality, b.locality)
  ) {
    return false;
  }
  const ak = Object.keys(a.metadata);
  if (ak.length !== Object.keys(b.metadata).length) return false;
  for (const k of ak) if (a.metadata[k] !== b.metadata[k]) return false;
  return true;
}

/**
 * Parses `host:port`, `[v6]:port` or `v4` plus a default port. Returns undefined (and records an
 * issue at `path`) when the text is not an address.
 */
/** A DNS host name: labels of letters, digits, `-` (and `_`, which container networks use). */
const HOST_NAME =
  /^(?=.{1,253}\.?$)[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?(\.[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?)*\.?$/i;

/**
 * True for an IP literal (v4, or v6 without brackets) or a DNS host name: what an endpoint address
 * from config, a discovery source or a control plane may be before it reaches a connection pool
 * (anything else fails later, in undici, as a raw `ERR_INVALID_URL`).
 */
export function isValidHost(host: string): boolean {
  return isIP(host) !== 0 || HOST_NAME.test(host);
}

export function parseHostPort(
  text: string,
  path: string,
  issues: ConfigIssue[],
  defaultPort?: number,
): { address: string; port: number } | undefined {
  let host: string;
  let portText: string | undefined;
  const t = text.trim();
  if (t.startsWith('[')) {
    const close = t.indexOf(']');
    if (close < 0) {
      issues.push({ path, message: `"${text}" has an unclosed IPv6 bracket` });
      return undefined;
    }
    host = t.slice(1, close);
    const rest = t.slice(close + 1);
    if (rest.length > 0) {
      if (!rest.startsWith(':')) {
        issues.push({ path, message: `"${text}" must be [ipv6]:port` });
        return undefined;
      }
      portText = rest.slice(1);
    }
  } else {
    const colon = t.lastIndexOf(':');
    if (colon >= 0 && t.indexOf(':') !== colon) {
      // A bare IPv6 literal without a port.
      host = t;
    } else if (colon >= 0) {
      host = t.slice(0, colon);
      portText = t.slice(colon + 1);
    } else {
      host = t;
    }
  }
  if (host.length === 0) {
    issues.push({ path, message: `"${text}" has no host` });
    return undefined;
  }
  if (!isValidHost(host)) {
    issues.push({ path, message: `"${text}": ${JSON.stringify(host)} is not an IP address or a host name` });
    return undefined;
  }
  let port = defaultPort;
  if (portText !== undefined) {
    port = /^\d{1,5}$/.test(portText) ? Number(portText) : Number.NaN;
  }
  if (port === undefined) {
    issues.push({ path, message: `"${text}" has no port (write host:port)` });
    return undefined;
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    issues.push({ path, message: `"${text}" has an invalid port (1-65535)` });
    return undefined;
  }
  return { address: host, port };
}
