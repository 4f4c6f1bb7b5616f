// On-demand vGPU profile pools through DRA: what each NVIDIA vendor-VFIO GPU could still type, as
// partitionable devices (resource.k8s.io/v1 sharedCounters + consumesCounters). Pure.
//
// The counter model (one counter set per GPU):
//   framebuffer  = the GPU's framebuffer in GB (its largest profile, L40S-48Q → 48); a device of
//                  profile p takes size(p) of it. This is the driver's own rule in mixed-size
//                  (heterogeneous) mode: the sizes of the vGPUs on a GPU add up to at most its
//                  framebuffer. In equal-size mode the rule is n · size ≤ framebuffer for the one
//                  size the GPU has, which the same counter states exactly once one size is left.
//   vf-<index>   = 1 per published VF; each of its devices (one per profile) takes 1, so a VF is
//                  given to one claim with one profile.
// Equal-size mode cannot be said with counters (two sizes exclude each other however many of one
// fit: no linear bound does that), so the GPU publishes the profiles of one size only once it has
// one: a vGPU on a VF, or a claim allocated there and not carved yet. An empty GPU publishes every
// size; two claims of different sizes allocated within one publishing round both fit the counters,
// the driver refuses the second type, and its claim gets CarveFailed (the scheduler tries again
// and then sees only the size the first fixed).
//
// The scheduler subtracts the allocated claims' devices itself, so the values published are the
// kernel's free room plus what live claims (allocated here, not released, or prepared) hold:
//   framebuffer = GB − Σ size(type) over typed VFs whose type no live claim holds (an admin's
//                 vGPU, or a released claim's until its type is cleared)
//   a VF typed with no live claim on it is not published (nobody may be given it).
// At most 31 VFs are published per GPU (32 counters per set: 31 VFs and the framebuffer), and
// never more than the smallest profile can fill.
import type { InventoryDevice, PoolPlan, Slice } from '../model.js';
import type { OfferedGpu, OfferedProfile } from '../carving/ondemand-vgpu.js';
import { CARVED_CONDITION, CARVE_FAILED_CONDITION, chunkOffers, counterSetName, type CounterSet } from './counters.js';
import { draDevice, type DeviceFacts, type DraDevice } from './devices.js';

/** Counters per counter set allowed by the API, so VFs published per GPU (one counter is the framebuffer). */
export const MAX_VFS_PER_GPU = 31;

/** Live devices (allocated or prepared) by VF: the type id each was given. */
export type LiveVgpus = ReadonlyMap<string, number>;

/** One GPU's counters and devices. */
export interface GpuOffer {
  counters: CounterSet;
  devices: DraDevice[];
}

/** The counters and devices of one GPU. */
export function gpuOffer(pool: PoolPlan, g: OfferedGpu, devices: ReadonlyMap<string, InventoryDevice>, live: LiveVgpus, facts: DeviceFacts): GpuOffer {
  const cur = (a: string): number => devices.get(a)?.nvidiaVgpu?.currentType ?? 0;
  // A type the catalogue does not size counts as the whole GPU (publishes less, never more).
  const sizeOf = (id: number): number => g.sizes.get(id) ?? g.framebufferGb;
  let taken = 0;
  for (const vf of g.vfs) {
    const c = cur(vf);
    if (c > 0 && live.get(vf) !== c) taken += sizeOf(c);
  }
  // Equal-size mode: the sizes on the GPU (vGPUs and live claims) fix which profiles are offered.
  let profiles: OfferedProfile[] = g.profiles;
  if (!g.heterogeneous) {
    const fixed = new Set([...g.vfs.map(cur).filter((c) => c > 0), ...g.vfs.map((v) => live.get(v)).filter((x): x is number => x !== undefined)].map(sizeOf));
    if (fixed.size > 0) profiles = g.profiles.filter((p) => fixed.has(p.gb));
  }
  const smallest = Math.min(...g.profiles.map((p) => p.gb));
  const limit = Math.min(MAX_VFS_PER_GPU, Math.max(1, Math.floor(g.framebufferGb / smallest)));
  const liveVfs = g.vfs.filter((v) => live.has(v));
  const free = g.vfs.filter((v) => !live.has(v) && cur(v) === 0 && devices.get(v)?.nvidiaVgpu !== undefined);
  const published = new Set([...liveVfs, ...free.slice(0, Math.max(0, limit - liveVfs.length))].slice(0, MAX_VFS_PER_GPU));
  const setName = counterSetName(g.pf).replace(/^parent-/, 'gpu-');
  const counters: Record<string, { value: string }> = { framebuffer: { value: String(Math.max(0, g.framebufferGb - taken)) } };
  const out: DraDevice[] = [];
  g.vfs.forEach((vf, index) => {
    if (!published.has(vf)) return;
    counters[`vf-${index}`] = { value: '1' };
    const dev = devices.get(vf);
    for (const p of profiles) {
      const slice: Slice = {
        id: vf, pool: pool.name, resourceName: pool.resourceName, kind: 'VF', parent: g.pf, pciAddress: vf, index, vgpuType: p.id,
        deviceNodes: [], health: 'Healthy', ...(dev?.numaNode !== undefined ? { numaNode: dev.numaNode } : {}), ...(dev?.iommuGroup !== undefined ? { iommuGroup: dev.iommuGroup } : {}),
      };
      const d = draDevice(pool, slice, facts);
      d.attributes.vgpuType = { int: p.id };
      d.attributes.vgpuProfile = { string: (p.name ?? String(p.id)).replace(/^NVIDIA[ _]+/i, '') };
      d.attributes.framebufferGb = { int: p.gb };
      d.consumesCounters = [{ counterSet: setName, counters: { framebuffer: { value: String(p.gb) }, [`vf-${index}`]: { value: '1' } } }];
      d.bindingConditions = [CARVED_CONDITION];
      d.bindingFailureConditions = [CARVE_FAILED_CONDITION];
      out.push(d);
    }
  });
  return { counters: { name: setName, counters }, devices: out };
}

/** The slices' content of an on-demand vGPU pool: counter sets (≤ 8 per object) and devices (≤ 64 per object). */
export function vgpuContent(pool: PoolPlan, gpus: readonly OfferedGpu[], devices: ReadonlyMap<string, InventoryDevice>, live: LiveVgpus, facts: DeviceFacts): { counterChunks: CounterSet[][]; chunks: DraDevice[][] } {
  const sets: CounterSet[] = [];
  const all: DraDevice[] = [];
  for (const g of gpus) {
    const o = gpuOffer(pool, g, devices, live, facts);
    sets.push(o.counters);
    all.push(...o.devices);
  }
  return chunkOffers(sets, all);
}
