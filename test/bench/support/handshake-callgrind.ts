/**
 * Instructions per mTLS handshake under callgrind (repeatable whatever the machine's load, unlike
 * the wall and CPU times of support/xds-handshake.ts), one path per run. Run a path with two
 * handshake counts and subtract, so that start-up, certificate issuance and JIT compilation cancel
 * out:
 *
 *   for n in 50 250; do
 *     valgrind --tool=callgrind --callgrind-out-file=/dev/null --smc-check=all-non-file \
 *       node --conditions=meshlet-source --import tsx test/bench/support/handshake-callgrind.ts server-provider $n
 *   done   # (second "Collected" - first) / 200 = instructions per handshake
 *
 * Paths: `client-dir` (the `tls:` service connector), `client-provider` (an xDS cluster's
 * UpstreamTlsContext connector over the bootstrap's provider), `server-dir` (the `tls:` HTTPS
 * server), `server-provider` (meshlet's server under an inbound listener's STRICT chain).
 */
import { handshakePaths } from './xds-handshake.js';

const which = process.argv[2] ?? 'server-provider';
const n = Number(process.argv[3] ?? 100);
const p = await handshakePaths();
const one = {
  'client-dir': p.clientDir,
  'client-provider': p.clientProvider,
  'server-dir': p.serverDir,
  'server-provider': p.serverProvider,
}[which];
if (one === undefined) throw new Error(`unknown path ${which}`);
// Ten handshakes first on every run, so that the measured difference is steady-state code.
for (let i = 0; i < 10 + n; i++) await one();
await p.close();
