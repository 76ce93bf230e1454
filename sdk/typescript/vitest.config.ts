import { defineConfig } from 'vitest/config';

// Each test file starts its own dgidgi server (a process on port 0), so files run in
// parallel; hook tests run in jsdom (set per file).
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
