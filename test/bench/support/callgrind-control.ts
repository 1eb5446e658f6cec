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

/** `events: Ir` count of the newest dump of this process (`--callgrind-out-file=<dir>/<name>.<pid>`). */
export function lastDumpInstructions(): number | undefined {
  const out = process.argv.find((a) => a.startsWith('--callgrind-out-file='));
  const hint = process.env.CALLGRIND_OUT ?? out?.slice('--callgrind-out-file='.length);
  const dir = hint ? dirname(hint) : '/tmp';
  const dumps = readdirSync(dir)
    .filter((f) => f.includes(`.${process.pid}.`))
    .sort((a, b) => Number(a.split('.').pop()) - Number(b.split('.').pop()));
  const last = dumps.at(-1);
  if (last === undefined) return undefined;
  const m = /^summary:\s+(\d+)/m.exec(readFileSync(join(dir, last), 'utf8'));
  return m ? Number(m[1]) : undefined;
}
