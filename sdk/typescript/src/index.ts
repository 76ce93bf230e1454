/**
 * `@dgidgi-one/sdk`: the official TypeScript client of the DgiDgi One API.
 *
 *     import { createClient, projects } from '@dgidgi-one/sdk';
 *     createClient({ baseURL: process.env.DGIDGI_API_URL, apiKey: process.env.DGIDGI_API_KEY });
 *     const { data } = await projects.list();
 *
 * `createClient` configures the default client behind the module-level namespaces and
 * returns it; `new DgiDgi(options)` makes another, independent one.
 */
import { DgiDgiClient, type ClientOptions } from './client.js';
import { resources, type Resources } from './resources.js';

export class DgiDgi extends DgiDgiClient {
  readonly auth: Resources['auth'];
  readonly projects: Resources['projects'];
  readonly agents: Resources['agents'];
  readonly runs: Resources['runs'];
  readonly chat: Resources['chat'];
  readonly tenants: Resources['tenants'];
  readonly users: Resources['users'];
  readonly apiKeys: Resources['apiKeys'];
  readonly webhooks: Resources['webhooks'];
  readonly regions: Resources['regions'];
  readonly usage: Resources['usage'];
  readonly mcpServers: Resources['mcpServers'];
  readonly ops: Resources['ops'];

  constructor(options: ClientOptions = {}) {
    super(options);
    const r = resources(this);
    this.auth = r.auth;
    this.projects = r.projects;
    this.agents = r.agents;
    this.runs = r.runs;
    this.chat = r.chat;
    this.tenants = r.tenants;
    this.users = r.users;
    this.apiKeys = r.apiKeys;
    this.webhooks = r.webhooks;
    this.regions = r.regions;
    this.usage = r.usage;
    this.mcpServers = r.mcpServers;
    this.ops = r.ops;
  }
}

let current: DgiDgi | undefined;

/** Configures the default client (behind `projects`, `agents`...) and returns it. */
export function createClient(options: ClientOptions = {}): DgiDgi {
  current = new DgiDgi(options);
  return current;
}

/** The default client: the last `createClient`'s, else one from the environment. */
export function getClient(): DgiDgi {
  current ??= new DgiDgi();
  return current;
}

function delegate<K extends keyof Resources>(key: K): Resources[K] {
  return new Proxy({} as Resources[K], {
    get: (_, method) => (getClient()[key] as Record<string | symbol, unknown>)[method],
    has: (_, method) => method in getClient()[key],
    ownKeys: () => Reflect.ownKeys(getClient()[key]),
    getOwnPropertyDescriptor: (_, method) => Reflect.getOwnPropertyDescriptor(getClient()[key], method),
  });
}

export const auth = delegate('auth');
export const projects = delegate('projects');
export const agents = delegate('agents');
export const runs = delegate('runs');
export const chat = delegate('chat');
export const tenants = delegate('tenants');
export const users = delegate('users');
export const apiKeys = delegate('apiKeys');
export const webhooks = delegate('webhooks');
export const regions = delegate('regions');
export const usage = delegate('usage');
export const mcpServers = delegate('mcpServers');
export const ops = delegate('ops');

export { DgiDgiClient, type ClientOptions, type RequestOptions, type Envelope } from './client.js';
export {
  DgiDgiError,
  DgiDgiConnectionError,
  DgiDgiTimeoutError,
  DgiDgiAbortError,
  type ErrorCode,
} from './errors.js';
export { EventStream, type StreamEvent, type StreamOptions } from './stream.js';
export { PagePromise, type Page, type ListParams } from './pagination.js';
export { ROUTES, ReplyStream, type CallOptions, type Resources, type ActorTreeEvent } from './resources.js';
export { RUN_ENDS, REPLY_ENDS, type ChatStreamEvent, type RunStreamEvent, type StepEvent } from './events.js';
export type * from './types.js';
export type { Token } from './auth.js';
