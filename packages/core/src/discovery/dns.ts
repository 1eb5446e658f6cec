import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import { parseDuration } from '../duration.js';
import { ErrorCodes, MeshError } from '../errors.js';
import { type Endpoint, makeEndpoint, parseHostPort } from '../model.js';
import {
  checkKeys,
  checkNumber,
  describe,
  isPlainObject,
  join,
  optBoolean,
  optEnum,
  optNumber,
  optString,
} from '../validate.js';
import type { DiscoveryContext, DiscoveryFactory, DiscoveryListener, DiscoverySource } from './types.js';

export type DnsRecordType = 'A' | 'AAAA' | 'A+AAAA' | 'SRV';

export interface DnsDiscoveryConfig {
  /** The name to resolve (for SRV, the full `_service._proto.name`). */
  readonly name: string;
  /** Port for A/AAAA answers (SRV answers carry their own). */
  readonly port: number | undefined;
  readonly recordType: DnsRecordType;
  /** Re-resolution interval in ms (30s). With `respectTtl`, a shorter record TTL wins. */
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
  readonly #resolver: DnsResolverLike;
  #listener: DiscoveryListener | undefined;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #closed = false;
  #lastKey = '';

  constructor(config: DnsDiscoveryConfig, service: string, resolver?: DnsResolverLike) {
    this.#config = config;
    this.#service = service;
    if (resolver) {
      this.#resolver = resolver;
    } else {
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
          `DNS ${this.#config.recordType} lookup of "${this.#config.name}" failed: ${(err as Error).message}; keeping the last good endpoints`,
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
    return this.#lookupAddresses(c.name, c.port as number, c.recordType, 1, 0);
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
          ? this.#resolver.resolve4(name, { ttl: true })
          : this.#resolver.resolve6(name, { ttl: true }),
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
    const records = (await this.#resolver.resolveSrv(this.#config.name)).filter(
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
    this.#resolver.cancel?.();
    this.#listener = undefined;
  }
}

const RECORD_TYPES: readonly DnsRecordType[] = ['A', 'AAAA', 'A+AAAA', 'SRV'];

/**
 * `dns: 'ratings.example.com:8080'` or `dns: { name, port?, recordType?, refreshInterval?,
 * respectTtl?, servers?, timeout?, tries? }` (also as `discovery: { type: dns, ... }`).
 */
export const dnsDiscovery: DiscoveryFactory<DnsDiscoveryConfig> = {
  name: 'dns',
  shorthand: 'dns',
  fromShorthand(value) {
    return isPlainObject(value) ? value : { name: value };
  },
  parseConfig(raw, path, issues) {
    checkKeys(
      raw,
      [
        'name',
        'port',
        'recordType',
        'refreshInterval',
        'respectTtl',
        'minRefresh',
        'servers',
        'timeout',
        'tries',
      ],
      path,
      issues,
    );
    const recordType = optEnum(raw, 'recordType', path, issues, RECORD_TYPES, 'A+AAAA');
    let name = optString(raw, 'name', path, issues) ?? '';
    if (raw.name === undefined)
      issues.push({ path: join(path, 'name'), message: 'is required (the DNS name to resolve)' });
    let port: number | undefined;
    if (raw.port !== undefined)
      port = checkNumber(raw.port, join(path, 'port'), issues, { min: 1, max: 65535, integer: true });
    if (recordType !== 'SRV' && name !== '' && raw.port === undefined) {
      const hp = parseHostPort(name, join(path, 'name'), issues);
      if (hp) {
        name = hp.address;
        port = hp.port;
      }
    }
    const servers: string[] = [];
    if (raw.servers !== undefined) {
      if (!Array.isArray(raw.servers)) {
        issues.push({
          path: join(path, 'servers'),
          message: `must be a list of "ip" or "ip:port", got ${describe(raw.servers)}`,
        });
      } else {
        raw.servers.forEach((s: unknown, i: number) => {
          const p = join(join(path, 'servers'), i);
          if (typeof s !== 'string') {
            issues.push({ path: p, message: `must be "ip" or "ip:port", got ${describe(s)}` });
            return;
          }
          const hp = parseHostPort(s, p, issues, 53);
          if (hp && !isIP(hp.address))
            issues.push({ path: p, message: `must be an IP address, got "${hp.address}"` });
          else if (hp)
            servers.push(isIP(hp.address) === 6 ? `[${hp.address}]:${hp.port}` : `${hp.address}:${hp.port}`);
        });
      }
    }
    const dur = (key: string, def: number) =>
      raw[key] === undefined ? def : (parseDuration(raw[key], join(path, key), issues) ?? def);
    return Object.freeze({
      name,
      port,
      recordType,
      refreshIntervalMs: dur('refreshInterval', 30_000),
      respectTtl: optBoolean(raw, 'respectTtl', path, issues, true),
      minRefreshMs: dur('minRefresh', 1000),
      servers: Object.freeze(servers),
      timeoutMs: dur('timeout', 5000),
      tries: optNumber(raw, 'tries', path, issues, 2, { min: 1, max: 10, integer: true }),
    });
  },
  create(config, ctx: DiscoveryContext) {
    return new DnsSource(config, ctx.service);
  },
};
