import { type ChildProcess, spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

// The examples as their READMEs run them, from their own directories, importing meshlet by package
// name (ports picked free instead of the READMEs' fixed ones).
const root = resolve(import.meta.dirname, '../..');
const tsx = join(root, 'node_modules/tsx/dist/cli.mjs');

const children: ChildProcess[] = [];
afterEach(async () => {
  await Promise.all(
    children.splice(0).map(
      (c) =>
        new Promise<void>((done) => {
          if (c.exitCode !== null || c.signalCode !== null) return done();
          c.once('exit', () => done());
          c.kill('SIGTERM');
          setTimeout(() => c.kill('SIGKILL'), 5_000).unref();
        }),
    ),
  );
});

/** Starts `tsx file` in `dir`; resolves with the first stdout match of `pattern`. */
function start(
  dir: string,
  file: string,
  env: Record<string, string>,
  pattern: RegExp,
): Promise<RegExpMatchArray> {
  const child = spawn(process.execPath, [tsx, '--conditions=meshlet-source', file], {
    cwd: dir,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  return new Promise((done, fail) => {
    const onData = (chunk: Buffer) => {
      out += chunk;
      const m = pattern.exec(out);
      if (m) done(m);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (chunk: Buffer) => {
      out += chunk;
    });
    child.once('exit', (code) => fail(new Error(`${file} exited ${code} before ${pattern}:\n${out}`)));
  });
}

describe('examples/istio-proxyless, as its README runs it', { timeout: 60_000 }, () => {
  it('cluster.ts (reviews + control plane) and app.ts (productpage over xDS) route as the VirtualService says', async () => {
    const dir = join(root, 'examples/istio-proxyless');
    const [, bootstrap] = await start(
      dir,
      'cluster.ts',
      { REVIEWS_PORT: '0', XDS_PORT: '0' },
      /GRPC_XDS_BOOTSTRAP_CONFIG='(.*)'/,
    );
    const [, url] = await start(
      dir,
      'app.ts',
      { GRPC_XDS_BOOTSTRAP_CONFIG: bootstrap as string, PORT: '0', HOST: '127.0.0.1' },
      /listening on (http:\/\/\S+)/,
    );
    const version = async (headers: Record<string, string> = {}) =>
      ((await (await fetch(url as string, { headers })).json()) as { version?: string }).version;
    const seen = new Set<string | undefined>();
    for (let i = 0; i < 20; i++) seen.add(await version());
    expect([...seen].every((v) => v === 'v1' || v === 'v2')).toBe(true);
    expect(seen.has('v1')).toBe(true);
    expect(await version({ 'end-user': 'jason' })).toBe('v3');
  });
});
