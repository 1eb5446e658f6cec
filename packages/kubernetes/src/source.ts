import {
  type DiscoveryListener,
  type DiscoverySource,
  type Endpoint,
  ErrorCodes,
  MeshError,
  sameEndpoint,
} from '@meshlet/core';
import type { ParsedSlice } from './slices.js';
import { sliceEndpoints } from './slices.js';
import type { ServiceWatch, WatchState, WatchSubscriber } from './watch.js';

/** Which port of the service a source routes to. */
export type PortSelector =
  /** The port the URL named: mapped through the Service's ports to the slices' port. */
  | { readonly kind: 'service'; readonly port: number }
  /** A slice port by name (a per-service override). */
  | { readonly kind: 'name'; readonly name: string }
  /** A fixed target port number (a per-service override). */
  | { readonly kind: 'target'; readonly port: number }
  /** No port in the URL: the Service's only port, else its port named `http`, else port 80. */
  | { readonly kind: 'default' };

/** Counters of one source (tests and the snapshot). */
export interface SourceStats {
  updates: number;
  added: number;
  removed: number;
  replaced: number;
}

interface Resolved {
  /** The slice port name to use, or undefined when `fixed` applies. */
  name: string | undefined;
  fixed: number | undefined;
  /** An explanation when the port cannot be mapped. */
  problem: string | undefined;
}

interface CacheEntry {
  slice: ParsedSlice;
  portKey: string;
  endpoints: Endpoint[];
}

/**
 * The discovery source of one `service:port` authority: subscribes to the shared watch of the
 * service and turns its slices into the endpoint set of one port. It publishes only real changes
 * (a relist that finds what was already known publishes nothing), and a pod that took over the IP
 * of another (a new `targetRef`) is published as a removal then an addition, so that no state of
 * the old pod (load estimates, ejection, connections) carries over to the new one.
 */
export class SliceSource implements DiscoverySource, WatchSubscriber {
  readonly #watch: ServiceWatch;
  readonly #port: PortSelector;
  readonly #release: () => void;
  #onClose: Array<() => void> = [];
  #listener: DiscoveryListener | undefined;
  #cache = new Map<string, CacheEntry>();
  #last: Map<string, Endpoint> | undefined;
  #lastProblem: string | undefined;
  /** Slices (by object: a new version is a new object) whose dropped entries were reported. */
  #reported = new WeakSet<ParsedSlice>();
  readonly stats: SourceStats = { updates: 0, added: 0, removed: 0, replaced: 0 };

  constructor(watch: ServiceWatch, port: PortSelector, release: () => void) {
    this.#watch = watch;
    this.#port = port;
    this.#release = release;
  }

  start(listener: DiscoveryListener): void {
    this.#listener = listener;
    this.#watch.subscribe(this);
  }

