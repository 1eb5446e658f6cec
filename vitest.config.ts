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
  },
});
