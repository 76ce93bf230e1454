/**
 * One method per route of the API, grouped in namespaces as their users would guess. The
 * table `ROUTES` names each method's route once; a test checks it against the server's
 * OpenAPI document, both ways.
 */
import type { DgiDgiClient, Query, RequestOptions } from './client.js';
import type { ChatStreamEvent, RunStreamEvent } from './events.js';
import { REPLY_ENDS, RUN_ENDS } from './events.js';
import { PagePromise, type ListParams } from './pagination.js';
import { EventStream, type StreamOptions } from './stream.js';
import type { BodyOf, DataOf, ItemOf, OperationOf, paths, QueryOf, Run } from './types.js';

/** Options of every call; `tenantId` lets an operator key act in the tenant it names. */
export interface CallOptions extends RequestOptions {
  tenantId?: string;
}

/** Each SDK method and the route it calls (relative to `/api/v1`). */
export const ROUTES = {
  'auth.token': ['POST', '/auth/token'],
  'projects.list': ['GET', '/projects'],
  'projects.create': ['POST', '/projects'],
  'projects.get': ['GET', '/projects/{id}'],
  'projects.update': ['PATCH', '/projects/{id}'],
  'projects.delete': ['DELETE', '/projects/{id}'],
  'agents.list': ['GET', '/agents'],
  'agents.create': ['POST', '/agents'],
  'agents.get': ['GET', '/agents/{id}'],
  'agents.update': ['PATCH', '/agents/{id}'],
  'agents.delete': ['DELETE', '/agents/{id}'],
  'agents.execute': ['POST', '/agents/{id}/execute'],
  'runs.list': ['GET', '/agents/{id}/runs'],
  'runs.get': ['GET', '/agents/{id}/runs/{run_id}'],
  'runs.cancel': ['POST', '/agents/{id}/runs/{run_id}/cancel'],
  'runs.approve': ['POST', '/agents/{id}/runs/{run_id}/approve'],
  'runs.stream': ['GET', '/agents/{id}/runs/{run_id}/stream'],
  'chat.createSession': ['POST', '/chat/sessions'],
  'chat.listSessions': ['GET', '/chat/sessions'],
  'chat.getSession': ['GET', '/chat/sessions/{id}'],
  'chat.deleteSession': ['DELETE', '/chat/sessions/{id}'],
  'chat.sendMessage': ['POST', '/chat/sessions/{id}/messages'],
  'chat.listMessages': ['GET', '/chat/sessions/{id}/messages'],
  'chat.cancel': ['POST', '/chat/sessions/{id}/cancel'],
  'chat.stream': ['GET', '/chat/sessions/{id}/stream'],
  'tenants.list': ['GET', '/tenants'],
  'tenants.create': ['POST', '/tenants'],
  'tenants.get': ['GET', '/tenants/{id}'],
  'tenants.updateSettings': ['PATCH', '/tenants/{id}/settings'],
  'users.list': ['GET', '/users'],
  'users.create': ['POST', '/users'],
  'apiKeys.list': ['GET', '/api-keys'],
  'apiKeys.create': ['POST', '/api-keys'],
  'apiKeys.revoke': ['DELETE', '/api-keys/{id}'],
  'webhooks.list': ['GET', '/webhooks'],
  'webhooks.create': ['POST', '/webhooks'],
  'webhooks.get': ['GET', '/webhooks/{id}'],
  'webhooks.update': ['PATCH', '/webhooks/{id}'],
  'webhooks.delete': ['DELETE', '/webhooks/{id}'],
  'webhooks.listDeliveries': ['GET', '/webhooks/{id}/deliveries'],
  'webhooks.redeliver': ['POST', '/webhooks/{id}/deliveries/{delivery_id}/redeliver'],
  'webhooks.test': ['POST', '/webhooks/{id}/test'],
  'webhooks.rotateSecret': ['POST', '/webhooks/{id}/rotate-secret'],
  'regions.list': ['GET', '/regions'],
  'regions.getPreferences': ['GET', '/regions/preferences/{tenant_id}'],
  'regions.updatePreferences': ['PATCH', '/regions/preferences/{tenant_id}'],
  'regions.getStorage': ['GET', '/regions/storage/{tenant_id}'],
  'regions.updateStorage': ['PUT', '/regions/storage/{tenant_id}'],
  'regions.validateStorage': ['POST', '/regions/storage/{tenant_id}/validate'],
  'regions.checkFeature': ['GET', '/regions/features/{tenant_id}/check/{feature_key}'],
  'regions.routingInfo': ['GET', '/routing-info'],
  'usage.get': ['GET', '/usage'],
  'mcpServers.list': ['GET', '/mcp-servers'],
  'mcpServers.create': ['POST', '/mcp-servers'],
  'mcpServers.get': ['GET', '/mcp-servers/{id}'],
  'mcpServers.update': ['PATCH', '/mcp-servers/{id}'],
  'mcpServers.delete': ['DELETE', '/mcp-servers/{id}'],
  'mcpServers.refresh': ['POST', '/mcp-servers/{id}/refresh'],
  'mcpServers.tools': ['GET', '/mcp-servers/{id}/tools'],
  'ops.actors': ['GET', '/ops/actors'],
  'ops.streamActors': ['GET', '/ops/actors/stream'],
} as const;

