import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CDS_TYPE, type ClusterUpdate, LDS_TYPE, parseBootstrap, XdsClient } from '@meshlet/xds';
import { afterEach, describe, expect, it } from 'vitest';
import { parseControlPlaneConfig, runControlPlaneCommand, startControlPlane } from '../src/index.js';

let cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

async function until(fn: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'meshlet-cp-'));
  cleanup.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

describe('control-plane config', () => {
  it('names every bad field path', () => {
    let err: unknown;
    try {
      parseControlPlaneConfig({
        services: {
          reviews: {
            endpoints: ['nope'],
            lb: 'fastest',
            identity: 'reviews',
            routes: [
              { match: { prefix: '/', path: '/x' }, cluster: 'missing' },
              { weighted: { reviews: -1 } },
              {
                match: { headers: [{ name: 'x', exact: 'a', regex: '(' }] },
                fault: { abort: { status: 99 } },
              },
            ],
          },
        },
      });
    } catch (e) {
      err = e;
    }
    const paths = (err as { issues: Array<{ path: string }> }).issues.map((i) => i.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        'services.reviews.endpoints[0]',
        'services.reviews.lb',
        'services.reviews.identity',
        'services.reviews.routes[0].match',
        'services.reviews.routes[1].weighted.reviews',
        'services.reviews.routes[2].match.headers[0]',
        'services.reviews.routes[2].match.headers[0].regex',
        'services.reviews.routes[2].fault.abort.status',
        'services.reviews.routes[0]',
      ]),
    );
  });

  it("route and header regexes are RE2 within the clients' program-size limit", () => {
    let err: unknown;
    try {
      parseControlPlaneConfig({
        services: {
          reviews: {
            endpoints: ['127.0.0.1:9001'],
            routes: [
              { match: { regex: '/(a)\\1' } },
              { match: { headers: [{ name: 'x', regex: 'a{150}' }] } },
              { match: { regex: '/api/(?!admin).*' } },
            ],
          },
        },
      });
    } catch (e) {
      err = e;
    }
    const issues = (err as { issues: Array<{ path: string; message: string }> }).issues;
    expect(issues).toEqual(
      expect.arrayContaining([
        { path: 'services.reviews.routes[0].match.regex', message: expect.stringMatching(/backreferences/) },
        {
          path: 'services.reviews.routes[1].match.headers[0].regex',
          message: expect.stringMatching(/program size 152, over the limit of 100/),
        },
        { path: 'services.reviews.routes[2].match.regex', message: expect.stringMatching(/lookarounds/) },
      ]),
    );
  });
});

describe('serving a mesh YAML file', () => {
  it('pushes each valid change of the watched file and keeps the last good one on errors', async () => {
    const dir = tmp();
    const file = join(dir, 'mesh.yaml');
    writeFileSync(file, 'services:\n  reviews:\n    endpoints: ["127.0.0.1:9001"]\n');
    const events: string[] = [];
    const cp = await startControlPlane({ configFile: file, onEvent: (e) => events.push(e.kind) });
    cleanup.push(() => cp.close());
    const c = new XdsClient(
      parseBootstrap(
        {
          xds_servers: [{ server_uri: cp.address, channel_creds: [{ type: 'insecure' }] }],
          node: { id: 'w' },
        },
        't',
      ),
    );
    cleanup.push(() => c.close());
    const seen: ClusterUpdate[] = [];
    c.watch<ClusterUpdate>(CDS_TYPE, 'reviews', { onUpdate: (u) => seen.push(u) });
    await until(() => seen.length === 1, 'first version');
    expect(seen[0]?.lb.policy).toBe('round_robin');
    // An atomic replace (editors, ConfigMaps) with a new lb policy.
    writeFileSync(
      join(dir, 'next.yaml'),
      'services:\n  reviews:\n    endpoints: ["127.0.0.1:9001"]\n    lb: least_request\n',
    );
    renameSync(join(dir, 'next.yaml'), file);
    await until(() => seen.length === 2, 'pushed change');
    expect(seen[1]?.lb.policy).toBe('least_request');
    expect(cp.version).toBe('2');
    writeFileSync(file, 'services:\n  reviews:\n    lb: 7\n');
    await until(() => cp.lastError !== undefined, 'config error');
    expect(cp.lastError).toMatch(/services\.reviews/);
    expect(cp.version).toBe('2');
    expect(events).toContain('configError');
  });

  it('runControlPlaneCommand serves --config on --port until stopped', async () => {
    const dir = tmp();
    const file = join(dir, 'mesh.yaml');
    writeFileSync(
      file,
      'services:\n  reviews:\n    endpoints: ["127.0.0.1:9001"]\n    inbound: ["0.0.0.0:9080"]\n',
    );
    let out = '';
    let errOut = '';
    const ac = new AbortController();
    const io = {
      stdout: { write: (t: string) => (out += t) },
      stderr: { write: (t: string) => (errOut += t) },
      signal: ac.signal,
    };
    const done = runControlPlaneCommand(
      [
        '--config',
        file,
        '--port',
        '0',
        '--host',
        '127.0.0.1',
        '--server-listener-template',
        'example/inbound/%s',
      ],
      io,
    );
    await until(() => /listening on 127\.0\.0\.1:\d+/.test(out), 'listening');
    const address = /listening on (\S+)/.exec(out)?.[1] as string;
    const c = new XdsClient(
      parseBootstrap(
        {
          xds_servers: [{ server_uri: address, channel_creds: [{ type: 'insecure' }] }],
          node: { id: 'cli' },
          server_listener_resource_name_template: 'example/inbound/%s',
        },
        't',
      ),
    );
    cleanup.push(() => c.close());
    let got = 0;
    c.watch(CDS_TYPE, 'reviews', { onUpdate: () => got++ });
    // The service's inbound listener, named by the template given on the command line.
    c.watch(LDS_TYPE, 'example/inbound/0.0.0.0:9080', { onUpdate: () => got++ });
    await until(() => got === 2, 'served by the command');
    ac.abort();
    expect(await done).toBe(0);
    expect(errOut).toBe('');
    expect(await runControlPlaneCommand([], io)).toBe(2);
    expect(errOut).toMatch(/--config is required/);
    expect(await runControlPlaneCommand(['--config', file, '--server-listener-template', 'x'], io)).toBe(2);
    expect(errOut).toMatch(/--server-listener-template must contain %s/);
  });
});
