// The fake kernel's NVIDIA vendor-specific VFIO driver (test/sysfs/nvidia.ts), each listed behaviour
// checked from the outside (sysfs files and errnos), then the agent's discovery and carving over it.
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { rememberCatalogues, type VgpuType } from '../../device-plugin/src/carving/gpu.js';
import { planCarving } from '../../device-plugin/src/carving/plan.js';
import { scan } from '../../device-plugin/src/discovery/scan.js';
import type { Inventory, PoolPlan } from '../../device-plugin/src/model.js';
import { FakeKernel } from '../sysfs/kernel.js';
import { addNvidiaVfioGpu, L40S, H100, sriovManage, setMixedSize } from '../sysfs/nvidia.js';
import { tempTree } from '../sysfs/tmp.js';

const PF = '0000:3b:00.0';
const VF0 = '0000:3b:00.4';
const VF1 = '0000:3b:00.5';
const groupOf = (root: string, vf: string): number => Number(path.basename(readlinkSync(path.join(root, 'bus/pci/devices', vf, 'iommu_group'))));
const typePath = (vf: string): string => `bus/pci/devices/${vf}/nvidia/current_vgpu_type`;

async function l40s(): Promise<{ k: FakeKernel; root: string; devRoot: string }> {
  const { root, devRoot } = await tempTree();
  const k = await FakeKernel.create(root, devRoot);
  await addNvidiaVfioGpu(k, PF, L40S, { numaNode: 0 });
  return { k, root, devRoot };
}

const read = (root: string, rel: string): string => readFileSync(path.join(root, rel), 'utf8');
const creatableIds = (root: string, vf: string): number[] =>
  read(root, `bus/pci/devices/${vf}/nvidia/creatable_vgpu_types`).split('\n').slice(1).filter(Boolean).map((l) => Number(l.split(':')[0]));

