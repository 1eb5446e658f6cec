import { request } from 'node:http';
import { s } from '../schema.js';
import { describe } from '../validate.js';
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

/** A status (`200`) or an inclusive range (`"200-299"`). */
const statusRange = s.custom<number | string, readonly [number, number]>({
  ts: 'number | string',
  json: {
    anyOf: [
      { type: 'integer', minimum: 100, maximum: 599 },
      { type: 'string', pattern: '^\\d{3}(-\\d{3})?$' },
    ],
  },
  parse(item, p, issues) {
    const m = typeof item === 'string' ? /^(\d{3})(?:-(\d{3}))?$/.exec(item.trim()) : undefined;
    const lo = typeof item === 'number' ? item : m ? Number(m[1]) : Number.NaN;
    const hi = typeof item === 'number' ? item : m?.[2] !== undefined ? Number(m[2]) : lo;
    if (!Number.isInteger(lo) || lo < 100 || hi > 599 || hi < lo) {
      issues.push({
        path: p,
        message: `must be a status (200) or a range ("200-299"), got ${describe(item)}`,
      });
      return undefined;
    }
    return [lo, hi] as const;
  },
});

const httpOptions = s.object(
  {
    path: s.string({
      pattern: /^\//,
      patternMessage: 'must start with "/"',
      default: '/healthz',
      doc: 'Request path.',
    }),
    host: s.string({ defaultText: "the endpoint's host name, else the service name", doc: 'Host header.' }),
    expectedStatuses: s.array(statusRange, {
      message: 'must be a list of statuses or ranges ("200-299")',
      default: ['200-299'],
      doc: 'Statuses that count as healthy: statuses (`200`) or inclusive ranges (`"200-299"`).',
    }),
    method: s.enum(['GET', 'HEAD'], {
      message: 'must be GET or HEAD',
      default: 'GET',
      doc: 'Request method.',
    }),
  },
  {
    name: 'HttpHealthCheckOptions',
    doc: 'A plaintext HTTP/1.1 request on a fresh connection; healthy when the status is expected.',
  },
);

/**
 * `healthCheck: { type: 'http', path, host, expectedStatuses, method }` — a plaintext HTTP/1.1
 * request on a fresh connection; healthy when the status is expected.
 */
export const httpHealthChecker: HealthCheckerFactory<HttpHealthCheckConfig> = {
  name: 'http',
  schema: httpOptions,
  parseConfig(raw, path, issues) {
    const o = httpOptions.parse(raw, path, issues) ?? httpOptions.parse({}, path, []);
    return Object.freeze({
      path: o?.path ?? '/healthz',
      host: o?.host,
      expectedStatuses: Object.freeze(o?.expectedStatuses ?? [[200, 299] as const]),
      method: o?.method ?? 'GET',
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
