import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { CDS_TYPE, parseBootstrap, XdsClient } from '@meshlet/xds';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane } from '../src/index.js';

// Needs the `openssl` binary (Debian package `openssl`) to mint a throwaway CA and certificates.
let dir = '';
let cleanup: Array<() => unknown> = [];

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
}

function issue(name: string, san: string): void {
  openssl(
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.csr`,
    '-subj',
    `/CN=${name}`,
  );
  writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
  openssl(
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    `${name}.crt`,
    '-days',
    '1',
    '-extfile',
    `${name}.ext`,
  );
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'meshlet-xds-tls-'));
  openssl(
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-subj',
    '/CN=test-ca',
    '-days',
    '1',
  );
  issue('server', 'DNS:localhost,IP:127.0.0.1');
  issue('client', 'URI:spiffe://test/ns/default/sa/client');
  return () => rmSync(dir, { recursive: true, force: true });
});

afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

async function mtlsPlane() {
  const read = (f: string) => readFileSync(join(dir, f));
  const cp = await startControlPlane({
    host: '127.0.0.1',
    config: { services: { reviews: { endpoints: ['127.0.0.1:9001'] } } },
    credentials: grpc.ServerCredentials.createSsl(
      read('ca.crt'),
      [{ cert_chain: read('server.crt'), private_key: read('server.key') }],
      true,
    ),
  });
  cleanup.push(() => cp.close());
  return cp;
}

function tlsClient(port: number, config: Record<string, string>): XdsClient {
  const c = new XdsClient(
    parseBootstrap(
      {
        xds_servers: [{ server_uri: `localhost:${port}`, channel_creds: [{ type: 'tls', config }] }],
        node: { id: 'tls' },
      },
      'test',
      dir,
    ),
    { backoff: { baseMs: 20, maxMs: 50 } },
  );
  cleanup.push(() => c.close());
  return c;
}

async function until(fn: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('channel credentials to the xDS server', () => {
  it('mTLS from files (gRPC file_watcher config keys) connects and ACKs', async () => {
    const cp = await mtlsPlane();
    const c = tlsClient(cp.port, {
      ca_certificate_file: 'ca.crt',
      certificate_file: 'client.crt',
      private_key_file: 'client.key',
    });
    let got = 0;
    c.watch(CDS_TYPE, 'reviews', { onUpdate: () => got++ });
    await until(() => got === 1, 'cluster over mTLS');
    expect(c.dump().connected).toBe(true);
  });

  it('without a client certificate the server refuses the stream (no plaintext fallback)', async () => {
    const cp = await mtlsPlane();
    const c = tlsClient(cp.port, { ca_certificate_file: 'ca.crt' });
    let got = 0;
    c.watch(CDS_TYPE, 'reviews', { onUpdate: () => got++ });
    await until(() => c.dump().lastError !== undefined && c.dump().streams >= 2, 'refused streams');
    expect(got).toBe(0);
    expect(c.dump().connected).toBe(false);
    expect(cp.clients()).toEqual([]);
  });
});
