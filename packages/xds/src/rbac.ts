import type { InboundAuthorizer, PathMatching } from '@meshlet/core';
import {
  type AuthorizationPolicy,
  type Authorizer,
  createAuthorizer,
  type HeaderCondition,
  type RequestCondition,
  type StringMatch,
} from '@meshlet/tls';
import { list, type Msg, msg, num, str, typeOf, XdsDecodeError } from './codec.js';
import { compileSafeRegex, DEFAULT_MAX_PROGRAM_SIZE } from './regex.js';

/**
 * The RBAC HTTP filter (`envoy.extensions.filters.http.rbac.v3.RBAC`) and its per-route override
 * (`RBACPerRoute`) as gRFC A41 has a proxyless server read them, translated into the condition
 * trees of `@meshlet/tls`'s one authorization evaluator (`createAuthorizer`): an `ALLOW` filter
 * allows a request when one of its policies matches (none: nothing is allowed), a `DENY` filter
 * denies it when one matches; a policy matches when one of its principals and one of its
 * permissions do.
 *
 * What A41 leaves out is NACKed, naming the field: CEL (`condition`, `checked_condition`),
 * header matchers on `grpc-*` names and `:scheme`, the `matcher` rules form; `any: false` and
 * empty permission or principal lists (Envoy's own validation). `metadata` and `filter_state`
 * never match (a proxyless server has no Envoy metadata); a `LOG` filter is ignored (A41); shadow
 * rules and audit logging options are ignored.
 */

export const RBAC_TYPE = 'envoy.extensions.filters.http.rbac.v3.RBAC';
export const RBAC_PER_ROUTE_TYPE = 'envoy.extensions.filters.http.rbac.v3.RBACPerRoute';

/** Options of the RBAC translation. */
export interface RbacOptions {
  /** Largest RE2 program of a `safe_regex` (default 100, Envoy's). */
  readonly maxRegexProgramSize?: number;
}

/** One RBAC filter's configuration: an evaluator, or none (no `rules`, or `LOG`: the filter does nothing). */
export interface RbacConfig {
  readonly authorizer: Authorizer | undefined;
  /** `ALLOW` / `DENY`, or `none` when the filter enforces nothing. */
  readonly action: 'ALLOW' | 'DENY' | 'none';
  /** The policy names, for the snapshot. */
  readonly policies: readonly string[];
}

function fail(field: string, message: string): never {
  throw new XdsDecodeError(field, message);
}

/**
 * The regexes Istio generates are literals between `.*` (a namespace NS becomes `.*` `/ns/NS/`
 * `.*`, a `*` pattern `.+`): they are compared without a regex engine. RE2's `.` does not match a newline, so neither do
 * these.
 */
function simpleRegex(re: string): { test(value: string): boolean } | undefined {
  if (re === '.+') return { test: (v) => v.length > 0 && !v.includes('\n') };
  if (re === '.*') return { test: (v) => !v.includes('\n') };
  const m = /^(\.\*)?((?:[^\\.*+?()[\]{}|^$]|\\[^A-Za-z0-9])*)(\.\*)?$/.exec(re);
  if (m === null) return undefined;
  const lit = (m[2] as string).replace(/\\(.)/g, '$1');
  const lead = m[1] !== undefined;
  const trail = m[3] !== undefined;
  if (lead && trail) return { test: (v) => v.includes(lit) && !v.includes('\n') };
  if (lead) return { test: (v) => v.endsWith(lit) && !v.includes('\n') };
  if (trail) return { test: (v) => v.startsWith(lit) && !v.includes('\n') };
  return { test: (v) => v === lit };
}

function stringMatch(m: Msg | undefined, path: string, opts: RbacOptions): StringMatch {
  if (m === undefined) return fail(path, 'is required');
  const ignoreCase = m.ignoreCase === true;
  if (m.exact !== undefined) return { exact: str(m.exact) ?? '', ignoreCase };
  if (m.prefix !== undefined) return { prefix: str(m.prefix) ?? '', ignoreCase };
  if (m.suffix !== undefined) return { suffix: str(m.suffix) ?? '', ignoreCase };
  if (m.contains !== undefined) return { contains: str(m.contains) ?? '', ignoreCase };
  if (m.safeRegex !== undefined) {
    const re = msg(m.safeRegex);
    const text = str(re?.regex);
    if (text === undefined) fail(`${path}.safe_regex.regex`, 'is required');
    const own = num(msg(msg(re?.googleRe2)?.maxProgramSize));
    let compiled: { test(value: string): boolean };
    try {
      compiled = compileSafeRegex(text, {
        maxProgramSize: own ?? opts.maxRegexProgramSize ?? DEFAULT_MAX_PROGRAM_SIZE,
      });
    } catch (err) {
      return fail(`${path}.safe_regex.regex`, (err as Error).message);
    }
    return { regex: simpleRegex(text) ?? compiled };
  }
  return fail(path, 'has no match (exact, prefix, suffix, contains or safe_regex)');
}

