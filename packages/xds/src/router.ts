import {
  ErrorCodes,
  MeshError,
  murmur3,
  type RetryCondition,
  type RetryPolicy,
  type RouteRequest,
  type RouteResult,
  type Router,
  type RouteTarget,
  type ServicePolicy,
  type ServiceRuntime,
} from '@meshlet/core';
import type { SafeRegex } from './regex.js';
import type {
  DropOverload,
  FaultPolicy,
  HashPolicy,
  HeaderMatch,
  ListenerUpdate,
  RouteConfigUpdate,
  RouteRetry,
  VirtualHost,
  XdsRoute,
} from './types.js';

/** What a route table needs of a cluster: its runtime and its current drop_overloads. */
export interface ClusterRef {
  readonly name: string;
  readonly runtime: ServiceRuntime;
  /** EDS `drop_overloads` of the cluster (replaced on every EDS update). */
  drops: readonly DropOverload[];
  /** Requests dropped by category since the last load report (LRS), counted on the drop only. */
  readonly dropped: Map<string, number>;
}

interface CompiledCluster {
  readonly ref: ClusterRef;
  /** Upper bound of this cluster's share in [0, totalWeight). */
  readonly upTo: number;
  /** The base policy the merged policy was built from, and the merge (cached per base). */
  base: ServicePolicy | undefined;
  merged: ServicePolicy | undefined;
  /** A shared target for requests without hash or fault. */
  plain: RouteTarget | undefined;
}

interface CompiledRoute {
  readonly route: XdsRoute;
  readonly clusters: readonly CompiledCluster[];
  readonly fault: FaultPolicy | undefined;
}

/** The compiled form of one listener's route table for one authority. */
export interface RouteTable {
  readonly listener: string;
  readonly virtualHost: string;
  readonly routes: readonly CompiledRoute[];
}

const RETRY_ON: Record<string, RetryCondition[]> = {
  '5xx': ['5xx'],
  'gateway-error': ['gateway-error'],
  'connect-failure': ['connect-failure'],
  reset: ['reset'],
  'refused-stream': ['refused-stream'],
  'retriable-status-codes': ['retriable-status-codes'],
  // gRPC status conditions (Envoy's x-envoy-retry-grpc-on names): they match gRPC calls answered
  // with that status, never an HTTP call (as in Envoy, `unavailable` does not retry HTTP resets).
  cancelled: ['cancelled'],
  'deadline-exceeded': ['deadline-exceeded'],
  'resource-exhausted': ['resource-exhausted'],
  internal: ['internal'],
  unavailable: ['unavailable'],
};

/** gRPC `retry_on` conditions and their status codes (gRPC's xDS retry support, gRFC A44). */
const GRPC_RETRY_ON: Record<string, number> = {
  cancelled: 1,
  'deadline-exceeded': 4,
  'resource-exhausted': 8,
  internal: 13,
  unavailable: 14,
};

function retryPolicy(base: RetryPolicy, r: RouteRetry): RetryPolicy {
  const on = new Set<RetryCondition>();
  for (const c of r.retryOn) for (const m of RETRY_ON[c] ?? []) on.add(m);
  const grpcCodes: number[] = [];
  for (const c of r.retryOn) {
    const code = GRPC_RETRY_ON[c];
    if (code !== undefined && !grpcCodes.includes(code)) grpcCodes.push(code);
  }
  // A connection reset, or an HTTP 5xx, is what a gRPC client sees as UNAVAILABLE (grpc-js
  // reports a dropped connection so). `connect-failure` and `refused-stream` are not: a gRPC mesh
  // call reports an attempt that never left the client as a failure of its own, which those
  // conditions (kept in `on`) retry.
  if (!grpcCodes.includes(14) && (on.has('reset') || on.has('5xx'))) grpcCodes.push(14);
  const statusCodes =
    r.retriableStatusCodes.length > 0
      ? r.retriableStatusCodes
      : on.has('retriable-status-codes')
        ? base.statusCodes
        : [];
  return Object.freeze({
    ...base,
    maxRetries: Math.min(10, r.numRetries),
    on,
    // Not frozen: read on every HTTP answer, see core's DEFAULT_RETRY.
    statusCodes: [...statusCodes],
    backoffBaseMs: r.backoffBaseMs ?? base.backoffBaseMs,
    backoffMaxMs: r.backoffMaxMs ?? base.backoffMaxMs,
    grpcCodes: Object.freeze(grpcCodes),
  });
}

