// VirtualIONode.status as a pure function of what the agent knows (STYLE P3/P4): conditions keep
// their lastTransitionTime unless their status flips, so an unchanged world gives an equal object
// and nothing is written.
import type { VirtualIONodeStatus } from '../../../crds/generated/types.js';
import type { Holder } from '../podresources/client.js';
import type { BlockedChange, Inventory, PoolPlan, Slice } from '../model.js';
import { boundInventory, truncationMessage } from './inventory-bound.js';

export type Condition = NonNullable<VirtualIONodeStatus['conditions']>[number];
export type PoolStatus = NonNullable<VirtualIONodeStatus['pools']>[number];

/** A pool's registration with the kubelet, as the front end reports it. */
export interface PoolRegistration {
  registered: boolean;
  error?: string;
  via?: NonNullable<PoolStatus['registeredVia']>;
}

export interface StatusInput {
  generation?: number;
  agentVersion: string;
  /** The plan being served (the last valid one). */
  pools: readonly PoolPlan[];
  /** Pools no longer in the plan whose slices pods still hold (reported with state Draining). */
  drainingPools?: readonly PoolPlan[];
  /** Why no plan is known yet (nothing is removed meanwhile). */
  noPlanReason?: string;
  /** Why the node-local checkpoint cannot be read or written. */
  checkpointError?: string;
  /** Why the current plan is not usable (it is then the last valid one that is served). */
  planError?: string;
  planLoaded: boolean;
  inventory: Inventory;
  scanError?: string;
  slices: readonly Slice[];
  holders: ReadonlyMap<string, Holder>;
  /** On-demand mdevs by UUID: the claim each was carved for. */
  carvings?: ReadonlyMap<string, { namespace: string; claim: string; uid: string; since: string }>;
  /** Registration state per pool name. */
  registration: ReadonlyMap<string, PoolRegistration>;
  blocked: readonly BlockedChange[];
  /** Mdevs / vports on pool devices that virtualio did not create and leaves alone (reported in the pool message). */
  foreign?: readonly BlockedChange[];
  /** Failed carving writes, by pool (or '' when the pool is unknown). */
  carvingErrors: readonly { pool: string; message: string }[];
  podResourcesError?: string;
  /** Why nobody can tell now who holds what (every existing slice then counts as held). */
  holdersUnknown?: string;
  previous?: readonly Condition[];
  now: Date;
}

const MAX_SLICES = 4096;

/** Sets one condition, keeping `lastTransitionTime` when the status did not change. */
export function setCondition(list: readonly Condition[], next: Omit<Condition, 'lastTransitionTime'>, now: Date): Condition[] {
  const prev = list.find((c) => c.type === next.type);
  const lastTransitionTime = prev && prev.status === next.status ? prev.lastTransitionTime : now.toISOString().replace(/\.\d{3}Z$/, 'Z');
  return [...list.filter((c) => c.type !== next.type), { ...next, lastTransitionTime }].sort((a, b) => (a.type < b.type ? -1 : 1));
}

function truncate(msg: string, max = 1024): string {
  return msg.length > max ? `${msg.slice(0, max - 3)}...` : msg;
}

