import { networkMatcher, type PathMatching, type PeerCertificateInfo } from '@meshlet/core';
import type { HeaderCondition, RequestCondition, StringMatch } from './policy.js';

/** The request attributes a condition reads (a subset of `RequestAttributes`). */
interface RequestAttributes {
  readonly principal?: string | undefined;
  readonly mtls?: boolean | undefined;
  readonly tls?: boolean | undefined;
  readonly peerCertificate?: PeerCertificateInfo | undefined;
  readonly sourceIp?: string | undefined;
  readonly remoteIp?: string | undefined;
  readonly destinationIp?: string | undefined;
  readonly destinationPort?: number | undefined;
  readonly sni?: string | undefined;
  readonly method?: string | undefined;
  readonly path?: string | undefined;
  readonly query?: string | undefined;
  readonly pathMatching?: PathMatching | undefined;
  readonly host?: string | undefined;
  readonly headers?: unknown;
}

/**
 * Condition trees (Envoy RBAC's `Permission` / `Principal` shapes) compiled to plain data and
 * tested by one function (`test`), the way the evaluator compiles Istio's `from`/`to`/`when`: a
 * 20-rule policy runs on every request, so no closure per node and no allocation per test.
 *
 * Request semantics follow Envoy's RBAC filter as gRPC's A41 pins them down: `:path` is the path
 * with its query, `:authority` and `host` are one header, hop-by-hop headers (`te`, `connection`,
 * …) are never present, repeated headers are joined with `,`, binary (`-bin`) values are read in
 * base64; `authenticated` names are the peer certificate's URI SANs, else its DNS SANs, else its
 * subject (RFC 2253), and `""` when there is no certificate.
 */

const AND = 0;
const OR = 1;
const NOT = 2;
const ANY = 3;
const NEVER = 4;
const HEADER = 5;
const URL_PATH = 6;
const DEST_IP = 7;
const DEST_PORT = 8;
const DEST_PORT_RANGE = 9;
const SERVER_NAME = 10;
const AUTHENTICATED = 11;
const DIRECT_REMOTE_IP = 12;
const REMOTE_IP = 13;

/** A compiled string match: the literal (lower-cased when `ignoreCase`), or a regex. */
interface Str {
  /** 0 exact, 1 prefix, 2 suffix, 3 contains, 4 regex. */
  readonly kind: number;
  readonly value: string;
  readonly regex: { test(value: string): boolean } | undefined;
  readonly ignoreCase: boolean;
}

/** Where a header condition reads its value. */
const H_PLAIN = 0;
const H_METHOD = 1;
const H_AUTHORITY = 2;
const H_PATH = 3;
const H_ABSENT = 4;

interface Header {
  readonly source: number;
  readonly name: string;
  /** 0 string, 1 present, 2 range. */
  readonly kind: number;
  readonly str: Str | undefined;
  readonly present: boolean;
  readonly start: number;
  readonly end: number;
  readonly invert: boolean;
}

/** A compiled condition node. */
export interface Node {
  readonly k: number;
  readonly children: readonly Node[];
  readonly str: Str | undefined;
  readonly header: Header | undefined;
  readonly ip: ((ip: string | undefined) => boolean) | undefined;
  readonly lo: number;
  readonly hi: number;
  /** AUTHENTICATED / SERVER_NAME: whether `""` matches (a request without certificate or SNI). */
  readonly empty: boolean;
  /** URL_PATH: the match folded per routing view (`pathMatching`), compiled on first use. */
  folded: Map<PathMatching, Str> | undefined;
}

/** Headers a hop consumes (RFC 7230 §6.1): never seen by a policy (gRFC A41). */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'transfer-encoding',
  'upgrade',
]);

function node(k: number, extra: Partial<Node> = {}): Node {
  const str = extra.str;
  return {
    k,
    children: extra.children ?? [],
    str,
    header: extra.header,
    ip: extra.ip,
    lo: extra.lo ?? 0,
    hi: extra.hi ?? 0,
    empty: str !== undefined && testStr(str, ''),
    folded: undefined,
  };
}

