import type { ConfigIssue } from '../errors.js';
import type { Endpoint } from '../model.js';
import type { Fields, ObjectSchema, Schema } from '../schema.js';

/** A full replacement of a service's endpoint set (state of the world, never a delta). */
export interface DiscoveryUpdate {
  readonly endpoints: readonly Endpoint[];
  /**
   * Optional: the same endpoints as `endpoints`, in the same order, as consecutive immutable parts
   * (xDS EDS: one per locality). When present, `ServiceRuntime.applyUpdate` reads these and never
   * `endpoints`, which a source may then compute only when someone reads it (see
   * `segmentedUpdate`). A part that is the very same array object as a part of the source's
   * previous update must have the same contents: the runtime then takes its endpoints' states as
   * they are instead of matching them one by one. Sources without such parts (static, file, DNS,
   * Kubernetes) give `endpoints` alone.
   */
  readonly segments?: readonly (readonly Endpoint[])[] | undefined;
  /** An opaque version for snapshots (file mtime, DNS answer time, resourceVersion, xDS version). */
  readonly version?: string | undefined;
}

/** Where a source sends what it finds. Both may be called any number of times. */
export interface DiscoveryListener {
  onUpdate(update: DiscoveryUpdate): void;
  /**
   * The source failed to refresh. The mesh keeps the last good endpoints and reports the error in
   * `snapshot()`; the source keeps trying on its own schedule.
   */
  onError(error: Error): void;
}

export interface DiscoverySource {
  start(listener: DiscoveryListener): void;
  /** Stops timers, watches and sockets. After close, the listener is never called again. */
  close(): Promise<void> | void;
}

export interface DiscoveryContext {
  /** The service this source discovers endpoints for. */
  readonly service: string;
  /** Directory relative paths in the source's config are resolved against. */
  readonly baseDir: string;
}

/**
 * A registered discovery type. `services.<name>.discovery: { type: NAME, ... }` selects it; a
 * factory with a `shorthand` key also accepts `services.<name>.<shorthand>: value`.
 */
export interface DiscoveryFactory<C = unknown> {
  readonly name: string;
  /**
   * The options of `discovery: { type: NAME, ... }` (everything but `type`), for the JSON Schema
   * and the generated types (`DiscoveryTypes`). A type registered without one accepts any options
   * in editors.
   */
  readonly schema?: ObjectSchema<Fields, boolean> | undefined;
  /** A service-level key that selects this type (`endpoints` for static, `dns` for DNS, …). */
  readonly shorthand?: string;
  /** The shorthand's value (`DiscoveryShorthands` in the generated types). */
  readonly shorthandSchema?: Schema<unknown, unknown, boolean> | undefined;
  /**
   * Parses the shorthand's value; `path` ends with the shorthand key (`services.x.dns`), so that
   * problems inside it keep that segment. Without it, `fromShorthand` then `parseConfig` are used.
   */
  parseShorthand?(value: unknown, path: string, issues: ConfigIssue[], baseDir: string): C;
  /** Turns the shorthand value into the options object `parseConfig` takes. */
  fromShorthand?(value: unknown): Record<string, unknown>;
  parseConfig(
    raw: Readonly<Record<string, unknown>>,
    path: string,
    issues: ConfigIssue[],
    baseDir: string,
  ): C;
  create(config: C, ctx: DiscoveryContext): DiscoverySource;
}
