/**
 * Traces the `grpc` suite's balance scenario (three equal gRPC servers in their own process, 300
 * sequential calls through a fresh mesh with the default balancer, R runs): prints each run's
 * calls per server and, for runs where a server got fewer than M calls, every attempt with the
 * endpoint's estimate after it (peak, baseline, strikes) and the process's garbage collections
 * (kind, start, duration) — what pushed a server out, and for how long.
 *
 *   node --conditions=meshlet-source --import tsx test/bench/support/grpc-balance-trace.ts 40 45
 *
 * Arguments: runs R (default 20), M (default 45, i.e. 15% of 300).
 */
import { fork } from 'node:child_process';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import type { EndpointState } from '../../../packages/core/src/index.js';
import { createMeshClient } from '../../../packages/grpc/src/index.js';
import { EchoClient, echo } from '../../../packages/grpc/test/helpers.js';
import { createMesh } from '../../../packages/meshlet/src/index.js';

const runs = Number(process.argv[2] ?? 20);
const below = Number(process.argv[3] ?? 45);
let gcs: string[] = [];
const gcObserver = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const kind = (e as { detail?: { kind?: number } }).detail?.kind;
    gcs.push(`${e.startTime.toFixed(1)} gc kind=${kind} ${e.duration.toFixed(2)}ms`);
  }
});
gcObserver.observe({ entryTypes: ['gc'] });

const child = fork(new URL('./grpc-servers.mjs', import.meta.url), ['3', '0', '1'], {
  execArgv: [],
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
});
const ports = await new Promise<number[]>((resolve) =>
  child.once('message', (m) => resolve((m as { ports: number[] }).ports)),
);
for (let run = 0; run < runs; run++) {
  const mesh = await createMesh({ services: { equal: { endpoints: ports.map((p) => `127.0.0.1:${p}`) } } });
  const client = createMeshClient(EchoClient, 'mesh:///equal');
  await mesh.ready();
  const trace: string[] = [];
  let call = 0;
  mesh.events.on('attempt', (e) => {
    const ep = e.endpoint as EndpointState;
    trace.push(
      `${performance.now().toFixed(1)} call ${call} s${ports.indexOf(ep.endpoint.port)} ${e.durationMs.toFixed(3)}ms ` +
        `peak ${ep.ewmaMs.toFixed(3)} base ${ep.ewmaBaseMs.toFixed(3)} strikes ${ep.ewmaStrikes}`,
    );
  });
  gcs = [];
  const counts = [0, 0, 0];
  for (call = 0; call < 300; call++) {
    const reply = await echo(client, { text: 'x' });
    const n = Number(reply.server.slice(1));
    counts[n] = (counts[n] ?? 0) + 1;
  }
  client.close();
  await mesh.close();
  console.log(`run ${run}: ${counts.join('/')}`);
  if (Math.min(...counts) < below) console.log([...trace, ...gcs].join('\n'));
}
gcObserver.disconnect();
child.kill();
