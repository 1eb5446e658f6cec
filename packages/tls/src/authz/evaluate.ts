import {
  ErrorCodes,
  MeshError,
  networkMatcher,
  type PathMatching,
  type PeerCertificateInfo,
} from '@meshlet/core';
import { compileCondition, foldMatters, type Node, test } from './conditions.js';
import type {
  AuthorizationAction,
  AuthorizationConfig,
  AuthorizationMode,
  AuthorizationPolicy,
  Condition,
  Operation,
  Rule,
  Source,
} from './policy.js';

/** Headers as Node gives them (lower-case keys) or as a WHATWG `Headers`-like object. */
export type HeaderSource =
  | Readonly<Record<string, string | readonly string[] | undefined>>
  | { get(name: string): string | null | undefined };

/** What a server integration knows about an inbound request. */
export interface RequestAttributes {
  /** The peer's SPIFFE ID from its client certificate; undefined for plaintext or no certificate. */
  readonly principal?: string | undefined;
  /** Whether the connection is mTLS (default: a principal is present). */
  readonly mtls?: boolean | undefined;
  /** The direct peer's IP (`source.ip`, `ipBlocks`). */
  readonly sourceIp?: string | undefined;
  /** The original client IP, e.g. from X-Forwarded-For (`remote.ip`, `remoteIpBlocks`); default sourceIp. */
  readonly remoteIp?: string | undefined;
  readonly destinationIp?: string | undefined;
  /** The port the request arrived on (`ports`, `destination.port`). */
  readonly destinationPort?: number | undefined;
  /** The TLS server name the client sent (`connection.sni`). */
  readonly sni?: string | undefined;
  /** The connection is TLS, with or without a client certificate (default: `mtls`). */
  readonly tls?: boolean | undefined;
  /** The verified client certificate, for `authenticated` conditions (names beyond the SPIFFE ID). */
  readonly peerCertificate?: PeerCertificateInfo | undefined;
  readonly method?: string | undefined;
  /** Request path; a query string is ignored. For gRPC, `/package.Service/Method`. */
  readonly path?: string | undefined;
  /** The query string including its `?` (only `:path` header conditions see it). */
  readonly query?: string | undefined;
  /**
   * Set when `path` is a framework's routing view of the request (the inbound admission step
   * evaluates that view too): path patterns are folded the same way before they are compared.
   */
  readonly pathMatching?: PathMatching | undefined;
  /** The Host / :authority. */
  readonly host?: string | undefined;
  readonly headers?: HeaderSource | undefined;
}

export interface AuthorizationDecision {
  readonly allowed: boolean;
  /** The policy that decided (the matching DENY or ALLOW policy), if one did. */
  readonly policy: string | undefined;
  /** Index of the matching rule within that policy. */
  readonly rule: number | undefined;
  /** Why, in words (`matched DENY policy "x" rule 0`, `mTLS required (STRICT)`, …). */
  readonly reason: string;
  /** Names of AUDIT policies that matched (they never change the decision). */
  readonly audited: readonly string[];
}

export interface AuthorizerStats {
  allowed: number;
  denied: number;
  audited: number;
}

export interface AuthorizerOptions {
  /** Called for every denial (log and count it). Must not throw. */
  onDeny?: (decision: AuthorizationDecision, attributes: RequestAttributes) => void;
  /** Called when AUDIT policies matched. */
  onAudit?: (decision: AuthorizationDecision, attributes: RequestAttributes) => void;
}

/** Decides whether an inbound request may proceed (an `Authorizer`, or any function of that shape). */
export type RequestAuthorizer = (attributes: RequestAttributes) => AuthorizationDecision;

export interface Authorizer {
  (attributes: RequestAttributes): AuthorizationDecision;
  readonly mode: AuthorizationMode;
  readonly policies: readonly AuthorizationPolicy[];
  readonly stats: Readonly<AuthorizerStats>;
  /**
   * Whether folding path patterns with `pm` (a framework's routing view) changes any of them: the
   * inbound admission step skips the routed view's evaluation when it would decide the same.
   */
  pathMatchingMatters(pm: PathMatching): boolean;
}

/** Every path pattern of the policies (`paths`, `notPaths`), to see whether a folding changes any. */
function pathPatterns(policies: readonly AuthorizationPolicy[]): string[] {
  const out: string[] = [];
  for (const p of policies)
    for (const r of p.rules ?? [])
      for (const t of r.to ?? []) out.push(...(t.operation.paths ?? []), ...(t.operation.notPaths ?? []));
  return out;
}

