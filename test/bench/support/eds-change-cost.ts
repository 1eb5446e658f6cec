/**
 * What one one-endpoint EDS change costs the client, end to end (wire diff → translation →
 * `ServiceRuntime.applyUpdate`), on the `xds` suite's 10,000-endpoint assignment (10 localities of
 * 1,000; endpoint 17's weight alternates 2 ↔ 3, the whole assignment re-sent every time):
 *
 * - bytes allocated per change: `node --conditions=meshlet-source --import tsx
 *   test/bench/support/eds-change-cost.ts alloc 2000` (used-heap growth over each change, the
 *   changes a GC fell into left out; `gcs` counts the GCs of the loop);
 * - instructions per change under callgrind (repeatable whatever the machine's load; only the
 *   measured loop is counted, the counters zeroed before it and dumped after it):
 *
 *     mkdir -p /tmp/eds && CALLGRIND_OUT=/tmp/eds/cg valgrind --tool=callgrind \
 *       --callgrind-out-file=/tmp/eds/cg.%p --separate-threads=yes --smc-check=all-non-file \
 *       node --conditions=meshlet-source --import tsx test/bench/support/eds-change-cost.ts callgrind 300
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import { Mesh as CoreMesh, parseConfig } from '../../../packages/core/src/index.js';
import { type EdsState, translateEndpointsIncremental } from '../../../packages/xds/src/eds.js';
import { EDS_TYPE, encodeMessage, type Msg } from '../../../packages/xds/src/index.js';
import { discoveryUpdateOf } from '../../../packages/xds/src/resolver.js';
import { control, lastDumpInstructions } from './callgrind-control.js';

const mode = process.argv[2] ?? 'alloc';
const changes = Number(process.argv[3] ?? 2000);
const N = 10_000;

function cla(weightOf: (i: number) => number): Msg {
  const endpoints: Msg[] = [];
  for (let l = 0; l * 1000 < N; l++) {
    const lb: Msg[] = [];
    for (let i = l * 1000; i < (l + 1) * 1000; i++) {
      lb.push({
        endpoint: {
          address: {
            socketAddress: {
              address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
              portValue: 8000 + (i % 7),
            },
          },
        },
        healthStatus: 'HEALTHY',
        loadBalancingWeight: { value: weightOf(i) },
      });
    }
    endpoints.push({ locality: { zone: `z${l % 3}` }, loadBalancingWeight: { value: 1 }, lbEndpoints: lb });
  }
  return { clusterName: 'big', endpoints };
}

const variants = [0, 1].map((v) =>
  encodeMessage(
    EDS_TYPE,
    cla((i) => (i === 17 ? 2 + v : 1)),
  ),
);
const mesh = new CoreMesh(parseConfig({}));
const rt = mesh.ensureService({
  key: 'big',
  discoveryType: 'xds',
  createSource: () => ({ start: () => {}, close: () => {} }),
});
let eds: EdsState | undefined;
const step = (i: number) => {
  eds = translateEndpointsIncremental(variants[i % 2] as Uint8Array, eds);
  rt.applyUpdate(discoveryUpdateOf(eds.update, String(i)));
};
for (let i = 0; i < (mode === 'alloc' ? 200 : 1000); i++) step(i); // warm-up (JIT)

if (mode === 'alloc') {
  let gcs = 0;
  const obs = new PerformanceObserver((l) => {
    gcs += l.getEntries().length;
  });
  obs.observe({ entryTypes: ['gc'] });
  // Used-heap growth over each change; a change during which a GC ran (the heap shrank) is left out.
  let bytes = 0;
  let counted = 0;
  for (let i = 0; i < changes; i++) {
    const before = getHeapStatistics().used_heap_size;
    step(i);
    const grew = getHeapStatistics().used_heap_size - before;
    if (grew >= 0) {
      bytes += grew;
      counted++;
    }
  }
  await new Promise((r) => setTimeout(r, 50));
  obs.disconnect();
  console.log(
    JSON.stringify({
      changes,
      gcs,
      counted,
      bytesPerChange: Math.round(bytes / counted),
      endpoints: rt.endpoints.length,
    }),
  );
} else {
  await control('--zero');
  for (let i = 0; i < changes; i++) step(i);
  await control('--dump=measured');
  const ir = lastDumpInstructions();
  console.log(
    JSON.stringify({
      changes,
      instructionsPerChange: ir === undefined ? undefined : Math.round(ir / changes),
    }),
  );
}
mesh.close?.();
