import type { ConfigIssue } from './errors.js';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;

/**
 * Parses a duration given as milliseconds (a number) or a string such as `250ms`, `1.5s`, `2m`.
 * Pushes an issue naming `path` and returns undefined when the value is not a duration.
 */
export function parseDuration(value: unknown, path: string, issues: ConfigIssue[]): number | undefined {
  if (typeof value === 'number') {
    if (Number.isFinite(value) && value >= 0) return value;
    issues.push({ path, message: `must be a non-negative number of milliseconds, got ${value}` });
    return undefined;
  }
  if (typeof value === 'string') {
    const m = DURATION_RE.exec(value.trim());
    if (m) return Number(m[1]) * (UNITS[m[2] as string] as number);
  }
  issues.push({
    path,
    message: `must be a duration such as 250ms, 2s, 1m or a number of milliseconds, got ${JSON.stringify(value)}`,
  });
  return undefined;
}

export function formatDuration(ms: number): string {
  if (ms % 1000 === 0 && ms >= 1000) return `${ms / 1000}s`;
  return `${ms}ms`;
}
