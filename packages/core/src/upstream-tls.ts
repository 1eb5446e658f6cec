import { isIPv6 } from 'node:net';
import type { Endpoint } from './model.js';

/**
 * Transport security of a service's connections as a control plane decides it (an xDS Cluster's
 * `transport_socket` / `transport_socket_matches` with an `UpstreamTlsContext`, gRFC A29): plain
 * data, set on `ServicePolicy.upstreamSecurity` by the discovery source and read by every
 * transport's TLS layer (undici connectors, grpc-js channel credentials). Certificates are named,
 * not carried: a certificate-provider *instance* of the xDS bootstrap (`certificate_providers`).
 */
export interface UpstreamSecurity {
  /**
   * `transport_socket_matches`, in order: the first whose `match` is contained in an endpoint's
   * `envoy.transport_socket_match` metadata (Istio's auto-mTLS: `{ tlsMode: istio }`) decides that
   * endpoint's hop; an empty `match` matches every endpoint.
   */
  readonly matches: readonly TransportSocketMatch[];
  /** The cluster's `transport_socket`: the hop of endpoints no match took; undefined = plaintext. */
  readonly tls: UpstreamTls | undefined;
  /**
   * The control plane named no transport socket: the mesh's fallback applies (gRFC A29's
   * "fallback credentials"): its explicitly configured `tls`, else plaintext.
   */
  readonly fallback?: boolean | undefined;
}

/** What a discovery source sets when the control plane says nothing about a service's TLS. */
export const FALLBACK_UPSTREAM_SECURITY: UpstreamSecurity = Object.freeze({
  matches: Object.freeze([]),
  tls: undefined,
  fallback: true,
});

export interface TransportSocketMatch {
  readonly name: string;
  /** Metadata keys and values the endpoint must carry under `envoy.transport_socket_match`. */
  readonly match: Readonly<Record<string, string>>;
  /** The TLS of the matching endpoints; undefined = plaintext (a `raw_buffer` socket). */
  readonly tls: UpstreamTls | undefined;
}

/** One `UpstreamTlsContext`, as gRFC A29 reads it. */
export interface UpstreamTls {
  /**
   * The certificate-provider instance of the client certificate and key
   * (`tls_certificate_provider_instance`); undefined: no client certificate (TLS, not mTLS).
   */
  readonly identityInstance: string | undefined;
  /** The instance whose CA certificates verify the server (`ca_certificate_provider_instance`). */
  readonly rootInstance: string;
  /** `match_subject_alt_names` / `match_typed_subject_alt_names`; empty: any verified server. */
  readonly sanMatchers: readonly SanMatcher[];
  /** The SNI to send (`sni`), if any. */
  readonly sni: string | undefined;
}

/** The SAN types of a `SubjectAltNameMatcher` (`match_typed_subject_alt_names`). */
export type SanType = 'DNS' | 'URI' | 'EMAIL' | 'IP_ADDRESS';

/** An Envoy `StringMatcher` applied to a certificate's subject alternative names. */
export interface SanMatcher {
  readonly kind: 'exact' | 'prefix' | 'suffix' | 'contains' | 'regex';
  /** The string compared (lower-cased when `ignoreCase`); the pattern for `regex`. */
  readonly value: string;
  /** The compiled pattern of a `regex` matcher (RE2 semantics, full match). */
  readonly regex: { test(value: string): boolean } | undefined;
  readonly ignoreCase: boolean;
  /** Only SANs of this type (`match_typed_subject_alt_names`); undefined: DNS, URI, email and IP. */
  readonly sanType: SanType | undefined;
}

/** The metadata namespace `transport_socket_matches` read (flattened as `namespace/key`). */
const MATCH_NS = 'envoy.transport_socket_match/';

/**
 * The TLS of the hop to `endpoint` (undefined: plaintext): the first transport socket match the
 * endpoint's `envoy.transport_socket_match` metadata satisfies, else the cluster's own socket.
 */
export function upstreamTlsFor(security: UpstreamSecurity, endpoint: Endpoint): UpstreamTls | undefined {
  const matches = security.matches;
  if (matches.length > 0) {
    const md = endpoint.metadata;
    for (let i = 0; i < matches.length; i++) {
      const m = matches[i] as TransportSocketMatch;
      let all = true;
      for (const k in m.match) {
        if (md?.[MATCH_NS + k] !== m.match[k]) {
          all = false;
          break;
        }
      }
      if (all) return m.tls;
    }
  }
  return security.tls;
}

