// Prometheus metrics of the agent (own registry, never the global one) and the HTTP endpoint that
// serves /metrics, /healthz and /readyz.
import type { Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type LabelValues } from 'prom-client';
import type { VirtualIONodeStatus } from '../../crds/generated/types.js';
import type { Logger } from './log.js';

/** The agent's metric instruments. */
export interface AgentMetrics {
  readonly registry: Registry;
  /** Slices by pool and health (set from every snapshot). */
  readonly slices: Gauge<'pool' | 'health'>;
  /** Allocate handling time, seconds, by pool and result (ok, error). */
  readonly allocateSeconds: Histogram<'pool' | 'result'>;
  /**
   * DRA: time to answer NodePrepareResources / NodeUnprepareResources for one claim, seconds, by
   * operation (prepare, unprepare) and result (ok, error); the kubelet's own view of the same calls is
   * its dra_operations_duration_seconds.
   */
  readonly draOperationSeconds: Histogram<'operation' | 'result'>;
  /** Register calls to the kubelet by pool and result (ok, error). */
  readonly registrations: Counter<'pool' | 'result'>;
  /** Kubelet restarts noticed (our socket wiped, kubelet.sock recreated, or the stream ended). */
  readonly kubeletRestarts: Counter<'pool'>;
  /** Carving sysfs writes by result (ok, error, blocked). */
  readonly carvingOperations: Counter<'result'>;
  /** PodResources List calls by result. */
  readonly podResourcesLists: Counter<'result'>;
  /**
   * Slices that turned from Healthy to Unhealthy, by pool, counted from `slices` (what the kubelet is
   * sent) as it is set, so a slice the agent repairs within a second is still seen.
   */
  readonly sliceHealthFailures: Counter<'pool'>;
  /**
   * The agent's last VirtualIONode status, read at each scrape for the gauges derived from it
   * (pool capacity, states, conditions, unhealthy slices; see docs/observability.md). serveMetrics
   * sets it from its `status`.
   */
  statusSource: (() => unknown) | undefined;
}

/** Results of `carvingOperations`, exported at 0 from the start so rates and alerts see the first one. */
export const CARVING_RESULTS = ['ok', 'error', 'blocked', 'refused', 'skipped'] as const;

/** The states a pool can be in on a node (VirtualIONode status.pools[].state). */
export const POOL_STATES = ['Ready', 'Carving', 'Blocked', 'Error', 'Deleting', 'Released', 'Draining'] as const;

/** The problems the node's Degraded condition names (status.ts), exported as virtualio_agent_node_problem. */
export const NODE_PROBLEMS = ['CarvingFailed', 'CarvingBlocked', 'UnhealthySlices', 'DiscoveryErrors', 'PodResourcesUnavailable', 'HoldersUnknown', 'InventoryTruncated', 'CheckpointUnavailable', 'Draining'] as const;

/**
 * The `slices` gauge, which also counts slices that turned unhealthy on `failures`: each time a
 * pool's counts are set (Healthy and Unhealthy, in either order), as many as the Unhealthy count rose
 * and the Healthy count fell at once. New slices that start Unhealthy (e.g. while they are carved)
 * and slices that go away are not counted.
 */
class SliceGauge extends Gauge<'pool' | 'health'> {
  private readonly last = new Map<string, { healthy: number; unhealthy: number }>();
  private readonly pending = new Map<string, { healthy?: number; unhealthy?: number }>();

  constructor(
    registry: Registry,
    private readonly failures: Counter<'pool'>,
  ) {
    super({ name: 'virtualio_agent_slices', help: 'Slices advertised, by pool and health', labelNames: ['pool', 'health'], registers: [registry] });
  }

  override set(labels: LabelValues<'pool' | 'health'> | number, value?: number): void {
    if (typeof labels === 'number') return super.set(labels);
    const v = value ?? 0;
    super.set(labels, v);
    if (labels.pool === undefined || (labels.health !== 'Healthy' && labels.health !== 'Unhealthy')) return;
    const pool = String(labels.pool);
    const p = { ...this.pending.get(pool), [labels.health === 'Healthy' ? 'healthy' : 'unhealthy']: v };
    if (p.healthy === undefined || p.unhealthy === undefined) {
      this.pending.set(pool, p);
      return;
    }
    this.pending.delete(pool);
    const before = this.last.get(pool);
    if (!before) this.failures.inc({ pool }, 0);
    else {
      const turned = Math.min(Math.max(0, p.unhealthy - before.unhealthy), Math.max(0, before.healthy - p.healthy));
      if (turned > 0) this.failures.inc({ pool }, turned);
    }
    this.last.set(pool, { healthy: p.healthy, unhealthy: p.unhealthy });
  }
}

