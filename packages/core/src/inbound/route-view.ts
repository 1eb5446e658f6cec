import type { PathMatching } from '../serving.js';
import type { TargetParts } from './path.js';

/**
 * How a server framework compares a request path with its routes. The admission step evaluates
 * the authorization policy on the normalized path *and* on the path as the framework will route
 * it (these options), and admits a request only when both are allowed: a DENY rule cannot be
 * dodged by a spelling the framework routes to the same handler (`/ADMIN` on a case-insensitive
 * router), and an ALLOW rule never admits a spelling the policy did not name.
 */
export interface RouteMatchingOptions {
  /**
   * The framework routes on the path as received (Fastify routes before any hook runs; gRPC looks
   * `:path` up as is), not on the normalized path the admission step hands on (Express).
   */
  readonly routesReceivedPath?: boolean;
  /** Paths match routes whatever their case (Express's default; Fastify `caseSensitive: false`). */
  readonly caseInsensitive?: boolean;
  /** %-escapes are decoded before routing, except those of reserved characters (find-my-way). */
  readonly decodes?: boolean;
  /** Runs of `/` count as one (Fastify `ignoreDuplicateSlashes`). */
  readonly mergesSlashes?: boolean;
  /** `/a/` routes as `/a` (Express without `strict routing`; Fastify `ignoreTrailingSlash`). */
  readonly ignoresTrailingSlash?: boolean;
  /** `;` ends the path (Fastify `useSemicolonDelimiter`). */
  readonly semicolonEndsPath?: boolean;
  /** HEAD requests reach GET handlers (Express; Fastify `exposeHeadRoutes`, its default). */
  readonly headAsGet?: boolean;
}

/** A framework's routing equivalence, as the admission step and the authorizer use it. */
export interface RouteView extends PathMatching {
  readonly options: Readonly<Required<RouteMatchingOptions>>;
  /** The path the framework routes on. */
  routePath(parts: Pick<TargetParts, 'path' | 'rawPath'>): string;
  /** The method whose handlers the request reaches. */
  routeMethod(method: string): string;
}

/** Characters find-my-way leaves escaped when it decodes a path (`decodeURI`'s reserved set, and `%`). */
function keptEscaped(b: number): boolean {
  return (
    b === 0x23 || // #
    b === 0x24 || // $
    b === 0x25 || // %
    b === 0x26 || // &
    b === 0x2b || // +
    b === 0x2c || // ,
    b === 0x2f || // /
    b === 0x3a || // :
    b === 0x3b || // ;
    b === 0x3d || // =
    b === 0x3f || // ?
    b === 0x40 // @
  );
}

function hex(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  const l = c | 0x20;
  return l >= 97 && l <= 102 ? l - 87 : -1;
}

function byteAt(s: string, i: number): number {
  if (i + 2 >= s.length || s.charCodeAt(i) !== 37) return -1;
  const h = hex(s.charCodeAt(i + 1));
  const l = hex(s.charCodeAt(i + 2));
  return h < 0 || l < 0 ? -1 : (h << 4) | l;
}

/**
 * Decodes %-escapes the way find-my-way does before routing: every escape but those of reserved
 * characters, UTF-8 sequences into their character. An escape that is not well-formed UTF-8 is
 * left as it is (the admission step has already rejected such paths; patterns may hold anything).
 */
export function decodeForRouting(s: string): string {
  let i = s.indexOf('%');
  if (i < 0) return s;
  let out = s.slice(0, i);
  const len = s.length;
  while (i < len) {
    const c = s.charCodeAt(i);
    if (c !== 37) {
      out += s[i];
      i++;
      continue;
    }
    const b = byteAt(s, i);
    if (b < 0 || (b < 0x80 && keptEscaped(b))) {
      out += s.slice(i, i + (b < 0 ? 1 : 3));
      i += b < 0 ? 1 : 3;
      continue;
    }
    if (b < 0x80) {
      out += String.fromCharCode(b);
      i += 3;
      continue;
    }
    const n = b >= 0xf0 && b <= 0xf4 ? 3 : b >= 0xe0 && b <= 0xef ? 2 : b >= 0xc2 && b <= 0xdf ? 1 : -1;
    let cp = n === 3 ? b & 0x07 : n === 2 ? b & 0x0f : b & 0x1f;
    let ok = n > 0;
    for (let k = 1; ok && k <= n; k++) {
      const cb = byteAt(s, i + 3 * k);
      if (cb < 0x80 || cb > 0xbf) ok = false;
      else cp = (cp << 6) | (cb & 0x3f);
    }
    if (!ok || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      out += s.slice(i, i + 3);
      i += 3;
      continue;
    }
    out += String.fromCodePoint(cp);
    i += 3 * (n + 1);
  }
  return out;
}

function fold(o: Required<RouteMatchingOptions>, path: string, isPattern: boolean): string {
  let s = path;
  if (o.semicolonEndsPath) {
    const i = s.indexOf(';');
    if (i >= 0) s = s.slice(0, i);
  }
  if (o.decodes) s = decodeForRouting(s);
  if (o.mergesSlashes && s.includes('//')) s = s.replace(/\/\/+/g, '/');
  if (!isPattern && o.ignoresTrailingSlash && s.length > 1 && s.charCodeAt(s.length - 1) === 47) {
    s = s.slice(0, -1);
  }
  // V8 returns the string itself when nothing changes case: no allocation for lower-case paths.
  if (o.caseInsensitive) s = s.toLowerCase();
  return s;
}

const views = new Map<number, RouteView>();
const KEYS = [
  'routesReceivedPath',
  'caseInsensitive',
  'decodes',
  'mergesSlashes',
  'ignoresTrailingSlash',
  'semicolonEndsPath',
  'headAsGet',
] as const;

/**
 * The view of a framework with these routing options. Views are shared (one object per
 * combination), so an authorizer can cache what it compiles for each.
 */
export function routeView(options: RouteMatchingOptions): RouteView {
  let key = 0;
  for (let i = 0; i < KEYS.length; i++) if (options[KEYS[i] as (typeof KEYS)[number]]) key |= 1 << i;
  let v = views.get(key);
  if (v !== undefined) return v;
  const o = Object.freeze({
    routesReceivedPath: options.routesReceivedPath === true,
    caseInsensitive: options.caseInsensitive === true,
    decodes: options.decodes === true,
    mergesSlashes: options.mergesSlashes === true,
    ignoresTrailingSlash: options.ignoresTrailingSlash === true,
    semicolonEndsPath: options.semicolonEndsPath === true,
    headAsGet: options.headAsGet === true,
  });
  v = Object.freeze({
    options: o,
    trimTrailingSlash: o.ignoresTrailingSlash,
    foldPattern: (pattern: string) => fold(o, pattern, true),
    routePath: (parts: Pick<TargetParts, 'path' | 'rawPath'>) =>
      fold(o, o.routesReceivedPath ? parts.rawPath : parts.path, false),
    routeMethod: (method: string) => (o.headAsGet && method === 'HEAD' ? 'GET' : method),
  });
  views.set(key, v);
  return v;
}

/** Routes exactly the path received (gRPC: grpc-js looks `:path` up in a map). */
export const EXACT_ROUTE_VIEW: RouteView = routeView({ routesReceivedPath: true });
