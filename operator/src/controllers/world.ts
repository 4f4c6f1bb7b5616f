// The operator's read side: informer caches plus memoized pure computations over them, shared by
// the three controllers. Nothing here writes to the API.
import type { NodeObject, Pool, PoolPlan, VioNode } from '../api/types.js';
import type { Informer } from '../runtime/informer.js';
import { jsonEqual } from '../util/json.js';
import type { KubeVirtContest, KubeVirtView, PermittedLists } from './kubevirt/entries.js';
import type { TenancyOutcome } from './tenancy/reconciler.js';
import { planNode, preparePools, type DeviceConflict, type NodePlan, type PreparedPools } from './plan/plan.js';
import { planOf, plansLocally } from './plan/shape.js';
import { currentAck, type NodeAck, type PoolAck } from './plan/ack.js';

/** Per pool: the VirtualIONodes that mention it (plan, agent pool status or slices) and its conflicts. */
export interface PoolIndex {
  nodes: VioNode[];
  conflicts: DeviceConflict[];
  /**
   * Nodes whose plan for the pool is not carried out yet: the written plan entry differs from the
   * desired one, or the agent has not acted on the VirtualIONode generation that last changed it.
   */
  pending: string[];
  /**
   * Per node whose agent plans locally and whose ack (VirtualIONodeAck) acknowledges the pool's
   * current plan entry: that ack entry. Such a node is not pending, whatever its VirtualIONode says yet.
   */
  acked: Map<string, PoolAck>;
}

/** Where the operator reads the nodes' acks (an informer; absent: no acks, VirtualIONode status only). */
export interface AckSource {
  get(name: string): NodeAck | undefined;
}

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
  /** Set by the KubeVirt controller when another manager keeps changing the lists. */
  contest?: KubeVirtContest | undefined;
}

export interface KubeVirtObject {
  apiVersion?: string;
  kind?: string;
  metadata: NodeObject['metadata'];
  spec?: { configuration?: { permittedHostDevices?: Partial<PermittedLists> & Record<string, unknown> } };
}

/** What one node adds to the pool index, with the inputs it was computed from. */
interface NodePart {
  plan: NodePlan;
  hasNode: boolean;
  vio: VioNode | undefined;
  writes: ReadonlyMap<string, number> | undefined;
  ack: NodeAck | undefined;
  part: { conflicts: readonly DeviceConflict[]; pending: string[]; acked: [string, PoolAck][] };
}

export class World {
  private poolsVersion = 0;
  private preparedCache: { version: number; value: PreparedPools } | undefined;
  private readonly plans = new Map<string, { labels: string; inventory: unknown; spec: unknown; local: unknown; lastKnown: VioNode | undefined; vio: VioNode | undefined; version: number; plan: NodePlan }>();
  /**
   * Per node, its last VirtualIONode that carried an inventory. Planning falls back to it when the
   * VirtualIONode is deleted (the agent re-creates it with an empty plan and no status) or its status
   * is lost, so that a missing report never empties the node's plan. Forgotten with the Node.
   */
  private readonly lastKnown = new Map<string, VioNode>();
  /** Bumped on every change of any cached Node, VirtualIONode or pool. */
  private worldVersion = 0;
  private indexCache: { version: number; value: Map<string, PoolIndex> } | undefined;
  /**
   * Per node and pool: the VirtualIONode generation at which this process last changed the pool's
   * plan entry. Each node's map is replaced, never changed in place, so its identity says whether it changed.
   */
  private readonly planWrites = new Map<string, ReadonlyMap<string, number>>();
  /**
   * Per node, its share of the pool index (conflicts, pools whose plan is pending), kept while the
   * inputs it was computed from are the same objects: a change of one node recomputes that node,
   * not every node (at 10,000 nodes the full pass took longer than the writes it waited for).
   */
  private readonly nodeParts = new Map<string, NodePart>();
  /** Per cached VirtualIONode: the pools it mentions (plan, agent pool status or slices). */
  private readonly mentions = new WeakMap<VioNode, string[]>();
  readonly kubevirt: KubeVirtState = { installed: false, informer: undefined };
  /** Per pool with spec.tenancy: whether its admission policy is written (tenancy controller). */
  readonly tenancy = new Map<string, TenancyOutcome>();

