import {
  type DiscoveryListener,
  type DiscoverySource,
  type DiscoveryUpdate,
  type Endpoint,
  ErrorCodes,
  FALLBACK_UPSTREAM_SECURITY,
  type Mesh,
  MeshError,
  type NameResolver,
  type ResolvedService,
  type Router,
  type ServicePolicy,
} from '@meshlet/core';
import type { XdsClient } from './client.js';
import type { LoadReporter } from './lrs.js';
import { CDS_TYPE, EDS_TYPE, LDS_TYPE, RDS_TYPE } from './protos.js';
import { type ClusterRef, ListenerRouter } from './router.js';
import type { ClusterUpdate, EndpointsUpdate, ListenerUpdate, RouteConfigUpdate } from './types.js';

export interface XdsResolverOptions {
  /** Reports the load of clusters naming `lrs_server` (default: none). */
  reporter?: LoadReporter | undefined;
  /**
   * Which request hosts xDS claims: `*` (every host that is not an IP literal or `localhost`),
   * exact names, or `*.suffix` patterns. Default `['*']`.
   */
  hosts?: readonly string[];
}

/**
 * The runtime's update for an EDS resource: its per-locality parts (`segments`, reused from one
 * version to the next while a locality's bytes do not change) and its flat list read lazily.
 */
export function discoveryUpdateOf(e: EndpointsUpdate, version: string | undefined): DiscoveryUpdate {
  return {
    get endpoints() {
      return e.endpoints;
    },
    segments: e.segments,
    version,
  };
}

/**
 * Translates a CDS cluster into the policy of its meshlet service (over the mesh defaults):
 * LB policy, identity (SAN), connect timeout, circuit-breaker thresholds and outlier detection
 * (off when the cluster has none, as in Envoy and gRPC).
 */
export function clusterPolicy(defaults: ServicePolicy, c: ClusterUpdate): ServicePolicy {
  const cb = c.circuitBreakers;
  const th = defaults.thresholds;
  const thresholds = cb
    ? Object.freeze({
        ...th,
        maxConnections: cb.maxConnections ?? th.maxConnections,
        maxPendingRequests: cb.maxPendingRequests ?? th.maxPendingRequests,
        maxRequests: cb.maxRequests ?? th.maxRequests,
        maxRetries: cb.maxRetries ?? th.maxRetries,
      })
    : th;
  return Object.freeze({
    ...defaults,
    thresholds,
    outlierDetection: c.outlierPolicy,
    lb: c.lb,
    identity: c.identity ?? defaults.identity,
    // The cluster decides its hops' TLS (gRFC A29); without a transport socket the mesh's fallback applies.
    upstreamSecurity: c.security ?? FALLBACK_UPSTREAM_SECURITY,
    connection:
      c.connectTimeoutMs === undefined
        ? defaults.connection
        : Object.freeze({ ...defaults.connection, connectTimeoutMs: Math.round(c.connectTimeoutMs) }),
    extensions: Object.freeze({
      ...defaults.extensions,
      xds: Object.freeze({
        cluster: c.name,
        kind: c.kind,
        circuitBreakers: c.circuitBreakers,
        outlierDetection: c.outlierDetection,
        tls: c.tls,
        sni: c.sni,
        lrs: c.lrs,
      }),
    }),
  });
}

function isIpLiteral(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}

/**
 * The source of one cluster's endpoints: watches the CDS resource, then its EDS resource (or the
 * inline endpoints of STATIC / LOGICAL_DNS clusters, or every child of an AGGREGATE cluster with
 * priorities shifted so that child N's levels come after child N-1's).
 */
class ClusterSource implements DiscoverySource {
  readonly #client: XdsClient;
  readonly #ref: ClusterRef;
  readonly #mesh: Mesh;
  #listener: DiscoveryListener | undefined;
  #stopCluster: (() => void) | undefined;
  #children: Array<{ stop: () => void }> = [];
  #closed = false;
  #lastCluster: ClusterUpdate | undefined;
  readonly #reporter: LoadReporter | undefined;
  #stopReporting: (() => void) | undefined;

