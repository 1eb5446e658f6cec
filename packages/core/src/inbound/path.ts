/**
 * Request-target normalization for the inbound admission step, as Istio configures Envoy's HTTP
 * connection manager (`meshConfig.pathNormalization`):
 *
 * | `pathNormalization` | Envoy settings | what happens to the path |
 * |---|---|---|
 * | `NONE` | `normalize_path: false` | nothing (the checks below still apply) |
 * | `BASE` (default, Istio's) | `normalize_path: true` | RFC 3986 §6: %-escapes of unreserved characters decoded, `\` → `/`, `.` and `..` segments removed (§5.2.4); other escapes kept, hex in upper case |
 * | `MERGE_SLASHES` | + `merge_slashes: true` | BASE, then runs of `/` merged |
 * | `DECODE_AND_MERGE_SLASHES` | + `path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD` | `%2F`/`%5C` decoded first, then MERGE_SLASHES |
 *
 * `escapedSlashes` (Envoy's `path_with_escaped_slashes_action`) decides what `%2F` and `%5C` become:
 * `KEEP_UNCHANGED` (default, except under DECODE_AND_MERGE_SLASHES), `REJECT_REQUEST` (400),
 * `UNESCAPE_AND_REDIRECT` (the caller is redirected to the unescaped path), `UNESCAPE_AND_FORWARD`.
 *
 * Always, whatever the normalization: absolute-form targets (`http://host/p`) are reduced to their
 * path, the fragment is dropped, and a target is rejected when it holds `%00`, a malformed escape,
 * an escaped byte sequence that is not UTF-8 (overlong forms such as `%C0%AF`, surrogates), or a
 * raw control, space or non-ASCII character.
 */

export const PATH_NORMALIZATIONS = ['NONE', 'BASE', 'MERGE_SLASHES', 'DECODE_AND_MERGE_SLASHES'] as const;
export type PathNormalization = (typeof PATH_NORMALIZATIONS)[number];

export const ESCAPED_SLASHES_ACTIONS = [
  'KEEP_UNCHANGED',
  'REJECT_REQUEST',
  'UNESCAPE_AND_REDIRECT',
  'UNESCAPE_AND_FORWARD',
] as const;
export type EscapedSlashesAction = (typeof ESCAPED_SLASHES_ACTIONS)[number];

/** How one server normalizes request targets. */
export interface PathNormalizationOptions {
  readonly normalization: PathNormalization;
  readonly escapedSlashes: EscapedSlashesAction;
}

/** Istio's default (`BASE`, escaped slashes kept). */
export const DEFAULT_PATH_NORMALIZATION: PathNormalizationOptions = Object.freeze({
  normalization: 'BASE',
  escapedSlashes: 'KEEP_UNCHANGED',
});

/** The escaped-slashes action a normalization implies when none is configured (as Istio sets it). */
export function defaultEscapedSlashes(normalization: PathNormalization): EscapedSlashesAction {
  return normalization === 'DECODE_AND_MERGE_SLASHES' ? 'UNESCAPE_AND_FORWARD' : 'KEEP_UNCHANGED';
}

/**
 * Where the parts of one request target go (a per-request object of the caller's, filled in
 * place so that normalizing allocates nothing for an ordinary path).
 */
export interface TargetParts {
  /** The path as received (absolute-form reduced, fragment and query cut off). */
  rawPath: string;
  /** The normalized path. */
  path: string;
  /** The query including its `?`, or ''. */
  query: string;
  /** The authority of an absolute-form target (`host:port`), else undefined. */
  authority: string | undefined;
  /** True when `path + query` differs from the target as received (the framework must be told). */
  changed: boolean;
  /** True when `UNESCAPE_AND_REDIRECT` unescaped a slash: answer with a redirect to `path + query`. */
  redirect: boolean;
}

const HEX = '0123456789ABCDEF';

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  const l = c | 0x20;
  if (l >= 97 && l <= 102) return l - 87;
  return -1;
}

