// After `tsc -b`: turns each package's dist/ into one ES module per entry point (what its
// `exports` and `bin` name) plus shared chunks, instead of one module per source file.
//
// Why: Node's ES module loader pays per module (resolve, read, compile, link): with ~100 of
// meshlet's modules loaded, that was about half the CPU time and the memory of `import 'meshlet'`
// once its dependencies load lazily (docs/install.md). Bundled, the same code costs about half.
//
// What stays the same: every bare import (`@meshlet/*`, undici, node:…) stays an import, so each
// package keeps one instance shared by the others (core's registries are singletons); dynamic
// imports stay dynamic (their code goes into chunks loaded only then); the .d.ts files are tsc's;
// names are kept (`keepNames`: `constructor.name` and stack traces read as in the source); source
// maps chain to src/*.ts through tsc's maps.
//
//   node scripts/bundle-dist.mjs [package-dir …]   (default: every package but the demo app)
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { build } from 'esbuild';

const root = resolve(import.meta.dirname, '..');
/** The demo is an application (its dist is not on any import path of meshlet's). */
const SKIP = new Set(['demo']);

function entries(dir, pkg) {
  const found = new Set();
  const add = (target) => {
    if (typeof target === 'string' && target.startsWith('./dist/') && target.endsWith('.js'))
      found.add(join(dir, target));
  };
  for (const value of Object.values(pkg.exports ?? {}))
    add(typeof value === 'string' ? value : value.default);
  // bin scripts live outside dist and import from it.
  for (const bin of Object.values(typeof pkg.bin === 'string' ? { bin: pkg.bin } : (pkg.bin ?? {}))) {
    const text = readFileSync(join(dir, bin), 'utf8');
    for (const m of text.matchAll(/from\s+'\.\.\/(dist\/[^']+\.js)'/g)) add(`./${m[1]}`);
  }
  return [...found];
}

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

const dirs = process.argv.slice(2).length
  ? process.argv.slice(2).map((d) => resolve(d))
  : readdirSync(join(root, 'packages'))
      .filter((name) => !SKIP.has(name))
      .map((name) => join(root, 'packages', name));

for (const dir of dirs) {
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  const dist = join(dir, 'dist');
  if (!existsSync(dist)) throw new Error(`${relative(root, dist)} is missing: run tsc -b first`);
  const entryPoints = entries(dir, pkg);
  for (const e of entryPoints)
    if (!existsSync(e)) throw new Error(`${pkg.name}: entry ${relative(root, e)} not built`);
  const result = await build({
    entryPoints,
    outdir: dist,
    outbase: dist,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    packages: 'external',
    keepNames: true,
    sourcemap: 'linked',
    // The packages ship src/: the maps point there instead of carrying it again.
    sourcesContent: false,
    allowOverwrite: true,
    chunkNames: '[name]-[hash]',
    metafile: true,
    logLevel: 'warning',
  });
  const outputs = new Set(Object.keys(result.metafile.outputs).map((p) => resolve(root, p)));
  // tsc's per-file modules are no longer imported by anything: remove them so nothing can load a
  // second copy of a module by a deep path. Their declarations stay.
  let removed = 0;
  for (const file of walk(dist)) {
    if ((file.endsWith('.js') || file.endsWith('.js.map')) && !outputs.has(file)) {
      rmSync(file);
      removed++;
    }
  }
  const modules = [...outputs].filter((p) => p.endsWith('.js')).length;
  console.log(
    `${pkg.name}: ${modules} modules (${entryPoints.length} entries), ${removed} files of tsc's output replaced`,
  );
}
