// Prometheus metrics of the agent (own registry, never the global one) and the HTTP endpoint that
// serves /metrics, /healthz and /readyz.
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from './log.js';

/** The agent's metric instruments. */
export interface AgentMetrics {
  readonly registry: Registry;
  /** Slices by pool and health (set from every snapshot). */
  readonly slices: Gauge<'pool' | 'health'>;
  /** Allocate handling time, seconds, by pool and result (ok, error). */
  readonly allocateSeconds: Histogram<'pool' | 'result'>;
  /** Register calls to the kubelet by pool and result (ok, error). */
  readonly registrations: Counter<'pool' | 'result'>;
  /** Kubelet restarts noticed (our socket wiped, kubelet.sock recreated, or the stream ended). */
  readonly kubeletRestarts: Counter<'pool'>;
  /** Carving sysfs writes by result (ok, error, blocked). */
  readonly carvingOperations: Counter<'result'>;
  /** PodResources List calls by result. */
  readonly podResourcesLists: Counter<'result'>;
}

/** Creates a fresh registry with the agent's instruments (and Node process metrics when asked). */
export function createMetrics(opts: { processMetrics?: boolean } = {}): AgentMetrics {
  const registry = new Registry();
  if (opts.processMetrics) collectDefaultMetrics({ register: registry, prefix: 'virtualio_agent_' });
  return {
    registry,
    slices: new Gauge({ name: 'virtualio_agent_slices', help: 'Slices advertised, by pool and health', labelNames: ['pool', 'health'], registers: [registry] }),
    allocateSeconds: new Histogram({
      name: 'virtualio_agent_allocate_duration_seconds',
      help: 'Time to answer Allocate, by pool and result',
      labelNames: ['pool', 'result'],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1],
      registers: [registry],
    }),
    registrations: new Counter({ name: 'virtualio_agent_registrations_total', help: 'Register calls to the kubelet, by pool and result', labelNames: ['pool', 'result'], registers: [registry] }),
    kubeletRestarts: new Counter({ name: 'virtualio_agent_kubelet_restarts_seen_total', help: 'Kubelet restarts noticed, by pool', labelNames: ['pool'], registers: [registry] }),
    carvingOperations: new Counter({ name: 'virtualio_agent_carving_operations_total', help: 'Carving sysfs writes, by result', labelNames: ['result'], registers: [registry] }),
    podResourcesLists: new Counter({ name: 'virtualio_agent_podresources_list_total', help: 'PodResources List calls, by result', labelNames: ['result'], registers: [registry] }),
  };
}

/** What /readyz reports: ready, or the reason why not. */
export type Readiness = () => { ready: boolean; reason?: string };

/**
 * Serves GET /metrics, /healthz (always 200 while the process runs), /readyz (200 when
 * `readiness` says ready, 503 with the reason otherwise) and /status (when given) until `signal`
 * aborts. Resolves once listening.
 */
export async function serveMetrics(opts: {
  host: string;
  port: number;
  metrics: AgentMetrics;
  readiness: Readiness;
  /** Optional JSON document served at /status (the agent's last VirtualIONode status). */
  status?: () => unknown;
  logger: Logger;
  signal: AbortSignal;
}): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const r = opts.readiness();
      res.writeHead(r.ready ? 200 : 503, { 'content-type': 'text/plain' }).end(r.ready ? 'ok\n' : `not ready: ${r.reason ?? 'unknown'}\n`);
    } else if (path === '/status' && opts.status) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(opts.status() ?? null)}\n`);
    } else if (path === '/metrics') {
      opts.metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': opts.metrics.registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
    } else {
      res.writeHead(404).end('not found\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => opts.logger.error({ err }, 'metrics server error'));
  opts.signal.addEventListener('abort', () => server.close(), { once: true });
  opts.logger.info({ address: server.address() }, 'metrics endpoint listening');
  return server;
}
