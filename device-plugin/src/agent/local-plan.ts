// Local planning (--local-plan): the agent derives its own node's plan from the VirtualIODevices and
// its Node's labels with the operator's planner (operator/src/controllers/plan/plan.ts: one source of
// truth, no copy), so that a pool edit reaches every node through one watch event instead of one
// VirtualIONode write per node. The operator reads the plan back from status.localPlan for the pool
// status and the KubeVirt lists, and writes no spec.pools for this node.
//
// Planning input is exactly what the operator sees: the status this agent publishes (inventory with
// its `original` facts, pool states, slices, and in `localPlan` the plan it serves, which is the
// previous plan for the stability rules), reduced by the operator's own cache form. The VirtualIONode
// itself is still ensured and watched (ClusterPlanSource) for its existence and generation.
import type { VirtualIONodeStatus } from '../../../crds/generated/types.js';
import type { Pool, VioNode } from '../../../operator/src/api/types.js';
import { vioNodeCacheForm, withoutManagedFields } from '../../../operator/src/controllers/plan/node-view.js';
import { planNode, preparePools, type NodeLike, type NodePlan, type PreparedPools } from '../../../operator/src/controllers/plan/plan.js';
import type { Logger } from '../log.js';
import { ClusterPlanSource, type KubeAgentPort } from './cluster.js';
import { validatePlan, type PlanSource, type PlanState } from './plan.js';

/** An API object as the watches deliver it. */
export interface KubeItem {
  metadata: { name: string; uid?: string; resourceVersion?: string; labels?: Record<string, string>; [k: string]: unknown };
  [k: string]: unknown;
}

/** What local planning needs from the API server besides the VirtualIONode. */
export interface LocalPlanPort extends KubeAgentPort {
  watchPools(onItems: (pools: KubeItem[]) => void, signal: AbortSignal): Promise<void>;
  watchNode(name: string, onNode: (node: KubeItem | undefined) => void, signal: AbortSignal): Promise<void>;
}

/**
 * The node's view planning reads from a status this agent publishes: the operator's cache form of
 * the VirtualIONode that status makes. `prev` keeps identities of unchanged parts.
 */
export function ownView(nodeName: string, status: VirtualIONodeStatus, prev?: VioNode): VioNode {
  return vioNodeCacheForm(prev, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: nodeName }, status } as VioNode);
}

/** The plan of this node: the operator's planner on the same inputs the operator has (see the top of this file). */
export function deriveLocalPlan(node: NodeLike | undefined, view: VioNode, prepared: PreparedPools): NodePlan {
  return planNode(node, view, prepared);
}

/** Whether a published status carries an inventory planning can trust: a scan has been taken (a node has PCI functions). */
function scanned(status: VirtualIONodeStatus | undefined): status is VirtualIONodeStatus {
  return (status?.inventory?.devices?.length ?? 0) > 0;
}

export class LocalPlanSource implements PlanSource {
  private state: PlanState = { kind: 'none', message: 'local planning: VirtualIODevices, Node and inventory not read yet' };
  private prepared: PreparedPools | undefined;
  /** undefined: not read yet; null: the Node does not exist. */
  private node: NodeLike | null | undefined;
  private view: VioNode | undefined;
  private notify: () => void = () => undefined;
  private lastText = '';
  private readonly log: Logger;
  /** Lifecycle of the VirtualIONode (ensure, re-create) and its generation; its plan is not used. */
  readonly object: ClusterPlanSource;
  /** Derivations run and the CPU time they took (metrics, benchmarks). */
  derivations = 0;
  derivationMs = 0;

  constructor(
    private readonly kube: LocalPlanPort,
    private readonly nodeName: string,
    logger: Logger,
    onRecreated?: () => void,
  ) {
    this.log = logger.child({ component: 'local-plan', node: nodeName });
    this.object = new ClusterPlanSource(kube, nodeName, logger, onRecreated);
  }

  current(): PlanState {
    return this.state;
  }

  /** Every VirtualIODevice (exposed for tests). */
  observePools(items: readonly KubeItem[]): void {
    this.prepared = preparePools(items.map((o) => withoutManagedFields(o as unknown as Pool)));
    this.derive();
  }

  /** This node's Node object, undefined when it does not exist (exposed for tests). */
  observeNode(obj: KubeItem | undefined): void {
    this.node = obj ? { metadata: { name: obj.metadata.name, ...(obj.metadata.uid ? { uid: obj.metadata.uid } : {}), labels: { ...obj.metadata.labels } } } : null;
    this.derive();
  }

  /** A status the agent publishes: its inventory, reports and the plan it serves. */
  observeStatus(status: VirtualIONodeStatus): void {
    if (!scanned(status)) return;
    this.view = ownView(this.nodeName, status, this.view);
    this.derive();
  }

  private derive(): void {
    const next = this.compute();
    const text = JSON.stringify(next);
    if (text === this.lastText) return;
    this.lastText = text;
    this.state = next;
    if (next.kind === 'ok') this.log.info({ pools: (next.spec.pools ?? []).map((p) => p.name) }, 'plan derived');
    else if (next.kind === 'error') this.log.warn(next.message);
    this.notify();
  }

  private compute(): PlanState {
    const kept = this.state.kind === 'ok' ? ' (serving the last plan)' : '';
    if (!this.prepared || this.node === undefined || !this.view) {
      const missing = [!this.prepared && 'VirtualIODevices', this.node === undefined && 'its Node', !this.view && 'the inventory'].filter(Boolean).join(', ');
      return this.state.kind === 'ok' ? this.state : { kind: 'none', message: `local planning: not read yet: ${missing}` };
    }
    // A Node that is gone is not "no pools": keep what is served until it is back (or the agent is removed with it).
    if (this.node === null) return { kind: this.state.kind === 'ok' ? 'error' : 'none', message: `local planning: Node ${this.nodeName} not found${kept}` } as PlanState;
    const t0 = performance.now();
    const plan = deriveLocalPlan(this.node, this.view, this.prepared);
    this.derivationMs += performance.now() - t0;
    this.derivations++;
    const r = validatePlan({ pools: plan.pools });
    if (!r.ok) return { kind: 'error', message: `local planning: the derived plan is invalid: ${r.message}${kept}` };
    const generation = this.object.generation;
    return { kind: 'ok', spec: r.spec, ...(generation !== undefined ? { generation } : {}) };
  }

  async run(signal: AbortSignal, onChange: () => void): Promise<void> {
    this.notify = onChange;
    await Promise.all([
      // A new generation (the operator removing an old spec.pools, say) is reported as observed.
      this.object.run(signal, () => {
        this.lastText = '';
        this.derive();
      }),
      this.kube.watchPools((items) => this.observePools(items), signal),
      this.kube.watchNode(this.nodeName, (n) => this.observeNode(n), signal),
    ]);
  }
}
