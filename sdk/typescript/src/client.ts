/**
 * The HTTP core: authentication, the envelope, errors, retries, timeouts and aborts. The
 * resource namespaces (`resources.ts`) and streams (`stream.ts`) call only `request` and
 * `open`.
 */
import { TokenSource, type Token } from './auth.js';
import { DgiDgiAbortError, DgiDgiConnectionError, DgiDgiTimeoutError, errorFromResponse } from './errors.js';

export interface ClientOptions {
  /** The API's base URL, `/api/v1` included. Default: `DGIDGI_API_URL`, else `/api/v1`. */
  baseURL?: string;
  /** An API key (`chy_...`); the client exchanges it for short-lived JWTs. Default: `DGIDGI_API_KEY`. */
  apiKey?: string;
  /**
   * A bearer token from the application's own backend (browsers should never hold API
   * keys). Called when the client has no token, when its token is about to expire (a
   * JWT's `exp`, or `expiresAt`) and after a 401.
   */
  getToken?: () => Promise<string | Token> | string | Token;
  /** The `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
  /** Retries of a failed request (408, 409, 429, 5xx, network, timeout). Default 2. */
  maxRetries?: number;
  /** Milliseconds to wait for an answer, per attempt. Default 60 000. */
  timeout?: number;
  /** Headers sent with every request. */
  headers?: Record<string, string>;
}

export type Query = Record<string, string | number | boolean | null | undefined>;

export interface RequestOptions {
  /** Ends the request (and its retries) when it fires. */
  signal?: AbortSignal;
  /** Overrides the client's `timeout` for this call. */
  timeout?: number;
  /** Overrides the client's `maxRetries` for this call. */
  maxRetries?: number;
  /** The `Idempotency-Key` of a POST (default: a fresh one per call, kept across its retries). */
  idempotencyKey?: string;
  /** Extra headers for this call. */
  headers?: Record<string, string>;
}

/** The seed's success envelope. */
export interface Envelope<T> {
  data: T;
  meta: { request_id?: string; timestamp?: string; next_cursor?: string | null };
}

interface Call extends RequestOptions {
  method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';
  path: string;
  query?: Query | undefined;
  body?: unknown;
  /** The `Accept` header (JSON unless the call opens an event stream). */
  accept?: string;
}

const RETRIABLE = new Set([408, 409, 429, 500, 502, 503, 504]);

