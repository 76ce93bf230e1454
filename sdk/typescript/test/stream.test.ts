// Streams: a connection cut mid-reply resumes with Last-Event-ID and nothing is lost or
// repeated; abort ends a stream cleanly; a finished run's stream ends at once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { DgiDgi, type ChatStreamEvent, type RunStreamEvent } from '../src/index.js';
import { CuttingProxy } from './cutting-proxy.js';
import { TestServer, type Tenant } from './server.js';

let server: TestServer;
let tenant: Tenant;
let project: string;

beforeAll(async () => {
  server = await TestServer.start();
  tenant = await server.tenant('Streams');
  project = (await server.call<{ id: string }>('POST', '/projects', tenant.key, { name: 'streams' })).id;
});

afterAll(async () => {
  await server?.stop();
});

const pieces = Array.from({ length: 30 }, (_, i) => `w${i} `);

describe('a stream cut mid-reply', () => {
  it('resumes a chat reply after the last event seen, with nothing lost or repeated', async () => {
    const proxy = await CuttingProxy.start(server.origin, 6);
    try {
      const client = new DgiDgi({ baseURL: `${proxy.origin}/api/v1`, apiKey: tenant.key });
      const session = await client.chat.createSession({ projectId: project });
      server.llm.push({ pieces, pace: 15 });
      const seen: ChatStreamEvent[] = [];
      for await (const event of client.chat.streamMessage(session.id, { content: 'Count to thirty' })) seen.push(event);
      expect(proxy.cuts).toBe(1);
      // The first connection named no event; the second resumed after the last one it got.
      expect(proxy.resumedFrom[0]).toBeUndefined();
      expect(Number(proxy.resumedFrom[1])).toBeGreaterThanOrEqual(1);
      const ids = seen.map((e) => e.id);
      expect(new Set(ids).size).toBe(ids.length);
      expect(ids).toEqual([...ids].sort((a, b) => a - b));
      expect(ids.at(-1)! - ids[0]! + 1).toBe(ids.length);
      const text = seen.flatMap((e) => (e.event === 'token' ? [e.data.delta] : [])).join('');
      expect(text).toBe(pieces.join(''));
      const end = seen.at(-1)!;
      expect(end.event).toBe('reply.completed');
      expect(end.event === 'reply.completed' && end.data.message.content).toBe(pieces.join(''));
    } finally {
      await proxy.stop();
    }
  });

  it('resumes a run\'s stream the same way', async () => {
    const proxy = await CuttingProxy.start(server.origin, 5);
    try {
      const client = new DgiDgi({ baseURL: `${proxy.origin}/api/v1`, apiKey: tenant.key });
      const agent = await client.agents.create({ name: 'Counter' });
      server.llm.push({ pieces, pace: 15 });
      const run = await client.agents.execute(agent.id, { goal: 'count', projectId: project, wait: false });
      const stream = client.runs.stream(agent.id, run.id, { lastEventId: 0 });
      const seen: RunStreamEvent[] = [];
      for await (const event of stream) seen.push(event);
      expect(stream.reconnects).toBe(1);
      expect(seen.map((e) => e.id)).toEqual(seen.map((_, i) => i + 1));
      expect(seen.at(-1)?.event).toBe('run.completed');
      const text = seen.flatMap((e) => (e.event === 'token' ? [e.data.delta] : [])).join('');
      expect(text).toBe(pieces.join(''));
    } finally {
      await proxy.stop();
    }
  });
});

describe('ending a stream', () => {
  it('abort ends the iteration cleanly, and the reply goes on without its reader', async () => {
    const client = new DgiDgi({ baseURL: server.api, apiKey: tenant.key });
    const session = await client.chat.createSession({ projectId: project });
    server.llm.push({ pieces, pace: 20 });
    const controller = new AbortController();
    const seen: string[] = [];
    for await (const event of client.chat.streamMessage(session.id, { content: 'go' }, { signal: controller.signal })) {
      seen.push(event.event);
      if (seen.filter((e) => e === 'token').length === 3) controller.abort();
    }
    expect(seen.filter((e) => e === 'token')).toHaveLength(3);
    // The reply was not cancelled by the reader leaving: it completes, stored whole.
    let history = await client.chat.listMessages(session.id);
    for (let i = 0; i < 100 && history.data[0]?.status !== 'complete'; i++) {
      await new Promise((r) => setTimeout(r, 50));
      history = await client.chat.listMessages(session.id);
    }
    expect(history.data[0]?.content).toBe(pieces.join(''));
  });

  it('cancel stops the reply, which ends with its partial text', async () => {
    const client = new DgiDgi({ baseURL: server.api, apiKey: tenant.key });
    const session = await client.chat.createSession({ projectId: project });
    server.llm.push({ pieces, pace: 30 });
    let text = '';
    let end: ChatStreamEvent | undefined;
    for await (const event of client.chat.streamMessage(session.id, { content: 'go' })) {
      if (event.event === 'token') {
        text += event.data.delta;
        if (text === 'w0 w1 ') await client.chat.cancel(session.id);
      }
      end = event;
    }
    expect(end?.event).toBe('reply.cancelled');
    const kept = end?.event === 'reply.cancelled' ? end.data.message.content : '';
    expect(kept.startsWith('w0 w1 ')).toBe(true);
    expect(kept.length).toBeLessThan(pieces.join('').length);
  });

  it('a finished run\'s stream replays and ends; resumed at its end it ends at once', async () => {
    const client = new DgiDgi({ baseURL: server.api, apiKey: tenant.key });
    const agent = await client.agents.create({ name: 'Quick' });
    const run = await client.agents.execute(agent.id, { goal: 'hi', projectId: project });
    expect(run.status).toBe('completed');
    const all = [];
    for await (const event of client.runs.stream(agent.id, run.id, { lastEventId: 0 })) all.push(event);
    expect(all.at(-1)?.event).toBe('run.completed');
    const after = [];
    for await (const event of client.runs.stream(agent.id, run.id, { lastEventId: all.at(-1)!.id })) after.push(event);
    expect(after).toEqual([]);
  });
});
