import type { PeerCertificate } from 'node:tls';
import { type ChannelCredentials, experimental, type ServerCredentials } from '@grpc/grpc-js';
import {
  describeSanMatchers,
  type SanMatcher,
  spiffeIdFromSubjectAltName,
  subjectAltNamesMatch,
} from '@meshlet/core';

/**
 * What rotating credentials need from a certificate source. `@meshlet/tls`'s `CertificateSource`
 * satisfies it: `pem()` returns the current `{ ca, key, cert }`, and `on('rotate', …)` fires after
 * the mounted files changed and the new material validated.
 */
export interface PemSource {
  pem(): { ca: Buffer; key: Buffer; cert: Buffer };
  on(event: 'rotate', listener: () => void): unknown;
}

type CaListener = experimental.CaCertificateUpdateListener;
type IdListener = experimental.IdentityCertificateUpdateListener;

/**
 * A grpc-js `CertificateProvider` over a `PemSource`: new listeners get the current material at
 * once, and every rotation is pushed to all of them, so new handshakes use the new certificate
 * while open connections keep working.
 */
export class PemCertificateProvider implements experimental.CertificateProvider {
  readonly #source: PemSource;
  readonly #ca = new Set<CaListener>();
  readonly #id = new Set<IdListener>();

  constructor(source: PemSource) {
    this.#source = source;
    source.on('rotate', () => this.#push());
  }

  #push(): void {
    const pem = this.#source.pem();
    for (const l of this.#ca) l({ caCertificate: pem.ca });
    for (const l of this.#id) l({ certificate: pem.cert, privateKey: pem.key });
  }

  // The first update is delivered on the next tick: grpc-js's server credentials register their
  // watchers only after adding the listener, and would miss a synchronous update.
  addCaCertificateListener(listener: CaListener): void {
    this.#ca.add(listener);
    process.nextTick(() => {
      if (this.#ca.has(listener)) listener({ caCertificate: this.#source.pem().ca });
    });
  }
  removeCaCertificateListener(listener: CaListener): void {
    this.#ca.delete(listener);
  }
  addIdentityCertificateListener(listener: IdListener): void {
    this.#id.add(listener);
    process.nextTick(() => {
      if (!this.#id.has(listener)) return;
      const pem = this.#source.pem();
      listener({ certificate: pem.cert, privateKey: pem.key });
    });
  }
  removeIdentityCertificateListener(listener: IdListener): void {
    this.#id.delete(listener);
  }
}

/** The SPIFFE ID (first `spiffe://` URI SAN) of a peer certificate. */
export function spiffeIdOfCertificate(
  cert: Pick<PeerCertificate, 'subjectaltname'> | undefined,
): string | undefined {
  return spiffeIdFromSubjectAltName(cert?.subjectaltname);
}

/** True when `actual` is `expected` (a SPIFFE ID) or lies in it (a trust domain `spiffe://td`). */
export function identityMatches(expected: string, actual: string | undefined): boolean {
  if (actual === undefined) return false;
  if (actual === expected) return true;
  const td = /^spiffe:\/\/[^/]+$/.test(expected);
  return td && actual.startsWith(`${expected}/`);
}

export interface MeshChannelCredentialsOptions {
  /**
   * Expected server identity: a SPIFFE ID, or a trust domain `spiffe://td`. Default: none (any
   * certificate signed by the trust bundle). Workload certificates carry SPIFFE URI SANs, not DNS
   * names, so the DNS host-name check is replaced by this identity check.
   */
  readonly identity?: string | undefined;
}

/**
 * mTLS channel credentials that rotate with `source`: the client presents the workload
 * certificate and verifies the server against the trust bundle and, when given, its SPIFFE ID.
 */
export function meshChannelCredentials(
  source: PemSource,
  options: MeshChannelCredentialsOptions = {},
): ChannelCredentials {
  const provider = new PemCertificateProvider(source);
  const expected = options.identity;
  return experimental.createCertificateProviderChannelCredentials(provider, provider, {
    checkServerIdentity: (_host, cert) => {
      if (expected === undefined) return undefined;
      const actual = spiffeIdOfCertificate(cert);
      if (identityMatches(expected, actual)) return undefined;
      const err = new Error(
        `MESHLET_ERR_PEER_IDENTITY: server presented ${actual ?? 'no SPIFFE ID'}, expected ${expected}`,
      );
      return err;
    },
  });
}

export interface UpstreamChannelCredentialsOptions {
  /** The client certificate's provider (none: TLS without a client certificate). */
  readonly identity: PemSource | undefined;
  /** The provider of the root certificates that verify the server. */
  readonly roots: PemSource;
  /** Accepted server names (gRFC A29 SAN matchers); empty: any server the roots verify. */
  readonly sanMatchers: readonly SanMatcher[];
  /** The service, for error messages. */
  readonly service?: string | undefined;
}

/**
 * Channel credentials for a hop whose TLS a control plane decided (xDS UpstreamTlsContext, gRFC
 * A29), as grpc-js-xds's `XdsChannelCredentials` builds them: certificates from two provider
 * instances (rotating), the server accepted by SAN matchers instead of the host name. A refused
 * server fails the connection (the call: UNAVAILABLE, `MESHLET_ERR_PEER_IDENTITY` in its details).
 */
export function upstreamChannelCredentials(options: UpstreamChannelCredentialsOptions): ChannelCredentials {
  const roots = new PemCertificateProvider(options.roots);
  const identity =
    options.identity === undefined
      ? null
      : options.identity === options.roots
        ? roots
        : new PemCertificateProvider(options.identity);
  const matchers = options.sanMatchers;
  const who = options.service ? ` of service "${options.service}"` : '';
  return experimental.createCertificateProviderChannelCredentials(roots, identity, {
    checkServerIdentity: (_host, cert) =>
      subjectAltNamesMatch(matchers, cert?.subjectaltname)
        ? undefined
        : new Error(
            `MESHLET_ERR_PEER_IDENTITY: server${who} presented ${cert?.subjectaltname || 'no subject alternative name'}; the cluster accepts ${describeSanMatchers(matchers)}`,
          ),
  });
}

export interface MeshServerCredentialsOptions {
  /** Require and verify a client certificate (mTLS). Default true. */
  readonly requireClientCertificate?: boolean;
}

/** Server credentials that rotate with `source` (mTLS by default). */
export function meshServerCredentials(
  source: PemSource,
  options: MeshServerCredentialsOptions = {},
): ServerCredentials {
  const provider = new PemCertificateProvider(source);
  return experimental.createCertificateProviderServerCredentials(
    provider,
    provider,
    options.requireClientCertificate ?? true,
  );
}
