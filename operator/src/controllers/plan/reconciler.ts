// Plan controller: one key per node; writes the node's VirtualIONode.spec.pools with server-side
// apply (field manager virtualio-operator) when it differs from the desired plan.
import type { Logger } from 'pino';
import type { PoolPlan, VioNode } from '../../api/types.js';
import type { KubePort } from '../../kube/ports.js';
import { FIELD_MANAGER, VIRTUALIO_API_VERSION, VirtualIONodes } from '../../kube/resources.js';
import { done, type Reconciler, type Result } from '../../runtime/result.js';
import { jsonEqual } from '../../util/json.js';
import type { World } from '../world.js';

export class PlanReconciler implements Reconciler {
  constructor(private readonly deps: { kube: KubePort; world: World; log: Logger }) {}

  async reconcile(name: string): Promise<Result> {
    const { kube, world, log } = this.deps;
    const node = world.nodes.get(name);
    // No Node: its VirtualIONode is garbage-collected through the ownerReference; applying would recreate it.
    if (!node?.metadata.uid) return done;
    const vio = world.vioNodes.get(name);
    const plan = world.planFor(name);
    const owned = (vio?.metadata.ownerReferences ?? []).some((o) => o.kind === 'Node' && o.uid === node.metadata.uid);
    if (vio && owned && jsonEqual(vio.spec?.pools ?? [], plan.pools)) return done;
    const body = {
      apiVersion: VIRTUALIO_API_VERSION,
      kind: 'VirtualIONode',
      metadata: {
        name,
        ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name, uid: node.metadata.uid }],
      },
      spec: { pools: plan.pools satisfies PoolPlan[] },
    };
    if (vio && plan.pools.length === 0 && (vio.spec?.pools ?? []).length > 0) {
      // Server-side apply cannot empty the list: it prunes the items we owned, then the emptied
      // spec, and the API server refuses `spec: null`. An update writes the empty plan.
      await kube.replace<VioNode>(VirtualIONodes, { ...vio, metadata: { ...vio.metadata, ownerReferences: body.metadata.ownerReferences }, spec: { ...vio.spec, pools: [] } });
    } else {
      await kube.apply<VioNode>(VirtualIONodes, body, { fieldManager: FIELD_MANAGER, force: true });
    }
    log.info({ node: name, pools: plan.pools.map((p) => p.name) }, vio ? 'Updated VirtualIONode plan' : 'Created VirtualIONode');
    return done;
  }
}
