import { parseArgs } from 'node:util';
import { type CliCommand, UsageError, wantsColor } from 'meshlet/cli';
import { runDemo } from './run.js';

const USAGE = `Usage: meshlet demo [--duration <seconds>] [--rps <n>] [--no-mtls] [--no-color]

Runs a small topology on 127.0.0.1 with a mesh on both sides of every call: a client sending
steady traffic to a "frontend" (Express, 2 instances) that calls "catalog" (gRPC, 3 instances, one
slow) and "reviews" (Fastify, 4 instances, one answering 10% of requests with 503, one that dies
part-way through) for every request. Shows a live per-hop and per-instance view every second and a
summary at the end. Exits 0 when at least 99.9% of the client's requests succeeded despite the
faults, 1 otherwise. Needs no network.

Options:
  --duration <s>  length of the run in seconds (default 30); Ctrl-C ends it early
  --rps <n>       requests per second the client sends to the frontend (default 100)
  --no-mtls       plaintext HTTP and gRPC instead of mTLS (by default a development CA issues a
                  SPIFFE certificate per workload, every server requires client certificates,
                  every mesh checks the identity of the service it calls, and each service's
                  authorization policy admits only its caller)
  --no-color      plain output (also NO_COLOR=1); without a terminal the live view prints one
                  compact line a second instead of redrawing a table`;

function positiveNumber(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0)
    throw new UsageError(`--${name} must be a positive number, got "${text}"`);
  return n;
}

export const demoCommand: CliCommand = {
  name: 'demo',
  summary: 'run the quickstart: client -> Express -> gRPC + Fastify, meshed, faults injected, live view',
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
