import { X509Certificate } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { type CreateMeshOptions, createMesh, type Mesh } from '../../packages/meshlet/src/index.js';
import {
  CertificateSource,
  createCa,
  createHttpsServer,
  getMeshTls,
  issueWorkloadCertificate,
  type PemPair,
  peerIdentity,
  type RejectionEvent,
  rotateCertDirectory,
  writeCertDirectory,
} from '../../packages/tls/src/index.js';
import { tempDir } from '../../packages/tls/test/helpers.js';

const SERVER_ID = 'spiffe://cluster.local/ns/default/sa/reviews';
const CLIENT_ID = 'spiffe://cluster.local/ns/default/sa/productpage';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const serialOf = (pem: string) => new X509Certificate(pem).serialNumber;

async function setup(ca: PemPair, options: CreateMeshOptions = {}) {
  const tmp = tempDir();
  cleanups.push(tmp.cleanup);
  const serverDir = join(tmp.dir, 'server');
  const clientDir = join(tmp.dir, 'client');
  const s = await issueWorkloadCertificate({ ca, spiffeId: SERVER_ID });
  const c = await issueWorkloadCertificate({ ca, spiffeId: CLIENT_ID });
  await writeCertDirectory(serverDir, { ...s, ca: ca.cert });
  await writeCertDirectory(clientDir, { ...c, ca: ca.cert });
  const source = new CertificateSource({ dir: serverDir, debounceMs: 20 }).start();
  cleanups.push(() => source.close());
  const server = createHttpsServer({ source }, (req, res) => {
    const socket = req.socket as TLSSocket;
    res.setHeader('content-type', 'application/json');
    res.end(
      JSON.stringify({
        peer: peerIdentity(req),
        server: (socket.getCertificate() as { serialNumber?: string }).serialNumber,
        client: socket.getPeerCertificate().serialNumber,
      }),
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  cleanups.push(() => server.closeAllConnections());
  const port = (server.address() as AddressInfo).port;
  const mesh = await createMesh(
    {
      tls: { dir: clientDir, debounce: '20ms' },
      services: { reviews: { endpoints: [`127.0.0.1:${port}`], identity: SERVER_ID } },
    },
    options,
  );
  cleanups.push(() => mesh.close());
  await mesh.ready();
  return { serverDir, clientDir, source, server, mesh };
}

interface Traffic {
  ok: number;
  failed: Error[];
  seen: Array<{ server: string; client: string; peer: string }>;
  /** Resolves once `n` more requests succeeded. */
  more(n: number): Promise<void>;
  stop(): Promise<void>;
}

/** Continuous traffic from `workers` concurrent loops. */
function traffic(mesh: Mesh, workers = 4): Traffic {
  let running = true;
  const waiters: Array<{ at: number; resolve: () => void }> = [];
  const t: Traffic = {
    ok: 0,
    failed: [],
    seen: [],
    more(n) {
      return new Promise((resolve) => waiters.push({ at: t.ok + n, resolve }));
    },
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
  const loop = async () => {
    while (running) {
      try {
        const res = await mesh.fetch('http://reviews/');
        t.seen.push((await res.json()) as Traffic['seen'][number]);
        t.ok++;
        for (let i = waiters.length - 1; i >= 0; i--) {
          const w = waiters[i] as (typeof waiters)[number];
          if (t.ok >= w.at) {
            waiters.splice(i, 1);
            w.resolve();
          }
        }
      } catch (err) {
        t.failed.push(err as Error);
        if (t.failed.length > 20) running = false;
        await new Promise((r) => setImmediate(r));
      }
    }
  };
  const loops = Array.from({ length: workers }, loop);
  cleanups.push(() => t.stop());
  return t;
}

function nextEvent<T>(subscribe: (fn: (e: T) => void) => () => void): Promise<T> {
  return new Promise((resolve) => {
    const off = subscribe((e) => {
      off();
      resolve(e);
    });
  });
}

describe('certificate rotation under continuous traffic', () => {
  it('swaps both sides through ..data with zero failed requests; new handshakes use the new certificates', async () => {
    const ca = await createCa();
    const { serverDir, clientDir, source, server, mesh } = await setup(ca);
    const tls = getMeshTls(mesh);
    expect(tls?.meshSource).toBeDefined();
    const t = traffic(mesh);
    await t.more(30);

    const serverRotated = nextEvent((fn) => source.on('rotate', fn));
    const clientRotated = nextEvent((fn) => tls?.onRotate(fn) ?? (() => {}));
    const newServer = await rotateCertDirectory(serverDir, { ca });
    const newClient = await rotateCertDirectory(clientDir, { ca });
    await Promise.all([serverRotated, clientRotated]);
    expect(source.current.serialNumber).toBe(serialOf(newServer.cert));
    expect(tls?.meshSource?.current.serialNumber).toBe(serialOf(newClient.cert));

    // Open connections keep working after the swap.
    await t.more(20);

    // A new handshake presents the new certificates in both directions.
    const handshake = new Promise<{ server: string; client: string }>((resolve) => {
      const on = (socket: TLSSocket) => {
        const server = (socket.getCertificate() as { serialNumber?: string }).serialNumber ?? '';
        const client = socket.getPeerCertificate().serialNumber;
        if (server === serialOf(newServer.cert) && client === serialOf(newClient.cert)) {
          serverOff();
          resolve({ server, client });
        }
      };
      const serverOff = () => server.off('secureConnection', on);
      server.on('secureConnection', on);
    });
    mesh.dispatcher.refreshConnections();
    await handshake;
    await t.more(20);
    await t.stop();

    expect(t.failed).toEqual([]);
    const last = t.seen.at(-1);
    expect(last).toEqual({
      peer: CLIENT_ID,
      server: serialOf(newServer.cert),
      client: serialOf(newClient.cert),
    });
  });

  it('rolls over to a new CA with a bundle holding the old and the new CA', async () => {
    const oldCa = await createCa({ commonName: 'old CA' });
    const newCa = await createCa({ commonName: 'new CA' });
    const { serverDir, clientDir, source, server, mesh } = await setup(oldCa);
    const tls = getMeshTls(mesh);
    const t = traffic(mesh);
    await t.more(20);
    const both = `${oldCa.cert}${newCa.cert}`;

    const step = async (serverCa: PemPair, clientCa: PemPair, bundle: string) => {
      const s = nextEvent((fn) => source.on('rotate', fn));
      const c = nextEvent((fn) => tls?.onRotate(fn) ?? (() => {}));
      await rotateCertDirectory(serverDir, { ca: serverCa, bundle });
      await rotateCertDirectory(clientDir, { ca: clientCa, bundle });
      await Promise.all([s, c]);
      mesh.dispatcher.refreshConnections();
      await t.more(20);
    };
    // 1. Distribute the new CA next to the old one (certificates still from the old CA).
    await step(oldCa, oldCa, both);
    expect(source.current.caCount).toBe(2);
    // 2. The server moves to the new CA first; the client (old CA) is still trusted and trusts it.
    await step(newCa, oldCa, both);
    // 3. The client moves too.
    await step(newCa, newCa, both);
    // 4. The old CA leaves the bundle.
    await step(newCa, newCa, newCa.cert);
    expect(source.current.caCount).toBe(1);
    const handshake = new Promise<string>((resolve) =>
      server.once('secureConnection', (s: TLSSocket) =>
        resolve(String(s.getPeerCertificate().issuer.CN ?? '')),
      ),
    );
    mesh.dispatcher.refreshConnections();
    expect(await handshake).toBe('new CA');
    await t.stop();
    expect(t.failed).toEqual([]);
  });

  it('keeps the last good certificate on a bad write and says why (log event, logger, snapshot)', async () => {
    const ca = await createCa();
    const other = await createCa({ commonName: 'stranger' });
    const lines: string[] = [];
    const { clientDir, mesh } = await setup(ca, {
      logger: pino({}, { write: (l: string) => lines.push(l) }),
    });
    const tls = getMeshTls(mesh);
    const before = tls?.meshSource?.current.serialNumber;
    const logs: Array<{ level: string; message: string; data?: unknown }> = [];
    mesh.events.on('log', (e) => {
      if (e.scope === 'tls') logs.push(e);
    });
    const t = traffic(mesh, 2);
    await t.more(10);
    const rejected = nextEvent<RejectionEvent>((fn) => tls?.meshSource?.on('reject', fn) ?? (() => {}));
    // A certificate from a CA that is not in the bundle: must not be used.
    const stray = await issueWorkloadCertificate({ ca: other, spiffeId: CLIENT_ID });
    await writeCertDirectory(clientDir, { ...stray, ca: ca.cert });
    const { error } = await rejected;
    expect((error as { code?: string }).code).toBe('MESHLET_ERR_TLS');
    expect((error as { details?: { reason?: string } }).details?.reason).toBe('untrusted_chain');
    expect(tls?.meshSource?.current.serialNumber).toBe(before);
    mesh.dispatcher.refreshConnections();
    await t.more(10);
    await t.stop();
    expect(t.failed).toEqual([]);
    expect(logs.some((l) => l.level === 'warn' && /rejected/.test(l.message))).toBe(true);
    expect(lines.map((l) => JSON.parse(l))).toContainEqual(
      expect.objectContaining({
        level: 40,
        scope: 'tls',
        dir: clientDir,
        reason: 'untrusted_chain',
        msg: expect.stringMatching(/^new certificates in .* rejected, keeping serial /),
      }),
    );
    const snap = mesh.snapshot().extensions.tls as {
      sources: Array<{ rejections: number; lastError?: string }>;
    };
    expect(snap.sources[0]?.rejections).toBe(1);
    expect(snap.sources[0]?.lastError).toMatch(/does not chain/);
  });
});
