import { type ChildProcess, type ForkOptions, fork, spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';

/**
 * CPU placement for a suite that measures server processes under a load generator: the generator
 * (this process, every thread of it) on CPU 0, the servers on the other CPUs, with `taskset`.
 *
 * Why: on a small machine (2 CPUs here) an unplaced run lets the scheduler move the generator, the
 * servers and their V8 helper threads between the same cores from one moment to the next; the
 * server under test then runs part of its time beside the generator on one core and migrates with
 * cold caches. That varies with the run, not with the code measured, and it is how load tests are
 * set up where it matters (wrk, Nighthawk, Envoy's and Linkerd's benchmark guides put the load
 * generator and the proxy on separate cores). Placed, a server's own core bounds its throughput,
 * so the throughput ratio reads what the server's code costs, and a meshed server's extra garbage
 * collection and compilation run on its own core, not on the generator's.
 *
 * Off with `MESHLET_BENCH_PIN=0`, and off by itself with fewer than 2 CPUs or without `taskset`
 * (util-linux).
 */
export interface Placement {
  /** `taskset` CPU list for the load generator. */
  readonly generator: string;
  /** `taskset` CPU list for the servers. */
  readonly servers: string;
}

let cached: Placement | null | undefined;

/** The placement to use on this machine, or undefined when runs are not placed (see above). */
export function placement(): Placement | undefined {
  if (cached !== undefined) return cached ?? undefined;
  const cpus = availableParallelism();
  const usable =
    process.env.MESHLET_BENCH_PIN !== '0' &&
    process.platform === 'linux' &&
    cpus >= 2 &&
    spawnSync('taskset', ['-p', String(process.pid)], { stdio: 'ignore' }).status === 0;
  cached = usable ? { generator: '0', servers: cpus === 2 ? '1' : `1-${cpus - 1}` } : null;
  return cached ?? undefined;
}

/** This process' CPU list (`taskset -p`), to put back after a placed suite. */
function currentCpus(): string | undefined {
  const r = spawnSync('taskset', ['-c', '-p', String(process.pid)], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim().split(': ').pop() : undefined;
}

function setCpus(cpus: string): void {
  // -a: every thread of the process (V8's platform workers, libuv's pool) moves with it.
  const r = spawnSync('taskset', ['-a', '-c', '-p', cpus, String(process.pid)], { stdio: 'ignore' });
  if (r.status !== 0) throw new Error(`taskset could not place the load generator on CPU ${cpus}`);
}

/**
 * Runs `fn` with this process (the load generator) on the generator's CPUs, and puts it back
 * where it was afterwards. Without a placement, just runs `fn`.
 */
export async function asGenerator<T>(fn: () => Promise<T>): Promise<T> {
  const p = placement();
  if (!p) return fn();
  // Back where it was afterwards (every CPU if that could not be read): later suites run unplaced.
  const before = currentCpus() ?? `0-${availableParallelism() - 1}`;
  setCpus(p.generator);
  try {
    return await fn();
  } finally {
    setCpus(before);
  }
}

/** `fork` of a server process, on the servers' CPUs when runs are placed. */
export function forkServer(module: URL, args: readonly string[], options: ForkOptions): ChildProcess {
  const p = placement();
  if (!p) return fork(module, args, options);
  // fork() runs `execPath ...execArgv module ...args`: taskset execs node in the same process,
  // with the IPC channel's descriptor inherited.
  return fork(module, args, {
    ...options,
    execPath: 'taskset',
    execArgv: ['-c', p.servers, process.execPath, ...(options.execArgv ?? process.execArgv)],
  });
}
