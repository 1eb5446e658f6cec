import { isIP } from 'node:net';
import type { InboundConnection, InboundTlsRequirement } from '@meshlet/core';
import { bool, list, type Msg, msg, num, str, typeOf, XdsDecodeError } from './codec.js';
import { RBAC_TYPE, type RbacConfig, translateRbac } from './rbac.js';
import { commonTlsContext, hcmRouteSource, type TranslateOptions } from './translate.js';
import type { RouteConfigUpdate } from './types.js';

/**
 * A server's inbound Listener (gRFC A36) as meshlet reads it: filter chains, each with its match
 * (the A36 subset of Envoy's `FilterChainMatch`), its `DownstreamTlsContext` (gRFC A29's server
 * side) and one HttpConnectionManager whose HTTP filters may be RBAC (gRFC A41) and the router,
 * and whose routes (inline or RDS) must take requests with `non_forwarding_action`.
 *
 * Validation NACKs what A36, A39 and A41 say to NACK, naming the field.
 */

const HCM = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const ROUTER = 'envoy.extensions.filters.http.router.v3.Router';
const DOWNSTREAM_TLS = 'envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext';
const TYPED_STRUCTS = new Set(['xds.type.v3.TypedStruct', 'udpa.type.v1.TypedStruct']);

/** One HTTP filter of a server's HCM. */
export interface ServerHttpFilter {
  readonly name: string;
  readonly kind: 'rbac' | 'router';
  /** The RBAC filter's configuration (kind `rbac`). */
  readonly rbac: RbacConfig | undefined;
}

/** A server's HttpConnectionManager: routes (RDS or inline) and HTTP filters. */
export interface ServerHcm {
  readonly rdsName: string | undefined;
  readonly routeConfig: RouteConfigUpdate | undefined;
  readonly filters: readonly ServerHttpFilter[];
}

export interface ServerFilterChain {
  readonly name: string;
  readonly tls: InboundTlsRequirement | undefined;
  readonly hcm: ServerHcm;
}

/** A CIDR block, normalized (host bits cleared): `key` compares blocks, `len` orders them. */
export interface Cidr {
  readonly key: string;
  readonly len: number;
  readonly v6: boolean;
  /** The network, as 4 or 16 bytes. */
  readonly bytes: readonly number[];
}

/** Envoy's ConnectionSourceType. */
export type SourceType = 'ANY' | 'SAME_IP_OR_LOOPBACK' | 'EXTERNAL';

/** One element of a `FilterChainMatch`'s cross product (A36's normalization). */
export interface ChainMatcher {
  /** Index of its chain in `ServerListenerUpdate.chains`. */
  readonly chain: number;
  readonly destinationPort: number | undefined;
  readonly prefix: Cidr | undefined;
  readonly serverName: string | undefined;
  /** '' (any), 'raw_buffer', 'tls', …. */
  readonly transport: string;
  readonly alpn: string | undefined;
  readonly sourceType: SourceType;
  readonly sourcePrefix: Cidr | undefined;
  readonly sourcePort: number | undefined;
}

export interface ServerListenerUpdate {
  readonly kind: 'server';
  readonly name: string;
  /** The Listener's `address.socket_address` (it must equal the listening address). */
  readonly address: { readonly host: string; readonly port: number } | undefined;
  readonly chains: readonly ServerFilterChain[];
  readonly defaultChain: ServerFilterChain | undefined;
  /** The matchers that can match a connection (always-failing ones pruned, after the duplicate check). */
  readonly matchers: readonly ChainMatcher[];
  /** A chain matches `transport_protocol: tls`: connections are told apart by their first byte. */
  readonly needsTransport: boolean;
  /** The RDS names its chains use. */
  readonly rdsNames: readonly string[];
}

function fail(field: string, message: string): never {
  throw new XdsDecodeError(field, message);
}

// ---- CIDR ---------------------------------------------------------------------------------------

