import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { adsService, deltaAdsMethod, RESOURCE_TYPES, UPSTREAM_TLS_TYPE } from '../src/index.js';
import { lookupType, lrsService } from '../src/protos.js';

const root = resolve(import.meta.dirname, '../../..');

describe('the generated xDS descriptor', () => {
  it('is what scripts/gen-xds-descriptor.mjs builds from the pinned .proto files', async () => {
    const run = await new Promise<{ code: number; out: string }>((done) =>
      execFile(
        process.execPath,
        ['scripts/gen-xds-descriptor.mjs', '--check'],
        { cwd: root },
        (err, stdout, stderr) => done({ code: err ? Number(err.code) : 0, out: stdout + stderr }),
      ),
    );
    expect(run.out).toContain('up to date');
    expect(run.code).toBe(0);
  });

  it('holds every resource type, the typed configs, both ADS methods and LRS', () => {
    for (const url of [...RESOURCE_TYPES, UPSTREAM_TLS_TYPE]) expect(lookupType(url).fullName).toMatch(/^\./);
    expect(adsService().service.StreamAggregatedResources?.path).toBe(
      '/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources',
    );
    expect(deltaAdsMethod().path).toBe(
      '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources',
    );
    expect(lrsService().service.StreamLoadStats?.path).toBe(
      '/envoy.service.load_stats.v3.LoadReportingService/StreamLoadStats',
    );
  });
});