/** Merges a route's timeout / retry / max stream duration over a cluster's policy. */
export function routePolicy(
  base: ServicePolicy,
  route: XdsRoute,
  listenerMaxStreamMs: number | undefined,
): ServicePolicy {
  let timeoutMs = route.timeoutMs ?? base.timeoutMs;
  const msd = route.maxStreamDurationMs ?? listenerMaxStreamMs;
  if (msd !== undefined && msd > 0) timeoutMs = timeoutMs > 0 ? Math.min(timeoutMs, msd) : msd;
  const retry = route.retry ? retryPolicy(base.retry, route.retry) : base.retry;
  const perTryTimeoutMs = route.retry?.perTryTimeoutMs ?? base.perTryTimeoutMs;
  if (timeoutMs === base.timeoutMs && retry === base.retry && perTryTimeoutMs === base.perTryTimeoutMs)
    return base;
  return Object.freeze({
    ...base,
    timeoutMs: Math.round(timeoutMs),
    perTryTimeoutMs: Math.round(perTryTimeoutMs),
    retry,
  });
}

/** gRPC/Envoy virtual host selection: exact, then `*.suffix` / `prefix*` (longest), then `*`. */
export function selectVirtualHost(hosts: readonly VirtualHost[], authority: string): VirtualHost | undefined {
  const host = authority.toLowerCase();
  let best: VirtualHost | undefined;
  let bestRank = -1;
  let bestLen = -1;
  for (const vh of hosts) {
    for (const d of vh.domains) {
      let rank = -1;
      if (d === host) rank = 3;
      else if (d === '*') rank = 0;
      else if (d.startsWith('*') && host.endsWith(d.slice(1))) rank = 2;
      else if (d.endsWith('*') && host.startsWith(d.slice(0, -1))) rank = 1;
      if (rank > bestRank || (rank === bestRank && rank > 0 && d.length > bestLen)) {
        best = vh;
        bestRank = rank;
        bestLen = d.length;
      }
    }
  }
  return bestRank >= 0 ? best : undefined;
}

function headerMatches(m: HeaderMatch, req: RouteRequest): boolean {
  // gRPC never matches on `-bin` headers or the synthetic `:path`/`:method` pseudo headers other than these.
  let value: string | undefined;
  if (m.name === ':method') value = req.method;
  else if (m.name === ':path') value = req.path;
  else if (m.name.endsWith('-bin')) value = undefined;
  else value = req.header(m.name);
  let ok: boolean;
  if (m.kind === 'present') {
    ok = (value !== undefined) === m.present;
  } else if (value === undefined) {
    return false; // an absent header never matches, inverted or not (Envoy)
  } else {
    const v = m.ignoreCase ? value.toLowerCase() : value;
    switch (m.kind) {
      case 'exact':
        ok = v === m.value;
        break;
      case 'prefix':
        ok = v.startsWith(m.value);
        break;
      case 'suffix':
        ok = v.endsWith(m.value);
        break;
      case 'contains':
        ok = v.includes(m.value);
        break;
      case 'regex':
        ok = (m.regex as SafeRegex).test(v);
        break;
      case 'range': {
        const n = /^-?\d+$/.test(v) ? Number(v) : Number.NaN;
        const r = m.range as { start: number; end: number };
        ok = !Number.isNaN(n) && n >= r.start && n < r.end;
        break;
      }
    }
  }
  return m.invert ? !ok : ok;
}