function isUnreserved(b: number): boolean {
  return (
    (b >= 0x61 && b <= 0x7a) || // a-z
    (b >= 0x41 && b <= 0x5a) || // A-Z
    (b >= 0x30 && b <= 0x39) || // 0-9
    b === 0x2d || // -
    b === 0x2e || // .
    b === 0x5f || // _
    b === 0x7e // ~
  );
}

/** The byte of the escape at `i` (`%XX`), or -1 when `i` does not start a well-formed escape. */
function escapeAt(s: string, i: number, end: number): number {
  if (i + 2 >= end || s.charCodeAt(i) !== 37) return -1;
  const h = hexValue(s.charCodeAt(i + 1));
  const l = hexValue(s.charCodeAt(i + 2));
  return h < 0 || l < 0 ? -1 : (h << 4) | l;
}

/**
 * How many continuation bytes follow the UTF-8 lead byte `b`, and the allowed range of the first
 * one (RFC 3629 §4: no overlong forms, no surrogates, nothing above U+10FFFF); -1 when `b` cannot
 * start a character.
 */
function utf8Shape(b: number): number {
  if (b >= 0xc2 && b <= 0xdf) return 1;
  if (b >= 0xe0 && b <= 0xef) return 2;
  if (b >= 0xf0 && b <= 0xf4) return 3;
  return -1;
}

function firstContinuationOk(lead: number, c: number): boolean {
  if (lead === 0xe0) return c >= 0xa0 && c <= 0xbf;
  if (lead === 0xed) return c >= 0x80 && c <= 0x9f;
  if (lead === 0xf0) return c >= 0x90 && c <= 0xbf;
  if (lead === 0xf4) return c >= 0x80 && c <= 0x8f;
  return c >= 0x80 && c <= 0xbf;
}

/**
 * Splits and normalizes `target` (what the request line or `:path` carried) into `out`. Returns
 * undefined when the target is acceptable, else the reason it is not (answer 400).
 */
export function normalizeTarget(
  target: string,
  options: PathNormalizationOptions,
  out: TargetParts,
): string | undefined {
  out.authority = undefined;
  out.redirect = false;
  let start = 0;
  const len = target.length;
  if (len === 0) return 'the request target is empty';
  if (target.charCodeAt(0) !== 47) {
    if (target === '*') {
      out.rawPath = '*';
      out.path = '*';
      out.query = '';
      out.changed = false;
      return undefined;
    }
    // absolute-form (RFC 9112 §3.2.2): the origin server uses the path, and the authority
    // instead of Host.
    const scheme = target.indexOf('://');
    const s = scheme < 0 ? '' : target.slice(0, scheme).toLowerCase();
    if (s !== 'http' && s !== 'https') {
      return 'the request target must be a path or an absolute http(s) URL';
    }
    let a = scheme + 3;
    const authStart = a;
    while (a < len) {
      const c = target.charCodeAt(a);
      if (c === 47 || c === 63 || c === 35) break;
      a++;
    }
    const authority = target.slice(authStart, a);
    if (authority.length === 0 || authority.includes('@')) {
      return 'the authority of an absolute-form request target must be a host (no user information)';
    }
    out.authority = authority;
    start = a;
  }
  // One scan: where the path ends, and whether it needs more than a slice.
  let end = len;
  let work = false;
  for (let i = start; i < len; i++) {
    const c = target.charCodeAt(i);
    if (c === 63 || c === 35) {
      end = i;
      break;
    }
    if (c === 37 || c === 92) work = true;
    else if (c === 47) {
      const n = target.charCodeAt(i + 1);
      if (n === 47 || n === 46) work = true;
    } else if (c <= 0x20 || c >= 0x7f) {
      return `the request path holds a raw ${c >= 0x80 ? 'non-ASCII' : 'control or space'} character (0x${c.toString(16)})`;
    }
  }
  let query = '';
  if (end < len && target.charCodeAt(end) === 63) {
    const hash = target.indexOf('#', end);
    query = hash < 0 ? target.slice(end) : target.slice(end, hash);
  }
  const rawPath = start === end ? '/' : start === 0 && end === len ? target : target.slice(start, end);
  out.rawPath = rawPath;
  out.query = query;
  // absolute-form, a fragment, or an empty path all change what the framework must see
  let changed = start !== 0 || end + query.length !== len;
  if (!work) {
    out.path = rawPath;
    out.changed = changed;
    return undefined;
  }
  const r = normalizeSlow(rawPath, options, out);
  if (typeof r === 'object') return r.error;
  out.path = r;
  if (r !== rawPath) changed = true;
  out.changed = changed;
  return undefined;
}

