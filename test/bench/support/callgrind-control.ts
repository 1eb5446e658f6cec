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
 * `events: Ir` count of the newest dump of this process (`--callgrind-out-file=<dir>/<name>.<pid>`).
 * Under `--separate-threads=yes` (dumps `<name>.<pid>.<n>-<thread>`) the main thread's (`-01`):
 * V8's platform worker threads (concurrent compilation, parallel scavenges) vary from run to run
 * by more than a request costs.
 */
export function lastDumpInstructions(): number | undefined {
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
  const m = /^(?:summary|totals):\s+(\d+)/m.exec(readFileSync(join(dir, best.file), 'utf8'));
  return m ? Number(m[1]) : undefined;
}
