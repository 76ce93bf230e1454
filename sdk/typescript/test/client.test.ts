// The client against a real dgidgi server: every namespace's methods, pagination, the
// API's errors, retries, token renewal and aborts.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  agents,
  createClient,
  DgiDgi,
  DgiDgiAbortError,
  DgiDgiConnectionError,
  DgiDgiError,
  DgiDgiTimeoutError,
  projects,
  ROUTES,
} from '../src/index.js';
import { TestServer, type Tenant } from './server.js';

let server: TestServer;
let tenant: Tenant;

beforeAll(async () => {
  server = await TestServer.start({
    DGIDGI__AUTH__JWT_TTL_SECS: '3',
    DGIDGI__RATE_LIMIT__WINDOW_SECS: '2',
    DGIDGI__PLANS__FREE__RATE_LIMIT__PER_KEY: '3',
    DGIDGI__OUTBOUND__ALLOW_PRIVATE_TARGETS: 'true',
  });
  tenant = await server.tenant('Acme');
});

afterAll(async () => {
  await server?.stop();
});

/** The error `promise` fails with (the test fails if it succeeds). */
async function failure(promise: PromiseLike<unknown>): Promise<DgiDgiError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(DgiDgiError);
    return err as DgiDgiError;
  }
  throw new Error('expected a failure, got a success');
}

/** A client for `key` whose requests are counted by path. */
function counted(key: string, options: Partial<ConstructorParameters<typeof DgiDgi>[0]> = {}) {
  const seen: { method: string; path: string; status: number; auth: string | null }[] = [];
  const client = new DgiDgi({
    baseURL: server.api,
    apiKey: key,
    ...options,
    fetch: async (input, init) => {
      const res = await fetch(input, init);
      const url = new URL(String(input));
      const headers = new Headers(init?.headers);
      seen.push({ method: init?.method ?? 'GET', path: url.pathname, status: res.status, auth: headers.get('authorization') });
      return res;
    },
  });
  return { client, seen };
}

describe('the seed examples', () => {
  it('create a project, list it, execute an agent and print run.output', async () => {
    createClient({ baseURL: server.api, apiKey: tenant.key });
    const project = await projects.create({
      name: 'My AI App',
      description: 'An AI-powered application',
      language: 'TypeScript',
    });
    expect(project.id).toMatch(/^proj_/);
    const { data } = await projects.list();
    expect(data.map((p) => p.id)).toContain(project.id);

    const agent = await agents.create({
      name: 'Code Generator',
      systemPrompt: 'You are a helpful coding assistant',
      config: { autonomyLevel: 'medium' },
    });
    server.llm.push({ pieces: ['export ', 'function ', 'Login() {}'] });
    const run = await agents.execute(agent.id, { goal: 'Create a React login component', projectId: project.id });
    expect(run.status).toBe('completed');
    expect(run.output).toBe('export function Login() {}');
  });
});

