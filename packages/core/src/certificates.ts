import type { InboundTlsRequirement } from './inbound/listener.js';
import type { Mesh } from './mesh.js';

/**
 * Rotating certificate material under a name: what gRPC's bootstrap calls a certificate provider
 * instance (`certificate_providers.default`, a `file_watcher`), what `@meshlet/tls`'s
 * `CertificateSource` is. Servers and channels take the current material per handshake and hear
 * of rotations, so new connections use the new certificate while open ones keep working.
 */
export interface CertificateProvider {
  /** The current `{ ca, key, cert }` (PEM), for gRPC credentials. */
  pem(): { ca: Buffer; key: Buffer; cert: Buffer };
  /** Options for `tls.createSecureContext` (key, cert chain, trust bundle, minimum version). */
  secureContextOptions(): { key: string; cert: string; ca: string[]; minVersion?: string };
  /** Called after the material changed (and validated); returns a remover. */
  on(event: 'rotate', listener: () => void): () => void;
}

const registries = new WeakMap<Mesh, Map<string, CertificateProvider>>();

function registryOf(mesh: Mesh): Map<string, CertificateProvider> {
  let r = registries.get(mesh);
  if (r === undefined) {
    r = new Map();
    registries.set(mesh, r);
  }
  return r;
}

/**
 * Registers `provider` as the mesh's certificate provider instance `name` (`undefined` removes
 * it). `@meshlet/tls` registers the `tls:` directory as `default` when no bootstrap provider has
 * that name; the bootstrap's `certificate_providers` register theirs. Returns a remover.
 */
export function setCertificateProvider(
  mesh: Mesh,
  name: string,
  provider: CertificateProvider | undefined,
): () => void {
  const r = registryOf(mesh);
  if (provider === undefined) {
    r.delete(name);
    return () => {};
  }
  r.set(name, provider);
  return () => {
    if (r.get(name) === provider) r.delete(name);
  };
}

/** The mesh's certificate provider instance `name`, if any. */
export function certificateProvider(mesh: Mesh, name: string): CertificateProvider | undefined {
  return registries.get(mesh)?.get(name);
}

/**
 * The providers a filter chain's TLS names: the server certificate's (it must hold a key: an
 * instance with roots only cannot serve) and the trust bundle's. Undefined while either is
 * missing: the server then closes the connection, never serves it another way.
 */
export function chainCertificates(
  mesh: Mesh,
  tls: InboundTlsRequirement,
): { identity: CertificateProvider; roots: CertificateProvider | undefined } | undefined {
  const identity = certificateProvider(mesh, tls.certificateProvider);
  if (identity === undefined || identity.secureContextOptions().key === '') return undefined;
  if (tls.caProvider === undefined) return { identity, roots: undefined };
  const roots = certificateProvider(mesh, tls.caProvider);
  if (roots === undefined || roots.secureContextOptions().ca.length === 0) return undefined;
  return { identity, roots };
}

/** The names of the mesh's certificate provider instances. */
export function certificateProviderNames(mesh: Mesh): string[] {
  return [...(registries.get(mesh)?.keys() ?? [])];
}