  constructor(
    readonly nodes: Informer<NodeObject>,
    readonly vioNodes: Informer<VioNode>,
    readonly pools: Informer<Pool>,
    readonly kubevirtSettings: KubeVirtSettings,
    private readonly acks?: AckSource,
  ) {
    const bump = () => {
      this.worldVersion++;
    };
    nodes.onChange((obj, old) => {
      bump();
      if (!obj && old) {
        this.lastKnown.delete(old.metadata.name);
        this.planWrites.delete(old.metadata.name);
      }
    });
    vioNodes.onChange((obj) => {
      bump();
      if (obj?.status?.inventory) this.lastKnown.set(obj.metadata.name, obj);
    });
    pools.onChange(bump);
  }

  /**
   * Call when a pool changed in a way planning sees (created, deleted, spec/generation,
   * deletionTimestamp). Status-only changes must not call it: they would invalidate every plan.
   */
  poolsChanged(): void {
    this.poolsVersion++;
  }

  /** Call when a node's ack (VirtualIONodeAck) changed. */
  acksChanged(): void {
    this.worldVersion++;
  }

  /**
   * Records a plan write (plan controller): the pools whose entry changed got the VirtualIONode's new
   * generation, so that a pool's status waits until the node's agent reports having acted on it.
   */
  notePlanWrite(node: string, before: readonly PoolPlan[], after: readonly PoolPlan[], generation: number | undefined): void {
    if (generation === undefined) return;
    const writes = new Map(this.planWrites.get(node));
    for (const p of new Set([...before.map((x) => x.name), ...after.map((x) => x.name)])) {
      if (!jsonEqual(before.find((x) => x.name === p), after.find((x) => x.name === p))) writes.set(p, generation);
    }
    for (const p of writes.keys()) if (!after.some((x) => x.name === p)) writes.delete(p);
    this.planWrites.set(node, writes);
    this.worldVersion++;
  }

  /**
   * For every pool, the VirtualIONodes that mention it and its device conflicts on every node:
   * one pass over all nodes, memoized until anything in the caches changes, so that the status
   * of P pools costs one pass rather than P.
   */
  poolIndex(): Map<string, PoolIndex> {
    if (this.indexCache?.version === this.worldVersion) return this.indexCache.value;
    const idx = new Map<string, PoolIndex>();
    const entry = (pool: string) => {
      let e = idx.get(pool);
      if (!e) {
        e = { nodes: [], conflicts: [], pending: [], acked: new Map() };
        idx.set(pool, e);
      }
      return e;
    };
    const names = new Set<string>();
    for (const n of this.nodes.list()) names.add(n.metadata.name);
    for (const v of this.vioNodes.list()) {
      names.add(v.metadata.name);
      for (const m of this.mentionsOf(v)) entry(m).nodes.push(v);
    }
    for (const n of names) {
      const part = this.nodePart(n);
      for (const c of part.conflicts) entry(c.pool).conflicts.push(c);
      for (const p of part.pending) entry(p).pending.push(n);
      for (const [p, a] of part.acked) {
        const e = entry(p);
        e.acked.set(n, a);
        // Acknowledged before its VirtualIONode mentions the pool (a pool new to the node).
        const v = this.vioNodes.get(n);
        if (v && !this.mentionsOf(v).includes(p)) e.nodes.push(v);
      }
    }
    for (const n of this.nodeParts.keys()) if (!names.has(n)) this.nodeParts.delete(n);
    this.indexCache = { version: this.worldVersion, value: idx };
    return idx;
  }

  private mentionsOf(v: VioNode): string[] {
    let m = this.mentions.get(v);
    if (!m) {
      const mentioned = new Set<string>();
      for (const p of planOf(v) ?? []) mentioned.add(p.name);
      for (const p of v.status?.pools ?? []) mentioned.add(p.name);
      for (const sl of v.status?.slices ?? []) mentioned.add(sl.pool);
      m = [...mentioned];
      this.mentions.set(v, m);
    }
    return m;
  }

