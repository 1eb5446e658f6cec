/**
 * The load reports are the standard ones: grpc-js-xds (Google's xDS client for grpc-js), with its
 * experimental `weighted_round_robin` turned on (GRPC_EXPERIMENTAL_XDS_WRR_LB), gets
 * `client_side_weighted_round_robin` from meshlet's control plane, reads the per-call
 * `endpoint-load-metrics-bin` trailers of two meshlet gRPC servers — each in its own process, so
 * each reports its own load — and shifts traffic away from the one whose event loop is busy.
 * meshlet's own xDS client selects the same policy from the same control plane.
 *
 * grpc-js-xds reads its environment when it is loaded and registers itself process-wide: this
 * file runs alone (vitest's `forks` pool gives each file its own process).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { createRequire } from 'node:module';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ControlPlane, startControlPlane } from '../../packages/control-plane/src/index.js';
import { createMesh } from '../../packages/meshlet/src/index.js';
import { bootstrapJson, until } from './xds/helpers.js';

interface Backend {
  readonly name: string;
  readonly port: number;
  readonly child: ChildProcess;
}

async function backend(name: string, workMs: number): Promise<Backend> {
  const child = fork(new URL('../helpers/orca-server.ts', import.meta.url), [name, String(workMs)], {
    execArgv: ['--import', 'tsx', '--conditions=meshlet-source'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`${name} exited early (${code})`)));
    child.once('message', (m) => resolve((m as { port: number }).port));
  });
  child.removeAllListeners('exit');
  return { name, port, child };
}

const WHO_PATH = '/meshlet.test.Echo/Who';
let busy: Backend;
let idle: Backend;
let cp: ControlPlane;
let client: grpc.Client;

beforeAll(async () => {
  // A wide contrast: 30 ms of event loop a call against ~0.
  [busy, idle] = await Promise.all([backend('busy', 30), backend('idle', 0)]);
  cp = await startControlPlane({
    config: {
      services: {
        orca: {
          endpoints: [`127.0.0.1:${busy.port}`, `127.0.0.1:${idle.port}`],
          lb: { policy: 'client_side_weighted_round_robin', blackoutPeriod: 0, weightUpdatePeriod: '100ms' },
        },
      },
    },
  });
  process.env.GRPC_EXPERIMENTAL_XDS_WRR_LB = 'true';
  process.env.GRPC_XDS_BOOTSTRAP_CONFIG = bootstrapJson([cp.address], 'grpc-js-xds');
  (createRequire(import.meta.url)('@grpc/grpc-js-xds') as { register(): void }).register();
  client = new grpc.Client('xds:///orca', grpc.credentials.createInsecure());
}, 30_000);

afterAll(async () => {
  client?.close();
  await cp?.close();
  for (const b of [busy, idle]) b?.child.kill('SIGTERM');
  delete process.env.GRPC_XDS_BOOTSTRAP_CONFIG;
  delete process.env.GRPC_EXPERIMENTAL_XDS_WRR_LB;
});

function who(): Promise<string> {
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(
      WHO_PATH,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.alloc(0),
      new grpc.Metadata(),
      { deadline: Date.now() + 10_000 },
      (err, res) => (err ? reject(err) : resolve(String(res))),
    ),
  );
}

/** `n` calls, four at a time; the share each server answered. */
async function shares(n: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i += 4)
    for (const w of await Promise.all([who(), who(), who(), who()])) out[w] = (out[w] ?? 0) + 1;
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v / n]));
}

describe('grpc-js-xds weighted_round_robin on meshlet servers’ ORCA reports', () => {
  it('shifts traffic away from the server whose event loop is busy', async () => {
    // Both serve while the first reports come in (weights need a report with qps > 0 from each).
    await shares(40);
    let last: Record<string, number> = {};
    // 80 calls a round: round robin's share would be 0.5 ± 0.056, so 0.75 is not reached by chance.
    // What made this flaky (the busy server got 97% for 30 s): when the busy server's report came
    // first, grpc-js gave the idle one, still without a weight, the period of weight 1 against the
    // busy one's ~30; the idle server, called about once a second, then sent reports of 100 ms
    // intervals in which it had finished nothing (qps 0, which A58 clients ignore), so it never got
    // a weight. Its reports now cover the intervals since it last finished a request, with the
    // loop time its requests took (not its idle baseline): its first report after one call gives
    // it a weight of ~1000s, and the next picker shifts the traffic (docs/load-aware.md).
    await until(
      async () => {
        last = await shares(80);
        return (last.idle ?? 0) >= 0.75;
      },
      25_000,
      'traffic to shift to the idle server',
    );
    // Round robin would split evenly; the busy server still gets its (small) weighted share.
    expect(last.idle).toBeGreaterThanOrEqual(0.75);
  }, 45_000);

  it('meshlet’s xDS client selects the same policy from the same control plane', async () => {
    const mesh = await createMesh(
      {},
      { env: { GRPC_XDS_BOOTSTRAP_CONFIG: bootstrapJson([cp.address], 'meshlet') } },
    );
    try {
      await mesh.ready();
      // An HTTP/1.1 request to a gRPC server fails, but it resolves the listener and its cluster.
      await mesh.fetch('http://orca/').then(
        (r) => r.arrayBuffer(),
        () => undefined,
      );
      await until(() => mesh.services().some((s) => s.name.includes('orca')), 5_000, 'the orca cluster');
      const rt = mesh.services().find((s) => s.name.includes('orca'));
      expect(rt?.policy.lb.policy).toBe('client_side_weighted_round_robin');
      expect(rt?.policy.lb.config).toMatchObject({ blackoutPeriodMs: 0, weightUpdatePeriodMs: 100 });
    } finally {
      await mesh.close();
    }
  });
});
