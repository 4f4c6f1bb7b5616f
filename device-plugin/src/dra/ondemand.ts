// DRA front end of on-demand pools: which mdevs the scheduler allocated claims on this node (the
// agent carves them), what each parent could still carve (counters and devices, dra/counters.ts),
// and the claim conditions that tell the scheduler the device exists (it then binds the pod) or
// cannot be made (it then tries another device or node).
import type { Logger } from '../log.js';
import type { Inventory, PoolPlan, Slice } from '../model.js';
import { indexDevices } from '../carving/layout.js';
import { isOnDemand, offeredParents, type MdevCapacity, type WantedMdev } from '../carving/ondemand.js';
import { isOnDemandNvme, nvmeVf, parseNvmeDevice, type NvmeState } from '../carving/ondemand-nvme.js';
import { isOnDemandVgpu, offeredGpus, parseVgpuDevice } from '../carving/ondemand-vgpu.js';
import { nvmeContent } from './nvme-counters.js';
import { vgpuContent } from './vgpu-counters.js';
import type { AllocatedClaim } from './claims.js';
import { CARVED_CONDITION, CARVE_FAILED_CONDITION, onDemandContent } from './counters.js';
import { DRA_DRIVER, resourcePoolName, type DeviceFacts, type PoolContent } from './devices.js';
import type { PreparedClaim } from './prepare.js';

/** What the agent's last cycle knows about on-demand carving. */
export interface OnDemandState {
  /** Parent → type → instances when empty. */
  capacity: MdevCapacity;
  /** mdev UUID → why the claim's device cannot be carved. */
  failed: ReadonlyMap<string, string>;
  /** On-demand NVMe pools: the controllers as provisioning last read them. */
  nvme?: NvmeState;
}

export interface DeviceCondition {
  type: string;
  status: 'True' | 'False';
  reason: string;
  message: string;
}

/** Sets one condition on one allocated device of a claim (ResourceClaim status.devices[]). */
export type SetDeviceCondition = (
  claim: { namespace: string; name: string; uid: string },
  device: { driver: string; pool: string; device: string },
  condition: DeviceCondition,
) => Promise<void>;

const MDEV_DEVICE = /^mdev-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;

export class OnDemandDevices {
  state: OnDemandState = { capacity: {}, failed: new Map() };
  /** `<claim uid>\n<pool>\n<device>` → the condition last set (its reason and message). */
  private readonly sent = new Map<string, string>();

  constructor(
    private readonly node: string,
    private readonly log: Logger,
    private readonly setCondition: SetDeviceCondition | undefined,
  ) {}

  private onDemandPool(pools: readonly PoolPlan[], resourcePool: string): PoolPlan | undefined {
    return pools.find((p) => isOnDemand(p) && !p.deleting && resourcePoolName(this.node, p.name) === resourcePool);
  }

  private vgpuPool(pools: readonly PoolPlan[], resourcePool: string): PoolPlan | undefined {
    return pools.find((p) => isOnDemandVgpu(p) && !p.deleting && resourcePoolName(this.node, p.name) === resourcePool);
  }

  private nvmePool(pools: readonly PoolPlan[], resourcePool: string): PoolPlan | undefined {
    return pools.find((p) => isOnDemandNvme(p) && !p.deleting && resourcePoolName(this.node, p.name) === resourcePool);
  }

  /** The slice ID (mdev UUID or VF address) and vGPU type or queue count an allocated on-demand device stands for. */
  private target(pools: readonly PoolPlan[], d: { pool: string; device: string }): { pool: PoolPlan; id: string; vgpuType?: number; queues?: number } | undefined {
    const uuid = MDEV_DEVICE.exec(d.device)?.[1];
    const mp = this.onDemandPool(pools, d.pool);
    if (mp && uuid) return { pool: mp, id: uuid };
    const n = parseNvmeDevice(d.device);
    const np = n ? this.nvmePool(pools, d.pool) : undefined;
    if (n && np) return { pool: np, id: n.vf, queues: n.queues };
    const v = parseVgpuDevice(d.device);
    const vp = this.vgpuPool(pools, d.pool);
    return vp && v ? { pool: vp, id: v.vf, vgpuType: v.type } : undefined;
  }

  /** The mdevs of on-demand pools that claims allocated here (and not released) were given. */
  wanted(pools: readonly PoolPlan[], claims: ReadonlyMap<string, AllocatedClaim>, released: (c: AllocatedClaim) => boolean): Map<string, WantedMdev> {
    const out = new Map<string, WantedMdev>();
    for (const c of claims.values()) {
      if (released(c)) continue;
      for (const d of c.devices) {
        const t = this.target(pools, d);
        if (!t) continue;
        out.set(t.id, { pool: t.pool.name, uuid: t.id, ...(t.vgpuType !== undefined ? { vgpuType: t.vgpuType } : {}), ...(t.queues !== undefined ? { queues: t.queues } : {}), claim: `${c.namespace}/${c.name}`, namespace: c.namespace, name: c.name, uid: c.uid });
      }
    }
    return out;
  }

  /** UUIDs of mdevs the scheduler counts against the counters: allocated here and not released, or prepared. */
  live(pools: readonly PoolPlan[], claims: ReadonlyMap<string, AllocatedClaim>, prepared: readonly PreparedClaim[], released: (c: AllocatedClaim) => boolean): Set<string> {
    return new Set(this.liveVgpus(pools, claims, prepared, released).keys());
  }

