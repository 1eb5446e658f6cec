import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { nextEvent } from '../../../test/helpers/events.js';
import { Mesh, parseConfig } from '../src/index.js';

describe('file discovery', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  function setup(initial: string, extra: Record<string, unknown> = {}) {
    const dir = mkdtempSync(join(tmpdir(), 'meshlet-file-'));
    const file = join(dir, 'reviews.yaml');
    writeFileSync(file, initial);
    const mesh = new Mesh(
      parseConfig({ services: { reviews: { file: { path: file, pollInterval: '200ms', ...extra } } } }),
    );
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    cleanups.push(() => mesh.close());
    return { dir, file, mesh };
  }

  const ids = (mesh: Mesh) => mesh.service('reviews')?.endpoints.map((e) => e.id) ?? [];

  it('reads the file at start and applies edits', async () => {
    const { file, mesh } = setup('- 127.0.0.1:9001\n- 127.0.0.1:9002\n');
    await mesh.ready();
    expect(ids(mesh)).toEqual(['127.0.0.1:9001', '127.0.0.1:9002']);
    const updated = nextEvent(mesh.events, 'endpoints', (e) => e.service === 'reviews');
    writeFileSync(
      file,
      'endpoints:\n  - 127.0.0.1:9003\n  - { address: 127.0.0.1, port: 9004, weight: 5 }\n',
    );
    const ev = await updated;
    expect(ev.added).toBe(2);
    expect(ev.removed).toBe(2);
    expect(ids(mesh)).toEqual(['127.0.0.1:9003', '127.0.0.1:9004']);
    expect(mesh.service('reviews')?.endpoint('127.0.0.1:9004')?.endpoint.weight).toBe(5);
  });

  it('versions each read by its content hash, and carries instance names through edits', async () => {
    const text = '- { address: 127.0.0.1, port: 9001, name: reviews-a }\n';
    const { file, mesh } = setup(text);
    await mesh.ready();
    const rt = mesh.service('reviews');
    const sha = createHash('sha256').update(text).digest('hex').slice(0, 12);
    expect(rt?.discovery.version).toBe(`sha256:${sha}`);
    expect(mesh.snapshot().services.reviews?.endpoints[0]?.name).toBe('reviews-a');
    // Only the name changes: the endpoint keeps its state, and shows the new name.
    const before = rt?.endpoints[0];
    const updated = nextEvent(mesh.events, 'endpoints', (e) => e.service === 'reviews');
    writeFileSync(file, '- { address: 127.0.0.1, port: 9001, name: reviews-b }\n');
    await updated;
    expect(rt?.endpoints[0]).toBe(before);
    expect(rt?.endpoints[0]?.endpoint.name).toBe('reviews-b');
    expect(rt?.discovery.version).toMatch(/^sha256:[0-9a-f]{12}$/);
    expect(rt?.discovery.version).not.toBe(`sha256:${sha}`);
  });

  it('keeps the last good endpoints on a bad edit and reports why', async () => {
    const { file, mesh } = setup('- 127.0.0.1:9001\n');
    await mesh.ready();
    const failed = nextEvent(mesh.events, 'discoveryError');
    writeFileSync(file, '- 127.0.0.1:9001\n- not-an-endpoint\n');
    const ev = await failed;
    expect(ev.error.message).toContain('endpoints[1]');
    expect(ev.error.message).toContain('has no port');
    expect(ids(mesh)).toEqual(['127.0.0.1:9001']);
    const snap = mesh.snapshot().services.reviews;
    expect(snap?.discovery.lastError).toContain('keeping the last good endpoints');
    // A YAML syntax error is reported with its line.
    const syntax = nextEvent(mesh.events, 'discoveryError');
    writeFileSync(file, '- [unclosed\n');
    expect((await syntax).error.message).toMatch(/line \d+/);
    // A good edit recovers.
    const recovered = nextEvent(mesh.events, 'endpoints');
    writeFileSync(file, '- 127.0.0.1:9005\n');
    await recovered;
    expect(ids(mesh)).toEqual(['127.0.0.1:9005']);
  });

  it('keeps the endpoints when the file is removed and picks it up when it returns', async () => {
    const { file, mesh } = setup('- 127.0.0.1:9001\n');
    await mesh.ready();
    const failed = nextEvent(mesh.events, 'discoveryError');
    unlinkSync(file);
    expect((await failed).error.message).toContain('does not exist');
    expect(ids(mesh)).toEqual(['127.0.0.1:9001']);
    const back = nextEvent(mesh.events, 'endpoints');
    writeFileSync(file, '- 127.0.0.1:9009\n');
    await back;
    expect(ids(mesh)).toEqual(['127.0.0.1:9009']);
  });

  it('follows atomic renames and Kubernetes ..data symlink swaps', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshlet-cm-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    // The ConfigMap volume layout: ..2026_1/endpoints.yaml, ..data -> ..2026_1, endpoints.yaml -> ..data/endpoints.yaml
    const v1 = join(dir, '..2026_1');
    const v2 = join(dir, '..2026_2');
    for (const [d, port] of [
      [v1, 9001],
      [v2, 9002],
    ] as const) {
      rmSync(d, { recursive: true, force: true });
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, 'endpoints.yaml'), `- 127.0.0.1:${port}\n`);
    }
    symlinkSync('..2026_1', join(dir, '..data'));
    symlinkSync('..data/endpoints.yaml', join(dir, 'endpoints.yaml'));
    const mesh = new Mesh(parseConfig({ services: { reviews: { file: join(dir, 'endpoints.yaml') } } }));
    cleanups.push(() => mesh.close());
    await mesh.ready();
    expect(ids(mesh)).toEqual(['127.0.0.1:9001']);
    const swapped = nextEvent(mesh.events, 'endpoints');
    symlinkSync('..2026_2', join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    await swapped;
    expect(ids(mesh)).toEqual(['127.0.0.1:9002']);
  });

  it('selects one service from a shared file with key', async () => {
    const { mesh } = setup('reviews:\n  - 127.0.0.1:1\nratings:\n  - 127.0.0.1:2\n', { key: 'ratings' });
    await mesh.ready();
    expect(ids(mesh)).toEqual(['127.0.0.1:2']);
  });

  it('stops watching on close', async () => {
    const { file, mesh } = setup('- 127.0.0.1:9001\n');
    await mesh.ready();
    await mesh.close();
    let updates = 0;
    mesh.events.on('endpoints', () => updates++);
    writeFileSync(file, '- 127.0.0.1:9002\n');
    // Close is synchronous for file sources: nothing is scheduled afterwards.
    expect(process.getActiveResourcesInfo().filter((r) => r === 'FSEvent' || r === 'StatWatcher')).toEqual(
      [],
    );
    expect(updates).toBe(0);
  });
});
