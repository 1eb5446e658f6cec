import { isIP } from 'node:net';
import {
  type ConfigIssue,
  checkKeys,
  describe,
  expectObject,
  isPlainObject,
  join,
  MeshConfigError,
} from '@meshlet/core';

/** Istio's actions (CUSTOM is not supported: there is no external authorizer here). */
export type AuthorizationAction = 'ALLOW' | 'DENY' | 'AUDIT';
export const AUTHORIZATION_ACTIONS: readonly AuthorizationAction[] = ['ALLOW', 'DENY', 'AUDIT'];

/** STRICT: only mTLS peers are accepted. PERMISSIVE: plaintext too (with no identity). */
export type AuthorizationMode = 'STRICT' | 'PERMISSIVE';

export interface Source {
  readonly principals?: readonly string[];
  readonly notPrincipals?: readonly string[];
  readonly namespaces?: readonly string[];
  readonly notNamespaces?: readonly string[];
  readonly ipBlocks?: readonly string[];
  readonly notIpBlocks?: readonly string[];
  readonly remoteIpBlocks?: readonly string[];
  readonly notRemoteIpBlocks?: readonly string[];
}

export interface Operation {
  readonly hosts?: readonly string[];
  readonly notHosts?: readonly string[];
  readonly methods?: readonly string[];
  readonly notMethods?: readonly string[];
  readonly paths?: readonly string[];
  readonly notPaths?: readonly string[];
  readonly ports?: readonly string[];
  readonly notPorts?: readonly string[];
}

export interface Condition {
  readonly key: string;
  readonly values?: readonly string[];
  readonly notValues?: readonly string[];
}

export interface Rule {
  readonly from?: readonly { readonly source: Source }[];
  readonly to?: readonly { readonly operation: Operation }[];
  readonly when?: readonly Condition[];
}

export interface AuthorizationPolicy {
  readonly name: string;
  readonly action: AuthorizationAction;
  /** Undefined: the policy matches nothing (an ALLOW policy without rules denies everything). */
  readonly rules: readonly Rule[] | undefined;
}

export interface AuthorizationConfig {
  readonly mode: AuthorizationMode;
  readonly policies: readonly AuthorizationPolicy[];
}

const SOURCE_KEYS = [
  'principals',
  'notPrincipals',
  'namespaces',
  'notNamespaces',
  'ipBlocks',
  'notIpBlocks',
  'remoteIpBlocks',
  'notRemoteIpBlocks',
] as const;
const OPERATION_KEYS = [
  'hosts',
  'notHosts',
  'methods',
  'notMethods',
  'paths',
  'notPaths',
  'ports',
  'notPorts',
] as const;

/** `when` keys understood (Istio's names); `request.headers[name]` takes any header name. */
export const CONDITION_KEYS = [
  'source.ip',
  'remote.ip',
  'source.namespace',
  'source.principal',
  'destination.ip',
  'destination.port',
  'connection.sni',
] as const;

