import type { LookupAddress } from 'node:dns';
import { Resolver, lookup as systemLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { type ConfigIssue, ErrorCodes, MeshError } from '../errors.js';
import { type Endpoint, makeEndpoint, parseHostPort } from '../model.js';
import { s } from '../schema.js';
import { describe, isPlainObject, join } from '../validate.js';
import type { DiscoveryContext, DiscoveryFactory, DiscoveryListener, DiscoverySource } from './types.js';

export type DnsRecordType = 'A' | 'AAAA' | 'A+AAAA' | 'SRV';

/**
 * `system`: the operating system's resolver (getaddrinfo through `dns.lookup`, as Node's `http`
 * does): `/etc/hosts`, nsswitch, search domains. `dns`: the DNS protocol (c-ares), with TTLs, SRV
 * and chosen servers.
 */
export type DnsResolverKind = 'system' | 'dns';

export interface DnsDiscoveryConfig {
  /** The name to resolve (for SRV, the full `_service._proto.name`). */
  readonly name: string;
  /** Port for A/AAAA answers (SRV answers carry their own). */
  readonly port: number | undefined;
  readonly recordType: DnsRecordType;
  /** Who resolves the name (`system` unless a DNS-protocol option asks for `dns`). */
  readonly resolver: DnsResolverKind;
  /**
   * Re-resolution interval in ms (`system`: 5s, Envoy's `dns_refresh_rate`; `dns`: 30s, and with
   * `respectTtl` a shorter record TTL wins).
   */
  readonly refreshIntervalMs: number;
  readonly respectTtl: boolean;
  /** Floor for TTL-driven refresh in ms (1s). */
  readonly minRefreshMs: number;
  /** DNS servers (`ip` or `ip:port`); the system's when empty. */
  readonly servers: readonly string[];
  /** Per-query timeout in ms (5s) and tries per query (2). */
  readonly timeoutMs: number;
  readonly tries: number;
}

/** What the `system` resolver needs: `dns.lookup(name, { all: true, family })` (the default). */
export type SystemLookup = (
  name: string,
  options: { all: true; family: 0 | 4 | 6 },
) => Promise<readonly LookupAddress[]>;

/** What the DNS source needs of a resolver (node:dns/promises' `Resolver` by default). */
export interface DnsResolverLike {
  resolve4(name: string, options: { ttl: true }): Promise<Array<{ address: string; ttl: number }>>;
  resolve6(name: string, options: { ttl: true }): Promise<Array<{ address: string; ttl: number }>>;
  resolveSrv(name: string): Promise<Array<{ name: string; port: number; priority: number; weight: number }>>;
  cancel?(): void;
}

const EMPTY_CODES = new Set(['ENODATA', 'ENOTFOUND', 'NODATA', 'NOTFOUND']);

function isEmptyAnswer(err: unknown): boolean {
  return EMPTY_CODES.has(String((err as { code?: unknown })?.code));
}

interface Answer {
  endpoints: Endpoint[];
  /** Smallest TTL in the answer, in seconds (undefined when unknown, e.g. SRV). */
  ttl: number | undefined;
}

/**
 * Resolves a name periodically (Envoy's STRICT_DNS): every address of the answer is an endpoint.
 * A failed lookup, a timeout, or an empty answer keeps the last good endpoints and is reported;
 * the next try comes with exponential backoff (1s doubling, capped at the refresh interval).
 */
export class DnsSource implements DiscoverySource {
  readonly #config: DnsDiscoveryConfig;
  readonly #service: string;
  readonly #resolver: DnsResolverLike | undefined;
  readonly #lookupFn: SystemLookup;
  #listener: DiscoveryListener | undefined;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #closed = false;
  #lastKey = '';

  constructor(
    config: DnsDiscoveryConfig,
    service: string,
    resolver?: DnsResolverLike,
    lookup: SystemLookup = systemLookup,
  ) {
    this.#config = config;
    this.#service = service;
    this.#lookupFn = lookup;
    if (resolver) {
      this.#resolver = resolver;
    } else if (config.resolver === 'dns') {
      const r = new Resolver({ timeout: config.timeoutMs, tries: config.tries });
      if (config.servers.length > 0) r.setServers([...config.servers]);
      this.#resolver = r;
    }
  }

  start(listener: DiscoveryListener): void {
    this.#listener = listener;
    void this.#refresh();
  }

  async #refresh(): Promise<void> {
    if (this.#closed) return;
    let next: number;
    try {
      const answer = await this.#lookup();
      if (this.#closed) return;
      if (answer.endpoints.length === 0) throw new Error('the answer has no usable records');
      this.#failures = 0;
      const key = answer.endpoints.map((e) => `${e.id}/${e.weight}/${e.priority}`).join(',');
      // Unchanged answers are still delivered once (first answer); later identical ones are not.
      if (key !== this.#lastKey) {
        this.#lastKey = key;
        this.#listener?.onUpdate({ endpoints: answer.endpoints, version: new Date().toISOString() });
      }
      const c = this.#config;
      next = c.refreshIntervalMs;
      if (c.respectTtl && answer.ttl !== undefined)
        next = Math.max(c.minRefreshMs, Math.min(next, answer.ttl * 1000));
    } catch (err) {
      if (this.#closed) return;
      this.#failures++;
      this.#listener?.onError(
        new MeshError(
          ErrorCodes.DISCOVERY,
          `DNS ${this.#config.recordType} lookup of "${this.#config.name}"${this.#config.resolver === 'system' ? ' (system resolver)' : ''} failed: ${(err as Error).message}; keeping the last good endpoints`,
          { service: this.#service, name: this.#config.name },
          { cause: err },
        ),
      );
      const backoff = Math.min(this.#config.refreshIntervalMs, 1000 * 2 ** (this.#failures - 1));
      next = backoff / 2 + Math.random() * (backoff / 2);
    }
    this.#timer = setTimeout(() => void this.#refresh(), next);
    this.#timer.unref();
  }

  async #lookup(): Promise<Answer> {
    const c = this.#config;
    if (c.recordType === 'SRV') return this.#lookupSrv();
    if (!this.#resolver) return this.#lookupSystem(c.name, c.port as number, c.recordType);
    return this.#lookupAddresses(c.name, c.port as number, c.recordType, 1, 0);
  }

  /** getaddrinfo: what the system resolves (`/etc/hosts` included); no TTL, so no `ttl`. */
  async #lookupSystem(name: string, port: number, type: DnsRecordType): Promise<Answer> {
    if (isIP(name))
      return { endpoints: [makeEndpoint({ address: name, port, hostname: name })], ttl: undefined };
    const family = type === 'A' ? 4 : type === 'AAAA' ? 6 : 0;
    const addresses = await this.#lookupFn(name, { all: true, family });
    const endpoints: Endpoint[] = [];
    const seen = new Set<string>();
    for (const a of addresses) {
      if (seen.has(a.address)) continue;
      seen.add(a.address);
      endpoints.push(makeEndpoint({ address: a.address, port, hostname: name }));
    }
    return { endpoints, ttl: undefined };
  }

  async #lookupAddresses(
    name: string,
    port: number,
    type: DnsRecordType,
    weight: number,
    priority: number,
  ): Promise<Answer> {
    if (isIP(name))
      return {
        endpoints: [makeEndpoint({ address: name, port, weight, priority, hostname: name })],
        ttl: undefined,
      };
    const families: Array<'4' | '6'> = type === 'A' ? ['4'] : type === 'AAAA' ? ['6'] : ['4', '6'];
    const results = await Promise.allSettled(
      families.map((f) =>
        f === '4'
          ? (this.#resolver as DnsResolverLike).resolve4(name, { ttl: true })
          : (this.#resolver as DnsResolverLike).resolve6(name, { ttl: true }),
      ),
    );
    const endpoints: Endpoint[] = [];
    let ttl: number | undefined;
    let hardError: unknown;
    for (const r of results) {
      if (r.status === 'rejected') {
        if (!isEmptyAnswer(r.reason)) hardError = r.reason;
        continue;
      }
      for (const rec of r.value) {
        endpoints.push(makeEndpoint({ address: rec.address, port, weight, priority, hostname: name }));
        ttl = ttl === undefined ? rec.ttl : Math.min(ttl, rec.ttl);
      }
    }
    // One family failing hard while the other answered is still a usable answer.
    if (endpoints.length === 0 && hardError !== undefined) throw hardError;
    return { endpoints, ttl };
  }

  async #lookupSrv(): Promise<Answer> {
    // RFC 2782: a target of "." means the service is not available there; port 0 is no port.
    const records = (await (this.#resolver as DnsResolverLike).resolveSrv(this.#config.name)).filter(
      (r) => r.port >= 1 && r.port <= 65535 && r.name !== '' && r.name !== '.',
    );
    const answers = await Promise.all(
      records.map((r) =>
        this.#lookupAddresses(r.name, r.port, 'A+AAAA', Math.max(1, r.weight), r.priority).catch(
          (): Answer => ({ endpoints: [], ttl: undefined }),
        ),
      ),
    );
    const endpoints: Endpoint[] = [];
    const seen = new Set<string>();
    let ttl: number | undefined;
    for (const a of answers) {
      for (const e of a.endpoints) {
        if (seen.has(e.id)) continue;
        seen.add(e.id);
        endpoints.push(e);
      }
      if (a.ttl !== undefined) ttl = ttl === undefined ? a.ttl : Math.min(ttl, a.ttl);
    }
    return { endpoints, ttl };
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#resolver?.cancel?.();
    this.#listener = undefined;
  }
}

const RECORD_TYPES: readonly DnsRecordType[] = ['A', 'AAAA', 'A+AAAA', 'SRV'];

/** The options that only the DNS protocol has: giving one makes `resolver` default to `dns`. */
const DNS_PROTOCOL_KEYS = ['servers', 'respectTtl', 'minRefresh', 'timeout', 'tries'] as const;

/** `servers` entries: `ip` or `ip:port` (port 53 by default), normalized for `Resolver.setServers`. */
const dnsServer = s.custom<string, string>({
  ts: 'string',
  json: { type: 'string', description: '"ip" or "ip:port"' },
  accepts: (raw) => typeof raw === 'string',
  parse(raw, p, issues) {
    if (typeof raw !== 'string') {
      issues.push({ path: p, message: `must be "ip" or "ip:port", got ${describe(raw)}` });
      return undefined;
    }
    const hp = parseHostPort(raw, p, issues, 53);
    if (!hp) return undefined;
    if (!isIP(hp.address)) {
      issues.push({ path: p, message: `must be an IP address, got "${hp.address}"` });
      return undefined;
    }
    return isIP(hp.address) === 6 ? `[${hp.address}]:${hp.port}` : `${hp.address}:${hp.port}`;
  },
});

const dnsOptions = s.object(
  {
    name: s.string({
      required: 'is required (the DNS name to resolve)',
      doc: 'The name to resolve; `name:port` sets the port too. For SRV, the full `_service._proto.name`.',
    }),
    port: s.integer({
      min: 1,
      max: 65535,
      defaultText: 'the port in `name`',
      doc: 'Port of the A/AAAA answers (SRV answers carry their own).',
    }),
    recordType: s.enum(RECORD_TYPES, {
      default: 'A+AAAA',
      doc: 'Records asked for: `A`, `AAAA`, `A+AAAA`, or `SRV` (targets resolved; SRV weight and priority kept; needs resolver `dns`).',
    }),
    resolver: s.enum(['system', 'dns'] as const, {
      defaultText:
        '`system`; `dns` when `servers`, `respectTtl`, `minRefresh`, `timeout`, `tries` or recordType `SRV` is given',
      doc:
        "Who resolves the name: `system` is getaddrinfo (Node's `dns.lookup`, as `http` uses: `/etc/hosts`, " +
        'nsswitch, search domains; no TTL); `dns` asks DNS servers directly (TTL-driven refresh, SRV, chosen servers).',
    }),
    refreshInterval: s.duration({
      positive: true,
      defaultText: "5s with resolver `system` (Envoy's dns_refresh_rate); 30s with resolver `dns`",
      doc: 'Re-resolution interval (with resolver `dns` and `respectTtl`, a shorter record TTL wins).',
    }),
    respectTtl: s.boolean({
      default: true,
      doc: 'Resolver `dns`: refresh sooner when the record TTL is shorter than refreshInterval.',
    }),
    minRefresh: s.duration({ default: '1s', doc: 'Resolver `dns`: floor for TTL-driven refreshes.' }),
    servers: s.array(dnsServer, {
      message: 'must be a list of "ip" or "ip:port"',
      defaultText: "the system's DNS servers",
      doc: 'Resolver `dns`: the DNS servers to ask, `ip` or `ip:port`.',
    }),
    timeout: s.duration({ default: '5s', doc: 'Resolver `dns`: timeout of one query.' }),
    tries: s.integer({ min: 1, max: 10, default: 2, doc: 'Resolver `dns`: tries per query.' }),
  },
  {
    name: 'DnsDiscoveryInput',
    doc: "Endpoints from DNS (Envoy's STRICT_DNS): every address in the answer is an endpoint.",
  },
);

/**
 * Parses DNS options at `path`; problems with the name are reported at `namePath` (the shorthand
 * string itself for `dns: 'name:port'`).
 */
function parseDnsOptions(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
  namePath = join(path, 'name'),
): DnsDiscoveryConfig {
  const o = dnsOptions.parse(raw, path, issues);
  const given = isPlainObject(raw) ? raw : {};
  const recordType = o?.recordType ?? 'A+AAAA';
  let name = o?.name ?? '';
  let port = o?.port;
  if (recordType !== 'SRV' && name !== '' && given.port === undefined) {
    const hp = parseHostPort(name, namePath, issues);
    if (hp) {
      name = hp.address;
      port = hp.port;
    }
  }
  const protocolKeys = DNS_PROTOCOL_KEYS.filter((k) => given[k] !== undefined);
  let resolver: DnsResolverKind =
    o?.resolver ?? (protocolKeys.length > 0 || recordType === 'SRV' ? 'dns' : 'system');
  if (resolver === 'system') {
    for (const k of protocolKeys)
      issues.push({
        path: join(path, k),
        message: 'applies to resolver dns only (the system resolver has no such setting)',
      });
    if (recordType === 'SRV') {
      issues.push({
        path: join(path, 'recordType'),
        message: 'SRV needs resolver dns (getaddrinfo has no SRV)',
      });
      resolver = 'dns';
    }
  }
  return Object.freeze({
    name,
    port,
    recordType,
    resolver,
    refreshIntervalMs: o?.refreshInterval ?? (resolver === 'system' ? 5_000 : 30_000),
    respectTtl: o?.respectTtl ?? true,
    minRefreshMs: o?.minRefresh ?? 1000,
    servers: Object.freeze(o?.servers ?? []),
    timeoutMs: o?.timeout ?? 5000,
    tries: o?.tries ?? 2,
  });
}

/**
 * `dns: 'ratings.example.com:8080'` or `dns: { name, port?, recordType?, resolver?,
 * refreshInterval?, respectTtl?, minRefresh?, servers?, timeout?, tries? }` (also as
 * `discovery: { type: dns, ... }`).
 */
export const dnsDiscovery: DiscoveryFactory<DnsDiscoveryConfig> = {
  name: 'dns',
  shorthand: 'dns',
  schema: dnsOptions,
  shorthandSchema: s.union([s.string(), dnsOptions], {
    doc: 'Endpoints from DNS: `name:port`, or `{ name, port?, recordType?, resolver?, … }`.',
    defaultText: 'none',
  }),
  parseShorthand(value, path, issues) {
    if (typeof value === 'string') return parseDnsOptions({ name: value }, path, issues, path);
    return parseDnsOptions(value, path, issues);
  },
  parseConfig(raw, path, issues) {
    return parseDnsOptions(raw, path, issues);
  },
  create(config, ctx: DiscoveryContext) {
    return new DnsSource(config, ctx.service);
  },
};
