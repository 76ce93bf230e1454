/**
 * A forwarding HTTP proxy on 127.0.0.1 port 0 in front of the server, which drops the
 * first event stream it forwards after `cutAfter` events: the connection ends mid-reply, as
 * when a node or a load balancer goes away, and the client has to resume.
 */
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export class CuttingProxy {
  /** Streams cut so far, and each stream request's `Last-Event-ID`. */
  cuts = 0;
  resumedFrom: (string | undefined)[] = [];

  private constructor(
    private readonly server: Server,
    readonly origin: string,
  ) {}

  static async start(target: string, cutAfter: number): Promise<CuttingProxy> {
    const upstream = new URL(target);
    let proxy: CuttingProxy | undefined;
    const server = createServer((req, res) => {
      const streaming = req.url?.includes('/stream') ?? false;
      if (streaming) proxy!.resumedFrom.push(req.headers['last-event-id'] as string | undefined);
      const cut = streaming && proxy!.cuts === 0;
      const out = request(
        { host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers },
        (up) => {
          res.writeHead(up.statusCode ?? 502, up.headers);
          res.flushHeaders();
          let events = 0;
          up.on('data', (chunk: Buffer) => {
            res.write(chunk);
            events += (chunk.toString().match(/^id:/gm) ?? []).length;
            if (cut && events >= cutAfter && proxy!.cuts === 0) {
              proxy!.cuts++;
              up.destroy();
              res.socket?.destroy();
            }
          });
          up.on('end', () => res.end());
          up.on('error', () => res.destroy());
        },
      );
      out.on('error', () => res.destroy());
      req.pipe(out);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    proxy = new CuttingProxy(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    return proxy;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
