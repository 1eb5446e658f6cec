import type { MeshEventMap, MeshEventName, MeshEvents } from '@meshlet/core';

/** Resolves with the next event `name` that satisfies `match` (rejects after `timeoutMs`). */
export function nextEvent<K extends MeshEventName>(
  events: MeshEvents,
  name: K,
  match: (e: MeshEventMap[K]) => boolean = () => true,
  timeoutMs = 5000,
): Promise<MeshEventMap[K]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no '${name}' event within ${timeoutMs}ms`));
    }, timeoutMs);
    const off = events.on(name, (e) => {
      if (!match(e)) return;
      clearTimeout(timer);
      off();
      resolve(e);
    });
  });
}
