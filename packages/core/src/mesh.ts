import { performance } from 'node:perf_hooks';
import type { ParsedMeshConfig, ServiceConfig, ServicePolicy } from './config.js';
import type { DiscoverySource } from './discovery/types.js';
import type { EndpointState } from './endpoint-state.js';
import { ErrorCodes, MeshError } from './errors.js';
import { MeshEvents } from './events.js';
import { processEventLoopLag } from './load/overload.js';
import { attachLogger, consoleLogger, type LogRateLimit, type MeshLogger } from './logger.js';
import { type CallHook, type CallListener, type EndpointRemovedListener, RuntimeHooks } from './observer.js';
import { discoverySources } from './registry.js';
import type { Router } from './router.js';
import { ServiceRuntime, type ServiceRuntimeOptions } from './service.js';

/**
 * A resolver for names the config does not declare (Kubernetes service names, xDS listeners).
 * Resolvers are asked in the order they were added; the first that claims a host owns it.
 */
export interface NameResolver {
  readonly name: string;
  /**
   * Claims `host` (and `port`, when the URL had one) or returns undefined. Called once per new
   * authority, never per request.
   */
  resolve(host: string, port: number | undefined): ResolvedService | undefined;
  /**
   * Claims `host` (and `port`) for per-request routing (see router.ts) or returns undefined. Asked
   * before `resolve()`, once per new authority; a router's targets come from `ensureService()`.
   */
  router?(host: string, port: number | undefined): Router | undefined;
  /**
   * Called when the mesh drops a router of this resolver that carried no request for
   * `idleServiceTimeout`: stop its watches (and set its `released`). Resolvers without it keep
   * their routers for the mesh's life.
   */
  releaseRouter?(router: Router): void;
  /** Called when the mesh closes. */
  close?(): Promise<void> | void;
}

/**
 * How many "not a mesh service" answers each authority cache remembers (oldest forgotten first):
 * a client spraying 100,000 host names leaves at most this many entries, not one per name.
 */
export const MAX_UNKNOWN_AUTHORITIES = 10_000;

/** A runtime or router a resolver created for an undeclared name: closed when idle. */
interface OnDemand {
  readonly runtime: ServiceRuntime | undefined;
  readonly router: Router | undefined;
  readonly resolver: NameResolver | undefined;
  /** Cache keys (authorities) that point at it. */
  readonly authorities: Set<string>;
  /** Attempts and active requests (runtime) or `uses` (router) at the last sweep. */
  usage: number;
  /** When `usage` last changed (mesh clock). */
  since: number;
  /** Holders that keep it open whatever its use (a gRPC channel). */
  holds: number;
}

export interface ResolvedService {
  /** A unique service key (e.g. `reviews.default.svc.cluster.local:8080`). Same key, same runtime. */
  readonly key: string;
  /** Policy for the service; the mesh defaults when omitted. */
  readonly policy?: ServicePolicy | undefined;
  /** The discovery type reported in snapshots. */
  readonly discoveryType: string;
  /** Creates the source that feeds the service. Called once per key. */
  createSource(): DiscoverySource;
}

export interface MeshOptions {
  /** Time source in ms (default `performance.now`); tests inject a fake clock. */
  now?: () => number;
  /**
   * Where the mesh logs discovery failures, xDS NACKs, certificate problems, breaker transitions,
   * ejections and panic mode: a pino logger (or anything with pino's `debug`/`info`/`warn`/`error`
   * taking `(fields, message)`). Default: `consoleLogger()` (info and above); `false`: nothing.
   */
  logger?: MeshLogger | false;
  /**
   * At most `lines` lines per message kind (one event type of one service) per `intervalMs`, the
   * rest summarized (default 10 per minute); `false`: no limit.
   */
  logRateLimit?: LogRateLimit | false;
}

