/**
 * Writes the generated config types and JSON Schema (see scripts/config-gen.ts):
 * `pnpm config:gen`. test/config-schema.test.ts fails while they differ from a fresh generation.
 */
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateConfigFiles } from './config-gen.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
for (const [path, text] of await generateConfigFiles(root)) {
  writeFileSync(join(root, path), text);
  process.stdout.write(`wrote ${path}\n`);
}
