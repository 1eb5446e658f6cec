import type { ConfigIssue } from '../errors.js';
import { s } from '../schema.js';

/**
 * 32-bit MurmurHash3 (x86_32) over the UTF-16 code units of a string, written from the published
 * algorithm. Each code unit is mixed as one 16-bit lane pair so ASCII keys hash exactly like their
 * Latin-1 bytes paired up; the output is a uint32. Used for ring and Maglev placement and for
 * request affinity keys, so one function decides both sides.
 */
export function murmur3(key: string, seed = 0): number {
  let h = seed >>> 0;
  const n = key.length;
  const pairs = n >>> 1;
  let i = 0;
  for (let p = 0; p < pairs; p++, i += 2) {
    let k = (key.charCodeAt(i) & 0xffff) | ((key.charCodeAt(i + 1) & 0xffff) << 16);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  if ((n & 1) === 1) {
    let k = key.charCodeAt(i) & 0xffff;
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
  }
  h ^= n * 2;
  return fmix32(h);
}

interface MemoEntry<P> {
  readonly eps: readonly object[];
  readonly weights: readonly number[];
  readonly picker: P;
}

/**
 * Remembers the pickers built for the last few endpoint lists (one per priority level, usually
 * one), so that rebuilds that leave a hash policy's input unchanged (slow-start steps, health
 * changes in another level) reuse the ring or table instead of rebuilding it.
 */
export class PickerMemo<P> {
  #entries: MemoEntry<P>[] = [];
  get(eps: readonly { readonly endpoint: { readonly weight: number } }[], build: () => P): P {
    for (const entry of this.#entries) {
      if (entry.eps.length !== eps.length) continue;
      let same = true;
      for (let i = 0; same && i < eps.length; i++) {
        const e = eps[i] as (typeof eps)[number];
        same = entry.eps[i] === e && entry.weights[i] === e.endpoint.weight;
      }
      if (same) return entry.picker;
    }
    const picker = build();
    this.#entries.unshift({ eps: [...eps], weights: eps.map((e) => e.endpoint.weight), picker });
    if (this.#entries.length > 4) this.#entries.pop();
    return picker;
  }
}

/** MurmurHash3's finaliser: a full-avalanche mix of a 32-bit integer. */
export function fmix32(x: number): number {
  let h = x | 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * What a request is hashed on, in order: the first rule that yields a value decides the hash
 * (Envoy's `hash_policy` with every rule terminal). Requests for which no rule yields a value get
 * a random hash, so they spread like `random`.
 */
export type HashRule =
  | { readonly kind: 'header'; readonly name: string }
  | { readonly kind: 'cookie'; readonly name: string }
  | { readonly kind: 'sourceIp' };

/** Request attributes a transport offers to `requestHash`. */
export type HeaderInput =
  | Readonly<Record<string, string | string[] | number | undefined | null>>
  | readonly (string | Buffer)[]
  | Iterable<readonly [string, string | string[] | undefined]>
  | null
  | undefined;

const hashRuleSchema = s.union(
  [
    s
      .object(
        {
          header: s.string({ defaultText: 'none', doc: 'Hash on this request header.' }),
          cookie: s.string({ defaultText: 'none', doc: 'Hash on this cookie.' }),
          sourceIp: s.literal(true, { defaultText: 'none', doc: "Hash on the client's IP address." }),
        },
        { name: 'HashRuleInput', doc: 'One rule: exactly one of header, cookie, sourceIp.' },
      )
      .to((o, path, issues): HashRule | undefined => {
        const given = [o.header, o.cookie, o.sourceIp].filter((v) => v !== undefined).length;
        if (given !== 1) {
          issues.push({ path, message: 'must give exactly one of header, cookie, sourceIp' });
          return undefined;
        }
        if (o.header !== undefined) return { kind: 'header', name: o.header.toLowerCase() };
        if (o.cookie !== undefined) return { kind: 'cookie', name: o.cookie };
        return { kind: 'sourceIp' };
      }),
  ],
  { message: 'must be { header: name } | { cookie: name } | { sourceIp: true }' },
);

/** `hashPolicy`: one rule or a list, for ring_hash and maglev. */
export const hashPolicySchema = s.union([s.array(hashRuleSchema), hashRuleSchema], {
  defaultText: 'none: every request gets a random hash',
  doc:
    "What a request is hashed on, in order (Envoy's `hash_policy`): `{ header: name }`, " +
    '`{ cookie: name }` or `{ sourceIp: true }`; the first rule that yields a value decides.',
});

/** Parses `hashPolicy: [{ header: 'x-user' }, { cookie: 'session' }, { sourceIp: true }]`. */
export function parseHashPolicy(raw: unknown, path: string, issues: ConfigIssue[]): readonly HashRule[] {
  if (raw === undefined) return [];
  const v = hashPolicySchema.parse(raw, path, issues);
  return Object.freeze(v === undefined ? [] : Array.isArray(v) ? v : [v]);
}

/**
 * The value of header `name` (lower case) in any `HeaderInput` form, as the form holds it: a string,
 * or an array for a repeated header in record and iterable forms (in undici's flat array form, the
 * first occurrence). Undefined when absent.
 */
export function findHeader(headers: HeaderInput, name: string): string | string[] | undefined {
  if (headers == null) return undefined;
  if (Array.isArray(headers)) {
    // undici's flat [name, value, name, value] form.
    for (let i = 0; i + 1 < headers.length; i += 2) {
      const n = String(headers[i]);
      if (n.length === name.length && n.toLowerCase() === name) return String(headers[i + 1]);
    }
    return undefined;
  }
  const iter = (headers as Iterable<unknown>)[Symbol.iterator];
  if (typeof iter === 'function') {
    for (const [n, v] of headers as Iterable<readonly [string, string | string[] | undefined]>) {
      if (n.length === name.length && n.toLowerCase() === name && v !== undefined) return v;
    }
    return undefined;
  }
  const rec = headers as Readonly<Record<string, unknown>>;
  let v = rec[name];
  if (v === undefined) {
    for (const k in rec) {
      if (k.length === name.length && k.toLowerCase() === name) {
        v = rec[k];
        break;
      }
    }
  }
  if (v === undefined || v === null) return undefined;
  return Array.isArray(v) ? v.map(String) : String(v);
}

function headerValue(headers: HeaderInput, name: string): string | undefined {
  const v = findHeader(headers, name);
  return Array.isArray(v) ? v.join(',') : v;
}

function cookieValue(header: string, name: string): string | undefined {
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * Computes a request's affinity hash under `rules`, once per request (transports store it in
 * `PickContext.hash`). Returns a uint32; a random one when no rule yields a value.
 */
export function computeRequestHash(
  rules: readonly HashRule[],
  headers: HeaderInput,
  sourceIp?: string | undefined,
): number {
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i] as HashRule;
    let key: string | undefined;
    if (r.kind === 'header') key = headerValue(headers, r.name);
    else if (r.kind === 'cookie') {
      const c = headerValue(headers, 'cookie');
      if (c !== undefined) key = cookieValue(c, r.name);
    } else key = sourceIp;
    if (key !== undefined && key.length > 0) return murmur3(key);
  }
  return (Math.random() * 0x100000000) >>> 0;
}
