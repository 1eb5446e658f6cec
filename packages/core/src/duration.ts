import type { ConfigIssue } from './errors.js';

/**
 * The longest delay a Node.js timer can hold: `setTimeout`/`setInterval` treat anything above
 * 2^31−1 ms (about 24.8 days) as 1 ms (with a `TimeoutOverflowWarning`), so an unbounded duration
 * from config, xDS or a header would make every timer built from it fire at once. Config rejects
 * longer durations, xDS and headers are clamped to this (see docs/security.md).
 */
export const MAX_TIMER_MS = 2_147_483_647;

/** `ms` clamped to what a timer can hold (for durations computed from several inputs). */
export function clampTimer(ms: number): number {
  return Math.min(ms, MAX_TIMER_MS);
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;

/**
 * Parses a duration given as milliseconds (a number) or a string such as `250ms`, `1.5s`, `2m`.
 * Pushes an issue naming `path` and returns undefined when the value is not a duration.
 */
export function parseDuration(value: unknown, path: string, issues: ConfigIssue[]): number | undefined {
  if (typeof value === 'number') {
    if (Number.isFinite(value) && value >= 0) return capped(value, value, path, issues);
    issues.push({ path, message: `must be a non-negative number of milliseconds, got ${value}` });
    return undefined;
  }
  if (typeof value === 'string') {
    const m = DURATION_RE.exec(value.trim());
    if (m) return capped(Number(m[1]) * (UNITS[m[2] as string] as number), value, path, issues);
  }
  issues.push({
    path,
    message: `must be a duration such as 250ms, 2s, 1m or a number of milliseconds, got ${JSON.stringify(value)}`,
  });
  return undefined;
}

function capped(ms: number, raw: unknown, path: string, issues: ConfigIssue[]): number | undefined {
  if (ms <= MAX_TIMER_MS) return ms;
  issues.push({
    path,
    message: `must be at most ${MAX_TIMER_MS}ms (about 24.8 days, the longest a timer can wait), got ${JSON.stringify(raw)}`,
  });
  return undefined;
}

export function formatDuration(ms: number): string {
  if (ms % 1000 === 0 && ms >= 1000) return `${ms / 1000}s`;
  return `${ms}ms`;
}
