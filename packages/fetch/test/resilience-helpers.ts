import type { IncomingMessage, ServerResponse } from 'node:http';
import { Mesh, type MeshEventMap, type MeshEventName, parseConfig } from '@meshlet/core';
import { startServer, type TestServer } from '../../../test/helpers/http.js';
import { createMeshFetch, MeshDispatcher, type MeshDispatcherOptions } from '../src/index.js';

export type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** Owns the servers and meshes a test starts, and closes them all in `cleanup()`. */
export class Rig {
  readonly #cleanups: Array<() => Promise<void> | void> = [];

  async server(handler: Handler): Promise<TestServer> {
    const s = await startServer(handler);
    this.#cleanups.push(() => s.close());
    return s;
  }

  mesh(raw: Record<string, unknown>, options: MeshDispatcherOptions = {}) {
    const mesh = new Mesh(parseConfig(raw));
    const dispatcher = new MeshDispatcher(mesh, options);
    this.#cleanups.push(async () => {
      await dispatcher.destroy();
      await mesh.close();
    });
    return { mesh, dispatcher, fetch: createMeshFetch(dispatcher) };
  }

  /** Collects mesh events of one kind. */
  collect<K extends MeshEventName>(mesh: Mesh, name: K): Array<MeshEventMap[K]> {
    const list: Array<MeshEventMap[K]> = [];
    this.#cleanups.push(mesh.events.on(name, (e) => list.push(e)));
    return list;
  }

  defer(fn: () => Promise<void> | void): void {
    this.#cleanups.push(fn);
  }

  async cleanup(): Promise<void> {
    for (const c of this.#cleanups.splice(0).reverse()) {
      try {
        await c();
      } catch {
        // keep cleaning
      }
    }
  }
}

/** The `code` of a fetch failure's cause (undici wraps dispatcher errors in `TypeError: fetch failed`). */
export function causeCode(err: unknown): string | undefined {
  const cause = (err as { cause?: { code?: unknown } })?.cause;
  return typeof cause?.code === 'string' ? cause.code : undefined;
}

/** Resolves once `predicate` holds, polling on the event loop (for counters moved by I/O). */
export async function until(predicate: () => boolean, what: string, limitMs = 5_000): Promise<void> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > limitMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
