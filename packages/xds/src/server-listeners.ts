import {
  type InboundAuthorizer,
  type InboundChainRequest,
  type InboundConnection,
  type InboundDecision,
  type InboundFilterChain,
  type InboundListenerConfig,
  type InboundListenerHandle,
  type InboundListenerPort,
  type InboundTlsRequirement,
  type InboundUnavailable,
  listeningAddress,
  type PathMatching,
  type RouteRequest,
} from '@meshlet/core';
import type { XdsClient } from './client.js';
import {
  connectionIndependentChain,
  matchFilterChain,
  normalizeCidr,
  type ServerFilterChain,
  type ServerListenerUpdate,
  serverListenerName,
} from './inbound.js';
import { LDS_TYPE, RDS_TYPE } from './protos.js';
import type { RbacConfig } from './rbac.js';
import { matchRoute, selectVirtualHost } from './router.js';
import { DEFAULT_DRAIN_GRACE_MS } from './setup.js';
import type { RouteConfigUpdate, XdsRoute } from './types.js';

/** One RDS resource shared by the chains that name it. */
interface RdsEntry {
  value: RouteConfigUpdate | undefined;
  /** Why there is no value (does not exist, NACKed with no good version). */
  error: string | undefined;
  /** A value, an error or does-not-exist came: a listener waiting for it may be applied. */
  settled: boolean;
  refs: number;
  stop: () => void;
  readonly waiters: Set<() => void>;
}

/** What the listeners report (`snapshot().extensions.xds.inbound`). */
export interface InboundListenerDump {
  name: string;
  address: string;
  serving: boolean;
  reason: string | undefined;
  generation: number;
  chains: Array<{ name: string; tls: string; rbac: string[] }>;
}

/** What the listeners tell the mesh (logs: A36 asks for serving transitions at a visible level). */
export interface InboundListenersOptions {
  readonly drainGraceMs?: number;
  readonly onServingChange?: (e: { name: string; serving: boolean; reason: string | undefined }) => void;
}

const ALLOWED: InboundDecision = Object.freeze({ allowed: true, reason: 'allowed by the listener' });

/** A route request view of the admission step's request (one scratch object: matching is synchronous). */
class ScratchRequest implements RouteRequest {
  r: InboundChainRequest | undefined = undefined;
  path = '';
  get method(): string {
    return this.r?.method ?? 'GET';
  }
  header(name: string): string | undefined {
    const v = this.r?.headers?.[name];
    if (v === undefined) return undefined;
    return typeof v === 'string' ? v : v.join(',');
  }
}
const scratch = new ScratchRequest();

function sameHost(a: string, b: string): boolean {
  if (a === b) return true;
  try {
    return (
      normalizeCidr({ addressPrefix: a, prefixLen: 128 }, '').key ===
      normalizeCidr({ addressPrefix: b, prefixLen: 128 }, '').key
    );
  } catch {
    return false;
  }
}

const catchAlls = new WeakMap<RouteConfigUpdate, XdsRoute | null>();

/**
 * The route of a configuration that takes every request without looking at it (a single virtual
 * host `*`, a single non-forwarding route on prefix `/` without headers or fraction), if it is one.
 */
function catchAll(rc: RouteConfigUpdate): XdsRoute | undefined {
  let r = catchAlls.get(rc);
  if (r === undefined) {
    const vh = rc.virtualHosts.length === 1 ? rc.virtualHosts[0] : undefined;
    const route =
      vh?.domains.length === 1 && vh.domains[0] === '*' && vh.routes.length === 1 ? vh.routes[0] : undefined;
    const m = route?.match;
    r =
      route !== undefined &&
      m !== undefined &&
      route.action === 'nonForwarding' &&
      m.pathKind === 'prefix' &&
      m.path === '/' &&
      m.headers.length === 0 &&
      m.fractionPpm === undefined
        ? route
        : null;
    catchAlls.set(rc, r);
  }
  return r ?? undefined;
}

/** One filter chain of a listener version, as the admission step uses it. */
class Chain implements InboundFilterChain {
  readonly name: string;
  readonly tls: InboundTlsRequirement | undefined;
  readonly authorizer: InboundAuthorizer | undefined;
  readonly #spec: ServerFilterChain;
  readonly #rds: (name: string) => RdsEntry | undefined;
  readonly #listener: string;

