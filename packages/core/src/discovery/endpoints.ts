import type { ConfigIssue } from '../errors.js';
import { type Endpoint, HEALTH_STATUSES, isValidHost, makeEndpoint, parseHostPort } from '../model.js';
import { type InputOf, s } from '../schema.js';
import { describe, isPlainObject, join } from '../validate.js';

const endpointObject = s.object(
  {
    address: s.string({ required: true, doc: 'IP literal or host name.' }),
    port: s.integer({ min: 1, max: 65535, required: true, doc: 'Port, 1–65535.' }),
    weight: s.integer({ min: 1, max: 1_000_000, default: 1, doc: 'Relative weight for weighted policies.' }),
    priority: s.integer({ min: 0, max: 1000, default: 0, doc: 'Failover priority (0 first).' }),
    region: s.string({ defaultText: '""', doc: 'Locality: region.' }),
    zone: s.string({ defaultText: '""', doc: 'Locality: zone.' }),
    subZone: s.string({ defaultText: '""', doc: 'Locality: sub-zone.' }),
    health: s.enum(HEALTH_STATUSES, { default: 'healthy', doc: 'Health as discovery reports it.' }),
    metadata: s.record(s.string({ empty: true }), { default: {}, doc: 'String labels.' }),
    hostname: s.string({ defaultText: 'none', doc: 'TLS server name and logical host name.' }),
    name: s.string({
      defaultText: 'none',
      doc: "The instance's name, shown by the admin page and snapshot() (never used for routing).",
    }),
  },
  {
    name: 'EndpointInput',
    doc: 'One endpoint: an address and a port, with optional weight, priority and locality.',
  },
);

/** One endpoint as written in config and endpoint files: `"host:port"`, `"[v6]:port"` or an object. */
export const endpointSchema = s.custom<string | InputOf<typeof endpointObject>, Endpoint>({
  ts: (e) => `string | ${endpointObject.ts(e)}`,
  json: (e) => ({
    anyOf: [{ type: 'string', description: '"host:port" or "[v6]:port"' }, endpointObject.json(e)],
  }),
  accepts: (raw) => typeof raw === 'string' || isPlainObject(raw),
  parse(item, p, issues) {
    if (typeof item === 'string') {
      const hp = parseHostPort(item, p, issues);
      return hp ? makeEndpoint(hp) : undefined;
    }
    if (!isPlainObject(item)) {
      issues.push({ path: p, message: `must be "host:port" or { address, port }, got ${describe(item)}` });
      return undefined;
    }
    const before = issues.length;
    const o = endpointObject.parse(item, p, issues);
    if (o?.address !== undefined && !isValidHost(o.address))
      issues.push({
        path: join(p, 'address'),
        message: `${JSON.stringify(o.address)} is not an IP address or a host name`,
      });
    if (!o || issues.length > before || o.address === undefined || o.port === undefined) return undefined;
    return makeEndpoint({
      address: o.address,
      port: o.port,
      weight: o.weight,
      priority: o.priority,
      health: o.health,
      metadata: item.metadata === undefined ? undefined : o.metadata,
      hostname: o.hostname,
      name: o.name,
      locality: { region: o.region ?? '', zone: o.zone ?? '', subZone: o.subZone ?? '' },
    });
  },
});

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
    const ep = endpointSchema.parse(item, p, issues);
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

const endpointArray = s.array(endpointSchema);

/** A list of endpoints (`endpoints: [...]`, endpoint files). */
export const endpointListSchema = s.custom<readonly (string | InputOf<typeof endpointObject>)[], Endpoint[]>(
  {
    ts: (e) => endpointArray.ts(e),
    json: (e) => endpointArray.json(e),
    accepts: Array.isArray,
    parse: parseEndpointList,
  },
  {
    doc: 'A fixed list of endpoints: `"host:port"`, `"[v6]:port"` or `{ address, port, … }`.',
    required: true,
  },
);