function headerCondition(h: Msg, path: string, opts: RbacOptions): HeaderCondition {
  const name = (str(h.name) ?? '').toLowerCase();
  if (!name) fail(`${path}.name`, 'is required');
  if (name.startsWith('grpc-')) fail(`${path}.name`, `"${name}": grpc- headers cannot be matched (gRFC A41)`);
  if (name === ':scheme') fail(`${path}.name`, '":scheme" cannot be matched (gRFC A41)');
  const invert = h.invertMatch === true;
  const literal = (kind: keyof StringMatch, v: unknown): HeaderCondition => ({
    name,
    match: { [kind]: str(v) ?? '' },
    invert,
  });
  if (h.exactMatch !== undefined) return literal('exact', h.exactMatch);
  if (h.prefixMatch !== undefined) return literal('prefix', h.prefixMatch);
  if (h.suffixMatch !== undefined) return literal('suffix', h.suffixMatch);
  if (h.containsMatch !== undefined) return literal('contains', h.containsMatch);
  if (h.safeRegexMatch !== undefined)
    return {
      name,
      match: stringMatch({ safeRegex: h.safeRegexMatch }, `${path}.safe_regex_match`, opts),
      invert,
    };
  if (h.rangeMatch !== undefined) {
    const r = msg(h.rangeMatch) ?? {};
    return { name, range: { start: num(r.start) ?? 0, end: num(r.end) ?? 0 }, invert };
  }
  if (h.presentMatch !== undefined) return { name, present: h.presentMatch === true, invert };
  if (h.stringMatch !== undefined)
    return { name, match: stringMatch(msg(h.stringMatch), `${path}.string_match`, opts), invert };
  // No match specifier: Envoy takes it as "present".
  return { name, present: true, invert };
}

/** A `CidrRange` as `addr/len` (an absent length is 0, as Envoy reads it), checked. */
function cidr(v: unknown, path: string): string {
  const c = msg(v);
  const addr = str(c?.addressPrefix);
  if (!addr) return fail(`${path}.address_prefix`, 'is required');
  const len = num(msg(c?.prefixLen)?.value ?? c?.prefixLen) ?? 0;
  const v6 = addr.includes(':');
  if (!/^[0-9a-fA-F:.]+$/.test(addr)) fail(`${path}.address_prefix`, `"${addr}" is not an IP address`);
  if (len < 0 || len > (v6 ? 128 : 32)) fail(`${path}.prefix_len`, `${len} is out of range`);
  return `${addr}/${len}`;
}

function pathMatcher(v: unknown, path: string, opts: RbacOptions): StringMatch {
  const p = msg(v);
  if (p?.path === undefined) return fail(`${path}.path`, 'is required');
  return stringMatch(msg(p.path), `${path}.path`, opts);
}

function set(v: unknown, key: string, path: string): Msg[] {
  const items = list(msg(v)?.[key]);
  if (items.length === 0) fail(`${path}.${key === 'rules' ? 'rules' : 'ids'}`, 'must not be empty');
  return items;
}

