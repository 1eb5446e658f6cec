import type { ConfigIssue } from './errors.js';

/** Small helpers for config validation that record every problem by its field path. */

export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `the string ${JSON.stringify(value)}`;
  return `${typeof value} ${JSON.stringify(value)}`;
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function expectObject(
  value: unknown,
  path: string,
  issues: ConfigIssue[],
): Record<string, unknown> | undefined {
  if (isPlainObject(value)) return value;
  issues.push({ path, message: `must be an object, got ${describe(value)}` });
  return undefined;
}

/** Records an issue for every key of `obj` not in `allowed` (catches typos such as `endpionts`). */
export function checkKeys(
  obj: Record<string, unknown>,
  allowed: readonly string[],
  path: string,
  issues: ConfigIssue[],
) {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) {
      issues.push({
        path: join(path, key),
        message: `unknown field; expected one of: ${allowed.join(', ')}`,
      });
    }
  }
}

export function join(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  return path ? `${path}.${key}` : key;
}

export interface NumberRule {
  min?: number;
  max?: number;
  integer?: boolean;
}

export function optNumber(
  obj: Record<string, unknown>,
  key: string,
  path: string,
  issues: ConfigIssue[],
  def: number,
  rule: NumberRule = {},
): number {
  const v = obj[key];
  if (v === undefined) return def;
  return checkNumber(v, join(path, key), issues, rule) ?? def;
}

export function checkNumber(
  v: unknown,
  path: string,
  issues: ConfigIssue[],
  rule: NumberRule = {},
): number | undefined {
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    issues.push({ path, message: `must be a number, got ${describe(v)}` });
    return undefined;
  }
  if (rule.integer && !Number.isInteger(v)) {
    issues.push({ path, message: `must be a whole number, got ${v}` });
    return undefined;
  }
  if (rule.min !== undefined && v < rule.min) {
    issues.push({ path, message: `must be >= ${rule.min}, got ${v}` });
    return undefined;
  }
  if (rule.max !== undefined && v > rule.max) {
    issues.push({ path, message: `must be <= ${rule.max}, got ${v}` });
    return undefined;
  }
  return v;
}

export function optString(
  obj: Record<string, unknown>,
  key: string,
  path: string,
  issues: ConfigIssue[],
): string | undefined {
  const v = obj[key];
  if (v === undefined) return undefined;
  if (typeof v === 'string' && v.length > 0) return v;
  issues.push({ path: join(path, key), message: `must be a non-empty string, got ${describe(v)}` });
  return undefined;
}

export function optBoolean(
  obj: Record<string, unknown>,
  key: string,
  path: string,
  issues: ConfigIssue[],
  def: boolean,
): boolean {
  const v = obj[key];
  if (v === undefined) return def;
  if (typeof v === 'boolean') return v;
  issues.push({ path: join(path, key), message: `must be true or false, got ${describe(v)}` });
  return def;
}

export function optEnum<T extends string>(
  obj: Record<string, unknown>,
  key: string,
  path: string,
  issues: ConfigIssue[],
  allowed: readonly T[],
  def: T,
): T {
  const v = obj[key];
  if (v === undefined) return def;
  if (typeof v === 'string' && (allowed as readonly string[]).includes(v)) return v as T;
  issues.push({ path: join(path, key), message: `must be one of ${allowed.join(', ')}, got ${describe(v)}` });
  return def;
}
