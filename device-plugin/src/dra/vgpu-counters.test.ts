// On-demand vGPU profiles (vendor-VFIO): the counter model against the simulated L40S driver
// (test/sysfs/nvidia.ts), and the planning of type writes and clears. What the counters let the
// scheduler allocate must be what the driver then accepts.
import { rememberCatalogues, type VgpuType } from '../carving/gpu.js';
import { FRAMEBUFFER_KEY, learnFramebuffer, offeredGpus, vgpuCatalogue, parseVgpuDevice, planOnDemandVgpu, planOnDemandVgpuUncarve, vgpuDeviceName } from '../carving/ondemand-vgpu.js';
import type { WantedMdev } from '../carving/ondemand.js';
import { scan } from '../discovery/scan.js';
import type { CarvingPlan, Inventory, InventoryDevice, PoolPlan } from '../model.js';
import { FakeKernel } from '../../../test/sysfs/kernel.js';
import { addNvidiaVfioGpu, L40S, setMixedSize, sriovManage } from '../../../test/sysfs/nvidia.js';
import { tempTree } from '../../../test/sysfs/tmp.js';
import { draDeviceName, type DraDevice } from './devices.js';
import { gpuOffer, vgpuContent } from './vgpu-counters.js';

const PF = '0000:3b:00.0';
const VF = (i: number): string => `0000:3b:${(Math.floor((i + 4) / 8)).toString(16).padStart(2, '0')}.${(i + 4) % 8}`;
const ID = { '6Q': 1151, '12Q': 1153, '24Q': 1155, '48Q': 1156 } as const;
const typePath = (vf: string): string => `bus/pci/devices/${vf}/nvidia/current_vgpu_type`;
const pool = (o: Partial<PoolPlan> = {}): PoolPlan => ({
  name: 'l40s', resourceName: 'virtualio.dev/l40s', class: 'GPU', mode: 'SRIOV', consumption: 'HostDevice', frontEnd: 'DRA', vfDriver: 'nvidia',
  onDemand: { vgpuProfiles: ['L40S-12Q', 'NVIDIA L40S-24Q', '1156', 'L40S-6Q'] }, devices: [{ pciAddress: PF }], ...o,
});

let k: FakeKernel;
let cleanup: () => Promise<void>;
let memory: Map<string, VgpuType[]>;
beforeEach(async () => {
  const t = await tempTree('vio-vgpu-od-');
  cleanup = t.cleanup;
  k = await FakeKernel.create(t.root, t.devRoot);
  await addNvidiaVfioGpu(k, PF, L40S);
  memory = new Map();
});
afterEach(() => cleanup());

async function look(): Promise<{ inv: Inventory; devices: Map<string, InventoryDevice> }> {
  const inv = rememberCatalogues(await scan(k.root, { devRoot: k.devRoot }), memory);
  return { inv, devices: new Map(inv.devices.map((d) => [d.pciAddress, d])) };
}
const want = (vf: string, type: number, uid = `u-${vf}`): WantedMdev => ({ pool: 'l40s', uuid: vf, vgpuType: type, claim: `default/${uid}`, namespace: 'default', name: uid, uid });
const typeOf = (d: DraDevice): number => (d.attributes.vgpuType as { int: number }).int;
const busOf = (d: DraDevice): string => (d.attributes['resource.kubernetes.io/pciBusID'] as { string: string }).string;
const values = (c: { counters: Record<string, { value: string }> }): Record<string, string> => Object.fromEntries(Object.entries(c.counters).map(([n, v]) => [n, v.value]));

test('device names carry VF and type, and read back', () => {
  expect(vgpuDeviceName('0000:3b:00.4', 1153)).toBe('vgpu-0000-3b-00-4-1153');
  expect(draDeviceName({ kind: 'VF', id: '0000:3b:00.4', pciAddress: '0000:3b:00.4', vgpuType: 1153 })).toBe('vgpu-0000-3b-00-4-1153');
  expect(draDeviceName({ kind: 'VF', id: '0000:3b:00.4', pciAddress: '0000:3b:00.4' })).toBe('vf-0000-3b-00-4'); // other pools unchanged
  expect(parseVgpuDevice('vgpu-0000-3b-01-0-1156')).toEqual({ vf: '0000:3b:01.0', type: 1156 });
  expect(parseVgpuDevice('vf-0000-3b-01-0')).toBeUndefined();
});