/** Translates an RBAC `Permission` (recursively). */
export function permission(p: Msg, path: string, opts: RbacOptions): RequestCondition {
  if (p.andRules !== undefined)
    return {
      and: set(p.andRules, 'rules', `${path}.and_rules`).map((x, i) =>
        permission(x, `${path}.and_rules.rules[${i}]`, opts),
      ),
    };
  if (p.orRules !== undefined)
    return {
      or: set(p.orRules, 'rules', `${path}.or_rules`).map((x, i) =>
        permission(x, `${path}.or_rules.rules[${i}]`, opts),
      ),
    };
  if (p.notRule !== undefined) return { not: permission(msg(p.notRule) ?? {}, `${path}.not_rule`, opts) };
  if (p.any !== undefined) {
    if (p.any !== true) fail(`${path}.any`, 'must be true');
    return { any: true };
  }
  if (p.header !== undefined) return { header: headerCondition(msg(p.header) ?? {}, `${path}.header`, opts) };
  if (p.urlPath !== undefined) return { urlPath: pathMatcher(p.urlPath, `${path}.url_path`, opts) };
  if (p.destinationIp !== undefined)
    return { destinationIp: cidr(p.destinationIp, `${path}.destination_ip`) };
  if (p.destinationPort !== undefined) {
    const port = num(p.destinationPort) ?? -1;
    if (port < 0 || port > 65535) fail(`${path}.destination_port`, 'must be 0-65535');
    return { destinationPort: port };
  }
  if (p.destinationPortRange !== undefined) {
    const r = msg(p.destinationPortRange) ?? {};
    return { destinationPortRange: { start: num(r.start) ?? 0, end: num(r.end) ?? 0 } };
  }
  if (p.metadata !== undefined) return { never: 'metadata (Envoy metadata is empty on a proxyless server)' };
  if (p.requestedServerName !== undefined)
    return { serverName: stringMatch(msg(p.requestedServerName), `${path}.requested_server_name`, opts) };
  if (p.matcher !== undefined) return fail(`${path}.matcher`, 'extension matchers are not supported');
  if (p.uriTemplate !== undefined) return fail(`${path}.uri_template`, 'URI templates are not supported');
  return fail(path, 'has no rule');
}

/** Translates an RBAC `Principal` (recursively). */
export function principal(p: Msg, path: string, opts: RbacOptions): RequestCondition {
  if (p.andIds !== undefined)
    return {
      and: set(p.andIds, 'ids', `${path}.and_ids`).map((x, i) =>
        principal(x, `${path}.and_ids.ids[${i}]`, opts),
      ),
    };
  if (p.orIds !== undefined)
    return {
      or: set(p.orIds, 'ids', `${path}.or_ids`).map((x, i) => principal(x, `${path}.or_ids.ids[${i}]`, opts)),
    };
  if (p.notId !== undefined) return { not: principal(msg(p.notId) ?? {}, `${path}.not_id`, opts) };
  if (p.any !== undefined) {
    if (p.any !== true) fail(`${path}.any`, 'must be true');
    return { any: true };
  }
  if (p.authenticated !== undefined) {
    const a = msg(p.authenticated) ?? {};
    return {
      authenticated:
        a.principalName === undefined
          ? null
          : stringMatch(msg(a.principalName), `${path}.authenticated.principal_name`, opts),
    };
  }
  if (p.sourceIp !== undefined) return { directRemoteIp: cidr(p.sourceIp, `${path}.source_ip`) };
  if (p.directRemoteIp !== undefined)
    return { directRemoteIp: cidr(p.directRemoteIp, `${path}.direct_remote_ip`) };
  if (p.remoteIp !== undefined) return { remoteIp: cidr(p.remoteIp, `${path}.remote_ip`) };
  if (p.header !== undefined) return { header: headerCondition(msg(p.header) ?? {}, `${path}.header`, opts) };
  if (p.urlPath !== undefined) return { urlPath: pathMatcher(p.urlPath, `${path}.url_path`, opts) };
  if (p.metadata !== undefined) return { never: 'metadata (Envoy metadata is empty on a proxyless server)' };
  if (p.filterState !== undefined) return { never: 'filter_state (no filter state on a proxyless server)' };
  return fail(path, 'has no identifier');
}