  /**
   * The same as {@link live}, with the vGPU type id of each VF the scheduler counts (mdev UUIDs map
   * to 0): what the counters of vGPU profile pools are computed from.
   */
  liveVgpus(pools: readonly PoolPlan[], claims: ReadonlyMap<string, AllocatedClaim>, prepared: readonly PreparedClaim[], released: (c: AllocatedClaim) => boolean): Map<string, number> {
    const out = new Map([...this.wanted(pools, claims, released).values()].map((w) => [w.uuid, w.vgpuType ?? w.queues ?? 0]));
    for (const c of prepared) {
      for (const d of c.devices) {
        if (this.onDemandPool(pools, d.pool)) out.set(d.sliceId, 0);
        const n = this.nvmePool(pools, d.pool) ? parseNvmeDevice(d.device) : undefined;
        if (n && !out.has(n.vf)) out.set(n.vf, n.queues);
        const v = this.vgpuPool(pools, d.pool) ? parseVgpuDevice(d.device) : undefined;
        if (v && !out.has(v.vf)) out.set(v.vf, v.type);
      }
    }
    return out;
  }

  /** The objects of an on-demand pool (undefined for any other pool). */
  content(p: PoolPlan, inventory: Inventory, live: ReadonlyMap<string, number>, facts: DeviceFacts): Pick<PoolContent, 'chunks' | 'counterChunks'> | undefined {
    const devices = indexDevices(inventory);
    if (isOnDemandNvme(p)) return nvmeContent(p, this.state.nvme ?? {}, devices, live, facts);
    if (isOnDemandVgpu(p)) return vgpuContent(p, offeredGpus(p, devices, inventory, this.state.capacity), devices, live, facts);
    if (!isOnDemand(p)) return undefined;
    return onDemandContent(this.node, p, offeredParents(p, devices, this.state.capacity), devices, new Set(live.keys()), facts);
  }

  /** The slice an on-demand device stands for (its mdev UUID), carved or not. */
  lookup(pools: readonly PoolPlan[], resourcePool: string, device: string): { sliceId: string; resourceName: string } | undefined {
    const t = this.target(pools, { pool: resourcePool, device });
    return t ? { sliceId: t.id, resourceName: t.pool.resourceName } : undefined;
  }

  /**
   * Tells the scheduler about each claimed on-demand device: Carved once its mdev exists and is
   * Healthy, CarveFailed when it cannot be carved. Each condition is written once per claim and
   * device (again after a failed write).
   */
  report(pools: readonly PoolPlan[], claims: ReadonlyMap<string, AllocatedClaim>, released: (c: AllocatedClaim) => boolean, slices: readonly Slice[]): void {
    if (!this.setCondition) return;
    const byId = new Map(slices.map((s) => [s.id, s]));
    const current = new Set<string>();
    for (const c of claims.values()) {
      if (released(c)) continue;
      for (const d of c.devices) {
        const t = this.target(pools, d);
        if (!t) continue;
        const uuid = t.id;
        const key = `${c.uid}\n${d.pool}\n${d.device}`;
        current.add(key);
        const found = byId.get(uuid);
        // A VF counts as carved only with the claim's own type on it; an NVMe VF only once its
        // secondary controller is Online with the claim's queue count.
        const sc = t.queues !== undefined ? nvmeVf(this.state.nvme, uuid)?.sc : undefined;
        const nvmeReady = t.queues === undefined || (sc?.online === true && sc.nvq === t.queues);
        const s = (t.vgpuType === undefined || found?.vgpuType === t.vgpuType) && nvmeReady ? found : undefined;
        const failed = this.state.failed.get(uuid);
        let cond: DeviceCondition | undefined;
        if (s && s.health === 'Healthy') {
          const message =
            t.queues !== undefined && sc
              ? `NVMe secondary controller ${sc.scid} of VF ${uuid} Online with ${sc.nvq} queues and ${sc.nvi} interrupts on ${s.parent}`
              : t.vgpuType === undefined
                ? `mdev ${uuid} of type ${s.mdevType ?? '?'} created on ${s.parent}`
                : `vGPU ${s.mdevType ?? `type ${t.vgpuType}`} written on VF ${uuid} of ${s.parent}`;
          cond = { type: CARVED_CONDITION, status: 'True', reason: 'Carved', message };
        } else if (failed && !s) cond = { type: CARVE_FAILED_CONDITION, status: 'True', reason: 'CarveFailed', message: failed.slice(0, 1024) };
        if (!cond) continue;
        const text = `${cond.type}\n${cond.message}`;
        if (this.sent.get(key) === text) continue;
        this.sent.set(key, text);
        const ref = { namespace: c.namespace, name: c.name, uid: c.uid };
        this.setCondition(ref, { driver: DRA_DRIVER, pool: d.pool, device: d.device }, cond).then(
          () => this.log.info({ claim: `${c.namespace}/${c.name}`, device: d.device, condition: cond.type, message: cond.message }, 'claim device condition set'),
          (err: unknown) => {
            this.sent.delete(key); // tried again at the next refresh
            this.log.warn({ claim: `${c.namespace}/${c.name}`, device: d.device, err: String(err) }, 'cannot set the claim device condition');
          },
        );
      }
    }
    for (const k of [...this.sent.keys()]) if (!current.has(k)) this.sent.delete(k);
  }
}