/**
 * Whether `route` matches a request (path with its query, `lower` its lower-cased form when a
 * case-insensitive route needs it); servers match their inbound routes the same way (gRFC A36).
 */
export function matchRoute(
  route: XdsRoute,
  req: RouteRequest,
  path: string,
  lower: string | undefined,
): boolean {
  const m = route.match;
  const p = m.caseSensitive ? path : (lower as string);
  if (m.pathKind === 'prefix') {
    if (!p.startsWith(m.path)) return false;
  } else if (m.pathKind === 'path') {
    if (p !== m.path) return false;
  } else if (!(m.regex as SafeRegex).test(path)) {
    return false;
  }
  for (let i = 0; i < m.headers.length; i++)
    if (!headerMatches(m.headers[i] as HeaderMatch, req)) return false;
  if (m.fractionPpm !== undefined && Math.random() * 1_000_000 >= m.fractionPpm) return false;
  return true;
}

function requestHash(policies: readonly HashPolicy[], req: RouteRequest): number | undefined {
  let hash: number | undefined;
  for (const p of policies) {
    let v: string | undefined;
    if (p.kind === 'header') v = req.header(p.name);
    else if (p.kind === 'cookie') {
      const c = req.header('cookie');
      if (c) {
        for (const part of c.split(';')) {
          const eq = part.indexOf('=');
          if (eq > 0 && part.slice(0, eq).trim() === p.name) v = part.slice(eq + 1).trim();
        }
      }
    }
    if (v === undefined) continue;
    const h = murmur3(v);
    hash = hash === undefined ? h : (((hash << 1) | (hash >>> 31)) ^ h) >>> 0;
    if (p.terminal) break;
  }
  return hash;
}

/**
 * The route table of one xDS listener as a core `Router`: matches each request against the routes
 * of the virtual host selected for the authority, picks a weighted cluster, and returns its runtime
 * with the route's timeout/retry merged over the cluster's policy, the request hash of the route's
 * hash policy, and fault injection decisions.
 */
export class ListenerRouter implements Router {
  readonly name: string;
  /** Requests routed (the mesh closes a router idle for `idleServiceTimeout`). */
  uses = 0;
  /** Set when the resolver stopped watching this listener (idle): transports resolve again. */
  released = false;
  readonly #authority: string;
  #table: RouteTable | undefined;
  #error: MeshError | undefined;
  #listener: ListenerUpdate | undefined;
  #waiters: Array<() => void> = [];
  /** Returns a coded error when the control plane is unreachable and nothing is known yet. */
  readonly #unreachable: () => MeshError | undefined;

  constructor(name: string, authority: string, unreachable: () => MeshError | undefined) {
    this.name = name;
    this.#authority = authority;
    this.#unreachable = unreachable;
  }

  get table(): RouteTable | undefined {
    return this.#table;
  }

