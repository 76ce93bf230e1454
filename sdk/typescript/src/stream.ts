/**
 * Server-Sent Events over `fetch` (so the `Authorization` header works everywhere), parsed
 * by eventsource-parser. A dropped connection reconnects with backoff and `Last-Event-ID`:
 * the server replays what came after the last event seen, so nothing is lost or repeated.
 * The stream ends after its terminal event, on the server's 204 (nothing more will come),
 * or when the caller aborts or stops iterating.
 */
import { createParser } from 'eventsource-parser';

import { backoff, type DgiDgiClient } from './client.js';
import { DgiDgiAbortError, DgiDgiError } from './errors.js';

/** One event of a stream: its id in the stream's log, its type and its data. */
export interface StreamEvent<K extends string = string, D = unknown> {
  id: number;
  event: K;
  data: D;
}

export interface StreamOptions {
  /** Start after this event id (`Last-Event-ID`); 0 replays the whole log. */
  lastEventId?: number;
  /** Ends the stream (cleanly: iteration stops, nothing is thrown). */
  signal?: AbortSignal;
  /** Reconnections in a row that bring no event before the stream gives up. Default 5. */
  maxReconnects?: number;
}

export class EventStream<E extends StreamEvent> implements AsyncIterable<E> {
  /** The id of the last event delivered: where a reconnection resumes. */
  lastEventId: number | undefined;
  /** How many times the stream has reconnected after a drop. */
  reconnects = 0;
  /** Settles when the first connection is answered: from then on, nothing written is missed. */
  readonly opened: Promise<void>;
  private markOpened!: (err?: unknown) => void;
  private readonly controller = new AbortController();

  constructor(
    private readonly client: DgiDgiClient,
    private readonly path: string,
    private readonly ends: ReadonlySet<string>,
    private readonly options: StreamOptions = {},
  ) {
    this.lastEventId = options.lastEventId;
    this.opened = new Promise<void>((resolve, reject) => {
      this.markOpened = (err) => (err === undefined ? resolve() : reject(err));
    });
    this.opened.catch(() => undefined);
    const signal = options.signal;
    if (signal?.aborted) this.controller.abort(signal.reason);
    signal?.addEventListener('abort', () => this.close(), { once: true });
  }

  /** Stops the stream; an iteration in progress ends without an error. */
  close(): void {
    this.controller.abort();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<E> {
    const signal = this.controller.signal;
    const maxReconnects = this.options.maxReconnects ?? 5;
    let fruitless = 0;
    try {
      while (!signal.aborted) {
        let res: Response;
        try {
          res = await this.client.open({
            path: this.path,
            signal,
            headers:
              this.lastEventId === undefined ? {} : { 'last-event-id': String(this.lastEventId) },
          });
        } catch (err) {
          this.markOpened(err);
          if (err instanceof DgiDgiAbortError) return;
          throw err;
        }
        this.markOpened();
        if (res.status === 204 || !res.body) return;
        const pending: E[] = [];
        const parser = createParser({
          onEvent: (message) => {
            const id = Number(message.id);
            pending.push({
              id,
              event: message.event ?? 'message',
              data: message.data ? JSON.parse(message.data) : null,
            } as E);
          },
        });
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        try {
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            parser.feed(value);
            while (pending.length > 0) {
              const event = pending.shift()!;
              if (Number.isFinite(event.id)) this.lastEventId = event.id;
              fruitless = 0;
              yield event;
              if (this.ends.has(event.event)) return;
            }
          }
        } catch (err) {
          if (signal.aborted) return;
          if (err instanceof DgiDgiError) throw err;
          // The connection dropped mid-stream: reconnect below.
        } finally {
          await reader.cancel().catch(() => undefined);
        }
        if (signal.aborted) return;
        fruitless++;
        if (fruitless > maxReconnects) {
          throw new DgiDgiError({
            status: 0,
            code: 'STREAM_LOST',
            message: `The event stream dropped ${fruitless} times in a row without an event`,
          });
        }
        this.reconnects++;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, backoff(fruitless - 1) / 2);
          signal.addEventListener('abort', () => {
            clearTimeout(timer);
            resolve();
          }, { once: true });
        });
      }
    } finally {
      this.markOpened(new DgiDgiAbortError());
      this.controller.abort();
    }
  }
}