function ipBytes(ip: string): number[] | undefined {
  const fam = isIP(ip);
  if (fam === 4) return ip.split('.').map(Number);
  if (fam !== 6) return undefined;
  let s = ip;
  const pct = s.indexOf('%');
  if (pct >= 0) s = s.slice(0, pct);
  let tail: number[] = [];
  const lastColon = s.lastIndexOf(':');
  if (s.slice(lastColon + 1).includes('.')) {
    tail = s
      .slice(lastColon + 1)
      .split('.')
      .map(Number);
    s = `${s.slice(0, lastColon + 1)}0:0`;
  }
  const [head = '', rest] = s.split('::');
  const hs = head === '' ? [] : head.split(':');
  const ts = rest === undefined || rest === '' ? [] : rest.split(':');
  const groups = [...hs, ...Array(8 - hs.length - ts.length).fill('0'), ...ts].map((g) =>
    Number.parseInt(g, 16),
  );
  const out: number[] = [];
  for (const g of groups) out.push(g >> 8, g & 0xff);
  if (tail.length === 4) out.splice(12, 4, ...tail);
  return out;
}

/** Normalizes a `CidrRange` (A36: length clamped to the family, absent = 0, host bits cleared). */
export function normalizeCidr(v: unknown, path: string): Cidr {
  const c = msg(v) ?? {};
  const addr = str(c.addressPrefix) ?? '';
  const bytes = ipBytes(addr);
  if (bytes === undefined) return fail(`${path}.address_prefix`, `"${addr}" is not an IP address`);
  const v6 = bytes.length === 16;
  const len = Math.min(Math.max(num(c.prefixLen) ?? 0, 0), v6 ? 128 : 32);
  const net = bytes.map((b, i) => {
    const bits = Math.min(Math.max(len - i * 8, 0), 8);
    return b & ((0xff << (8 - bits)) & 0xff);
  });
  return { key: `${v6 ? 6 : 4}/${net.join('.')}/${len}`, len, v6, bytes: net };
}

function inCidr(c: Cidr, ip: string | undefined): boolean {
  if (ip === undefined) return false;
  let b = ipBytes(ip);
  if (b === undefined) return false;
  // An IPv4-mapped IPv6 peer (::ffff:a.b.c.d) is its IPv4 address.
  if (!c.v6 && b.length === 16 && b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff)
    b = b.slice(12);
  if ((b.length === 16) !== c.v6) return false;
  for (let i = 0; i * 8 < c.len; i++) {
    const bits = Math.min(c.len - i * 8, 8);
    const mask = (0xff << (8 - bits)) & 0xff;
    if (((b[i] as number) & mask) !== (c.bytes[i] as number)) return false;
  }
  return true;
}

// ---- validation ---------------------------------------------------------------------------------

/** The filter's type: its `typed_config`'s, or a TypedStruct's `type_url` (A36). */
function filterType(typed: unknown): string {
  const t = typeOf(typed);
  if (TYPED_STRUCTS.has(t)) {
    const url = str(msg(typed)?.typeUrl) ?? '';
    return url.slice(url.lastIndexOf('/') + 1);
  }
  return t;
}

function translateServerHcm(hcm: Msg, path: string, opts: TranslateOptions): ServerHcm {
  const { rdsName, routeConfig } = hcmRouteSource(hcm, path, opts);
  // gRFC A41: RBAC's remote_ip is the mesh's client IP (inbound.xffNumTrustedHops): a listener
  // asking for another reading of X-Forwarded-For would be silently ignored, so it is refused.
  if ((num(hcm.xffNumTrustedHops) ?? 0) !== 0)
    fail(
      `${path}.xff_num_trusted_hops`,
      'must be 0: the client IP is read by the mesh (inbound.xffNumTrustedHops), as gRFC A41 requires',
    );
  if (list(hcm.originalIpDetectionExtensions).length > 0)
    fail(`${path}.original_ip_detection_extensions`, 'are not supported (gRFC A41)');
  const filters: ServerHttpFilter[] = [];
  const names = new Set<string>();
  const raw = list(hcm.httpFilters);
  raw.forEach((f, i) => {
    const fp = `${path}.http_filters[${i}]`;
    const name = str(f.name) ?? '';
    if (!name) fail(`${fp}.name`, 'is required');
    if (names.has(name)) fail(`${fp}.name`, `duplicate HTTP filter name "${name}"`);
    names.add(name);
    const t = filterType(f.typedConfig);
    const optional = bool(f.isOptional) === true;
    if (t === ROUTER) {
      if (i !== raw.length - 1) fail(fp, 'the router filter must be the last HTTP filter');
      filters.push({ name, kind: 'router', rbac: undefined });
    } else if (t === RBAC_TYPE) {
      filters.push({
        name,
        kind: 'rbac',
        rbac: translateRbac(msg(f.typedConfig) ?? {}, name, `${fp}.typed_config`, opts),
      });
    } else if (!optional) {
      fail(`${fp}.typed_config`, `${t || 'a filter without a type'} is not supported on servers`);
    }
  });
  if (filters.length === 0 || filters[filters.length - 1]?.kind !== 'router')
    fail(`${path}.http_filters`, 'must end with the router filter');
  return { rdsName, routeConfig, filters };
}

