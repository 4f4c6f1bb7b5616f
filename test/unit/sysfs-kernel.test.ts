// The fake kernel behaves like the kernel for what virtualio writes (through the SysfsWriter port).
import { spawnSync } from 'node:child_process';
import { constants, openSync } from 'node:fs';
import { readFile, readlink, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { scan } from '../../device-plugin/src/discovery/scan.js';
import type { InventoryDevice } from '../../device-plugin/src/model.js';
import { connectX6, emulexFc, FakeKernel, gpuWithAudio, intel82599, mdevGpu, mdevGpuMixed, nvmeWithSriov } from '../sysfs/kernel.js';
import { tempTree } from '../sysfs/tmp.js';

let k: FakeKernel;
let cleanup: () => Promise<void>;
const PF = '0000:3b:00.0';
const NIC = '0000:04:00.0';
const HBA = '0000:5e:00.0';
const GPU = '0000:af:00.0';

beforeEach(async () => {
  const t = await tempTree();
  cleanup = t.cleanup;
  k = await FakeKernel.create(t.root, t.devRoot);
  await k.addFunction(connectX6(PF, { netdev: 'ens1f0np0', totalVFs: 8 }));
  await k.addFunction(intel82599(NIC, { netdev: 'eno49', totalVFs: 63 }));
  await k.addFunction(emulexFc(HBA, { host: 5, wwpn: '10000090fa000001', wwnn: '20000090fa000001', maxNPIVVports: 2 }));
  await k.addFunction(mdevGpu(GPU, { instances: 2 }));
});
afterEach(() => cleanup());

async function device(addr: string): Promise<InventoryDevice | undefined> {
  return (await scan(k.root, { devRoot: k.devRoot })).devices.find((d) => d.pciAddress === addr);
}
const numvfs = (pf: string): string => `bus/pci/devices/${pf}/sriov_numvfs`;

describe('builders', () => {
  test('every builder yields a device discovery reads without errors', async () => {
    for (const f of [...gpuWithAudio('0000:65:00.0', '0000:65:00.1', { group: 40 }), nvmeWithSriov('0000:d8:00.0', { name: 'nvme3', serial: 'S1' })]) await k.addFunction(f);
    const inv = await scan(k.root, { devRoot: k.devRoot });
    expect(inv.devices.filter((d) => d.errors)).toEqual([]);
    const by = new Map(inv.devices.map((d) => [d.pciAddress, d]));
    expect(by.get(PF)).toMatchObject({ vendorID: '15b3', deviceID: '101d', classCode: '020000', driver: 'mlx5_core', sriov: { totalVFs: 8, numVFs: 0, vfs: [] }, netdevs: [{ name: 'ens1f0np0', operState: 'up' }] });
    expect(by.get(NIC)).toMatchObject({ vendorID: '8086', deviceID: '10fb', driver: 'ixgbe', netdevs: [{ name: 'eno49' }] });
    expect(by.get(HBA)).toMatchObject({ vendorID: '10df', deviceID: 'f100', classCode: '0c0400', driver: 'lpfc', fcHosts: [{ host: 'host5', wwpn: '10000090fa000001', maxNPIVVports: 2, npivVportsInUse: 0, portState: 'Online' }] });
    expect(by.get(GPU)?.mdevTypes).toEqual([
      { id: 'nvidia-222', name: 'GRID T4-1B', availableInstances: 2, deviceAPI: 'vfio-pci' },
      { id: 'nvidia-230', name: 'GRID T4-16Q', availableInstances: 1, deviceAPI: 'vfio-pci' },
    ]);
    expect(by.get('0000:65:00.0')).toMatchObject({ iommuGroup: 40, iommuGroupMembers: ['0000:65:00.0', '0000:65:00.1'], driver: 'nvidia' });
    expect(by.get('0000:65:00.1')).toMatchObject({ classCode: '040300', driver: 'snd_hda_intel', iommuGroup: 40 });
    expect(by.get('0000:d8:00.0')).toMatchObject({ classCode: '010802', sriov: { totalVFs: 32 }, nvme: [{ name: 'nvme3', model: 'SAMSUNG MZWLJ3T8HBLS-00007', serial: 'S1' }] });
  });
});

describe('SR-IOV', () => {
  test('sriov_numvfs creates VFs at offset/stride with links, groups, NUMA and autoprobed driver', async () => {
    await k.write(numvfs(NIC), '1');
    expect((await device('0000:04:10.0'))?.driver).toBeUndefined(); // ixgbevf not loaded: stays unbound
    await k.write(numvfs(NIC), '0');
    await k.loadModule('ixgbevf');
    await k.write(numvfs(NIC), '3');
    const pf = await device(NIC);
    expect(pf?.sriov).toEqual({ totalVFs: 63, numVFs: 3, vfs: ['0000:04:10.0', '0000:04:10.2', '0000:04:10.4'] });
    const vf = await device('0000:04:10.2');
    expect(vf).toMatchObject({ vendorID: '8086', deviceID: '10ed', physfn: NIC, numaNode: 0, driver: 'ixgbevf', netdevs: [{ name: 'eno49v1' }] });
    expect(vf?.iommuGroupMembers).toEqual(['0000:04:10.2']);
  });

  test('with sriov_drivers_autoprobe 0 the VFs stay unbound', async () => {
    await k.write(`bus/pci/devices/${PF}/sriov_drivers_autoprobe`, '0');
    await k.write(numvfs(PF), '2\n');
    expect((await device('0000:3b:00.2'))?.driver).toBeUndefined();
    expect((await device('0000:3b:00.3'))?.deviceID).toBe('101e');
  });

  test.each([
    ['a change between non-zero values', '2', '4', 'EBUSY'],
    ['more than sriov_totalvfs', '0', '9', 'ERANGE'],
    ['a non-number', '0', 'four', 'EINVAL'],
  ])('refuses %s and leaves the tree unchanged', async (_n, first, second, code) => {
    if (first !== '0') await k.write(numvfs(PF), first);
    const before = await scan(k.root, { devRoot: k.devRoot });
    await expect(k.write(numvfs(PF), second)).rejects.toMatchObject({ code });
    expect(await scan(k.root, { devRoot: k.devRoot })).toEqual(before);
  });

  test('refuses SR-IOV on a PF without a driver', async () => {
    await k.unbind(PF);
    await expect(k.write(numvfs(PF), '2')).rejects.toMatchObject({ code: 'ENOENT' });
  });

  test('writing 0 removes every VF and its group; the same value again is a no-op', async () => {
    await k.write(numvfs(PF), '4');
    await k.write(numvfs(PF), '4');
    await k.write(numvfs(PF), '0');
    const inv = await scan(k.root, { devRoot: k.devRoot });
    expect(inv.devices.map((d) => d.pciAddress)).toEqual([NIC, PF, HBA, GPU]);
    expect((await device(PF))?.sriov).toEqual({ totalVFs: 8, numVFs: 0, vfs: [] });
  });
});

describe('binding', () => {
  test('driver_override + unbind + drivers_probe moves a VF to vfio-pci with group and cdev nodes; back again', async () => {
    await k.write(numvfs(PF), '2');
    const vf = '0000:3b:00.2';
    expect((await device(vf))?.driver).toBe('mlx5_core');
    await k.write(`bus/pci/devices/${vf}/driver_override`, 'vfio-pci');
    await k.write(`bus/pci/devices/${vf}/driver/unbind`, vf);
    expect((await device(vf))?.driver).toBeUndefined();
    await k.write('bus/pci/drivers_probe', vf);
    const d = await device(vf);
    expect(d?.driver).toBe('vfio-pci');
    const inv = await scan(k.root, { devRoot: k.devRoot });
    expect(inv.devNodes).toEqual(expect.arrayContaining([`/dev/vfio/${d?.iommuGroup}`, '/dev/vfio/devices/vfio0', '/dev/vfio/vfio']));
    expect(inv.vfioCdevs).toEqual({ [vf]: '/dev/vfio/devices/vfio0' });
    // Clear the override and re-probe: the native driver takes it back, the vfio nodes go.
    await k.write(`bus/pci/devices/${vf}/driver_override`, '\n');
    await k.write(`bus/pci/devices/${vf}/driver/unbind`, vf);
    await k.write('bus/pci/drivers_probe', vf);
    const after = await scan(k.root, { devRoot: k.devRoot });
    expect(after.devices.find((x) => x.pciAddress === vf)?.driver).toBe('mlx5_core');
    expect(after.devNodes).toEqual(['/dev/vfio/vfio']);
    expect(await readFile(path.join(k.root, 'bus/pci/devices', vf, 'driver_override'), 'utf8')).toBe('(null)\n');
  });

  test('an attribute a test turned into a FIFO (a write that never returns) neither blocks the kernel nor is read by it', async () => {
    // The fault matrix swaps driver_override for a FIFO nobody reads; a probe of that function reads
    // the override. A plain read would sit in open(2) until a writer came, freezing the kernel and
    // keeping the test process alive at exit (a CI run hung so).
    const override = path.join(k.root, 'bus/pci/devices', GPU, 'driver_override');
    await rm(override);
    spawnSync('mkfifo', [override]);
    await k.write(`bus/pci/devices/${GPU}/driver/unbind`, GPU);
    await k.write('bus/pci/drivers_probe', GPU); // resolves; jest's timeout fails the test if it blocks
    expect((await device(GPU))?.driver).toBe('nvidia'); // no override known: the static ID table decides
    // The kernel left nothing open on the FIFO: a writer still finds no reader.
    expect(() => openSync(override, constants.O_WRONLY | constants.O_NONBLOCK)).toThrow(expect.objectContaining({ code: 'ENXIO' }));
  }, 10_000);

  test('drivers/<name>/bind needs a matching override or ID; unbind needs the right driver', async () => {
    await expect(k.write('bus/pci/drivers/vfio-pci/bind', GPU)).rejects.toMatchObject({ code: 'EBUSY' });
    await k.write(`bus/pci/devices/${GPU}/driver/unbind`, GPU);
    await expect(k.write('bus/pci/drivers/vfio-pci/bind', GPU)).rejects.toMatchObject({ code: 'ENODEV' });
    await k.write(`bus/pci/devices/${GPU}/driver_override`, 'vfio-pci');
    await k.write('bus/pci/drivers/vfio-pci/bind', GPU);
    expect(await k.driverOf(GPU)).toBe('vfio-pci');
    await expect(k.write('bus/pci/drivers/nvidia/unbind', GPU)).rejects.toMatchObject({ code: 'ENODEV' });
  });

  test('the group node stays while another member of the group is on vfio-pci', async () => {
    for (const f of gpuWithAudio('0000:65:00.0', '0000:65:00.1', { group: 40 })) await k.addFunction(f);
    for (const fn of ['0000:65:00.0', '0000:65:00.1']) {
      await k.write(`bus/pci/devices/${fn}/driver_override`, 'vfio-pci');
      await k.write(`bus/pci/devices/${fn}/driver/unbind`, fn);
      await k.write('bus/pci/drivers_probe', fn);
    }
    expect((await scan(k.root, { devRoot: k.devRoot })).devNodes).toContain('/dev/vfio/40');
    await k.write('bus/pci/drivers/vfio-pci/unbind', '0000:65:00.1');
    expect((await scan(k.root, { devRoot: k.devRoot })).devNodes).toContain('/dev/vfio/40');
    await k.write('bus/pci/drivers/vfio-pci/unbind', '0000:65:00.0');
    expect((await scan(k.root, { devRoot: k.devRoot })).devNodes).not.toContain('/dev/vfio/40');
  });

  test('a PF netdev disappears while unbound and comes back with its name', async () => {
    await k.write(`bus/pci/devices/${NIC}/driver/unbind`, NIC);
    expect((await device(NIC))?.netdevs).toBeUndefined();
    await k.write('bus/pci/drivers_probe', NIC);
    expect((await device(NIC))?.netdevs).toEqual([{ name: 'eno49', operState: 'up' }]);
    expect(await readlink(path.join(k.root, 'class/net/eno49'))).toContain(NIC);
  });
});

describe('mediated devices', () => {
  const create = `bus/pci/devices/${GPU}/mdev_supported_types/nvidia-222/create`;
  const U1 = '2f0a4b7e-0000-4000-8000-000000000001';
  const U2 = '2f0a4b7e-0000-4000-8000-000000000002';

  test('create makes the mdev with type, group, bus link and dev node; remove undoes it', async () => {
    await k.write(create, U1);
    let d = await device(GPU);
    expect(d?.mdevs).toEqual([{ uuid: U1, type: 'nvidia-222', iommuGroup: expect.any(Number) }]);
    expect(d?.mdevTypes?.[0]?.availableInstances).toBe(1);
    const g = d?.mdevs?.[0]?.iommuGroup;
    expect(await readlink(path.join(k.root, 'bus/mdev/devices', U1))).toContain(GPU);
    expect((await scan(k.root, { devRoot: k.devRoot })).devNodes).toContain(`/dev/vfio/${g}`);
    await k.write(`bus/mdev/devices/${U1}/remove`, '1');
    d = await device(GPU);
    expect(d?.mdevs).toBeUndefined();
    expect(d?.mdevTypes?.[0]?.availableInstances).toBe(2);
    expect((await scan(k.root, { devRoot: k.devRoot })).devNodes).toEqual(['/dev/vfio/vfio']);
  });

  test.each([
    ['a duplicate UUID', [U1], U1, 'EEXIST'],
    ['no instance left', [U1, U2], '2f0a4b7e-0000-4000-8000-000000000003', 'EUSERS'],
    ['a malformed UUID', [], 'not-a-uuid', 'EINVAL'],
  ])('refuses %s', async (_n, before, uuid, code) => {
    for (const u of before) await k.write(create, u);
    await expect(k.write(create, uuid)).rejects.toMatchObject({ code });
    expect((await device(GPU))?.mdevs?.length ?? 0).toBe(before.length);
  });
});

describe('a parent whose types share one budget (mtty ports, mbochs memory, vGPU framebuffer)', () => {
  test('available_instances of every type drop together; a create that no longer fits is refused with ENOSPC, as mtty does', async () => {
    const mixed = '0000:b2:00.0';
    await k.addFunction(mdevGpuMixed(mixed));
    const types = `bus/pci/devices/${mixed}/mdev_supported_types`;
    const avail = async (): Promise<string[]> => Promise.all(['nvidia-745', 'nvidia-747'].map(async (t) => (await readFile(path.join(k.root, types, t, 'available_instances'), 'utf8')).trim()));
    await k.write(`${types}/nvidia-747/create`, '2f0a4b7e-0000-4000-8000-00000000000a'); // 8 of 16 units
    await k.write(`${types}/nvidia-745/create`, '2f0a4b7e-0000-4000-8000-00000000000b'); // 2 more
    expect(await avail()).toEqual(['3', '0']);
    await expect(k.write(`${types}/nvidia-747/create`, '2f0a4b7e-0000-4000-8000-00000000000c')).rejects.toMatchObject({ code: 'ENOSPC' });
  });
});

describe('vGPU on an NVIDIA VF (vGPU <= 16, SR-IOV card such as the A16)', () => {
  test('a VF hosts one vGPU: once it holds one, every type shows 0; once it is gone, 1 again', async () => {
    const vf = '0000:b1:00.4';
    await k.addFunction(mdevGpu(PF.replace('3b', 'b1'), { instances: 1 }));
    await k.addFunction({ ...mdevGpu(vf, { instances: 1 }) });
    await symlink(`../${PF.replace('3b', 'b1')}`, path.join(k.root, 'bus/pci/devices', vf, 'physfn')); // a VF of the first
    const avail = async (t: string): Promise<string> => (await readFile(path.join(k.root, 'bus/pci/devices', vf, 'mdev_supported_types', t, 'available_instances'), 'utf8')).trim();
    const uuid = '4b20d080-1b54-4048-85b3-a6a62d165c01';
    await k.write(`bus/pci/devices/${vf}/mdev_supported_types/nvidia-230/create`, uuid);
    expect([await avail('nvidia-222'), await avail('nvidia-230')]).toEqual(['0', '0']);
    await k.write(`bus/mdev/devices/${uuid}/remove`, '1');
    expect([await avail('nvidia-222'), await avail('nvidia-230')]).toEqual(['1', '1']);
  });
});

describe('FC NPIV', () => {
  const fc = 'class/fc_host/host5';
  test('vport_create makes a vport with its own fc_host; vport_delete removes it', async () => {
    await k.write(`${fc}/vport_create`, 'c050760000000001:c050760000000002');
    const inv = await scan(k.root, { devRoot: k.devRoot });
    expect(inv.vports).toEqual([{ pciAddress: HBA, parentHost: 'host5', name: 'vport-5:0-0', host: 'host6', wwpn: 'c050760000000001', wwnn: 'c050760000000002', state: 'Active' }]);
    expect(inv.devices.find((d) => d.pciAddress === HBA)?.fcHosts?.[0]?.npivVportsInUse).toBe(1);
    expect(inv.devices.find((d) => d.pciAddress === HBA)?.fcHosts?.map((h) => h.host)).toEqual(['host5']);
    await k.write(`${fc}/vport_delete`, 'c050760000000001:c050760000000002');
    const after = await scan(k.root);
    expect(after.vports).toBeUndefined();
    expect(after.devices.find((d) => d.pciAddress === HBA)?.fcHosts?.[0]?.npivVportsInUse).toBe(0);
  });

  test.each([
    ['a 0x prefix', '0xc050760000000001:0xc050760000000002', 'EINVAL'],
    ['a short WWPN', 'c0507600000001:c050760000000002', 'EINVAL'],
    ['a duplicate WWPN', 'c050760000000001:c0507600000000ff', 'EEXIST'],
  ])('vport_create refuses %s', async (_n, value, code) => {
    await k.write(`${fc}/vport_create`, 'c050760000000001:c050760000000002');
    await expect(k.write(`${fc}/vport_create`, value)).rejects.toMatchObject({ code });
  });

  test('refuses beyond max_npiv_vports', async () => {
    await k.write(`${fc}/vport_create`, 'c050760000000001:c050760000000002');
    await k.write(`${fc}/vport_create`, 'c050760000000003:c050760000000004');
    await expect(k.write(`${fc}/vport_create`, 'c050760000000005:c050760000000006')).rejects.toMatchObject({ code: 'ENOSPC' });
    await expect(k.write(`${fc}/vport_delete`, 'c0507600000000aa:c050760000000006')).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('hot-unplug and bad paths', () => {
  test('remove on a PF removes it and its VFs', async () => {
    await k.write(numvfs(PF), '2');
    await k.write(`bus/pci/devices/${PF}/remove`, '1');
    expect((await scan(k.root)).devices.map((d) => d.pciAddress)).toEqual([NIC, HBA, GPU]);
  });

  test.each([
    ['a missing attribute', `bus/pci/devices/${PF}/nope`, 'ENOENT'],
    ['a missing device', 'bus/pci/devices/0000:99:00.0/sriov_numvfs', 'ENOENT'],
    ['a read-only attribute', `bus/pci/devices/${PF}/vendor`, 'EACCES'],
    ['a path escaping the root', '../etc/passwd', 'EINVAL'],
  ])('refuses %s', async (_n, p, code) => {
    await expect(k.write(p, '1')).rejects.toMatchObject({ code });
  });
});
