// Intel and AMD SR-IOV GPUs on the fake kernel: detected per device (gpuInterface), carved as far as
// sysfs allows (Intel: sriov_numvfs, VFs on vfio-pci; AMD MxGPU: VFs made by gim, bound to vfio-pci),
// and a count sysfs cannot set (gim) refused with the reason instead of a write the driver refuses.
import { planCarving } from '../../device-plugin/src/carving/plan.js';
import { scan } from '../../device-plugin/src/discovery/scan.js';
import type { PoolPlan } from '../../device-plugin/src/model.js';
import { addIntelFlex170, FLEX170_FREE } from '../sysfs/intel-iov.js';
import { amdMi300x, FakeKernel } from '../sysfs/kernel.js';
import { tempTree } from '../sysfs/tmp.js';

const FLEX = '0000:4d:00.0';
const MI300X = '0000:11:00.0';
const sriovPool = (name: string, pf: string, count: number, o: Partial<PoolPlan> = {}): PoolPlan =>
  ({ name, resourceName: `virtualio.dev/${name}`, class: 'GPU', mode: 'SRIOV', consumption: 'HostDevice', count, vfDriver: 'vfio-pci', devices: [{ pciAddress: pf }], ...o });

test('Intel Flex 170 on i915 with prelim_iov: IntelI915Iov; a plain SR-IOV pool enables VFs and binds them to vfio-pci', async () => {
  const { root, devRoot } = await tempTree();
  const k = await FakeKernel.create(root, devRoot);
  await addIntelFlex170(k, FLEX); // with the i915 quota rules (test/sysfs/intel-iov.ts)
  let inv = await scan(root, { devRoot });
  expect(inv.devices.find((d) => d.pciAddress === FLEX)?.gpuInterface).toBe('IntelI915Iov');
  const spec = { pools: [sriovPool('flex', FLEX, 4)] };
  for (let pass = 0; pass < 3; pass++) {
    const plan = planCarving({ spec, inventory: inv, nodeName: 'n', allocated: new Set() });
    for (const w of plan.writes) await k.write(w.path, w.value);
    inv = await scan(root, { devRoot });
  }
  const vfs = inv.devices.find((d) => d.pciAddress === FLEX)?.sriov?.vfs ?? [];
  expect(vfs).toHaveLength(4);
  for (const vf of vfs) expect(await k.driverOf(vf)).toBe('vfio-pci');
  // No quotas asked: the driver's automatic provisioning split the GPU evenly over the 4 VFs.
  expect(inv.gpuVfProvisioning?.[FLEX]?.vfs['4']?.['gt0/contexts_quota']).toBe(String(Math.floor(FLEX170_FREE.contexts_quota / 4)));
  expect(inv.gpuVfProvisioning?.[FLEX]?.vfs['5']?.['gt0/contexts_quota']).toBe('0');
});

test('AMD MI300X on gim: AmdMxgpu; its VFs are adopted and passed through, another count is refused with the reason', async () => {
  const { root, devRoot } = await tempTree();
  const k = await FakeKernel.create(root, devRoot, { driverIds: { '1002:74b5': 'amdgpu' } });
  await k.addFunction(amdMi300x(MI300X));
  await k.write(`bus/pci/devices/${MI300X}/sriov_numvfs`, '8'); // gim at module load (vf_num=8)
  await k.saveConfig({ ...(await k.config()), noSriovConfigure: ['gim'] });
  await expect(k.write(`bus/pci/devices/${MI300X}/sriov_numvfs`, '0')).rejects.toMatchObject({ code: 'ENOENT' });
  let inv = await scan(root, { devRoot });
  expect(inv.devices.find((d) => d.pciAddress === MI300X)?.gpuInterface).toBe('AmdMxgpu');

  const wrong = planCarving({ spec: { pools: [sriovPool('mi300x', MI300X, 4, { adoptExistingVFs: true })] }, inventory: inv, nodeName: 'n', allocated: new Set() });
  expect(wrong.writes).toEqual([]);
  expect(wrong.blocked).toEqual([{ pool: 'mi300x', device: MI300X, reason: expect.stringContaining("on AMD's gim driver, which creates its VFs when it loads (8 now); their count cannot be set through sysfs") }]);

  const spec = { pools: [sriovPool('mi300x', MI300X, 8, { adoptExistingVFs: true })] };
  for (let pass = 0; pass < 2; pass++) {
    const plan = planCarving({ spec, inventory: inv, nodeName: 'n', allocated: new Set() });
    expect(plan.writes.some((w) => w.path.endsWith('sriov_numvfs'))).toBe(false);
    for (const w of plan.writes) await k.write(w.path, w.value);
    inv = await scan(root, { devRoot });
  }
  for (const vf of inv.devices.find((d) => d.pciAddress === MI300X)?.sriov?.vfs ?? []) expect(await k.driverOf(vf)).toBe('vfio-pci');
});
