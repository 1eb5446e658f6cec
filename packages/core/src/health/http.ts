import { request } from 'node:http';
import { checkKeys, describe, join, optString } from '../validate.js';
import type { HealthCheckerFactory, HealthCheckResult, HealthCheckTarget } from './types.js';

export interface HttpHealthCheckConfig {
  /** Request path (default `/healthz`). */
  readonly path: string;
  /** Host header (default: the endpoint's host name, else the service name). */
  readonly host: string | undefined;
  /** Statuses that count as healthy, as inclusive ranges (default 200-299). */
  readonly expectedStatuses: readonly (readonly [number, number])[];
  readonly method: 'GET' | 'HEAD';
}

function parseStatuses(raw: unknown, path: string, issues: import('../errors.js').ConfigIssue[]) {
  if (!Array.isArray(raw)) {
    issues.push({ path, message: `must be a list of statuses or ranges ("200-299"), got ${describe(raw)}` });
    return undefined;
  }
  const out: Array<readonly [number, number]> = [];
  raw.forEach((item: unknown, i: number) => {
    const p = join(path, i);
    const m = typeof item === 'string' ? /^(\d{3})(?:-(\d{3}))?$/.exec(item.trim()) : undefined;
    const lo = typeof item === 'number' ? item : m ? Number(m[1]) : Number.NaN;
    const hi = typeof item === 'number' ? item : m?.[2] !== undefined ? Number(m[2]) : lo;
    if (!Number.isInteger(lo) || lo < 100 || hi > 599 || hi < lo) {
      issues.push({
        path: p,
        message: `must be a status (200) or a range ("200-299"), got ${describe(item)}`,
      });
    } else {
      out.push([lo, hi] as const);
    }
  });
  return out;
}

/**
 * `healthCheck: { type: 'http', path, host, expectedStatuses, method }` — a plaintext HTTP/1.1
 * request on a fresh connection; healthy when the status is expected.
 */
export const httpHealthChecker: HealthCheckerFactory<HttpHealthCheckConfig> = {
  name: 'http',
  parseConfig(raw, path, issues) {
    checkKeys(raw, ['path', 'host', 'expectedStatuses', 'method'], path, issues);
    const p = optString(raw, 'path', path, issues) ?? '/healthz';
    if (!p.startsWith('/'))
      issues.push({ path: join(path, 'path'), message: `must start with "/", got "${p}"` });
    const method = optString(raw, 'method', path, issues) ?? 'GET';
    if (method !== 'GET' && method !== 'HEAD')
      issues.push({ path: join(path, 'method'), message: `must be GET or HEAD, got "${method}"` });
    const statuses =
      raw.expectedStatuses === undefined
        ? undefined
        : parseStatuses(raw.expectedStatuses, join(path, 'expectedStatuses'), issues);
    return Object.freeze({
      path: p,
      host: optString(raw, 'host', path, issues),
      expectedStatuses: Object.freeze(statuses ?? [[200, 299] as const]),
      method: method === 'HEAD' ? 'HEAD' : 'GET',
    });
  },
  create(config) {
    return {
      check(target: HealthCheckTarget, signal: AbortSignal): Promise<HealthCheckResult> {
        return new Promise((resolve) => {
          let settled = false;
          const done = (result: HealthCheckResult) => {
            if (settled) return;
            settled = true;
            req.destroy();
            resolve(result);
          };
          const req = request({
            host: target.address,
            port: target.port,
            path: config.path,
            method: config.method,
            agent: false,
            signal,
            headers: {
              host: config.host ?? target.hostname ?? target.service,
              'user-agent': 'meshlet-health-check',
              connection: 'close',
            },
          });
          req.once('response', (res) => {
            const status = res.statusCode ?? 0;
            res.resume();
            const ok = config.expectedStatuses.some(([lo, hi]) => status >= lo && status <= hi);
            done({ healthy: ok, reason: `status ${status}` });
          });
          req.once('error', (err: NodeJS.ErrnoException) =>
            done({ healthy: false, reason: signal.aborted ? 'timeout' : (err.code ?? err.message) }),
          );
          req.end();
        });
      },
    };
  },
};
