import { createHistogram, performance, type RecordableHistogram } from 'node:perf_hooks';

/**
 * Interleaved A/B(/C…) measurement for benchmark suites: every variant runs closed-loop at the
 * same concurrency in short rounds, variants alternate round by round (ABBA order, so that drift of
 * a shared, noisy machine hits each side alike), and latency is recorded per request in
 * nanoseconds into an HDR histogram (`perf_hooks.createHistogram`).
 */
export interface Variant {
  readonly name: string;
  /** Sends one request and resolves when its response body was fully read. */
  readonly send: () => Promise<unknown>;
}

export interface AbOptions {
  /** Requests in flight per variant (closed loop: each worker sends the next when one returns). */
  readonly concurrency: number;
  /** Measured rounds per variant. */
  readonly rounds: number;
  /** Length of a round in ms. */
  readonly roundMs: number;
  /** Unmeasured warm-up per variant before the first round, in ms. */
  readonly warmupMs: number;
}

export interface VariantStats {
  readonly requests: number;
  readonly errors: number;
  /** Requests per second over all rounds. */
  readonly rps: number;
  /** Latency percentiles in microseconds (from a nanosecond histogram). */
  readonly p50Us: number;
  readonly p90Us: number;
  readonly p99Us: number;
  readonly meanUs: number;
  /** Client CPU time (user + system) per request, in microseconds. */
  readonly cpuUsPerRequest: number;
  /** Throughput, p50 and p99 (µs) of each round, in order. */
  readonly roundRps: readonly number[];
  readonly roundP50Us: readonly number[];
  readonly roundP99Us: readonly number[];
  /** Client CPU time per request (µs) of each round, in order. */
  readonly roundCpuUsPerRequest: readonly number[];
}

interface Acc {
  requests: number;
  errors: number;
  seconds: number;
  cpuUs: number;
  hist: RecordableHistogram;
  roundRps: number[];
  roundP50Us: number[];
  roundP99Us: number[];
  roundCpuUsPerRequest: number[];
}

async function round(v: Variant, concurrency: number, ms: number, acc: Acc | undefined): Promise<void> {
  const send = v.send;
  const hist = acc === undefined ? undefined : createHistogram();
  let requests = 0;
  let errors = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + ms;
  const worker = async () => {
    while (performance.now() < end) {
      const s = performance.now();
      try {
        await send();
      } catch {
        errors++;
      }
      const ns = Math.round((performance.now() - s) * 1e6);
      hist?.record(ns > 0 ? ns : 1);
      requests++;
    }
  };
  const workers: Promise<void>[] = [];
  for (let i = 0; i < concurrency; i++) workers.push(worker());
  await Promise.all(workers);
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  if (acc) {
    acc.requests += requests;
    acc.errors += errors;
    acc.seconds += seconds;
    acc.cpuUs += cpu.user + cpu.system;
    acc.roundRps.push(requests / seconds);
    acc.roundCpuUsPerRequest.push((cpu.user + cpu.system) / Math.max(1, requests));
    if (hist && requests > 0) {
      acc.hist.add(hist);
      acc.roundP50Us.push(hist.percentile(50) / 1000);
      acc.roundP99Us.push(hist.percentile(99) / 1000);
    }
  }
}

