// Prometheus metrics of the operator, on a registry of its own (never prom-client's global one).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Pool } from './api/types.js';
import type { ControllerObserver } from './runtime/controller.js';
import type { InformerObserver } from './runtime/informer.js';
import type { WorkQueue } from './runtime/workqueue.js';

export class OperatorMetrics implements ControllerObserver, InformerObserver {
  readonly registry = new Registry();
  private readonly duration: Histogram<'controller' | 'outcome'>;
  private readonly errors: Counter<'controller' | 'kind'>;
  private readonly leader: Gauge;
  private readonly restarts: Counter<'resource' | 'reason'>;
  private readonly queues = new Map<string, WorkQueue>();
  private readonly pools: { list?: () => readonly Pool[] } = {};

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'virtualio_operator_' });
    this.duration = new Histogram({
      name: 'virtualio_operator_reconcile_duration_seconds',
      help: 'Time spent in one reconcile, by controller and outcome.',
      labelNames: ['controller', 'outcome'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10],
      registers: [this.registry],
    });
    this.errors = new Counter({
      name: 'virtualio_operator_reconcile_errors_total',
      help: 'Reconciles that failed, by controller and error kind (Conflict, Transient, Invalid, Terminal, Internal...).',
      labelNames: ['controller', 'kind'],
      registers: [this.registry],
    });
    const queues = this.queues;
    new Gauge({
      name: 'virtualio_operator_workqueue_depth',
      help: 'Keys waiting in a controller work queue.',
      labelNames: ['controller'],
      registers: [this.registry],
      collect() {
        for (const [name, q] of queues) this.set({ controller: name }, q.len());
      },
    });
    this.leader = new Gauge({
      name: 'virtualio_operator_leader',
      help: '1 while this replica holds the leader Lease, else 0.',
      registers: [this.registry],
    });
    this.leader.set(0);
    const pools = this.pools;
    new Gauge({
      name: 'virtualio_operator_pool_condition',
      help: 'The conditions of each VirtualIODevice (pool): one series per condition, value 1, with its status and reason (while this replica leads).',
      labelNames: ['pool', 'condition', 'status', 'reason'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const p of pools.list?.() ?? []) {
          for (const c of p.status?.conditions ?? []) this.set({ pool: p.metadata.name, condition: c.type, status: c.status, reason: c.reason }, 1);
        }
      },
    });
    this.restarts = new Counter({
      name: 'virtualio_operator_informer_restarts_total',
      help: 'Informer restarts after a watch error or a silent watch.',
      labelNames: ['resource', 'reason'],
      registers: [this.registry],
    });
  }

  watchQueue(controller: string, q: WorkQueue): void {
    this.queues.set(controller, q);
  }

  /** Exports the conditions of the pools `list` returns (the leader's informer cache) at each scrape. */
  watchPools(list: (() => readonly Pool[]) | undefined): void {
    if (list) this.pools.list = list;
    else delete this.pools.list;
  }

  setLeader(leading: boolean): void {
    this.leader.set(leading ? 1 : 0);
  }

  reconciled(controller: string, seconds: number, outcome: 'success' | 'requeue' | 'error' | 'terminal', errorKind?: string): void {
    this.duration.observe({ controller, outcome }, seconds);
    if (errorKind) this.errors.inc({ controller, kind: errorKind });
  }

  restarted(resource: string, reason: 'error' | 'silence'): void {
    this.restarts.inc({ resource, reason });
  }
}
