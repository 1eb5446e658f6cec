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
 * run in this process). `server` or `client` in place of a path measures both paths of that side
 * in one process, in alternating rounds, and prints their ratio: the figure to compare (separate
 * processes differ by several per cent whatever the path). Paths: `client-dir` (the `tls:` service connector), `client-provider` (an
 * xDS cluster's UpstreamTlsContext connector over the bootstrap's provider), `server-dir` (the
 * `tls:` HTTPS server), `server-provider` (meshlet's server under an inbound listener's STRICT
 * chain).
 */
import { control, lastDumpInstructions } from './callgrind-control.js';
import { handshakePaths } from './xds-handshake.js';

const which = process.argv[2] ?? 'server-provider';
const n = Number(process.argv[3] ?? 200);

const p = await handshakePaths();
const paths: Record<string, () => Promise<void>> = {
  'client-dir': p.clientDir,
  'client-provider': p.clientProvider,
  'server-dir': p.serverDir,
  'server-provider': p.serverProvider,
};

/** Instructions per handshake of `n` handshakes along `one` (counters zeroed before, dumped after). */
async function measure(one: () => Promise<void>, count: number): Promise<number> {
  await control('--zero');
  for (let i = 0; i < count; i++) await one();
  await control('--dump=measured');
  const ir = lastDumpInstructions();
  if (ir === undefined) throw new Error('no callgrind dump found (run under valgrind --tool=callgrind)');
  return ir / count;
}

if (which === 'server' || which === 'client') {
  // Both paths of one side in this one process, in alternating rounds (`n` handshakes per round
  // and path, 6 rounds): per path the median instructions per handshake, and their ratio. One
  // process sees the same heap, JIT state and certificates for both paths, which separate runs
  // do not (they differ by several per cent whatever the path).
  const dir = paths[`${which}-dir`] as () => Promise<void>;
  const provider = paths[`${which}-provider`] as () => Promise<void>;
  for (let i = 0; i < 10; i++) {
    await dir();
    await provider();
  }
  const a: number[] = [];
  const b: number[] = [];
  for (let r = 0; r < 6; r++) {
    if (r % 2 === 0) {
      a.push(await measure(dir, n));
      b.push(await measure(provider, n));
    } else {
      b.push(await measure(provider, n));
      a.push(await measure(dir, n));
    }
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[xs.length >> 1] as number;
  const m = (xs: number[]) => xs.map((x) => Math.round(x)).join(' ');
  console.log(`${which}-dir ${n} rounds ${m(a)} median ${Math.round(median(a))}`);
  console.log(`${which}-provider ${n} rounds ${m(b)} median ${Math.round(median(b))}`);
  console.log(`${which} provider/dir ${(median(b) / median(a)).toFixed(4)}`);
} else {
  const one = paths[which];
  if (one === undefined) throw new Error(`unknown path ${which}`);
  for (let i = 0; i < 10; i++) await one();
  console.log(`${which} ${n} ${Math.round(await measure(one, n))}`);
}
await p.close();