export interface EndpointSnapshot {
  id: string;
  /** The instance's name when discovery knows it (`Endpoint.name`: the pod, the xDS hostname). */
  name?: string | undefined;
  address: string;
  port: number;
  weight: number;
  priority: number;
  locality: { region: string; zone: string; subZone: string };
  health: string;
  activeHealth: string;
  /** False while a transport's connection to it fails (a gRPC subchannel in TRANSIENT_FAILURE). */
  reachable: boolean;
  ejected: boolean;
  active: number;
  ewmaMs: number;
  attempts: number;
  failures: number;
  metadata: Record<string, string>;
  /**
   * What the endpoint last reported about its load (ORCA): the utilization weights use
   * (`application_utilization`, else `cpu_utilization`), its rps and eps, the
   * client_side_weighted_round_robin weight, and how long ago. Absent when it never reported.
   */
  load?: { utilization: number; rps: number; eps: number; weight: number; ageMs: number } | undefined;
  /** Its adaptive concurrency limit and attempts in flight. Absent without a limiter. */
  concurrency?:
    | {
        limit: number;
        inFlight: number;
        minRttMs: number | null;
        refused: number;
        /** Latency samples dropped as mostly the client's own event-loop stall. */
        discarded: number;
      }
    | undefined;
  /** Milliseconds it is still avoided for (Retry-After penalty, e.g. it shed load); 0: none. */
  penaltyMs: number;
}

export interface ServiceSnapshot {
  name: string;
  lb: string;
  panic: boolean;
  discovery: {
    type: string;
    hasData: boolean;
    version: string | undefined;
    lastUpdate: string | undefined;
    lastError: string | undefined;
    lastErrorAt: string | undefined;
    updates: number;
    errors: number;
  };
  retryBudget: { requests: number; retries: number; exhausted: number };
  /** Breaker state and counts, threshold counters, ejections, active health check type. */
  resilience: Record<string, unknown>;
  endpoints: EndpointSnapshot[];
}

export interface MeshSnapshot {
  time: string;
  ready: boolean;
  config: { source: string | undefined; services: string[] };
  services: Record<string, ServiceSnapshot>;
  /** Sections contributed by extensions (xds, kubernetes, tls, …). */
  extensions: Record<string, unknown>;
}

type CloseHook = () => Promise<void> | void;

/**
 * One per process (or per independent client): owns the services, their discovery sources and
 * runtimes, the resolvers, and the event channel telemetry subscribes to.
 *
 * Lifecycle: construct → `ready()` → … → `close()`, which stops every source, timer and
 * transport hook the mesh started.
 */
export class Mesh {
  readonly config: ParsedMeshConfig;
  readonly events = new MeshEvents();
  readonly now: () => number;
  /** Shared with every service runtime: the outbound call hook and the endpoint watchers. */
  readonly hooks = new RuntimeHooks();

  readonly #services = new Map<string, ServiceRuntime>();
  readonly #sources = new Map<string, DiscoverySource>();
  readonly #resolvers: NameResolver[] = [];
  /** Cache of host[:port] → runtime. */
  readonly #resolved = new Map<string, ServiceRuntime>();
  /** host[:port] that are not mesh services (bounded: oldest forgotten first). */
  readonly #notResolved = new Set<string>();
  /** Cache of host[:port] → router. */
  readonly #routers = new Map<string, Router>();
  /** host[:port] that are not routed (bounded). */
  readonly #notRouted = new Set<string>();
  /** Runtimes created by `resolve()` for undeclared names, by service key. */
  readonly #onDemand = new Map<string, OnDemand>();
  /** Routers created by resolvers, each with its resolver. */
  readonly #onDemandRouters = new Map<Router, OnDemand>();
  #sweeper: NodeJS.Timeout | undefined;
  readonly #closeHooks: CloseHook[] = [];
  readonly #snapshotContributors = new Map<string, () => unknown>();
  readonly #readyGates: Array<Promise<unknown>> = [];
  #ready = false;
  #closed = false;
  #readyPromise: Promise<void> | undefined;
  #detachLogger: (() => void) | undefined;
  /** What every service runtime of this mesh is created with. */
  readonly #runtimeOptions: ServiceRuntimeOptions;

