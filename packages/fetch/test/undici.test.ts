import * as undici from 'undici';
import { describe, expect, it } from 'vitest';
import { MeshDispatcher } from '../src/dispatcher.js';
import { undiciFetch, undiciGlobal, undiciTransport } from '../src/undici.js';

// meshlet loads undici's parts from the files its entry point takes them from
// (packages/fetch/src/undici.ts). Those paths are not undici's public API: this file proves, for
// the undici installed (the newest in the workspace; the floor of meshlet's range under
// `node scripts/test-dependency-floors.mjs`), that each part is the very object the public entry
// point exports, so an application mixing `import { Agent } from 'undici'` with meshlet sees one
// undici.
describe("undici's parts, loaded lazily", () => {
  it('are the objects undici exports', () => {
    const t = undiciTransport();
    expect(t.Agent).toBe(undici.Agent);
    expect(t.Pool).toBe(undici.Pool);
    expect(t.buildConnector).toBe(undici.buildConnector);
    expect(t.errors).toBe(undici.errors);
    expect(t.parseHeaders).toBe(undici.util.parseHeaders);
    expect(undiciFetch()).toBe(undici.fetch);
    const g = undiciGlobal();
    expect(g.getGlobalDispatcher).toBe(undici.getGlobalDispatcher);
    expect(g.setGlobalDispatcher).toBe(undici.setGlobalDispatcher);
  });

  it("make MeshDispatcher an undici Dispatcher with the entry point's convenience methods", () => {
    expect(Object.getPrototypeOf(MeshDispatcher.prototype)).toBe(undici.Dispatcher.prototype);
    const proto = undici.Dispatcher.prototype as unknown as Record<string, unknown>;
    for (const method of ['request', 'stream', 'pipeline', 'connect', 'upgrade']) {
      expect(typeof proto[method], method).toBe('function');
      expect((MeshDispatcher.prototype as unknown as Record<string, unknown>)[method], method).toBe(
        proto[method],
      );
    }
  });
});
