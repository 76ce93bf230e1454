// @vitest-environment jsdom
// The React hooks in jsdom, with React Testing Library, against the real server.
import { act, cleanup, configure, renderHook, waitFor } from '@testing-library/react';
import type { ReactNode } from 'react';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { DgiDgi } from '../src/index.js';
import { DgiDgiProvider, useAgents, useChat, useProjects, useRun, useStreamingChat } from '../src/react.js';
import { TestServer, type Tenant } from './server.js';

// waitFor polls until what it waits for happens; under load (CI runs this beside the Rust
// suite on two cores) a refetch can take longer than the 1 s it allows by default.
configure({ asyncUtilTimeout: 15_000 });

let server: TestServer;
let tenant: Tenant;
let client: DgiDgi;
let project: string;

beforeAll(async () => {
  server = await TestServer.start();
  tenant = await server.tenant('Hooks');
  client = new DgiDgi({ baseURL: server.api, apiKey: tenant.key });
  project = (await client.projects.create({ name: 'hooks' })).id;
});

afterEach(() => cleanup());

afterAll(async () => {
  await server?.stop();
});

const wrapper = ({ children }: { children: ReactNode }) => <DgiDgiProvider client={client}>{children}</DgiDgiProvider>;

const pieces = Array.from({ length: 12 }, (_, i) => `t${i} `);

describe('useProjects', () => {
  it('lists, and a create through its actions shows in the list', async () => {
    const { result } = renderHook(() => useProjects(), { wrapper });
    await waitFor(() => expect(result.current.isLoading).toBe(false));
    expect(result.current.projects.map((p) => p.id)).toContain(project);
    await act(() => result.current.actions.create.mutateAsync({ name: 'New Project' }));
    await waitFor(() => expect(result.current.projects.map((p) => p.name)).toContain('New Project'));
    const made = result.current.projects.find((p) => p.name === 'New Project')!;
    await act(() => result.current.actions.update.mutateAsync({ id: made.id, name: 'Renamed' }));
    await waitFor(() => expect(result.current.projects.map((p) => p.name)).toContain('Renamed'));
    await act(() => result.current.actions.remove.mutateAsync(made.id));
    await waitFor(() => expect(result.current.projects.map((p) => p.id)).not.toContain(made.id));
    expect(result.current.error).toBeNull();
  });
});

describe('useAgents and useRun', () => {
  it('executes an agent and follows the run live to its output', async () => {
    const agents = renderHook(() => useAgents(), { wrapper });
    const agent = await act(() => agents.result.current.actions.create.mutateAsync({ name: 'Live' }));
    await waitFor(() => expect(agents.result.current.agents.map((a) => a.id)).toContain(agent.id));
    server.llm.push({ pieces, pace: 30 });
    const queued = await act(() =>
      agents.result.current.actions.execute.mutateAsync({ id: agent.id, goal: 'count', projectId: project, wait: false }),
    );
    const statuses = new Set<string | undefined>();
    const { result } = renderHook(
      () => {
        const run = useRun(agent.id, queued.id);
        statuses.add(run.status);
        return run;
      },
      { wrapper },
    );
    await waitFor(() => expect(result.current.status).toBe('completed'), { timeout: 10_000 });
    expect(result.current.output).toBe(pieces.join(''));
    expect(statuses.has('running')).toBe(true);
  });
});