function translateDownstreamTls(ts: Msg, path: string, opts: TranslateOptions): InboundTlsRequirement {
  const name = str(ts.name);
  if (name !== undefined && name !== '' && name !== 'envoy.transport_sockets.tls')
    fail(`${path}.name`, `must be envoy.transport_sockets.tls, got ${name}`);
  const tc = msg(ts.typedConfig);
  if (!tc) return fail(`${path}.typed_config`, 'is required');
  if (typeOf(tc) !== DOWNSTREAM_TLS)
    fail(`${path}.typed_config`, `must be a DownstreamTlsContext, got ${typeOf(tc) || 'nothing'}`);
  const p = `${path}.typed_config`;
  if (bool(tc.requireSni) === true) fail(`${p}.require_sni`, 'is not supported');
  const ocsp = str(tc.ocspStaplePolicy);
  if (ocsp !== undefined && ocsp !== 'LENIENT_STAPLING')
    fail(`${p}.ocsp_staple_policy`, `${ocsp} is not supported`);
  const ctc = msg(tc.commonTlsContext);
  if (!ctc) return fail(`${p}.common_tls_context`, 'is required');
  const cp = `${p}.common_tls_context`;
  const { identityInstance: certificateProvider, rootInstance: caProvider } = commonTlsContext(ctc, cp, opts);
  if (certificateProvider === undefined)
    return fail(`${cp}.tls_certificate_provider_instance`, 'is required (the server certificate)');
  const requireClientCertificate = bool(tc.requireClientCertificate) === true;
  if (requireClientCertificate && caProvider === undefined)
    fail(
      `${p}.require_client_certificate`,
      'is set without a validation context (no trust bundle for client certificates)',
    );
  return Object.freeze({
    certificateProvider,
    caProvider,
    requireClientCertificate,
    key: `${certificateProvider}|${caProvider ?? ''}|${requireClientCertificate}`,
  });
}

function translateChain(c: Msg, path: string, opts: TranslateOptions, index: number): ServerFilterChain {
  const filters = list(c.filters);
  if (filters.length !== 1)
    fail(
      `${path}.filters`,
      `must hold exactly one filter, the HttpConnectionManager (got ${filters.length})`,
    );
  const f = filters[0] as Msg;
  const t = filterType(f.typedConfig);
  if (t !== HCM)
    fail(`${path}.filters[0].typed_config`, `must be an HttpConnectionManager, got ${t || 'nothing'}`);
  const hcm = translateServerHcm(msg(f.typedConfig) ?? {}, `${path}.filters[0].typed_config`, opts);
  const ts = msg(c.transportSocket);
  return Object.freeze({
    name: str(c.name) || `chain-${index}`,
    tls: ts === undefined ? undefined : translateDownstreamTls(ts, `${path}.transport_socket`, opts),
    hcm,
  });
}

const SOURCE_TYPES: Record<string, SourceType> = {
  ANY: 'ANY',
  SAME_IP_OR_LOOPBACK: 'SAME_IP_OR_LOOPBACK',
  EXTERNAL: 'EXTERNAL',
};

/** A36's normalization: the cross product of a `FilterChainMatch`'s repeated fields. */
function normalizeMatch(m: Msg | undefined, chain: number, path: string): ChainMatcher[] {
  const prefixes = list(m?.prefixRanges).map((r, i) => normalizeCidr(r, `${path}.prefix_ranges[${i}]`));
  const sources = list(m?.sourcePrefixRanges).map((r, i) =>
    normalizeCidr(r, `${path}.source_prefix_ranges[${i}]`),
  );
  if (list(m?.directSourcePrefixRanges).length > 0)
    fail(`${path}.direct_source_prefix_ranges`, 'are not supported');
  const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
  const ports = arr(m?.sourcePorts).map(Number);
  const names = arr(m?.serverNames).map(String);
  const alpns = arr(m?.applicationProtocols).map(String);
  const st = str(m?.sourceType) ?? 'ANY';
  const sourceType = SOURCE_TYPES[st];
  if (sourceType === undefined) return fail(`${path}.source_type`, `unknown source type ${st}`);
  const base = {
    chain,
    destinationPort: num(m?.destinationPort),
    transport: str(m?.transportProtocol) ?? '',
    sourceType,
  };
  const opt = <T>(xs: T[]): (T | undefined)[] => (xs.length === 0 ? [undefined] : xs);
  const out: ChainMatcher[] = [];
  for (const prefix of opt(prefixes))
    for (const sourcePrefix of opt(sources))
      for (const sourcePort of opt(ports))
        for (const serverName of opt(names))
          for (const alpn of opt(alpns))
            out.push({ ...base, prefix, sourcePrefix, sourcePort, serverName, alpn });
  return out;
}