function compileStr(m: StringMatch): Str {
  const ic = m.ignoreCase === true;
  const lit = (v: string) => (ic ? v.toLowerCase() : v);
  if (m.exact !== undefined) return { kind: 0, value: lit(m.exact), regex: undefined, ignoreCase: ic };
  if (m.prefix !== undefined) return { kind: 1, value: lit(m.prefix), regex: undefined, ignoreCase: ic };
  if (m.suffix !== undefined) return { kind: 2, value: lit(m.suffix), regex: undefined, ignoreCase: ic };
  if (m.contains !== undefined) return { kind: 3, value: lit(m.contains), regex: undefined, ignoreCase: ic };
  if (m.regex !== undefined) return { kind: 4, value: '', regex: m.regex, ignoreCase: false };
  // An empty StringMatcher is invalid in Envoy; as a condition it matches nothing.
  return { kind: 5, value: '', regex: undefined, ignoreCase: false };
}

export function testStr(s: Str, raw: string): boolean {
  const v = s.ignoreCase ? raw.toLowerCase() : raw;
  switch (s.kind) {
    case 0:
      return v === s.value;
    case 1:
      return v.startsWith(s.value);
    case 2:
      return v.endsWith(s.value);
    case 3:
      return v.includes(s.value);
    case 4:
      return (s.regex as { test(value: string): boolean }).test(v);
    default:
      return false;
  }
}

function compileHeader(h: HeaderCondition): Header {
  const name = h.name.toLowerCase();
  const source =
    name === ':method'
      ? H_METHOD
      : name === ':authority' || name === 'host'
        ? H_AUTHORITY
        : name === ':path'
          ? H_PATH
          : HOP_BY_HOP.has(name) || name.startsWith(':')
            ? H_ABSENT
            : H_PLAIN;
  const kind = h.range !== undefined ? 2 : h.present !== undefined ? 1 : 0;
  return {
    source,
    name,
    kind,
    str: h.match === undefined ? undefined : compileStr(h.match),
    present: h.present ?? true,
    start: h.range?.start ?? 0,
    end: h.range?.end ?? 0,
    invert: h.invert === true,
  };
}

/** Compiles a condition tree; `and`/`or` of one child stand for the child. */
export function compileCondition(c: RequestCondition): Node {
  if ('and' in c) {
    const kids = c.and.map(compileCondition).filter((n) => n.k !== ANY);
    if (kids.length === 0) return node(ANY);
    if (kids.length === 1) return kids[0] as Node;
    return node(AND, { children: kids });
  }
  if ('or' in c) {
    const kids = c.or.map(compileCondition);
    if (kids.some((n) => n.k === ANY)) return node(ANY);
    if (kids.length === 1) return kids[0] as Node;
    return node(OR, { children: kids });
  }
  if ('not' in c) return node(NOT, { children: [compileCondition(c.not)] });
  if ('any' in c) return node(ANY);
  if ('never' in c) return node(NEVER);
  if ('header' in c) return node(HEADER, { header: compileHeader(c.header) });
  if ('urlPath' in c) return node(URL_PATH, { str: compileStr(c.urlPath) });
  if ('destinationIp' in c) return node(DEST_IP, { ip: networkMatcher([c.destinationIp]) });
  if ('destinationPort' in c) return node(DEST_PORT, { lo: c.destinationPort });
  if ('destinationPortRange' in c)
    return node(DEST_PORT_RANGE, { lo: c.destinationPortRange.start, hi: c.destinationPortRange.end });
  if ('serverName' in c) return node(SERVER_NAME, { str: compileStr(c.serverName) });
  if ('authenticated' in c)
    return node(AUTHENTICATED, { str: c.authenticated === null ? undefined : compileStr(c.authenticated) });
  if ('directRemoteIp' in c) return node(DIRECT_REMOTE_IP, { ip: networkMatcher([c.directRemoteIp]) });
  if ('remoteIp' in c) return node(REMOTE_IP, { ip: networkMatcher([c.remoteIp]) });
  return node(NEVER);
}