/** Builds the whole status. */
export function buildStatus(inp: StatusInput): VirtualIONodeStatus {
  const byPool = new Map<string, Slice[]>();
  for (const s of inp.slices) {
    const l = byPool.get(s.pool) ?? [];
    l.push(s);
    byPool.set(s.pool, l);
  }
  const holderText = (sl: readonly Slice[]): string =>
    sl
      .map((s) => {
        const h = inp.holders.get(s.id);
        return h ? `${s.id} (${h.vmi ? `VM ${h.vmi}, ` : ''}pod ${h.namespace}/${h.pod})` : s.id;
      })
      .join(', ');
  const drainingPools: PoolStatus[] = (inp.drainingPools ?? []).map((p) => {
    const sl = (byPool.get(p.name) ?? []).filter((s) => s.draining);
    const reg = inp.registration.get(p.name);
    return {
      name: p.name,
      resourceName: p.resourceName,
      state: 'Draining',
      registered: reg?.registered ?? false,
      capacity: sl.length,
      allocatable: 0,
      allocated: sl.filter((s) => inp.holders.has(s.id)).length,
      message: truncate(`no longer planned on this node; ${sl.length} slice(s) kept for the pods holding them: ${holderText(sl)}`),
    };
  });
  const pools: PoolStatus[] = inp.pools.map((p) => {
    const sl = byPool.get(p.name) ?? [];
    const allocated = sl.filter((s) => inp.holders.has(s.id)).length;
    const reg = inp.registration.get(p.name);
    const blocked = inp.blocked.filter((b) => b.pool === p.name);
    const errors = inp.carvingErrors.filter((e) => e.pool === p.name);
    const drainingHere = sl.filter((s) => s.draining);
    const out: PoolStatus = { name: p.name, resourceName: p.resourceName, state: 'Ready', registered: reg?.registered ?? false, capacity: sl.length, allocatable: sl.filter((s) => s.health === 'Healthy' && !s.draining).length, allocated };
    if (reg?.registered && reg.via) out.registeredVia = reg.via;
    if (p.deleting) {
      // Released only once nothing of it is kept and the kubelet has said who holds what.
      out.state = allocated > 0 || sl.length > 0 || inp.holdersUnknown ? 'Deleting' : 'Released';
      out.registered = false;
      delete out.registeredVia;
      if (allocated > 0) out.message = `${allocated} slice(s) still held by pods`;
      else if (sl.length > 0 || inp.holdersUnknown) out.message = `kept until the kubelet says who holds its slices${inp.holdersUnknown ? ` (${inp.holdersUnknown})` : ''}`;
    } else if (errors.length) {
      out.state = 'Error';
      out.message = truncate(errors.map((e) => e.message).join('; '));
    } else if (blocked.length) {
      out.state = 'Blocked';
      out.message = truncate(blocked.map((b) => `${b.device}: ${b.reason}`).join('; '));
    } else if (!reg?.registered) {
      out.state = 'Error';
      out.message = truncate(reg?.error ?? 'not registered with the kubelet yet');
    } else if (sl.length === 0 && (p.devices ?? []).length > 0) {
      out.state = 'Carving';
      out.message = 'no slices yet';
    }
    if (drainingHere.length > 0 && out.state === 'Ready') {
      out.state = p.deleting ? out.state : 'Draining';
      out.message = truncate(`${drainingHere.length} slice(s) no longer planned are kept for the pods holding them: ${holderText(drainingHere)}`);
    }
    const foreign = (inp.foreign ?? []).filter((f) => f.pool === p.name);
    if (foreign.length > 0 && (out.state === 'Ready' || out.state === 'Blocked')) {
      out.message = truncate([...(out.message ? [out.message] : []), ...foreign.map((f) => `${f.device}: ${f.reason}`)].join('; '));
    }
    return out;
  });
  pools.push(...drainingPools.filter((d) => !pools.some((p) => p.name === d.name)));

  const slices = [...inp.slices]
    .sort((a, b) => (a.pool < b.pool ? -1 : a.pool > b.pool ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .slice(0, MAX_SLICES)
    .map((s) => {
      const st: NonNullable<VirtualIONodeStatus['slices']>[number] = { id: s.id, pool: s.pool, kind: s.kind, parent: s.parent, health: s.health };
      if (s.reason) st.reason = s.reason;
      if (s.draining) st.draining = s.draining;
      if (s.numaNode !== undefined) st.numaNode = s.numaNode;
      if (s.iommuGroup !== undefined) st.iommuGroup = s.iommuGroup;
      if (s.mdevType) st.mdevType = s.mdevType;
      const c = inp.carvings?.get(s.id);
      if (c) st.carvedFor = { namespace: c.namespace, claim: c.claim, uid: c.uid, since: c.since };
      const h = inp.holders.get(s.id);
      if (h) {
        st.allocation = { namespace: h.namespace, pod: h.pod, container: h.container };
        if (h.vmi) st.allocation.vmi = h.vmi;
      }
      return st;
    });

  const healthy = inp.slices.filter((s) => s.health === 'Healthy').length;
  const allocated = inp.slices.filter((s) => inp.holders.has(s.id)).length;
  const active = inp.pools.filter((p) => !p.deleting);
  const unregistered = active.filter((p) => !inp.registration.get(p.name)?.registered).map((p) => p.name);
  const deviceErrors = inp.inventory.devices.filter((d) => d.errors?.length).map((d) => `${d.pciAddress}: ${(d.errors ?? []).join(', ')}`);

  let conditions = [...(inp.previous ?? [])];
  const ready = inp.planLoaded && !inp.planError && unregistered.length === 0 && !inp.scanError;
  const readyMsg = !inp.planLoaded
    ? inp.noPlanReason
      ? `no plan loaded (${inp.noPlanReason}); keeping every existing slice`
      : 'no plan loaded; keeping every existing slice'
    : inp.planError
      ? inp.planError
      : inp.scanError
        ? inp.scanError
        : unregistered.length
          ? `pools not registered with the kubelet: ${unregistered.join(', ')}`
          : `${active.length} pool(s) registered`;
  const readyReason = !inp.planLoaded ? 'NoPlan' : inp.planError ? 'InvalidPlan' : inp.scanError ? 'ScanFailed' : unregistered.length ? 'NotRegistered' : 'PoolsRegistered';
  conditions = setCondition(conditions, { type: 'Ready', status: ready ? 'True' : 'False', reason: readyReason, message: truncate(readyMsg), ...(inp.generation !== undefined ? { observedGeneration: inp.generation } : {}) }, inp.now);

  const problems: [string, string][] = [];
  const unhealthy = inp.slices.filter((s) => s.health !== 'Healthy');
  if (inp.carvingErrors.length) problems.push(['CarvingFailed', inp.carvingErrors.map((e) => e.message).join('; ')]);
  if (inp.blocked.length) problems.push(['CarvingBlocked', inp.blocked.map((b) => `${b.pool}/${b.device}: ${b.reason}`).join('; ')]);
  if (unhealthy.length) problems.push(['UnhealthySlices', unhealthy.map((s) => `${s.id}${s.reason ? ` (${s.reason})` : ''}`).join(', ')]);
  if (deviceErrors.length || inp.inventory.errors?.length) problems.push(['DiscoveryErrors', [...(inp.inventory.errors ?? []), ...deviceErrors].join('; ')]);
  if (inp.podResourcesError) problems.push(['PodResourcesUnavailable', inp.podResourcesError]);
  else if (inp.holdersUnknown) problems.push(['HoldersUnknown', `nothing is destroyed until it is known who holds what: ${inp.holdersUnknown}`]);
  // What status can carry; planning needs first. No successful scan yet: no inventory at all, so the
  // operator keeps the node's plan instead of reading "no devices".
  const bound = boundInventory(inp.inventory.devices, inp.pools);
  const inventoryKnown = !(inp.scanError && inp.inventory.devices.length === 0);
  if (bound.truncated) problems.push(['InventoryTruncated', truncationMessage(bound)]);
  if (inp.checkpointError) problems.push(['CheckpointUnavailable', inp.checkpointError]);
  const drainingSlices = inp.slices.filter((s) => s.draining);
  if (drainingSlices.length) problems.push(['Draining', `${drainingSlices.length} slice(s) no longer planned are kept for their pods: ${holderText(drainingSlices)}`]);
  const first = problems[0];
  conditions = setCondition(
    conditions,
    {
      type: 'Degraded',
      status: first ? 'True' : 'False',
      reason: first ? first[0] : 'AsPlanned',
      message: truncate(first ? problems.map(([r, m]) => `${r}: ${m}`).join(' | ') : 'every slice healthy, nothing blocked'),
      ...(inp.generation !== undefined ? { observedGeneration: inp.generation } : {}),
    },
    inp.now,
  );

  const status: VirtualIONodeStatus = {
    agentVersion: inp.agentVersion,
    summary: {
      pools: inp.pools.length, devices: inp.inventory.devices.length, slices: inp.slices.length, healthy, allocated,
      ...(inp.carvings?.size ? { carvedOnDemand: inp.slices.filter((x) => inp.carvings?.has(x.id)).length } : {}),
    },
    conditions,
    ...(inventoryKnown ? { inventory: { total: bound.total, ...(bound.truncated ? { truncated: true } : {}), devices: bound.devices } } : {}),
    slices,
    pools,
  };
  if (inp.generation !== undefined) status.observedGeneration = inp.generation;
  return status;
}
