/**
 * A real `dgidgi` server for the SDK's tests: the binary cargo built (`DGIDGI_BIN`, else
 * the workspace's `target/debug/dgidgi`), on 127.0.0.1 port 0, on a fresh SQLite file,
 * with its LLM provider pointed at a fake OpenAI-compatible server started here.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

import { FakeLlm } from './fake-llm.js';

export function binary(): string {
  const bin =
    process.env.DGIDGI_BIN ??
    join(process.env.CARGO_TARGET_DIR ?? resolve(__dirname, '../../../target'), 'debug', 'dgidgi');
  if (!existsSync(bin)) {
    throw new Error(`no dgidgi binary at ${bin}: run \`cargo build\` first, or set DGIDGI_BIN`);
  }
  return bin;
}

export interface Tenant {
  id: string;
  key: string;
}

export class TestServer {
  private constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
    /** `http://127.0.0.1:PORT` */
    readonly origin: string,
    readonly operator: string,
    readonly llm: FakeLlm,
    readonly log: string[],
  ) {}

  /** The API's base URL, `/api/v1` included. */
  get api(): string {
    return `${this.origin}/api/v1`;
  }

  static async start(env: Record<string, string> = {}): Promise<TestServer> {
    const llm = await FakeLlm.start();
    const dir = mkdtempSync(join(tmpdir(), 'dgidgi-sdk-'));
    const child = spawn(binary(), [], {
      env: {
        PATH: process.env.PATH ?? '',
        RUST_LOG: 'info',
        DGIDGI__DATABASE__URL: `sqlite://${dir}/dgidgi.db`,
        DGIDGI__SERVER__PORT: '0',
        DGIDGI__STORAGE__PLATFORM_ROOT: join(dir, 'storage'),
        DGIDGI__PROVIDERS__FAKE__KIND: 'openai',
        DGIDGI__PROVIDERS__FAKE__BASE_URL: llm.baseURL,
        DGIDGI__PROVIDERS__FAKE__MODEL: 'fake-model',
        DGIDGI__LLM__DEFAULT_PROVIDER: 'fake',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const log: string[] = [];
    const port = new Promise<number>((found, fail) => {
      createInterface({ input: child.stderr! }).on('line', (line) => {
        log.push(line);
        const m = /port[=":]+(\d+)/.exec(line);
        if (m) found(Number(m[1]));
      });
      child.on('exit', (code) => fail(new Error(`dgidgi exited (${code}):\n${log.join('\n')}`)));
    });
    const operator = new Promise<string>((found) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (line.startsWith('chy_op_')) found(line.trim());
      });
    });
    const origin = `http://127.0.0.1:${await port}`;
    return new TestServer(child, dir, origin, await operator, llm, log);
  }

  /** A call to the API as `key`, outside the SDK (set-up only): the envelope's data. */
  async call<T = Record<string, unknown>>(method: string, path: string, key: string, body?: unknown): Promise<T> {
    const res = await fetch(`${this.api}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = (await res.json()) as { data: T };
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json.data;
  }

  /** A new tenant on `plan`, and its first key. */
  async tenant(name: string, plan = 'growth'): Promise<Tenant> {
    const t = await this.call<{ id: string; api_key: { key: string } }>('POST', '/tenants', this.operator, {
      name,
      plan,
    });
    return { id: t.id, key: t.api_key.key };
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r));
      this.child.kill('SIGKILL');
      await exited;
    }
    await this.llm.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