  constructor(client: XdsClient, ref: ClusterRef, mesh: Mesh, reporter: LoadReporter | undefined) {
    this.#client = client;
    this.#ref = ref;
    this.#mesh = mesh;
    this.#reporter = reporter;
  }

  /** `lrs_server: self`: the cluster's load is reported to the ADS server while it says so. */
  #reportLoad(c: ClusterUpdate | undefined): void {
    if (c?.lrs && this.#reporter) {
      this.#stopReporting ??= this.#reporter.track(this.#ref, c.edsServiceName);
    } else {
      this.#stopReporting?.();
      this.#stopReporting = undefined;
    }
  }

  start(listener: DiscoveryListener): void {
    this.#listener = listener;
    this.#stopCluster = this.#client.watch<ClusterUpdate>(CDS_TYPE, this.#ref.name, {
      onUpdate: (c) => this.#onCluster(c),
      onError: (err) =>
        listener.onError(new MeshError(ErrorCodes.XDS_RESOURCE, err.message, { service: this.#ref.name })),
      onDoesNotExist: () => {
        this.#stopChildren();
        this.#reportLoad(undefined);
        this.#lastCluster = undefined;
        listener.onError(
          new MeshError(ErrorCodes.DISCOVERY, `xDS cluster "${this.#ref.name}" does not exist`, {
            service: this.#ref.name,
          }),
        );
        listener.onUpdate({ endpoints: [], version: undefined });
      },
    });
  }

  #stopChildren(): void {
    for (const c of this.#children) c.stop();
    this.#children = [];
  }

  #onCluster(c: ClusterUpdate): void {
    if (this.#closed) return;
    this.#reportLoad(c);
    const rt = this.#ref.runtime;
    const policy = clusterPolicy(this.#mesh.config.defaults, c);
    const prev = this.#lastCluster;
    this.#lastCluster = c;
    if (!prev || JSON.stringify(prev) !== JSON.stringify(c)) {
      // Keep the LbSelection object when unchanged so the runtime does not rebuild its balancer.
      rt.setPolicy(
        prev && JSON.stringify(prev.lb) === JSON.stringify(c.lb) ? { ...policy, lb: rt.policy.lb } : policy,
      );
    }
    const sameSource =
      prev !== undefined &&
      prev.kind === c.kind &&
      prev.edsServiceName === c.edsServiceName &&
      prev.children.join('\n') === c.children.join('\n') &&
      prev.kind !== 'static' &&
      prev.kind !== 'logical_dns';
    if (sameSource) return;
    this.#stopChildren();
    const listener = this.#listener as DiscoveryListener;
    if (c.kind === 'static' || c.kind === 'logical_dns') {
      this.#ref.drops = [];
      listener.onUpdate({ endpoints: c.endpoints ?? [], version: undefined });
    } else if (c.kind === 'eds') {
      const stop = this.#client.watch<EndpointsUpdate>(EDS_TYPE, c.edsServiceName ?? c.name, {
        onUpdate: (e) => {
          this.#ref.drops = e.dropOverloads;
          listener.onUpdate(discoveryUpdateOf(e, this.#client.versionOf(EDS_TYPE)));
        },
        onError: (err) =>
          listener.onError(new MeshError(ErrorCodes.XDS_RESOURCE, err.message, { service: c.name })),
        onDoesNotExist: () => {
          listener.onError(
            new MeshError(
              ErrorCodes.DISCOVERY,
              `xDS endpoints "${c.edsServiceName ?? c.name}" do not exist`,
              {
                service: c.name,
              },
            ),
          );
          listener.onUpdate({ endpoints: [] });
        },
      });
      this.#children.push({ stop });
    } else {
      this.#watchAggregate(c, listener);
    }
  }

  #watchAggregate(c: ClusterUpdate, listener: DiscoveryListener): void {
    const parts: Array<readonly Endpoint[] | undefined> = c.children.map(() => undefined);
    // The shifted copy of each endpoint is kept while its original lives, so that an unchanged
    // endpoint stays the same object from one update to the next (the runtime then matches it
    // without a lookup).
    const shifted = new WeakMap<Endpoint, Endpoint>();
    const publish = () => {
      const out: Endpoint[] = [];
      let offset = 0;
      for (const p of parts) {
        if (!p) continue;
        let max = -1;
        for (const ep of p) {
          if (offset === 0) out.push(ep);
          else {
            let s = shifted.get(ep);
            if (s === undefined || s.priority !== ep.priority + offset) {
              s = Object.freeze({ ...ep, priority: ep.priority + offset });
              shifted.set(ep, s);
            }
            out.push(s);
          }
          if (ep.priority > max) max = ep.priority;
        }
        offset += max + 1;
      }
      listener.onUpdate({ endpoints: out });
    };
    c.children.forEach((child, i) => {
      let stopEds: (() => void) | undefined;
      const stopCds = this.#client.watch<ClusterUpdate>(CDS_TYPE, child, {
        onUpdate: (cc) => {
          stopEds?.();
          stopEds = undefined;
          if (cc.kind === 'eds') {
            stopEds = this.#client.watch<EndpointsUpdate>(EDS_TYPE, cc.edsServiceName ?? cc.name, {
              onUpdate: (e) => {
                parts[i] = e.endpoints;
                publish();
              },
              onDoesNotExist: () => {
                parts[i] = [];
                publish();
              },
            });
          } else if (cc.kind === 'aggregate') {
            listener.onError(
              new MeshError(
                ErrorCodes.XDS_RESOURCE,
                `aggregate cluster "${c.name}": nested aggregate "${child}" is not supported`,
              ),
            );
          } else {
            parts[i] = cc.endpoints ?? [];
            publish();
          }
        },
        onDoesNotExist: () => {
          parts[i] = [];
          publish();
        },
      });
      this.#children.push({
        stop: () => {
          stopEds?.();
          stopCds();
        },
      });
    });
  }

  close(): void {
    this.#closed = true;
    this.#reportLoad(undefined);
    this.#stopChildren();
    this.#stopCluster?.();
  }
}

