/**
 * The benchmark harness contract. Every file in `test/bench/suites/` default-exports a
 * `BenchSuite`; `pnpm bench` runs them all, `pnpm bench:quick` runs them with `quick: true`
 * (the whole quick run stays under one minute) and writes `test/bench/results/quick.json`.
 *
 * Speed is compared side by side in one run (mesh vs raw undici / raw grpc-js), interleaved,
 * because the machines are shared and noisy: report ratios, not absolute numbers alone.
 */
export interface BenchOptions {
  /** Reduced run: seconds, not minutes. */
  readonly quick: boolean;
}

export interface BenchSuiteResult {
  /** Machine-readable numbers, written to the results JSON under the suite's name. */
  readonly results: Record<string, unknown>;
  /** Human-readable lines printed at the end of the run (one finding a line). */
  readonly summary: readonly string[];
}

export interface BenchSuite {
  readonly name: string;
  /** Skipped in quick runs when false (e.g. the HAProxy comparison). */
  readonly inQuick: boolean;
  run(options: BenchOptions): Promise<BenchSuiteResult>;
}