function matcherKey(m: ChainMatcher): string {
  return [
    m.destinationPort ?? '',
    m.prefix?.key ?? '',
    m.serverName ?? '',
    m.transport,
    m.alpn ?? '',
    m.sourceType,
    m.sourcePrefix?.key ?? '',
    m.sourcePort ?? '',
  ].join('|');
}

/**
 * Whether a normalized matcher can match at all on a proxyless server (A36): `destination_port`
 * needs `use_original_dst`, server names and ALPN need listener filters, so those never match; a
 * transport protocol other than `raw_buffer` never matches either, except `tls`, which meshlet
 * tells apart by the connection's first byte.
 */
function canMatch(m: ChainMatcher): boolean {
  return (
    m.destinationPort === undefined &&
    m.serverName === undefined &&
    m.alpn === undefined &&
    (m.transport === '' || m.transport === 'raw_buffer' || m.transport === 'tls')
  );
}

/**
 * Translates a server's inbound Listener (gRFC A36): NACKs `listener_filters`,
 * `use_original_dst: true`, invalid filter chains (exactly one HttpConnectionManager; HTTP filters
 * RBAC and the router, the router last; a valid DownstreamTlsContext naming known certificate
 * provider instances) and duplicate filter chain matches (after normalization).
 */
export function translateServerListener(m: Msg, opts: TranslateOptions = {}): ServerListenerUpdate {
  const name = str(m.name);
  if (!name) fail('name', 'is required');
  if (msg(m.apiListener) !== undefined) fail('api_listener', 'a server listener must not be an API listener');
  if (list(m.listenerFilters).length > 0) fail('listener_filters', 'are not supported (gRFC A36)');
  if (bool(m.useOriginalDst) === true) fail('use_original_dst', 'is not supported (gRFC A36)');
  const sa = msg(msg(m.address)?.socketAddress);
  const address =
    sa === undefined ? undefined : { host: str(sa.address) ?? '', port: num(sa.portValue) ?? 0 };
  const chains: ServerFilterChain[] = [];
  const all: ChainMatcher[] = [];
  const seen = new Map<string, number>();
  list(m.filterChains).forEach((c, i) => {
    const cp = `filter_chains[${i}]`;
    chains.push(translateChain(c, cp, opts, i));
    for (const mm of normalizeMatch(msg(c.filterChainMatch), i, `${cp}.filter_chain_match`)) {
      const key = matcherKey(mm);
      const prev = seen.get(key);
      if (prev !== undefined)
        fail(`${cp}.filter_chain_match`, `duplicates the match of filter_chains[${prev}] (gRFC A36)`);
      seen.set(key, i);
      all.push(mm);
    }
  });
  const dfc = msg(m.defaultFilterChain);
  const defaultChain = dfc === undefined ? undefined : translateChain(dfc, 'default_filter_chain', opts, -1);
  if (chains.length === 0 && defaultChain === undefined)
    fail('filter_chains', 'a server listener needs filter_chains or a default_filter_chain');
  const matchers = all.filter(canMatch);
  const rds = new Set<string>();
  for (const c of [...chains, ...(defaultChain ? [defaultChain] : [])])
    if (c.hcm.rdsName) rds.add(c.hcm.rdsName);
  return Object.freeze({
    kind: 'server',
    name,
    address,
    chains: Object.freeze(chains),
    defaultChain,
    matchers: Object.freeze(matchers),
    needsTransport: matchers.some((x) => x.transport === 'tls'),
    rdsNames: Object.freeze([...rds]),
  });
}

