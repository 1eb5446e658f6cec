import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { generateConfigFiles } from '../scripts/config-gen.js';

// A file of its own: the generator attributes each registry entry to the package whose import
// added it, so no package may be imported before it runs (vitest isolates test files).
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
let generated: ReturnType<typeof generateConfigFiles> | undefined;
const generate = () => {
  generated ??= generateConfigFiles(root);
  return generated;
};

describe('generated config artifacts', () => {
  it('the generated types and the published JSON Schema are what the schemas generate now', async () => {
    const files = await generate();
    expect([...files.keys()].sort()).toEqual([
      'packages/core/src/config-types.generated.ts',
      'packages/kubernetes/src/config-types.generated.ts',
      'packages/meshlet/schema.json',
      'packages/telemetry/src/config-types.generated.ts',
      'packages/tls/src/config-types.generated.ts',
      'packages/xds/src/config-types.generated.ts',
    ]);
    for (const [path, text] of files) {
      expect(readFileSync(join(root, path), 'utf8'), `${path} is stale: run pnpm config:gen`).toBe(text);
    }
    const pkg = JSON.parse(readFileSync(join(root, 'packages/meshlet/package.json'), 'utf8'));
    expect(pkg.exports['./schema.json']).toBe('./schema.json');
    expect(pkg.files).toContain('schema.json');
  });

  it('meshlet exports a type of every package that adds config sections, so consumers get them in MeshConfig', async () => {
    // A .d.ts keeps no side-effect import: without a type re-export, a consumer's tsc would never
    // load the package's module augmentation, and its sections would be unknown keys.
    const index = readFileSync(join(root, 'packages/meshlet/src/index.ts'), 'utf8');
    const files = await generate();
    const augmenting = [...files.keys()]
      .filter((p) => p.endsWith('config-types.generated.ts') && !p.startsWith('packages/core/'))
      .map((p) => p.split('/')[1]);
    expect(augmenting.length).toBeGreaterThan(0);
    // (or from a light entry of the package, such as @meshlet/xds/config)
    for (const dir of augmenting)
      expect(index).toMatch(new RegExp(`export type \\{[^}]*\\} from '@meshlet/${dir}(/[\\w-]+)?'`));
  });
});