function env(name: string): string | undefined {
  const proc = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  return proc?.env?.[name] || undefined;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new DgiDgiAbortError(signal.reason));
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new DgiDgiAbortError(signal?.reason));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Exponential backoff with full jitter: attempt 0 waits up to 0.5 s, then 1 s, 2 s... (at most 8 s). */
export function backoff(attempt: number): number {
  const ceiling = Math.min(8000, 500 * 2 ** attempt);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** Seconds of `Retry-After` (or an HTTP date), in milliseconds; capped at a minute. */
function retryAfter(headers: Headers): number | undefined {
  const raw = headers.get('retry-after');
  if (!raw) return undefined;
  const secs = Number(raw);
  const ms = Number.isFinite(secs) ? secs * 1000 : Date.parse(raw) - Date.now();
  return Number.isFinite(ms) ? Math.min(60_000, Math.max(0, ms)) : undefined;
}

export class DgiDgiClient {
  readonly baseURL: string;
  readonly maxRetries: number;
  readonly timeout: number;
  private readonly fetchImpl: typeof fetch;
  private readonly headers: Record<string, string>;
  private readonly tokens: TokenSource;

  constructor(options: ClientOptions = {}) {
    this.baseURL = (options.baseURL ?? env('DGIDGI_API_URL') ?? '/api/v1').replace(/\/+$/, '');
    this.maxRetries = options.maxRetries ?? 2;
    this.timeout = options.timeout ?? 60_000;
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (!fetchImpl) throw new Error('No fetch: pass one in the options (Node 20+ and browsers have it)');
    this.fetchImpl = fetchImpl.bind(globalThis);
    this.headers = options.headers ?? {};
    const apiKey = options.apiKey ?? (options.getToken ? undefined : env('DGIDGI_API_KEY'));
    const getToken = options.getToken;
    this.tokens = new TokenSource(
      getToken
        ? async () => {
            const got = await getToken();
            return typeof got === 'string' ? { token: got } : got;
          }
        : apiKey
          ? () => this.mint(apiKey)
          : undefined,
    );
  }

  /** Exchanges an API key for a JWT (`POST /auth/token`). */
  private async mint(apiKey: string): Promise<Token> {
    const { data } = await this.send<{ access_token: string; expires_in: number }>(
      { method: 'POST', path: '/auth/token', headers: { authorization: `Bearer ${apiKey}` } },
      false,
    );
    return { token: data.access_token, expiresAt: Date.now() + data.expires_in * 1000 };
  }

  /** One call of the API: its envelope's `data`, and `meta`. */
  async request<T>(call: Call): Promise<Envelope<T>> {
    return this.send<T>(call, true);
  }

  /**
   * Opens a streaming GET (SSE): the response once its status is a success (2xx), after
   * the same authentication and retries as any call. The timeout covers the headers only.
   */
  async open(call: Omit<Call, 'method'>): Promise<Response> {
    return this.attempts({ ...call, method: 'GET', accept: 'text/event-stream' }, true);
  }

  private async send<T>(call: Call, authenticated: boolean): Promise<Envelope<T>> {
    const res = await this.attempts(call, authenticated);
    if (res.status === 204) return { data: undefined as T, meta: {} };
    const text = await res.text();
    const body = (text ? JSON.parse(text) : {}) as Envelope<T>;
    return { data: body.data, meta: body.meta ?? {} };
  }

  private url(path: string, query?: Query): string {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query ?? {})) {
      if (v !== undefined && v !== null) params.append(k, String(v));
    }
    const qs = params.toString();
    return `${this.baseURL}${path}${qs ? `?${qs}` : ''}`;
  }

  /** Sends `call` until it succeeds, fails for good, or runs out of retries. */
  private async attempts(call: Call, authenticated: boolean): Promise<Response> {
    const maxRetries = call.maxRetries ?? this.maxRetries;
    const timeout = call.timeout ?? this.timeout;
    const idempotencyKey =
      call.method === 'POST' ? (call.idempotencyKey ?? globalThis.crypto.randomUUID()) : undefined;
    let renewed = false;
    let token = authenticated ? await this.tokens.get() : undefined;
    for (let attempt = 0; ; attempt++) {
      if (call.signal?.aborted) throw new DgiDgiAbortError(call.signal.reason);
      const headers: Record<string, string> = {
        accept: call.accept ?? 'application/json',
        ...this.headers,
        ...call.headers,
      };
      if (token) headers.authorization = `Bearer ${token}`;
      if (idempotencyKey) headers['idempotency-key'] = idempotencyKey;
      if (call.body !== undefined) headers['content-type'] = 'application/json';
      let res: Response;
      try {
        res = await this.fetchOnce(this.url(call.path, call.query), {
          method: call.method,
          headers,
          body: call.body === undefined ? undefined : JSON.stringify(call.body),
        }, timeout, call.signal, call.accept === 'text/event-stream');
      } catch (err) {
        if (err instanceof DgiDgiAbortError || attempt >= maxRetries) throw err;
        await sleep(backoff(attempt), call.signal);
        continue;
      }
      if (res.ok) return res;
      if (res.status === 401 && authenticated && this.tokens.enabled && !renewed) {
        // One renewal and one retry: the token may have expired or been revoked with its key.
        renewed = true;
        await res.body?.cancel().catch(() => undefined);
        token = await this.tokens.rejected(token);
        attempt--;
        continue;
      }
      if (!RETRIABLE.has(res.status) || attempt >= maxRetries) throw await errorFromResponse(res);
      const wait = retryAfter(res.headers) ?? backoff(attempt);
      await res.body?.cancel().catch(() => undefined);
      await sleep(wait, call.signal);
    }
  }

  /** One fetch, bounded by `timeout` (until the headers, for a stream) and the caller's signal. */
  private async fetchOnce(
    url: string,
    init: RequestInit,
    timeout: number,
    signal: AbortSignal | undefined,
    streaming: boolean,
  ): Promise<Response> {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeout);
    const onAbort = () => controller.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const done = () => {
      clearTimeout(timer);
      if (!streaming) signal?.removeEventListener('abort', onAbort);
    };
    try {
      const res = await this.fetchImpl(url, { ...init, signal: controller.signal });
      if (!streaming) {
        // Read the whole body under the same timeout, so a stalled body cannot hang the call.
        const body = await res.arrayBuffer();
        done();
        return new Response(res.status === 204 ? null : body, {
          status: res.status,
          statusText: res.statusText,
          headers: res.headers,
        });
      }
      clearTimeout(timer);
      return res;
    } catch (err) {
      done();
      if (signal?.aborted) throw new DgiDgiAbortError(signal.reason);
      if (timedOut) throw new DgiDgiTimeoutError(timeout);
      throw new DgiDgiConnectionError(`Could not reach ${url}: ${(err as Error).message}`, err);
    }
  }
}
