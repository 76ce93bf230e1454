// `npm pack` makes a package a user can install: its ESM and CommonJS entry points load,
// its declarations type-check a strict consumer, and the seed's CLI example runs against
// the server.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, expect, it } from 'vitest';

import { TestServer } from './server.js';

const root = fileURLToPath(new URL('..', import.meta.url));
let server: TestServer;
let app: string;

beforeAll(async () => {
  server = await TestServer.start();
  app = mkdtempSync(join(tmpdir(), 'dgidgi-sdk-app-'));
  execFileSync('npm', ['pack', '--silent', '--pack-destination', app], { cwd: root, stdio: 'pipe' });
  const tarball = readdirSync(app).find((f) => f.endsWith('.tgz'))!;
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', `./${tarball}`], {
    cwd: app,
    stdio: 'pipe',
  });
}, 180_000);

afterAll(async () => {
  await server?.stop();
  if (app) rmSync(app, { recursive: true, force: true });
});

it('the packed package holds the builds and declarations, and nothing else', () => {
  const listed = execFileSync('tar', ['-tzf', readdirSync(app).find((f) => f.endsWith('.tgz'))!], { cwd: app })
    .toString()
    .split('\n')
    .filter(Boolean);
  for (const file of ['index.js', 'index.cjs', 'index.d.ts', 'index.d.cts', 'react.js', 'react.cjs', 'react.d.ts']) {
    expect(listed).toContain(`package/dist/${file}`);
  }
  expect(listed.filter((f) => f.includes('/src/') || f.includes('/test/'))).toEqual([]);
});

it('the seed\'s CLI example lists projects through the installed package', async () => {
  const tenant = await server.tenant('Cli');
  const project = await server.call<{ id: string }>('POST', '/projects', tenant.key, { name: 'From the CLI' });
  copyFileSync(join(root, 'examples/list-projects.mjs'), join(app, 'list-projects.mjs'));
  const out = execFileSync('node', ['list-projects.mjs'], {
    cwd: app,
    env: { PATH: process.env.PATH, DGIDGI_API_URL: server.api, DGIDGI_API_KEY: tenant.key },
  }).toString();
  expect(out).toBe(`${project.id}\tFrom the CLI\n`);
});

it('CommonJS and ESM consumers load both entry points', () => {
  const cjs = execFileSync(
    'node',
    ['-e', "const s = require('@dgidgi-one/sdk'); console.log(typeof s.createClient, typeof s.projects.list, require.resolve('@dgidgi-one/sdk/react').endsWith('react.cjs'))"],
    { cwd: app },
  ).toString();
  expect(cjs.trim()).toBe('function function true');
  const esm = execFileSync(
    'node',
    ['--input-type=module', '-e', "const s = await import('@dgidgi-one/sdk'); console.log(typeof s.DgiDgi, typeof s.chat.stream)"],
    { cwd: app },
  ).toString();
  expect(esm.trim()).toBe('function function');
});

it('its declarations type-check a strict TypeScript consumer', () => {
  writeFileSync(
    join(app, 'consumer.ts'),
    `import { createClient, projects, agents, DgiDgiError, type Project, type Run } from '@dgidgi-one/sdk';
createClient({ baseURL: 'http://127.0.0.1:1/api/v1', apiKey: 'chy_sdk_x' });
export async function main(): Promise<void> {
  const project: Project = await projects.create({ name: 'My AI App', description: 'An AI-powered application', language: 'TypeScript' });
  const agent = await agents.create({ name: 'Code Generator', systemPrompt: 'You are a helpful coding assistant', config: { autonomyLevel: 'medium' } });
  const run: Run = await agents.execute(agent.id, { goal: 'Create a React login component', projectId: project.id });
  const output: string | null | undefined = run.output;
  console.log(output, (new DgiDgiError({ status: 404, code: 'RESOURCE_NOT_FOUND', message: 'x' })).code);
  // @ts-expect-error: a project has no such field
  console.log(project.nonsense);
}
`,
  );
  const tsc = join(root, 'node_modules/typescript/bin/tsc');
  const args = ['--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--skipLibCheck'];
  try {
    execFileSync('node', [tsc, ...args, 'consumer.ts'], { cwd: app, stdio: 'pipe' });
  } catch (err) {
    throw new Error(`tsc refused the consumer:\n${(err as { stdout: Buffer }).stdout.toString()}`);
  }
});
