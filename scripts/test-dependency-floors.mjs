// Runs the tests that exercise meshlet's shared dependencies against the LOWEST versions its
// package.json ranges admit (the workspace's lockfile and the consumer test cover the highest):
// each floor is installed from the npm registry into .tmp/floors/ and substituted for the
// workspace's copy through vitest aliases (MESHLET_TEST_ALIAS, read by vitest.config.ts).
// A range whose floor fails here is not true: raise it, or make meshlet work with the floor.
//
//   node scripts/test-dependency-floors.mjs [extra vitest args]
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname.replace(/\/$/, '');

/** The dependencies whose ranges are checked, and the tests that exercise each. */
const CHECKED = {
  '@grpc/grpc-js': [
    'packages/grpc/test',
    'packages/control-plane/test',
    'test/integration/grpc-mtls.test.ts',
    'test/integration/three-hop.test.ts',
    'test/integration/xds-grpc-routing.test.ts',
    'test/integration/xds-grpc-mtls.test.ts',
  ],
  undici: [
    'packages/fetch/test',
    'packages/kubernetes/test',
    'packages/tls/test/server.test.ts',
    'test/integration/global-dispatcher.test.ts',
  ],
  'prom-client': ['packages/telemetry/test', 'test/integration/telemetry.test.ts'],
  '@opentelemetry/api': ['packages/telemetry/test', 'test/integration/telemetry.test.ts'],
  protobufjs: ['packages/xds/test', 'test/integration/xds-routing.test.ts'],
};

// Every package that declares one of them (as a dependency or a peer) must declare the same range.
const ranges = new Map();
for (const dir of readdirSync(join(root, 'packages'))) {
  const pkg = JSON.parse(readFileSync(join(root, 'packages', dir, 'package.json'), 'utf8'));
  if (pkg.name === '@meshlet/demo') continue; // an application: its own pins are not a library's ranges
  for (const [name, range] of Object.entries({ ...pkg.dependencies, ...pkg.peerDependencies })) {
    if (!(name in CHECKED)) continue;
    const seen = ranges.get(name);
    if (seen && seen.range !== range) {
      console.error(`${name}: ${seen.pkg} declares ${seen.range} but ${pkg.name} declares ${range}`);
      process.exit(1);
    }
    ranges.set(name, { range, pkg: pkg.name });
  }
}

const aliases = {};
// test/dependency-floors.test.ts proves the floors are the copies the tests load.
const files = new Set(['test/dependency-floors.test.ts']);
for (const [name, tests] of Object.entries(CHECKED)) {
  const declared = ranges.get(name);
  if (!declared) {
    console.error(`${name} is declared by no package`);
    process.exit(1);
  }
  const m = /^\^(\d+\.\d+\.\d+)$/.exec(declared.range);
  if (!m) {
    console.error(
      `${name}: the range ${declared.range} is not ^X.Y.Z (extend this script to find its floor)`,
    );
    process.exit(1);
  }
  const floor = m[1];
  const dir = join(root, '.tmp/floors', `${name.replace('/', '+')}@${floor}`);
  const installed = join(dir, 'node_modules', name);
  if (!existsSync(join(installed, 'package.json'))) {
    const r = spawnSync(
      'npm',
      [
        'install',
        '--no-save',
        '--no-audit',
        '--no-fund',
        '--loglevel=error',
        '--prefix',
        dir,
        `${name}@${floor}`,
      ],
      { stdio: 'inherit' },
    );
    if (r.status !== 0) process.exit(r.status ?? 1);
  }
  const version = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')).version;
  if (version !== floor) {
    console.error(`${name}: installed ${version}, expected ${floor}`);
    process.exit(1);
  }
  aliases[name] = installed;
  for (const t of tests) files.add(t);
  console.log(`floor of ${name} ${declared.range}: ${version}`);
}

const vitest = join(root, 'node_modules/vitest/vitest.mjs');
const r = spawnSync(process.execPath, [vitest, 'run', ...files, ...process.argv.slice(2)], {
  cwd: root,
  stdio: 'inherit',
  env: {
    ...process.env,
    MESHLET_TEST_ALIAS: JSON.stringify(aliases),
    // `require`d dependencies (undici's parts) follow the same aliases: scripts/floor-require-alias.cjs.
    NODE_OPTIONS:
      `${process.env.NODE_OPTIONS ?? ''} --require ${join(root, 'scripts/floor-require-alias.cjs')}`.trim(),
  },
});
process.exit(r.status ?? 1);
