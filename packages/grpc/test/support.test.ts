import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ErrorCodes, isMeshErrorCode } from '@meshlet/core';
import { afterEach, describe, expect, it } from 'vitest';
import {
  GRPC_JS_RANGE,
  grpcJsSupport,
  isSupportedGrpcJs,
  registerUnsupportedMeshResolver,
} from '../src/support.js';

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

/**
 * A directory whose node_modules holds a stand-in @grpc/grpc-js of `version` that records the
 * resolver registered for `mesh:` (the resolver API of grpc-js 1.13 and 1.14 is only what it calls).
 */
async function fakeInstall(version: string): Promise<string> {
  dir = await mkdtemp(join(tmpdir(), 'meshlet-grpcjs-'));
  const pkg = join(dir, 'node_modules/@grpc/grpc-js');
  await mkdir(join(pkg, 'build/src'), { recursive: true });
  await writeFile(
    join(pkg, 'package.json'),
    JSON.stringify({ name: '@grpc/grpc-js', version, main: 'build/src/index.js' }),
  );
  await writeFile(
    join(pkg, 'build/src/index.js'),
    `class Metadata {}
     const resolvers = {};
     module.exports = { Metadata, resolvers, experimental: { registerResolver(s, c) { resolvers[s] = c; } } };`,
  );
  return pathToFileURL(join(dir, 'app.js')).href;
}

describe('which grpc-js meshlet supports', () => {
  it('takes 1.x from 1.14.0 on', () => {
    expect(GRPC_JS_RANGE).toBe('^1.14.0');
    for (const v of ['1.14.0', '1.14.7', '1.15.0', '1.20.3-pre.1']) expect(isSupportedGrpcJs(v)).toBe(true);
    for (const v of ['1.13.4', '1.12.6', '1.10.0', '0.14.0', '2.0.0', 'x'])
      expect(isSupportedGrpcJs(v)).toBe(false);
  });

  it('finds the installed version without loading it, and explains a missing or old one with a coded error', async () => {
    expect(grpcJsSupport()).toMatchObject({ status: 'supported' });
    const old = grpcJsSupport(await fakeInstall('1.13.4'));
    expect(old.status).toBe('unsupported');
    if (old.status !== 'unsupported') return;
    expect(old.version).toBe('1.13.4');
    expect(isMeshErrorCode(old.error, ErrorCodes.PEER_DEPENDENCY)).toBe(true);
    expect(old.error.message).toMatch(
      /@grpc\/grpc-js 1\.13\.4 .* is not supported: meshlet needs \^1\.14\.0/,
    );

    const missing = grpcJsSupport(pathToFileURL(join(tmpdir(), 'nowhere', 'app.js')).href);
    if (missing.status !== 'missing') throw new Error(`expected missing, got ${missing.status}`);
    expect(isMeshErrorCode(missing.error, ErrorCodes.PEER_DEPENDENCY)).toBe(true);
    expect(missing.error.message).toContain('npm install @grpc/grpc-js@^1.14.0');
  });

  it('with an old grpc-js, mesh: targets fail UNAVAILABLE naming the problem, through either resolver API', async () => {
    const support = grpcJsSupport(await fakeInstall('1.12.6'));
    if (support.status !== 'unsupported') throw new Error(`expected unsupported, got ${support.status}`);
    registerUnsupportedMeshResolver(support);
    const { createRequire } = await import('node:module');
    const fake = createRequire(join(support.dir, 'package.json'))(support.dir) as {
      resolvers: Record<string, new (target: unknown, listener: unknown) => { updateResolution(): void }>;
    };
    const Resolver = fake.resolvers.mesh;
    if (!Resolver) throw new Error('no mesh: resolver registered');

    // grpc-js < 1.14: a listener object with onError
    const errors: { code: number; details: string }[] = [];
    new Resolver(
      { path: 'reviews' },
      { onError: (e: { code: number; details: string }) => errors.push(e) },
    ).updateResolution();
    // grpc-js 1.14+: a listener function taking StatusOr endpoints
    const results: { ok: boolean; error?: { code: number; details: string } }[] = [];
    new Resolver({ path: 'reviews' }, (r: (typeof results)[number]) => results.push(r)).updateResolution();
    await new Promise((r) => setImmediate(r));
    expect(errors).toHaveLength(1);
    expect(errors[0]?.code).toBe(14);
    expect(errors[0]?.details).toContain('MESHLET_ERR_PEER_DEPENDENCY: @grpc/grpc-js 1.12.6');
    expect(results).toMatchObject([{ ok: false, error: { code: 14 } }]);
  });
});
