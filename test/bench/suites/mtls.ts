/**
 * mTLS cost: mesh fetch over mTLS vs a raw undici Pool with the same TLS settings (same key,
 * certificate, trust bundle, TLS versions), the cost of one handshake through meshlet's connector
 * vs `tls.connect`, and the event-loop stall while certificates rotate under traffic.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { createSecureContext, connect as tlsConnect } from 'node:tls';
import { Pool, fetch as undiciFetch } from 'undici';
import { createMesh } from '../../../packages/meshlet/src/index.js';
import {
  CertificateSource,
  createCa,
  createHttpsServer,
  createTlsConnector,
  issueWorkloadCertificate,
  readMaterial,
  rotateCertDirectory,
  validateMaterial,
  writeCertDirectory,
} from '../../../packages/tls/src/index.js';
import type { BenchSuite } from '../lib.js';

const SERVER_ID = 'spiffe://cluster.local/ns/default/sa/reviews';
const CLIENT_ID = 'spiffe://cluster.local/ns/default/sa/productpage';

async function run(quick: boolean) {
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-bench-mtls-'));
  const ca = await createCa();
  const serverDir = join(dir, 'server');
  const clientDir = join(dir, 'client');
  const s = await issueWorkloadCertificate({ ca, spiffeId: SERVER_ID });
  const c = await issueWorkloadCertificate({ ca, spiffeId: CLIENT_ID });
  await writeCertDirectory(serverDir, { ...s, ca: ca.cert });
  await writeCertDirectory(clientDir, { ...c, ca: ca.cert });
  const serverSource = new CertificateSource({ dir: serverDir, debounceMs: 10 }).start();
  const body = Buffer.from('{"ok":true}');
  const server = createHttpsServer({ source: serverSource, keepAliveTimeout: 30_000 }, (_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const connections = 8;
  const mesh = await createMesh({
    tls: { dir: clientDir, debounce: '10ms' },
    services: {
      reviews: {
        endpoints: [`127.0.0.1:${port}`],
        identity: SERVER_ID,
        connection: { maxPerEndpoint: connections },
      },
    },
  });
  await mesh.ready();
  const raw = new Pool(`https://127.0.0.1:${port}`, {
    connections,
    connect: {
      ca: ca.cert,
      cert: c.cert,
      key: c.key,
      minVersion: 'TLSv1.2',
      rejectUnauthorized: true,
      checkServerIdentity: () => undefined,
    },
  });
  const rawUrl = `https://127.0.0.1:${port}/`;

  const concurrency = 16;
  async function burst(n: number, one: () => Promise<unknown>): Promise<number> {
    let left = n;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (left-- > 0) await one();
      }),
    );
    return (n / (performance.now() - t0)) * 1000;
  }
  const meshOne = async () => {
    const r = await mesh.fetch('http://reviews/');
    await r.arrayBuffer();
  };
  const rawOne = async () => {
    const r = await undiciFetch(rawUrl, { dispatcher: raw });
    await r.arrayBuffer();
  };

  // Warm up both (connections, JIT), then interleave rounds.
  await burst(quick ? 50 : 2000, meshOne);
  await burst(quick ? 50 : 2000, rawOne);
  const rounds = quick ? 2 : 8;
  const perRound = quick ? 150 : 6000;
  const meshRps: number[] = [];
  const rawRps: number[] = [];
  for (let i = 0; i < rounds; i++) {
    if (i % 2 === 0) {
      meshRps.push(await burst(perRound, meshOne));
      rawRps.push(await burst(perRound, rawOne));
    } else {
      rawRps.push(await burst(perRound, rawOne));
      meshRps.push(await burst(perRound, meshOne));
    }
  }
  const median = (xs: number[]) => {
    const a = [...xs].sort((x, y) => x - y);
    return a[Math.floor(a.length / 2)] as number;
  };
  const ratio = median(meshRps) / median(rawRps);

  // Handshake cost: meshlet's connector (SecureContext + SPIFFE check) vs tls.connect.
  const clientSource = new CertificateSource({ dir: clientDir, watch: false });
  const connector = createTlsConnector(clientSource, { identity: SERVER_ID, maxCachedSessions: 0 });
  const handshakes = quick ? 8 : 300;
  const viaConnector = () =>
    new Promise<void>((resolve, reject) =>
      connector(
        {
          hostname: '127.0.0.1',
          host: '127.0.0.1',
          protocol: 'https:',
          port: String(port),
          servername: '',
        } as never,
        (err, socket) => {
          if (err) reject(err);
          else {
            socket?.destroy();
            resolve();
          }
        },
      ),
    );
  const viaTls = () =>
    new Promise<void>((resolve, reject) => {
      const sock = tlsConnect(
        {
          host: '127.0.0.1',
          port,
          ca: ca.cert,
          cert: c.cert,
          key: c.key,
          checkServerIdentity: () => undefined,
        },
        () => {
          sock.destroy();
          resolve();
        },
      );
      sock.on('error', reject);
    });
  const timeEach = async (fn: () => Promise<void>) => {
    const t0 = performance.now();
    for (let i = 0; i < handshakes; i++) await fn();
    return (performance.now() - t0) / handshakes;
  };
  await timeEach(viaConnector);
  await timeEach(viaTls);
  const hsMesh = await timeEach(viaConnector);
  const hsRaw = await timeEach(viaTls);

  // Event-loop stall while rotating (both directories, via ..data) under traffic.
  const rotations = quick ? 1 : 10;
  let running = true;
  let failures = 0;
  const load = Promise.all(
    Array.from({ length: 4 }, async () => {
      while (running) await meshOne().catch(() => failures++);
    }),
  );
  const baseline = monitorEventLoopDelay({ resolution: 1 });
  baseline.enable();
  await new Promise((r) => setTimeout(r, quick ? 100 : 1000));
  baseline.disable();
  // One histogram per rotation window: re-enabling a histogram can count the disabled gap.
  let delayMaxNs = 0;
  let delayP99Ns = 0;
  let worstRotationMs = 0;
  for (let i = 0; i < rotations; i++) {
    const rotated = new Promise<void>((resolve) => {
      const off = serverSource.on('rotate', () => {
        off();
        resolve();
      });
    });
    // Issue the certificate first (crypto, not the part under test), then measure the swap.
    const next = await issueWorkloadCertificate({ ca, spiffeId: SERVER_ID });
    const during = monitorEventLoopDelay({ resolution: 1 });
    during.enable();
    const t0 = performance.now();
    await writeCertDirectory(serverDir, { ...next, ca: ca.cert });
    await rotated;
    worstRotationMs = Math.max(worstRotationMs, performance.now() - t0);
    during.disable();
    delayMaxNs = Math.max(delayMaxNs, during.max);
    delayP99Ns = Math.max(delayP99Ns, during.percentile(99));
    mesh.dispatcher.refreshConnections();
    await rotateCertDirectory(clientDir, { ca });
  }
  running = false;
  await load;
  // The synchronous steps of a rotation, measured directly: validation and building the
  // SecureContext (each runs in its own event-loop turn), median and max over the runs.
  const { raw: rawFiles } = await readMaterial(serverDir);
  const syncRuns = quick ? 10 : 200;
  const validateMs: number[] = [];
  const contextMs: number[] = [];
  for (let i = 0; i < syncRuns; i++) {
    const t0 = performance.now();
    const m = validateMaterial(rawFiles, { dir: serverDir });
    const t1 = performance.now();
    createSecureContext({ key: m.key, cert: m.cert, ca: m.ca });
    validateMs.push(t1 - t0);
    contextMs.push(performance.now() - t1);
  }
  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  const ms = (ns: number) => Math.round((ns / 1e6) * 100) / 100;

  await mesh.close();
  await raw.close();
  clientSource.close();
  serverSource.close();
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  rmSync(dir, { recursive: true, force: true });

  return {
    meshRps: Math.round(median(meshRps)),
    rawRps: Math.round(median(rawRps)),
    ratio: Math.round(ratio * 1000) / 1000,
    handshakeMsMesh: Math.round(hsMesh * 1000) / 1000,
    handshakeMsRaw: Math.round(hsRaw * 1000) / 1000,
    rotationLoopDelayMaxMs: ms(delayMaxNs),
    rotationLoopDelayP99Ms: ms(delayP99Ns),
    baselineLoopDelayMaxMs: ms(baseline.max),
    rotationWallMs: Math.round(worstRotationMs * 100) / 100,
    rotationFailures: failures,
    rotationValidateMedianMs: r3(median(validateMs)),
    rotationValidateMaxMs: r3(Math.max(...validateMs)),
    rotationContextMedianMs: r3(median(contextMs)),
    rotationContextMaxMs: r3(Math.max(...contextMs)),
  };
}

const suite: BenchSuite = {
  name: 'mtls',
  inQuick: true,
  async run({ quick }) {
    const r = await run(quick);
    return {
      results: r,
      summary: [
        `mTLS fetch: mesh ${r.meshRps} req/s vs raw undici ${r.rawRps} req/s = ${r.ratio}x (target >= 0.95x)`,
        `TLS handshake: meshlet connector ${r.handshakeMsMesh} ms vs tls.connect ${r.handshakeMsRaw} ms`,
        `rotation: event-loop delay max ${r.rotationLoopDelayMaxMs} ms (p99 ${r.rotationLoopDelayP99Ms} ms; idle-traffic baseline max ${r.baselineLoopDelayMaxMs} ms; target <= 5 ms), ${r.rotationFailures} failed requests; synchronous steps: validate ${r.rotationValidateMedianMs} ms median (max ${r.rotationValidateMaxMs}), SecureContext ${r.rotationContextMedianMs} ms median (max ${r.rotationContextMaxMs})`,
      ],
    };
  },
};
export default suite;