function foldChanges(pm: PathMatching, raw: string): boolean {
  if (raw === '*') return false;
  const prefix = raw.endsWith('*');
  const fixed = prefix ? raw.slice(0, -1) : raw.startsWith('*') ? raw.slice(1) : raw;
  if (pm.foldPattern(fixed) !== fixed) return true;
  const exact = !prefix && !raw.startsWith('*');
  return exact && pm.trimTrailingSlash && fixed.length > 1 && fixed.endsWith('/');
}

type Match = (a: RequestAttributes) => boolean;

const NONE: readonly string[] = Object.freeze([]);

/** Compiled Istio string patterns: exact values, prefixes, suffixes, or `*` (any non-empty value). */
interface Patterns {
  readonly exact: Set<string>;
  /**
   * The exact values when they are few (compared one by one: for a handful of short strings that
   * is cheaper than hashing the value); undefined: look them up in `exact`.
   */
  exactList: readonly string[] | undefined;
  readonly prefixes: string[];
  readonly suffixes: string[];
  any: boolean;
}

/** Up to this many exact values are compared one by one. */
const EXACT_LIST_MAX = 8;

function compilePatterns(
  patterns: readonly string[],
  fixed: (s: string) => string,
  exactOnly: (s: string) => string = fixed,
): Patterns {
  const p: Patterns = { exact: new Set(), exactList: undefined, prefixes: [], suffixes: [], any: false };
  for (const raw of patterns) {
    if (raw === '*') p.any = true;
    else if (raw.endsWith('*')) p.prefixes.push(fixed(raw.slice(0, -1)));
    else if (raw.startsWith('*')) p.suffixes.push(fixed(raw.slice(1)));
    else p.exact.add(exactOnly(raw));
  }
  if (p.exact.size <= EXACT_LIST_MAX) p.exactList = [...p.exact];
  return p;
}

function matches(p: Patterns, v: string): boolean {
  if (p.any) return true;
  const list = p.exactList;
  if (list === undefined) {
    if (p.exact.has(v)) return true;
  } else {
    for (let i = 0; i < list.length; i++) if (list[i] === v) return true;
  }
  const pre = p.prefixes;
  // `indexOf(x) === 0`, not `startsWith(x)`: optimized code compares the latter character by
  // character, re-checking both strings' representation each time (~40 instructions a character).
  for (let i = 0; i < pre.length; i++) if (v.indexOf(pre[i] as string) === 0) return true;
  const suf = p.suffixes;
  for (let i = 0; i < suf.length; i++) if (v.endsWith(suf[i] as string)) return true;
  return false;
}

const same = (s: string) => s;

/** Istio string matching: exact, `prefix*`, `*suffix`, or `*` (any non-empty value). */
function stringMatcher(patterns: readonly string[], normalize: (s: string) => string = same) {
  // Istio's string match compares patterns and values normalized the same way (hosts: lower case).
  const p = compilePatterns(patterns, (s) => normalize(s));
  return (value: string | undefined): boolean => {
    if (value === undefined || value === '') return false;
    return matches(p, normalize === same ? value : normalize(value));
  };
}

/**
 * Path patterns: compared with the normalized path as written, or, when the request's
 * `pathMatching` says the path is a framework's routing view (case folded, escapes decoded, …),
 * with the patterns folded the same way (compiled once per view).
 */
class PathPatterns {
  readonly #raw: readonly string[];
  readonly #plain: Patterns;
  #folded: Map<PathMatching, Patterns> | undefined;

  constructor(patterns: readonly string[]) {
    this.#raw = patterns;
    this.#plain = compilePatterns(patterns, same);
  }

