/**
 * `@dgidgi-one/sdk/react`: React hooks over the SDK, built on TanStack Query (caching,
 * deduplication, invalidation after mutations). Streams update the UI at most every
 * `throttleMs` (default 50 ms), so a fast stream does not re-render per token.
 *
 *     <DgiDgiProvider client={createClient({ baseURL: '/api/v1', getToken })}>
 *       <App />
 *     </DgiDgiProvider>
 */
import {
  QueryClient,
  QueryClientProvider,
  useMutation,
  useQuery,
  useQueryClient,
  type UseMutationResult,
} from '@tanstack/react-query';
import { createContext, useCallback, useContext, useEffect, useRef, useState, type ReactNode } from 'react';

import {
  DgiDgiError,
  getClient,
  REPLY_ENDS,
  RUN_ENDS,
  type Agent,
  type ChatStreamEvent,
  type DgiDgi,
  type ListParams,
  type Message,
  type Project,
  type ReplyStream,
  type Run,
} from './index.js';

const ClientContext = createContext<DgiDgi | undefined>(undefined);

export interface DgiDgiProviderProps {
  /** The client the hooks use (default: the one `createClient` configured). */
  client?: DgiDgi;
  /** The application's QueryClient, if it has one (default: a new one). */
  queryClient?: QueryClient;
  children?: ReactNode;
}

/** Gives the hooks their client and a TanStack QueryClient. */
export function DgiDgiProvider({ client, queryClient, children }: DgiDgiProviderProps) {
  const [own] = useState(() => queryClient ?? new QueryClient());
  return (
    <ClientContext.Provider value={client}>
      <QueryClientProvider client={queryClient ?? own}>{children}</QueryClientProvider>
    </ClientContext.Provider>
  );
}

/** The client of the nearest `DgiDgiProvider`, else the default one. */
export function useDgiDgi(): DgiDgi {
  return useContext(ClientContext) ?? getClient();
}

/** The query keys the hooks use, to invalidate or prefetch from outside. */
export const queryKeys = {
  all: ['dgidgi'] as const,
  /** A list's first page: `list('projects')`; `['dgidgi', 'projects']` covers every page size. */
  list: (name: 'projects' | 'agents', params?: ListParams) => ['dgidgi', name, params ?? {}] as const,
  run: (agentId: string, runId: string) => ['dgidgi', 'runs', agentId, runId] as const,
  messages: (sessionId: string) => ['dgidgi', 'chat', sessionId, 'messages'] as const,
};

/** A value that changes often (streamed text), rendered at most every `ms`. */
function useThrottled<T>(initial: T, ms: number): [T, (next: T) => void, (next: T) => void] {
  const [shown, setShown] = useState(initial);
  const latest = useRef(initial);
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  useEffect(() => () => clearTimeout(timer.current), []);
  const set = useCallback(
    (next: T) => {
      latest.current = next;
      timer.current ??= setTimeout(() => {
        timer.current = undefined;
        setShown(latest.current);
      }, ms);
    },
    [ms],
  );
  const now = useCallback((next: T) => {
    clearTimeout(timer.current);
    timer.current = undefined;
    latest.current = next;
    setShown(next);
  }, []);
  return [shown, set, now];
}

type Patch<T> = { id: string } & T;

/** What the list hooks need of a namespace. */
interface Listed<T, Create, Update> {
  list(params: ListParams | undefined, options: { signal: AbortSignal }): PromiseLike<{ data: T[] }>;
  create(body: Create): Promise<T>;
  update(id: string, body: Update): Promise<T>;
  delete(id: string): Promise<unknown>;
}

/** A namespace's first page (cached), and create, update and remove that refresh it. */
function useListed<T, Create, Update>(
  name: 'projects' | 'agents', space: Listed<T, Create, Update>, params: ListParams | undefined) {
  const queryClient = useQueryClient();
  const query = useQuery({
    queryKey: queryKeys.list(name, params),
    queryFn: async ({ signal }) => (await space.list(params, { signal })).data,
  });
  const invalidate = () => queryClient.invalidateQueries({ queryKey: ['dgidgi', name] });
  const create = useMutation({ mutationFn: (body: Create) => space.create(body), onSuccess: invalidate });
  const update = useMutation({
    mutationFn: ({ id, ...body }: Patch<Update>) => space.update(id, body as Update),
    onSuccess: invalidate,
  });
  const remove = useMutation({ mutationFn: (id: string) => space.delete(id), onSuccess: invalidate });
  return {
    items: query.data ?? [],
    isLoading: query.isLoading,
    error: query.error as DgiDgiError | null,
    refetch: (): Promise<unknown> => query.refetch(),
    actions: { create, update, remove },
  };
}

