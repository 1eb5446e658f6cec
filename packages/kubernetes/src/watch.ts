import { ErrorCodes, isMeshError, isPlainObject, MeshError } from '@meshlet/core';
import { delay, type KubeClient, readStatus } from './client.js';
import { type ParsedSlice, parseSlice } from './slices.js';

/** A Service port: its name (may be '') and number, as the Service declares them. */
export interface ServicePort {
  readonly name: string;
  readonly port: number;
  /** `targetPort` when it is a number (used when no slice names the port). */
  readonly targetPort: number | string | undefined;
  readonly protocol: string;
}

/** What a watch shares with its subscribers: the slices of the service and its ports. */
export interface WatchState {
  readonly slices: ReadonlyMap<string, ParsedSlice>;
  /** The Service's ports, or undefined while unknown. */
  readonly servicePorts: readonly ServicePort[] | undefined;
  readonly resourceVersion: string | undefined;
}

export interface WatchSubscriber {
  onState(state: WatchState): void;
  onError(error: Error): void;
}

export interface WatchTiming {
  readonly watchTimeoutMs: number;
  readonly stallTimeoutMs: number;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  /** How long a Service the API server answered 404 for is taken as absent before a new look-up. */
  readonly notFoundTtlMs: number;
}

/**
 * Names the API server said do not exist, each until a time (epoch ms), shared by the watches of
 * one discovery: a name asked again within its TTL fails at once, without a request.
 */
export interface NotFoundCache {
  get(id: string): number | undefined;
  set(id: string, until: number): void;
  delete(id: string): void;
}

/** Counters of one watch (snapshot, tests, benchmarks). */
export interface WatchStats {
  lists: number;
  relists: number;
  watches: number;
  events: number;
  bookmarks: number;
  gone: number;
  stalls: number;
  /** Look-ups that found no such Service (HTTP 404). */
  notFound: number;
  errors: number;
  lastError: string | undefined;
  connected: boolean;
}

type WatchEnd = 'closed' | 'gone' | 'stalled';

function isPort(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535;
}

function isGone(err: unknown): boolean {
  return isMeshError(err) && err.details.status === 410;
}

/**
 * One list+watch of the EndpointSlices of one Service, shared by every subscriber (one per port
 * the mesh routes to). Lists, then watches from the list's resourceVersion with bookmarks; on
 * 410 Gone relists once and publishes the new state (subscribers publish only real changes); a
 * watchdog restarts a watch that stays silent; errors back off with full jitter.
 */
export class ServiceWatch {
  readonly namespace: string;
  readonly service: string;
  readonly stats: WatchStats = {
    lists: 0,
    relists: 0,
    watches: 0,
    events: 0,
    bookmarks: 0,
    gone: 0,
    stalls: 0,
    notFound: 0,
    errors: 0,
    lastError: undefined,
    connected: false,
  };
  readonly #client: KubeClient;
  readonly #timing: WatchTiming;
  readonly #subscribers = new Set<WatchSubscriber>();
  readonly #abort = new AbortController();
  #slices = new Map<string, ParsedSlice>();
  #servicePorts: ServicePort[] | undefined;
  #rv: string | undefined;
  #hasState = false;
  #lastError: Error | undefined;
  #loop: Promise<void> | undefined;
  #closed = false;
  #pending: NodeJS.Immediate | undefined;
  #random: () => number;
  readonly #notFoundCache: NotFoundCache | undefined;
  /** The Service was not found: its look-ups go on the not-found request budget until it is. */
  #absent = false;

  constructor(
    client: KubeClient,
    namespace: string,
    service: string,
    timing: WatchTiming,
    random: () => number = Math.random,
    notFound?: NotFoundCache,
  ) {
    this.#client = client;
    this.namespace = namespace;
    this.service = service;
    this.#timing = timing;
    this.#random = random;
    this.#notFoundCache = notFound;
  }

