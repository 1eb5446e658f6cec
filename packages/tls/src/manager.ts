import {
  addInboundPolicy,
  type EndpointState,
  ErrorCodes,
  type Mesh,
  MeshError,
  type ParsedMeshConfig,
  type ServicePolicy,
  type ServiceRuntime,
  setCertificateProvider,
  setTrustDomain,
  type UpstreamTls,
  upstreamTlsFor,
} from '@meshlet/core';
import { type Authorizer, createAuthorizer } from './authz/evaluate.js';
import type { AuthorizationConfig } from './authz/policy.js';
import { type Connector, createConnectProvider, createUpstreamTlsConnector } from './client.js';
import type { ServiceTlsSetting, TlsSettings } from './config.js';
import { CertificateSource, type CertificateSourceStatus, type RotationEvent } from './source.js';

/**
 * A certificate-provider instance (an xDS bootstrap's `certificate_providers` entry with the
 * `file_watcher` plugin, gRFC A29): PEM files re-read every `refreshIntervalMs` (and on change).
 */
export interface CertificateProviderFiles {
  readonly certificateFile: string | undefined;
  readonly privateKeyFile: string | undefined;
  readonly caCertificateFile: string | undefined;
  readonly refreshIntervalMs: number;
}

export interface MeshTlsOptions {
  /** Clock in ms since the epoch (tests). */
  now?: () => number;
  /**
   * Certificate-provider instances by name (from the xDS bootstrap). Read at once (a missing or
   * invalid file is `MESHLET_ERR_TLS` naming the instance), then watched. Without a `tls` section,
   * the `default` instance is the mesh's own certificate source; with one and no `default`
   * instance, the `tls` directory serves as `default`.
   */
  certificateProviders?: Readonly<Record<string, CertificateProviderFiles>> | undefined;
}

/** What `snapshot().extensions.tls` holds. */
export interface MeshTlsSnapshot {
  enabled: boolean;
  mode: string | undefined;
  sources: CertificateSourceStatus[];
  authorization: { policies: number; allowed: number; denied: number; audited: number } | undefined;
}

function settingsKey(s: TlsSettings): string {
  return JSON.stringify(s);
}

/**
 * The TLS side of one mesh: a certificate source per distinct directory (mesh-wide `tls` and
 * service overrides), the fetch transport's connect provider, and the inbound authorizer.
 * Built from the parsed config (reads the certificates at once, throwing `MESHLET_ERR_TLS` when
 * they are missing or invalid); `attach(mesh)` starts watching and reporting.
 */
export class MeshTls {
  readonly config: ParsedMeshConfig;
  /** The mesh-wide source (`tls: { dir }`), if any. */
  readonly meshSource: CertificateSource | undefined;
  /** The inbound authorizer from `authorization: { mode, policies }`, if configured. */
  readonly authorizer: Authorizer | undefined;
  /** Where `meshSource` comes from: the `tls` section, or the bootstrap's `default` provider instance. */
  readonly meshSourceOrigin: 'tls' | 'certificate_providers' | undefined;
  readonly #sources = new Map<string, CertificateSource>();
  readonly #providers = new Map<string, CertificateSource>();
  readonly #options: MeshTlsOptions;
  #mesh: Mesh | undefined;

