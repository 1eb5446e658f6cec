import { performance } from 'node:perf_hooks';
import { compileSafeRegex } from '../../../packages/xds/src/index.js';
import type { BenchSuite, BenchSuiteResult } from '../lib.js';

/**
 * `safe_regex` cost (issue 14): compile and full-match time of RE2 (re2js, what meshlet uses)
 * beside V8's backtracking `RegExp` (what it used before) on typical route and header matchers,
 * interleaved, best of several rounds; and the pathological `(a+)+` on a 29-character header with
 * RE2 only (V8 takes seconds there and doubles with each character).
 */
const CASES: ReadonlyArray<readonly [string, string, string]> = [
  ['path', '/api/v[0-9]+/users/[^/]+', '/api/v2/users/12345'],
  ['header-alternation', 'canary|beta|preview', 'beta'],
  ['host-suffix', '.*\\.example\\.com', 'service-a.prod.example.com'],
  [
    'user-agent',
    '.*(Chrome|Firefox)/[0-9]+.*',
    'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36',
  ],
];

function bestNs(rounds: number, n: number, fn: () => void): number {
  let best = Number.POSITIVE_INFINITY;
  for (let r = 0; r < rounds; r++) {
    const t = performance.now();
    for (let i = 0; i < n; i++) fn();
    best = Math.min(best, ((performance.now() - t) * 1e6) / n);
  }
  return best;
}

const round = (x: number) => Math.round(x * 10) / 10;

const suite: BenchSuite = {
  name: 'regex',
  inQuick: true,
  async run({ quick }): Promise<BenchSuiteResult> {
    const rounds = quick ? 3 : 7;
    const matches = quick ? 20_000 : 200_000;
    const compiles = quick ? 200 : 2_000;
    const results: Record<string, unknown> = {};
    const summary: string[] = [];
    for (const [name, pattern, input] of CASES) {
      const re2 = compileSafeRegex(pattern, { maxProgramSize: 1000 });
      const v8 = new RegExp(`^(?:${pattern})$`);
      let sink = 0;
      const re2Match = bestNs(rounds, matches, () => {
        if (re2.test(input)) sink++;
      });
      const v8Match = bestNs(rounds, matches, () => {
        if (v8.test(input)) sink++;
      });
      const re2Compile = bestNs(rounds, compiles, () => {
        if (compileSafeRegex(pattern, { maxProgramSize: 1000 }).programSize > 0) sink++;
      });
      const v8Compile = bestNs(rounds, compiles, () => {
        if (new RegExp(`^(?:${pattern})$`).source.length > 0) sink++;
      });
      if (sink === 0) throw new Error('nothing matched');
      results[name] = {
        programSize: re2.programSize,
        re2MatchNs: round(re2Match),
        v8MatchNs: round(v8Match),
        re2CompileUs: round(re2Compile / 1000),
        v8CompileUs: round(v8Compile / 1000),
      };
      summary.push(
        `${name}: match ${round(re2Match)} ns (RE2) vs ${round(v8Match)} ns (V8), ${round(re2Match / v8Match)}x; compile ${round(re2Compile / 1000)} µs vs ${round(v8Compile / 1000)} µs; program size ${re2.programSize}`,
      );
    }
    const evil = compileSafeRegex('(a+)+');
    const header = `${'a'.repeat(28)}!`;
    const evilNs = bestNs(rounds, quick ? 2_000 : 20_000, () => {
      if (evil.test(header)) throw new Error('matched');
    });
    results.pathological = { pattern: '(a+)+', input: '28 a + !', re2MatchNs: round(evilNs) };
    summary.push(`(a+)+ on 28 a + "!": ${round(evilNs)} ns with RE2 (V8's backtracking engine: seconds)`);
    return { results, summary };
  },
};

export default suite;
