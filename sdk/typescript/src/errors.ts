/**
 * Every failure the SDK reports is a {@link DgiDgiError}: the API's own errors carry its
 * status, code, message and details; network failures, timeouts and aborts are subclasses
 * with `status` 0.
 */

/** The API's error codes (the seed's, plus the ones the server adds). */
export type ErrorCode =
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'RESOURCE_NOT_FOUND'
  | 'VALIDATION_ERROR'
  | 'RATE_LIMIT_EXCEEDED'
  | 'INTERNAL_ERROR'
  | (string & {});

export class DgiDgiError extends Error {
  /** The HTTP status; 0 when no answer came (network, timeout, abort). */
  readonly status: number;
  /** The API's error code (`RESOURCE_NOT_FOUND`...), or the SDK's for failures without an answer. */
  readonly code: ErrorCode;
  /** The API's `error.details` (for a 400, `field` names the field at fault). */
  readonly details: Record<string, unknown>;
  /** The request's id (`meta.request_id` or `X-Request-Id`), to quote to support. */
  readonly requestId: string | undefined;
  /** Response headers, when there was a response. */
  readonly headers: Headers | undefined;

  constructor(init: {
    status: number;
    code: ErrorCode;
    message: string;
    details?: Record<string, unknown>;
    requestId?: string;
    headers?: Headers;
    cause?: unknown;
  }) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'DgiDgiError';
    this.status = init.status;
    this.code = init.code;
    this.details = init.details ?? {};
    this.requestId = init.requestId;
    this.headers = init.headers;
  }
}

/** The request never got an answer: connection refused or reset, DNS, TLS. */
export class DgiDgiConnectionError extends DgiDgiError {
  constructor(message: string, cause?: unknown) {
    super({ status: 0, code: 'CONNECTION_ERROR', message, cause });
    this.name = 'DgiDgiConnectionError';
  }
}

/** No answer within the client's `timeout`. */
export class DgiDgiTimeoutError extends DgiDgiError {
  constructor(timeoutMs: number) {
    super({ status: 0, code: 'TIMEOUT', message: `No answer within ${timeoutMs} ms` });
    this.name = 'DgiDgiTimeoutError';
  }
}

/** The caller's `AbortSignal` fired. */
export class DgiDgiAbortError extends DgiDgiError {
  constructor(cause?: unknown) {
    super({ status: 0, code: 'ABORTED', message: 'The request was aborted', cause });
    this.name = 'AbortError';
  }
}

/** The error of a response that is not a success, from its envelope when it has one. */
export async function errorFromResponse(res: Response): Promise<DgiDgiError> {
  const text = await res.text().catch(() => '');
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  const envelope = (body ?? {}) as {
    error?: { code?: string; message?: string; details?: Record<string, unknown> };
    meta?: { request_id?: string };
  };
  return new DgiDgiError({
    status: res.status,
    code: envelope.error?.code ?? (res.status >= 500 ? 'INTERNAL_ERROR' : `HTTP_${res.status}`),
    message: envelope.error?.message ?? (text.slice(0, 200) || res.statusText || `HTTP ${res.status}`),
    details: envelope.error?.details,
    requestId: envelope.meta?.request_id ?? res.headers.get('x-request-id') ?? undefined,
    headers: res.headers,
  });
}
