/**
 * Instructions per mTLS handshake under callgrind (repeatable whatever the machine's load, unlike
 * the wall and CPU times of support/xds-handshake.ts), one path per run. Only the measured loop is
 * counted: after the setup and ten warm-up handshakes the process asks `callgrind_control` to zero
 * the counters, and after the loop to dump them (start-up, certificate issuance, the control plane
 * and the wait for the inbound listener vary from run to run by more than a few handshakes cost):
 *
 *   CALLGRIND_OUT=/tmp/hs valgrind --tool=callgrind --callgrind-out-file=/tmp/hs.%p --smc-check=all-non-file \
 *     node --predictable --conditions=meshlet-source --import tsx test/bench/support/handshake-callgrind.ts server-provider 100
 *
 * (`--predictable`: V8 compiles and collects on the main thread, so that its background threads'
 * work, which varies from run to run, does not land in one path's count and not another's.)
 * It prints `<path> <n> <instructions per handshake>` (client and server sides of each handshake
 * run in this process). Paths: `client-dir` (the `tls:` service connector), `client-provider` (an
 * xDS cluster's UpstreamTlsContext connector over the bootstrap's provider), `server-dir` (the
 * `tls:` HTTPS server), `server-provider` (meshlet's server under an inbound listener's STRICT
 * chain).
 */
import { control, lastDumpInstructions } from './callgrind-control.js';
import { handshakePaths } from './xds-handshake.js';

const which = process.argv[2] ?? 'server-provider';
const n = Number(process.argv[3] ?? 200);

const p = await handshakePaths();
const one = {
  'client-dir': p.clientDir,
  'client-provider': p.clientProvider,
  'server-dir': p.serverDir,
  'server-provider': p.serverProvider,
}[which];
if (one === undefined) throw new Error(`unknown path ${which}`);
for (let i = 0; i < 10; i++) await one();
await control('--zero');
for (let i = 0; i < n; i++) await one();
await control('--dump=measured');
const ir = lastDumpInstructions();
console.log(`${which} ${n} ${ir === undefined ? '(no dump found)' : Math.round(ir / n)}`);
await p.close();