describe('the NVIDIA vendor-VFIO driver of the fake kernel', () => {
  test('sriov_numvfs on the PF is refused (no sriov_configure); sriov-manage -e enables every VF on nvidia with the nvidia/ folder and VFIO nodes', async () => {
    const { k, root, devRoot } = await l40s();
    await expect(k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '4')).rejects.toMatchObject({ code: 'ENOENT' });
    expect(existsSync(path.join(root, `bus/pci/devices/${PF}/nvidia`))).toBe(false);
    await sriovManage(k, '-e', PF);
    expect(await k.driverOf(PF)).toBe('nvidia');
    expect(await k.driverOf(VF0)).toBe('nvidia');
    expect(read(root, typePath(VF0))).toBe('0\n');
    expect(read(root, `bus/pci/devices/${VF0}/nvidia/creatable_vgpu_types`)).toMatch(/^ID {4}: vGPU Name\n1145 {2}: NVIDIA L40S-1B\n/);
    expect(existsSync(path.join(root, `bus/pci/devices/${PF}/nvidia`))).toBe(false);
    const group = groupOf(root, VF0);
    expect(existsSync(path.join(devRoot, 'vfio', String(group)))).toBe(true);
    const [cdev] = readdirSync(path.join(root, `bus/pci/devices/${VF0}/vfio-dev`));
    expect(existsSync(path.join(devRoot, 'vfio/devices', cdev as string))).toBe(true);
  });

  test('types: EPERM over a type and on clearing an untyped VF; creatable shrinks and is empty on a typed VF; equal-size mode fixes the size', async () => {
    const { k, root } = await l40s();
    await sriovManage(k, '-e', PF);
    await expect(k.write(typePath(VF0), '0')).rejects.toMatchObject({ code: 'EPERM' });
    await k.write(typePath(VF0), '1153'); // L40S-12Q
    expect(read(root, typePath(VF0))).toBe('1153\n');
    await expect(k.write(typePath(VF0), '1150')).rejects.toMatchObject({ code: 'EPERM' });
    expect(creatableIds(root, VF0)).toEqual([]);
    expect(creatableIds(root, VF1)).toEqual([1153, 1163]); // 12 GB only: L40S-12Q, L40S-12A
    await expect(k.write(typePath(VF1), '1155')).rejects.toMatchObject({ code: 'EINVAL' }); // 24Q would mix sizes
    for (const vf of ['0000:3b:00.5', '0000:3b:00.6', '0000:3b:00.7']) await k.write(typePath(vf), '1153');
    expect(creatableIds(root, '0000:3b:01.0')).toEqual([]); // 4 x 12 GB = 48 GB: full
    await k.write(typePath(VF1), '0');
    expect(creatableIds(root, VF1)).toEqual([1153, 1163]);
  });

  test('clearing a type while a VMM holds the VF is refused and recorded as a violation', async () => {
    const { k } = await l40s();
    await sriovManage(k, '-e', PF);
    await k.write(typePath(VF0), '1153');
    await k.openVfio(groupOf(k.root, VF0), 'vm1');
    await expect(k.write(typePath(VF0), '0')).rejects.toMatchObject({ code: 'EBUSY' });
    expect(k.violations).toEqual([expect.objectContaining({ device: VF0, holder: 'vm1', path: typePath(VF0), value: '0' })]);
    expect(readFileSync(path.join(k.root, typePath(VF0)), 'utf8')).toBe('1153\n');
    k.closeVfio(groupOf(k.root, VF0), 'vm1');
    await k.write(typePath(VF0), '0');
    expect(k.destroyed.filter((d) => d.path === typePath(VF0))).toEqual([expect.objectContaining({ devices: [VF0], value: '0' })]);
  });

  test('mixed-size mode (nvidia-smi -shm 1) lets sizes add up to the framebuffer, only before the first vGPU; the H100 lists no MIG-backed type', async () => {
    const { k, root } = await l40s();
    await sriovManage(k, '-e', PF);
    await setMixedSize(k, PF, true);
    await k.write(typePath(VF0), '1153'); // 12
    await k.write(typePath(VF1), '1155'); // 24
    expect(creatableIds(root, '0000:3b:00.6')).toEqual(expect.arrayContaining([1153, 1151]));
    expect(creatableIds(root, '0000:3b:00.6')).not.toContain(1155); // 12 + 24 + 24 > 48
    await expect(setMixedSize(k, PF, false)).rejects.toMatchObject({ code: 'EBUSY' });

    const h = await tempTree();
    const kh = await FakeKernel.create(h.root, h.devRoot);
    await addNvidiaVfioGpu(kh, '0000:c1:00.0', H100);
    await sriovManage(kh, '-e', '0000:c1:00.0');
    const names = read(h.root, 'bus/pci/devices/0000:c1:00.4/nvidia/creatable_vgpu_types');
    expect(names).toContain('NVIDIA H100-10C');
    expect(names).not.toContain('H100-1-10C');
  });
});

function pool(name: string, profile: string, count: number, o: Partial<PoolPlan> = {}): PoolPlan {
  return { name, resourceName: `virtualio.dev/${name}`, class: 'GPU', mode: 'SRIOV', consumption: 'HostDevice', count, vfDriver: 'nvidia', vgpuProfile: profile, devices: [{ pciAddress: PF }], ...o };
}