type Routes = typeof ROUTES;
type Name = keyof Routes;
type Api<N extends Name> = `/api/v1${Routes[N][1]}`;
type Verb<N extends Name> = Lowercase<Routes[N][0]>;

/** The generated operation behind method `N`. */
type Op<N extends Name> = Api<N> extends infer P extends keyof paths
  ? Verb<N> extends infer M extends keyof paths[P]
    ? OperationOf<P, M>
    : never
  : never;
type Body<N extends Name> = BodyOf<Op<N>>;
type Data<N extends Name> = DataOf<Op<N>>;
type Item<N extends Name> = ItemOf<Op<N>>;
type Filters<N extends Name> = QueryOf<Op<N>>;

/** The route of `name` with its `{params}` filled in, each URL-encoded. */
function path(name: Name, ...values: string[]): string {
  let i = 0;
  return ROUTES[name][1].replace(/\{[a-z_]+\}/g, () => encodeURIComponent(values[i++] ?? ''));
}

function split(options: CallOptions | undefined): [RequestOptions, Query] {
  const { tenantId, ...rest } = options ?? {};
  return [rest, { tenant_id: tenantId }];
}

/** The namespaces over one client. */
export function resources(client: DgiDgiClient) {
  const call = async <N extends Name>(
    name: N,
    params: string[],
    options: CallOptions | undefined,
    body?: unknown,
    query?: Query,
  ): Promise<Data<N>> => {
    const [rest, tenant] = split(options);
    const { data } = await client.request<Data<N>>({
      ...rest,
      method: ROUTES[name][0],
      path: path(name, ...params),
      query: { ...tenant, ...query },
      body,
    });
    return data;
  };
  const list = <N extends Name>(
    name: N,
    params: string[],
    filters: (ListParams & Filters<N>) | undefined,
    options: CallOptions | undefined,
  ): PagePromise<Item<N>> => {
    const [rest, tenant] = split(options);
    const { cursor, ...query } = (filters ?? {}) as ListParams & Query;
    return new PagePromise<Item<N>>(async (next) => {
      const { data, meta } = await client.request<Item<N>[]>({
        ...rest,
        method: 'GET',
        path: path(name, ...params),
        query: { ...tenant, ...query, cursor: next },
      });
      return { data, nextCursor: meta.next_cursor ?? null };
    }, cursor);
  };
  const stream = <E extends RunStreamEvent | ChatStreamEvent>(
    name: N_Stream,
    params: string[],
    ends: ReadonlySet<string>,
    options: (StreamOptions & { tenantId?: string }) | undefined,
  ) => {
    const { tenantId, ...rest } = options ?? {};
    const where = path(name, ...params) + (tenantId ? `?tenant_id=${encodeURIComponent(tenantId)}` : '');
    return new EventStream<E>(client, where, ends, rest);
  };

  const runs = {
    /** The agent's runs, newest first. */
    list: (agentId: string, params?: ListParams & Filters<'runs.list'>, options?: CallOptions) =>
      list('runs.list', [agentId], params, options),
    /** A run with its steps, output, usage, error and artifacts. */
    get: (agentId: string, runId: string, options?: CallOptions) => call('runs.get', [agentId, runId], options),
    /** Cancels the run (at once if it is queued, at its next event if it is running). */
    cancel: (agentId: string, runId: string, options?: CallOptions) =>
      call('runs.cancel', [agentId, runId], options),
    /**
     * Answers tool calls the run waits on (`requires_action`, listed in its
     * `pending_tool_calls`): approve (with edited `arguments` if need be) or deny with a
     * `reason` the model reads. The run resumes once every pending call has an answer.
     */
    approve: (agentId: string, runId: string, body: Body<'runs.approve'>, options?: CallOptions) =>
      call('runs.approve', [agentId, runId], options, body),
    /** The run's events, live, resumed after drops; ends with the run. */
    stream: (agentId: string, runId: string, options?: StreamOptions & { tenantId?: string }) =>
      stream<RunStreamEvent>('runs.stream', [agentId, runId], RUN_ENDS, options),
  };

  return {
    auth: {
      /** A short-lived JWT for an API key (what the client does by itself with `apiKey`). */
      token: (apiKey: string, options?: RequestOptions) =>
        client
          .request<Data<'auth.token'>>({
            ...options,
            method: 'POST',
            path: ROUTES['auth.token'][1],
            headers: { ...options?.headers, authorization: `Bearer ${apiKey}` },
          })
          .then((r) => r.data),
    },
    projects: {
      list: (params?: ListParams & Filters<'projects.list'>, options?: CallOptions) =>
        list('projects.list', [], params, options),
      create: (body: Body<'projects.create'>, options?: CallOptions) =>
        call('projects.create', [], options, body),
      get: (id: string, options?: CallOptions) => call('projects.get', [id], options),
      update: (id: string, body: Body<'projects.update'>, options?: CallOptions) =>
        call('projects.update', [id], options, body),
      delete: (id: string, options?: CallOptions) => call('projects.delete', [id], options),
    },
    agents: {
      list: (params?: ListParams & Filters<'agents.list'>, options?: CallOptions) =>
        list('agents.list', [], params, options),
      create: (body: Body<'agents.create'>, options?: CallOptions) => call('agents.create', [], options, body),
      get: (id: string, options?: CallOptions) => call('agents.get', [id], options),
      update: (id: string, body: Body<'agents.update'>, options?: CallOptions) =>
        call('agents.update', [id], options, body),
      delete: (id: string, options?: CallOptions) => call('agents.delete', [id], options),
      /**
       * Runs the agent on a goal. By default waits for the run's end, however long it takes
       * (the server waits up to 30 s per call, then the run's stream is followed), and
       * returns the finished run: `run.output`, or the run that waits for a human's answer
       * (`requires_action`: see `runs.approve`). `{ wait: false }` returns the queued run.
       */
      execute: async (
        id: string,
        body: Omit<Body<'agents.execute'>, 'wait'> & { wait?: boolean },
        options?: CallOptions,
      ): Promise<Run> => {
        const { wait = true, ...rest } = body;
        const serverWait = wait ? Math.max(1, Math.min(30, Math.floor(client.timeout / 1000) - 5)) : undefined;
        const run = (await call('agents.execute', [id], options, {
          ...rest,
          ...(serverWait ? { wait: serverWait } : {}),
        })) as Run;
        if (!wait || !['queued', 'running'].includes(run.status)) return run;
        for await (const event of runs.stream(id, run.id, { signal: options?.signal, tenantId: options?.tenantId, lastEventId: 0 })) {
          // Every event up to the run's end, or up to a wait for a human (`runs.approve`);
          // the run as stored then says where it is.
          if (event.event === 'run.requires_action') break;
        }
        return (await runs.get(id, run.id, options)) as Run;
      },
    },
    runs,
    chat: {
      createSession: (body: Body<'chat.createSession'>, options?: CallOptions) =>
        call('chat.createSession', [], options, body),
      listSessions: (params?: ListParams & Filters<'chat.listSessions'>, options?: CallOptions) =>
        list('chat.listSessions', [], params, options),
      getSession: (id: string, options?: CallOptions) => call('chat.getSession', [id], options),
      deleteSession: (id: string, options?: CallOptions) => call('chat.deleteSession', [id], options),
      /** Posts a message: the stored message and the id of the reply that will stream. */
      sendMessage: (sessionId: string, body: Body<'chat.sendMessage'>, options?: CallOptions) =>
        call('chat.sendMessage', [sessionId], options, body),
      /** The session's messages, newest first. */
      listMessages: (sessionId: string, params?: ListParams & Filters<'chat.listMessages'>, options?: CallOptions) =>
        list('chat.listMessages', [sessionId], params, options),
      /** Stops the reply in flight; its partial text is kept. */
      cancel: (sessionId: string, options?: CallOptions) => call('chat.cancel', [sessionId], options),
      /**
       * The session's events, live (from the reply in flight, or after `lastEventId`),
       * resumed after drops. A session's stream does not end by itself: abort or break.
       */
      stream: (sessionId: string, options?: StreamOptions & { tenantId?: string }) =>
        stream<ChatStreamEvent>('chat.stream', [sessionId], NO_ENDS, options),
      /**
       * Posts a message and streams its reply, from `reply.started` (or `reply.queued`) to
       * its end (`reply.completed`, `reply.failed` or `reply.cancelled`). The session's
       * stream is open before the message is posted, so nothing of the reply is missed
       * however fast it comes.
       */
      streamMessage: (sessionId: string, body: Body<'chat.sendMessage'>, options?: CallOptions): ReplyStream => {
        const events = stream<ChatStreamEvent>('chat.stream', [sessionId], NO_ENDS, {
          signal: options?.signal,
          tenantId: options?.tenantId,
        });
        return new ReplyStream(events, async () => {
          await events.opened;
          return call('chat.sendMessage', [sessionId], options, body);
        });
      },
    },
    tenants: {
      list: (params?: ListParams & Filters<'tenants.list'>, options?: RequestOptions) =>
        list('tenants.list', [], params, options),
      create: (body: Body<'tenants.create'>, options?: RequestOptions) => call('tenants.create', [], options, body),
      get: (id: string, options?: RequestOptions) => call('tenants.get', [id], options),
      updateSettings: (id: string, body: Body<'tenants.updateSettings'>, options?: RequestOptions) =>
        call('tenants.updateSettings', [id], options, body),
    },
    users: {
      list: (params?: ListParams & Filters<'users.list'>, options?: CallOptions) =>
        list('users.list', [], params, options),
      create: (body: Body<'users.create'>, options?: CallOptions) => call('users.create', [], options, body),
    },
    apiKeys: {
      list: (params?: ListParams & Filters<'apiKeys.list'>, options?: CallOptions) =>
        list('apiKeys.list', [], params, options),
      /** A new key; its secret (`key`) is in this answer only. */
      create: (body: Body<'apiKeys.create'>, options?: CallOptions) => call('apiKeys.create', [], options, body),
      /** Revokes the key, effective at once. */
      revoke: (id: string, options?: CallOptions) => call('apiKeys.revoke', [id], options),
    },
    webhooks: {
      list: (params?: ListParams & Filters<'webhooks.list'>, options?: CallOptions) =>
        list('webhooks.list', [], params, options),
      create: (body: Body<'webhooks.create'>, options?: CallOptions) => call('webhooks.create', [], options, body),
      get: (id: string, options?: CallOptions) => call('webhooks.get', [id], options),
      update: (id: string, body: Body<'webhooks.update'>, options?: CallOptions) =>
        call('webhooks.update', [id], options, body),
      delete: (id: string, options?: CallOptions) => call('webhooks.delete', [id], options),
      listDeliveries: (id: string, params?: ListParams & Filters<'webhooks.listDeliveries'>, options?: CallOptions) =>
        list('webhooks.listDeliveries', [id], params, options),
      redeliver: (id: string, deliveryId: string, options?: CallOptions) =>
        call('webhooks.redeliver', [id, deliveryId], options),
      /** Sends a test event to the endpoint. */
      test: (id: string, options?: CallOptions) => call('webhooks.test', [id], options),
      /** A new signing secret; the old one keeps verifying for a while. */
      rotateSecret: (id: string, options?: CallOptions) => call('webhooks.rotateSecret', [id], options),
    },
    regions: {
      list: (options?: RequestOptions) => call('regions.list', [], options),
      getPreferences: (tenantId: string, options?: RequestOptions) =>
        call('regions.getPreferences', [tenantId], options),
      updatePreferences: (tenantId: string, body: Body<'regions.updatePreferences'>, options?: RequestOptions) =>
        call('regions.updatePreferences', [tenantId], options, body),
      getStorage: (tenantId: string, options?: RequestOptions) => call('regions.getStorage', [tenantId], options),
      updateStorage: (tenantId: string, body: Body<'regions.updateStorage'>, options?: RequestOptions) =>
        call('regions.updateStorage', [tenantId], options, body),
      /** Checks a tenant's own bucket with a real round trip. */
      validateStorage: (tenantId: string, body?: Body<'regions.validateStorage'>, options?: RequestOptions) =>
        call('regions.validateStorage', [tenantId], options, body),
      checkFeature: (tenantId: string, featureKey: string, options?: RequestOptions) =>
        call('regions.checkFeature', [tenantId, featureKey], options),
      routingInfo: (options?: RequestOptions) => call('regions.routingInfo', [], options),
    },
    usage: {
      /**
       * The tenant's LLM use and cost from `from` to `to` (days, `YYYY-MM-DD`; this month so
       * far by default): totals and one line per day, agent, provider and model.
       */
      get: (params?: Omit<NonNullable<Filters<'usage.get'>>, 'tenant_id'>, options?: CallOptions) =>
        call('usage.get', [], options, undefined, params as Query | undefined),
    },
    mcpServers: {
      list: (params?: ListParams & Filters<'mcpServers.list'>, options?: CallOptions) =>
        list('mcpServers.list', [], params, options),
      /** Connects to the server, lists its tools and registers it (header values are stored sealed). */
      create: (body: Body<'mcpServers.create'>, options?: CallOptions) => call('mcpServers.create', [], options, body),
      get: (id: string, options?: CallOptions) => call('mcpServers.get', [id], options),
      update: (id: string, body: Body<'mcpServers.update'>, options?: CallOptions) =>
        call('mcpServers.update', [id], options, body),
      delete: (id: string, options?: CallOptions) => call('mcpServers.delete', [id], options),
      /** Lists the server's tools again. */
      refresh: (id: string, options?: CallOptions) => call('mcpServers.refresh', [id], options),
      /** The tools it listed last, each with the `mcp:<server>/<tool>` an agent names it by. */
      tools: (id: string, options?: CallOptions) => call('mcpServers.tools', [id], options),
    },
    ops: {
      /** The live actor tree (operators). */
      actors: (options?: CallOptions) => call('ops.actors', [], options),
      /** The actor tree each time it changes (operators). */
      streamActors: (options?: StreamOptions) =>
        new EventStream<ActorTreeEvent>(client, ROUTES['ops.streamActors'][1], NO_ENDS, options),
    },
  };
}

