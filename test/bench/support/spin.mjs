/**
 * A known per-request cost for the ratio suites: a hot arithmetic loop (a multiply-add chain, a few
 * instructions, no memory touched) run for a calibrated number of iterations. A variant that adds
 * `spin(spinIterations(ns))` to each request tells what the harness makes of `ns` of work that
 * stays in the caches; meshlet's per-request code touches far more code and data than this loop
 * (docs/benchmarks.md, "A known cost beside meshlet's"). Plain JavaScript: the server processes
 * run it under plain `node`.
 */
let sink = 0;

/** Runs `n` iterations of the loop. */
export function spin(n) {
  let x = sink | 1;
  for (let i = 0; i < n; i++) x = (Math.imul(x, 1103515245) + 12345) | 0;
  sink = x;
}

/**
 * How many iterations take `ns` nanoseconds in a tight loop, once V8 has optimized `spin`: the
 * median of nine timings of a million iterations, after 200,000 short calls.
 */
export function spinIterations(ns) {
  for (let k = 0; k < 200_000; k++) spin(100);
  const per = [];
  for (let k = 0; k < 9; k++) {
    const t = performance.now();
    spin(1_000_000);
    per.push(((performance.now() - t) * 1e6) / 1_000_000);
  }
  per.sort((a, b) => a - b);
  return Math.max(1, Math.round(ns / per[4]));
}
