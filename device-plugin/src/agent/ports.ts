// What the agent manager needs from discovery and carving (implemented in sysfs/, discovery/,
// carving/, health/ and wired in main.ts), and where status goes.
import type { VirtualIONodeStatus } from '../../../crds/generated/types.js';
import type { NvmeOnDemandInput } from '../carving/nvme.js';
import type { NvmeState } from '../carving/ondemand-nvme.js';
import type { MdevCapacity, OnDemandFailure, WantedMdev } from '../carving/ondemand.js';
import type { CarvingPlan, Inventory, PoolPlan, Slice, SysfsWrite, VirtualIONodeSpec } from '../model.js';

/** What on-demand pools carve: the mdevs claims were allocated, and the parents' learned capacity. */
export interface OnDemandInput {
  wanted: ReadonlyMap<string, WantedMdev>;
  capacity: MdevCapacity;
  /** vGPU profile pools: the VFs whose type the checkpoint says we wrote for a claim. */
  ours?: ReadonlySet<string>;
}

/**
 * What provisioning reports: what stands in the way (pool status), and for on-demand NVMe pools the
 * controllers as read after the steps and the claims that cannot be served.
 */
export interface ProvisionResult {
  problems: { pool: string; device: string; reason: string }[];
  nvme?: NvmeState;
  failed?: OnDemandFailure[];
}

/** Result of one applied carving write. */
export interface WriteResult {
  write: SysfsWrite;
  /** Absent when the write succeeded. */
  error?: string;
  /** The errno code of a failed write (EBUSY, EINVAL, ETIMEDOUT, ESTUCK...), when known. */
  code?: string;
  /** True when skipped because an earlier write of its group failed. */
  skipped?: boolean;
}

/** The node side: discovery, carving and slice building (all roots bound in). */
export interface NodeOps {
  /** A full inventory snapshot; must not throw on malformed sysfs (errors go into the inventory). */
  scan(): Promise<Inventory>;
  /** The sysfs writes that bring the node to the plan; never destroys `allocated` slices. */
  planCarving(spec: VirtualIONodeSpec, inventory: Inventory, allocated: ReadonlySet<string>, ownedPfs?: ReadonlySet<string>, onDemand?: OnDemandInput): CarvingPlan;
  /**
   * The writes that release a deleting or removed pool (its last known plan), keeping what pods
   * hold (`held`) and what active pools of `spec` still use. `kept`: the checkpoint's capacity
   * record, whose vGPU type tables name types a busy GPU no longer lists.
   */
  planUncarve(pool: PoolPlan, spec: VirtualIONodeSpec, inventory: Inventory, allocated: ReadonlySet<string>, ownedPfs?: ReadonlySet<string>, kept?: MdevCapacity): CarvingPlan;
  /** Applies writes in order; never throws for a failed write (it is in its result). */
  applyCarving(plan: CarvingPlan, signal?: AbortSignal): Promise<WriteResult[]>;
  /**
   * The slices of every pool, health included. `previous` (the last round's slices) lets a slice
   * that vanished stay listed as Unhealthy with its reason instead of dropping out.
   */
  buildSlices(spec: VirtualIONodeSpec, inventory: Inventory, previous?: readonly Slice[], onDemand?: Pick<OnDemandInput, 'capacity'>): Slice[];
  /** Writes that have not returned (their devices are stuck); empty for writers that cannot tell. */
  stuckWrites?(): { lane: string; path: string; value: string; since: number }[];
  /**
   * Device provisioning that sysfs writes cannot express (NVMe secondary controllers, see
   * carving/nvme.ts), run before and after each round of carving writes; never touches `held`
   * slices. Returns what stands in the way, for the pools' status.
   */
  provision?(spec: VirtualIONodeSpec, inventory: Inventory, held: ReadonlySet<string>, onDemand?: NvmeOnDemandInput): Promise<ProvisionResult>;
  /** Stops the writer's helper processes (shutdown). */
  close?(): void;
}

/** Receives every freshly built status (cluster mode writes it to the API, debounced). */
export type StatusSink = (status: VirtualIONodeStatus) => void;