  get #id(): string {
    return `${this.namespace}/${this.service}`;
  }

  #notFoundError(cause?: unknown): MeshError {
    return new MeshError(
      ErrorCodes.DISCOVERY,
      `kubernetes: service ${this.namespace}/${this.service} does not exist (HTTP 404); looked up again after ${Math.round(this.#timing.notFoundTtlMs / 1000)}s`,
      { status: 404, reason: 'NotFound' },
      cause === undefined ? undefined : { cause },
    );
  }

  get state(): WatchState | undefined {
    return this.#hasState
      ? { slices: this.#slices, servicePorts: this.#servicePorts, resourceVersion: this.#rv }
      : undefined;
  }

  get subscriberCount(): number {
    return this.#subscribers.size;
  }

  subscribe(sub: WatchSubscriber): void {
    this.#subscribers.add(sub);
    const state = this.state;
    if (state) sub.onState(state);
    else if (this.#lastError) sub.onError(this.#lastError);
    this.#loop ??= this.#run();
  }

  unsubscribe(sub: WatchSubscriber): void {
    this.#subscribers.delete(sub);
  }

  /**
   * Publishes after the events already read are applied (one macrotask later), so a burst of
   * events (a rollout touching many slices) costs one endpoint-set rebuild, not one per event.
   */
  #schedulePublish(): void {
    if (this.#pending !== undefined) return;
    this.#pending = setImmediate(() => {
      this.#pending = undefined;
      if (!this.#closed) this.#publish();
    });
  }

  #publish(): void {
    if (this.#pending !== undefined) {
      clearImmediate(this.#pending);
      this.#pending = undefined;
    }
    this.#hasState = true;
    const state = { slices: this.#slices, servicePorts: this.#servicePorts, resourceVersion: this.#rv };
    for (const s of this.#subscribers) s.onState(state);
  }

  #fail(err: Error): void {
    this.stats.errors++;
    this.stats.lastError = err.message;
    this.#lastError = err;
    for (const s of this.#subscribers) s.onError(err);
  }

  get #slicesPath(): string {
    return `/apis/discovery.k8s.io/v1/namespaces/${encodeURIComponent(this.namespace)}/endpointslices`;
  }

  get #selector(): string {
    return encodeURIComponent(`kubernetes.io/service-name=${this.service}`);
  }

  /** Reads the Service's ports; true when they changed since the last read. */
  async #fetchService(signal: AbortSignal): Promise<boolean> {
    const obj = await this.#client.get(
      `/api/v1/namespaces/${encodeURIComponent(this.namespace)}/services/${encodeURIComponent(this.service)}`,
      signal,
      `get service ${this.namespace}/${this.service}`,
      this.#absent,
    );
    if (this.#absent) {
      this.#absent = false;
      this.#notFoundCache?.delete(this.#id);
    }
    const ports: ServicePort[] = [];
    const spec = isPlainObject(obj) && isPlainObject(obj.spec) ? obj.spec : {};
    if (Array.isArray(spec.ports)) {
      for (const p of spec.ports) {
        // A port outside 1-65535 never reaches a pool (the API server validates, a proxy may not).
        if (!isPlainObject(p) || !isPort(p.port)) continue;
        ports.push({
          name: typeof p.name === 'string' ? p.name : '',
          port: p.port,
          targetPort: isPort(p.targetPort) || typeof p.targetPort === 'string' ? p.targetPort : undefined,
          protocol: typeof p.protocol === 'string' ? p.protocol : 'TCP',
        });
      }
    }
    const before = this.#servicePorts;
    this.#servicePorts = ports;
    return before !== undefined && JSON.stringify(before) !== JSON.stringify(ports);
  }

  /** Lists every slice of the service (following `continue`), replacing the known state. */
  async #list(signal: AbortSignal): Promise<void> {
    const next = new Map<string, ParsedSlice>();
    let cont: string | undefined;
    let rv: string | undefined;
    do {
      const q = `labelSelector=${this.#selector}&limit=500${cont ? `&continue=${encodeURIComponent(cont)}` : ''}`;
      const list = await this.#client.get(
        `${this.#slicesPath}?${q}`,
        signal,
        `list endpointslices of ${this.namespace}/${this.service}`,
        this.#absent,
      );
      if (!isPlainObject(list) || !isPlainObject(list.metadata))
        throw new MeshError(
          ErrorCodes.DISCOVERY,
          `kubernetes: list endpointslices of ${this.namespace}/${this.service}: not an EndpointSliceList`,
        );
      if (Array.isArray(list.items)) {
        for (const item of list.items) {
          const s = parseSlice(item);
          if (s) next.set(s.name, s);
        }
      }
      rv = typeof list.metadata.resourceVersion === 'string' ? list.metadata.resourceVersion : rv;
      cont =
        typeof list.metadata.continue === 'string' && list.metadata.continue.length > 0
          ? list.metadata.continue
          : undefined;
    } while (cont !== undefined);
    this.stats.lists++;
    this.#slices = next;
    this.#rv = rv;
  }

  /** Watches from the current resourceVersion until the stream ends, 410s, or goes silent. */
  async #watch(): Promise<WatchEnd> {
    const ctl = new AbortController();
    const outer = this.#abort.signal;
    const onOuter = () => ctl.abort(outer.reason);
    outer.addEventListener('abort', onOuter, { once: true });
    let stalled = false;
    let gone = false;
    let watchdog: NodeJS.Timeout | undefined;
    const arm = () => {
      if (watchdog) watchdog.refresh();
      else {
        watchdog = setTimeout(() => {
          stalled = true;
          ctl.abort(new Error('watch stalled'));
        }, this.#timing.stallTimeoutMs);
        watchdog.unref();
      }
    };
    arm();
    // Jittered (1x-1.5x, as client-go does 1x-2x) so that a fleet's watches do not all end together.
    const timeoutSeconds = Math.max(
      1,
      Math.round((this.#timing.watchTimeoutMs * (1 + this.#random() / 2)) / 1000),
    );
    const q = `labelSelector=${this.#selector}&watch=1&allowWatchBookmarks=true&timeoutSeconds=${timeoutSeconds}${this.#rv ? `&resourceVersion=${encodeURIComponent(this.#rv)}` : ''}`;
    this.stats.watches++;
    try {
      await this.#client.watch(
        `${this.#slicesPath}?${q}`,
        ctl.signal,
        `watch endpointslices of ${this.namespace}/${this.service}`,
        (events) => {
          arm();
          this.stats.connected = true;
          if (gone) return;
          let changed = false;
          for (const ev of events) {
            if (!isPlainObject(ev)) continue;
            const type = ev.type;
            const obj = ev.object;
            if (type === 'ERROR') {
              const st = readStatus(obj);
              if (st.code === 410 || st.reason === 'Expired' || st.reason === 'Gone') {
                gone = true;
                ctl.abort(new Error('resource version expired'));
                break;
              }
              throw new MeshError(
                ErrorCodes.DISCOVERY,
                `kubernetes: watch endpointslices of ${this.namespace}/${this.service}: ${st.reason ?? 'error'} ${st.code ?? ''}: ${st.message ?? ''}`.trim(),
                { status: st.code, reason: st.reason },
              );
            }
            const rv =
              isPlainObject(obj) &&
              isPlainObject(obj.metadata) &&
              typeof obj.metadata.resourceVersion === 'string'
                ? obj.metadata.resourceVersion
                : undefined;
            if (type === 'BOOKMARK') {
              this.stats.bookmarks++;
              if (rv) this.#rv = rv;
              continue;
            }
            const slice = parseSlice(obj);
            if (!slice) continue;
            this.stats.events++;
            if (type === 'ADDED' || type === 'MODIFIED') {
              this.#slices.set(slice.name, slice);
              changed = true;
            } else if (type === 'DELETED') {
              changed = this.#slices.delete(slice.name) || changed;
            }
            if (rv) this.#rv = rv;
          }
          if (changed) this.#schedulePublish();
        },
      );
    } catch (err) {
      if (gone) return 'gone';
      if (stalled) return 'stalled';
      throw err;
    } finally {
      clearTimeout(watchdog);
      outer.removeEventListener('abort', onOuter);
      this.stats.connected = false;
    }
    if (gone) return 'gone';
    return 'closed';
  }

  async #run(): Promise<void> {
    const signal = this.#abort.signal;
    let needList = true;
    let failures = 0;
    let goneInARow = 0;
    // Known not to exist (another watch of this name found so, within the TTL): fail at once, look
    // again when the TTL ends.
    const until = this.#notFoundCache?.get(this.#id);
    if (until !== undefined && until > Date.now()) {
      this.#absent = true;
      this.#fail(this.#notFoundError());
      try {
        await delay(until - Date.now(), signal);
      } catch {
        return;
      }
    }
    while (!this.#closed) {
      try {
        if (needList) {
          await this.#fetchService(signal);
          const before = this.stats.lists;
          await this.#list(signal);
          if (before > 0) this.stats.relists++;
          needList = false;
          this.#lastError = undefined;
          this.#publish();
        }
        const seen = this.stats.events + this.stats.bookmarks;
        const end = await this.#watch();
        failures = 0;
        // A watch that delivered something proves the relisted version was good.
        if (this.stats.events + this.stats.bookmarks !== seen) goneInARow = 0;
        if (end === 'gone') {
          this.stats.gone++;
          needList = true;
          // A second 410 straight after a relist means the server cannot serve the list's
          // version: back off rather than loop.
          if (++goneInARow > 1) await delay(this.#backoff(goneInARow - 2), signal);
        } else {
          goneInARow = 0;
          if (end === 'stalled') this.stats.stalls++;
          // Services are not watched: re-read the ports each time a watch ends (every few minutes).
          else if (await this.#fetchService(signal)) this.#publish();
        }
      } catch (err) {
        if (this.#closed) break;
        if (isGone(err)) {
          // HTTP 410 on the watch request itself.
          this.stats.gone++;
          needList = true;
          if (++goneInARow <= 1) continue;
        }
        // Watching again from the same version would replay the event that was too large.
        if (isMeshError(err) && err.details.reason === 'EventTooLarge') needList = true;
        if (isMeshError(err) && err.details.status === 404) {
          needList = true;
          // No such Service: say so, remember it for notFoundTtl, and look again only then — on the
          // not-found request budget, never the one real services use (a client asking for 300
          // made-up names must not starve the first request to a real one).
          this.stats.notFound++;
          this.#absent = true;
          this.#notFoundCache?.set(this.#id, Date.now() + this.#timing.notFoundTtlMs);
          this.#fail(this.#notFoundError(err));
          try {
            await delay(this.#timing.notFoundTtlMs, signal);
          } catch {
            break;
          }
          continue;
        }
        const error = isMeshError(err)
          ? err
          : new MeshError(
              ErrorCodes.DISCOVERY,
              `kubernetes: ${this.namespace}/${this.service}: ${(err as Error).message}`,
              {},
              { cause: err },
            );
        this.#fail(error);
        try {
          // The server may ask for a pause (429 with retryAfterSeconds): honour it.
          const asked = Number(error.details.retryAfterMs);
          const wait = this.#backoff(failures++);
          await delay(
            Number.isFinite(asked) ? Math.max(wait, Math.min(asked, this.#timing.backoffMaxMs * 4)) : wait,
            signal,
          );
        } catch {
          break;
        }
      }
    }
  }

  /** Full-jitter exponential backoff. */
  #backoff(n: number): number {
    const ceiling = Math.min(this.#timing.backoffMaxMs, this.#timing.backoffBaseMs * 2 ** Math.min(n, 20));
    return this.#timing.backoffBaseMs / 2 + this.#random() * ceiling;
  }

  /** Stops the watch: aborts in-flight requests and waits for the loop to end. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#pending !== undefined) clearImmediate(this.#pending);
    this.#subscribers.clear();
    this.#abort.abort(new MeshError(ErrorCodes.CLOSED, 'kubernetes watch closed'));
    await this.#loop?.catch(() => {});
  }
}