describe('the agent over it: detection and planning', () => {
  test('an NVIDIA SR-IOV GPU without VFs is NvidiaSriovDisabled, and the plan enables them with sriov-manage, not a plain write', async () => {
    const { root } = await l40s();
    const inv = await scan(root);
    expect(inv.devices.find((d) => d.pciAddress === PF)?.gpuInterface).toBe('NvidiaSriovDisabled');
    const plan = planCarving({ spec: { pools: [pool('l40s-12q', 'L40S-12Q', 2)] }, inventory: inv, nodeName: 'n', allocated: new Set() });
    expect(plan.writes).toEqual([expect.objectContaining({ path: `bus/pci/devices/${PF}/sriov_numvfs`, value: '32', tool: 'sriov-manage' })]);
  });

  test('profile by name resolved per card, types on count VFs, never a rebind; a second profile of another size is refused without heterogeneous mode', async () => {
    const { k, root } = await l40s();
    await sriovManage(k, '-e', PF);
    const inv: Inventory = await scan(root);
    expect(inv.devices.find((d) => d.pciAddress === PF)?.gpuInterface).toBe('NvidiaVendorVfio');
    expect(inv.devices.find((d) => d.pciAddress === VF0)?.nvidiaVgpu?.currentType).toBe(0);
    const a = pool('a', 'L40S-12Q', 2);
    const b = pool('b', 'NVIDIA L40S-24Q', 1);
    const plan = planCarving({ spec: { pools: [a, b] }, inventory: inv, nodeName: 'n', allocated: new Set() });
    expect(plan.writes.map((w) => [w.path, w.value])).toEqual([[typePath(VF0), '1153'], [typePath(VF1), '1153']]);
    expect(plan.writes.some((w) => /driver|bind|probe/.test(w.path))).toBe(false);
    expect(plan.blocked).toEqual([expect.objectContaining({ pool: 'b', reason: expect.stringMatching(/mix framebuffer sizes .* set spec\.carving\.vgpu\.heterogeneous on pool\(s\) a, b/) })]);

    // Once 12Q is on the GPU, the pool whose size is not there yet is the one refused, whatever the names.
    for (const w of plan.writes) await k.write(w.path, w.value);
    // The agent keeps the type table it read first (the driver lists only what fits now).
    const memory = new Map<string, VgpuType[]>();
    rememberCatalogues(inv, memory);
    const typedInv = rememberCatalogues(await scan(root), memory);
    const z = pool('0-24q', 'L40S-24Q', 1);
    const later = planCarving({ spec: { pools: [a, z] }, inventory: typedInv, nodeName: 'n', allocated: new Set() });
    expect(later.blocked).toEqual([expect.objectContaining({ pool: '0-24q', reason: expect.stringContaining("and pool a's NVIDIA L40S-12Q (12 GB) would mix framebuffer sizes") })]);

    const het = planCarving({ spec: { pools: [{ ...a, vgpuHeterogeneous: true }, { ...b, vgpuHeterogeneous: true }] }, inventory: inv, nodeName: 'n', allocated: new Set() });
    expect(het.blocked).toEqual([]);
    expect(het.writes.map((w) => [w.path, w.value, w.tool])).toEqual([
      [`bus/pci/devices/${PF}`, '1', 'nvidia-smi-shm'],
      [typePath(VF0), '1153', undefined],
      [typePath(VF1), '1153', undefined],
      [typePath('0000:3b:00.6'), '1155', undefined],
    ]);
  });

  test('lowering the count clears only VFs no VM holds', async () => {
    const { k, root } = await l40s();
    await sriovManage(k, '-e', PF);
    for (const vf of [VF0, VF1, '0000:3b:00.6']) await k.write(typePath(vf), '1153');
    const inv = await scan(root);
    // VF1 is held: the free VF0 and VF2 are cleared, whatever their order.
    const plan = planCarving({ spec: { pools: [pool('a', 'L40S-12Q', 1)] }, inventory: inv, nodeName: 'n', allocated: new Set([VF1]) });
    expect(plan.writes.map((w) => [w.path, w.value]).sort()).toEqual([[typePath(VF0), '0'], [typePath('0000:3b:00.6'), '0']]);
    expect(plan.blocked).toEqual([]);
    // Every VF held: nothing is cleared, and the pool says why.
    const all = planCarving({ spec: { pools: [pool('a', 'L40S-12Q', 1)] }, inventory: inv, nodeName: 'n', allocated: new Set([VF0, VF1, '0000:3b:00.6']) });
    expect(all.writes).toEqual([]);
    expect(all.blocked.map((b) => b.device)).toEqual([VF1, '0000:3b:00.6']);
    expect(all.blocked[0]?.reason).toContain('a VM holds it');
  });
});
