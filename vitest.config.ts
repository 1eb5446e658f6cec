import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: { conditions: ['meshlet-source'] },
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
