import type { ConfigIssue } from '../errors.js';
import {
  type Endpoint,
  HEALTH_STATUSES,
  type HealthStatus,
  isValidHost,
  makeEndpoint,
  parseHostPort,
} from '../model.js';
import { checkKeys, describe, isPlainObject, join, optNumber, optString } from '../validate.js';

const ENDPOINT_KEYS = [
  'address',
  'port',
  'weight',
  'region',
  'zone',
  'subZone',
  'priority',
  'health',
  'metadata',
  'hostname',
];

/**
 * Parses an endpoint list as written in config and endpoint files: each item is `"host:port"` or
 * `{ address, port, weight?, region?, zone?, subZone?, priority?, health?, metadata?, hostname? }`.
 * Every bad item is reported by its path; good items are kept.
 */
export function parseEndpointList(raw: unknown, path: string, issues: ConfigIssue[]): Endpoint[] {
  if (!Array.isArray(raw)) {
    issues.push({
      path,
      message: `must be a list of endpoints ("host:port" or { address, port }), got ${describe(raw)}`,
    });
    return [];
  }
  const out: Endpoint[] = [];
  const seen = new Set<string>();
  raw.forEach((item: unknown, i: number) => {
    const p = join(path, i);
    const before = issues.length;
    let ep: Endpoint | undefined;
    if (typeof item === 'string') {
      const hp = parseHostPort(item, p, issues);
      if (hp) ep = makeEndpoint(hp);
    } else if (isPlainObject(item)) {
      checkKeys(item, ENDPOINT_KEYS, p, issues);
      const address = optString(item, 'address', p, issues);
      if (address === undefined) issues.push({ path: join(p, 'address'), message: 'is required' });
      else if (!isValidHost(address))
        issues.push({
          path: join(p, 'address'),
          message: `${JSON.stringify(address)} is not an IP address or a host name`,
        });
      const port =
        item.port === undefined
          ? undefined
          : optNumber(item, 'port', p, issues, 0, { min: 1, max: 65535, integer: true });
      if (item.port === undefined) issues.push({ path: join(p, 'port'), message: 'is required' });
      const weight = optNumber(item, 'weight', p, issues, 1, { min: 1, max: 1_000_000, integer: true });
      const priority = optNumber(item, 'priority', p, issues, 0, { min: 0, max: 1000, integer: true });
      let health: HealthStatus = 'healthy';
      if (item.health !== undefined) {
        if (typeof item.health === 'string' && (HEALTH_STATUSES as readonly string[]).includes(item.health)) {
          health = item.health as HealthStatus;
        } else {
          issues.push({
            path: join(p, 'health'),
            message: `must be one of ${HEALTH_STATUSES.join(', ')}, got ${describe(item.health)}`,
          });
        }
      }
      let metadata: Record<string, string> | undefined;
      if (item.metadata !== undefined) {
        if (
          isPlainObject(item.metadata) &&
          Object.values(item.metadata).every((v) => typeof v === 'string')
        ) {
          metadata = item.metadata as Record<string, string>;
        } else {
          issues.push({ path: join(p, 'metadata'), message: 'must be a map of strings' });
        }
      }
      if (address !== undefined && port !== undefined && issues.length === before) {
        ep = makeEndpoint({
          address,
          port,
          weight,
          priority,
          health,
          metadata,
          hostname: optString(item, 'hostname', p, issues),
          locality: {
            region: optString(item, 'region', p, issues) ?? '',
            zone: optString(item, 'zone', p, issues) ?? '',
            subZone: optString(item, 'subZone', p, issues) ?? '',
          },
        });
      }
    } else {
      issues.push({ path: p, message: `must be "host:port" or { address, port }, got ${describe(item)}` });
    }
    if (ep) {
      if (seen.has(ep.id)) {
        issues.push({ path: p, message: `duplicate endpoint ${ep.id}` });
      } else {
        seen.add(ep.id);
        out.push(ep);
      }
    }
  });
  return out;
}
