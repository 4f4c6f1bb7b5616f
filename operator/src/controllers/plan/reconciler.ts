// Plan controller: one key per node; writes the node's VirtualIONode.spec.pools with server-side
// apply (field manager virtualio-operator) when it differs from the desired plan, and an empty plan
// with a JSON merge patch of spec.pools alone (see below).
import type { Logger } from 'pino';
import type { PoolPlan, VioNode } from '../../api/types.js';
import type { KubePort } from '../../kube/ports.js';
import { FIELD_MANAGER, VIRTUALIO_API_VERSION, VirtualIONodes } from '../../kube/resources.js';
import { done, type Reconciler, type Result } from '../../runtime/result.js';
import { jsonEqual } from '../../util/json.js';
import { plansLocally } from './shape.js';
import type { World } from '../world.js';

export class PlanReconciler implements Reconciler {
  constructor(private readonly deps: { kube: KubePort; world: World; log: Logger }) {}

  async reconcile(name: string): Promise<Result> {
    const { kube, world, log } = this.deps;
    const node = world.nodes.get(name);
    // No Node: its VirtualIONode is garbage-collected through the ownerReference; applying would recreate it.
    if (!node?.metadata.uid) return done;
    const vio = world.vioNodes.get(name);
    if (plansLocally(vio)) return this.leaveToAgent(name, vio);
    const plan = world.planFor(name);
    const owned = (vio?.metadata.ownerReferences ?? []).some((o) => o.kind === 'Node' && o.uid === node.metadata.uid);
    // A missing spec.pools is not an empty plan: an agent creates its VirtualIONode without one and
    // reads that as "no plan yet" (it keeps everything and stays unready), so an empty plan is
    // written too, once.
    const planned = Array.isArray(vio?.spec?.pools);
    if (vio && owned && planned && jsonEqual(vio.spec?.pools, plan.pools)) return done;
    const body = {
      apiVersion: VIRTUALIO_API_VERSION,
      kind: 'VirtualIONode',
      metadata: {
        name,
        ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name, uid: node.metadata.uid }],
      },
      spec: { pools: plan.pools satisfies PoolPlan[] },
    };
    // Server-side apply cannot say "this list is now empty" when the same manager owned its items:
    // it prunes the list (and the emptied spec), which the agent reads as "no plan yet", or fails
    // with `spec.pools: null` when an Update manager also owns the list (kube-apiserver 1.36). A
    // merge patch writes exactly `spec.pools: []` (and the owner when it is missing) and nothing
    // else: never a full update of the cached copy, which lacks annotations.
    const written = vio && plan.pools.length === 0 && (!planned || (vio.spec?.pools ?? []).length > 0)
      ? await kube.mergePatch<VioNode>(VirtualIONodes, name, {
        ...(owned ? {} : { metadata: { ownerReferences: body.metadata.ownerReferences } }),
        spec: { pools: [] },
      }, { fieldManager: FIELD_MANAGER })
      : await kube.apply<VioNode>(VirtualIONodes, body, { fieldManager: FIELD_MANAGER, force: true });
    // Pool statuses wait for the agent to report this generation before they count the node as done.
    world.notePlanWrite(name, vio?.spec?.pools ?? [], plan.pools, written.metadata.generation);
    log.info({ node: name, pools: plan.pools.map((p) => p.name) }, vio ? 'Updated VirtualIONode plan' : 'Created VirtualIONode');
    return done;
  }

  /**
   * The node's agent derives its own plan (status.localPlan): nothing is written for a pool edit. A
   * spec.pools written before the agent planned locally is removed, once: an agent of the previous
   * version started on this node later (a rollback) then reads "no plan yet" and keeps what exists,
   * rather than acting on a plan that stopped being kept up to date.
   */
  private async leaveToAgent(name: string, vio: VioNode | undefined): Promise<Result> {
    if (vio?.spec?.pools === undefined) return done;
    await this.deps.kube.mergePatch<VioNode>(VirtualIONodes, name, { spec: { pools: null } }, { fieldManager: FIELD_MANAGER });
    this.deps.log.info({ node: name }, 'The agent plans locally; removed the written plan');
    return done;
  }
}