  constructor(spec: ServerFilterChain, listener: string, rds: (name: string) => RdsEntry | undefined) {
    this.#spec = spec;
    this.#rds = rds;
    this.#listener = listener;
    this.name = spec.name;
    this.tls = spec.tls;
    const rbac = spec.hcm.filters.filter((f) => f.kind === 'rbac') as Array<{
      name: string;
      rbac: RbacConfig;
    }>;
    this.authorizer = this.tls === undefined && rbac.length === 0 ? undefined : this.#authorizer(rbac);
  }

  #routes(): RouteConfigUpdate | InboundUnavailable {
    const h = this.#spec.hcm;
    if (h.routeConfig !== undefined) return h.routeConfig;
    const e = this.#rds(h.rdsName as string);
    if (e?.value !== undefined) return e.value;
    return {
      message: `the route configuration "${h.rdsName}" of the inbound listener "${this.#listener}" ${e?.error ?? 'is not known yet'}`,
    };
  }

  route(r: InboundChainRequest): InboundUnavailable | undefined {
    const rc = this.#routes();
    if ('message' in rc) return rc;
    // istiod's inbound route configuration: one virtual host `*` whose one route takes every path.
    const all = catchAll(rc);
    if (all !== undefined) {
      r.chainRoute = all;
      return undefined;
    }
    const vh = selectVirtualHost(rc.virtualHosts, r.host ?? '');
    if (vh === undefined)
      return { message: `no virtual host of "${rc.name}" takes the authority "${r.host ?? ''}"` };
    const path = (r.path ?? '/') + (r.query ?? '');
    scratch.r = r;
    scratch.path = path;
    try {
      let lower: string | undefined;
      for (const route of vh.routes) {
        if (!route.match.caseSensitive && lower === undefined) lower = path.toLowerCase();
        if (!matchRoute(route, scratch, path, lower)) continue;
        if (route.action !== 'nonForwarding')
          return {
            message: `the route "${route.name}" of "${rc.name}" takes no requests on a server (its action is not non_forwarding_action)`,
          };
        r.chainRoute = route;
        return undefined;
      }
    } finally {
      scratch.r = undefined;
    }
    return { message: `no route of "${rc.name}" matches ${r.method ?? ''} ${path}` };
  }

  /** The TLS requirement checked against the connection, then every RBAC filter (route overrides first). */
  #authorizer(filters: ReadonlyArray<{ name: string; rbac: RbacConfig }>): InboundAuthorizer {
    const tls = this.tls;
    const noTls: InboundDecision = Object.freeze({
      allowed: false,
      reason: `the filter chain "${this.name}" of "${this.#listener}" requires TLS; the connection is plaintext`,
      policy: this.#listener,
    });
    const noCert: InboundDecision = Object.freeze({
      allowed: false,
      reason: `the filter chain "${this.name}" of "${this.#listener}" requires mTLS; the connection has no verified client certificate`,
      policy: this.#listener,
    });
    const fn: InboundAuthorizer = (a) => {
      if (tls !== undefined) {
        if (!(a.tls ?? a.mtls)) return noTls;
        if (tls.requireClientCertificate && a.mtls !== true) return noCert;
      }
      const overrides = ((a as InboundChainRequest).chainRoute as XdsRoute | undefined)?.rbac;
      for (let i = 0; i < filters.length; i++) {
        const f = filters[i] as { name: string; rbac: RbacConfig };
        const ov = overrides?.[f.name];
        const az = ov === undefined ? f.rbac.authorizer : ov.authorizer;
        if (az !== undefined) {
          const d = az(a);
          if (!d.allowed) return d;
        }
      }
      return ALLOWED;
    };
    fn.pathMatchingMatters = (pm: PathMatching) => {
      for (const f of filters) if (f.rbac.authorizer?.pathMatchingMatters(pm)) return true;
      const rc = this.#routes();
      if ('message' in rc) return false;
      for (const vh of rc.virtualHosts)
        for (const route of vh.routes)
          for (const ov of Object.values(route.rbac ?? {}))
            if (ov.authorizer?.pathMatchingMatters(pm)) return true;
      return false;
    };
    return fn;
  }
}

