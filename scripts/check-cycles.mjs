// Checks the workspace's package graph: no package depends (directly or transitively) on itself,
// and every `@meshlet/*` or `meshlet` import in a package's sources is declared in its package.json.
// File-level import cycles inside a package are checked by Biome's `noImportCycles` rule.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const pkgsDir = join(root, 'packages');
const pkgs = new Map();
for (const dir of readdirSync(pkgsDir)) {
  const file = join(pkgsDir, dir, 'package.json');
  try {
    const json = JSON.parse(readFileSync(file, 'utf8'));
    const deps = Object.keys({ ...json.dependencies, ...json.peerDependencies }).filter(isOurs);
    pkgs.set(json.name, { dir: join(pkgsDir, dir), deps });
  } catch {}
}
function isOurs(name) {
  return name === 'meshlet' || name.startsWith('@meshlet/');
}
const problems = [];
const state = new Map();
function visit(name, stack) {
  if (state.get(name) === 'done') return;
  if (state.get(name) === 'active') {
    problems.push(`package cycle: ${[...stack.slice(stack.indexOf(name)), name].join(' -> ')}`);
    return;
  }
  state.set(name, 'active');
  for (const dep of pkgs.get(name)?.deps ?? []) visit(dep, [...stack, name]);
  state.set(name, 'done');
}
for (const name of pkgs.keys()) visit(name, []);

function* files(dir) {
  for (const entry of readdirSync(dir)) {
    const p = join(dir, entry);
    if (statSync(p).isDirectory()) yield* files(p);
    else if (p.endsWith('.ts')) yield p;
  }
}
const importRe = /(?:from\s+|import\s*\(\s*)['"]((?:@meshlet\/[\w-]+)|meshlet)(?:\/[^'"]*)?['"]/g;
for (const [name, { dir, deps }] of pkgs) {
  let src;
  try {
    src = [...files(join(dir, 'src'))];
  } catch {
    continue;
  }
  for (const file of src) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(importRe)) {
      const target = m[1];
      if (target !== name && !deps.includes(target)) {
        problems.push(
          `${file.slice(root.length)} imports ${target}, which ${name} does not declare as a dependency`,
        );
      }
    }
  }
}
if (problems.length > 0) {
  console.error(problems.join('\n'));
  process.exit(1);
}
console.log(`package graph OK: ${pkgs.size} packages, no cycles, every import declared`);
