// Status controller: one key per pool. Keeps the finalizer, rolls the pool's status up from every
// VirtualIONode, writes it (server-side apply on the status subresource) only when it changed,
// records Events, and removes the finalizer once every node has released the pool. Finalizers change
// through conditional merge patches, never a full update of the cached (annotation-less) copy.
import type { Logger } from 'pino';
import type { Pool, VioNode } from '../../api/types.js';
import { addFinalizer, removeFinalizer } from '../../kube/finalizers.js';
import type { KubePort } from '../../kube/ports.js';
import { FIELD_MANAGER, POOL_FINALIZER, VIRTUALIO_API_VERSION, VirtualIODevices } from '../../kube/resources.js';
import type { Clock } from '../../runtime/clock.js';
import type { EventRecorder } from '../../runtime/events.js';
import { done, type Reconciler, type Result } from '../../runtime/result.js';
import { jsonEqual } from '../../util/json.js';
import { kubevirtCondition, poolEntries } from '../kubevirt/entries.js';
import type { World } from '../world.js';
import { computeStatus, normalizeStatus } from './status.js';

export class StatusReconciler implements Reconciler {
  constructor(private readonly deps: { kube: KubePort; world: World; clock: Clock; events: EventRecorder; log: Logger }) {}

  async reconcile(name: string): Promise<Result> {
    const { kube, world, clock, events, log } = this.deps;
    const pool = world.pools.get(name);
    if (!pool) return done;
    const finalizers = pool.metadata.finalizers ?? [];
    const deleting = !!pool.metadata.deletionTimestamp;
    if (!deleting && !finalizers.includes(POOL_FINALIZER)) {
      await addFinalizer(kube, VirtualIODevices, pool, POOL_FINALIZER, FIELD_MANAGER);
      log.info({ pool: name }, 'Added finalizer to VirtualIODevice');
      // The update comes back through the informer and queues this key again.
      return done;
    }
    const bad = world.prepared().malformed.get(name);
    if (bad) {
      // Kept from an older schema, past today's CEL rules: not planned anew, nodes keep its entries.
      const message = `spec cannot be read (${bad.problem}); nodes keep the pool's current plan until the spec is fixed`;
      log.error({ pool: name, problem: bad.problem }, 'VirtualIODevice spec cannot be read');
      await events.record({ apiVersion: VIRTUALIO_API_VERSION, kind: 'VirtualIODevice', metadata: pool.metadata }, 'Warning', 'InvalidSpec', message);
      return done;
    }
    const prepared = world.prepared().byName.get(name);
    if (!prepared) return done;
    const { nodes, conflicts, pending, acked } = world.poolIndex().get(name) ?? { nodes: [], conflicts: [], pending: [], acked: new Map() };
    const entries = poolEntries(prepared, nodes);
    const result = computeStatus(pool.status, {
      prepared, nodes, conflicts, pendingNodes: pending, ackedNodes: acked, kubevirtEntries: entries,
      kubevirtCondition: kubevirtCondition(prepared, entries, world.kubevirtView()), now: clock.now(),
      tenancy: world.tenancy.get(name),
      ...(deleting ? { unreported: unreportedNodes(world, name, nodes) } : {}),
    });
    if (!jsonEqual(normalizeStatus(pool.status), result.status)) {
      await kube.apply<Pool>(VirtualIODevices, {
        apiVersion: VIRTUALIO_API_VERSION, kind: 'VirtualIODevice', metadata: { name }, status: result.status,
      }, { fieldManager: FIELD_MANAGER, force: true, subresource: 'status' });
      log.debug({ pool: name }, 'Updated VirtualIODevice status');
    }
    const target = { apiVersion: VIRTUALIO_API_VERSION, kind: 'VirtualIODevice', metadata: pool.metadata };
    for (const ev of result.events) await events.record(target, ev.type, ev.reason, ev.message);
    if (deleting && result.released && finalizers.includes(POOL_FINALIZER)) {
      await removeFinalizer(kube, VirtualIODevices, pool, POOL_FINALIZER, FIELD_MANAGER);
      log.info({ pool: name }, 'Removed finalizer from VirtualIODevice; every node released the pool');
    }
    return done;
  }
}

/**
 * Nodes that may hold a pool being deleted but whose VirtualIONode cannot say so: a Node without a
 * VirtualIONode (deleted; the plan controller re-creates it), and a node the pool is planned on
 * (from the node's last known plan) whose VirtualIONode does not mention the pool (re-created by
 * its agent, plan not written back yet). A node whose Node is gone too left the cluster.
 */
export function unreportedNodes(world: World, pool: string, mentioning: readonly VioNode[]): { node: string; why: string }[] {
  const seen = new Set(mentioning.map((v) => v.metadata.name));
  const out: { node: string; why: string }[] = [];
  for (const n of world.nodes.list()) {
    const name = n.metadata.name;
    if (seen.has(name)) continue;
    if (!world.vioNodes.get(name)) out.push({ node: name, why: 'the Node has no VirtualIONode, so its agent cannot report' });
    else if (world.planFor(name).pools.some((p) => p.name === pool)) out.push({ node: name, why: 'its VirtualIONode does not carry the plan yet' });
  }
  return out.sort((a, b) => a.node.localeCompare(b.node));
}
