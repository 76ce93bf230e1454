/**
 * An OpenAI-compatible chat completions server on 127.0.0.1 port 0, which the runtime
 * reaches through its real async-openai client: each request takes the next scripted
 * answer (text streamed at a pace), or the default one.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Answer {
  pieces: string[];
  /** Milliseconds before each piece. */
  pace?: number;
}

export class FakeLlm {
  readonly queue: Answer[] = [];
  requests = 0;
  private constructor(
    private readonly server: Server,
    readonly baseURL: string,
    private readonly fallback: Answer,
  ) {}

  static async start(fallback: Answer = { pieces: ['Hello', ' from', ' the', ' fake', ' model.'] }): Promise<FakeLlm> {
    let llm: FakeLlm | undefined;
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        if (req.method !== 'POST' || !req.url?.endsWith('/chat/completions')) {
          res.writeHead(404).end();
          return;
        }
        llm!.requests++;
        const answer = llm!.queue.shift() ?? llm!.fallback;
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const chunk = (delta: object, finish: string | null) =>
          `data: ${JSON.stringify({
            id: 'chatcmpl-fake',
            object: 'chat.completion.chunk',
            created: 1,
            model: 'fake-model',
            choices: [{ index: 0, delta, finish_reason: finish }],
          })}\n\n`;
        const frames = answer.pieces.map((p) => chunk({ role: 'assistant', content: p }, null));
        frames.push(chunk({}, 'stop'));
        frames.push(
          `data: ${JSON.stringify({
            id: 'chatcmpl-fake',
            object: 'chat.completion.chunk',
            created: 1,
            model: 'fake-model',
            choices: [],
            usage: { prompt_tokens: 11, completion_tokens: answer.pieces.length, total_tokens: 11 + answer.pieces.length },
          })}\n\ndata: [DONE]\n\n`,
        );
        let i = 0;
        const next = () => {
          if (res.destroyed) return;
          if (i >= frames.length) {
            res.end();
            return;
          }
          res.write(frames[i++]);
          // The pace applies to the text pieces; the closing frames follow at once.
          if (i < answer.pieces.length && answer.pace) setTimeout(next, answer.pace);
          else setImmediate(next);
        };
        if (answer.pace) setTimeout(next, answer.pace);
        else next();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    llm = new FakeLlm(server, `http://127.0.0.1:${port}/v1`, fallback);
    return llm;
  }

  push(answer: Answer): void {
    this.queue.push(answer);
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
