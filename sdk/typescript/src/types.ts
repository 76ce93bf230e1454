/**
 * The API's types, taken from the generated OpenAPI types (`generated/api.ts`): request
 * bodies, query parameters and the `data` of each route's answer, by path and method.
 */
import type { components, paths } from './generated/api.js';

export type { components, paths };

type Schemas = components['schemas'];
type Json<T> = T extends { content: { 'application/json': infer B } } ? B : never;

/** The request body of `method` on `path`. */
export type BodyOf<P extends keyof paths, M extends keyof paths[P]> = paths[P][M] extends {
  requestBody?: infer R;
}
  ? Json<NonNullable<R>>
  : never;

/** The query parameters of `method` on `path` (`tenant_id` left out: it is a request option). */
export type QueryOf<P extends keyof paths, M extends keyof paths[P]> = paths[P][M] extends {
  parameters: { query?: infer Q };
}
  ? Omit<NonNullable<Q>, 'tenant_id' | 'limit' | 'cursor'>
  : never;

type Success<R> = R extends { 200: infer A } ? A : R extends { 201: infer A } ? A : R extends { 202: infer A } ? A : never;

/** The `data` of a successful answer of `method` on `path`. */
export type DataOf<P extends keyof paths, M extends keyof paths[P]> = paths[P][M] extends {
  responses: infer R;
}
  ? Json<Success<R>> extends { data: infer D }
    ? D
    : never
  : never;

/** The item of a list route's `data`. */
export type ItemOf<P extends keyof paths, M extends keyof paths[P]> = DataOf<P, M> extends (infer I)[] ? I : never;

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