/**
 * Plugs xDS into a mesh: `http://NAME/` (and `NAME:PORT`) resolve through the LDS listener of that
 * name (gRPC's `xds:///NAME`), whose routes pick CDS clusters; each cluster is a meshlet service
 * (named after the cluster) fed by EDS.
 */
export class XdsResolver implements NameResolver {
  readonly name = 'xds';
  readonly client: XdsClient;
  readonly #mesh: Mesh;
  readonly #hosts: readonly string[];
  readonly #routers = new Map<string, { router: ListenerRouter; stop: () => void }>();
  readonly #clusters = new Map<string, ClusterRef>();
  /** Load reporting (LRS) for clusters that name `lrs_server`. */
  readonly reporter: LoadReporter | undefined;

  constructor(mesh: Mesh, client: XdsClient, options: XdsResolverOptions = {}) {
    this.#mesh = mesh;
    this.client = client;
    this.#hosts = options.hosts ?? ['*'];
    this.reporter = options.reporter;
  }

  /** Wakes routers waiting for a first answer when the control plane turns out unreachable. */
  onConnectivityChange(): void {
    if (this.client.unreachable) for (const { router } of this.#routers.values()) router.wake();
  }

  #claims(host: string): boolean {
    const h = host.toLowerCase();
    for (const p of this.#hosts) {
      if (p === '*') {
        if (!isIpLiteral(h) && h !== 'localhost') return true;
      } else if (p.startsWith('*.')) {
        if (h.endsWith(p.slice(1))) return true;
      } else if (p.toLowerCase() === h) {
        return true;
      }
    }
    return false;
  }

  resolve(): ResolvedService | undefined {
    return undefined;
  }