test('a GPU without VFs: sriov-manage enables them; nothing is offered yet', async () => {
  const { inv, devices } = await look();
  const out: CarvingPlan = { writes: [], blocked: [] };
  planOnDemandVgpu(pool(), devices, inv, new Map(), new Set(), new Set(), out);
  expect(out.writes).toEqual([expect.objectContaining({ path: `bus/pci/devices/${PF}/sriov_numvfs`, value: '32', tool: 'sriov-manage' })]);
  expect(offeredGpus(pool(), devices, inv, learnFramebuffer({}, [pool()], devices, inv))).toEqual([]);
});

test('an empty L40S: 48 GB of framebuffer, as many VFs as the smallest profile can fill, one device per VF and profile', async () => {
  await sriovManage(k, '-e', PF);
  const { inv, devices } = await look();
  const cap = learnFramebuffer({}, [pool()], devices, inv);
  expect(cap[PF]).toMatchObject({ [FRAMEBUFFER_KEY]: 48, 'type:NVIDIA L40S-24Q': ID['24Q'] });
  const [g] = offeredGpus(pool(), devices, inv, cap);
  expect(g!.profiles.map((p) => [p.name, p.gb])).toEqual([['NVIDIA L40S-6Q', 6], ['NVIDIA L40S-12Q', 12], ['NVIDIA L40S-24Q', 24], ['NVIDIA L40S-48Q', 48]]);
  const o = gpuOffer(pool(), g!, devices, new Map(), { devices });
  expect(o.counters.name).toBe('gpu-0000-3b-00-0');
  expect(values(o.counters)).toEqual({ framebuffer: '48', ...Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`vf-${i}`, '1'])) });
  expect(o.devices).toHaveLength(8 * 4);
  const d = o.devices.find((x) => x.name === `vgpu-0000-3b-00-5-${ID['12Q']}`)!;
  expect(d.consumesCounters).toEqual([{ counterSet: 'gpu-0000-3b-00-0', counters: { framebuffer: { value: '12' }, 'vf-1': { value: '1' } } }]);
  expect(d.attributes).toMatchObject({ 'resource.kubernetes.io/pciBusID': { string: VF(1) }, kind: { string: 'VF' }, vgpuProfile: { string: 'L40S-12Q' }, vgpuType: { int: ID['12Q'] }, framebufferGb: { int: 12 } });
  expect(d.bindingConditions).toEqual(['virtualio.dev/Carved']);
  const c = vgpuContent(pool(), [g!], devices, new Map(), { devices });
  expect(c.counterChunks).toHaveLength(1);
  expect(c.chunks.map((x) => x.length)).toEqual([32]);
  // A GPU whose smallest profile is 1 GB would need 48 VFs: 31 at most (32 counters per set).
  const [g1] = offeredGpus(pool({ onDemand: { vgpuProfiles: ['L40S-1Q'] } }), devices, inv, cap);
  expect(Object.keys(gpuOffer(pool(), g1!, devices, new Map(), { devices }).counters.counters)).toHaveLength(32);
});

test('equal-size mode: once a size is on the GPU (or allocated there) only that size is offered, and the framebuffer bounds how many', async () => {
  await sriovManage(k, '-e', PF);
  let { inv, devices } = await look();
  const cap = learnFramebuffer({}, [pool()], devices, inv);
  // Allocated, not carved yet: the scheduler counts it; only 12 GB profiles stay on offer.
  let o = gpuOffer(pool(), offeredGpus(pool(), devices, inv, cap)[0]!, devices, new Map([[VF(0), ID['12Q']]]), { devices });
  expect(new Set(o.devices.map(typeOf))).toEqual(new Set([ID['12Q']]));
  expect(values(o.counters).framebuffer).toBe('48');
  await k.write(typePath(VF(0)), String(ID['12Q']));
  ({ inv, devices } = await look());
  o = gpuOffer(pool(), offeredGpus(pool(), devices, inv, cap)[0]!, devices, new Map([[VF(0), ID['12Q']]]), { devices });
  expect(values(o.counters).framebuffer).toBe('48'); // the live claim's 12 GB: the scheduler subtracts it
  expect(new Set(o.devices.map(typeOf))).toEqual(new Set([ID['12Q']]));
  // Released but not cleared yet: no live claim holds it, so its 12 GB and its VF are not offered.
  o = gpuOffer(pool(), offeredGpus(pool(), devices, inv, cap)[0]!, devices, new Map(), { devices });
  expect(values(o.counters).framebuffer).toBe('36');
  expect(o.counters.counters['vf-0']).toBeUndefined();
  expect(o.devices.some((d) => d.name.startsWith('vgpu-0000-3b-00-4-'))).toBe(false);
});

