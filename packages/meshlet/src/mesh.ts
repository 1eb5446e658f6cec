import {
  Mesh as CoreMesh,
  type MeshOptions as CoreMeshOptions,
  loadConfig,
  type MeshConfig,
  type ParsedMeshConfig,
  parseConfig,
} from '@meshlet/core';
import {
  createMeshFetch,
  MeshDispatcher,
  type MeshDispatcherOptions,
  type MeshFetch,
  undiciGlobal,
} from '@meshlet/fetch';
import { getTelemetry, type TelemetryOptions } from '@meshlet/telemetry/config';
import type { Dispatcher } from 'undici';

/**
 * A piece of meshlet that plugs into `createMesh` (TLS, telemetry, admin, Kubernetes, xDS). Each
 * runs once per mesh, before discovery traffic starts; `dispatcherOptions` lets it shape the
 * fetch transport (TLS connect options).
 */
export interface MeshExtension {
  readonly name: string;
  /** Contributes dispatcher options before the dispatcher is built (`options`: createMesh's). */
  dispatcherOptions?(
    config: ParsedMeshConfig,
    options: CreateMeshOptions,
  ): MeshDispatcherOptions | undefined | Promise<MeshDispatcherOptions | undefined>;
  /** Wires the extension into a fully built mesh. */
  setup?(mesh: Mesh): void | Promise<void>;
}

const extensions: MeshExtension[] = [];

/** Adds an extension that every later `createMesh()` runs. */
export function registerExtension(ext: MeshExtension): void {
  const i = extensions.findIndex((e) => e.name === ext.name);
  if (i >= 0) extensions[i] = ext;
  else extensions.push(ext);
}

export interface CreateMeshOptions extends CoreMeshOptions {
  /** Dispatcher for hosts the mesh does not know (default: a new undici Agent). */
  passthrough?: Dispatcher;
  /** Environment used for defaults (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /**
   * Telemetry objects that cannot live in a config file: your prom-client `registry`, your
   * OpenTelemetry `tracerProvider`, an `accessLogSink` (pino logger or function). See docs/telemetry.md.
   */
  telemetry?: TelemetryOptions;
}

/**
 * Where undici keeps the process-wide dispatcher: `undici.globalDispatcher.2`, which undici 8 reads
 * (Node 26's fetch), and `undici.globalDispatcher.1`, which undici 6 and 7 read (Node 20's, 22's
 * and 24's fetch). undici 8's `setGlobalDispatcher` writes both, and undici 7's from 7.27 on.
 */
const GLOBAL_DISPATCHER_SLOTS = [
  Symbol.for('undici.globalDispatcher.2'),
  Symbol.for('undici.globalDispatcher.1'),
] as const;

/** Sets one of undici's global slots as undici defines them (writable, not enumerable). */
function setGlobalSlot(slot: symbol, value: unknown): void {
  if (Object.getOwnPropertyDescriptor(globalThis, slot)?.writable === true)
    (globalThis as unknown as Record<symbol, unknown>)[slot] = value;
  else
    Object.defineProperty(globalThis, slot, {
      value,
      writable: true,
      enumerable: false,
      configurable: false,
    });
}

/**
 * The mesh a service links: discovery, balancing and resilience (from `@meshlet/core`) plus
 * `fetch` and an undici `dispatcher` that route through them.
 */
export class Mesh extends CoreMesh {
  /** An undici Dispatcher routing mesh hosts through the mesh; usable with `setGlobalDispatcher`. */
  readonly dispatcher: MeshDispatcher;
  /** WHATWG `fetch` (undici semantics) through the mesh. */
  readonly fetch: MeshFetch;
  /** The options `createMesh` was given (extensions read theirs from here). */
  readonly options: CreateMeshOptions;
  #restoreGlobal: (() => void) | undefined;

  constructor(
    config: ParsedMeshConfig,
    options: CreateMeshOptions = {},
    dispatcherOptions: MeshDispatcherOptions = {},
  ) {
    super(config, options);
    this.options = options;
    this.dispatcher = new MeshDispatcher(this, {
      ...dispatcherOptions,
      ...(options.passthrough ? { passthrough: options.passthrough } : {}),
    });
    this.fetch = createMeshFetch(this.dispatcher);
    this.onClose(() => this.dispatcher.close());
  }

  /** The admin page URL (`http://127.0.0.1:PORT/`) when `admin` is configured, else undefined. */
  get adminUrl(): string | undefined {
    return getTelemetry(this)?.admin?.url;
  }

  /**
   * Makes the mesh the process-wide undici dispatcher, so that `fetch()` (Node's global fetch
   * included) is meshed without code changes. Returns a function that restores the previous one;
   * `close()` restores it too.
   */
  installGlobalDispatcher(): () => void {
    if (this.#restoreGlobal) return this.#restoreGlobal;
    // Both of undici's slots, as they were: undici 8 (Node 26's fetch) keeps its dispatcher in one
    // and a wrapper of it for older undici in the other, so neither can be rebuilt from the other.
    // Read after undici's global module has loaded: on load it puts a default Agent in the slots.
    const { setGlobalDispatcher } = undiciGlobal();
    const slots = globalThis as unknown as Record<symbol, unknown>;
    const previous = GLOBAL_DISPATCHER_SLOTS.map((slot) => slots[slot]);
    setGlobalDispatcher(this.dispatcher);
    // undici before 7.27 writes only `.1`, which Node 26's fetch does not read.
    for (const slot of GLOBAL_DISPATCHER_SLOTS)
      if (slots[slot] !== this.dispatcher) setGlobalSlot(slot, this.dispatcher);
    const restore = () => {
      // A slot someone else has set since keeps what they set.
      GLOBAL_DISPATCHER_SLOTS.forEach((slot, i) => {
        if (slots[slot] === this.dispatcher) setGlobalSlot(slot, previous[i]);
      });
      this.#restoreGlobal = undefined;
    };
    this.#restoreGlobal = restore;
    return restore;
  }

  override async close(): Promise<void> {
    this.#restoreGlobal?.();
    await super.close();
  }
}

/**
 * Creates a mesh from a config object or the path of a YAML/JSON file. Rejects with
 * `MESHLET_ERR_CONFIG` naming every bad field; nothing is started then. The object is typed
 * `MeshConfig` (misspelt keys and unknown policy names do not compile); a config of unknown shape
 * (read from elsewhere) goes through `parseConfig` first, or is passed as `MeshConfig` and
 * validated here all the same.
 */
export async function createMesh(
  config: MeshConfig | string = {},
  options: CreateMeshOptions = {},
): Promise<Mesh> {
  const env = options.env ?? process.env;
  const parsed = typeof config === 'string' ? loadConfig(config, env) : parseConfig(config, { env });
  let dispatcherOptions: MeshDispatcherOptions = {};
  for (const ext of extensions) {
    const more = await ext.dispatcherOptions?.(parsed, options);
    if (more) dispatcherOptions = { ...dispatcherOptions, ...more };
  }
  const mesh = new Mesh(parsed, options, dispatcherOptions);
  try {
    for (const ext of extensions) await ext.setup?.(mesh);
  } catch (err) {
    await mesh.close().catch(() => {});
    throw err;
  }
  return mesh;
}