function headerRaw(a: RequestAttributes, name: string): string | undefined {
  const h = a.headers;
  if (h === undefined) return undefined;
  let v: unknown;
  const getter = (h as { get?: unknown }).get;
  if (typeof getter === 'function') v = (h as { get(n: string): string | null | undefined }).get(name);
  else v = (h as Readonly<Record<string, unknown>>)[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (Buffer.isBuffer(v)) return v.toString('base64');
  if (Array.isArray(v))
    return v.map((x: unknown) => (Buffer.isBuffer(x) ? x.toString('base64') : String(x))).join(',');
  return String(v);
}

function headerValue(a: RequestAttributes, h: Header): string | undefined {
  switch (h.source) {
    case H_METHOD:
      return a.method;
    case H_AUTHORITY:
      return a.host;
    case H_PATH:
      return a.path === undefined ? undefined : a.path + (a.query ?? '');
    case H_ABSENT:
      return undefined;
    default:
      return headerRaw(a, h.name);
  }
}

/** Envoy's range match: the whole value is a decimal integer in [start, end). */
function inRange(v: string, start: number, end: number): boolean {
  if (!/^-?\d+$/.test(v)) return false;
  const n = Number(v);
  return n >= start && n < end;
}

function testHeader(h: Header, a: RequestAttributes): boolean {
  const v = headerValue(a, h);
  // An absent header matches only a presence check asking for absence (A41: present == invert).
  if (v === undefined) return h.kind === 1 && h.present === h.invert;
  let m: boolean;
  if (h.kind === 1) m = h.present;
  else if (h.kind === 2) m = inRange(v, h.start, h.end);
  else m = testStr(h.str as Str, v);
  return m !== h.invert;
}

const RFC2253_SPECIAL = /[,+"\\<>;]/g;

function rfc2253Value(v: string): string {
  let out = v.replace(RFC2253_SPECIAL, (c) => `\\${c}`);
  if (out.startsWith('#') || out.startsWith(' ')) out = `\\${out}`;
  if (out.endsWith(' ') && out.length > 1) out = `${out.slice(0, -1)}\\ `;
  return out;
}

/** The subject as an RFC 2253 string (`CN=a,O=b,C=c`: the most specific attribute first). */
export function rfc2253Subject(subject: PeerCertificateInfo['subject']): string {
  if (subject === undefined) return '';
  const parts: string[] = [];
  for (const [k, v] of Object.entries(subject)) {
    if (v === undefined) continue;
    for (const x of typeof v === 'string' ? [v] : v) parts.push(`${k}=${rfc2253Value(x)}`);
  }
  return parts.reverse().join(',');
}

interface CertNames {
  readonly uris: readonly string[];
  readonly dns: readonly string[];
  readonly subject: string;
}

const certNames = new WeakMap<object, CertNames>();

/** Splits Node's `subjectaltname` (`DNS:a, URI:b`; entries holding `, ` are JSON-quoted). */
function splitSans(san: string): { type: string; value: string }[] {
  const out: { type: string; value: string }[] = [];
  let i = 0;
  while (i < san.length) {
    const colon = san.indexOf(':', i);
    if (colon < 0) break;
    const type = san.slice(i, colon);
    let value: string;
    let next: number;
    if (san.charCodeAt(colon + 1) === 34) {
      const close = san.indexOf('", ', colon + 2);
      const raw = close < 0 ? san.slice(colon + 1) : san.slice(colon + 1, close + 1);
      try {
        value = JSON.parse(raw) as string;
      } catch {
        value = raw;
      }
      next = close < 0 ? san.length : close + 3;
    } else {
      const end = san.indexOf(', ', colon + 1);
      value = end < 0 ? san.slice(colon + 1) : san.slice(colon + 1, end);
      next = end < 0 ? san.length : end + 2;
    }
    out.push({ type, value });
    i = next;
  }
  return out;
}

function namesOf(cert: PeerCertificateInfo): CertNames {
  let n = certNames.get(cert);
  if (n === undefined) {
    const sans = cert.subjectaltname ? splitSans(cert.subjectaltname) : [];
    n = {
      uris: sans.filter((s) => s.type === 'URI').map((s) => s.value),
      dns: sans.filter((s) => s.type === 'DNS').map((s) => s.value),
      subject: rfc2253Subject(cert.subject),
    };
    certNames.set(cert, n);
  }
  return n;
}

/** Envoy's `authenticated.principal_name`, as gRFC A41 spells it out. */
function testAuthenticated(n: Node, a: RequestAttributes): boolean {
  const s = n.str;
  if (s === undefined) return a.tls ?? a.mtls ?? a.principal !== undefined;
  const cert = a.peerCertificate;
  if (cert === undefined) {
    // No certificate object: the principal alone (callers that pass only a SPIFFE ID), else "".
    const p = a.principal;
    return p === undefined ? n.empty : testStr(s, p);
  }
  const names = namesOf(cert);
  if (names.uris.length > 0) {
    for (const u of names.uris) if (testStr(s, u)) return true;
    return false;
  }
  if (names.dns.length > 0) {
    for (const d of names.dns) if (testStr(s, d)) return true;
    return false;
  }
  return testStr(s, names.subject);
}

/** A URL path match folded the way a framework folded the routed path (see `PathMatching`). */
function foldedStr(n: Node, pm: PathMatching): Str {
  n.folded ??= new Map();
  let f = n.folded.get(pm);
  if (f === undefined) {
    const s = n.str as Str;
    f =
      s.kind === 4 || s.kind === 5 || s.ignoreCase
        ? s
        : {
            ...s,
            value:
              s.kind === 0 && pm.trimTrailingSlash && s.value.length > 1 && s.value.endsWith('/')
                ? pm.foldPattern(s.value.slice(0, -1))
                : pm.foldPattern(s.value),
          };
    n.folded.set(pm, f);
  }
  return f;
}

function pathOnly(path: string): string {
  const q = path.indexOf('?');
  return q < 0 ? path : path.slice(0, q);
}

/** Whether the request meets the compiled condition. */
export function test(n: Node, a: RequestAttributes): boolean {
  switch (n.k) {
    case AND: {
      const c = n.children;
      for (let i = 0; i < c.length; i++) if (!test(c[i] as Node, a)) return false;
      return true;
    }
    case OR: {
      const c = n.children;
      for (let i = 0; i < c.length; i++) if (test(c[i] as Node, a)) return true;
      return false;
    }
    case NOT:
      return !test(n.children[0] as Node, a);
    case ANY:
      return true;
    case HEADER:
      return testHeader(n.header as Header, a);
    case URL_PATH: {
      const p = a.path;
      if (p === undefined) return false;
      const pm = a.pathMatching;
      return testStr(pm === undefined ? (n.str as Str) : foldedStr(n, pm), pathOnly(p));
    }
    case DEST_IP:
      return (n.ip as (ip: string | undefined) => boolean)(a.destinationIp);
    case DEST_PORT:
      return a.destinationPort === n.lo;
    case DEST_PORT_RANGE:
      return a.destinationPort !== undefined && a.destinationPort >= n.lo && a.destinationPort < n.hi;
    case SERVER_NAME: {
      const sni = a.sni;
      return sni === undefined ? n.empty : testStr(n.str as Str, sni);
    }
    case AUTHENTICATED:
      return testAuthenticated(n, a);
    case DIRECT_REMOTE_IP:
      return (n.ip as (ip: string | undefined) => boolean)(a.sourceIp);
    case REMOTE_IP:
      return (n.ip as (ip: string | undefined) => boolean)(a.remoteIp ?? a.sourceIp);
    default:
      return false;
  }
}

/**
 * Whether folding paths with `pm` may change how the tree decides: a URL path literal that folds
 * differently, or a regex on the path (it cannot be folded).
 */
export function foldMatters(n: Node, pm: PathMatching): boolean {
  if (n.k === HEADER) return (n.header as Header).source === H_PATH;
  if (n.k === URL_PATH) {
    const s = n.str as Str;
    if (s.kind === 4) return true;
    if (s.kind === 5 || s.ignoreCase) return false;
    if (pm.foldPattern(s.value) !== s.value) return true;
    return s.kind === 0 && pm.trimTrailingSlash && s.value.length > 1 && s.value.endsWith('/');
  }
  for (const c of n.children) if (foldMatters(c, pm)) return true;
  return false;
}