/** One subject alternative name of a certificate. */
export interface SubjectAltName {
  readonly type: SanType | 'OTHER';
  readonly value: string;
}

const SAN_TYPES: Record<string, SanType> = {
  DNS: 'DNS',
  URI: 'URI',
  email: 'EMAIL',
  'IP Address': 'IP_ADDRESS',
};

/**
 * Parses Node's `subjectaltname` rendering (`DNS:a, URI:spiffe://td/x, IP Address:10.0.0.1`; a
 * value holding `, ` or quotes is JSON-quoted). IPv6 addresses are canonical (RFC 5952), as A29
 * compares them.
 */
export function parseSubjectAltNames(san: string | undefined): SubjectAltName[] {
  const out: SubjectAltName[] = [];
  if (!san) return out;
  let i = 0;
  while (i < san.length) {
    const colon = san.indexOf(':', i);
    if (colon < 0) break;
    const label = san.slice(i, colon);
    let value: string;
    let next: number;
    if (san.charCodeAt(colon + 1) === 34) {
      // A JSON string: find its closing quote (skipping escapes).
      let j = colon + 2;
      while (j < san.length && san.charCodeAt(j) !== 34) j += san.charCodeAt(j) === 92 ? 2 : 1;
      try {
        value = JSON.parse(san.slice(colon + 1, j + 1)) as string;
      } catch {
        value = '';
      }
      next = san.indexOf(', ', j);
    } else {
      next = san.indexOf(', ', colon);
      value = next < 0 ? san.slice(colon + 1) : san.slice(colon + 1, next);
    }
    const type = SAN_TYPES[label] ?? 'OTHER';
    out.push({ type, value: type === 'IP_ADDRESS' ? canonicalIp(value) : value });
    if (next < 0) break;
    i = next + 2;
  }
  return out;
}

/** An IPv6 address in RFC 5952 form (lower case, no leading zeros, the longest zero run as `::`). */
function canonicalIp(ip: string): string {
  if (!isIPv6(ip)) return ip;
  try {
    // The URL parser serializes IPv6 hosts canonically.
    return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  } catch {
    return ip.toLowerCase();
  }
}

function matchOne(m: SanMatcher, san: SubjectAltName): boolean {
  if (m.sanType !== undefined ? san.type !== m.sanType : san.type === 'OTHER') return false;
  if (san.value === '') return false;
  const v = m.ignoreCase ? san.value.toLowerCase() : san.value;
  switch (m.kind) {
    case 'exact':
      // A wildcard DNS SAN (`*.example.com`) matches one label (A29, Envoy's exact semantics).
      if (san.type === 'DNS' && v.startsWith('*.')) {
        const dot = m.value.indexOf('.', 1);
        return dot > 0 && v.slice(1) === m.value.slice(dot);
      }
      return v === m.value;
    case 'prefix':
      return v.startsWith(m.value);
    case 'suffix':
      return v.endsWith(m.value);
    case 'contains':
      return v.includes(m.value);
    case 'regex':
      return m.regex?.test(san.value) === true;
  }
}

/**
 * gRFC A29's server authorization: true when `matchers` is empty, or some SAN of the certificate
 * (DNS, URI, email, IP; typed matchers only their type) matches some matcher.
 */
export function subjectAltNamesMatch(
  matchers: readonly SanMatcher[],
  subjectaltname: string | undefined,
): boolean {
  if (matchers.length === 0) return true;
  const sans = parseSubjectAltNames(subjectaltname);
  for (const san of sans) for (const m of matchers) if (matchOne(m, san)) return true;
  return false;
}

/** A matcher list as people read it (`exact spiffe://td/ns/a/sa/b, prefix spiffe://td/`), for errors. */
export function describeSanMatchers(matchers: readonly SanMatcher[]): string {
  return matchers
    .map((m) => `${m.sanType ? `${m.sanType} ` : ''}${m.kind} ${JSON.stringify(m.value)}`)
    .join(', ');
}