  /** Installs a new route table (compiled from the listener's route configuration). */
  setRoutes(listener: ListenerUpdate, rc: RouteConfigUpdate, cluster: (name: string) => ClusterRef): void {
    const vh = selectVirtualHost(rc.virtualHosts, this.#authority);
    if (!vh) {
      this.#table = undefined;
      this.setError(
        new MeshError(
          ErrorCodes.UNKNOWN_SERVICE,
          `xDS route configuration "${rc.name}" has no virtual host for "${this.#authority}"`,
          {
            service: this.name,
          },
        ),
      );
      return;
    }
    this.#listener = listener;
    const filterFault = listener.httpFilters.includes('fault');
    const routes: CompiledRoute[] = vh.routes.map((route) => {
      let acc = 0;
      const clusters: CompiledCluster[] = route.clusters
        .filter((c) => c.weight > 0)
        .map((c) => {
          acc += c.weight;
          return { ref: cluster(c.name), upTo: acc, base: undefined, merged: undefined, plain: undefined };
        });
      return { route, clusters, fault: filterFault ? (route.fault ?? listener.fault) : undefined };
    });
    this.#table = Object.freeze({
      listener: listener.name,
      virtualHost: vh.name,
      routes: Object.freeze(routes),
    });
    this.#error = undefined;
    this.#wake();
  }

  /** Makes every request fail with `error` (listener or route configuration does not exist). */
  setError(error: MeshError): void {
    this.#table = undefined;
    this.#error = error;
    this.#wake();
  }

  /** Wakes waiting requests (called when the control plane turns out unreachable). */
  wake(): void {
    this.#wake();
  }

  #wake(): void {
    const ws = this.#waiters;
    this.#waiters = [];
    for (const w of ws) w();
  }

  whenReady(): Promise<void> {
    if (this.#table || this.#error || this.#unreachable()) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** The clusters the current route table sends to. */
  clusterNames(): string[] {
    const out: string[] = [];
    for (const r of this.#table?.routes ?? []) for (const c of r.clusters) out.push(c.ref.name);
    return out;
  }

  route(req: RouteRequest): RouteResult {
    this.uses++;
    const table = this.#table;
    if (table === undefined) return this.#error ?? this.#unreachable();
    const path = req.path;
    let lower: string | undefined;
    const routes = table.routes;
    for (let i = 0; i < routes.length; i++) {
      const cr = routes[i] as CompiledRoute;
      const route = cr.route;
      if (!route.match.caseSensitive && lower === undefined) lower = path.toLowerCase();
      if (!matchRoute(route, req, path, lower)) continue;
      if (route.action !== 'cluster' || cr.clusters.length === 0) {
        return new MeshError(
          ErrorCodes.UNKNOWN_SERVICE,
          `route "${route.name}" of "${this.name}" does not forward requests`,
          {
            service: this.name,
          },
        );
      }
      let cc = cr.clusters[0] as CompiledCluster;
      if (cr.clusters.length > 1) {
        const r = Math.random() * route.totalWeight;
        for (let c = 0; c < cr.clusters.length; c++) {
          cc = cr.clusters[c] as CompiledCluster;
          if (r < cc.upTo) break;
        }
      }
      const ref = cc.ref;
      const drops = ref.drops;
      for (let d = 0; d < drops.length; d++) {
        const drop = drops[d] as DropOverload;
        if (Math.random() * 1_000_000 < drop.ppm) {
          ref.dropped.set(drop.category, (ref.dropped.get(drop.category) ?? 0) + 1);
          return new MeshError(
            ErrorCodes.OVERLOADED,
            `request to "${ref.name}" dropped by the control plane (drop_overload "${drop.category}")`,
            {
              service: ref.name,
            },
          );
        }
      }
      const rt = ref.runtime;
      if (cc.base !== rt.policy) {
        cc.base = rt.policy;
        cc.merged = routePolicy(rt.policy, route, this.#listener?.maxStreamDurationMs);
        cc.plain = Object.freeze({
          runtime: rt,
          policy: cc.merged,
          hash: undefined,
          delayMs: 0,
          abortStatus: 0,
        });
      }
      const hash = route.hashPolicy.length > 0 ? requestHash(route.hashPolicy, req) : undefined;
      const fault = cr.fault;
      let delayMs = 0;
      let abortStatus = 0;
      if (fault !== undefined) {
        if (fault.delayPpm > 0 && Math.random() * 1_000_000 < fault.delayPpm) delayMs = fault.delayMs;
        if (fault.abortPpm > 0 && Math.random() * 1_000_000 < fault.abortPpm)
          abortStatus = fault.abortStatus ?? (fault.abortGrpcStatus !== undefined ? 503 : 0);
      }
      if (hash === undefined && delayMs === 0 && abortStatus === 0) return cc.plain as RouteTarget;
      return { runtime: rt, policy: cc.merged, hash, delayMs, abortStatus };
    }
    return new MeshError(
      ErrorCodes.UNKNOWN_SERVICE,
      `no route of "${this.name}" matches ${req.method} ${path}`,
      {
        service: this.name,
      },
    );
  }
}
