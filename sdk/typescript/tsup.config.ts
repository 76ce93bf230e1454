import { defineConfig } from 'tsup';

// ESM and CommonJS builds with their declarations; React and TanStack Query stay outside
// the bundle (peer dependencies, used only by the `react` entry point).
export default defineConfig({
  entry: { index: 'src/index.ts', react: 'src/react.tsx' },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'es2022',
  external: ['react', '@tanstack/react-query'],
  // One copy of the client's module state (the default client) shared by both entry
  // points, in each format.
  splitting: true,
});