  constructor(config: ParsedMeshConfig, options: MeshTlsOptions = {}) {
    this.config = config;
    this.#options = options;
    const meshLevel = config.extensions.tls as TlsSettings | false | undefined;
    const explicit = meshLevel ? this.#source(meshLevel) : undefined;
    for (const [name, p] of Object.entries(options.certificateProviders ?? {})) {
      const label = `certificate_providers.${name}`;
      const source = new CertificateSource({
        dir: label,
        files: { cert: p.certificateFile, key: p.privateKeyFile, ca: p.caCertificateFile },
        pollIntervalMs: p.refreshIntervalMs,
        // gRPC's file_watcher asks nothing of the names in the certificate (SAN matchers do).
        requireSpiffeId: false,
        now: options.now,
      });
      this.#providers.set(name, source);
      this.#sources.set(label, source);
    }
    const dflt = this.#providers.get('default');
    if (explicit) {
      this.meshSource = explicit;
      this.meshSourceOrigin = 'tls';
      // The `tls` directory serves clusters that name the `default` instance.
      if (!dflt) this.#providers.set('default', explicit);
    } else if (dflt?.hasIdentity && dflt.hasRoots && meshLevel !== false) {
      this.meshSource = dflt;
      this.meshSourceOrigin = 'certificate_providers';
    } else {
      this.meshSource = undefined;
      this.meshSourceOrigin = undefined;
    }
    this.#source(config.defaults.extensions.tls as ServiceTlsSetting | undefined);
    for (const svc of Object.values(config.services))
      this.#source(svc.extensions.tls as ServiceTlsSetting | undefined);
    const authz = config.extensions.authorization as AuthorizationConfig | undefined;
    this.authorizer = authz
      ? createAuthorizer(authz, {
          onDeny: (d, a) =>
            this.#mesh?.events.emit('log', {
              level: 'info',
              scope: 'authz',
              message: `denied ${a.method ?? ''} ${a.path ?? ''} from ${a.principal ?? a.sourceIp ?? 'unknown'}: ${d.reason}`,
              data: { policy: d.policy, rule: d.rule, principal: a.principal, sourceIp: a.sourceIp },
            }),
          onAudit: (d, a) =>
            this.#mesh?.events.emit('log', {
              level: 'info',
              scope: 'authz',
              message: `audit ${a.method ?? ''} ${a.path ?? ''} from ${a.principal ?? a.sourceIp ?? 'unknown'} (${d.audited.join(', ')})`,
              data: { audited: d.audited, allowed: d.allowed },
            }),
        })
      : undefined;
  }

  #source(setting: ServiceTlsSetting | undefined): CertificateSource | undefined {
    if (!setting) return undefined;
    const key = settingsKey(setting);
    let s = this.#sources.get(key);
    if (!s) {
      s = new CertificateSource({
        dir: setting.dir,
        layout: setting.layout,
        watch: setting.watch,
        debounceMs: setting.debounceMs,
        pollIntervalMs: setting.pollIntervalMs,
        warnBeforeMs: setting.warnBeforeMs,
        minVersion: setting.minVersion,
        requireSpiffeId: setting.requireSpiffeId,
        now: this.#options.now,
      });
      this.#sources.set(key, s);
    }
    return s;
  }

  /** True when some service uses mTLS. */
  get enabled(): boolean {
    return this.#sources.size > 0;
  }

  /** Every certificate source in use. */
  get sources(): readonly CertificateSource[] {
    return [...this.#sources.values()];
  }

  /**
   * The source a service uses: its own `tls` override (`false` = plaintext), else the mesh-wide
   * one. Services that `defaults.tls` covers use that. A service whose TLS a control plane decides
   * (`upstreamSecurity`) has none here: see `upstreamTlsFor`; one the control plane said nothing
   * about uses the `tls` section only (the bootstrap's `default` instance is not a fallback).
   */
  sourceFor(policy: ServicePolicy): CertificateSource | undefined {
    const sec = policy.upstreamSecurity;
    if (sec !== undefined && (!sec.fallback || this.meshSourceOrigin !== 'tls')) return undefined;
    const own = policy.extensions.tls as ServiceTlsSetting | undefined;
    if (own === false) return undefined;
    if (own) return this.#source(own);
    return this.meshSource;
  }

  /** The certificate-provider instance names clusters may use (the bootstrap's, plus `default` from `tls`). */
  get providerNames(): string[] {
    return [...this.#providers.keys()];
  }

  /** A certificate-provider instance by name. */
  provider(name: string): CertificateSource | undefined {
    return this.#providers.get(name);
  }

  /**
   * The TLS of the hop to `ep` when a control plane decides it (undefined: plaintext, or the
   * service is not governed by one: see `governs`).
   */
  upstreamTlsFor(rt: ServiceRuntime, ep: EndpointState | undefined): UpstreamTls | undefined {
    const sec = rt.policy.upstreamSecurity;
    if (sec === undefined || sec.fallback) return undefined;
    return ep === undefined ? sec.tls : upstreamTlsFor(sec, ep.endpoint);
  }

  /** Whether a control plane decides the service's TLS (an xDS cluster with a transport socket). */
  governs(rt: ServiceRuntime): boolean {
    const sec = rt.policy.upstreamSecurity;
    return sec !== undefined && !sec.fallback;
  }

  /**
   * The sources of an upstream TLS context: its identity and root instances. Throws
   * `MESHLET_ERR_TLS` when an instance is unknown or lacks what the context needs from it (the
   * connection fails; it never goes out in plaintext).
   */
  upstreamSources(
    t: UpstreamTls,
    service: string,
  ): { identity: CertificateSource | undefined; roots: CertificateSource } {
    const get = (name: string, part: 'identity' | 'roots') => {
      const s = this.#providers.get(name);
      if (!s || (part === 'identity' ? !s.hasIdentity : !s.hasRoots))
        throw new MeshError(
          ErrorCodes.TLS,
          `service "${service}" needs the ${part === 'identity' ? 'certificate and key' : 'CA certificates'} of certificate provider instance "${name}", which ${s ? 'has none' : 'the bootstrap does not define'}`,
          { service, instance: name, reason: 'certificate_provider' },
        );
      return s;
    };
    return {
      identity: t.identityInstance === undefined ? undefined : get(t.identityInstance, 'identity'),
      roots: get(t.rootInstance, 'roots'),
    };
  }

  readonly #legacyConnect = createConnectProvider((rt) => this.sourceFor(rt.policy));

  /**
   * The `MeshDispatcherOptions.connect` provider: a control plane's per-endpoint decision for the
   * services it governs (mTLS with provider certificates and SAN matchers, or plaintext), the
   * mesh's `tls` for the rest.
   */
  readonly connect = (ep: EndpointState, rt: ServiceRuntime): Connector | undefined => {
    if (!this.governs(rt)) return this.#legacyConnect(ep, rt);
    const t = this.upstreamTlsFor(rt, ep);
    if (t === undefined) return undefined;
    let sources: { identity: CertificateSource | undefined; roots: CertificateSource };
    try {
      sources = this.upstreamSources(t, rt.name);
    } catch (err) {
      // Every connection of this pool fails with the coded error (never plaintext).
      return (_opts, callback) => callback(err as Error, null);
    }
    return createUpstreamTlsConnector({
      ...sources,
      sanMatchers: t.sanMatchers,
      service: rt.name,
      servername: t.sni,
      timeoutMs: rt.policy.connection.connectTimeoutMs,
    });
  };

  /** Calls `listener` after any source rotated. Returns an unsubscribe function. */
  onRotate(listener: (e: RotationEvent & { source: CertificateSource }) => void): () => void {
    const offs = this.sources.map((s) => s.on('rotate', (e) => listener({ ...e, source: s })));
    return () => {
      for (const off of offs) off();
    };
  }

  /** Starts watching and wires events, the snapshot section and close into `mesh`. */
  attach(mesh: Mesh): void {
    this.#mesh = mesh;
    for (const s of this.#sources.values()) {
      s.on('rotate', ({ previous, current }) =>
        mesh.events.emit('log', {
          level: 'info',
          scope: 'tls',
          message: `certificates in ${s.dir} rotated: serial ${previous.serialNumber} → ${current.serialNumber}, expires ${current.notAfter.toISOString()}`,
          data: { dir: s.dir, spiffeId: current.spiffeId, notAfter: current.notAfter.toISOString() },
        }),
      );
      s.on('reject', ({ error, current }) =>
        mesh.events.emit('log', {
          level: 'warn',
          scope: 'tls',
          message: `new certificates in ${s.dir} rejected, keeping serial ${current.serialNumber}: ${error.message}`,
          data: {
            dir: s.dir,
            reason: (error as { details?: { reason?: string } }).details?.reason,
            error: error.message,
          },
        }),
      );
      s.on('expiring', ({ expiresAt, remainingMs }) =>
        mesh.events.emit('log', {
          level: 'warn',
          scope: 'tls',
          message: `the certificate in ${s.dir} expires at ${expiresAt.toISOString()} (in ${Math.round(remainingMs / 1000)}s) and was not rotated yet`,
          data: { dir: s.dir, notAfter: expiresAt.toISOString(), remainingMs },
        }),
      );
      s.start();
    }
    mesh.addSnapshotSection('tls', () => this.snapshot());
    // The inbound side: the `authorization:` policies are the mesh's local policy source, and the
    // workload certificate's trust domain tells mesh peers (whose deadline headers count) apart.
    if (this.authorizer) mesh.onClose(addInboundPolicy(mesh, 'local', this.authorizer));
    const own = this.meshSource;
    if (own) {
      setTrustDomain(mesh, own.current.spiffeId);
      own.on('rotate', ({ current }) => setTrustDomain(mesh, current.spiffeId));
    }
    // The certificate-provider instances, by name, for everything that names one: inbound filter
    // chains (DownstreamTlsContext) and servers as well as clusters. One source per instance: the
    // bootstrap's, and the `tls:` directory as "default" when the bootstrap has none.
    for (const [name, provider] of this.#providers)
      mesh.onClose(setCertificateProvider(mesh, name, provider));
    mesh.onClose(() => this.close());
  }

  snapshot(): MeshTlsSnapshot {
    const a = this.authorizer;
    return {
      enabled: this.enabled,
      mode: a?.mode,
      sources: this.sources.map((s) => s.status()),
      authorization: a ? { policies: a.policies.length, ...a.stats } : undefined,
    };
  }

  close(): void {
    for (const s of this.#sources.values()) s.close();
  }
}

const byConfig = new WeakMap<ParsedMeshConfig, MeshTls>();

/** The `MeshTls` of a parsed config, created (and its certificates read) on first call. */
export function meshTlsFor(config: ParsedMeshConfig, options?: MeshTlsOptions): MeshTls {
  let m = byConfig.get(config);
  if (!m) {
    m = new MeshTls(config, options);
    byConfig.set(config, m);
  }
  return m;
}

/**
 * The TLS state of a mesh created by `createMesh` (certificate sources for gRPC channel
 * credentials, the authorizer for server integrations), or undefined when it has none.
 */
export function getMeshTls(mesh: Pick<Mesh, 'config'>): MeshTls | undefined {
  return byConfig.get(mesh.config);
}
