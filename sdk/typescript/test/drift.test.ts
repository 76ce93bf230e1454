// The committed types are what openapi-typescript makes of the running server's OpenAPI
// document: the SDK never drifts from the contract.
import { readFileSync } from 'node:fs';

import { afterAll, beforeAll, expect, it } from 'vitest';

// @ts-expect-error: a plain ESM script, without declarations
import { render, TARGET } from '../scripts/generate.mjs';
import { TestServer } from './server.js';

let server: TestServer;

beforeAll(async () => {
  server = await TestServer.start();
});

afterAll(async () => {
  await server?.stop();
});

it('src/generated/api.ts matches the server (else: npm run generate)', async () => {
  const document = await (await fetch(`${server.origin}/api/v1/openapi.json`)).json();
  const fresh: string = await render(document);
  const committed = readFileSync(TARGET as string, 'utf8');
  expect(committed === fresh, 'src/generated/api.ts is stale: run `npm run generate` against a server').toBe(true);
});
