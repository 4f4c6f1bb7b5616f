// The simulated kernel (test/sysfs) against what Debian's 6.12 kernel did under QEMU in test/kernel
// (kernel.test.ts asserts the real side). Each test names one behaviour that was checked on the real
// kernel and shows the simulation does the same. Behaviours QEMU cannot emulate (NVIDIA's SR-IOV
// vGPU, NPIV, 1,024 VFs) are simulated only.
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { scan } from '../../device-plugin/src/discovery/scan.js';
import { buildSlices } from '../../device-plugin/src/health/slices.js';
import { FakeKernel, intel82599, mdevGpu } from '../sysfs/kernel.js';
import { tempTree } from '../sysfs/tmp.js';

const PF = '0000:01:00.0';
let k: FakeKernel;
let cleanup: () => Promise<void>;
async function machine(config: Parameters<typeof FakeKernel.create>[2] = {}, acs = true): Promise<void> {
  const t = await tempTree();
  cleanup = t.cleanup;
  k = await FakeKernel.create(t.root, t.devRoot, { ...config, driverIds: { '8086:10ed': 'ixgbevf' } });
  await k.loadModule('ixgbevf');
  const f = intel82599(PF, { netdev: 'enp1s0', totalVFs: 7 });
  await k.addFunction({ ...f, sriov: { ...(f.sriov as NonNullable<typeof f.sriov>), acs } });
}
afterEach(() => cleanup());
const vfDir = (vf: string): string => path.join(k.root, 'bus/pci/devices', vf);

test('VF addresses follow offset/stride, not the PF layout (igb: offset 128, stride 2 → 01:10.0, 01:10.2 …)', async () => {
  await machine();
  await k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '3');
  const inv = await scan(k.root);
  expect(inv.devices.find((d) => d.pciAddress === PF)?.sriov?.vfs).toEqual(['0000:01:10.0', '0000:01:10.2', '0000:01:10.4']);
});

test('changing sriov_numvfs from N to M (both non-zero) is EBUSY; 0 first, then M, works', async () => {
  await machine();
  await k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '4');
  await expect(k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '3')).rejects.toMatchObject({ code: 'EBUSY' });
  await k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '0');
  await k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '3');
  expect((await scan(k.root)).devices.filter((d) => d.physfn === PF)).toHaveLength(3);
});

test('without CONFIG_VFIO_DEVICE_CDEV: sysfs lists vfio-dev/vfioN, /dev/vfio/devices does not exist, the group node does', async () => {
  await machine({ vfioCdev: false });
  await k.write(`bus/pci/devices/${PF}/sriov_drivers_autoprobe`, '0');
  await k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '1');
  await k.write('bus/pci/devices/0000:01:10.0/driver_override', 'vfio-pci');
  await k.write('bus/pci/drivers_probe', '0000:01:10.0');
  expect(readdirSync(path.join(vfDir('0000:01:10.0'), 'vfio-dev'))).toEqual(['vfio0']);
  expect(existsSync(path.join(k.devRoot, 'vfio/devices'))).toBe(false);
  const inv = await scan(k.root, { devRoot: k.devRoot });
  const g = inv.devices.find((d) => d.pciAddress === '0000:01:10.0')?.iommuGroup;
  expect(inv.devNodes).toContain(`/dev/vfio/${g}`);
});

test('vfio device numbers come from an IDA: the lowest free one at bind, so a number freed by an unbind goes to the next bind', async () => {
  await machine();
  await k.write(`bus/pci/devices/${PF}/sriov_drivers_autoprobe`, '0');
  await k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '4');
  const vfs = ['0000:01:10.0', '0000:01:10.2', '0000:01:10.4', '0000:01:10.6'];
  const toVfio = async (vf: string): Promise<void> => {
    await k.write(`bus/pci/devices/${vf}/driver_override`, 'vfio-pci');
    await k.write('bus/pci/drivers_probe', vf);
  };
  for (const vf of vfs.slice(0, 3)) await toVfio(vf);
  expect(vfs.slice(0, 3).map((vf) => readdirSync(path.join(vfDir(vf), 'vfio-dev')))).toEqual([['vfio0'], ['vfio1'], ['vfio2']]);
  await k.write('bus/pci/drivers/vfio-pci/unbind', vfs[1] as string);
  expect(readdirSync(path.join(k.devRoot, 'vfio/devices')).sort()).toEqual(['vfio0', 'vfio2']);
  await toVfio(vfs[3] as string);
  expect(readdirSync(path.join(vfDir(vfs[3] as string), 'vfio-dev'))).toEqual(['vfio1']);
  expect(readdirSync(path.join(k.devRoot, 'vfio/devices')).sort()).toEqual(['vfio0', 'vfio1', 'vfio2']);
});

