import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isConfigError, parseConfig } from '@meshlet/core';
import { afterEach, describe, expect, it } from 'vitest';
import { bootstrapFromEnv, parseBootstrap, type XdsSettings } from '../src/index.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const BOOT = {
  xds_servers: [
    {
      server_uri: 'cp-a:15010',
      channel_creds: [{ type: 'google_default' }, { type: 'insecure' }],
      server_features: ['xds_v3'],
    },
    {
      server_uri: 'cp-b:15012',
      channel_creds: [
        {
          type: 'tls',
          config: {
            ca_certificate_file: 'ca.pem',
            certificate_file: 'cert.pem',
            private_key_file: 'key.pem',
          },
        },
      ],
      server_features: ['ignore_resource_deletion'],
    },
  ],
  node: {
    id: 'pod-1',
    cluster: 'c',
    metadata: { A: 'b' },
    locality: { region: 'r', zone: 'z', sub_zone: 's' },
  },
};

describe('gRPC xDS bootstrap', () => {
  it('parses servers in order, the first supported credentials, node id/metadata/locality', () => {
    const b = parseBootstrap(BOOT, 'test', '/etc/xds');
    expect(b.servers).toEqual([
      { uri: 'cp-a:15010', creds: { type: 'insecure' }, ignoreResourceDeletion: false },
      {
        uri: 'cp-b:15012',
        creds: {
          type: 'tls',
          caFile: '/etc/xds/ca.pem',
          certFile: '/etc/xds/cert.pem',
          keyFile: '/etc/xds/key.pem',
        },
        ignoreResourceDeletion: true,
      },
    ]);
    expect(b.node).toEqual({
      id: 'pod-1',
      cluster: 'c',
      metadata: { A: 'b' },
      locality: { region: 'r', zone: 'z', subZone: 's' },
    });
  });

  it('names every bad field', () => {
    let err: unknown;
    try {
      parseBootstrap(
        {
          xds_servers: [
            { channel_creds: [] },
            { server_uri: 'x', channel_creds: [{ type: 'tls', config: { certificate_file: 'c' } }] },
          ],
        },
        'b',
      );
    } catch (e) {
      err = e;
    }
    expect(isConfigError(err)).toBe(true);
    const paths = (err as { issues: Array<{ path: string }> }).issues.map((i) => i.path);
    expect(paths).toEqual(['xds_servers[0].server_uri', 'xds_servers[1].channel_creds[0].config']);
  });

  it('reads GRPC_XDS_BOOTSTRAP (a file) before GRPC_XDS_BOOTSTRAP_CONFIG (inline)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'xds-boot-'));
    dirs.push(dir);
    const file = join(dir, 'bootstrap.json');
    writeFileSync(file, JSON.stringify(BOOT));
    const inline = JSON.stringify({ ...BOOT, node: { id: 'inline' } });
    expect(bootstrapFromEnv({ GRPC_XDS_BOOTSTRAP: file, GRPC_XDS_BOOTSTRAP_CONFIG: inline })?.node.id).toBe(
      'pod-1',
    );
    expect(bootstrapFromEnv({ GRPC_XDS_BOOTSTRAP_CONFIG: inline })?.node.id).toBe('inline');
    expect(bootstrapFromEnv({})).toBeUndefined();
    expect(() => bootstrapFromEnv({ GRPC_XDS_BOOTSTRAP_CONFIG: '{' })).toThrow(
      /GRPC_XDS_BOOTSTRAP_CONFIG is not JSON/,
    );
  });

  it('the `xds:` mesh config section: bootstrap object, servers shorthand, timers, hosts', () => {
    const c = parseConfig({
      xds: {
        servers: ['127.0.0.1:18000', '127.0.0.1:18001'],
        node: { id: 'me' },
        resourceTimeout: '2s',
        hosts: ['*.svc'],
      },
    });
    const s = c.extensions.xds as XdsSettings;
    expect(s.bootstrap?.servers.map((x) => x.uri)).toEqual(['127.0.0.1:18000', '127.0.0.1:18001']);
    expect(s.bootstrap?.node.id).toBe('me');
    expect(s.resourceTimeoutMs).toBe(2000);
    expect(s.hosts).toEqual(['*.svc']);
    let err: unknown;
    try {
      parseConfig({ xds: { bootstrap: { xds_servers: [] }, resourceTimeout: 'soon', bogus: 1 } });
    } catch (e) {
      err = e;
    }
    expect((err as { issues: Array<{ path: string }> }).issues.map((i) => i.path).sort()).toEqual([
      'xds.bogus',
      'xds.bootstrap.xds_servers',
      'xds.resourceTimeout',
    ]);
  });
});
