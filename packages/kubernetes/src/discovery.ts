import {
  type EndpointSetFilter,
  isPlainObject,
  type Mesh,
  type NameResolver,
  type ResolvedService,
  type ServicePolicy,
} from '@meshlet/core';
import { type ClusterAccess, resolveAccess } from './auth.js';
import { KubeClient } from './client.js';
import {
  type KubernetesServiceOverride,
  type KubernetesSettings,
  registerKubernetesSection,
} from './config.js';
import { HINTS_KEY } from './slices.js';
import { type PortSelector, SliceSource } from './source.js';
import { type NotFoundCache, ServiceWatch, type WatchStats } from './watch.js';

registerKubernetesSection();

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export interface KubernetesDiscoveryOptions {
  readonly settings: KubernetesSettings;
  /** Access to the API server (default: from the settings and the environment). */
  readonly access?: ClusterAccess;
  readonly env?: NodeJS.ProcessEnv;
  /** The local zone when the settings give none (the mesh's `local.zone`). */
  readonly localZone?: string;
  /** The default namespace when neither the settings nor the service account give one. */
  readonly localNamespace?: string;
  /** Random source for backoff jitter (tests). */
  readonly random?: () => number;
}

/** Where a host name points. */
export interface ServiceRef {
  readonly service: string;
  readonly namespace: string;
}

/**
 * Kubernetes EndpointSlice discovery for a mesh: a `NameResolver` for cluster service names and
 * the owner of one shared watch per Service.
 */
export class KubernetesDiscovery implements NameResolver {
  readonly name = 'kubernetes';
  readonly settings: KubernetesSettings;
  readonly client: KubeClient;
  readonly namespace: string;
  readonly zone: string;
  readonly #mesh: Mesh | undefined;
  readonly #watches = new Map<string, { watch: ServiceWatch; refs: number }>();
  readonly #namespaces = new Set<string>();
  readonly #random: (() => number) | undefined;
  readonly #sources = new Map<string, SliceSource>();
  /** Services the API server said do not exist, until when (bounded, expired entries dropped). */
  readonly #notFound = new NotFoundNames();
  #closed = false;

  constructor(options: KubernetesDiscoveryOptions, mesh?: Mesh) {
    this.settings = options.settings;
    const access = options.access ?? resolveAccess(options.settings, options.env ?? process.env);
    this.client = new KubeClient({
      access,
      requestTimeoutMs: options.settings.requestTimeoutMs,
      maxRequestsPerSecond: options.settings.maxRequestsPerSecond,
      maxEventBytes: options.settings.maxEventBytes,
      notFoundRequestsPerSecond: options.settings.notFoundRequestsPerSecond,
    });
    this.namespace = options.settings.namespace ?? access.namespace ?? options.localNamespace ?? 'default';
    this.zone = options.settings.zone ?? options.localZone ?? '';
    this.#mesh = mesh;
    this.#random = options.random;
    this.#namespaces.add(this.namespace);
    for (const ns of options.settings.namespaces) this.#namespaces.add(ns);
    for (const key of Object.keys(options.settings.services)) {
      const ns = key.split('.')[1];
      if (ns !== undefined) this.#namespaces.add(ns);
    }
  }

  /** Namespaces whose `svc.namespace` short names are claimed. */
  get knownNamespaces(): ReadonlySet<string> {
    return this.#namespaces;
  }

  /**
   * Asks the API server for its namespaces, so that `svc.namespace` names work for all of them.
   * Best-effort: a Role-only service account gets 403 and keeps the configured namespaces.
   */
  async confirmNamespaces(timeoutMs = 2000): Promise<boolean> {
    try {
      const list = await this.client.get(
        '/api/v1/namespaces?limit=1000',
        AbortSignal.timeout(timeoutMs),
        'list namespaces',
      );
      if (isPlainObject(list) && Array.isArray(list.items)) {
        for (const item of list.items) {
          if (isPlainObject(item) && isPlainObject(item.metadata) && typeof item.metadata.name === 'string')
            this.#namespaces.add(item.metadata.name);
        }
        return true;
      }
    } catch {
      // Not allowed or not reachable: the configured namespaces stay the only ones.
    }
    return false;
  }

  /**
   * Parses a host name into a Service reference: `svc.ns.svc.<clusterDomain>`, `svc.ns.svc`,
   * `svc.ns` (when `ns` is a known namespace) and, in a cluster, `svc` (own namespace).
   */
  parseHost(host: string): ServiceRef | undefined {
    let h = host.toLowerCase();
    if (h.endsWith('.')) h = h.slice(0, -1);
    const full = `.svc.${this.settings.clusterDomain}`;
    let labels: string[];
    if (h.endsWith(full)) labels = h.slice(0, -full.length).split('.');
    else if (h.endsWith('.svc')) labels = h.slice(0, -4).split('.');
    else {
      labels = h.split('.');
      if (labels.length === 2 && !this.#namespaces.has(labels[1] as string)) return undefined;
      if (labels.length === 1 && !this.client.access.inCluster && this.settings.services[h] === undefined)
        return undefined;
    }
    if (labels.length === 1) labels.push(this.namespace);
    if (labels.length !== 2) return undefined;
    const [service, namespace] = labels as [string, string];
    if (!DNS_LABEL.test(service) || !DNS_LABEL.test(namespace)) return undefined;
    return { service, namespace };
  }

  #override(ref: ServiceRef): KubernetesServiceOverride | undefined {
    const s = this.settings.services;
    return (
      s[`${ref.service}.${ref.namespace}`] ?? (ref.namespace === this.namespace ? s[ref.service] : undefined)
    );
  }