/** The tenant's projects (first page), with create, update and remove that refresh the list. */
export function useProjects(params?: ListParams) {
  const { items, ...rest } = useListed('projects', useDgiDgi().projects, params);
  return { projects: items as Project[], ...rest };
}

/** The tenant's agents (first page), with create, update, remove and execute. */
export function useAgents(params?: ListParams) {
  const client = useDgiDgi();
  const { items, actions, ...rest } = useListed('agents', client.agents, params);
  const execute: UseMutationResult<Run, Error, Patch<Parameters<DgiDgi['agents']['execute']>[1]>> = useMutation({
    mutationFn: ({ id, ...body }: Patch<Parameters<DgiDgi['agents']['execute']>[1]>) =>
      client.agents.execute(id, body),
  });
  return { agents: items as Agent[], ...rest, actions: { ...actions, execute } };
}

/** A run, live: its status and output follow its stream until it ends. */
export function useRun(agentId: string | undefined, runId: string | undefined, options: { throttleMs?: number } = {}) {
  const client = useDgiDgi();
  const queryClient = useQueryClient();
  const query = useQuery({
    queryKey: queryKeys.run(agentId ?? '', runId ?? ''),
    queryFn: ({ signal }) => client.runs.get(agentId!, runId!, { signal }) as Promise<Run>,
    enabled: Boolean(agentId && runId),
  });
  const [output, setOutput, setOutputNow] = useThrottled('', options.throttleMs ?? 50);
  const [liveStatus, setLiveStatus] = useState<Run['status'] | undefined>();
  const stored = query.data?.status;
  const live = stored === 'queued' || stored === 'running';
  useEffect(() => {
    if (!agentId || !runId || !live) return;
    const controller = new AbortController();
    let text = '';
    (async () => {
      for await (const event of client.runs.stream(agentId, runId, { signal: controller.signal, lastEventId: 0 })) {
        if (event.event === 'run.started' || event.event === 'step.started') setLiveStatus('running');
        if (event.event === 'step.started') text = '';
        if (event.event === 'token') setOutput((text += event.data.delta));
        if (RUN_ENDS.has(event.event)) {
          setOutputNow(text);
          await queryClient.invalidateQueries({ queryKey: queryKeys.run(agentId, runId) });
        }
      }
    })().catch(() => undefined);
    return () => controller.abort();
  }, [client, queryClient, agentId, runId, live, setOutput, setOutputNow]);
  const run = query.data;
  return {
    run,
    status: live ? (liveStatus ?? stored) : stored,
    /** The final output once the run has ended; until then, the text of the step in progress. */
    output: live ? output : (run?.output ?? ''),
    isLoading: query.isLoading,
    error: query.error as DgiDgiError | null,
  };
}

/** A reply being written. */
export interface LiveReply {
  id: string;
  text: string;
}