/** One version of a listener, ready to serve. */
class Config implements InboundListenerConfig {
  readonly generation: number;
  readonly needsTransport: boolean;
  readonly update: ServerListenerUpdate;
  readonly chains: readonly InboundFilterChain[];
  readonly #chains: Map<ServerFilterChain, Chain>;

  constructor(update: ServerListenerUpdate, generation: number, rds: (name: string) => RdsEntry | undefined) {
    this.update = update;
    this.generation = generation;
    this.needsTransport = update.needsTransport;
    this.#chains = new Map();
    for (const c of [...update.chains, ...(update.defaultChain ? [update.defaultChain] : [])])
      this.#chains.set(c, new Chain(c, update.name, rds));
    this.chains = [...this.#chains.values()];
    const every = connectionIndependentChain(update);
    this.everyConnection = every === null || every === undefined ? undefined : this.#chains.get(every);
  }

  readonly everyConnection: InboundFilterChain | undefined;

  match(c: InboundConnection): InboundFilterChain | undefined {
    const spec = matchFilterChain(this.update, c);
    return spec === undefined ? undefined : this.#chains.get(spec);
  }
}

/** The listener of one listening address: watched from its first connection on, shared. */
class Handle implements InboundListenerHandle {
  readonly name: string;
  readonly address: string;
  readonly host: string;
  readonly port: number;
  config: Config | undefined = undefined;
  reason: string | undefined = 'not known yet';
  readonly #owner: XdsInboundListeners;
  readonly #listeners = new Set<() => void>();
  #pending: ServerListenerUpdate | undefined;
  #generation = 0;
  /** RDS names held by the current and pending versions. */
  #held = new Set<string>();
  #pendingHeld = new Set<string>();
  readonly stop: () => void;

  constructor(owner: XdsInboundListeners, client: XdsClient, name: string, host: string, port: number) {
    this.#owner = owner;
    this.name = name;
    this.host = host;
    this.port = port;
    this.address = listeningAddress(host, port);
    this.stop = client.watch<ServerListenerUpdate>(LDS_TYPE, name, {
      onUpdate: (l) => this.#onUpdate(l),
      onError: (err) => {
        // NACKed: the last good version keeps serving; with none, the server stays not serving.
        if (this.config === undefined) this.#setNotServing(`NACKed: ${err.message}`);
      },
      onDoesNotExist: () => {
        this.#dropPending();
        this.#release(this.#held);
        this.#held = new Set();
        this.#setNotServing('the listener does not exist');
      },
    });
  }

  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  #notify(): void {
    for (const l of [...this.#listeners]) {
      try {
        l();
      } catch {
        // a listener must not break the others
      }
    }
  }

  #setNotServing(reason: string): void {
    const was = this.config !== undefined || this.reason !== reason;
    this.config = undefined;
    this.reason = reason;
    if (was) {
      this.#owner.servingChanged(this, false, reason);
      this.#notify();
    }
  }

  #onUpdate(l: ServerListenerUpdate): void {
    if (l.kind !== 'server') return;
    // A36: the Listener's address must be the listening address, else not serving.
    if (l.address === undefined || l.address.port !== this.port || !sameHost(l.address.host, this.host)) {
      this.#dropPending();
      this.#release(this.#held);
      this.#held = new Set();
      this.#setNotServing(
        `its address (${l.address ? listeningAddress(l.address.host, l.address.port) : 'none'}) is not the listening address ${this.address}`,
      );
      return;
    }
    this.#dropPending();
    this.#pending = l;
    this.#pendingHeld = new Set(l.rdsNames);
    for (const n of this.#pendingHeld) this.#owner.acquire(n);
    this.#tryApply();
  }

  #dropPending(): void {
    if (this.#pending === undefined) return;
    this.#pending = undefined;
    this.#release(this.#pendingHeld);
    this.#pendingHeld = new Set();
  }

  #release(names: Set<string>): void {
    for (const n of names) this.#owner.release(n);
  }

  /** A36: an update applies once its route configurations were attempted (a value, an error, does not exist). */
  #tryApply(): void {
    const l = this.#pending;
    if (l === undefined) return;
    for (const n of l.rdsNames) {
      const e = this.#owner.rds(n);
      if (e !== undefined && !e.settled) {
        e.waiters.add(() => this.#tryApply());
        return;
      }
    }
    this.#pending = undefined;
    this.#release(this.#held);
    this.#held = this.#pendingHeld;
    this.#pendingHeld = new Set();
    const wasServing = this.config !== undefined;
    this.config = new Config(l, ++this.#generation, (n) => this.#owner.rds(n));
    this.reason = undefined;
    if (!wasServing) this.#owner.servingChanged(this, true, undefined);
    this.#notify();
  }

  dump(): InboundListenerDump {
    const c = this.config;
    const chains =
      c === undefined ? [] : [...c.update.chains, ...(c.update.defaultChain ? [c.update.defaultChain] : [])];
    return {
      name: this.name,
      address: this.address,
      serving: c !== undefined,
      reason: this.reason,
      generation: c?.generation ?? 0,
      chains: chains.map((ch) => ({
        name: ch.name,
        tls:
          ch.tls === undefined
            ? 'plaintext'
            : ch.tls.requireClientCertificate
              ? `mTLS (${ch.tls.certificateProvider})`
              : `TLS (${ch.tls.certificateProvider})`,
        rbac: ch.hcm.filters
          .filter((f) => f.kind === 'rbac')
          .map((f) => `${f.name}: ${f.rbac?.action ?? 'none'} ${f.rbac?.policies.length ?? 0} policies`),
      })),
    };
  }
}

