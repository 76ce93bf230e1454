/**
 * The API's types, taken from the generated OpenAPI types (`generated/api.ts`): request
 * bodies, query parameters and the `data` of each route's answer, by path and method.
 */
import type { components, paths } from './generated/api.js';

export type { components, paths };

type Schemas = components['schemas'];
type Json<T> = T extends { content: { 'application/json': infer B } } ? B : never;

/** The operation of `method` on `path`. */
export type OperationOf<P extends keyof paths, M extends keyof paths[P]> = paths[P][M];

/** The request body of an operation. */
export type BodyOf<Op> = Op extends { requestBody?: infer R } ? Json<NonNullable<R>> : never;

/** The query parameters of an operation (`tenant_id` and paging left out: options of their own). */
export type QueryOf<Op> = Op extends { parameters: { query?: infer Q } }
  ? Omit<NonNullable<Q>, 'tenant_id' | 'limit' | 'cursor'>
  : never;

type Success<R> = R extends { 200: infer A } ? A : R extends { 201: infer A } ? A : R extends { 202: infer A } ? A : never;

/** The `data` of an operation's successful answer. */
export type DataOf<Op> = Op extends { responses: infer R } ? (Json<Success<R>> extends { data: infer D } ? D : never) : never;

/** The item of a list operation's `data`. */
export type ItemOf<Op> = DataOf<Op> extends (infer I)[] ? I : never;

export type Project = Schemas['Project'];
export type Agent = Schemas['Agent'];
export type AgentConfig = Schemas['AgentConfig'];
export type Run = Schemas['Run'];
export type RunStatus = Schemas['RunStatus'];
export type Usage = Schemas['Usage'];
export type Session = Schemas['Session'];
export type Message = Schemas['Message'];
export type Tenant = Schemas['Tenant'];
export type TenantSettings = Schemas['TenantSettings'];
export type User = Schemas['User'];
export type ApiKey = Schemas['ApiKeyRecord'];
export type WebhookEndpoint = Schemas['Endpoint'];
export type WebhookDelivery = Schemas['Delivery'];
export type RegionalPreferences = Schemas['Preferences'];
export type ErrorEnvelope = Schemas['ErrorEnvelope'];