  /** One node's share of the pool index, recomputed only when its Node, VirtualIONode, plan, plan writes or ack changed. */
  private nodePart(n: string): NodePart['part'] {
    const plan = this.planFor(n);
    const hasNode = !!this.nodes.get(n);
    const vio = this.vioNodes.get(n);
    const writes = this.planWrites.get(n);
    // Only an agent that plans locally acks; an ack left by one that no longer does says nothing.
    const ack = plansLocally(vio) ? this.acks?.get(n) : undefined;
    const hit = this.nodeParts.get(n);
    if (hit && hit.plan === plan && hit.hasNode === hasNode && hit.vio === vio && hit.writes === writes && hit.ack === ack) return hit.part;
    const pending: string[] = [];
    const acked: [string, PoolAck][] = [];
    // A VirtualIONode without its Node is garbage: no plan will be written to it.
    if (hasNode) {
      // A node whose agent plans locally: what it reports having derived and served.
      const written = planOf(vio) ?? [];
      const observed = vio?.status?.observedGeneration;
      for (const p of new Set([...plan.pools.map((x) => x.name), ...written.map((x) => x.name)])) {
        const want = plan.pools.find((x) => x.name === p);
        // The agent acknowledged carrying out this very entry: read its ack, not its (later) status.
        const current = currentAck(ack, want);
        if (current) {
          acked.push([p, current]);
          continue;
        }
        const have = written.find((x) => x.name === p);
        const changedAt = writes?.get(p);
        // An agent that reports no observedGeneration (older agents) is taken at its word.
        const notActed = !!have && changedAt !== undefined && observed !== undefined && observed < changedAt;
        if (!jsonEqual(want, have) || notActed) pending.push(p);
      }
    }
    const part = { conflicts: plan.conflicts, pending, acked };
    this.nodeParts.set(n, { plan, hasNode, vio, writes, ack, part });
    return part;
  }

  /** Every pool, sorted oldest first with effective values (memoized per pool-set version). */
  prepared(): PreparedPools {
    if (!this.preparedCache || this.preparedCache.version !== this.poolsVersion) {
      this.preparedCache = { version: this.poolsVersion, value: preparePools(this.pools.list()) };
    }
    return this.preparedCache.value;
  }

  /** The node's last VirtualIONode with an inventory, when the current one has none and belongs to the same Node. */
  private fallbackFor(name: string, node: NodeObject | undefined, vio: VioNode | undefined): VioNode | undefined {
    if (vio?.status?.inventory) {
      this.lastKnown.set(name, vio);
      return undefined;
    }
    const last = this.lastKnown.get(name);
    if (!last || !node?.metadata.uid) return undefined;
    // A Node re-created under the same name is another machine: its old inventory does not apply.
    const owner = (last.metadata.ownerReferences ?? []).find((o) => o.kind === 'Node');
    return owner && owner.uid !== node.metadata.uid ? undefined : last;
  }

  /**
   * The plan of one node from the current caches. Memoized on what planning reads: the Node's
   * labels, the inventory and the current plan (written or reported by an agent that plans locally;
   * the VirtualIONode informer keeps an unchanged inventory's, spec's and local plan's identity), the fallback VirtualIONode, the pool set, and, only while some
   * pool is being deleted, the whole VirtualIONode.
   */
  planFor(name: string): NodePlan {
    const node = this.nodes.get(name);
    const vio = this.vioNodes.get(name);
    const prepared = this.prepared();
    const labels = node ? JSON.stringify(node.metadata.labels ?? {}) : '';
    const inventory = vio?.status?.inventory;
    const spec = vio?.spec;
    const local = vio?.status?.localPlan;
    const lastKnown = this.fallbackFor(name, node, vio);
    const deletingVio = prepared.anyDeleting ? vio : undefined;
    const hit = this.plans.get(name);
    if (hit && hit.labels === labels && hit.inventory === inventory && hit.spec === spec && hit.local === local && hit.lastKnown === lastKnown &&
      hit.vio === deletingVio && hit.version === this.poolsVersion) return hit.plan;
    const plan = planNode(node, vio, prepared, lastKnown);
    if (node || vio) this.plans.set(name, { labels, inventory, spec, local, lastKnown, vio: deletingVio, version: this.poolsVersion, plan });
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
      ...(this.kubevirt.contest ? { contest: this.kubevirt.contest } : {}),
    };
  }
}
