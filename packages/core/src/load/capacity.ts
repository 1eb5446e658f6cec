import { readFileSync } from 'node:fs';
import os from 'node:os';

/**
 * What the process may use: CPUs and memory, from the host and from a cgroup v2 limit when one
 * applies (a container's CPU quota or memory limit). Read once, off the request path.
 *
 * Why the cgroup matters: `os.availableParallelism()` counts the CPUs the process may be scheduled
 * on (its affinity mask), not a CFS quota. A container limited to 0.5 CPU on an 8-core node sees 8,
 * so a process throttled at its whole quota would report `cpu_utilization` 0.0625 instead of 1.
 * With the quota read from `cpu.max` (`<quota> <period>` in µs, or `max`), the divisor is
 * `min(availableParallelism, quota / period)` and the figure means "share of what this process may
 * use". Limits of ancestor cgroups apply too, so the smallest along the path to the root wins.
 * cgroup v1 (`cpu.cfs_quota_us`) is not read: there the host's count is used.
 */
export interface Capacity {
  /** CPUs the process may use (fractional under a quota). */
  readonly cpus: number;
  /** Memory the process may use, in bytes. */
  readonly memoryBytes: number;
  /** Where the numbers came from, for the admin page and logs. */
  readonly source: { readonly cpus: 'host' | 'cgroup'; readonly memory: 'host' | 'cgroup' };
}

/** Parses cgroup v2 `cpu.max` ("200000 100000" → 2 CPUs; "max 100000" → Infinity). NaN if malformed. */
export function parseCpuMax(text: string): number {
  const [quota, period] = text.trim().split(/\s+/);
  if (quota === 'max') return Number.POSITIVE_INFINITY;
  const q = Number(quota);
  const p = period === undefined ? 100_000 : Number(period);
  return Number.isFinite(q) && q > 0 && Number.isFinite(p) && p > 0 ? q / p : Number.NaN;
}

/** Parses cgroup v2 `memory.max` ("max" → Infinity, else bytes). NaN if malformed. */
export function parseMemoryMax(text: string): number {
  const t = text.trim();
  if (t === 'max') return Number.POSITIVE_INFINITY;
  const n = Number(t);
  return Number.isFinite(n) && n > 0 ? n : Number.NaN;
}

/** The cgroup v2 path of this process ("0::/some/path" in /proc/self/cgroup), or undefined. */
export function parseProcCgroup(text: string): string | undefined {
  for (const line of text.split('\n')) if (line.startsWith('0::')) return line.slice(3).trim() || '/';
  return undefined;
}

type ReadFile = (path: string) => string | undefined;

const readOrUndefined: ReadFile = (path) => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
};

/**
 * The smallest limit of `file` along the cgroup path up to the cgroup root (Infinity when none).
 * In a container with its own cgroup namespace the path is `/` and the root files are the
 * container's own.
 */
function cgroupLimit(read: ReadFile, cgroup: string, file: string, parse: (t: string) => number): number {
  let limit = Number.POSITIVE_INFINITY;
  let dir = cgroup === '/' ? '' : cgroup.replace(/\/+$/, '');
  for (;;) {
    const text = read(`/sys/fs/cgroup${dir}/${file}`);
    if (text !== undefined) {
      const v = parse(text);
      if (v < limit) limit = v;
    }
    if (dir === '') break;
    dir = dir.slice(0, dir.lastIndexOf('/'));
  }
  return limit;
}

/** Reads this process' capacity (host counts, narrowed by cgroup v2 limits). `read` is for tests. */
export function readCapacity(read: ReadFile = readOrUndefined): Capacity {
  const hostCpus =
    typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  const hostMemory = os.totalmem();
  const procCgroup = read('/proc/self/cgroup');
  const cgroup = procCgroup === undefined ? undefined : parseProcCgroup(procCgroup);
  let quota = Number.POSITIVE_INFINITY;
  let memLimit = Number.POSITIVE_INFINITY;
  if (cgroup !== undefined) {
    quota = cgroupLimit(read, cgroup, 'cpu.max', parseCpuMax);
    memLimit = cgroupLimit(read, cgroup, 'memory.max', parseMemoryMax);
  }
  const cpuFromCgroup = quota < hostCpus;
  const memFromCgroup = memLimit < hostMemory;
  return Object.freeze({
    cpus: cpuFromCgroup ? quota : Math.max(1, hostCpus),
    memoryBytes: memFromCgroup ? memLimit : hostMemory,
    source: Object.freeze({
      cpus: cpuFromCgroup ? ('cgroup' as const) : ('host' as const),
      memory: memFromCgroup ? ('cgroup' as const) : ('host' as const),
    }),
  });
}