const HEADER_KEY_RE = /^request\.headers\[([!#$%&'*+.^_`|~0-9A-Za-z-]+)\]$/;

function stringList(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
  check?: (s: string, p: string) => void,
) {
  if (!Array.isArray(raw)) {
    issues.push({ path, message: `must be a list of strings, got ${describe(raw)}` });
    return undefined;
  }
  const out: string[] = [];
  raw.forEach((v: unknown, i: number) => {
    const p = join(path, i);
    if (typeof v === 'number' && Number.isFinite(v)) v = String(v);
    if (typeof v !== 'string' || v.length === 0) {
      issues.push({ path: p, message: `must be a non-empty string, got ${describe(v)}` });
      return;
    }
    check?.(v, p);
    out.push(v);
  });
  return Object.freeze(out);
}

function checkCidr(issues: ConfigIssue[]) {
  return (v: string, p: string) => {
    const [addr, bits, extra] = v.split('/');
    const family = isIP(addr ?? '');
    const max = family === 6 ? 128 : 32;
    if (
      family === 0 ||
      extra !== undefined ||
      (bits !== undefined && !/^\d{1,3}$/.test(bits)) ||
      Number(bits ?? 0) > max
    ) {
      issues.push({ path: p, message: `must be an IP address or CIDR block, got "${v}"` });
    }
  };
}

function checkPattern(issues: ConfigIssue[]) {
  return (v: string, p: string) => {
    const inner = v.length > 1 ? v.slice(1, -1) : '';
    if (inner.includes('*')) {
      issues.push({ path: p, message: `"*" is allowed only as a prefix, a suffix or alone, got "${v}"` });
    }
  };
}

function checkPort(issues: ConfigIssue[]) {
  return (v: string, p: string) => {
    if (!/^\d{1,5}$/.test(v) || Number(v) > 65535)
      issues.push({ path: p, message: `must be a port number, got "${v}"` });
  };
}

function parseFields<K extends string>(
  obj: Record<string, unknown>,
  keys: readonly K[],
  path: string,
  issues: ConfigIssue[],
  checks: Partial<Record<K, (s: string, p: string) => void>>,
): Partial<Record<K, readonly string[]>> {
  checkKeys(obj, keys, path, issues);
  const out: Partial<Record<K, readonly string[]>> = {};
  for (const k of keys) {
    if (obj[k] === undefined) continue;
    const list = stringList(obj[k], join(path, k), issues, checks[k]);
    if (list) out[k] = list;
  }
  return out;
}

function parseRule(raw: unknown, path: string, issues: ConfigIssue[]): Rule | undefined {
  const obj = expectObject(raw, path, issues);
  if (!obj) return undefined;
  checkKeys(obj, ['from', 'to', 'when'], path, issues);
  const rule: { from?: { source: Source }[]; to?: { operation: Operation }[]; when?: Condition[] } = {};
  const cidr = checkCidr(issues);
  const pattern = checkPattern(issues);
  const port = checkPort(issues);
  if (obj.from !== undefined) {
    const p = join(path, 'from');
    if (!Array.isArray(obj.from))
      issues.push({ path: p, message: `must be a list, got ${describe(obj.from)}` });
    else {
      rule.from = [];
      obj.from.forEach((f: unknown, i: number) => {
        const fp = join(p, i);
        const fo = expectObject(f, fp, issues);
        if (!fo) return;
        checkKeys(fo, ['source'], fp, issues);
        const so = expectObject(fo.source, join(fp, 'source'), issues);
        if (!so) return;
        const source = parseFields(so, SOURCE_KEYS, join(fp, 'source'), issues, {
          principals: pattern,
          notPrincipals: pattern,
          namespaces: pattern,
          notNamespaces: pattern,
          ipBlocks: cidr,
          notIpBlocks: cidr,
          remoteIpBlocks: cidr,
          notRemoteIpBlocks: cidr,
        });
        rule.from?.push(Object.freeze({ source: Object.freeze(source) }));
      });
    }
  }
  if (obj.to !== undefined) {
    const p = join(path, 'to');
    if (!Array.isArray(obj.to)) issues.push({ path: p, message: `must be a list, got ${describe(obj.to)}` });
    else {
      rule.to = [];
      obj.to.forEach((t: unknown, i: number) => {
        const tp = join(p, i);
        const to = expectObject(t, tp, issues);
        if (!to) return;
        checkKeys(to, ['operation'], tp, issues);
        const oo = expectObject(to.operation, join(tp, 'operation'), issues);
        if (!oo) return;
        const operation = parseFields(oo, OPERATION_KEYS, join(tp, 'operation'), issues, {
          hosts: pattern,
          notHosts: pattern,
          methods: pattern,
          notMethods: pattern,
          paths: pattern,
          notPaths: pattern,
          ports: port,
          notPorts: port,
        });
        rule.to?.push(Object.freeze({ operation: Object.freeze(operation) }));
      });
    }
  }
  if (obj.when !== undefined) {
    const p = join(path, 'when');
    if (!Array.isArray(obj.when))
      issues.push({ path: p, message: `must be a list, got ${describe(obj.when)}` });
    else {
      rule.when = [];
      obj.when.forEach((w: unknown, i: number) => {
        const wp = join(p, i);
        const wo = expectObject(w, wp, issues);
        if (!wo) return;
        checkKeys(wo, ['key', 'values', 'notValues'], wp, issues);
        const key = wo.key;
        if (
          typeof key !== 'string' ||
          !(HEADER_KEY_RE.test(key) || (CONDITION_KEYS as readonly string[]).includes(key))
        ) {
          issues.push({
            path: join(wp, 'key'),
            message: `must be request.headers[<name>] or one of ${CONDITION_KEYS.join(', ')}, got ${describe(key)}`,
          });
          return;
        }
        const isIpKey = key.endsWith('.ip');
        const check = isIpKey ? cidr : key === 'destination.port' ? port : pattern;
        const values =
          wo.values === undefined ? undefined : stringList(wo.values, join(wp, 'values'), issues, check);
        const notValues =
          wo.notValues === undefined
            ? undefined
            : stringList(wo.notValues, join(wp, 'notValues'), issues, check);
        if (
          values === undefined &&
          notValues === undefined &&
          wo.values === undefined &&
          wo.notValues === undefined
        ) {
          issues.push({ path: wp, message: 'needs values or notValues' });
          return;
        }
        rule.when?.push(
          Object.freeze({ key, ...(values ? { values } : {}), ...(notValues ? { notValues } : {}) }),
        );
      });
    }
  }
  return Object.freeze(rule);
}

/**
 * Parses one policy: meshlet's flat form `{ name, action, rules }` or a Kubernetes
 * `security.istio.io` AuthorizationPolicy object (`{ metadata: { name }, spec: { action, rules } }`).
 */
export function parsePolicy(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
  index = 0,
): AuthorizationPolicy | undefined {
  const obj = expectObject(raw, path, issues);
  if (!obj) return undefined;
  let name: unknown = obj.name;
  let spec: Record<string, unknown> = obj;
  let specPath = path;
  if (obj.spec !== undefined || obj.kind !== undefined) {
    checkKeys(obj, ['apiVersion', 'kind', 'metadata', 'spec'], path, issues);
    if (obj.kind !== undefined && obj.kind !== 'AuthorizationPolicy') {
      issues.push({
        path: join(path, 'kind'),
        message: `must be AuthorizationPolicy, got ${describe(obj.kind)}`,
      });
    }
    const meta = isPlainObject(obj.metadata) ? obj.metadata : {};
    name = meta.namespace && meta.name ? `${meta.namespace}/${meta.name}` : meta.name;
    specPath = join(path, 'spec');
    const s = obj.spec === undefined ? {} : expectObject(obj.spec, specPath, issues);
    if (!s) return undefined;
    spec = s;
    checkKeys(spec, ['action', 'rules', 'selector', 'targetRef', 'targetRefs'], specPath, issues);
  } else {
    checkKeys(obj, ['name', 'action', 'rules'], path, issues);
  }
  if (name !== undefined && (typeof name !== 'string' || name.length === 0)) {
    issues.push({ path: join(path, 'name'), message: `must be a non-empty string, got ${describe(name)}` });
    name = undefined;
  }
  let action: AuthorizationAction = 'ALLOW';
  if (spec.action !== undefined) {
    if (spec.action === 'CUSTOM') {
      issues.push({
        path: join(specPath, 'action'),
        message: 'CUSTOM (external authorization) is not supported',
      });
    } else if (
      typeof spec.action === 'string' &&
      (AUTHORIZATION_ACTIONS as readonly string[]).includes(spec.action)
    ) {
      action = spec.action as AuthorizationAction;
    } else {
      issues.push({
        path: join(specPath, 'action'),
        message: `must be one of ${AUTHORIZATION_ACTIONS.join(', ')}, got ${describe(spec.action)}`,
      });
    }
  }
  let rules: Rule[] | undefined;
  if (spec.rules !== undefined) {
    const rp = join(specPath, 'rules');
    if (!Array.isArray(spec.rules))
      issues.push({ path: rp, message: `must be a list, got ${describe(spec.rules)}` });
    else {
      rules = [];
      spec.rules.forEach((r: unknown, i: number) => {
        const rule = parseRule(r, join(rp, i), issues);
        if (rule) rules?.push(rule);
      });
    }
  }
  return Object.freeze({
    name: typeof name === 'string' ? name : `policy-${index}`,
    action,
    rules: rules ? Object.freeze(rules) : undefined,
  });
}

/** Parses a list of policies, recording every bad field by path. */
export function parsePolicies(raw: unknown, path: string, issues: ConfigIssue[]): AuthorizationPolicy[] {
  if (!Array.isArray(raw)) {
    issues.push({ path, message: `must be a list of policies, got ${describe(raw)}` });
    return [];
  }
  const out: AuthorizationPolicy[] = [];
  raw.forEach((p: unknown, i: number) => {
    const policy = parsePolicy(p, join(path, i), issues, i);
    if (policy) out.push(policy);
  });
  return out;
}

/** Parses the `authorization: { mode, policies }` section. */
export function parseAuthorizationSection(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
): AuthorizationConfig {
  const obj = expectObject(raw, path, issues) ?? {};
  checkKeys(obj, ['mode', 'policies'], path, issues);
  let mode: AuthorizationMode = 'PERMISSIVE';
  if (obj.mode !== undefined) {
    if (obj.mode === 'STRICT' || obj.mode === 'PERMISSIVE') mode = obj.mode;
    else
      issues.push({
        path: join(path, 'mode'),
        message: `must be STRICT or PERMISSIVE, got ${describe(obj.mode)}`,
      });
  }
  const policies =
    obj.policies === undefined ? [] : parsePolicies(obj.policies, join(path, 'policies'), issues);
  return Object.freeze({ mode, policies: Object.freeze(policies) });
}

/**
 * Parses and validates an authorization config (or a bare list of policies); throws
 * `MESHLET_ERR_CONFIG` naming every bad field by path.
 */
export function parseAuthorization(raw: unknown, path = 'authorization'): AuthorizationConfig {
  const issues: ConfigIssue[] = [];
  const config = Array.isArray(raw)
    ? Object.freeze({
        mode: 'PERMISSIVE' as const,
        policies: Object.freeze(parsePolicies(raw, join(path, 'policies'), issues)),
      })
    : parseAuthorizationSection(raw, path, issues);
  if (issues.length > 0) throw new MeshConfigError(issues);
  return config;
}
