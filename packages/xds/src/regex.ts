import { RE2JS } from 're2js';
import { DEFAULT_MAX_PROGRAM_SIZE } from './regex-size.js';

/**
 * Regular expressions from the control plane (`safe_regex`) and from local routing config, with
 * RE2 semantics: matched in time linear in the input (no backtracking, so `(a+)+` against a long
 * header costs microseconds, not seconds of blocked event loop), RE2 syntax only (no
 * backreferences, no lookarounds), and a bound on the compiled program's size like Envoy's
 * `re2.max_program_size.error_level`. The engine is `re2js`, a pure-JavaScript port of RE2 (see
 * docs/security.md for why this one and the measurements).
 *
 * Compiled once, when a resource is translated or config is parsed; the request path only calls
 * `test()`.
 */
export interface SafeRegex {
  /** Whether the whole of `value` matches (Envoy's `safe_regex` is a full match). */
  test(value: string): boolean;
  /** The pattern as given. */
  readonly source: string;
  /** The compiled program's instruction count (RE2's "program size"). */
  readonly programSize: number;
}

export { DEFAULT_MAX_PROGRAM_SIZE };

export interface SafeRegexOptions {
  readonly ignoreCase?: boolean;
  /** Larger programs are rejected (default 100, Envoy's). */
  readonly maxProgramSize?: number;
}

class Re2Regex implements SafeRegex {
  readonly #re: RE2JS;
  readonly source: string;
  readonly programSize: number;

  constructor(re: RE2JS, source: string) {
    this.#re = re;
    this.source = source;
    this.programSize = re.programSize();
  }

  test(value: string): boolean {
    return this.#re.testExact(value);
  }

  toString(): string {
    return this.source;
  }
}

/** A pattern RE2 does not accept, or one over the program-size limit. */
export class SafeRegexError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SafeRegexError';
  }
}

/** Names the Perl/JavaScript construct RE2 refuses, for a clearer message than the parser's. */
function unsupported(text: string): string | undefined {
  if (/\(\?<?[=!]/.test(text)) return 'lookarounds ((?=…), (?!…), (?<=…), (?<!…)) are not RE2 syntax';
  if (/\\[1-9]|\\k</.test(text)) return 'backreferences (\\1, \\k<name>) are not RE2 syntax';
  return undefined;
}

/**
 * Compiles `text` with RE2 semantics. Throws `SafeRegexError` naming what is wrong: RE2 syntax
 * errors (with a plain word for backreferences and lookarounds), or a program larger than
 * `maxProgramSize`.
 */
export function compileSafeRegex(text: string, options: SafeRegexOptions = {}): SafeRegex {
  let re: RE2JS;
  try {
    re = RE2JS.compile(text, options.ignoreCase ? RE2JS.CASE_INSENSITIVE : 0);
  } catch (err) {
    const why = unsupported(text);
    throw new SafeRegexError(
      `invalid regex ${JSON.stringify(text)}: ${why ?? (err as Error).message.replace(/^error parsing regexp: /, '')}`,
    );
  }
  const compiled = new Re2Regex(re, text);
  const max = options.maxProgramSize ?? DEFAULT_MAX_PROGRAM_SIZE;
  if (compiled.programSize > max)
    throw new SafeRegexError(
      `regex ${JSON.stringify(text)} has program size ${compiled.programSize}, over the limit of ${max} (simplify it, or raise the limit: docs/security.md)`,
    );
  return compiled;
}
