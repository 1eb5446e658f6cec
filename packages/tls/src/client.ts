import { createSecureContext, type PeerCertificate, type SecureContext } from 'node:tls';
import {
  describeSanMatchers,
  type EndpointState,
  ErrorCodes,
  isMeshError,
  MeshError,
  parseSubjectAltNames,
  type SanMatcher,
  type ServiceRuntime,
  subjectAltNamesMatch,
} from '@meshlet/core';
import { undiciTransport } from '@meshlet/fetch';
import type { buildConnector } from 'undici';
import type { TlsMaterial } from './material.js';
import { matchesIdentity, spiffeIdOf } from './pem.js';
import type { CertificateSource } from './source.js';

/** Certificate verification failures that are the peer's fault (wrong CA, expired, …). */
const VERIFY_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_CA',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * Checks a peer certificate against an expected SPIFFE ID (exact) or trust domain (`spiffe://td`).
 * Returns a `MESHLET_ERR_PEER_IDENTITY` error, or undefined when the peer is accepted. With no
 * expectation every peer whose chain verified is accepted. Usable as `checkServerIdentity`.
 */
export function verifyPeerIdentity(
  expected: string | undefined,
  cert: Pick<PeerCertificate, 'subjectaltname'> | undefined,
  context: { service?: string; endpoint?: string } = {},
): MeshError | undefined {
  if (expected === undefined) return undefined;
  const actual = cert ? spiffeIdOf(cert) : undefined;
  if (matchesIdentity(expected, actual)) return undefined;
  const who = context.service ? ` of service "${context.service}"` : '';
  const at = context.endpoint ? ` at ${context.endpoint}` : '';
  return new MeshError(
    ErrorCodes.PEER_IDENTITY,
    `peer${who}${at} presented ${actual === undefined ? 'no SPIFFE ID' : `"${actual}"`}; expected ${expected}`,
    { ...context, expected, actual },
  );
}

export interface TlsConnectorOptions {
  /** Expected peer SPIFFE ID or trust domain (ServicePolicy.identity). */
  readonly identity?: string | undefined;
  /** Service name, for error messages. */
  readonly service?: string | undefined;
  /** TLS server name (SNI) to send; default none for IP addresses, the host name otherwise. */
  readonly servername?: string | undefined;
  /** Connect (TCP + handshake) timeout in ms (default 10s). */
  readonly timeoutMs?: number | undefined;
  /** Sessions kept for resumption (default 100; 0 disables resumption). */
  readonly maxCachedSessions?: number | undefined;
}

export type Connector = buildConnector.connector;

function wrapVerifyError(err: Error, service: string | undefined, endpoint: string): Error {
  if (isMeshError(err)) return err;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && VERIFY_CODES.has(code)) {
    const who = service ? ` of service "${service}"` : '';
    return new MeshError(
      ErrorCodes.TLS,
      `the certificate of peer${who} at ${endpoint} was refused: ${err.message} (${code})`,
      { service, endpoint, reason: code },
      { cause: err },
    );
  }
  return err;
}

/**
 * An undici connector (for `Pool`/`Client`/`Agent` `connect`) doing mTLS with a source's current
 * material: every NEW connection uses the latest certificate (the connector and its session cache
 * are rebuilt after a rotation), open connections are left alone. The peer must chain to the trust
 * bundle and, when `identity` is set, present a matching SPIFFE ID; otherwise the connection is
 * refused with `MESHLET_ERR_TLS` / `MESHLET_ERR_PEER_IDENTITY`. There is never a plaintext fallback.
 */
export function createTlsConnector(source: CertificateSource, options: TlsConnectorOptions = {}): Connector {
  let builtFor: TlsMaterial | undefined;
  let inner: Connector | undefined;
  const identity = options.identity;
  const service = options.service;
  const checkServerIdentity = (_host: string, cert: PeerCertificate) =>
    verifyPeerIdentity(identity, cert, service === undefined ? {} : { service });
  const build = (): Connector => {
    builtFor = source.current;
    return undiciTransport().buildConnector({
      secureContext: source.secureContext(),
      rejectUnauthorized: true,
      minVersion: source.minVersion,
      checkServerIdentity,
      timeout: options.timeoutMs ?? 10_000,
      maxCachedSessions: options.maxCachedSessions ?? 100,
      ...(options.servername ? { servername: options.servername } : {}),
    } as buildConnector.BuildOptions);
  };
  return (opts, callback) => {
    if (inner === undefined || builtFor !== source.current) inner = build();
    const endpoint = `${opts.hostname}:${opts.port}`;
    inner({ ...opts, protocol: 'https:' }, (err, socket) => {
      if (err) {
        callback(wrapVerifyError(err, service, endpoint), null);
        return;
      }
      callback(null, socket as NonNullable<typeof socket>);
    });
  };
}