/** Runs the variants interleaved and returns per-variant statistics keyed by name. */
export async function runInterleaved(
  variants: readonly Variant[],
  options: AbOptions,
): Promise<Record<string, VariantStats>> {
  const accs = variants.map(
    (): Acc => ({
      requests: 0,
      errors: 0,
      seconds: 0,
      cpuUs: 0,
      hist: createHistogram(),
      roundRps: [],
      roundP50Us: [],
      roundP99Us: [],
      roundCpuUsPerRequest: [],
    }),
  );
  for (const v of variants) await round(v, options.concurrency, options.warmupMs, undefined);
  for (let r = 0; r < options.rounds; r++) {
    const order = r % 2 === 0 ? variants.map((_, i) => i) : variants.map((_, i) => variants.length - 1 - i);
    for (const i of order) await round(variants[i] as Variant, options.concurrency, options.roundMs, accs[i]);
  }
  const out: Record<string, VariantStats> = {};
  variants.forEach((v, i) => {
    const a = accs[i] as Acc;
    out[v.name] = {
      requests: a.requests,
      errors: a.errors,
      rps: a.requests / a.seconds,
      p50Us: a.hist.percentile(50) / 1000,
      p90Us: a.hist.percentile(90) / 1000,
      p99Us: a.hist.percentile(99) / 1000,
      meanUs: a.hist.mean / 1000,
      cpuUsPerRequest: a.cpuUs / Math.max(1, a.requests),
      roundRps: a.roundRps,
      roundP50Us: a.roundP50Us,
      roundP99Us: a.roundP99Us,
      roundCpuUsPerRequest: a.roundCpuUsPerRequest,
    };
  });
  return out;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** The first and third quartiles of `values` (linear interpolation), NaN for none. */
export function quartiles(values: readonly number[]): [number, number] {
  if (values.length === 0) return [Number.NaN, Number.NaN];
  const s = [...values].sort((a, b) => a - b);
  const at = (q: number) => {
    const i = q * (s.length - 1);
    const lo = Math.floor(i);
    const hi = Math.ceil(i);
    return (s[lo] as number) + ((s[hi] as number) - (s[lo] as number)) * (i - lo);
  };
  return [at(0.25), at(0.75)];
}

/** Median over rounds of `a[i] / b[i]` for a per-round statistic (rounds are paired in time). */
function pairedQuotient(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  const ratios: number[] = [];
  for (let i = 0; i < n; i++) ratios.push((a[i] as number) / (b[i] as number));
  return median(ratios);
}

/** Median of the per-round throughput ratios `a / b` (rounds are paired in time). */
export function pairedRatio(a: VariantStats, b: VariantStats): number {
  return pairedQuotient(a.roundRps, b.roundRps);
}

/**
 * Median over rounds of `a`'s client CPU per request over `b`'s, paired in time as `pairedRatio`
 * reads throughput: one round hit by the machine (a neighbour's burst, a collection) moves one
 * ratio of the median, not the total.
 */
export function pairedCpuRatio(a: VariantStats, b: VariantStats): number {
  return pairedQuotient(a.roundCpuUsPerRequest, b.roundCpuUsPerRequest);
}

/**
 * Sends `requests` requests through each variant in turn, `concurrency` at a time, unmeasured:
 * a warm-up by count rather than by time, for code that V8 optimizes only after many calls.
 */
export async function warmUp(
  variants: readonly Variant[],
  requests: number,
  concurrency: number,
): Promise<void> {
  for (const v of variants) {
    let left = requests;
    const send = v.send;
    const worker = async () => {
      while (left-- > 0) {
        try {
          await send();
        } catch {
          // counted nowhere: a warm-up
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  }
}

/**
 * Median over rounds of `a - b` for a per-round statistic (p50 or p99): each round of `a` is paired
 * with the round of `b` next to it in time, so a burst of noise shifts both sides of a pair.
 */
export function pairedDiff(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  const diffs: number[] = [];
  for (let i = 0; i < n; i++) diffs.push((a[i] as number) - (b[i] as number));
  return median(diffs);
}

/** A difference with its sign (`+1.2`, `-0.4`), to `digits` decimals. */
export const signed = (n: number, digits = 1): string => `${n >= 0 ? '+' : ''}${n.toFixed(digits)}`;

export const round2 = (n: number): number => Math.round(n * 100) / 100;
export const round3 = (n: number): number => Math.round(n * 1000) / 1000;

/**
 * What a run says about a ratio against its target, given the run's control (the same comparison
 * with nothing different: raw vs raw, bare vs bare). The control's distance from 1 is what the run
 * reads when nothing differs, so a ratio closer to the target than that says nothing either way:
 *
 * - `met`: on the target's side by at least the control's distance from 1;
 * - `missed`: on the other side by more than it;
 * - `unresolved`: in between (also when the control or the ratio is not a finite number).
 *
 * Without a control (quick runs) the ratio is read as it is. `higherIsBetter`: throughput (the
 * target is a floor); false for CPU per request (a ceiling).
 */
export function targetVerdict(
  ratio: number,
  target: number,
  control: number | undefined,
  higherIsBetter = true,
): 'met' | 'missed' | 'unresolved' {
  const margin = higherIsBetter ? ratio - target : target - ratio;
  if (control === undefined) return margin >= 0 ? 'met' : 'missed';
  const resolution = Math.abs(control - 1);
  if (!Number.isFinite(resolution) || !Number.isFinite(margin)) return 'unresolved';
  if (margin >= resolution) return 'met';
  if (-margin > resolution) return 'missed';
  return 'unresolved';
}

/**
 * The bracketed verdict of a summary line: `ok`, the miss (`BELOW 0.95x`, as `missed` says it), or
 * `unresolved: control 1.289x`.
 */
export function verdictText(
  verdict: 'met' | 'missed' | 'unresolved',
  missed: string,
  control: number | undefined,
): string {
  if (verdict === 'met') return 'ok';
  if (verdict === 'missed') return missed;
  return `unresolved: control ${control === undefined ? '?' : control.toFixed(3)}x`;
}

/** A difference of means with its standard error, from paired blocks (`blockPairedDiff`). */
export interface PairedDiff {
  /** Mean of `a - b` per request. */
  readonly mean: number;
  /** Standard error of that mean (the spread of the block means over √blocks). */
  readonly se: number;
  readonly blocks: number;
}

/**
 * `a - b` per request, where `a[i]` and `b[i]` were measured next to each other in time: the mean
 * over blocks of `block` consecutive pairs, with the standard error from the spread of the block
 * means (a burst on the machine moves one block of both sides, and the blocks' spread says how far
 * the whole can be trusted). Blocks, not single pairs: one request's CPU is read from the kernel in
 * whole microseconds. Within a block the `trim` share of the pairs at each end is left out (1%):
 * a garbage collection or a preemption lands on one request of a pair, milliseconds against tens of
 * microseconds, and which side it lands on is chance (what the variants' garbage costs is read by
 * the rounds of `runInterleaved`, which count every collection).
 */
export function blockPairedDiff(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  block = 1000,
  trim = 0.01,
): PairedDiff {
  const n = Math.min(a.length, b.length);
  const cut = Math.floor(block * trim);
  const means: number[] = [];
  const d = new Float64Array(block);
  for (let s = 0; s + block <= n; s += block) {
    for (let i = 0; i < block; i++) d[i] = (a[s + i] as number) - (b[s + i] as number);
    means.push(trimmedMean(d, cut));
  }
  if (means.length < 2) return { mean: Number.NaN, se: Number.NaN, blocks: means.length };
  const mean = means.reduce((x, y) => x + y, 0) / means.length;
  const variance = means.reduce((x, y) => x + (y - mean) ** 2, 0) / (means.length - 1);
  return { mean, se: Math.sqrt(variance / means.length), blocks: means.length };
}

/** The mean of `values` without the `cut` smallest and the `cut` largest (sorts `values` in place). */
function trimmedMean(values: Float64Array, cut: number): number {
  values.sort();
  let sum = 0;
  for (let i = cut; i < values.length - cut; i++) sum += values[i] as number;
  return sum / (values.length - 2 * cut);
}

/** One variant against the first of `alternate()`: per request, CPU and latency. */
export interface AlternationStats {
  readonly requests: number;
  /** Mean client CPU (user + system, all threads) and latency per request, in µs (1% trimmed at each end). */
  readonly cpuUs: number;
  readonly latencyUs: number;
  /** This variant minus the first, per request, paired in time (µs). */
  readonly cpuDiff: PairedDiff;
  readonly latencyDiff: PairedDiff;
}

/**
 * Concurrency 1 without rounds: the variants take turns request by request (the first of each turn
 * rotates), and each request's client CPU (`process.cpuUsage()` around it: the process' CPU from
 * the call to the body's end) and latency are recorded, so every request of one variant has one of
 * each other variant's next to it in time. Rounds of a second (`runInterleaved`) pair what happened
 * in neighbouring seconds; on a shared machine two raw pools read up to ±10% apart that way, and
 * at concurrency 1 this pairing reads them 0.2 to 1.7 µs apart (docs/benchmarks.md, 2026-12-07
 * evening). What it cannot do is concurrency: overlapping requests share the CPU.
 */
export async function alternate(
  variants: readonly Variant[],
  requests: number,
): Promise<Record<string, AlternationStats>> {
  const cpu = variants.map(() => new Float64Array(requests));
  const wall = variants.map(() => new Float64Array(requests));
  const sends = variants.map((v) => v.send);
  for (let i = 0; i < requests; i++) {
    for (let j = 0; j < sends.length; j++) {
      const k = (i + j) % sends.length;
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      await (sends[k] as () => Promise<unknown>)();
      const c = process.cpuUsage(c0);
      (wall[k] as Float64Array)[i] = (performance.now() - t0) * 1000;
      (cpu[k] as Float64Array)[i] = c.user + c.system;
    }
  }
  // Trimmed as the differences are (`blockPairedDiff`): a collection is not one request's cost.
  const mean = (a: Float64Array) => trimmedMean(Float64Array.from(a), Math.floor(a.length * 0.01));
  const out: Record<string, AlternationStats> = {};
  variants.forEach((v, k) => {
    out[v.name] = {
      requests,
      cpuUs: mean(cpu[k] as Float64Array),
      latencyUs: mean(wall[k] as Float64Array),
      cpuDiff: blockPairedDiff(cpu[k] as Float64Array, cpu[0] as Float64Array),
      latencyDiff: blockPairedDiff(wall[k] as Float64Array, wall[0] as Float64Array),
    };
  });
  return out;
}

/**
 * The resolution of an alternation, as a ratio's distance from 1: the control's difference from
 * the first variant plus two standard errors of the compared variant's difference, over the first
 * variant's mean. Passed to `targetVerdict` as the control (`1 + resolution`).
 */
export function alternationResolution(d: PairedDiff, control: PairedDiff, base: number): number {
  return (Math.abs(control.mean) + 2 * d.se) / base;
}

/** What `alternate()` says of `mesh` against `raw` (and `control`, when measured). */
export interface AlternationReading {
  /** For the results file. */
  readonly results: Record<string, unknown>;
  /** For the summary line: the ratios, the differences and the verdicts against the targets. */
  readonly text: string;
}

/**
 * Reads an alternation of `raw`, `mesh` and (full runs) `control` against the targets: throughput
 * (the inverse of latency at concurrency 1) at least `throughputTarget`, client CPU per request at
 * most `cpuTarget` (omitted: not judged), each at the resolution `alternationResolution` gives.
 */
export function readAlternation(
  st: Record<string, AlternationStats>,
  throughputTarget: number,
  cpuTarget?: number,
): AlternationReading {
  const raw = st.raw as AlternationStats;
  const m = st.mesh as AlternationStats;
  const control = st.control;
  // From the paired differences (what the verdicts' resolution is about), not the two means.
  const cpuRatio = 1 + m.cpuDiff.mean / raw.cpuUs;
  const throughputRatio = raw.latencyUs / (raw.latencyUs + m.latencyDiff.mean);
  const cpuRes = control && alternationResolution(m.cpuDiff, control.cpuDiff, raw.cpuUs);
  const latRes = control && alternationResolution(m.latencyDiff, control.latencyDiff, raw.latencyUs);
  const tControl = latRes === undefined ? undefined : 1 - latRes;
  const cControl = cpuRes === undefined ? undefined : 1 + cpuRes;
  const verdicts = [
    `throughput ${verdictText(targetVerdict(throughputRatio, throughputTarget, tControl), `< ${throughputTarget}x`, tControl)}`,
  ];
  if (cpuTarget !== undefined)
    verdicts.push(
      `cpu ${verdictText(targetVerdict(cpuRatio, cpuTarget, cControl, false), `> ${cpuTarget}x`, cControl)}`,
    );
  return {
    results: {
      requests: m.requests,
      rawCpuUsPerRequest: round2(raw.cpuUs),
      meshCpuUsPerRequest: round2(m.cpuUs),
      cpuPerRequestRatio: round3(cpuRatio),
      addedCpuUsPerRequest: round2(m.cpuDiff.mean),
      addedCpuUsStandardError: round2(m.cpuDiff.se),
      rawLatencyUs: round2(raw.latencyUs),
      throughputRatio: round3(throughputRatio),
      addedLatencyUs: round2(m.latencyDiff.mean),
      addedLatencyUsStandardError: round2(m.latencyDiff.se),
      ...(control && {
        controlVsRaw: {
          addedCpuUsPerRequest: round2(control.cpuDiff.mean),
          addedCpuUsStandardError: round2(control.cpuDiff.se),
          addedLatencyUs: round2(control.latencyDiff.mean),
        },
        cpuResolution: round3(cpuRes as number),
        throughputResolution: round3(latRes as number),
      }),
    },
    text:
      `request by request (${m.requests} each): throughput ${throughputRatio.toFixed(3)}x ` +
      `(latency ${signed(m.latencyDiff.mean)} ± ${(2 * m.latencyDiff.se).toFixed(1)}us on ${raw.latencyUs.toFixed(1)}us), ` +
      `cpu/req ${cpuRatio.toFixed(3)}x (${signed(m.cpuDiff.mean)} ± ${(2 * m.cpuDiff.se).toFixed(1)}us on ${raw.cpuUs.toFixed(1)}us) ` +
      `[${verdicts.join(', ')}]` +
      (control
        ? `  (raw vs raw: latency ${signed(control.latencyDiff.mean)}us, cpu ${signed(control.cpuDiff.mean)}us)`
        : ''),
  };
}