  constructor(config: ParsedMeshConfig, options: MeshOptions = {}) {
    this.config = config;
    // Bound once: the same clock as `() => performance.now()`, one call less per read (two reads
    // per request; callgrind: ~25 instructions each on Node 20, docs/benchmarks.md).
    this.now = options.now ?? performance.now.bind(performance);
    this.#runtimeOptions = {
      local: config.local,
      hooks: this.hooks,
      // The process' heartbeat measures stalls in performance.now() time: only for that clock.
      localStalls: options.now === undefined ? processEventLoopLag() : undefined,
    };
    if (options.logger !== false)
      this.#detachLogger = attachLogger(this.events, options.logger ?? consoleLogger(), options.logRateLimit);
    for (const svc of Object.values(config.services)) this.#startService(svc);
  }

  #startService(svc: ServiceConfig): void {
    const runtime = new ServiceRuntime(
      svc.name,
      svc,
      svc.discovery.type,
      this.events,
      this.now,
      this.#runtimeOptions,
    );
    this.#services.set(svc.name, runtime);
    const factory = discoverySources.get(svc.discovery.type);
    if (!factory)
      throw new MeshError(ErrorCodes.CONFIG, `discovery type "${svc.discovery.type}" is not registered`);
    const source = factory.create(svc.discovery.config, { service: svc.name, baseDir: this.config.baseDir });
    this.#attach(runtime, source);
  }

  #attach(runtime: ServiceRuntime, source: DiscoverySource): void {
    this.#sources.set(runtime.name, source);
    source.start({
      onUpdate: (u) => runtime.applyUpdate(u),
      onError: (e) => runtime.applyError(e),
    });
  }

  /** The runtime of a declared or already-resolved service. */
  service(name: string): ServiceRuntime | undefined {
    return this.#services.get(name);
  }

  services(): ServiceRuntime[] {
    return [...this.#services.values()];
  }

  /**
   * Maps a request authority to a service: a declared `host:port`, then a declared `host`, then
   * each resolver in turn. Returns undefined for hosts the mesh does not own (passthrough).
   * Results are cached per authority.
   */
  resolve(host: string, port?: number): ServiceRuntime | undefined {
    const key = port === undefined ? host : `${host}:${port}`;
    const cached = this.#resolved.get(key);
    if (cached !== undefined) return cached;
    if (this.#closed || this.#notResolved.has(key)) return undefined;
    let runtime = (port !== undefined ? this.#services.get(key) : undefined) ?? this.#services.get(host);
    if (!runtime) {
      for (const r of this.#resolvers) {
        const spec = r.resolve(host, port);
        if (!spec) continue;
        runtime = this.#services.get(spec.key);
        if (!runtime) {
          runtime = new ServiceRuntime(
            spec.key,
            spec.policy ?? this.config.defaults,
            spec.discoveryType,
            this.events,
            this.now,
            this.#runtimeOptions,
          );
          this.#services.set(spec.key, runtime);
          this.#attach(runtime, spec.createSource());
          this.#onDemand.set(spec.key, this.#track(runtime, undefined, undefined));
        }
        this.#onDemand.get(spec.key)?.authorities.add(key);
        break;
      }
    }
    if (runtime) this.#resolved.set(key, runtime);
    else remember(this.#notResolved, key);
    return runtime;
  }

  #track(
    runtime: ServiceRuntime | undefined,
    router: Router | undefined,
    resolver: NameResolver | undefined,
  ): OnDemand {
    if (this.#sweeper === undefined && this.config.idleServiceTimeoutMs > 0) {
      const period = Math.min(60_000, Math.max(1_000, this.config.idleServiceTimeoutMs / 4));
      this.#sweeper = setInterval((self: Mesh) => self.sweepIdle(), period, this);
      this.#sweeper.unref();
    }
    return { runtime, router, resolver, authorities: new Set(), usage: 0, since: this.now(), holds: 0 };
  }

  /**
   * Keeps an on-demand runtime or router open while a long-lived holder (a gRPC channel) uses it,
   * whatever its traffic. Returns the release function (idempotent).
   */
  retain(target: ServiceRuntime | Router): () => void {
    const entry =
      target instanceof ServiceRuntime ? this.#onDemand.get(target.name) : this.#onDemandRouters.get(target);
    if (!entry || (entry.runtime !== undefined && entry.runtime !== target)) return () => {};
    entry.holds++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      entry.holds--;
      entry.since = this.now();
    };
  }

  /**
   * Closes the runtimes and routers created on demand (by resolvers, for undeclared names) that
   * carried no request for `idleServiceTimeout`: their discovery watches stop and their names are
   * forgotten; a later request resolves the name again. Runs on a timer; returns how many it closed.
   */
  sweepIdle(): number {
    const idle = this.config.idleServiceTimeoutMs;
    if (idle <= 0 || this.#closed) return 0;
    const now = this.now();
    let closed = 0;
    for (const [key, e] of this.#onDemand) {
      const rt = e.runtime as ServiceRuntime;
      let usage = 0;
      for (const st of rt.endpoints) usage += st.attempts + st.active;
      if (usage !== e.usage || e.holds > 0) {
        e.usage = usage;
        e.since = now;
        continue;
      }
      // Requests queued for a first answer are waiting on it: never close under them.
      const answered = rt.discovery.hasData || rt.discovery.errors > 0;
      if (!answered || now - e.since < idle) continue;
      this.#onDemand.delete(key);
      for (const a of e.authorities) if (this.#resolved.get(a) === rt) this.#resolved.delete(a);
      this.releaseService(key);
      closed++;
    }
    for (const [router, e] of this.#onDemandRouters) {
      const usage = router.uses;
      if (usage === undefined) continue; // a router that does not count its requests stays
      if (usage !== e.usage || e.holds > 0) {
        e.usage = usage;
        e.since = now;
        continue;
      }
      if (now - e.since < idle) continue;
      this.#onDemandRouters.delete(router);
      for (const a of e.authorities) if (this.#routers.get(a) === router) this.#routers.delete(a);
      e.resolver?.releaseRouter?.(router);
      closed++;
    }
    return closed;
  }

  /**
   * Closes the runtime of `key` and its discovery source and forgets it (a resolver that created
   * it with `ensureService()` and no longer needs it; idle on-demand services). Requests already
   * holding it fail with `MESHLET_ERR_CLOSED`; transports resolve the name again.
   */
  releaseService(key: string): void {
    const runtime = this.#services.get(key);
    if (!runtime || this.config.services[key] !== undefined) return;
    this.#services.delete(key);
    this.#onDemand.delete(key);
    for (const [a, rt] of this.#resolved) if (rt === runtime) this.#resolved.delete(a);
    const source = this.#sources.get(key);
    this.#sources.delete(key);
    try {
      Promise.resolve(source?.close()).catch(() => {});
    } catch {
      // a source that throws on close is gone all the same
    }
    runtime.close();
  }

  /**
   * The runtime of `spec.key`, created (with its discovery source) on first use. Routers use it for
   * services that no authority names directly (xDS clusters).
   */
  ensureService(spec: ResolvedService): ServiceRuntime {
    let runtime = this.#services.get(spec.key);
    if (runtime) return runtime;
    if (this.#closed) throw new MeshError(ErrorCodes.CLOSED, 'the mesh is closed');
    runtime = new ServiceRuntime(
      spec.key,
      spec.policy ?? this.config.defaults,
      spec.discoveryType,
      this.events,
      this.now,
      this.#runtimeOptions,
    );
    this.#services.set(spec.key, runtime);
    this.#attach(runtime, spec.createSource());
    return runtime;
  }

  /**
   * The router that claims an authority (asked of resolvers that have a `router` method, in order),
   * or undefined when requests to it go to one service (`resolve()`) or pass through. Declared
   * services win over routed names. Cached per authority.
   */
  router(host: string, port?: number): Router | undefined {
    const key = port === undefined ? host : `${host}:${port}`;
    const cached = this.#routers.get(key);
    if (cached !== undefined) return cached;
    if (this.#closed || this.#notRouted.has(key)) return undefined;
    let router: Router | undefined;
    const declared = this.config.services;
    if (declared[key] === undefined && declared[host] === undefined) {
      for (const r of this.#resolvers) {
        router = r.router?.(host, port);
        if (router) {
          let e = this.#onDemandRouters.get(router);
          if (!e) {
            e = this.#track(undefined, router, r);
            this.#onDemandRouters.set(router, e);
          }
          e.authorities.add(key);
          break;
        }
      }
    }
    if (router) this.#routers.set(key, router);
    else remember(this.#notRouted, key);
    return router;
  }

  /** Adds a resolver for undeclared names (Kubernetes, xDS). Clears the authority cache. */
  addResolver(resolver: NameResolver): void {
    this.#resolvers.push(resolver);
    this.#resolved.clear();
    this.#notResolved.clear();
    this.#routers.clear();
    this.#notRouted.clear();
    this.onClose(() => resolver.close?.());
  }

  /**
   * Installs the outbound call hook (client spans, trace-context propagation) that every transport's
   * calls report to — `@meshlet/telemetry` installs its tracing here. `undefined` removes it.
   */
  setCallHook(hook: CallHook | undefined): void {
    this.hooks.callHook = hook;
  }

  /**
   * Adds a listener of every outbound call and attempt, every transport's (`CallListener`: the
   * values of the `request` and `attempt` events, with no object made per call) —
   * `@meshlet/telemetry` records its metrics here. Returns a function that removes it.
   */
  addCallListener(listener: CallListener): () => void {
    return this.hooks.addCallListener(listener);
  }

  /**
   * Watches endpoints leaving any service of the mesh (discovery removed them, or the service
   * closed): transports free what they keep per endpoint. Returns a function that stops watching.
   */
  onEndpointRemoved(listener: EndpointRemovedListener): () => void {
    return this.hooks.onEndpointRemoved(listener);
  }

  /** Registers work to do on `close()` (run in reverse order of registration). */
  onClose(hook: CloseHook): void {
    this.#closeHooks.push(hook);
  }

  /** Adds a section to `snapshot().extensions`. */
  addSnapshotSection(name: string, contributor: () => unknown): void {
    this.#snapshotContributors.set(name, contributor);
  }

  /** Makes `ready()` also wait for `gate` (e.g. the first xDS response, certificates loaded). */
  addReadyGate(gate: Promise<unknown>): void {
    this.#readyGates.push(gate);
    this.#readyPromise = undefined;
  }

  /**
   * Resolves when every declared service's discovery has answered once (with endpoints or an
   * error) and every ready gate has settled, or after `readyTimeout`, whichever comes first.
   * Rejects only if the mesh is closed, or when a ready gate rejects.
   */
  ready(): Promise<void> {
    if (this.#closed) return Promise.reject(new MeshError(ErrorCodes.CLOSED, 'the mesh is closed'));
    this.#readyPromise ??= this.#waitReady();
    return this.#readyPromise;
  }

  async #waitReady(): Promise<void> {
    const all = Promise.all([
      ...[...this.#services.values()].map((s) => s.whenDiscovered()),
      ...this.#readyGates,
    ]);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.config.readyTimeoutMs);
      timer.unref();
    });
    try {
      await Promise.race([all.then(() => undefined), timeout]);
    } finally {
      clearTimeout(timer);
    }
    if (this.#closed) throw new MeshError(ErrorCodes.CLOSED, 'the mesh was closed before it became ready');
    this.#ready = true;
  }

  get isReady(): boolean {
    return this.#ready && !this.#closed;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** A JSON-serialisable dump of services, endpoints, health and config versions. */
  snapshot(): MeshSnapshot {
    const now = this.now();
    const services: Record<string, ServiceSnapshot> = {};
    for (const [name, s] of this.#services) {
      const d = s.discovery;
      services[name] = {
        name,
        lb: s.policy.lb.policy,
        panic: s.panic,
        discovery: {
          type: d.type,
          hasData: d.hasData,
          version: d.version,
          lastUpdate: d.lastUpdate === undefined ? undefined : new Date(d.lastUpdate).toISOString(),
          lastError: d.lastError,
          lastErrorAt: d.lastErrorAt === undefined ? undefined : new Date(d.lastErrorAt).toISOString(),
          updates: d.updates,
          errors: d.errors,
        },
        retryBudget: s.retryBudget.stats(now),
        resilience: s.resilience.snapshot(),
        endpoints: s.endpoints.map((st) => ({
          id: st.id,
          name: st.endpoint.name,
          address: st.endpoint.address,
          port: st.endpoint.port,
          weight: st.endpoint.weight,
          priority: st.endpoint.priority,
          locality: { ...st.endpoint.locality },
          health: st.endpoint.health,
          activeHealth: st.activeHealth,
          reachable: st.unreachable === 0,
          ejected: st.isEjected(now),
          active: st.active,
          ewmaMs: Math.round(st.ewmaMs * 1000) / 1000,
          attempts: st.attempts,
          failures: st.failures,
          metadata: { ...st.endpoint.metadata },
          load: loadSnapshot(st, now),
          concurrency:
            st.concurrency === undefined
              ? undefined
              : {
                  limit: st.concurrency.limit,
                  inFlight: st.concurrency.inFlight,
                  minRttMs: Number.isFinite(st.concurrency.minRttMs) ? st.concurrency.minRttMs : null,
                  refused: st.concurrency.refused,
                  discarded: st.concurrency.discarded,
                },
          penaltyMs: Math.max(0, Math.round(st.penaltyUntil - now)),
        })),
      };
    }
    const extensions: Record<string, unknown> = {};
    for (const [name, fn] of this.#snapshotContributors) {
      try {
        extensions[name] = fn();
      } catch (err) {
        extensions[name] = { error: (err as Error).message };
      }
    }
    return {
      time: new Date().toISOString(),
      ready: this.isReady,
      config: { source: this.config.source, services: Object.keys(this.config.services) },
      services,
      extensions,
    };
  }

  /** Stops every discovery source, resolver and hook. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#sweeper) clearInterval(this.#sweeper);
    const errors: unknown[] = [];
    for (const hook of [...this.#closeHooks].reverse()) {
      try {
        await hook();
      } catch (err) {
        errors.push(err);
      }
    }
    for (const source of this.#sources.values()) {
      try {
        await source.close();
      } catch (err) {
        errors.push(err);
      }
    }
    for (const s of this.#services.values()) s.close();
    this.#resolved.clear();
    this.#notResolved.clear();
    this.#routers.clear();
    this.#notRouted.clear();
    this.#onDemand.clear();
    this.#onDemandRouters.clear();
    this.#detachLogger?.();
    if (errors.length > 0) throw new AggregateError(errors, 'meshlet: errors while closing the mesh');
  }
}

/** Adds `key` to a bounded set of negative answers, forgetting the oldest past the bound. */
function remember(set: Set<string>, key: string): void {
  if (set.size >= MAX_UNKNOWN_AUTHORITIES) {
    const oldest = set.values().next().value;
    if (oldest !== undefined) set.delete(oldest);
  }
  set.add(key);
}

function loadSnapshot(st: EndpointState, now: number): EndpointSnapshot['load'] {
  const l = st.load;
  const r = l?.report;
  if (l === undefined || r === undefined) return undefined;
  return {
    utilization: r.applicationUtilization > 0 ? r.applicationUtilization : r.cpuUtilization,
    rps: r.rpsFractional,
    eps: r.eps,
    weight: Math.round(l.weight * 1000) / 1000,
    ageMs: Math.max(0, Math.round(now - l.reportedAt)),
  };
}
