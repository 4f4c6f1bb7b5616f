// The operator's read side: informer caches plus memoized pure computations over them, shared by
// the three controllers. Nothing here writes to the API.
import type { NodeObject, Pool, VioNode } from '../api/types.js';
import type { Informer } from '../runtime/informer.js';
import type { KubeVirtView, PermittedLists } from './kubevirt/entries.js';
import { planNode, preparePools, type NodePlan, type PreparedPools } from './plan/plan.js';

/** KubeVirt settings from the command line. */
export interface KubeVirtSettings {
  namespace: string;
  name: string;
  /** Own spec.configuration.permittedHostDevices.{pciHostDevices,mediatedDevices}. */
  manage: boolean;
  /** Admin-declared entries merged into the owned lists. */
  extra: PermittedLists;
}

/** Whether KubeVirt is installed and, if so, the cache of its CR. */
export interface KubeVirtState {
  installed: boolean;
  informer: Informer<KubeVirtObject> | undefined;
}

export interface KubeVirtObject {
  apiVersion?: string;
  kind?: string;
  metadata: NodeObject['metadata'];
  spec?: { configuration?: { permittedHostDevices?: Partial<PermittedLists> & Record<string, unknown> } };
}

export class World {
  private poolsVersion = 0;
  private preparedCache: { version: number; value: PreparedPools } | undefined;
  private readonly plans = new Map<string, { node: NodeObject | undefined; vio: VioNode | undefined; version: number; plan: NodePlan }>();
  readonly kubevirt: KubeVirtState = { installed: false, informer: undefined };

  constructor(
    readonly nodes: Informer<NodeObject>,
    readonly vioNodes: Informer<VioNode>,
    readonly pools: Informer<Pool>,
    readonly kubevirtSettings: KubeVirtSettings,
  ) {}

  /** Call whenever any pool changed. */
  poolsChanged(): void {
    this.poolsVersion++;
  }

  /** Every pool, sorted oldest first with effective values (memoized per pool-set version). */
  prepared(): PreparedPools {
    if (!this.preparedCache || this.preparedCache.version !== this.poolsVersion) {
      this.preparedCache = { version: this.poolsVersion, value: preparePools(this.pools.list()) };
    }
    return this.preparedCache.value;
  }

  /** The plan of one node from the current caches (memoized on the cached objects' identity). */
  planFor(name: string): NodePlan {
    const node = this.nodes.get(name);
    const vio = this.vioNodes.get(name);
    const hit = this.plans.get(name);
    if (hit && hit.node === node && hit.vio === vio && hit.version === this.poolsVersion) return hit.plan;
    const plan = planNode(node, vio, this.prepared());
    if (node || vio) this.plans.set(name, { node, vio, version: this.poolsVersion, plan });
    else this.plans.delete(name);
    return plan;
  }

  kubevirtObject(): KubeVirtObject | undefined {
    const { namespace, name } = this.kubevirtSettings;
    return this.kubevirt.installed ? this.kubevirt.informer?.get(name, namespace) : undefined;
  }

  kubevirtView(): KubeVirtView {
    const { namespace, name, manage } = this.kubevirtSettings;
    const cr = this.kubevirtObject();
    const phd = cr?.spec?.configuration?.permittedHostDevices;
    return {
      installed: this.kubevirt.installed,
      found: !!cr,
      ref: `${namespace}/${name}`,
      managed: manage,
      current: {
        pciHostDevices: Array.isArray(phd?.pciHostDevices) ? phd.pciHostDevices : [],
        mediatedDevices: Array.isArray(phd?.mediatedDevices) ? phd.mediatedDevices : [],
      },
    };
  }
}