/** `name` is the inbound listener of some address under `template` (`%s` stands for the address). */
export function serverListenerMatcher(template: string | undefined): ((name: string) => boolean) | undefined {
  if (template === undefined) return undefined;
  const i = template.indexOf('%s');
  if (i < 0) return (name) => name === template;
  const head = template.slice(0, i);
  const tail = template.slice(template.lastIndexOf('%s') + 2);
  return (name) => name.length >= head.length + tail.length && name.startsWith(head) && name.endsWith(tail);
}

/** The listener resource name of a listening address: every `%s` of the template replaced (A36). */
export function serverListenerName(template: string, address: string): string {
  return template.split('%s').join(address);
}

// ---- matching ---------------------------------------------------------------------------------

function isLoopback(ip: string): boolean {
  return ip === '::1' || /^(::ffff:)?127\./.test(ip);
}

function sourceTypeMatches(t: SourceType, c: InboundConnection): boolean {
  if (t === 'ANY') return true;
  const r = c.remoteAddress;
  const l = c.localAddress;
  if (r === undefined || l === undefined) return false;
  const same = isLoopback(r) || r === l;
  return t === 'SAME_IP_OR_LOOPBACK' ? same : !same;
}

/**
 * Narrows `cands` to the most specific matchers on one field, as Envoy's filter chain matching
 * does: those whose value matches most specifically, else those that leave the field unset.
 */
function narrow(
  cands: ChainMatcher[],
  matches: (m: ChainMatcher) => boolean,
  specificity: (m: ChainMatcher) => number,
): ChainMatcher[] {
  let best = -1;
  let out: ChainMatcher[] = [];
  for (const m of cands) {
    if (!matches(m)) continue;
    const s = specificity(m);
    if (s > best) {
      best = s;
      out = [m];
    } else if (s === best) out.push(m);
  }
  return out;
}

/** A connection no matcher of a connection-independent listener looks at (see below). */
const ANY_CONNECTION: InboundConnection = Object.freeze({
  localAddress: undefined,
  localPort: undefined,
  remoteAddress: undefined,
  remotePort: undefined,
  transport: 'raw_buffer',
});

/**
 * The chain every connection gets when no matcher looks at the connection: no destination or
 * source prefix, no source port, source type ANY, and no chain asking for `tls` (so every
 * connection counts as `raw_buffer`) — one chain without `filter_chain_match`, as istiod writes
 * inbound listeners, or only a default chain. `null` when the result depends on the connection.
 */
export function connectionIndependentChain(l: ServerListenerUpdate): ServerFilterChain | undefined | null {
  if (l.needsTransport) return null;
  for (const m of l.matchers)
    if (
      m.prefix !== undefined ||
      m.sourcePrefix !== undefined ||
      m.sourcePort !== undefined ||
      m.sourceType !== 'ANY'
    )
      return null;
  return matchFilterChain(l, ANY_CONNECTION);
}

/**
 * The filter chain of a connection: the most specific match among `matchers` (destination prefix,
 * then transport protocol, source type, source prefix, source port), else the default chain.
 * Undefined when nothing matches (the connection is closed).
 */
export function matchFilterChain(
  l: ServerListenerUpdate,
  c: InboundConnection,
): ServerFilterChain | undefined {
  let cands = l.matchers as ChainMatcher[];
  cands = narrow(
    cands,
    (m) => m.prefix === undefined || inCidr(m.prefix, c.localAddress),
    (m) => (m.prefix === undefined ? -1 : m.prefix.len),
  );
  const transport = l.needsTransport ? c.transport : 'raw_buffer';
  cands = narrow(
    cands,
    (m) => m.transport === '' || m.transport === transport,
    (m) => (m.transport === '' ? 0 : 1),
  );
  cands = narrow(
    cands,
    (m) => sourceTypeMatches(m.sourceType, c),
    (m) => (m.sourceType === 'ANY' ? 0 : 1),
  );
  cands = narrow(
    cands,
    (m) => m.sourcePrefix === undefined || inCidr(m.sourcePrefix, c.remoteAddress),
    (m) => (m.sourcePrefix === undefined ? -1 : m.sourcePrefix.len),
  );
  cands = narrow(
    cands,
    (m) => m.sourcePort === undefined || m.sourcePort === c.remotePort,
    (m) => (m.sourcePort === undefined ? 0 : 1),
  );
  // Duplicates were NACKed: at most one chain is left (several matchers of one chain may be).
  const first = cands[0];
  return first === undefined ? l.defaultChain : l.chains[first.chain];
}