  #resolvePort(state: WatchState): Resolved {
    const sel = this.#port;
    if (sel.kind === 'name') return { name: sel.name, fixed: undefined, problem: undefined };
    if (sel.kind === 'target') return { name: undefined, fixed: sel.port, problem: undefined };
    const ports = state.servicePorts ?? [];
    const svc = `${this.#watch.namespace}/${this.#watch.service}`;
    let sp = undefined as (typeof ports)[number] | undefined;
    if (sel.kind === 'service') {
      sp = ports.find((p) => p.port === sel.port && p.protocol === 'TCP');
      if (sp === undefined) {
        // Not a Service port: accept a port the slices themselves expose under that number.
        for (const slice of state.slices.values()) {
          const p = slice.ports.find((x) => x.port === sel.port);
          if (p) return { name: p.name, fixed: undefined, problem: undefined };
        }
        return {
          name: undefined,
          fixed: undefined,
          problem: `service ${svc} has no port ${sel.port} (ports: ${ports.map((p) => (p.name ? `${p.name}=${p.port}` : String(p.port))).join(', ') || 'none'})`,
        };
      }
    } else {
      sp =
        ports.length === 1
          ? ports[0]
          : (ports.find((p) => p.name === 'http') ?? ports.find((p) => p.port === 80));
      if (sp === undefined)
        return {
          name: undefined,
          fixed: undefined,
          problem: `service ${svc} has several ports; name one in the URL`,
        };
    }
    // kube-proxy semantics: the Service port's name selects the slice port of the same name.
    let named = false;
    for (const slice of state.slices.values()) {
      if (slice.ports.some((p) => p.name === sp.name)) {
        named = true;
        break;
      }
    }
    if (!named && typeof sp.targetPort === 'number')
      return { name: undefined, fixed: sp.targetPort, problem: undefined };
    return { name: sp.name, fixed: undefined, problem: undefined };
  }

  onState(state: WatchState): void {
    const listener = this.#listener;
    if (!listener) return;
    const port = this.#resolvePort(state);
    if (port.problem !== undefined) {
      if (this.#lastProblem !== port.problem) {
        this.#lastProblem = port.problem;
        listener.onError(
          new MeshError(ErrorCodes.DISCOVERY, `kubernetes: ${port.problem}`, { reason: 'NoSuchPort' }),
        );
      }
    } else {
      this.#lastProblem = undefined;
    }
    const portKey = port.fixed !== undefined ? `#${port.fixed}` : (port.name ?? '\u0000none');
    const cache = new Map<string, CacheEntry>();
    const byId = new Map<string, Endpoint>();
    const list: Endpoint[] = [];
    for (const slice of state.slices.values()) {
      let entry = this.#cache.get(slice.name);
      if (entry === undefined || entry.slice !== slice || entry.portKey !== portKey) {
        entry = {
          slice,
          portKey,
          endpoints: port.problem !== undefined ? [] : sliceEndpoints(slice, port.name ?? '', port.fixed),
        };
      }
      cache.set(slice.name, entry);
      for (const ep of entry.endpoints) {
        const prev = byId.get(ep.id);
        if (prev === undefined) {
          byId.set(ep.id, ep);
          list.push(ep);
        } else if (prev.health !== 'healthy' && ep.health === 'healthy') {
          // The same address in two slices (a slice being split or merged): prefer the ready one.
          byId.set(ep.id, ep);
          list[list.indexOf(prev)] = ep;
        }
      }
    }
    this.#cache = cache;
    this.#emit(list, byId, state.resourceVersion, listener);
    // Invalid entries were dropped when the slice was parsed; say so once per slice version,
    // after the valid endpoints are applied (an error first would fail queued requests).
    for (const slice of state.slices.values()) {
      if (slice.problems.length === 0 || this.#reported.has(slice)) continue;
      this.#reported.add(slice);
      this.#listener?.onError(
        new MeshError(
          ErrorCodes.DISCOVERY,
          `kubernetes: EndpointSlice ${this.#watch.namespace}/${slice.name}: ${slice.problems.join('; ')} (dropped; the valid entries are used)`,
          { reason: 'InvalidEndpointSlice', slice: slice.name, problems: slice.problems },
        ),
      );
    }
  }

  #emit(
    list: Endpoint[],
    byId: Map<string, Endpoint>,
    version: string | undefined,
    listener: DiscoveryListener,
  ): void {
    const last = this.#last;
    if (last !== undefined) {
      let same = last.size === byId.size;
      let added = 0;
      const replaced: string[] = [];
      for (let i = 0; i < list.length; i++) {
        const ep = list[i] as Endpoint;
        const id = ep.id;
        const old = last.get(id);
        if (old === undefined) {
          added++;
          same = false;
        } else if (!sameEndpoint(old, ep)) {
          same = false;
          if (old.metadata.podUid !== ep.metadata.podUid || old.metadata.pod !== ep.metadata.pod)
            replaced.push(id);
        }
      }
      if (same) return;
      let removed = 0;
      for (const id of last.keys()) if (!byId.has(id)) removed++;
      if (replaced.length > 0) {
        // A new pod on a reused IP: retire the old one first so its state is dropped.
        const gone = new Set(replaced);
        listener.onUpdate({ endpoints: list.filter((e) => !gone.has(e.id)), version });
        this.stats.replaced += replaced.length;
      }
      this.stats.added += added;
      this.stats.removed += removed;
    } else {
      this.stats.added += list.length;
    }
    this.#last = byId;
    this.stats.updates++;
    listener.onUpdate({ endpoints: list, version });
  }

  onError(error: Error): void {
    this.#listener?.onError(error);
  }

  /** Runs `fn` when the source closes (the discovery forgets it). */
  onClose(fn: () => void): void {
    this.#onClose.push(fn);
  }

  close(): void {
    const hooks = this.#onClose;
    this.#onClose = [];
    for (const fn of hooks) fn();
    if (!this.#listener) return;
    this.#listener = undefined;
    this.#watch.unsubscribe(this);
    this.#release();
  }
}
