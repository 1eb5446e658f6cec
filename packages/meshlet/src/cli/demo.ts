import { parseArgs } from 'node:util';
import { runDemo } from '../demo/run.js';
import { type CliCommand, wantsColor } from './io.js';

const USAGE = `Usage: meshlet demo [--duration <seconds>] [--rps <n>] [--no-mtls] [--no-color]

Starts five instances of a small HTTP service on 127.0.0.1 (one slow, one that answers 10% of
requests with 503, one that dies part-way through), and a client sending steady traffic through
mesh.fetch. Shows a live view every second and a summary at the end. Exits 0 when at least 99.9%
of the client's requests succeeded despite the faults, 1 otherwise. Needs no network.

Options:
  --duration <s>  length of the run in seconds (default 30); Ctrl-C ends it early
  --rps <n>       requests per second the client sends (default 100)
  --no-mtls       plain HTTP instead of mTLS (by default a development CA issues SPIFFE
                  certificates, the instances require client certificates and the mesh checks
                  the instances' identity)
  --no-color      plain output (also NO_COLOR=1); without a terminal the live view prints one
                  compact line a second instead of redrawing a table`;

function positiveNumber(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0)
    throw new UsageError(`--${name} must be a positive number, got "${text}"`);
  return n;
}

/** A mistake in the command line: printed with the usage, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export const demoCommand: CliCommand = {
  name: 'demo',
  summary: 'run the quickstart: a meshed client against faulty local instances, live view',
  usage: USAGE,
  async run(argv, io) {
    const { values } = parseArgs({
      args: [...argv],
      options: {
        duration: { type: 'string' },
        rps: { type: 'string' },
        'no-color': { type: 'boolean' },
        'no-mtls': { type: 'boolean' },
        color: { type: 'boolean' },
      },
      strict: true,
    });
    const durationSec = positiveNumber('duration', values.duration, 30);
    const rps = positiveNumber('rps', values.rps, 100);
    const color = wantsColor(io, values['no-color'] ? false : values.color);
    const ac = new AbortController();
    const onSigint = () => ac.abort();
    process.once('SIGINT', onSigint);
    try {
      const result = await runDemo({
        durationSec,
        rps,
        color,
        out: io.stdout,
        signal: ac.signal,
        mtls: values['no-mtls'] !== true,
      });
      return result.exitCode;
    } finally {
      process.off('SIGINT', onSigint);
    }
  },
};
