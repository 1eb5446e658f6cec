import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '../..');
// tsx's own CLI, not pnpm's `.bin` shim: the shim sets NODE_PATH to pnpm's store, through which any
// directory would find the workspace's packages.
const tsx = join(root, 'node_modules/tsx/dist/cli.mjs');
const main = join(root, 'packages/meshlet/src/cli/bin.ts');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function meshlet(...args: string[]): Promise<Run> {
  return meshletIn(root, ...args);
}

function meshletIn(cwd: string, ...args: string[]): Promise<Run> {
  return new Promise((done) => {
    const { NODE_PATH: _, ...env } = process.env;
    execFile(
      process.execPath,
      [tsx, '--conditions=meshlet-source', main, ...args],
      { cwd, env: { ...env, NO_COLOR: '1' }, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        done({ code, stdout, stderr });
      },
    );
  });
}

/** Nine levels of nine aliases each: 9^9 nodes once expanded. */
const ALIAS_BOMB = [
  'a: &a ["x","x","x","x","x","x","x","x","x"]',
  ...'bcdefghi'.split('').map((c, i) => {
    const prev = 'abcdefghi'[i] as string;
    return `${c}: &${c} [${Array(9).fill(`*${prev}`).join(',')}]`;
  }),
  '',
].join('\n');

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

// Each test starts the CLI as a child process through tsx, which loads every meshlet package.
describe('meshlet CLI', { timeout: 90_000 }, () => {
  it('validate accepts a good config, exits 0 and summarises its services', async () => {
    const r = await meshlet('validate', 'examples/quickstart/mesh.yaml');
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('is valid: 2 services');
    expect(r.stdout).toMatch(/catalog\s+3 endpoints\s+lb=peak_ewma\s+timeout=5s\s+retries=2/);
    expect(r.stdout).toMatch(/reviews\s+4 endpoints\s+lb=peak_ewma\s+timeout=5s\s+retries=3/);
    expect(r.stdout).toContain('mesh sections: admin');
  });

  it('validate prints every problem of a bad config with its field path and exits 1', async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshlet-cli-'));
    const file = join(dir, 'bad.yaml');
    await writeFile(
      file,
      [
        'servics: {}',
        'defaults:',
        '  timeout: soon',
        'services:',
        '  reviews:',
        "    endpoints: ['127.0.0.1:99999', 'nohost']",
        '    lb: fastest',
        '  ratings:',
        "    endpoints: ['127.0.0.1:9000']",
        '    retry: { attempts: 50, on: [teapot] }',
        '    identity: reviews',
        '  details:',
        '    dns: { name: details.test, port: 80, recordType: MX }',
        '',
      ].join('\n'),
    );
    const r = await meshlet('validate', file);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('9 problems');
    for (const path of [
      'servics',
      'defaults.timeout',
      'services.reviews.lb',
      'services.reviews.endpoints[0]',
      'services.reviews.endpoints[1]',
      'services.ratings.retry.attempts',
      'services.ratings.retry.on[0]',
      'services.ratings.identity',
      'services.details.dns.recordType',
    ]) {
      expect(r.stdout).toMatch(new RegExp(`^  ${path.replace(/[.[\]]/g, '\\$&')}: `, 'm'));
    }
  });

  it('validate reports YAML syntax errors and unreadable files, and exits 1', async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshlet-cli-'));
    const file = join(dir, 'syntax.yaml');
    await writeFile(file, 'services: [1\n');
    // A "billion laughs" alias bomb: a coded problem, not a stack trace.
    const bomb = join(dir, 'bomb.yaml');
    await writeFile(bomb, ALIAS_BOMB);
    const r = await meshlet('validate', file, join(dir, 'missing.yaml'), bomb);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/syntax\.yaml: 1 problem\n {2}line \d+, column \d+: /);
    expect(r.stdout).toMatch(/missing\.yaml: 1 problem\n {2}\(root\): cannot read/);
    expect(r.stdout).toMatch(/bomb\.yaml: 1 problem\n {2}\(root\): cannot be loaded: .*alias/);
    expect(r.stderr).not.toMatch(/ReferenceError|\n\s+at /);
  });

  it('validate without a file is a usage error (exit 2)', async () => {
    const r = await meshlet('validate');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Usage: meshlet validate');
  });

  it('prints help and version, and rejects unknown commands', async () => {
    const [help, version, unknown] = await Promise.all([
      meshlet('--help'),
      meshlet('--version'),
      meshlet('frobnicate'),
    ]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/Commands:\n(.|\n)*demo(.|\n)*validate/);
    expect(help.stdout).toMatch(/^ {2}certs /m);
    expect(help.stdout).toMatch(/^ {2}control-plane /m);
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command "frobnicate"');
  });

  it('demo says where the demo lives when @meshlet/demo is not installed, and exits 1', async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshlet-cli-'));
    const r = await meshletIn(dir, 'demo', '--duration', '1');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('@meshlet/demo is not installed here');
    expect(r.stderr).toContain('npx @meshlet/demo');
    expect(r.stdout).toBe('');
  });

  it('demo -- --duration 3 runs the quickstart as `pnpm demo` does and exits 0', async () => {
    const r = await meshlet('demo', '--', '--duration', '3');
    expect(r.stdout).toMatch(/^\[ {2}1s\] /m);
    expect(r.stdout).toContain('summary after');
    expect(r.stdout).toContain('PASS');
    expect(r.code).toBe(0);
  });
});