/** A chat session: its history and, live, new messages and the reply in flight. */
export function useChat(sessionId: string | undefined, options: { throttleMs?: number } = {}) {
  const client = useDgiDgi();
  const queryClient = useQueryClient();
  const history = useQuery({
    queryKey: queryKeys.messages(sessionId ?? ''),
    queryFn: async ({ signal }) => {
      const all: Message[] = [];
      for await (const m of client.chat.listMessages(sessionId!, { limit: 100 }, { signal })) all.push(m);
      return all.reverse();
    },
    enabled: Boolean(sessionId),
  });
  const [live, setLive] = useState<Message[]>([]);
  const [reply, setReply, setReplyNow] = useThrottled<LiveReply | null>(null, options.throttleMs ?? 50);
  useEffect(() => {
    if (!sessionId) return;
    const controller = new AbortController();
    const stream = client.chat.stream(sessionId, { signal: controller.signal });
    // What was said between the history's load and the stream's start comes with a reload.
    stream.opened.then(() => queryClient.invalidateQueries({ queryKey: queryKeys.messages(sessionId) }), () => undefined);
    const writing: { reply: LiveReply | null } = { reply: null };
    (async () => {
      for await (const event of stream) {
        const e = event as ChatStreamEvent;
        const reply = writing.reply;
        if (e.event === 'message.created') setLive((l) => [...l, e.data.message]);
        else if (e.event === 'reply.started') setReplyNow((writing.reply = { id: e.data.reply_id, text: '' }));
        else if (e.event === 'token' && reply?.id === e.data.reply_id)
          setReply((writing.reply = { id: reply.id, text: reply.text + e.data.delta }));
        else if (REPLY_ENDS.has(e.event) && 'message' in e.data) {
          const message = e.data.message;
          setLive((l) => [...l, message]);
          setReplyNow((writing.reply = null));
        }
      }
    })().catch(() => undefined);
    return () => controller.abort();
  }, [client, queryClient, sessionId, setReply, setReplyNow]);
  const messages = merge(history.data ?? [], live);
  return {
    messages,
    /** The reply being written, if any. */
    reply,
    isLoading: history.isLoading,
    error: history.error as DgiDgiError | null,
    sendMessage: (content: string) => client.chat.sendMessage(sessionId!, { content }),
    cancel: () => client.chat.cancel(sessionId!),
  };
}

/** History then live messages, each once (the latest copy of each id), in order. */
function merge(history: Message[], live: Message[]): Message[] {
  const byId = new Map<string, Message>();
  for (const m of [...history, ...live]) byId.set(m.id, m);
  return [...byId.values()];
}

export interface StreamMessageInput {
  /** The session to post in; without one, a session is created in `projectId`. */
  sessionId?: string;
  content: string;
  projectId?: string;
}

/** Posts messages and streams their replies as growing text. */
export function useStreamingChat(options: { throttleMs?: number } = {}) {
  const client = useDgiDgi();
  const [currentText, setText, setTextNow] = useThrottled('', options.throttleMs ?? 50);
  const [isStreaming, setStreaming] = useState(false);
  const [error, setError] = useState<DgiDgiError | null>(null);
  const [sessionId, setSessionId] = useState<string | undefined>();
  const current = useRef<{ sessionId: string; reply: ReplyStream } | undefined>(undefined);
  useEffect(() => () => current.current?.reply.close(), []);

  const streamMessage = useCallback(
    async ({ sessionId, content, projectId }: StreamMessageInput): Promise<Message | undefined> => {
      current.current?.reply.close();
      setError(null);
      setTextNow('');
      setStreaming(true);
      let text = '';
      try {
        const id = sessionId ?? (await client.chat.createSession({ projectId })).id;
        setSessionId(id);
        const reply = client.chat.streamMessage(id, { content });
        current.current = { sessionId: id, reply };
        let final: Message | undefined;
        for await (const event of reply) {
          if (event.event === 'token') setText((text += event.data.delta));
          if (REPLY_ENDS.has(event.event) && 'message' in event.data) {
            final = event.data.message;
            if (event.event === 'reply.failed') {
              const failure = event.data.error;
              setError(
                new DgiDgiError({
                  status: 0,
                  code: failure?.code ?? 'REPLY_FAILED',
                  message: failure?.message ?? 'The reply failed',
                }),
              );
            }
          }
        }
        setTextNow(final?.content ?? text);
        return final;
      } catch (err) {
        setTextNow(text);
        const failure =
          err instanceof DgiDgiError ? err : new DgiDgiError({ status: 0, code: 'UNKNOWN', message: String(err), cause: err });
        if (failure.code !== 'ABORTED') setError(failure);
        return undefined;
      } finally {
        setStreaming(false);
      }
    },
    [client, setText, setTextNow],
  );

  /** Stops the reply in flight (the API's cancel): its partial text is kept. */
  const cancelStream = useCallback(async () => {
    const streaming = current.current;
    if (streaming) await client.chat.cancel(streaming.sessionId);
  }, [client]);

  return { currentText, isStreaming, error, sessionId, streamMessage, cancelStream };
}
