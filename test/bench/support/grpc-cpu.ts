/**
 * Per-call CPU profile of the gRPC client path, for finding where meshlet's time goes:
 *
 *   node --conditions=meshlet-source --import tsx --cpu-prof --cpu-prof-dir=/tmp/p \
 *     test/bench/support/grpc-cpu.ts mesh 20000 10
 *   node test/bench/support/cpuprofile-groups.mjs /tmp/p/<the larger .cpuprofile> 100000
 *
 * Arguments: variant (`raw`: grpc-js to 127.0.0.1:port; `mesh`: `createMeshClient` on
 * `mesh:///bench`; `meshnt`: the same with `serviceTimeout: false`; `plain`: a plain grpc-js client
 * on `mesh:///bench`), calls per round,
 * concurrency. Runs 5 rounds after a warm-up and prints the client CPU per call of each; the echo
 * server runs in its own process (`grpc-servers.mjs`), so only the client is profiled. Profile the
 * variants one process each and compare self time per call (the groups script divides by the
 * number of calls): a CPU profile's self time of meshlet's own functions does not depend on how
 * loaded the machine is, unlike throughput.
 */
import { fork } from 'node:child_process';
import { type Client, credentials } from '@grpc/grpc-js';
import { createMeshClient } from '../../../packages/grpc/src/index.js';
import { EchoClient, echo } from '../../../packages/grpc/test/helpers.js';
import { createMesh } from '../../../packages/meshlet/src/index.js';

const variant = process.argv[2] ?? 'mesh';
const calls = Number(process.argv[3] ?? 20_000);
const concurrency = Number(process.argv[4] ?? 10);

const child = fork(new URL('./grpc-servers.mjs', import.meta.url), ['1', '0', '1'], {
  execArgv: [],
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
});
const ports = await new Promise<number[]>((resolve) =>
  child.once('message', (m) => resolve((m as { ports: number[] }).ports)),
);
const mesh = await createMesh({ services: { bench: { endpoints: [`127.0.0.1:${ports[0]}`] } } });
await mesh.ready();
const client: Client =
  variant === 'raw'
    ? new EchoClient(`127.0.0.1:${ports[0]}`, credentials.createInsecure())
    : variant === 'plain'
      ? new EchoClient('mesh:///bench', credentials.createInsecure())
      : variant === 'meshnt'
        ? createMeshClient(EchoClient, 'mesh:///bench', { serviceTimeout: false })
        : createMeshClient(EchoClient, 'mesh:///bench');

async function run(n: number): Promise<void> {
  let left = n;
  const worker = async () => {
    while (left-- > 0) await echo(client, { text: 'x' });
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

await run(2_000);
const perCall: number[] = [];
for (let r = 0; r < 5; r++) {
  const c0 = process.cpuUsage();
  await run(calls);
  const cpu = process.cpuUsage(c0);
  perCall.push((cpu.user + cpu.system) / calls);
}
perCall.sort((a, b) => a - b);
console.log(
  `${variant}: client CPU per call ${perCall.map((x) => x.toFixed(1)).join(' ')} us (median ${perCall[2]?.toFixed(1)})`,
);
client.close();
await mesh.close();
child.kill();
