import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createMesh } from '../../packages/meshlet/src/index.js';
import { getTelemetry } from '../../packages/telemetry/src/index.js';
import {
  createCa,
  issueWorkloadCertificate,
  rotateCertDirectory,
  writeCertDirectory,
} from '../../packages/tls/src/index.js';
import { nextEvent } from '../helpers/events.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function expiryOf(text: string, dir: string): number | undefined {
  const line = text
    .split('\n')
    .find(
      (l) =>
        l.startsWith('meshlet_certificate_expiry_timestamp_seconds{') && l.includes(`certificate="${dir}"`),
    );
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('certificate expiry metric (tls + telemetry through createMesh)', () => {
  it('reports the mounted certificate expiry and follows rotation', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshlet-expiry-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const ca = await createCa();
    const spiffeId = 'spiffe://cluster.local/ns/default/sa/frontend';
    const leaf = await issueWorkloadCertificate({ ca, spiffeId, ttlMs: 3_600_000 });
    await writeCertDirectory(dir, { cert: leaf.cert, key: leaf.key, ca: ca.cert });
    const mesh = await createMesh({ tls: { dir }, services: { reviews: ['127.0.0.1:1'] } });
    cleanups.push(() => mesh.close());
    const tel = getTelemetry(mesh);
    if (!tel) throw new Error('telemetry not installed');
    const first = expiryOf(await tel.registry.metrics(), dir);
    expect(first).toBeGreaterThan(Date.now() / 1000);
    expect(await tel.registry.metrics()).toContain(`identity="${spiffeId}"`);

    const rotated = nextEvent(
      mesh.events,
      'log',
      (e) => e.scope === 'tls' && e.message.includes('rotated'),
      10_000,
    );
    await rotateCertDirectory(dir, { ca, ttlMs: 7_200_000 });
    await rotated;
    const second = expiryOf(await tel.registry.metrics(), dir);
    expect(second).toBeGreaterThan((first ?? 0) + 1800);
  });
});
