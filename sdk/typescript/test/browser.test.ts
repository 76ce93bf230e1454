// Headless Chromium (Debian's package) runs a page bundled from the SDK, which streams a
// chat reply through useStreamingChat. The page and the API share an origin: this test's
// server serves the page and its token, and forwards /api/ to dgidgi.
import { execFileSync } from 'node:child_process';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';

import { build } from 'esbuild';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';

import { DgiDgi } from '../src/index.js';
import { TestServer, type Tenant } from './server.js';

function findChromium(): string | undefined {
  for (const name of ['chromium', 'chromium-browser']) {
    try {
      return execFileSync('which', [name]).toString().trim() || undefined;
    } catch {
      // not this one
    }
  }
  if (process.env.CI) throw new Error('Chromium is required under CI (.ci/run installs it)');
  console.warn('skipped: no chromium on this machine');
  return undefined;
}

const executable = findChromium();
let server: TestServer;
let tenant: Tenant;
let site: Server;
let origin: string;

beforeAll(async () => {
  if (!executable) return;
  server = await TestServer.start();
  tenant = await server.tenant('Browser');
  const bundle = await build({
    entryPoints: [fileURLToPath(new URL('./browser/page.tsx', import.meta.url))],
    bundle: true,
    write: false,
    format: 'esm',
    jsx: 'automatic',
    define: { 'process.env.NODE_ENV': '"production"' },
  });
  const script = bundle.outputFiles[0]!.text;
  const api = new URL(server.origin);
  site = createServer(async (req, res) => {
    if (req.url === '/') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<!doctype html><div id="root"></div><script type="module" src="/app.js"></script>');
    } else if (req.url === '/app.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(script);
    } else if (req.url === '/token') {
      // The app's backend holds the key and hands the page a short-lived token.
      const { access_token } = await new DgiDgi({ baseURL: server.api }).auth.token(tenant.key);
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(access_token);
    } else if (req.url?.startsWith('/api/')) {
      const out = request(
        { host: api.hostname, port: api.port, path: req.url, method: req.method, headers: req.headers },
        (up) => {
          res.writeHead(up.statusCode ?? 502, up.headers);
          res.flushHeaders();
          up.pipe(res);
        },
      );
      out.on('error', () => res.destroy());
      req.pipe(out);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((r) => site.listen(0, '127.0.0.1', r));
  origin = `http://127.0.0.1:${(site.address() as AddressInfo).port}`;
});

afterAll(async () => {
  site?.closeAllConnections();
  site?.close();
  await server?.stop();
});

it.skipIf(!executable)('a page streams a chat reply through useStreamingChat in Chromium', async () => {
  const client = new DgiDgi({ baseURL: server.api, apiKey: tenant.key });
  const project = await client.projects.create({ name: 'web' });
  const session = await client.chat.createSession({ projectId: project.id });
  const pieces = Array.from({ length: 15 }, (_, i) => `b${i} `);
  server.llm.push({ pieces, pace: 60 });
  const browser = await chromium.launch({ executablePath: executable!, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage();
    const requests: string[] = [];
    page.on('request', (r) => {
      if (r.url().includes('/api/v1/')) requests.push(`${r.method()} ${new URL(r.url()).pathname} ${r.headers().authorization ? 'auth' : 'anonymous'}`);
    });
    await page.goto(`${origin}/#session=${session.id}`);
    await page.click('#send');
    await page.waitForFunction(() => document.getElementById('state')?.textContent === 'streaming');
    const seen = new Set<string>();
    while ((await page.textContent('#state')) === 'streaming') {
      seen.add((await page.textContent('#text')) ?? '');
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(await page.textContent('#error')).toBe('');
    expect(await page.textContent('#text')).toBe(pieces.join(''));
    // The text grew in the page while the reply streamed.
    const partial = [...seen].filter((t) => t.length > 0 && t.length < pieces.join('').length);
    expect(partial.length).toBeGreaterThanOrEqual(2);
    expect(requests).toContain(`GET /api/v1/chat/sessions/${session.id}/stream auth`);
    expect(requests).toContain(`POST /api/v1/chat/sessions/${session.id}/messages auth`);
  } finally {
    await browser.close();
  }
});