describe('useStreamingChat', () => {
  it('grows the text token by token, and re-renders far less often than tokens come', async () => {
    const session = await client.chat.createSession({ projectId: project });
    server.llm.push({ pieces, pace: 80 });
    const texts: string[] = [];
    const { result } = renderHook(
      () => {
        const chat = useStreamingChat();
        if (texts.at(-1) !== chat.currentText) texts.push(chat.currentText);
        return chat;
      },
      { wrapper },
    );
    let done: Promise<unknown> | undefined;
    act(() => {
      done = result.current.streamMessage({ sessionId: session.id, content: 'Count', projectId: project });
    });
    await waitFor(() => expect(result.current.isStreaming).toBe(true));
    // Wait outside act, so that React renders as the text comes (act batches till its end).
    await waitFor(() => expect(result.current.isStreaming).toBe(false), { timeout: 10_000, interval: 10 });
    const final = await done;
    expect(result.current.currentText).toBe(pieces.join(''));
    expect((final as { status: string }).status).toBe('complete');
    // The text grew in steps, each a longer prefix of the answer.
    const grown = texts.filter((t) => t.length > 0);
    expect(grown.length).toBeGreaterThanOrEqual(3);
    for (const [i, t] of grown.entries()) {
      expect(pieces.join('').startsWith(t)).toBe(true);
      if (i > 0) expect(t.length).toBeGreaterThan(grown[i - 1]!.length);
    }

    // A fast stream: 300 tokens 5 ms apart, rendered every 50 ms at most (not per token).
    const fast = Array.from({ length: 300 }, (_, i) => `f${i} `);
    server.llm.push({ pieces: fast, pace: 5 });
    let renders = 0;
    const counted = renderHook(
      () => {
        renders++;
        return useStreamingChat();
      },
      { wrapper },
    );
    act(() => {
      done = counted.result.current.streamMessage({ sessionId: session.id, content: 'Fast' });
    });
    await waitFor(() => expect(counted.result.current.isStreaming).toBe(true));
    const before = renders;
    const started = Date.now();
    await waitFor(() => expect(counted.result.current.isStreaming).toBe(false), { timeout: 20_000, interval: 5 });
    await done;
    const elapsed = Date.now() - started;
    expect(counted.result.current.currentText).toBe(fast.join(''));
    // One render per 50 ms window at most, plus the session id, the final text and the
    // end of streaming (and a little slack); unthrottled it would be one per token.
    expect(renders - before).toBeLessThanOrEqual(Math.ceil(elapsed / 50) + 6);
    expect(renders - before).toBeLessThan(fast.length / 2);
  });

  it('cancelStream stops the reply through the API and keeps its partial text', async () => {
    const session = await client.chat.createSession({ projectId: project });
    const slow = Array.from({ length: 100 }, (_, i) => `s${i} `);
    server.llm.push({ pieces: slow, pace: 50 });
    const { result } = renderHook(() => useStreamingChat({ throttleMs: 20 }), { wrapper });
    let done: Promise<unknown> | undefined;
    act(() => {
      done = result.current.streamMessage({ sessionId: session.id, content: 'Go on' });
    });
    await waitFor(() => expect(result.current.currentText.length).toBeGreaterThan(6));
    await act(() => result.current.cancelStream());
    const final = (await act(() => done!)) as { status: string; content: string };
    expect(result.current.isStreaming).toBe(false);
    expect(final.status).toBe('cancelled');
    expect(final.content.length).toBeLessThan(slow.join('').length);
    expect(result.current.currentText).toBe(final.content);
    const stored = await client.chat.listMessages(session.id);
    expect(stored.data[0]?.status).toBe('cancelled');
  });
});

describe('useChat', () => {
  it('shows the history, then live messages and the reply as it streams', async () => {
    const session = await client.chat.createSession({ projectId: project });
    server.llm.push({ pieces: ['Earlier', ' answer'] });
    for await (const _ of client.chat.streamMessage(session.id, { content: 'Earlier question' })) {
      // The first exchange, before the hook mounts.
    }
    const { result } = renderHook(() => useChat(session.id), { wrapper });
    await waitFor(() => expect(result.current.messages.map((m) => m.content)).toEqual(['Earlier question', 'Earlier answer']));
    server.llm.push({ pieces, pace: 40 });
    await act(() => result.current.sendMessage('Next question'));
    await waitFor(() => expect(result.current.reply?.text.length ?? 0).toBeGreaterThan(0));
    await waitFor(() => expect(result.current.messages.at(-1)?.content).toBe(pieces.join('')), { timeout: 10_000 });
    expect(result.current.messages.map((m) => m.content)).toEqual([
      'Earlier question',
      'Earlier answer',
      'Next question',
      pieces.join(''),
    ]);
    expect(result.current.reply).toBeNull();
  });
});
