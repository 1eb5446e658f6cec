import {
  addInboundPolicy,
  type EndpointState,
  type Mesh,
  type ParsedMeshConfig,
  type ServicePolicy,
  type ServiceRuntime,
  setTrustDomain,
} from '@meshlet/core';
import { type Authorizer, createAuthorizer } from './authz/evaluate.js';
import type { AuthorizationConfig } from './authz/policy.js';
import { type Connector, createConnectProvider } from './client.js';
import type { ServiceTlsSetting, TlsSettings } from './config.js';
import { CertificateSource, type CertificateSourceStatus, type RotationEvent } from './source.js';

export interface MeshTlsOptions {
  /** Clock in ms since the epoch (tests). */
  now?: () => number;
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
  readonly #sources = new Map<string, CertificateSource>();
  readonly #options: MeshTlsOptions;
  #mesh: Mesh | undefined;

  constructor(config: ParsedMeshConfig, options: MeshTlsOptions = {}) {
    this.config = config;
    this.#options = options;
    const meshLevel = config.extensions.tls as TlsSettings | false | undefined;
    this.meshSource = meshLevel ? this.#source(meshLevel) : undefined;
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
   * one. Services that `defaults.tls` covers use that.
   */
  sourceFor(policy: ServicePolicy): CertificateSource | undefined {
    const own = policy.extensions.tls as ServiceTlsSetting | undefined;
    if (own === false) return undefined;
    if (own) return this.#source(own);
    return this.meshSource;
  }

  /** The `MeshDispatcherOptions.connect` provider. */
  readonly connect: (ep: EndpointState, rt: ServiceRuntime) => Connector | undefined = createConnectProvider(
    (rt) => this.sourceFor(rt.policy),
  );

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
