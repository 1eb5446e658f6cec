import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { ErrorCodes, MeshError } from '@meshlet/core';
import { type AdminToken, adminTokenProblem } from './config.js';

/** The realm named in `WWW-Authenticate` challenges. */
const REALM = 'meshlet-admin';

/** How often (at most) a token file is looked at again, so a rotated Secret takes effect. */
const FILE_RECHECK_MS = 1_000;

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** The result of checking a request's `Authorization` header. */
export type AuthResult =
  | { readonly ok: true }
  | { readonly ok: false; readonly challenge: string; readonly message: string };

/**
 * The admin server's bearer token (RFC 6750): a literal from the config, or a file (a mounted
 * Kubernetes Secret) that is looked at again at most once a second while requests come, so a
 * rotated Secret takes effect without a restart. A file that becomes unreadable or invalid keeps
 * the last good token (the server never opens up) and reports why through `onProblem`.
 *
 * Tokens are compared as SHA-256 digests with `timingSafeEqual`: the time taken does not depend on
 * how many leading characters match, nor on the presented token's length.
 */
export class AdminTokenCheck {
  readonly #source: AdminToken;
  readonly #now: () => number;
  readonly #onProblem: (message: string) => void;
  #expected: Buffer;
  #fingerprint = '';
  #checkedAt = 0;
  #lastProblem: string | undefined;

  /** Reads the token; throws `MESHLET_ERR_CONFIG` naming `admin.token(.file)` when it is unusable. */
  constructor(source: AdminToken, onProblem: (message: string) => void, now: () => number = Date.now) {
    this.#source = source;
    this.#now = now;
    this.#onProblem = onProblem;
    if (source.file === undefined) {
      // Checked here too for tokens given in code (`installTelemetry(mesh, { admin: { token } })`).
      const problem = adminTokenProblem(source.value);
      if (problem !== undefined)
        throw new MeshError(ErrorCodes.CONFIG, `admin.token: ${problem}`, { field: 'admin.token' });
      this.#expected = digest(source.value);
      return;
    }
    const read = this.#readFile(source.file);
    if (typeof read === 'string')
      throw new MeshError(ErrorCodes.CONFIG, `admin.token.file: ${read}`, { field: 'admin.token.file' });
    this.#expected = read.digest;
    this.#fingerprint = read.fingerprint;
    this.#checkedAt = now();
  }

  /** The token's digest and the file's fingerprint, or why the file cannot be used. */
  #readFile(file: string): { digest: Buffer; fingerprint: string } | string {
    let text: string;
    let fingerprint: string;
    try {
      const st = statSync(file);
      fingerprint = `${st.mtimeMs}:${st.size}:${st.ino}`;
      if (fingerprint === this.#fingerprint) return { digest: this.#expected, fingerprint };
      text = readFileSync(file, 'utf8');
    } catch (err) {
      return `cannot read ${file}: ${(err as Error).message}`;
    }
    const token = text.trim();
    const problem = adminTokenProblem(token);
    if (problem !== undefined) return `the token in ${file} ${problem}`;
    return { digest: digest(token), fingerprint };
  }

  #refresh(): void {
    const file = this.#source.file;
    if (file === undefined) return;
    const now = this.#now();
    if (now - this.#checkedAt < FILE_RECHECK_MS) return;
    this.#checkedAt = now;
    const read = this.#readFile(file);
    if (typeof read === 'string') {
      if (read !== this.#lastProblem) this.#onProblem(`${read}; keeping the last good token`);
      this.#lastProblem = read;
      return;
    }
    this.#lastProblem = undefined;
    this.#expected = read.digest;
    this.#fingerprint = read.fingerprint;
  }

  /** Checks an `Authorization` header value. */
  check(header: string | undefined): AuthResult {
    this.#refresh();
    if (header === undefined || header.length === 0) {
      return { ok: false, challenge: `Bearer realm="${REALM}"`, message: 'a bearer token is required' };
    }
    const space = header.indexOf(' ');
    if (space < 0 || header.slice(0, space).toLowerCase() !== 'bearer') {
      return {
        ok: false,
        challenge: `Bearer realm="${REALM}"`,
        message: 'a bearer token is required (Authorization: Bearer <token>)',
      };
    }
    const presented = header.slice(space + 1).trim();
    if (!timingSafeEqual(digest(presented), this.#expected)) {
      return {
        ok: false,
        challenge: `Bearer realm="${REALM}", error="invalid_token"`,
        message: 'the bearer token is not valid',
      };
    }
    return { ok: true };
  }
}
