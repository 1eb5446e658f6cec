/**
 * The benchmark runner: `pnpm bench` (full) and `pnpm bench:quick` (under one minute).
 *
 * Discovers `test/bench/suites/*.ts` (each default-exports a `BenchSuite`, see lib.ts), runs them
 * one after the other (quick: only suites with `inQuick`), prints their summaries and writes
 * `test/bench/results/full.json` or `quick.json` with the machine's description.
 *
 * Options: `--quick`; `--only name[,name]` runs just those suites; `--out file` writes elsewhere.
 * In quick mode every suite gets a time cap (`MESHLET_BENCH_QUICK_CAP_MS`, default 8000) and the
 * whole run a budget (`MESHLET_BENCH_QUICK_BUDGET_MS`, default 50000): a suite over its cap is
 * reported and abandoned, suites left when the budget is spent are reported as skipped. Suites run
 * in this process (a child process per suite would cost seconds of module loading each), so the
 * cap cannot interrupt a suite that blocks the event loop; it is reported when it returns.
 */
import { readdirSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import type { BenchSuite, BenchSuiteResult } from './lib.js';

const here = dirname(fileURLToPath(import.meta.url));

type Status = 'ok' | 'error' | 'over-cap' | 'skipped';

interface SuiteReport {
  status: Status;
  durationMs: number;
  results?: Record<string, unknown>;
  summary?: readonly string[];
  error?: string;
}

function isSuite(value: unknown): value is BenchSuite {
  const s = value as Partial<BenchSuite> | undefined;
  return typeof s?.name === 'string' && typeof s.inQuick === 'boolean' && typeof s.run === 'function';
}

function envMs(name: string, fallback: number): number {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : fallback;
}

export function machine(): Record<string, unknown> {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    node: process.version,
    v8: process.versions.v8,
    platform: `${os.platform()} ${os.release()}`,
    arch: os.arch(),
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    loadavg: os.loadavg().map((n) => Math.round(n * 100) / 100),
    totalMemMiB: Math.round(os.totalmem() / 2 ** 20),
  };
}

async function withCap(
  p: Promise<BenchSuiteResult>,
  capMs: number | undefined,
): Promise<BenchSuiteResult | 'over-cap'> {
  if (capMs === undefined) return p;
  let timer: NodeJS.Timeout | undefined;
  const cap = new Promise<'over-cap'>((resolve) => {
    timer = setTimeout(() => resolve('over-cap'), capMs);
  });
  try {
    return await Promise.race([p, cap]);
  } finally {
    clearTimeout(timer);
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: process.argv.slice(2).filter((a) => a !== '--'),
    options: { quick: { type: 'boolean' }, only: { type: 'string' }, out: { type: 'string' } },
    strict: true,
  });
  const quick = values.quick === true;
  const only = values.only?.split(',').map((s) => s.trim());
  const capMs = quick ? envMs('MESHLET_BENCH_QUICK_CAP_MS', 8_000) : undefined;
  const budgetMs = quick ? envMs('MESHLET_BENCH_QUICK_BUDGET_MS', 50_000) : Number.POSITIVE_INFINITY;
  const runStart = performance.now();

  const suitesDir = join(here, 'suites');
  const files = readdirSync(suitesDir)
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
    .sort();
  const reports: Record<string, SuiteReport> = {};
  const problems: string[] = [];
  const log = (line: string) => process.stdout.write(`${line}\n`);
  log(`meshlet benchmarks (${quick ? 'quick' : 'full'}) — node ${process.version}, ${os.cpus().length} cpus`);

  for (const file of files) {
    const mod = (await import(pathToFileURL(join(suitesDir, file)).href)) as { default?: unknown };
    const suite = mod.default;
    if (!isSuite(suite)) {
      problems.push(`${file}: does not default-export a BenchSuite`);
      reports[file] = { status: 'error', durationMs: 0, error: 'not a BenchSuite' };
      continue;
    }
    if (only && !only.includes(suite.name)) continue;
    if (quick && !suite.inQuick) {
      log(`\n— ${suite.name}: not in quick runs`);
      continue;
    }
    const elapsed = performance.now() - runStart;
    if (elapsed >= budgetMs) {
      reports[suite.name] = { status: 'skipped', durationMs: 0, error: 'quick-run budget spent' };
      problems.push(`${suite.name}: skipped, the quick run's ${budgetMs}ms budget was spent`);
      log(`\n— ${suite.name}: SKIPPED (budget spent)`);
      continue;
    }
    log(`\n— ${suite.name}`);
    const t0 = performance.now();
    try {
      const cap = capMs === undefined ? undefined : Math.round(Math.min(capMs, budgetMs - elapsed));
      const result = await withCap(suite.run({ quick }), cap);
      const durationMs = Math.round(performance.now() - t0);
      if (result === 'over-cap') {
        reports[suite.name] = { status: 'over-cap', durationMs, error: `exceeded the quick cap of ${cap}ms` };
        problems.push(
          `${suite.name}: exceeded the quick-run cap of ${cap}ms (abandoned; its leftover work may have slowed the suites after it)`,
        );
        log(`  OVER CAP: abandoned after ${durationMs}ms`);
        continue;
      }
      reports[suite.name] = { status: 'ok', durationMs, results: result.results, summary: result.summary };
      if (cap !== undefined && durationMs > cap + 250) {
        problems.push(`${suite.name}: took ${durationMs}ms, over the quick-run cap of ${cap}ms`);
      }
      for (const line of result.summary) log(`  ${line}`);
      log(`  (${(durationMs / 1000).toFixed(1)}s)`);
    } catch (err) {
      const durationMs = Math.round(performance.now() - t0);
      const message = (err as Error)?.stack ?? String(err);
      reports[suite.name] = { status: 'error', durationMs, error: message };
      problems.push(`${suite.name}: failed: ${(err as Error)?.message ?? String(err)}`);
      log(`  ERROR: ${message}`);
    }
  }

  const totalMs = Math.round(performance.now() - runStart);
  const outFile = values.out ?? join(here, 'results', quick ? 'quick.json' : 'full.json');
  await mkdir(dirname(outFile), { recursive: true });
  const doc = {
    mode: quick ? 'quick' : 'full',
    machine: machine(),
    totalMs,
    ...(capMs === undefined ? {} : { quickCapMs: capMs, quickBudgetMs: budgetMs }),
    problems,
    suites: reports,
  };
  await writeFile(outFile, `${JSON.stringify(doc, null, 2)}\n`);
  log(`\n${Object.keys(reports).length} suites in ${(totalMs / 1000).toFixed(1)}s; results in ${outFile}`);
  for (const p of problems) log(`  problem: ${p}`);
  return problems.length > 0 ? 1 : 0;
}

// A suite abandoned over its cap may still hold handles: end the process explicitly.
main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);
