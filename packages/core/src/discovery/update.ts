import type { Endpoint } from '../model.js';
import type { DiscoveryUpdate } from './types.js';

/** The flat list of `segments` (one exact-size copy; a single part is returned as it is). */
export function concatSegments(segments: readonly (readonly Endpoint[])[]): readonly Endpoint[] {
  if (segments.length === 1) return segments[0] as readonly Endpoint[];
  if (segments.length <= 4096) return Object.freeze(([] as Endpoint[]).concat(...segments));
  const out: Endpoint[] = [];
  for (const p of segments) for (let i = 0; i < p.length; i++) out.push(p[i] as Endpoint);
  return Object.freeze(out);
}

/**
 * A `DiscoveryUpdate` given as parts (see `DiscoveryUpdate.segments`) whose flat `endpoints` list
 * is built on first read only (and then kept): the runtime never reads it, so an update that
 * nobody inspects costs no O(n) copy.
 */
export function segmentedUpdate(
  segments: readonly (readonly Endpoint[])[],
  version?: string | undefined,
): DiscoveryUpdate {
  let flat: readonly Endpoint[] | undefined;
  return Object.freeze({
    get endpoints(): readonly Endpoint[] {
      flat ??= concatSegments(segments);
      return flat;
    },
    segments,
    version,
  });
}
