import { defineConfig } from 'vitest/config';

// `scripts/test-dependency-floors.sh` runs test files against the lowest version of a dependency
// meshlet declares (installed under .tmp/): MESHLET_TEST_ALIAS maps package names to those copies.
const alias = process.env.MESHLET_TEST_ALIAS
  ? (JSON.parse(process.env.MESHLET_TEST_ALIAS) as Record<string, string>)
  : {};

export default defineConfig({
  resolve: { conditions: ['meshlet-source'], alias },
  ssr: { resolve: { conditions: ['meshlet-source'] } },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 20_000,
    pool: 'forks',
    restoreMocks: true,
    // The meshes tests make log to the console by default (consoleLogger): their breaker, ejection
    // and discovery lines are the point of some tests but noise in the run's output.
    onConsoleLog: (log) => !log.startsWith('meshlet '),
  },
});