  /** False for an absent or empty path (Istio: no value matches nothing). */
  test(a: RequestAttributes): boolean {
    const v = pathOnly(a.path);
    if (v === undefined || v === '') return false;
    const pm = a.pathMatching;
    if (pm === undefined) return matches(this.#plain, v);
    this.#folded ??= new Map();
    let p = this.#folded.get(pm);
    if (p === undefined) {
      const trim = (x: string) => {
        const f = pm.foldPattern(x);
        return pm.trimTrailingSlash && f.length > 1 && f.endsWith('/') ? f.slice(0, -1) : f;
      };
      p = compilePatterns(this.#raw, (x) => pm.foldPattern(x), trim);
      this.#folded.set(pm, p);
    }
    return matches(p, v);
  }
}

const stripSpiffe = (s: string) => (s.startsWith('spiffe://') ? s.slice(9) : s);

/** The namespace of a Kubernetes-style SPIFFE ID (`…/ns/<ns>/sa/<sa>`). */
export function namespaceOf(principal: string | undefined): string | undefined {
  if (!principal) return undefined;
  const m = /\/ns\/([^/]+)/.exec(principal);
  return m?.[1];
}

function pathOnly(path: string | undefined): string | undefined {
  if (path === undefined) return undefined;
  const q = path.indexOf('?');
  return q < 0 ? path : path.slice(0, q);
}

/**
 * Hosts: the Host / `:authority` as sent, or its host part, cut at the first `:` after the name
 * (Istio's `host` or `host:*`): `admin:80:80` is `admin`, as the frameworks' `hostname` reads it;
 * a trailing dot dropped (`admin.example.com.` names the same host; Envoy's
 * `strip_trailing_host_dot`).
 */
function hostMatcher(patterns: readonly string[]) {
  const m = stringMatcher(patterns, (s) => s.toLowerCase());
  return (host: string | undefined): boolean => {
    if (!host) return false;
    if (m(host)) return true;
    const colon = host.indexOf(':', host.charCodeAt(0) === 91 ? host.indexOf(']') : 0);
    let name = colon > 0 ? host.slice(0, colon) : host;
    if (name.length > 1 && name.charCodeAt(name.length - 1) === 46) name = name.slice(0, -1);
    return name !== host && m(name);
  };
}

export function headerValue(headers: HeaderSource | undefined, name: string): string | undefined {
  if (!headers) return undefined;
  const getter = (headers as { get?: unknown }).get;
  if (typeof getter === 'function') {
    const v = (headers as { get(n: string): string | null | undefined }).get(name);
    return v ?? undefined;
  }
  const rec = headers as Readonly<Record<string, string | readonly string[] | undefined>>;
  const v = rec[name] ?? rec[name.toLowerCase()];
  if (v === undefined) return undefined;
  return typeof v === 'string' ? v : v.join(',');
}

/** Builds `positive AND NOT negative` for one field; absent fields match. */
function field<T>(
  pos: readonly string[] | undefined,
  neg: readonly string[] | undefined,
  build: (p: readonly string[]) => (v: T) => boolean,
  get: (a: RequestAttributes) => T,
  out: Match[],
): void {
  if (pos) {
    const m = build(pos);
    out.push((a) => m(get(a)));
  }
  if (neg) {
    const m = build(neg);
    out.push((a) => !m(get(a)));
  }
}

const always: Match = () => true;

// One matcher stands for itself: no wrapper closure per level (a 20-rule policy is evaluated on
// every request; each level of closures costs a call).
function all(matches: Match[]): Match {
  if (matches.length === 0) return always;
  if (matches.length === 1) return matches[0] as Match;
  return (a) => {
    for (let i = 0; i < matches.length; i++) if (!(matches[i] as Match)(a)) return false;
    return true;
  };
}

const principal = (a: RequestAttributes) => a.principal;
const principalNs = (a: RequestAttributes) => namespaceOf(a.principal);
const sourceIp = (a: RequestAttributes) => a.sourceIp;
const remoteIp = (a: RequestAttributes) => a.remoteIp ?? a.sourceIp;
const portOf = (a: RequestAttributes) =>
  a.destinationPort === undefined ? undefined : String(a.destinationPort);

type IpTest = (ip: string | undefined) => boolean;
type HostTest = (host: string | undefined) => boolean;

/**
 * A compiled `source` / `operation`: plain data tested by one function each (`matchSource`,
 * `matchOperation`), not a tree of closures: a 20-rule policy runs on every request.
 */
interface CompiledSource {
  readonly principals: Patterns | undefined;
  readonly notPrincipals: Patterns | undefined;
  readonly namespaces: Patterns | undefined;
  readonly notNamespaces: Patterns | undefined;
  readonly ipBlocks: IpTest | undefined;
  readonly notIpBlocks: IpTest | undefined;
  readonly remoteIpBlocks: IpTest | undefined;
  readonly notRemoteIpBlocks: IpTest | undefined;
}

interface CompiledOperation {
  readonly hosts: HostTest | undefined;
  readonly notHosts: HostTest | undefined;
  readonly methods: Patterns | undefined;
  readonly notMethods: Patterns | undefined;
  readonly paths: PathPatterns | undefined;
  readonly notPaths: PathPatterns | undefined;
  readonly ports: Patterns | undefined;
  readonly notPorts: Patterns | undefined;
}

interface CompiledRule {
  readonly from: readonly CompiledSource[] | undefined;
  /**
   * Every source of `from` names principals or namespaces, so a request without a principal (no
   * mTLS peer) matches none of them: decided before the sources are walked.
   */
  readonly needsPrincipal: boolean;
  readonly to: readonly CompiledOperation[] | undefined;
  readonly when: Match | undefined;
  readonly match: Node | undefined;
}

/** Patterns normalized like the values they are compared with (`stringMatcher`'s rule). */
function strPatterns(p: readonly string[] | undefined, normalize: (s: string) => string = same) {
  return p === undefined ? undefined : compilePatterns(p.map(normalize), same);
}

/** `positive AND NOT negative` on one value; an absent or empty value matches no pattern. */
function fieldOk(pos: Patterns | undefined, neg: Patterns | undefined, v: string | undefined): boolean {
  const present = v !== undefined && v !== '';
  if (pos !== undefined && !(present && matches(pos, v))) return false;
  return neg === undefined || !(present && matches(neg, v));
}

function compileSource(s: Source): CompiledSource {
  const ip = (b: readonly string[] | undefined) => (b === undefined ? undefined : networkMatcher(b));
  return {
    principals: strPatterns(s.principals, stripSpiffe),
    notPrincipals: strPatterns(s.notPrincipals, stripSpiffe),
    namespaces: strPatterns(s.namespaces),
    notNamespaces: strPatterns(s.notNamespaces),
    ipBlocks: ip(s.ipBlocks),
    notIpBlocks: ip(s.notIpBlocks),
    remoteIpBlocks: ip(s.remoteIpBlocks),
    notRemoteIpBlocks: ip(s.notRemoteIpBlocks),
  };
}

function matchSource(s: CompiledSource, a: RequestAttributes): boolean {
  if (s.principals !== undefined || s.notPrincipals !== undefined) {
    const p = a.principal;
    if (!fieldOk(s.principals, s.notPrincipals, p === undefined ? p : stripSpiffe(p))) return false;
  }
  if (
    (s.namespaces !== undefined || s.notNamespaces !== undefined) &&
    !fieldOk(s.namespaces, s.notNamespaces, principalNs(a))
  )
    return false;
  if (s.ipBlocks !== undefined && !s.ipBlocks(a.sourceIp)) return false;
  if (s.notIpBlocks?.(a.sourceIp)) return false;
  if (s.remoteIpBlocks !== undefined && !s.remoteIpBlocks(remoteIp(a))) return false;
  if (s.notRemoteIpBlocks?.(remoteIp(a))) return false;
  return true;
}

function compileOperation(o: Operation): CompiledOperation {
  const path = (p: readonly string[] | undefined) => (p === undefined ? undefined : new PathPatterns(p));
  const host = (p: readonly string[] | undefined) => (p === undefined ? undefined : hostMatcher(p));
  return {
    hosts: host(o.hosts),
    notHosts: host(o.notHosts),
    methods: strPatterns(o.methods),
    notMethods: strPatterns(o.notMethods),
    paths: path(o.paths),
    notPaths: path(o.notPaths),
    ports: strPatterns(o.ports),
    notPorts: strPatterns(o.notPorts),
  };
}

function matchOperation(o: CompiledOperation, a: RequestAttributes): boolean {
  if (o.hosts !== undefined && !o.hosts(a.host)) return false;
  if (o.notHosts?.(a.host)) return false;
  if ((o.methods !== undefined || o.notMethods !== undefined) && !fieldOk(o.methods, o.notMethods, a.method))
    return false;
  if (o.paths !== undefined && !o.paths.test(a)) return false;
  if (o.notPaths?.test(a)) return false;
  if ((o.ports !== undefined || o.notPorts !== undefined) && !fieldOk(o.ports, o.notPorts, portOf(a)))
    return false;
  return true;
}

function conditionGetter(key: string): (a: RequestAttributes) => string | undefined {
  const header = /^request\.headers\[(.+)\]$/.exec(key);
  if (header) {
    const name = (header[1] as string).toLowerCase();
    return (a) => headerValue(a.headers, name);
  }
  switch (key) {
    case 'source.ip':
      return sourceIp;
    case 'remote.ip':
      return remoteIp;
    case 'source.namespace':
      return principalNs;
    case 'source.principal':
      return principal;
    case 'destination.ip':
      return (a) => a.destinationIp;
    case 'destination.port':
      return portOf;
    case 'connection.sni':
      return (a) => a.sni;
    default:
      return () => undefined;
  }
}

function compileWhen(c: Condition): Match {
  const get = conditionGetter(c.key);
  const build = c.key.endsWith('.ip')
    ? networkMatcher
    : c.key === 'source.principal'
      ? (p: readonly string[]) => stringMatcher(p, stripSpiffe)
      : (p: readonly string[]) => stringMatcher(p);
  const m: Match[] = [];
  field(c.values, c.notValues, build, get, m);
  return all(m);
}

/** The source matches only requests with a principal (`fieldOk` needs a value for a positive list). */
function sourceNeedsPrincipal(s: CompiledSource): boolean {
  return s.principals !== undefined || s.namespaces !== undefined;
}

function compileRule(r: Rule): CompiledRule {
  const from = r.from && r.from.length > 0 ? r.from.map((f) => compileSource(f.source)) : undefined;
  return {
    from,
    needsPrincipal: from?.every(sourceNeedsPrincipal) === true,
    to: r.to && r.to.length > 0 ? r.to.map((t) => compileOperation(t.operation)) : undefined,
    when: r.when && r.when.length > 0 ? all(r.when.map(compileWhen)) : undefined,
    match: r.match === undefined ? undefined : compileCondition(r.match),
  };
}

/**
 * `from` (any source) AND `to` (any operation) AND `when` (every condition) AND `match`; an empty
 * rule matches.
 */
function matchRule(r: CompiledRule, a: RequestAttributes): boolean {
  const from = r.from;
  if (from !== undefined) {
    if (r.needsPrincipal) {
      const p = a.principal;
      if (p === undefined || p === '') return false;
    }
    let ok = false;
    for (let i = 0; i < from.length && !ok; i++) ok = matchSource(from[i] as CompiledSource, a);
    if (!ok) return false;
  }
  const to = r.to;
  if (to !== undefined) {
    let ok = false;
    for (let i = 0; i < to.length && !ok; i++) ok = matchOperation(to[i] as CompiledOperation, a);
    if (!ok) return false;
  }
  if (r.when !== undefined && !r.when(a)) return false;
  return r.match === undefined || test(r.match, a);
}

/** Candidate lists cached per method and per principal presence; more distinct methods walk every rule. */
const MAX_INDEXED_METHODS = 32;

/**
 * One policy, compiled. A request walks only the rules that can match it (`candidates`): a rule
 * whose every source needs a principal is left out for a request without one, and a rule whose
 * every operation excludes the request's method is left out for that method. The rest are walked
 * in their order and tested in full, so the first matching rule is the one the plain walk finds.
 */
export class Compiled {
  readonly name: string;
  readonly action: AuthorizationAction;
  readonly rules: readonly CompiledRule[];
  /** Per rule: the decision when it matched (no AUDIT policy matched), made on first use. */
  readonly decisions: (AuthorizationDecision | undefined)[] = [];
  /** Candidate rule indexes by method, for requests without and with a principal. */
  readonly #anonymous = new Map<string, readonly number[]>();
  readonly #authenticated = new Map<string, readonly number[]>();
  /** The last lookup of each map (requests repeat one method: no hash lookup for them). */
  #anonymousMethod: string | undefined = undefined;
  #anonymousList: readonly number[] = NO_RULES;
  #authenticatedMethod: string | undefined = undefined;
  #authenticatedList: readonly number[] = NO_RULES;

  constructor(name: string, action: AuthorizationAction, rules: readonly CompiledRule[]) {
    this.name = name;
    this.action = action;
    this.rules = rules;
  }

  /** The rules a request with (or without) a principal and this method can match, in order. */
  candidates(hasPrincipal: boolean, method: string): readonly number[] {
    if (hasPrincipal) {
      if (method === this.#authenticatedMethod) return this.#authenticatedList;
      const list = this.#lookup(this.#authenticated, true, method);
      this.#authenticatedMethod = method;
      this.#authenticatedList = list;
      return list;
    }
    if (method === this.#anonymousMethod) return this.#anonymousList;
    const list = this.#lookup(this.#anonymous, false, method);
    this.#anonymousMethod = method;
    this.#anonymousList = list;
    return list;
  }

  #lookup(cache: Map<string, readonly number[]>, hasPrincipal: boolean, method: string): readonly number[] {
    let list = cache.get(method);
    if (list !== undefined) return list;
    const out: number[] = [];
    for (let i = 0; i < this.rules.length; i++) {
      if (mayMatch(this.rules[i] as CompiledRule, hasPrincipal, method)) out.push(i);
    }
    // Not frozen: optimized code on Node 20 did not inline keyed loads from the frozen lists.
    list = out;
    // Methods come from clients: past a bound, lists are computed per request and not kept.
    if (cache.size < MAX_INDEXED_METHODS) cache.set(method, list);
    return list;
  }
}

const NO_RULES: readonly number[] = [];

/**
 * Whether `r` can match a request with (or without) a principal and this method (`''`: none).
 * False only when `matchRule` is false for every such request; true otherwise.
 */
function mayMatch(r: CompiledRule, hasPrincipal: boolean, method: string): boolean {
  if (r.needsPrincipal && !hasPrincipal) return false;
  const to = r.to;
  if (to === undefined) return true;
  for (let i = 0; i < to.length; i++) {
    const o = to[i] as CompiledOperation;
    if ((o.methods === undefined && o.notMethods === undefined) || fieldOk(o.methods, o.notMethods, method))
      return true;
  }
  return false;
}

/** The first rule of `p` that matches, by the plain walk of every rule (the index's reference). */
export function firstRuleByWalk(p: Compiled, a: RequestAttributes): number {
  const rules = p.rules;
  for (let i = 0; i < rules.length; i++) if (matchRule(rules[i] as CompiledRule, a)) return i;
  return -1;
}

/** The first rule of `p` that matches, walking only its candidates. */
export function firstRule(p: Compiled, a: RequestAttributes): number {
  const pr = a.principal;
  const list = p.candidates(pr !== undefined && pr !== '', a.method ?? '');
  const rules = p.rules;
  for (let k = 0; k < list.length; k++) {
    const i = list[k] as number;
    if (matchRule(rules[i] as CompiledRule, a)) return i;
  }
  return -1;
}

/** Compiles one policy (exported for the index's tests). */
export function compilePolicy(p: AuthorizationPolicy): Compiled {
  return new Compiled(p.name, p.action, (p.rules ?? []).map(compileRule));
}

/**
 * The one authorization evaluator (Istio AuthorizationPolicy semantics), shared by every server
 * integration: in STRICT mode requests without mTLS are denied; AUDIT policies are only recorded;
 * a matching DENY policy denies; then, if any ALLOW policy exists, one must match; with no ALLOW
 * policy the request is allowed. A policy without rules matches nothing; an empty rule matches
 * everything.
 */
export function createAuthorizer(
  input: AuthorizationConfig | readonly AuthorizationPolicy[],
  options: AuthorizerOptions = {},
): Authorizer {
  const config: AuthorizationConfig = Array.isArray(input)
    ? { mode: 'PERMISSIVE', policies: input as readonly AuthorizationPolicy[] }
    : (input as AuthorizationConfig);
  const compiled = config.policies.map(compilePolicy);
  const deny = compiled.filter((p) => p.action === 'DENY');
  const allow = compiled.filter((p) => p.action === 'ALLOW');
  const audit = compiled.filter((p) => p.action === 'AUDIT');
  const strict = config.mode === 'STRICT';
  const stats: AuthorizerStats = { allowed: 0, denied: 0, audited: 0 };

  // Decisions are immutable: made once per (policy, rule) and reused, unless AUDIT policies matched
  // (their names are part of the decision).
  const makeDecision = (p: Compiled, i: number, allowed: boolean, audited: readonly string[]) =>
    Object.freeze({
      allowed,
      policy: p.name,
      rule: i,
      reason: `matched ${allowed ? 'ALLOW' : 'DENY'} policy "${p.name}" rule ${i}`,
      audited,
    });
  const ruleDecision = (p: Compiled, i: number, allowed: boolean, audited: readonly string[]) => {
    if (audited !== NONE) return makeDecision(p, i, allowed, audited);
    let d = p.decisions[i];
    if (d === undefined) {
      d = makeDecision(p, i, allowed, audited);
      p.decisions[i] = d;
    }
    return d;
  };
  const fixed = (allowed: boolean, reason: string): AuthorizationDecision =>
    Object.freeze({ allowed, policy: undefined, rule: undefined, reason, audited: NONE });
  const STRICT_DENIED = fixed(false, 'mTLS is required (STRICT mode)');
  const NO_ALLOW_POLICY = fixed(true, 'no ALLOW policy applies');
  const NO_ALLOW_MATCHED = fixed(false, 'no ALLOW policy matched');
  const withAudit = (d: AuthorizationDecision, audited: readonly string[]): AuthorizationDecision =>
    audited === NONE ? d : { ...d, audited };

  const decide = (a: RequestAttributes): AuthorizationDecision => {
    let audited = NONE;
    if (audit.length > 0) {
      const hits: string[] = [];
      for (const p of audit) if (firstRule(p, a) >= 0) hits.push(p.name);
      if (hits.length > 0) audited = hits;
    }
    const mtls = a.mtls ?? a.principal !== undefined;
    if (strict && !mtls) return withAudit(STRICT_DENIED, audited);
    for (let k = 0; k < deny.length; k++) {
      const p = deny[k] as Compiled;
      const i = firstRule(p, a);
      if (i >= 0) return ruleDecision(p, i, false, audited);
    }
    if (allow.length === 0) return withAudit(NO_ALLOW_POLICY, audited);
    for (let k = 0; k < allow.length; k++) {
      const p = allow[k] as Compiled;
      const i = firstRule(p, a);
      if (i >= 0) return ruleDecision(p, i, true, audited);
    }
    return withAudit(NO_ALLOW_MATCHED, audited);
  };

  const authorizer = ((a: RequestAttributes) => {
    const d = decide(a);
    if (d.audited.length > 0) {
      stats.audited++;
      options.onAudit?.(d, a);
    }
    if (d.allowed) stats.allowed++;
    else {
      stats.denied++;
      options.onDeny?.(d, a);
    }
    return d;
  }) as Authorizer;
  const patterns = pathPatterns(config.policies);
  const trees: Node[] = [];
  for (const p of compiled) for (const r of p.rules) if (r.match !== undefined) trees.push(r.match);
  let lastView: PathMatching | undefined;
  let lastMatters = false;
  const pathMatchingMatters = (pm: PathMatching): boolean => {
    if (pm !== lastView) {
      lastView = pm;
      lastMatters = patterns.some((p) => foldChanges(pm, p)) || trees.some((t) => foldMatters(t, pm));
    }
    return lastMatters;
  };
  Object.defineProperties(authorizer, {
    pathMatchingMatters: { value: pathMatchingMatters },
    mode: { value: config.mode, enumerable: true },
    policies: { value: config.policies, enumerable: true },
    stats: { get: () => ({ ...stats }), enumerable: true },
  });
  return authorizer;
}

/** The JSON body of a 403 answer: `{ error: { code: 'MESHLET_ERR_FORBIDDEN', message, policy, rule } }`. */
export function forbiddenBody(decision: AuthorizationDecision): {
  error: { code: string; message: string; policy: string | undefined; rule: number | undefined };
} {
  return {
    error: {
      code: ErrorCodes.FORBIDDEN,
      message: `RBAC: access denied (${decision.reason})`,
      policy: decision.policy,
      rule: decision.rule,
    },
  };
}

/** A ready 403 answer: status, headers and the serialised coded body. */
export function forbiddenResponse(decision: AuthorizationDecision): {
  status: 403;
  headers: Record<string, string>;
  body: string;
} {
  return {
    status: 403,
    headers: { 'content-type': 'application/json; charset=utf-8' },
    body: JSON.stringify(forbiddenBody(decision)),
  };
}

/** A `MESHLET_ERR_FORBIDDEN` MeshError for a denial (gRPC maps it to PERMISSION_DENIED). */
export function forbiddenError(decision: AuthorizationDecision): MeshError {
  return new MeshError(ErrorCodes.FORBIDDEN, `RBAC: access denied (${decision.reason})`, {
    policy: decision.policy,
    rule: decision.rule,
  });
}