  resolve(host: string, port: number | undefined): ResolvedService | undefined {
    if (this.#closed) return undefined;
    const ref = this.parseHost(host);
    if (!ref) return undefined;
    const override = this.#override(ref);
    let selector: PortSelector;
    let portKey: string;
    if (override?.port !== undefined) {
      selector =
        typeof override.port === 'number'
          ? { kind: 'target', port: override.port }
          : { kind: 'name', name: override.port };
      portKey = String(override.port);
    } else if (port !== undefined) {
      selector = { kind: 'service', port };
      portKey = String(port);
    } else {
      selector = { kind: 'default' };
      portKey = '';
    }
    const key = `${ref.service}.${ref.namespace}.svc.${this.settings.clusterDomain}${portKey ? `:${portKey}` : ''}`;
    const policy = this.#policy(override);
    const zoneAware = override?.zoneAware ?? this.settings.zoneAware;
    return {
      key,
      policy,
      discoveryType: 'kubernetes',
      createSource: () => {
        const source = this.createSource(ref, selector);
        this.#sources.set(key, source);
        source.onClose(() => {
          if (this.#sources.get(key) === source) this.#sources.delete(key);
        });
        const runtime = this.#mesh?.service(key);
        if (runtime && zoneAware && this.zone !== '') runtime.filter = zoneFilter(this.zone);
        return source;
      },
    };
  }

  #policy(override: KubernetesServiceOverride | undefined): ServicePolicy | undefined {
    if (override?.policy === undefined || this.#mesh === undefined) return undefined;
    return Object.freeze({ ...this.#mesh.config.defaults, ...override.policy });
  }

  /** A discovery source for one port of a Service, sharing the Service's watch. */
  createSource(ref: ServiceRef, port: PortSelector): SliceSource {
    const id = `${ref.namespace}/${ref.service}`;
    let entry = this.#watches.get(id);
    if (entry === undefined) {
      entry = {
        watch: new ServiceWatch(
          this.client,
          ref.namespace,
          ref.service,
          this.settings,
          this.#random,
          this.#notFound,
        ),
        refs: 0,
      };
      this.#watches.set(id, entry);
    }
    entry.refs++;
    const e = entry;
    let released = false;
    return new SliceSource(e.watch, port, () => {
      if (released) return;
      released = true;
      if (--e.refs === 0 && this.#watches.get(id) === e) {
        this.#watches.delete(id);
        void e.watch.close();
      }
    });
  }

  /** The shared watch of a service, if one runs. */
  watch(namespace: string, service: string): ServiceWatch | undefined {
    return this.#watches.get(`${namespace}/${service}`)?.watch;
  }

  /** The source behind a resolved service key. */
  source(key: string): SliceSource | undefined {
    return this.#sources.get(key);
  }

  /** The `kubernetes` section of `mesh.snapshot().extensions`. */
  snapshot(): Record<string, unknown> {
    const watches: Record<string, WatchStats & { subscribers: number }> = {};
    for (const [id, { watch }] of this.#watches)
      watches[id] = { ...watch.stats, subscribers: watch.subscriberCount };
    return {
      server: this.client.access.server,
      access: this.client.access.source,
      namespace: this.namespace,
      zone: this.zone,
      requests: { ...this.client.stats },
      notFound: this.#notFound.size,
      watches,
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const all = [...this.#watches.values()];
    this.#watches.clear();
    await Promise.all(all.map((e) => e.watch.close()));
    await this.client.close();
  }
}

/** The most not-found names remembered (oldest forgotten first). */
const MAX_NOT_FOUND = 10_000;

/** A `NotFoundCache` with a bound; an expired entry is dropped when read. */
class NotFoundNames implements NotFoundCache {
  readonly #until = new Map<string, number>();

  get size(): number {
    return this.#until.size;
  }

  get(id: string): number | undefined {
    const u = this.#until.get(id);
    if (u !== undefined && u <= Date.now()) {
      this.#until.delete(id);
      return undefined;
    }
    return u;
  }

  set(id: string, until: number): void {
    this.#until.delete(id);
    if (this.#until.size >= MAX_NOT_FOUND) {
      const oldest = this.#until.keys().next().value;
      if (oldest !== undefined) this.#until.delete(oldest);
    }
    this.#until.set(id, until);
  }

  delete(id: string): void {
    this.#until.delete(id);
  }
}

/**
 * Topology-aware routing as kube-proxy does it: when every usable endpoint carries
 * `hints.forZones`, keep those hinted for the local zone; otherwise (or when none is) keep all.
 */
export function zoneFilter(zone: string): EndpointSetFilter {
  return (usable) => {
    const local = [];
    for (const st of usable) {
      const hints = st.endpoint.metadata[HINTS_KEY];
      if (hints === undefined) return usable;
      if (hints.split(',').includes(zone)) local.push(st);
    }
    return local.length > 0 ? local : usable;
  };
}