/** Slice counts of one pool on this node, from the status. */
function poolCounts(st: VirtualIONodeStatus): Map<string, { unhealthy: number; draining: number }> {
  const out = new Map<string, { unhealthy: number; draining: number }>();
  for (const p of st.pools ?? []) out.set(p.name, { unhealthy: 0, draining: 0 });
  for (const s of st.slices ?? []) {
    const c = out.get(s.pool) ?? { unhealthy: 0, draining: 0 };
    if (s.health !== 'Healthy') c.unhealthy++;
    if (s.draining) c.draining++;
    out.set(s.pool, c);
  }
  return out;
}

/** A resource name as kube-state-metrics writes it in its `resource` label (nvidia.com/gpu → nvidia_com_gpu). */
export function ksmResource(name: string): string {
  return name.replace(/[^a-zA-Z0-9_]/g, '_');
}

/**
 * Writes that have not returned, by pool and device, with how long (seconds): from the pools'
 * messages and the Degraded condition (`<device>: stuck: <path>=... has not returned for N s`).
 */
export function stuckWrites(st: VirtualIONodeStatus): { pool: string; device: string; seconds: number }[] {
  const out = new Map<string, { pool: string; device: string; seconds: number }>();
  const add = (pool: string, device: string, seconds: number): void => {
    const k = `${pool}\u0000${device}`;
    out.set(k, { pool, device, seconds: Math.max(seconds, out.get(k)?.seconds ?? 0) });
  };
  const re = /(?:^|; |CarvingBlocked: )(\S*?): stuck: .*? has not returned for (\d+) s/g;
  for (const p of st.pools ?? []) {
    for (const m of (p.message ?? '').matchAll(re)) add(p.name, m[1] ?? '', Number(m[2]));
  }
  // The Degraded message names them as <pool>/<device> (pool '' when no pool is known).
  const degraded = (st.conditions ?? []).find((c) => c.type === 'Degraded' && c.status === 'True');
  for (const m of (degraded?.message ?? '').matchAll(re)) {
    const at = (m[1] ?? '').indexOf('/');
    if (at >= 0) add((m[1] ?? '').slice(0, at), (m[1] ?? '').slice(at + 1), Number(m[2]));
  }
  return [...out.values()];
}

/** The gauges read from the status at each scrape. */
function registerStatusGauges(registry: Registry, read: () => VirtualIONodeStatus | undefined): void {
  const gauge = <T extends string>(name: string, help: string, labelNames: readonly T[], fill: (g: Gauge<T>, st: VirtualIONodeStatus) => void): void => {
    new Gauge<T>({
      name, help, labelNames, registers: [registry],
      collect() {
        this.reset();
        const st = read();
        if (st) fill(this, st);
      },
    });
  };
  const poolGauge = (name: string, help: string, value: (p: NonNullable<VirtualIONodeStatus['pools']>[number]) => number): void =>
    gauge(name, help, ['pool', 'resource'], (g, st) => {
      for (const p of st.pools ?? []) g.set({ pool: p.name, resource: ksmResource(p.resourceName ?? '') }, value(p));
    });
  gauge('virtualio_agent_build_info', 'Always 1, with the agent version', ['version'], (g, st) => g.set({ version: st.agentVersion ?? 'unknown' }, 1));
  poolGauge('virtualio_agent_pool_capacity_slices', 'Slices of a pool on this node (carved and reported)', (p) => p.capacity ?? 0);
  poolGauge('virtualio_agent_pool_allocatable_slices', 'Slices of a pool on this node that can be handed out (healthy, not draining)', (p) => p.allocatable ?? 0);
  poolGauge('virtualio_agent_pool_allocated_slices', 'Slices of a pool on this node held by pods', (p) => p.allocated ?? 0);
  poolGauge('virtualio_agent_pool_registered', '1 when the pool is registered with the kubelet (device plugin or DRA), else 0', (p) => (p.registered ? 1 : 0));
  gauge('virtualio_agent_pool_unhealthy_slices', 'Slices of a pool on this node whose health is not Healthy', ['pool'], (g, st) => {
    for (const [pool, c] of poolCounts(st)) g.set({ pool }, c.unhealthy);
  });
  gauge('virtualio_agent_pool_draining_slices', 'Slices no longer planned that are kept for the pods holding them', ['pool'], (g, st) => {
    for (const [pool, c] of poolCounts(st)) g.set({ pool }, c.draining);
  });
  gauge('virtualio_agent_pool_state', 'The state of a pool on this node: 1 for the current state, 0 for the others', ['pool', 'state'], (g, st) => {
    for (const p of st.pools ?? []) for (const s of POOL_STATES) g.set({ pool: p.name, state: s }, p.state === s ? 1 : 0);
  });
  gauge('virtualio_agent_slice_unhealthy', 'One series per slice whose health is not Healthy (value 1), with its holder when held', ['pool', 'slice', 'parent', 'held', 'holder_namespace', 'holder_pod', 'vmi'], (g, st) => {
    for (const s of st.slices ?? []) {
      if (s.health === 'Healthy') continue;
      const a = s.allocation;
      g.set({ pool: s.pool, slice: s.id, parent: s.parent ?? '', held: a ? 'true' : 'false', holder_namespace: a?.namespace ?? '', holder_pod: a?.pod ?? '', vmi: a?.vmi ?? '' }, 1);
    }
  });
  gauge('virtualio_agent_node_condition', 'The conditions of this node\'s VirtualIONode: one series per condition, value 1, with its status and reason', ['condition', 'status', 'reason'], (g, st) => {
    for (const c of st.conditions ?? []) g.set({ condition: c.type, status: c.status, reason: c.reason }, 1);
  });
  gauge('virtualio_agent_node_problem', 'The problems the node\'s Degraded condition names: 1 while present, 0 otherwise', ['problem'], (g, st) => {
    const d = (st.conditions ?? []).find((c) => c.type === 'Degraded');
    const named = new Set<string>();
    if (d?.status === 'True') {
      named.add(d.reason);
      for (const m of d.message.matchAll(/(?:^| \| )([A-Za-z]+): /g)) named.add(m[1] ?? '');
    }
    for (const p of NODE_PROBLEMS) g.set({ problem: p }, named.has(p) ? 1 : 0);
  });
  gauge('virtualio_agent_write_stuck_seconds', 'Sysfs writes that have not returned (the device is probably held open), by pool and device: for how long', ['pool', 'device'], (g, st) => {
    for (const w of stuckWrites(st)) g.set({ pool: w.pool, device: w.device }, w.seconds);
  });
}

