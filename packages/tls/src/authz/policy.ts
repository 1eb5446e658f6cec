import { isIP } from 'node:net';
import {
  type ConfigIssue,
  describe,
  expectObject,
  isPlainObject,
  join,
  MeshConfigError,
  s,
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

/** A string comparison (Envoy's `StringMatcher`): one of exact, prefix, suffix, contains, regex. */
export interface StringMatch {
  readonly exact?: string;
  readonly prefix?: string;
  readonly suffix?: string;
  readonly contains?: string;
  /** A compiled regular expression that must match the whole value (xDS `safe_regex`, RE2 semantics). */
  readonly regex?: { test(value: string): boolean };
  /** Compare literals case-insensitively (no effect on `regex`, as in Envoy). */
  readonly ignoreCase?: boolean;
}

/** A header check (Envoy's `HeaderMatcher`): a string match, presence (`present`), or an integer `range`. */
export interface HeaderCondition {
  /** The header name; `:method`, `:path` (with the query), `:authority` / `host` read the request's. */
  readonly name: string;
  readonly match?: StringMatch;
  /** true: must be present; false: must be absent. */
  readonly present?: boolean;
  /** `[start, end)`: the value must be a decimal integer in it. */
  readonly range?: { readonly start: number; readonly end: number };
  /** Inverts the check (an absent header still fails every check but `present`). */
  readonly invert?: boolean;
}

/**
 * A condition on a request in the shape of Envoy RBAC's `Permission` and `Principal` trees, which
 * is how a control plane's RBAC arrives (gRFC A41). Evaluated by the same evaluator as Istio's
 * `from` / `to` / `when`; a rule's `match` is ANDed with them.
 */
export type RequestCondition =
  | { readonly and: readonly RequestCondition[] }
  | { readonly or: readonly RequestCondition[] }
  | { readonly not: RequestCondition }
  | { readonly any: true }
  | { readonly header: HeaderCondition }
  /** The path without its query. */
  | { readonly urlPath: StringMatch }
  /** The local address (CIDR). */
  | { readonly destinationIp: string }
  | { readonly destinationPort: number }
  /** `[start, end)`. */
  | { readonly destinationPortRange: { readonly start: number; readonly end: number } }
  /** The TLS server name the client sent (`""` without one). */
  | { readonly serverName: StringMatch }
  /**
   * The peer's certificate names (URI SANs, else DNS SANs, else the RFC 2253 subject; `""` without
   * a certificate); `null`: any TLS connection.
   */
  | { readonly authenticated: StringMatch | null }
  /** The connection peer's address (CIDR). */
  | { readonly directRemoteIp: string }
  /** The original client's address (`X-Forwarded-For` with trusted hops, else the peer's). */
  | { readonly remoteIp: string }
  /** Never matches (data a proxyless server does not have: Envoy metadata, filter state); the reason. */
  | { readonly never: string };

export interface Rule {
  readonly from?: readonly { readonly source: Source }[];
  readonly to?: readonly { readonly operation: Operation }[];
  readonly when?: readonly Condition[];
  /** A condition tree (Envoy RBAC's form), ANDed with `from`, `to` and `when`; not in the YAML schema. */
  readonly match?: RequestCondition;
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

type Check = (v: string, p: string, issues: ConfigIssue[]) => void;

function checkCidr(v: string, p: string, issues: ConfigIssue[]): void {
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
}

function checkPattern(v: string, p: string, issues: ConfigIssue[]): void {
  const inner = v.length > 1 ? v.slice(1, -1) : '';
  if (inner.includes('*')) {
    issues.push({ path: p, message: `"*" is allowed only as a prefix, a suffix or alone, got "${v}"` });
  }
}

function checkPort(v: string, p: string, issues: ConfigIssue[]): void {
  if (!/^\d{1,5}$/.test(v) || Number(v) > 65535)
    issues.push({ path: p, message: `must be a port number, got "${v}"` });
}

/** A string (numbers are taken as their text, for ports) passing `check`. */
function value(check: Check | undefined) {
  return s.custom<string | number, string>({
    ts: 'string | number',
    json: { type: ['string', 'number'] },
    parse(v, p, issues) {
      if (typeof v === 'number' && Number.isFinite(v)) v = String(v);
      if (typeof v !== 'string' || v.length === 0) {
        issues.push({ path: p, message: `must be a non-empty string, got ${describe(v)}` });
        return undefined;
      }
      check?.(v, p, issues);
      return v;
    },
  });
}

function list(check: Check | undefined, doc: string) {
  return s.array(value(check), { message: 'must be a list of strings', defaultText: 'any', doc });
}

const MATCH = 'Exact, `prefix*`, `*suffix` or `*` (any non-empty value).';

const sourceSchema = s.object(
  {
    principals: list(checkPattern, `Peer SPIFFE IDs (\`td/ns/x/sa/y\` or \`spiffe://…\`). ${MATCH}`),
    notPrincipals: list(checkPattern, 'Peer SPIFFE IDs that must not match.'),
    namespaces: list(checkPattern, `The \`/ns/<ns>/\` segment of the peer SPIFFE ID. ${MATCH}`),
    notNamespaces: list(checkPattern, 'Namespaces that must not match.'),
    ipBlocks: list(checkCidr, 'Peer addresses or CIDR blocks (IPv4 and IPv6).'),
    notIpBlocks: list(checkCidr, 'Peer addresses or CIDR blocks that must not match.'),
    remoteIpBlocks: list(checkCidr, 'Original client addresses (X-Forwarded-For) or CIDR blocks.'),
    notRemoteIpBlocks: list(checkCidr, 'Original client addresses or CIDR blocks that must not match.'),
  },
  { name: 'AuthorizationSourceInput', doc: "Who sends the request (Istio's `Source`); fields are ANDed." },
);

const operationSchema = s.object(
  {
    hosts: list(checkPattern, `Host header (case-insensitive, port ignored). ${MATCH}`),
    notHosts: list(checkPattern, 'Hosts that must not match.'),
    methods: list(checkPattern, `HTTP methods. ${MATCH}`),
    notMethods: list(checkPattern, 'Methods that must not match.'),
    paths: list(checkPattern, `Request paths, without the query string. ${MATCH}`),
    notPaths: list(checkPattern, 'Paths that must not match.'),
    ports: list(checkPort, 'Destination ports.'),
    notPorts: list(checkPort, 'Destination ports that must not match.'),
  },
  {
    name: 'AuthorizationOperationInput',
    doc: "What the request does (Istio's `Operation`); fields are ANDed.",
  },
);

const conditionSchema = s
  .object(
    {
      key: s.string({
        required: true,
        doc: `\`request.headers[<name>]\` or one of ${CONDITION_KEYS.join(', ')}.`,
      }),
      values: s.array(value(undefined), {
        message: 'must be a list of strings',
        defaultText: 'none',
        doc: 'Values, ORed.',
      }),
      notValues: s.array(value(undefined), {
        message: 'must be a list of strings',
        defaultText: 'none',
        doc: 'Values that must not match.',
      }),
    },
    { name: 'AuthorizationConditionInput', doc: "A condition (Istio's `when`): a key and its values." },
  )
  .to((o, path, issues): Condition | undefined => {
    const key = o.key;
    if (key === undefined) return undefined;
    if (!(HEADER_KEY_RE.test(key) || (CONDITION_KEYS as readonly string[]).includes(key))) {
      issues.push({
        path: join(path, 'key'),
        message: `must be request.headers[<name>] or one of ${CONDITION_KEYS.join(', ')}, got ${describe(key)}`,
      });
      return undefined;
    }
    if (o.values === undefined && o.notValues === undefined) {
      issues.push({ path, message: 'needs values or notValues' });
      return undefined;
    }
    const check: Check = key.endsWith('.ip')
      ? checkCidr
      : key === 'destination.port'
        ? checkPort
        : checkPattern;
    for (const field of ['values', 'notValues'] as const) {
      o[field]?.forEach((v, i) => {
        check(v, join(join(path, field), i), issues);
      });
    }
    return Object.freeze({
      key,
      ...(o.values ? { values: Object.freeze(o.values) } : {}),
      ...(o.notValues ? { notValues: Object.freeze(o.notValues) } : {}),
    });
  });

function present<T extends object>(o: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = Object.freeze(v);
  return Object.freeze(out) as T;
}

const ruleSchema = s
  .object(
    {
      from: s.array(
        s
          .object({ source: sourceSchema.with({ required: true }) })
          .to((o) => (o.source ? Object.freeze({ source: present(o.source) as Source }) : undefined)),
        { message: 'must be a list', defaultText: 'any source', doc: 'Sources, ORed.' },
      ),
      to: s.array(
        s
          .object({ operation: operationSchema.with({ required: true }) })
          .to((o) =>
            o.operation ? Object.freeze({ operation: present(o.operation) as Operation }) : undefined,
          ),
        { message: 'must be a list', defaultText: 'any operation', doc: 'Operations, ORed.' },
      ),
      when: s.array(conditionSchema, {
        message: 'must be a list',
        defaultText: 'none',
        doc: 'Conditions, ANDed.',
      }),
    },
    { name: 'AuthorizationRuleInput', doc: 'A rule: `from` AND `to` AND `when`; `{}` matches everything.' },
  )
  .to((o): Rule => present({ from: o.from, to: o.to, when: o.when }));

const rulesSchema = s.array(ruleSchema, {
  message: 'must be a list',
  defaultText: 'none: the policy matches nothing',
  doc: 'The rules; a request matching any of them matches the policy.',
});

const actionSchema = s.custom<AuthorizationAction, AuthorizationAction>(
  {
    ts: AUTHORIZATION_ACTIONS.map((a) => JSON.stringify(a)).join(' | '),
    json: { enum: [...AUTHORIZATION_ACTIONS] },
    parse(v, p, issues) {
      if (v === 'CUSTOM') {
        issues.push({ path: p, message: 'CUSTOM (external authorization) is not supported' });
        return undefined;
      }
      if (typeof v === 'string' && (AUTHORIZATION_ACTIONS as readonly string[]).includes(v))
        return v as AuthorizationAction;
      issues.push({
        path: p,
        message: `must be one of ${AUTHORIZATION_ACTIONS.join(', ')}, got ${describe(v)}`,
      });
      return undefined;
    },
  },
  { default: 'ALLOW', doc: 'ALLOW, DENY or AUDIT (only records).' },
);

const flatPolicySchema = s.object(
  {
    name: s.string({ defaultText: '`policy-<index>`', doc: 'The name reported in decisions and logs.' }),
    action: actionSchema,
    rules: rulesSchema,
  },
  {
    name: 'AuthorizationPolicyInput',
    doc: "An authorization policy (Istio's AuthorizationPolicy spec, flat).",
  },
);

const k8sPolicySchema = s.object(
  {
    apiVersion: s.string({ defaultText: 'any', doc: 'Ignored (`security.istio.io/v1`).' }),
    kind: s.literal('AuthorizationPolicy', { defaultText: 'AuthorizationPolicy', doc: 'The object kind.' }),
    metadata: s.custom<{ readonly name?: string; readonly namespace?: string }, Record<string, unknown>>(
      {
        ts: '{ readonly name?: string; readonly namespace?: string; readonly [key: string]: unknown }',
        json: {
          type: 'object',
          properties: {
            name: { type: 'string', description: 'The policy name. Default: `policy-<index>`.' },
            namespace: { type: 'string', description: 'Its namespace, prefixed to the name. Default: none.' },
          },
        },
        parse: (raw) => (isPlainObject(raw) ? raw : {}),
      },
      { defaultText: '{}', doc: 'The object metadata: `name` and `namespace` name the policy.' },
    ),
    spec: s.object(
      {
        action: actionSchema,
        rules: rulesSchema,
        selector: s.custom<unknown, unknown>(
          { ts: 'unknown', json: {}, parse: (r) => r },
          {
            defaultText: 'none',
            doc: 'Accepted and ignored: a process applies the policies it is given.',
          },
        ),
        targetRef: s.custom<unknown, unknown>(
          { ts: 'unknown', json: {}, parse: (r) => r },
          {
            defaultText: 'none',
            doc: 'Accepted and ignored.',
          },
        ),
        targetRefs: s.custom<unknown, unknown>(
          { ts: 'unknown', json: {}, parse: (r) => r },
          {
            defaultText: 'none',
            doc: 'Accepted and ignored.',
          },
        ),
      },
      { name: 'AuthorizationPolicySpecInput', defaultText: '{}', doc: 'The policy.' },
    ),
  },
  {
    name: 'AuthorizationPolicyObjectInput',
    doc: 'A Kubernetes `security.istio.io` AuthorizationPolicy object, as it is.',
  },
);

/** One policy: the flat form or a Kubernetes object (anything with `kind` or `spec`). */
const policySchema = s.custom<unknown, unknown>({
  ts: (e) => `${flatPolicySchema.ts(e)} | ${k8sPolicySchema.ts(e)}`,
  json: (e) => ({ anyOf: [flatPolicySchema.json(e), k8sPolicySchema.json(e)] }),
  parse: (raw) => raw,
});

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
  let name: string | undefined;
  let action: AuthorizationAction | undefined;
  let rules: Rule[] | undefined;
  if (obj.spec !== undefined || obj.kind !== undefined) {
    const o = k8sPolicySchema.parse(obj, path, issues);
    if (!o) return undefined;
    const meta = o.metadata ?? {};
    const n = meta.namespace && meta.name ? `${meta.namespace}/${meta.name}` : meta.name;
    if (n !== undefined && (typeof n !== 'string' || n.length === 0))
      issues.push({ path: join(path, 'name'), message: `must be a non-empty string, got ${describe(n)}` });
    else name = n as string | undefined;
    if (obj.spec !== undefined && !o.spec) return undefined;
    action = o.spec?.action;
    rules = o.spec?.rules;
  } else {
    const o = flatPolicySchema.parse(obj, path, issues);
    if (!o) return undefined;
    name = o.name;
    action = o.action;
    rules = o.rules;
  }
  return Object.freeze({
    name: name ?? `policy-${index}`,
    action: action ?? 'ALLOW',
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

const policyList = s.array(policySchema);

const authorizationObject = s.object(
  {
    mode: s.enum(['STRICT', 'PERMISSIVE'] as const, {
      message: 'must be STRICT or PERMISSIVE',
      default: 'PERMISSIVE',
      doc: '`STRICT`: requests without mTLS are denied before any policy; `PERMISSIVE`: plaintext allowed too.',
    }),
    policies: s.custom<unknown, AuthorizationPolicy[]>(
      { ts: (e) => policyList.ts(e), json: (e) => policyList.json(e), parse: parsePolicies },
      {
        default: [],
        doc: 'The policies (flat, or Kubernetes AuthorizationPolicy objects): DENY first, then ALLOW.',
      },
    ),
  },
  {
    name: 'AuthorizationInput',
    doc: "Inbound authorization with Istio's AuthorizationPolicy semantics (docs/security.md).",
  },
);

/** The `authorization` section. */
export const authorizationSchema = authorizationObject.with({
  defaultText: 'none: every request is allowed',
  doc: "Inbound authorization with Istio's AuthorizationPolicy semantics (docs/security.md).",
});

/** Parses the `authorization: { mode, policies }` section. */
export function parseAuthorizationSection(
  raw: unknown,
  path: string,
  issues: ConfigIssue[],
): AuthorizationConfig {
  const o = authorizationObject.parse(raw, path, issues);
  return Object.freeze({ mode: o?.mode ?? 'PERMISSIVE', policies: Object.freeze(o?.policies ?? []) });
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