/**
 * gRFC A29's server authorization: `MESHLET_ERR_PEER_IDENTITY` unless a SAN of the certificate
 * matches one of `matchers` (none: every server the roots verified is accepted).
 */
export function verifySubjectAltNames(
  matchers: readonly SanMatcher[],
  cert: Pick<PeerCertificate, 'subjectaltname'> | undefined,
  context: { service?: string | undefined; endpoint?: string | undefined } = {},
): MeshError | undefined {
  if (subjectAltNamesMatch(matchers, cert?.subjectaltname)) return undefined;
  const sans = parseSubjectAltNames(cert?.subjectaltname).map((x) => `${x.type}:${x.value}`);
  const who = context.service ? ` of service "${context.service}"` : '';
  const at = context.endpoint ? ` at ${context.endpoint}` : '';
  const expected = describeSanMatchers(matchers);
  return new MeshError(
    ErrorCodes.PEER_IDENTITY,
    `peer${who}${at} presented ${sans.length === 0 ? 'no subject alternative name' : sans.join(', ')}; the cluster accepts ${expected}`,
    {
      ...(context.service !== undefined ? { service: context.service } : {}),
      ...(context.endpoint !== undefined ? { endpoint: context.endpoint } : {}),
      expected,
      actual: sans.join(', '),
    },
  );
}

export interface UpstreamTlsConnectorOptions {
  /** The client certificate and key (a certificate provider with an identity); none: TLS without a client certificate. */
  readonly identity: CertificateSource | undefined;
  /** The root certificates that verify the server. */
  readonly roots: CertificateSource;
  /** Accepted server names (gRFC A29 SAN matchers); empty: any server the roots verify. */
  readonly sanMatchers: readonly SanMatcher[];
  readonly service?: string | undefined;
  /** SNI to send. */
  readonly servername?: string | undefined;
  /** Connect (TCP + handshake) timeout in ms (default 10s). */
  readonly timeoutMs?: number | undefined;
}

/**
 * An undici connector for a hop whose TLS a control plane decided (xDS UpstreamTlsContext): the
 * client certificate from one certificate-provider instance, the roots from another (often the
 * same), the server accepted by SAN matchers. New connections use the latest material of both
 * (rebuilt after a rotation of either); a server that fails verification or the SAN check is
 * refused with `MESHLET_ERR_TLS` / `MESHLET_ERR_PEER_IDENTITY`, never spoken to in plaintext.
 */
export function createUpstreamTlsConnector(options: UpstreamTlsConnectorOptions): Connector {
  const { identity, roots, sanMatchers, service } = options;
  let builtId: unknown;
  let builtRoots: unknown;
  let inner: Connector | undefined;
  const checkServerIdentity = (_host: string, cert: PeerCertificate) =>
    verifySubjectAltNames(sanMatchers, cert, { service });
  const context = (): SecureContext => {
    if (identity === roots) return roots.secureContext();
    const id = identity?.secureContextOptions();
    return createSecureContext({
      ...(id && id.key !== '' ? { key: id.key, cert: id.cert } : {}),
      ca: roots.secureContextOptions().ca,
      minVersion: roots.minVersion,
    });
  };
  return (opts, callback) => {
    if (inner === undefined || builtRoots !== roots.current || builtId !== identity?.current) {
      builtRoots = roots.current;
      builtId = identity?.current;
      inner = undiciTransport().buildConnector({
        secureContext: context(),
        rejectUnauthorized: true,
        minVersion: roots.minVersion,
        checkServerIdentity,
        timeout: options.timeoutMs ?? 10_000,
        maxCachedSessions: 100,
        ...(options.servername ? { servername: options.servername } : {}),
      } as buildConnector.BuildOptions);
    }
    const endpoint = `${opts.hostname}:${opts.port}`;
    inner({ ...opts, protocol: 'https:' }, (err, socket) => {
      if (err) {
        callback(wrapVerifyError(err, service, endpoint), null);
        return;
      }
      callback(null, socket as NonNullable<typeof socket>);
    });
  };
}

/** Resolves the certificate source (if any) and expected identity of a service. */
export type TlsSourceLookup = (service: ServiceRuntime) => CertificateSource | undefined;

/**
 * A `MeshDispatcherOptions.connect` provider: services with TLS get an mTLS connector verifying
 * `policy.identity`; the rest stay plaintext.
 */
export function createConnectProvider(
  lookup: TlsSourceLookup,
): (ep: EndpointState, service: ServiceRuntime) => Connector | undefined {
  return (_ep, rt) => {
    const source = lookup(rt);
    if (!source) return undefined;
    return createTlsConnector(source, {
      identity: rt.policy.identity,
      service: rt.name,
      timeoutMs: rt.policy.connection.connectTimeoutMs,
    });
  };
}