/** Creates a fresh registry with the agent's instruments (and Node process metrics when asked). */
export function createMetrics(opts: { processMetrics?: boolean } = {}): AgentMetrics {
  const registry = new Registry();
  if (opts.processMetrics) collectDefaultMetrics({ register: registry, prefix: 'virtualio_agent_' });
  const sliceHealthFailures = new Counter({ name: 'virtualio_agent_slice_health_failures_total', help: 'Slices that turned from Healthy to Unhealthy, by pool (device plugin pools)', labelNames: ['pool'] as const, registers: [registry] });
  const carvingOperations = new Counter({ name: 'virtualio_agent_carving_operations_total', help: 'Carving sysfs writes, by result (ok, error, blocked, refused by the safety gate, skipped)', labelNames: ['result'] as const, registers: [registry] });
  for (const result of CARVING_RESULTS) carvingOperations.inc({ result }, 0);
  const m: AgentMetrics = {
    registry,
    slices: new SliceGauge(registry, sliceHealthFailures),
    allocateSeconds: new Histogram({
      name: 'virtualio_agent_allocate_duration_seconds',
      help: 'Time to answer Allocate, by pool and result',
      labelNames: ['pool', 'result'],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1],
      registers: [registry],
    }),
    draOperationSeconds: new Histogram({
      name: 'virtualio_agent_dra_operation_duration_seconds',
      help: 'Time to answer NodePrepareResources or NodeUnprepareResources for one claim, by operation (prepare, unprepare) and result',
      labelNames: ['operation', 'result'],
      // Prepare reads the claim from the API server and writes CDI and metadata files: slower than Allocate.
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30],
      registers: [registry],
    }),
    registrations: new Counter({ name: 'virtualio_agent_registrations_total', help: 'Register calls to the kubelet, by pool and result', labelNames: ['pool', 'result'], registers: [registry] }),
    kubeletRestarts: new Counter({ name: 'virtualio_agent_kubelet_restarts_seen_total', help: 'Kubelet restarts noticed, by pool', labelNames: ['pool'], registers: [registry] }),
    carvingOperations,
    podResourcesLists: new Counter({ name: 'virtualio_agent_podresources_list_total', help: 'PodResources List calls, by result', labelNames: ['result'], registers: [registry] }),
    sliceHealthFailures,
    statusSource: undefined,
  };
  registerStatusGauges(registry, () => (m.statusSource?.() ?? undefined) as VirtualIONodeStatus | undefined);
  return m;
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
  if (opts.status) opts.metrics.statusSource = opts.status;
  // Not `import { createServer } from 'node:http'`: the ES module view of node:http reads every export,
  // which loads Node's bundled undici (fetch, WebSocket) the agent never uses: 50 ms of start and
  // 13 MiB of RSS (docs/design-decisions.md, "Agent start-up").
  const { createServer } = process.getBuiltinModule('node:http');
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const r = opts.readiness();
      res.writeHead(r.ready ? 200 : 503, { 'content-type': 'text/plain' }).end(r.ready ? `ok${r.reason ? ` (${r.reason})` : ''}\n` : `not ready: ${r.reason ?? 'unknown'}\n`);
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