test('an mdev takes its vfio device number from the same IDA as vfio-pci binds, when it is created, and gives it back when removed', async () => {
  // Debian's 6.12 (test/kernel scenario 15): mtty mdevs created at boot took vfio0 and vfio1, and
  // the PCI functions bound after them vfio2 on.
  await machine();
  await k.addFunction(mdevGpu('0000:3b:00.0'));
  const uuid = '11111111-2222-4333-8444-555555555555';
  await k.write('bus/pci/devices/0000:3b:00.0/mdev_supported_types/nvidia-222/create', uuid);
  expect(readdirSync(path.join(k.root, 'bus/mdev/devices', uuid, 'vfio-dev'))).toEqual(['vfio0']);
  await k.write(`bus/pci/devices/${PF}/sriov_drivers_autoprobe`, '0');
  await k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '1');
  await k.write('bus/pci/devices/0000:01:10.0/driver_override', 'vfio-pci');
  await k.write('bus/pci/drivers_probe', '0000:01:10.0');
  expect(readdirSync(path.join(vfDir('0000:01:10.0'), 'vfio-dev'))).toEqual(['vfio1']);
  await k.write(`bus/mdev/devices/${uuid}/remove`, '1');
  expect(readdirSync(path.join(k.devRoot, 'vfio/devices')).sort()).toEqual(['vfio1']);
});

test('VFs behind ACS get groups of their own; without ACS they share the PF\'s group, which is not viable while the PF keeps its driver', async () => {
  await machine();
  await k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '2');
  let inv = await scan(k.root);
  const groups = (addrs: string[]): (number | undefined)[] => addrs.map((a) => inv.devices.find((d) => d.pciAddress === a)?.iommuGroup);
  expect(new Set(groups([PF, '0000:01:10.0', '0000:01:10.2'])).size).toBe(3);
  await cleanup();

  await machine({}, false);
  await k.write(`bus/pci/devices/${PF}/sriov_drivers_autoprobe`, '0');
  await k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '1');
  await k.write('bus/pci/devices/0000:01:10.0/driver_override', 'vfio-pci');
  await k.write('bus/pci/drivers_probe', '0000:01:10.0');
  inv = await scan(k.root, { devRoot: k.devRoot });
  expect(new Set(groups([PF, '0000:01:10.0'])).size).toBe(1);
  const spec = { pools: [{ name: 'nic', resourceName: 'virtualio.dev/nic', class: 'NIC' as const, mode: 'SRIOV' as const, consumption: 'HostDevice' as const, count: 1, devices: [{ pciAddress: PF }] }] };
  const [s] = buildSlices({ spec, inventory: inv, devRoot: k.devRoot, nodeName: 'n' });
  expect(s).toMatchObject({ health: 'Unhealthy', reason: `IOMMU group ${groups([PF])[0]} not viable: ${PF} bound to ixgbe` });
});

test('a driver_override naming a driver that is not loaded: drivers_probe succeeds and the function stays unbound', async () => {
  await machine();
  await k.write(`bus/pci/devices/${PF}/sriov_drivers_autoprobe`, '0');
  await k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '1');
  await k.write('bus/pci/devices/0000:01:10.0/driver_override', 'vfio-pci-not-loaded');
  await k.write('bus/pci/drivers_probe', '0000:01:10.0');
  expect(existsSync(path.join(vfDir('0000:01:10.0'), 'driver'))).toBe(false);
});

test('sriov_drivers_autoprobe=0 is checked on every probe, not only at VF creation: no override → not probed, bind is EIO', async () => {
  await machine();
  await k.write(`bus/pci/devices/${PF}/sriov_drivers_autoprobe`, '0');
  await k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '1');
  await k.write('bus/pci/drivers_probe', '0000:01:10.0');
  expect(existsSync(path.join(vfDir('0000:01:10.0'), 'driver'))).toBe(false);
  await expect(k.write('bus/pci/drivers/ixgbevf/bind', '0000:01:10.0')).rejects.toMatchObject({ code: 'EIO' });
  await k.write('bus/pci/devices/0000:01:10.0/driver_override', 'ixgbevf');
  await k.write('bus/pci/drivers_probe', '0000:01:10.0');
  expect(existsSync(path.join(vfDir('0000:01:10.0'), 'driver'))).toBe(true);
});