/** The error of a path that cannot be normalized. */
interface Rejection {
  readonly error: string;
}

/**
 * The work for paths with escapes, backslashes, dot segments or repeated slashes: decoding,
 * validation, then RFC 3986 dot-segment removal and slash merging (in Envoy's order).
 */
function normalizeSlow(p: string, options: PathNormalizationOptions, out: TargetParts): string | Rejection {
  const base = options.normalization !== 'NONE';
  const action = options.escapedSlashes;
  let s = '';
  const len = p.length;
  for (let i = 0; i < len; i++) {
    const c = p.charCodeAt(i);
    if (c === 92) {
      s += base ? '/' : '\\';
      continue;
    }
    if (c !== 37) {
      s += p[i];
      continue;
    }
    const b = escapeAt(p, i, len);
    if (b < 0) return { error: `malformed percent-escape at offset ${i} of the path` };
    if (b === 0) return { error: 'the path holds %00' };
    if (b >= 0x80) {
      // a UTF-8 sequence, every byte escaped: validated, kept escaped (upper-case hex)
      const n = utf8Shape(b);
      if (n < 0) return { error: `invalid UTF-8 in the path (byte 0x${b.toString(16)} at offset ${i})` };
      s += `%${HEX[b >> 4]}${HEX[b & 15]}`;
      for (let k = 1; k <= n; k++) {
        const j = i + 3 * k;
        const cb = escapeAt(p, j, len);
        if (cb < 0 || (k === 1 ? !firstContinuationOk(b, cb) : cb < 0x80 || cb > 0xbf)) {
          return {
            error: `invalid UTF-8 in the path (overlong, surrogate or truncated sequence at offset ${i})`,
          };
        }
        s += `%${HEX[cb >> 4]}${HEX[cb & 15]}`;
      }
      i += 3 * n + 2;
      continue;
    }
    if (b === 0x2f || b === 0x5c) {
      if (action === 'REJECT_REQUEST') return { error: 'the path holds an escaped slash (%2F or %5C)' };
      if (action === 'KEEP_UNCHANGED') {
        s += base ? `%${HEX[b >> 4]}${HEX[b & 15]}` : p.slice(i, i + 3);
      } else {
        if (action === 'UNESCAPE_AND_REDIRECT') out.redirect = true;
        s += b === 0x2f || base ? '/' : '\\';
      }
      i += 2;
      continue;
    }
    if (base && isUnreserved(b)) s += String.fromCharCode(b);
    else s += base ? `%${HEX[b >> 4]}${HEX[b & 15]}` : p.slice(i, i + 3);
    i += 2;
  }
  if (!base) return s;
  const n = options.normalization;
  return removeDotSegments(s, n === 'MERGE_SLASHES' || n === 'DECODE_AND_MERGE_SLASHES');
}

/** RFC 3986 §5.2.4 on a path starting with `/`; then, when asked, runs of `/` merged. */
function removeDotSegments(path: string, merge: boolean): string {
  const segs = path.split('/');
  const out: string[] = [];
  const last = segs.length - 1;
  for (let i = 1; i <= last; i++) {
    const seg = segs[i] as string;
    if (seg === '.' || seg === '..') {
      if (seg === '..' && out.length > 0) out.pop();
      if (i === last) out.push('');
      continue;
    }
    out.push(seg);
  }
  if (merge) {
    let w = 0;
    for (let i = 0; i < out.length; i++) {
      const seg = out[i] as string;
      if (seg !== '' || i === out.length - 1) out[w++] = seg;
    }
    out.length = w;
  }
  return `/${out.join('/')}`;
}
