/**
 * For benchmark drivers run under `valgrind --tool=callgrind`: count only a measured loop by
 * zeroing the counters before it (`control('--zero')`) and dumping them after it
 * (`control('--dump=measured')`, then `lastDumpInstructions()`).
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * Runs `callgrind_control <flag> <pid>`, keeping this process busy meanwhile: callgrind takes a
 * command between basic blocks, never while the process sleeps in a system call.
 */
export async function control(flag: string): Promise<void> {
  let exited = false;
  const child = spawn('callgrind_control', [flag, String(process.pid)], { stdio: 'ignore' });
  child.on('exit', () => {
    exited = true;
  });
  while (!exited) await new Promise((r) => setImmediate(r));
}

/**
 * The counts of the newest dump of this process (`--callgrind-out-file=<dir>/<name>.<pid>`), by
 * event name (`Ir`, and with `--cache-sim=yes --branch-sim=yes` also `I1mr`, `D1mr`, `D1mw`,
 * `ILmr`, `DLmr`, `DLmw`, `Bcm`, `Bim`). Under `--separate-threads=yes` (dumps
 * `<name>.<pid>.<n>-<thread>`) the main thread's (`-01`): V8's platform worker threads (concurrent
 * compilation, parallel scavenges) vary from run to run by more than a request costs.
 */
export function lastDumpCosts(): Record<string, number> | undefined {
  const out = process.argv.find((a) => a.startsWith('--callgrind-out-file='));
  const hint = process.env.CALLGRIND_OUT ?? out?.slice('--callgrind-out-file='.length);
  const dir = hint ? dirname(hint) : '/tmp';
  let best: { n: number; file: string } | undefined;
  for (const f of readdirSync(dir)) {
    const m = new RegExp(`\\.${process.pid}\\.(\\d+)(?:-(\\d+))?$`).exec(f);
    if (m === null || (m[2] !== undefined && Number(m[2]) !== 1)) continue;
    const n = Number(m[1]);
    if (best === undefined || n > best.n) best = { n, file: f };
  }
  if (best === undefined) return undefined;
  const text = readFileSync(join(dir, best.file), 'utf8');
  const events = /^events:\s+(.+)$/m.exec(text)?.[1]?.trim().split(/\s+/);
  const counts = /^(?:summary|totals):\s+(.+)$/m.exec(text)?.[1]?.trim().split(/\s+/);
  if (events === undefined || counts === undefined) return undefined;
  return Object.fromEntries(events.map((e, i) => [e, Number(counts[i] ?? 0)]));
}

/** `events: Ir` count of the newest dump of this process (see `lastDumpCosts`). */
export function lastDumpInstructions(): number | undefined {
  return lastDumpCosts()?.Ir;
}

/** A dump's misses, grouped: first-level instruction and data, last-level, mispredicted branches. */
export interface CacheMisses {
  readonly l1i: number;
  readonly l1d: number;
  readonly ll: number;
  readonly branches: number;
}

/**
 * The misses of a dump's counts (`lastDumpCosts`), or undefined without `--cache-sim=yes`;
 * mispredicted branches count only when `--branch-sim=yes` gave them.
 */
export function cacheMisses(c: Readonly<Record<string, number>>): CacheMisses | undefined {
  const { I1mr, D1mr, D1mw, ILmr, DLmr, DLmw, Bcm, Bim } = c;
  if (I1mr === undefined || D1mr === undefined || D1mw === undefined) return undefined;
  if (ILmr === undefined || DLmr === undefined || DLmw === undefined) return undefined;
  return { l1i: I1mr, l1d: D1mr + D1mw, ll: ILmr + DLmr + DLmw, branches: (Bcm ?? 0) + (Bim ?? 0) };
}

/**
 * Callgrind's cycle estimate from a dump's counts, or undefined without the cache simulation:
 * instructions, plus 10 per first-level miss (instruction and data), 100 per last-level miss and
 * 15 per mispredicted branch (the weights of docs/benchmarks.md). Which cache is "last level" is
 * the run's `--LL`: valgrind takes the host's L3 by default; this VM's L2 (`--LL=1310720,20,64`)
 * makes last-level misses L2 misses, those the shared L3 serves.
 */
export function estimatedCycles(c: Readonly<Record<string, number>>): number | undefined {
  const m = cacheMisses(c);
  if (m === undefined || c.Ir === undefined) return undefined;
  return c.Ir + 10 * (m.l1i + m.l1d) + 100 * m.ll + 15 * m.branches;
}
