import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { undiciTransport } from '../packages/fetch/src/undici.js';

// `scripts/test-dependency-floors.mjs` substitutes the lowest versions meshlet's ranges admit for
// the workspace's copies (MESHLET_TEST_ALIAS, applied by vitest.config.ts). This file runs in that
// run too and proves the substitution took: the copies loaded are the floors'. In the ordinary run
// (no aliases) it checks the workspace's own copies are the ones loaded.
const aliases: Record<string, string> = process.env.MESHLET_TEST_ALIAS
  ? JSON.parse(process.env.MESHLET_TEST_ALIAS)
  : {};

const loaders: Record<string, () => Promise<unknown>> = {
  '@grpc/grpc-js': () => import('@grpc/grpc-js'),
  undici: () => import('undici'),
  'prom-client': () => import('prom-client'),
  '@opentelemetry/api': () => import('@opentelemetry/api'),
  protobufjs: () => import('protobufjs/light.js'),
};

describe('the dependencies under test', () => {
  it('are the aliased floors when MESHLET_TEST_ALIAS is set, the workspace copies otherwise', async () => {
    const cache = createRequire(import.meta.url).cache;
    for (const [name, load] of Object.entries(loaders)) {
      await load();
      const files = Object.keys(cache).filter((f) => f.includes(`/node_modules/${name}/`));
      expect(files.length, `${name} was loaded`).toBeGreaterThan(0);
      const alias = aliases[name];
      // The floor's copy is the one the tests and meshlet's code import (packages in node_modules,
      // such as prom-client, may still load nested copies of their own).
      if (alias)
        expect(
          files.some((f) => f.startsWith(`${alias}/`)),
          `${name} from ${alias}`,
        ).toBe(true);
      else
        expect(
          files.some((f) => f.includes('.tmp/floors')),
          `${name} from the workspace`,
        ).toBe(false);
    }
  });

  it('include the parts meshlet requires itself (undici, packages/fetch/src/undici.ts)', () => {
    undiciTransport();
    const cache = createRequire(import.meta.url).cache;
    const files = Object.keys(cache).filter((f) => f.includes('/node_modules/undici/lib/dispatcher/pool.js'));
    expect(files.length, 'undici/lib/dispatcher/pool.js was required').toBeGreaterThan(0);
    const alias = aliases.undici;
    for (const f of files)
      if (alias) expect(f.startsWith(`${alias}/`), `${f} from ${alias}`).toBe(true);
      else expect(f.includes('.tmp/floors'), `${f} from the workspace`).toBe(false);
  });
});