/** Translates the `rules` of an RBAC filter (`envoy.config.rbac.v3.RBAC`) into evaluator policies. */
export function rbacPolicies(
  rules: Msg,
  filter: string,
  path: string,
  opts: RbacOptions,
): { action: 'ALLOW' | 'DENY' | 'none'; policies: AuthorizationPolicy[] } {
  const action = str(rules.action) ?? 'ALLOW';
  if (action !== 'ALLOW' && action !== 'DENY' && action !== 'LOG')
    fail(`${path}.action`, `unknown action ${action}`);
  const out: AuthorizationPolicy[] = [];
  const policies = msg(rules.policies) ?? {};
  for (const [name, raw] of Object.entries(policies)) {
    const pp = `${path}.policies["${name}"]`;
    const p = msg(raw) ?? {};
    if (p.condition !== undefined) fail(`${pp}.condition`, 'CEL conditions are not supported (gRFC A41)');
    if (p.checkedCondition !== undefined)
      fail(`${pp}.checked_condition`, 'CEL conditions are not supported (gRFC A41)');
    const perms = list(p.permissions);
    const ids = list(p.principals);
    if (perms.length === 0) fail(`${pp}.permissions`, 'must not be empty');
    if (ids.length === 0) fail(`${pp}.principals`, 'must not be empty');
    const permissions = perms.map((x, i) => permission(x, `${pp}.permissions[${i}]`, opts));
    const principals = ids.map((x, i) => principal(x, `${pp}.principals[${i}]`, opts));
    if (action === 'LOG') continue;
    out.push({
      name: `${filter}/${name}`,
      action,
      rules: [{ match: { and: [{ or: principals }, { or: permissions }] } }],
    });
  }
  if (action === 'LOG') return { action: 'none', policies: [] };
  // An ALLOW filter without policies allows nothing: a policy that matches nothing says so.
  if (action === 'ALLOW' && out.length === 0) out.push({ name: filter, action: 'ALLOW', rules: undefined });
  return { action, policies: out };
}

/** Translates an RBAC filter config (`envoy.extensions.filters.http.rbac.v3.RBAC`). */
export function translateRbac(cfg: Msg, filter: string, path: string, opts: RbacOptions = {}): RbacConfig {
  if (cfg.matcher !== undefined) fail(`${path}.matcher`, 'the matcher form of RBAC rules is not supported');
  const rules = msg(cfg.rules);
  // Envoy: without rules the filter enforces nothing.
  if (rules === undefined) return { authorizer: undefined, action: 'none', policies: [] };
  const { action, policies } = rbacPolicies(rules, filter, `${path}.rules`, opts);
  if (action === 'none') return { authorizer: undefined, action, policies: [] };
  return {
    authorizer: createAuthorizer({ mode: 'PERMISSIVE', policies }),
    action,
    policies: policies.map((p) => p.name),
  };
}

/**
 * Translates an `RBACPerRoute`: the route's RBAC for that filter. Without `rbac` the filter is
 * off for the route (Envoy).
 */
export function translateRbacPerRoute(
  cfg: Msg,
  filter: string,
  path: string,
  opts: RbacOptions = {},
): RbacConfig {
  const rbac = msg(cfg.rbac);
  if (rbac === undefined) return { authorizer: undefined, action: 'none', policies: [] };
  return translateRbac(rbac, filter, `${path}.rbac`, opts);
}

/** An authorizer that asks every one of `parts` in turn (the first denial wins). */
export function allOf(parts: readonly InboundAuthorizer[]): InboundAuthorizer {
  const allowed = Object.freeze({ allowed: true, reason: 'every RBAC filter allowed' });
  const fn: InboundAuthorizer = (a) => {
    for (let i = 0; i < parts.length; i++) {
      const d = (parts[i] as InboundAuthorizer)(a);
      if (!d.allowed) return d;
    }
    return allowed;
  };
  fn.pathMatchingMatters = (pm: PathMatching) =>
    parts.some((p) => p.pathMatchingMatters === undefined || p.pathMatchingMatters(pm));
  return fn;
}

/**
 * The `RBACPerRoute` overrides of a `typed_per_filter_config` map, by filter name, over `base`
 * (a virtual host's). Undefined when there are none.
 */
export function perFilterRbac(
  cfg: unknown,
  path: string,
  base: Readonly<Record<string, RbacConfig>> | undefined,
  opts: RbacOptions,
): Readonly<Record<string, RbacConfig>> | undefined {
  const m = msg(cfg);
  let out: Record<string, RbacConfig> | undefined;
  if (m !== undefined) {
    for (const [name, v] of Object.entries(m)) {
      let inner = msg(v);
      // The FilterConfig wrapper ({ config: Any, is_optional })
      if (inner && typeOf(inner) === 'envoy.config.route.v3.FilterConfig') inner = msg(inner.config);
      if (inner === undefined || typeOf(inner) !== RBAC_PER_ROUTE_TYPE) continue;
      out ??= { ...base };
      out[name] = translateRbacPerRoute(inner, name, `${path}.${name}`, opts);
    }
  }
  return out === undefined ? base : Object.freeze(out);
}