test('the counters admit exactly what the driver accepts in mixed-size mode (along a sequence of picks, refused ones included)', async () => {
  await sriovManage(k, '-e', PF);
  await setMixedSize(k, PF, true);
  const het = pool({ vgpuHeterogeneous: true });
  const first = await look();
  const cap = learnFramebuffer({}, [het], first.devices, first.inv);
  const picks = [ID['24Q'], ID['12Q'], ID['6Q'], ID['12Q'], ID['24Q'], ID['6Q'], ID['6Q'], ID['48Q']];
  const size: Record<number, number> = { [ID['6Q']]: 6, [ID['12Q']]: 12, [ID['24Q']]: 24, [ID['48Q']]: 48 };
  const live = new Map<string, number>();
  let vf = 0;
  for (const t of picks) {
    const { inv, devices } = await look();
    const o = gpuOffer(het, offeredGpus(het, devices, inv, cap)[0]!, devices, live, { devices });
    // What the scheduler computes: the counter minus every allocated device's consumption.
    const room = Number(values(o.counters).framebuffer) - [...live.values()].reduce((n, x) => n + size[x]!, 0);
    const fitsCounters = room >= size[t]! && o.devices.some((d) => typeOf(d) === t && !live.has(busOf(d)));
    const accepted = await k.write(typePath(VF(vf)), String(t)).then(() => true, () => false);
    expect([t, fitsCounters]).toEqual([t, accepted]);
    if (accepted) live.set(VF(vf++), t);
  }
  expect([...live.values()].reduce((n, x) => n + size[x]!, 0)).toBe(48);
});

test('planning: the claimed type on the claimed VF (mixed-size mode first), a type that no longer fits fails with the reason, never a rebind', async () => {
  await sriovManage(k, '-e', PF);
  const het = pool({ vgpuHeterogeneous: true });
  let { inv, devices } = await look();
  let out: CarvingPlan = { writes: [], blocked: [] };
  planOnDemandVgpu(het, devices, inv, new Map([[VF(0), want(VF(0), ID['24Q'])], [VF(2), want(VF(2), ID['12Q'])]]), new Set([VF(0), VF(2)]), new Set(), out);
  expect(out.writes.map((w) => [w.path, w.value, w.tool])).toEqual([[`bus/pci/devices/${PF}`, '1', 'nvidia-smi-shm'], [typePath(VF(0)), String(ID['24Q']), undefined], [typePath(VF(2)), String(ID['12Q']), undefined]]);
  expect(out.writes.some((w) => /driver|bind|probe/.test(w.path))).toBe(false);
  await setMixedSize(k, PF, true);
  for (const w of out.writes.slice(1)) await k.write(w.path, w.value);
  ({ inv, devices } = await look());
  out = { writes: [], blocked: [] };
  const wanted = new Map([[VF(0), want(VF(0), ID['24Q'])], [VF(2), want(VF(2), ID['12Q'])], [VF(3), want(VF(3), ID['24Q'])]]);
  planOnDemandVgpu(het, devices, inv, wanted, new Set([VF(0), VF(2), VF(3)]), new Set(), out);
  expect(out.writes).toEqual([]); // carved ones stay; 24 + 12 + 24 > 48
  expect((out as { failed?: unknown[] }).failed).toEqual([{ pool: 'l40s', uuid: VF(3), reason: expect.stringMatching(/NVIDIA L40S-24Q no longer fits on 0000:3b:00.0: VF 0000:3b:00.7 does not list it/) }]);
});