/** A message's reply as it streams; `posted` is the stored message and the reply's id. */
export class ReplyStream implements AsyncIterable<ChatStreamEvent> {
  readonly posted: Promise<Data<'chat.sendMessage'>>;
  private readonly first: Promise<IteratorResult<ChatStreamEvent>>;
  private readonly events: AsyncIterator<ChatStreamEvent>;

  constructor(
    private readonly stream: EventStream<ChatStreamEvent>,
    post: () => Promise<Data<'chat.sendMessage'>>,
  ) {
    this.events = stream[Symbol.asyncIterator]();
    // Asking for the first event opens the connection; the message is posted once it is open.
    this.first = this.events.next();
    this.first.catch(() => undefined);
    this.posted = post();
    this.posted.catch(() => this.stream.close());
  }

  /** Stops following the reply (the reply itself goes on: `chat.cancel` stops it). */
  close(): void {
    this.stream.close();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ChatStreamEvent> {
    const { reply_id: replyId } = await this.posted;
    try {
      let next = this.first;
      for (;;) {
        const { value, done } = await next;
        if (done) return;
        const data = value.data as { reply_id?: string };
        if (data.reply_id === replyId) {
          yield value;
          if (REPLY_ENDS.has(value.event)) return;
        }
        next = this.events.next();
      }
    } finally {
      await this.events.return?.();
    }
  }
}

type N_Stream = 'runs.stream' | 'chat.stream';
const NO_ENDS: ReadonlySet<string> = new Set();

/** An event of the operators' actor stream: the whole tree each time. */
export interface ActorTreeEvent {
  id: number;
  event: string;
  data: Data<'ops.actors'>;
}

export type Resources = ReturnType<typeof resources>;