describe('every namespace', () => {
  it('projects: list, create, get, update, delete', async () => {
    const { client } = counted(tenant.key);
    const made = await client.projects.create({ name: 'crud' });
    expect((await client.projects.get(made.id)).name).toBe('crud');
    const changed = await client.projects.update(made.id, { name: 'renamed', description: 'now described' });
    expect(changed.name).toBe('renamed');
    expect(changed.description).toBe('now described');
    await client.projects.delete(made.id);
    const gone = await failure(client.projects.get(made.id));
    expect(gone.status).toBe(404);
    expect(gone.code).toBe('RESOURCE_NOT_FOUND');
    expect(gone.requestId).toBeTruthy();
  });

  it('agents and runs: execute without waiting, stream, get, list, cancel', async () => {
    const { client } = counted(tenant.key);
    const project = await client.projects.create({ name: 'runs' });
    const agent = await client.agents.create({ name: 'Runner', systemPrompt: 'Be brief' });
    expect((await client.agents.get(agent.id)).name).toBe('Runner');
    expect((await client.agents.update(agent.id, { name: 'Runner 2' })).name).toBe('Runner 2');
    expect((await client.agents.list()).data.map((a) => a.id)).toContain(agent.id);

    server.llm.push({ pieces: ['one ', 'two ', 'three'], pace: 20 });
    const queued = await client.agents.execute(agent.id, { goal: 'count', projectId: project.id, wait: false });
    expect(['queued', 'running']).toContain(queued.status);
    const events = [];
    for await (const event of client.runs.stream(agent.id, queued.id, { lastEventId: 0 })) events.push(event);
    expect(events[0]?.event).toBe('run.started');
    expect(events.at(-1)?.event).toBe('run.completed');
    expect(events.map((e) => e.id)).toEqual(events.map((_, i) => i + 1));
    const tokens = events.flatMap((e) => (e.event === 'token' ? [e.data.delta] : []));
    expect(tokens.join('')).toBe('one two three');
    const done = await client.runs.get(agent.id, queued.id);
    expect(done.output).toBe('one two three');
    expect((await client.runs.list(agent.id)).data.map((r) => r.id)).toContain(queued.id);

    server.llm.push({ pieces: Array(200).fill('slow '), pace: 50 });
    const long = await client.agents.execute(agent.id, { goal: 'go on', projectId: project.id, wait: false });
    // Cancelled once it streams, so that its scripted answer is taken (not left to the
    // next test's request).
    for await (const event of client.runs.stream(agent.id, long.id)) {
      if (event.event === 'token') break;
    }
    const cancelled = await client.runs.cancel(agent.id, long.id);
    expect(cancelled.status).toBe('cancelled');
    await client.agents.delete(agent.id);
    expect((await failure(client.agents.get(agent.id))).status).toBe(404);
  });

  it('chat: sessions, messages, a streamed reply, history, cancel', async () => {
    const { client } = counted(tenant.key);
    const project = await client.projects.create({ name: 'chat' });
    const session = await client.chat.createSession({ projectId: project.id, title: 'Support' });
    expect((await client.chat.getSession(session.id)).title).toBe('Support');
    expect((await client.chat.listSessions()).data.map((s) => s.id)).toContain(session.id);

    server.llm.push({ pieces: ['Hi', ' there', '!'], pace: 10 });
    const reply = client.chat.streamMessage(session.id, { content: 'Hello!' });
    const seen = [];
    for await (const event of reply) seen.push(event);
    const posted = await reply.posted;
    expect(posted.message.content).toBe('Hello!');
    expect(seen[0]?.event).toBe('reply.started');
    expect(seen.at(-1)?.event).toBe('reply.completed');
    const end = seen.at(-1)!;
    expect(end.event === 'reply.completed' && end.data.message.content).toBe('Hi there!');

    const history = await client.chat.listMessages(session.id);
    expect(history.data.map((m) => m.content)).toEqual(['Hi there!', 'Hello!']);

    server.llm.push({ pieces: Array(200).fill('long '), pace: 50 });
    const second = client.chat.streamMessage(session.id, { content: 'Tell me everything' });
    const events: string[] = [];
    for await (const event of second) {
      events.push(event.event);
      if (event.event === 'token' && events.filter((e) => e === 'token').length === 2) {
        await client.chat.cancel(session.id);
      }
    }
    expect(events.at(-1)).toBe('reply.cancelled');
    await client.chat.deleteSession(session.id);
    expect((await failure(client.chat.getSession(session.id))).status).toBe(404);
  });

  it('tenants, users and api keys', async () => {
    const operator = new DgiDgi({ baseURL: server.api, apiKey: server.operator });
    const made = await operator.tenants.create({ name: 'Globex', plan: 'starter' });
    expect(made.api_key.key).toMatch(/^chy_/);
    expect((await operator.tenants.get(made.id)).name).toBe('Globex');
    const ids = [];
    for await (const t of operator.tenants.list({ limit: 1 })) ids.push(t.id);
    expect(ids).toContain(made.id);
    const settings = await operator.tenants.updateSettings(made.id, { timezone: 'Europe/Paris' });
    expect(settings.settings.timezone).toBe('Europe/Paris');

    const globex = new DgiDgi({ baseURL: server.api, apiKey: made.api_key.key });
    const user = await globex.users.create({ email: 'ada@example.com', name: 'Ada', role: 'admin' });
    expect((await globex.users.list()).data.map((u) => u.id)).toEqual([user.id]);
    const key = await globex.apiKeys.create({ name: 'ci', type: 'ci', scopes: ['projects:read'] });
    expect(key.key).toMatch(/^chy_ci_/);
    expect((await globex.apiKeys.list()).data.map((k) => k.id)).toContain(key.id);
    await globex.apiKeys.revoke(key.id);
    const revoked = new DgiDgi({ baseURL: server.api, apiKey: key.key });
    expect((await failure(revoked.projects.list())).status).toBe(401);
  });

  it('webhooks: endpoints, a test delivery, deliveries, redelivery, secret rotation', async () => {
    const received: string[] = [];
    const receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        received.push(body);
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
    try {
      const { client } = counted(tenant.key);
      const endpoint = await client.webhooks.create({ url, events: ['project.created'], secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' });
      expect((await client.webhooks.get(endpoint.id)).url).toBe(url);
      expect((await client.webhooks.list()).data.map((e) => e.id)).toContain(endpoint.id);
      const updated = await client.webhooks.update(endpoint.id, { events: ['project.created', 'project.deleted'] });
      expect(updated.events).toEqual(['project.created', 'project.deleted']);
      await client.webhooks.test(endpoint.id);
      let deliveries = (await client.webhooks.listDeliveries(endpoint.id)).data;
      for (let i = 0; i < 100 && !deliveries.some((d) => d.status === 'delivered'); i++) {
        await new Promise((r) => setTimeout(r, 100));
        deliveries = (await client.webhooks.listDeliveries(endpoint.id)).data;
      }
      expect(deliveries.some((d) => d.status === 'delivered')).toBe(true);
      await client.webhooks.redeliver(endpoint.id, deliveries[0]!.id);
      const rotated = await client.webhooks.rotateSecret(endpoint.id);
      expect(rotated.secret).toMatch(/^whsec_/);
      await client.webhooks.delete(endpoint.id);
      expect((await failure(client.webhooks.get(endpoint.id))).status).toBe(404);
      expect(received.length).toBeGreaterThan(0);
    } finally {
      receiver.closeAllConnections();
      receiver.close();
    }
  });

  it('regions, storage, features, routing info and the operators\' actor tree', async () => {
    const { client } = counted(tenant.key);
    const regions = await client.regions.list();
    expect(regions.map((r) => r.id)).toContain('eu-west');
    const prefs = await client.regions.updatePreferences(tenant.id, { primaryRegion: 'eu-west', complianceLevel: 'gdpr' });
    expect(prefs.primaryRegion).toBe('eu-west');
    expect((await client.regions.getPreferences(tenant.id)).primaryRegion).toBe('eu-west');
    const storage = await client.regions.updateStorage(tenant.id, { storageMode: 'platform', platformRegion: 'eu-west' });
    expect(storage.storageMode).toBe('platform');
    expect((await client.regions.getStorage(tenant.id)).storageMode).toBe('platform');
    const validation = await client.regions.validateStorage(tenant.id);
    expect(validation.valid).toBe(true);
    expect((await client.regions.checkFeature(tenant.id, 'byos')).allowed).toBe(true);
    // The contract leaves routing-info's shape open (a JSON object).
    expect(((await client.regions.routingInfo()) as { nodes: unknown[] }).nodes.length).toBe(1);

    const operator = new DgiDgi({ baseURL: server.api, apiKey: server.operator });
    const tree = await operator.ops.actors();
    expect(tree.nodes.length).toBe(1);
    const controller = new AbortController();
    for await (const event of operator.ops.streamActors({ signal: controller.signal })) {
      expect(event.data.nodes.length).toBe(1);
      controller.abort();
    }
  });

  it('mcpServers: a server that does not answer is refused and nothing is registered', async () => {
    const { client } = counted(tenant.key);
    const refused = await failure(
      client.mcpServers.create({ name: 'nobody', url: 'http://127.0.0.1:9/mcp', headers: { 'X-Token': 'kept-secret' } }),
    );
    expect(refused.status).toBe(400);
    expect(refused.code).toBe('VALIDATION_ERROR');
    expect(refused.message).toContain('did not list its tools');
    expect(JSON.stringify(refused)).not.toContain('kept-secret');
    const listed = await client.mcpServers.list();
    expect(listed.data).toEqual([]);
    const missing = await failure(client.mcpServers.tools('mcp_00000000000000000000000000000000'));
    expect(missing.status).toBe(404);
  });

  it('has a method for every route the server documents, and no other', async () => {
    const doc = (await (await fetch(`${server.origin}/api/v1/openapi.json`)).json()) as {
      paths: Record<string, Record<string, unknown>>;
    };
    const served = Object.entries(doc.paths)
      // The OpenAPI document itself is the contract, not a resource of it.
      .filter(([path]) => path.startsWith('/api/v1/') && path !== '/api/v1/openapi.json')
      .flatMap(([path, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${path.slice('/api/v1'.length)}`))
      .sort();
    const covered = Object.values(ROUTES)
      .map(([method, path]) => `${method} ${path}`)
      .sort();
    expect(covered).toEqual(served);
  });
});

describe('pagination', () => {
  it('pages with nextCursor, and iterates every item of every page', async () => {
    const other = await server.tenant('Paged');
    const client = new DgiDgi({ baseURL: server.api, apiKey: other.key });
    const names = ['p1', 'p2', 'p3', 'p4', 'p5'];
    for (const name of names) await client.projects.create({ name });
    const first = await client.projects.list({ limit: 2 });
    expect(first.data.map((p) => p.name)).toEqual(['p5', 'p4']);
    expect(first.nextCursor).toBeTruthy();
    const second = await client.projects.list({ limit: 2, cursor: first.nextCursor! });
    expect(second.data.map((p) => p.name)).toEqual(['p3', 'p2']);
    const all = [];
    for await (const project of client.projects.list({ limit: 2 })) all.push(project.name);
    expect(all).toEqual([...names].reverse());
    const last = await (await second.nextPage())!;
    expect(last.data.map((p) => p.name)).toEqual(['p1']);
    expect(last.nextCursor).toBeNull();
    expect(await last.nextPage()).toBeNull();
  });
});

describe('errors', () => {
  it('400 names the field, 403 the missing scope, 404 the resource', async () => {
    const { client } = counted(tenant.key);
    const bad = await failure(client.projects.list({ limit: 1000 }));
    expect(bad.status).toBe(400);
    expect(bad.code).toBe('VALIDATION_ERROR');
    expect(bad.details.field).toBe('limit');

    const invalid = await failure(client.projects.create({ name: '' }));
    expect(invalid.status).toBe(400);
    expect(invalid.details.field).toBe('name');

    const reader = await client.apiKeys.create({ name: 'reader', type: 'sdk', scopes: ['projects:read'] });
    const narrow = new DgiDgi({ baseURL: server.api, apiKey: reader.key });
    const refused = await failure(narrow.projects.create({ name: 'nope' }));
    expect(refused.status).toBe(403);
    expect(refused.code).toBe('FORBIDDEN');

    const missing = await failure(client.agents.get('agent_nothing'));
    expect(missing.status).toBe(404);
    expect(missing.code).toBe('RESOURCE_NOT_FOUND');
  });

  it('429 is an error without retries, and waits Retry-After with them', async () => {
    const limited = await server.tenant('Limited', 'free');
    const { client: strict, seen } = counted(limited.key, { maxRetries: 0 });
    let refused: DgiDgiError | undefined;
    for (let i = 0; i < 10 && !refused; i++) {
      refused = await strict.projects.list().then(
        () => undefined,
        (e: unknown) => e as DgiDgiError,
      );
    }
    expect(refused?.status).toBe(429);
    expect(refused?.code).toBe('RATE_LIMIT_EXCEEDED');
    expect(Number(refused?.headers?.get('retry-after'))).toBeGreaterThan(0);

    const { client: patient, seen: retried } = counted(limited.key, { maxRetries: 2 });
    const started = Date.now();
    const page = await patient.projects.list();
    expect(page.data).toEqual([]);
    const statuses = retried.filter((r) => r.path.endsWith('/projects')).map((r) => r.status);
    expect(statuses[0]).toBe(429);
    expect(statuses.at(-1)).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(500);
    expect(seen.length).toBeGreaterThan(0);
  });

  it('a POST is retried with one Idempotency-Key, so it happens once', async () => {
    let posts = 0;
    const keys: string[] = [];
    const flaky = new DgiDgi({
      baseURL: server.api,
      apiKey: tenant.key,
      fetch: async (input, init) => {
        const headers = new Headers(init?.headers);
        if (init?.method === 'POST' && String(input).endsWith('/projects')) {
          keys.push(headers.get('idempotency-key') ?? '');
          const res = await fetch(input, init);
          // The first answer is lost on its way back: the SDK sees a network failure.
          if (posts++ === 0) throw new TypeError('fetch failed');
          return res;
        }
        return fetch(input, init);
      },
    });
    const made = await flaky.projects.create({ name: 'once' });
    expect(keys).toHaveLength(2);
    expect(keys[0]).toBe(keys[1]);
    const all = [];
    for await (const p of flaky.projects.list({ limit: 100 })) if (p.name === 'once') all.push(p.id);
    expect(all).toEqual([made.id]);
  });

  it('network failures and timeouts are their own errors', async () => {
    const nowhere = new DgiDgi({ baseURL: 'http://127.0.0.1:9/api/v1', apiKey: tenant.key, maxRetries: 1 });
    const down = await nowhere.projects.list().then(() => undefined, (e: unknown) => e);
    expect(down).toBeInstanceOf(DgiDgiConnectionError);
    expect(down).toBeInstanceOf(DgiDgiError);

    const silent = createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const slow = new DgiDgi({
        baseURL: `http://127.0.0.1:${(silent.address() as AddressInfo).port}/api/v1`,
        getToken: () => 'not-used',
        timeout: 200,
        maxRetries: 0,
      });
      const timedOut = await slow.projects.list().then(() => undefined, (e: unknown) => e);
      expect(timedOut).toBeInstanceOf(DgiDgiTimeoutError);
    } finally {
      silent.closeAllConnections();
      silent.close();
    }
  });

  it('an AbortSignal ends a call', async () => {
    const { client } = counted(tenant.key);
    const controller = new AbortController();
    controller.abort();
    const aborted = await client.projects.list({}, { signal: controller.signal }).then(() => undefined, (e: unknown) => e);
    expect(aborted).toBeInstanceOf(DgiDgiAbortError);
  });
});

describe('authentication', () => {
  it('mints one token for many waiting requests and renews it before it expires', async () => {
    const { client, seen } = counted(tenant.key);
    await Promise.all(Array.from({ length: 10 }, () => client.projects.list()));
    const mints = () => seen.filter((r) => r.path.endsWith('/auth/token')).length;
    expect(mints()).toBe(1);
    const firstToken = seen.find((r) => r.path.endsWith('/projects'))?.auth;
    expect(firstToken).toMatch(/^Bearer ey/);
    // Tokens live 3 s here: calls over 5 s need renewals, and none is refused.
    const until = Date.now() + 5000;
    while (Date.now() < until) {
      await client.projects.list();
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(mints()).toBeGreaterThanOrEqual(2);
    expect(seen.filter((r) => r.status === 401)).toEqual([]);
    expect(new Set(seen.filter((r) => r.path.endsWith('/projects')).map((r) => r.auth)).size).toBeGreaterThanOrEqual(2);
  });

  it('getToken supplies the token; a 401 asks for a new one and retries once', async () => {
    const { access_token: good } = await new DgiDgi({ baseURL: server.api }).auth.token(tenant.key);
    const handed: string[] = [];
    const client = new DgiDgi({
      baseURL: server.api,
      getToken: async () => {
        const token = handed.length === 0 ? 'expired-or-revoked' : good;
        handed.push(token);
        return token;
      },
    });
    const page = await client.projects.list();
    expect(Array.isArray(page.data)).toBe(true);
    expect(handed).toEqual(['expired-or-revoked', good]);
  });
});