test('clearing: our typed VF no claim wants is cleared unless held; a type we did not write is left alone; uncarve clears what is not held', async () => {
  await sriovManage(k, '-e', PF);
  await k.write(typePath(VF(0)), String(ID['12Q']));
  await k.write(typePath(VF(1)), String(ID['12Q'])); // an admin's
  const { inv, devices } = await look();
  let out: CarvingPlan = { writes: [], blocked: [] };
  planOnDemandVgpu(pool(), devices, inv, new Map(), new Set([VF(0)]), new Set(), out);
  expect(out.writes.map((w) => [w.path, w.value])).toEqual([[typePath(VF(0)), '0']]);
  out = { writes: [], blocked: [] };
  planOnDemandVgpu(pool(), devices, inv, new Map(), new Set([VF(0)]), new Set([VF(0)]), out);
  expect(out.writes).toEqual([]);
  expect(out.blocked).toEqual([expect.objectContaining({ device: VF(0), reason: expect.stringContaining('is held; its type is cleared once released') })]);
  // A claim given a VF that still has another claim's type: cleared first, typed in the next pass.
  out = { writes: [], blocked: [] };
  planOnDemandVgpu(pool(), devices, inv, new Map([[VF(0), want(VF(0), ID['24Q'])]]), new Set([VF(0)]), new Set(), out);
  expect(out.writes.map((w) => [w.path, w.value])).toEqual([[typePath(VF(0)), '0']]);
  // The same on a VF we did not type: a failure, no write.
  out = { writes: [], blocked: [] };
  planOnDemandVgpu(pool(), devices, inv, new Map([[VF(1), want(VF(1), ID['12Q'] + 2)]]), new Set(), new Set(), out);
  expect(out.writes).toEqual([]);
  expect((out as { failed?: { reason: string }[] }).failed?.[0]?.reason).toMatch(/which this pool did not write/);
  const u = { writes: [], blocked: [], held: [] as string[] };
  planOnDemandVgpuUncarve(pool(), devices, inv, new Set([VF(1)]), u);
  expect(u.writes.map((w: { path: string; value: string }) => [w.path, w.value])).toEqual([[typePath(VF(0)), '0']]);
  expect(u.held).toEqual([VF(1)]);
});

test('after an agent restart on a busy GPU (type table forgotten, VFs list only what fits): typed VFs keep their slices, a new claim is typed', async () => {
  await sriovManage(k, '-e', PF);
  await setMixedSize(k, PF, true);
  const het = pool({ vgpuHeterogeneous: true });
  const first = await look();
  const cap = learnFramebuffer({}, [het], first.devices, first.inv);
  await k.write(typePath(VF(0)), String(ID['12Q']));
  await k.write(typePath(VF(1)), String(ID['24Q']));
  memory = new Map(); // a new process
  const { inv, devices } = await look();
  const out: CarvingPlan = { writes: [], blocked: [] };
  const wanted = new Map([[VF(0), want(VF(0), ID['12Q'])], [VF(1), want(VF(1), ID['24Q'])], [VF(2), want(VF(2), ID['12Q'])]]);
  planOnDemandVgpu(het, devices, inv, wanted, new Set([VF(0), VF(1), VF(2)]), new Set(), out);
  expect(out.writes.map((w) => [w.path, w.value])).toEqual([[typePath(VF(2)), String(ID['12Q'])]]);
  const kept = learnFramebuffer(cap, [het], devices, inv);
  expect(kept[PF]?.[FRAMEBUFFER_KEY]).toBe(48);
  // The VFs list only what fits now (no 24Q); the table kept in the checkpoint still names it.
  expect(vgpuCatalogue(devices.get(PF)!, devices, inv).some((t) => t.id === ID['24Q'])).toBe(false);
  expect(vgpuCatalogue(devices.get(PF)!, devices, inv, kept).find((t) => t.id === ID['24Q'])?.name).toBe('NVIDIA L40S-24Q');
  expect(offeredGpus(het, devices, inv, kept)[0]!.profiles.map((p) => p.id)).toContain(ID['24Q']);
});
