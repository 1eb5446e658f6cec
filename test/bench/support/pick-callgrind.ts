/**
 * Instructions per pick at 1,000 endpoints under callgrind (repeatable whatever the machine's load,
 * unlike the ns/pick of suites/pick.ts). Run one policy with two pick counts and subtract, so that
 * start-up, module loading and JIT compilation cancel out:
 *
 *   for n in 5000000 25000000; do
 *     valgrind --tool=callgrind --callgrind-out-file=/dev/null --smc-check=all-non-file \
 *       node --conditions=meshlet-source --import tsx test/bench/support/pick-callgrind.ts cswrr $n
 *   done   # (second "Collected" - first) / 20,000,000 = instructions per pick
 *
 * Policies: `rr` (round_robin: the loop's own overhead plus an O(1) pick), `cswrr`
 * (client_side_weighted_round_robin with reports at utilizations 0.2..0.8 past the blackout) and
 * `peak` (peak_ewma).
 */
import {
  clientSideWeightedRoundRobin,
  EndpointLoad,
  EndpointState,
  makeEndpoint,
  orcaLoadReport,
  type Picker,
  peakEwma,
  roundRobin,
} from '../../../packages/core/src/index.js';

const policy = process.argv[2] ?? 'cswrr';
const picks = Number(process.argv[3] ?? 1_000_000);
const eps = Array.from({ length: 1000 }, (_, i) => {
  const st = new EndpointState('bench', makeEndpoint({ address: `10.0.${i >> 8}.${i & 255}`, port: 80 }), 0);
  st.ewmaMs = 5 + (i % 7);
  st.active = i % 3;
  st.load = new EndpointLoad();
  st.load.record(orcaLoadReport({ rpsFractional: 100, applicationUtilization: 0.2 + 0.2 * (i % 4) }), 0);
  return st;
});
const clock = { ms: 20_000 };
const ctx = { now: () => clock.ms, clock };
const picker: Picker =
  policy === 'rr'
    ? roundRobin.create(undefined).update(eps)
    : policy === 'cswrr'
      ? clientSideWeightedRoundRobin
          .create(clientSideWeightedRoundRobin.parseConfig({}, 'lb', []), ctx)
          .update(eps)
      : peakEwma.create(peakEwma.parseConfig({}, 'lb', []), ctx).update(eps);

function run(n: number): number {
  const pickCtx = { attempt: 0 };
  let sink = 0;
  for (let i = 0; i < n; i++) {
    const r = picker.pick(pickCtx);
    if (r.kind === 'pick') sink += r.endpoint.active;
  }
  return sink;
}
let sink = run(200_000);
for (let k = 0; k < picks / 100_000; k++) sink += run(100_000);
if (sink === -1) process.stdout.write('unreachable\n');