  router(host: string, port: number | undefined): Router | undefined {
    if (!this.#claims(host)) return undefined;
    const name = port === undefined ? host : `${host}:${port}`;
    const existing = this.#routers.get(name);
    if (existing) return existing.router;
    const router = new ListenerRouter(name, host, () =>
      this.client.unreachable
        ? new MeshError(
            ErrorCodes.UNKNOWN_SERVICE,
            `xDS listener "${name}" is not known and the control plane is unreachable (${this.client.lastError ?? 'no answer'})`,
            { service: name },
          )
        : undefined,
    );
    const stop = this.#watchListener(name, router);
    this.#routers.set(name, { router, stop });
    return router;
  }

  #cluster = (name: string): ClusterRef => {
    let ref = this.#clusters.get(name);
    if (ref) return ref;
    const partial: {
      name: string;
      drops: ClusterRef['drops'];
      dropped: ClusterRef['dropped'];
      runtime?: ClusterRef['runtime'];
    } = {
      name,
      drops: [],
      dropped: new Map(),
    };
    const holder = partial as ClusterRef;
    const runtime = this.#mesh.ensureService({
      key: name,
      discoveryType: 'xds',
      policy: this.#mesh.config.defaults,
      createSource: () => new ClusterSource(this.client, holder, this.#mesh, this.reporter),
    });
    (partial as { runtime: ClusterRef['runtime'] }).runtime = runtime;
    ref = holder;
    this.#clusters.set(name, ref);
    return ref;
  };

  #watchListener(name: string, router: ListenerRouter): () => void {
    let stopRds: (() => void) | undefined;
    let rdsName: string | undefined;
    let listener: ListenerUpdate | undefined;
    let routes: RouteConfigUpdate | undefined;
    const apply = () => {
      if (listener && routes) router.setRoutes(listener, routes, this.#cluster);
    };
    const stopLds = this.client.watch<ListenerUpdate>(LDS_TYPE, name, {
      onUpdate: (l) => {
        listener = l;
        if (l.rdsName !== undefined) {
          if (l.rdsName !== rdsName) {
            stopRds?.();
            routes = undefined;
            rdsName = l.rdsName;
            stopRds = this.client.watch<RouteConfigUpdate>(RDS_TYPE, l.rdsName, {
              onUpdate: (rc) => {
                routes = rc;
                apply();
              },
              onDoesNotExist: () =>
                router.setError(
                  new MeshError(
                    ErrorCodes.UNKNOWN_SERVICE,
                    `xDS route configuration "${rdsName}" does not exist`,
                    {
                      service: name,
                    },
                  ),
                ),
            });
          } else {
            apply();
          }
        } else {
          stopRds?.();
          stopRds = undefined;
          rdsName = undefined;
          routes = l.routeConfig;
          apply();
        }
      },
      onDoesNotExist: () => {
        stopRds?.();
        stopRds = undefined;
        rdsName = undefined;
        listener = undefined;
        routes = undefined;
        router.setError(
          new MeshError(ErrorCodes.UNKNOWN_SERVICE, `xDS listener "${name}" does not exist`, {
            service: name,
          }),
        );
      },
    });
    return () => {
      stopRds?.();
      stopLds();
    };
  }

  /**
   * The mesh found the router idle: unsubscribe its listener (and route configuration), and close
   * the clusters no other router sends to, so that names seen once (`hosts: ['*']` claims every
   * host) do not stay subscribed for the process's life.
   */
  releaseRouter(router: Router): void {
    const entry = this.#routers.get(router.name);
    if (!entry || entry.router !== router) return;
    this.#routers.delete(router.name);
    entry.stop();
    entry.router.released = true;
    const inUse = new Set<string>();
    for (const { router: r } of this.#routers.values()) for (const c of r.clusterNames()) inUse.add(c);
    for (const name of entry.router.clusterNames()) {
      if (inUse.has(name) || !this.#clusters.has(name)) continue;
      this.#clusters.delete(name);
      this.#mesh.releaseService(name);
    }
  }

  close(): void {
    for (const { stop } of this.#routers.values()) stop();
    this.#routers.clear();
    this.reporter?.close();
    this.client.close();
  }
}
