// The operator's HTTP endpoint: /metrics (Prometheus text), /healthz, /readyz.
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

export interface HttpOptions {
  host: string;
  port: number;
  registry: Registry;
  healthy(): boolean;
  ready(): boolean;
}

/** Starts listening; resolves with the server and the port it got (useful with port 0). */
export async function startHttpServer(opts: HttpOptions): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const probe = (ok: boolean) => {
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' });
      res.end(ok ? 'ok\n' : 'not ready\n');
    };
    if (path === '/healthz') probe(opts.healthy());
    else if (path === '/readyz') probe(opts.ready());
    else if (path === '/metrics') {
      opts.registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': opts.registry.contentType });
          res.end(text);
        },
        (err: unknown) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`${String(err)}\n`);
        },
      );
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const addr = server.address();
  return { server, port: typeof addr === 'object' && addr ? addr.port : opts.port };
}