/**
 * The mesh's inbound listeners from the control plane (gRFC A36), one per listening address,
 * named by the bootstrap's `server_listener_resource_name_template`; their route configurations
 * (RDS) are watched once each, however many chains name them.
 */
export class XdsInboundListeners implements InboundListenerPort {
  readonly drainGraceMs: number;
  readonly #client: XdsClient;
  readonly #template: string;
  readonly #handles = new Map<string, Handle>();
  readonly #rds = new Map<string, RdsEntry>();
  readonly #onServingChange: InboundListenersOptions['onServingChange'];

  constructor(client: XdsClient, template: string, options: InboundListenersOptions = {}) {
    this.#client = client;
    this.#template = template;
    this.drainGraceMs = options.drainGraceMs ?? DEFAULT_DRAIN_GRACE_MS;
    this.#onServingChange = options.onServingChange;
  }

  listener(host: string, port: number): InboundListenerHandle {
    const address = listeningAddress(host, port);
    let h = this.#handles.get(address);
    if (h === undefined) {
      h = new Handle(this, this.#client, serverListenerName(this.#template, address), host, port);
      this.#handles.set(address, h);
    }
    return h;
  }

  /** @internal */
  servingChanged(h: Handle, serving: boolean, reason: string | undefined): void {
    this.#onServingChange?.({ name: h.name, serving, reason });
  }

  /** @internal The RDS entry of `name`, if watched. */
  rds(name: string): RdsEntry | undefined {
    return this.#rds.get(name);
  }

  /** @internal Watches `name` (counted). */
  acquire(name: string): void {
    let e = this.#rds.get(name);
    if (e !== undefined) {
      e.refs++;
      return;
    }
    const entry: RdsEntry = {
      value: undefined,
      error: undefined,
      settled: false,
      refs: 1,
      stop: () => {},
      waiters: new Set(),
    };
    e = entry;
    this.#rds.set(name, entry);
    const settle = () => {
      entry.settled = true;
      const ws = [...entry.waiters];
      entry.waiters.clear();
      for (const w of ws) w();
    };
    entry.stop = this.#client.watch<RouteConfigUpdate>(RDS_TYPE, name, {
      onUpdate: (rc) => {
        entry.value = rc;
        entry.error = undefined;
        settle();
      },
      onError: (err) => {
        if (entry.value === undefined) entry.error = `was NACKed: ${err.message}`;
        settle();
      },
      onDoesNotExist: () => {
        entry.value = undefined;
        entry.error = 'does not exist';
        settle();
      },
    });
  }

  /** @internal Releases one hold on `name`; the last one stops watching it. */
  release(name: string): void {
    const e = this.#rds.get(name);
    if (e === undefined || --e.refs > 0) return;
    this.#rds.delete(name);
    e.stop();
  }

  dump(): InboundListenerDump[] {
    return [...this.#handles.values()].map((h) => h.dump());
  }

  close(): void {
    for (const h of this.#handles.values()) h.stop();
    this.#handles.clear();
    for (const e of this.#rds.values()) e.stop();
    this.#rds.clear();
  }
}
