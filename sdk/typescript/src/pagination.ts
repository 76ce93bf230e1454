/**
 * Lists are pages, newest first: `{ data, nextCursor }`. A list call is also an async
 * iterable over every item of every page, fetched as the iteration needs them:
 *
 *     const { data, nextCursor } = await projects.list({ limit: 20 });
 *     for await (const project of projects.list()) console.log(project.id);
 */

export interface ListParams {
  /** Items per page, 1-100 (the server's default: 20). */
  limit?: number;
  /** The `nextCursor` of the page before. */
  cursor?: string;
}

export interface Page<T> extends AsyncIterable<T> {
  data: T[];
  /** The cursor of the next page; `null` on the last. */
  nextCursor: string | null;
  /** The next page, or `null` when this is the last. */
  nextPage(): Promise<Page<T> | null>;
}

export type FetchPage<T> = (cursor: string | undefined) => Promise<{ data: T[]; nextCursor: string | null }>;

export function makePage<T>(fetchPage: FetchPage<T>, got: { data: T[]; nextCursor: string | null }): Page<T> {
  const page: Page<T> = {
    data: got.data,
    nextCursor: got.nextCursor,
    async nextPage() {
      if (!got.nextCursor) return null;
      return makePage(fetchPage, await fetchPage(got.nextCursor));
    },
    async *[Symbol.asyncIterator]() {
      let current: Page<T> | null = page;
      while (current) {
        yield* current.data;
        current = await current.nextPage();
      }
    },
  };
  return page;
}

/** A page on its way: await it for the first page, or iterate it for every item. */
export class PagePromise<T> implements PromiseLike<Page<T>>, AsyncIterable<T> {
  private readonly first: Promise<Page<T>>;

  constructor(fetchPage: FetchPage<T>, cursor: string | undefined) {
    this.first = fetchPage(cursor).then((got) => makePage(fetchPage, got));
    // Iterating without awaiting is allowed; the error then surfaces in the iteration.
    this.first.catch(() => undefined);
  }

  then<A = Page<T>, B = never>(
    onfulfilled?: ((value: Page<T>) => A | PromiseLike<A>) | null,
    onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return this.first.then(onfulfilled, onrejected);
  }

  catch<B = never>(onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<Page<T> | B> {
    return this.first.catch(onrejected);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    yield* await this.first;
  }
}
