// The fake kernel as the witness of allocation safety: VFIO group ownership, violations recorded for
// every destructive write on a held device, the blocking wait Linux does, and the VMM stand-in.
import { readlink } from 'node:fs/promises';
import path from 'node:path';
import { connectX6, emulexFc, FakeKernel, gpuWithAudio, mdevGpu, readViolations } from '../sysfs/kernel.js';
import { tempTree, waitFor } from '../sysfs/tmp.js';
import { groupOfNode, startVm, startVmFromAllocation } from '../sysfs/vmm.js';

let k: FakeKernel;
let cleanup: () => Promise<void>;
const PF = '0000:3b:00.0';
const VF0 = '0000:3b:00.2';
const VF1 = '0000:3b:00.3';
const GPU = '0000:af:00.0';
const HBA = '0000:5e:00.0';
const U1 = '2f0a4b7e-0000-4000-8000-000000000001';
const WWPN = 'c050760000000001';
const FC = 'class/fc_host/host5';

/** driver_override + unbind + drivers_probe: the function moves to vfio-pci (the agent's carving). */
async function toVfio(bdf: string): Promise<number> {
  await k.write(`bus/pci/devices/${bdf}/driver_override`, 'vfio-pci');
  await k.write(`bus/pci/devices/${bdf}/driver/unbind`, bdf);
  await k.write('bus/pci/drivers_probe', bdf);
  return groupOf(`bus/pci/devices/${bdf}`);
}

async function groupOf(rel: string): Promise<number> {
  return Number(path.basename(await readlink(path.join(k.root, rel, 'iommu_group'))));
}

/** Settles to 'pending' when `p` has not settled within `ms`. */
async function stateAfter(p: Promise<unknown>, ms = 150): Promise<'resolved' | 'rejected' | 'pending'> {
  return Promise.race([p.then(() => 'resolved' as const, () => 'rejected' as const), new Promise<'pending'>((r) => setTimeout(() => r('pending'), ms))]);
}

beforeEach(async () => {
  const t = await tempTree();
  cleanup = t.cleanup;
  k = await FakeKernel.create(t.root, t.devRoot);
  await k.addFunction(connectX6(PF, { netdev: 'ens1f0np0', totalVFs: 8 }));
  await k.addFunction(mdevGpu(GPU, { instances: 4 }));
  await k.addFunction(emulexFc(HBA, { host: 5, wwpn: '10000090fa000001', wwnn: '20000090fa000001', maxNPIVVports: 4 }));
  await k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '2');
  k.ownership.requestIntervalMs = 40;
});
afterEach(() => cleanup());

describe('opening a group', () => {
  test('a second open is EBUSY (any holder); no node is ENOENT; close by a non-holder is EBADF', async () => {
    await expect(k.openVfio(await groupOf(`bus/pci/devices/${VF0}`), 'vm/a')).rejects.toMatchObject({ code: 'ENOENT' }); // still on mlx5_core
    const g = await toVfio(VF0);
    await k.openVfio(g, 'vm/a');
    await expect(k.openVfio(g, 'vm/b')).rejects.toMatchObject({ code: 'EBUSY' });
    await expect(k.openVfio(g, 'vm/a')).rejects.toMatchObject({ code: 'EBUSY' });
    expect(() => k.closeVfio(g, 'vm/b')).toThrow(expect.objectContaining({ code: 'EBADF' }));
    k.closeVfio(g, 'vm/a');
    await k.openVfio(g, 'vm/b');
    expect(k.ownership.holders().groups).toEqual([{ group: g, holder: 'vm/b' }]);
  });

  test("an mdev's own IOMMU group has a node that opens; a vport is held by WWPN", async () => {
    await k.write(`bus/pci/devices/${GPU}/mdev_supported_types/nvidia-222/create`, U1);
    const g = await groupOf(`bus/mdev/devices/${U1}`);
    expect(await groupOfNode(k, `/dev/vfio/${g}`)).toBe(g);
    await k.openVfio(g, 'vm/a');
    await expect(k.holdVport(WWPN, 'vm/a')).rejects.toMatchObject({ code: 'ENOENT' });
    await k.write(`${FC}/vport_create`, `${WWPN}:c050760000000002`);
    await k.holdVport(`0x${WWPN}`, 'vm/a');
    await expect(k.holdVport(WWPN, 'vm/b')).rejects.toMatchObject({ code: 'EBUSY' });
  });
});

interface Case {
  /** Makes the device exist; returns the group a VMM would hold (undefined: a vport) and the write. */
  setup: () => Promise<{ group?: number; device: string; path: string; value: string }>;
}

const destructive: [string, Case][] = [
  ['sriov_numvfs=0 on the PF of an open VF', { setup: async () => ({ group: await toVfio(VF0), device: VF0, path: `bus/pci/devices/${PF}/sriov_numvfs`, value: '0' }) }],
  ['driver/unbind of an open VF', { setup: async () => ({ group: await toVfio(VF0), device: VF0, path: `bus/pci/devices/${VF0}/driver/unbind`, value: VF0 }) }],
  ['drivers/vfio-pci/unbind of an open VF', { setup: async () => ({ group: await toVfio(VF0), device: VF0, path: 'bus/pci/drivers/vfio-pci/unbind', value: VF0 }) }],
  ['driver/unbind of the PF of an open VF (PF drivers disable SR-IOV on remove)', { setup: async () => ({ group: await toVfio(VF0), device: VF0, path: `bus/pci/devices/${PF}/driver/unbind`, value: PF }) }],
  ['PCI remove of an open VF', { setup: async () => ({ group: await toVfio(VF0), device: VF0, path: `bus/pci/devices/${VF0}/remove`, value: '1' }) }],
  [
    'mdev remove of an open mdev',
    {
      setup: async () => {
        await k.write(`bus/pci/devices/${GPU}/mdev_supported_types/nvidia-222/create`, U1);
        return { group: await groupOf(`bus/mdev/devices/${U1}`), device: U1, path: `bus/mdev/devices/${U1}/remove`, value: '1' };
      },
    },
  ],
  [
    'unbind of the parent of an open mdev',
    {
      setup: async () => {
        await k.write(`bus/pci/devices/${GPU}/mdev_supported_types/nvidia-222/create`, U1);
        return { group: await groupOf(`bus/mdev/devices/${U1}`), device: U1, path: `bus/pci/devices/${GPU}/driver/unbind`, value: GPU };
      },
    },
  ],
  [
    'vport_delete on the FC host of a held vport',
    {
      setup: async () => {
        await k.write(`${FC}/vport_create`, `${WWPN}:c050760000000002`);
        return { device: WWPN, path: `${FC}/vport_delete`, value: `${WWPN}:c050760000000002` };
      },
    },
  ],
  [
    'unbind of the HBA of a held vport (the FC host goes)',
    {
      setup: async () => {
        await k.write(`${FC}/vport_create`, `${WWPN}:c050760000000002`);
        return { device: WWPN, path: `bus/pci/devices/${HBA}/driver/unbind`, value: HBA };
      },
    },
  ],
  [
    "the vport's own vport_delete",
    {
      setup: async () => {
        await k.write(`${FC}/vport_create`, `${WWPN}:c050760000000002`);
        return { device: WWPN, path: 'class/fc_vports/vport-5:0-0/vport_delete', value: '1' };
      },
    },
  ],
];

describe.each(destructive)('%s', (_name, c) => {
  test('held: a violation naming the holder; a VFIO device blocks the write until the VMM lets go', async () => {
    const t = await c.setup();
    const holder = 'vm/victim';
    const requests: number[] = [];
    if (t.group === undefined) await k.holdVport(t.device, holder);
    else await k.openVfio(t.group, holder, { onRequest: (r) => requests.push(r.count) });
    const write = k.write(t.path, t.value);
    if (t.group === undefined) {
      await write; // vport_delete never blocks: the SCSI host is gone at once
    } else {
      expect(await stateAfter(write)).toBe('pending');
      await waitFor('requests repeated', async () => requests.length >= 2);
      k.closeVfio(t.group, holder);
      await write;
    }
    const v = { path: t.path, value: t.value, device: t.device, holder, at: expect.any(Number) };
    expect(k.violations).toEqual([t.group === undefined ? v : { ...v, group: t.group }]);
    expect(await readViolations(k.root)).toEqual(k.violations);
    expect(k.destroyed.at(-1)).toMatchObject({ path: t.path, devices: expect.arrayContaining([t.device]) });
  });

  test('not held: applied at once, logged as destroyed, no violation', async () => {
    const t = await c.setup();
    // Someone holds an unrelated device.
    await k.addFunction(connectX6('0000:86:00.0', { netdev: 'ens2f0np0', totalVFs: 1 }));
    await k.write('bus/pci/devices/0000:86:00.0/sriov_numvfs', '1');
    await k.openVfio(await toVfio('0000:86:00.2'), 'vm/bystander');
    await k.write(t.path, t.value);
    expect(k.violations).toEqual([]);
    expect(await readViolations(k.root)).toEqual([]);
    expect(k.destroyed.at(-1)).toMatchObject({ path: t.path, value: t.value, devices: expect.arrayContaining([t.device]) });
  });
});

describe('binding another driver into a held group', () => {
  test('bind is EBUSY and drivers_probe leaves it unbound; both are violations', async () => {
    for (const f of gpuWithAudio('0000:65:00.0', '0000:65:00.1', { group: 40 })) await k.addFunction(f);
    await toVfio('0000:65:00.0');
    await k.write('bus/pci/devices/0000:65:00.1/driver/unbind', '0000:65:00.1');
    await k.openVfio(40, 'vm/a');
    await expect(k.write('bus/pci/drivers/snd_hda_intel/bind', '0000:65:00.1')).rejects.toMatchObject({ code: 'EBUSY' });
    await k.write('bus/pci/drivers_probe', '0000:65:00.1');
    expect(await k.driverOf('0000:65:00.1')).toBeUndefined();
    expect(k.violations.map((v) => [v.path, v.device, v.group, v.holder])).toEqual([
      ['bus/pci/drivers/snd_hda_intel/bind', '0000:65:00.1', 40, 'vm/a'],
      ['bus/pci/drivers_probe', '0000:65:00.1', 40, 'vm/a'],
    ]);
    // vfio-pci may join (it manages DMA itself)
    await k.write('bus/pci/devices/0000:65:00.1/driver_override', 'vfio-pci');
    await k.write('bus/pci/drivers_probe', '0000:65:00.1');
    expect(await k.driverOf('0000:65:00.1')).toBe('vfio-pci');
    expect(k.violations).toHaveLength(2);
  });
});

describe('a blocked write', () => {
  test('other devices proceed; writes to the devices it destroys wait for it; no new opens meanwhile', async () => {
    const g0 = await toVfio(VF0);
    const g1 = await toVfio(VF1);
    await k.openVfio(g0, 'vm/a');
    await k.openVfio(g1, 'vm/b');
    const disable = k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '0');
    expect(await stateAfter(disable)).toBe('pending');
    await k.write(`bus/pci/devices/${GPU}/mdev_supported_types/nvidia-222/create`, U1); // another device
    const sameDevice = k.write(`bus/pci/devices/${VF0}/driver_override`, 'mlx5_core');
    expect(await stateAfter(sameDevice)).toBe('pending');
    k.closeVfio(g0, 'vm/a');
    await expect(k.openVfio(g0, 'vm/c')).rejects.toMatchObject({ code: 'ENODEV' }); // unregistered
    expect(await stateAfter(disable)).toBe('pending'); // vm/b still holds VF1
    k.closeVfio(g1, 'vm/b');
    await disable;
    await expect(sameDevice).rejects.toMatchObject({ code: 'ENOENT' }); // the VF is gone by then
    expect(k.violations.map((v) => [v.device, v.holder])).toEqual([
      [VF0, 'vm/a'],
      [VF1, 'vm/b'],
    ]);
  });
});

describe('the VMM stand-in', () => {
  test('lets go on request after a delay (guest hot-unplug): the write completes', async () => {
    const g = await toVfio(VF0);
    const vm = await startVm(k, { name: 'vm1', deviceNodes: ['/dev/vfio/vfio', `/dev/vfio/${g}`], onRequest: { releaseAfterMs: 30 } });
    expect(vm).toMatchObject({ holder: 'vm/vm1', groups: [g] });
    await k.write(`bus/pci/devices/${VF0}/driver/unbind`, VF0);
    expect(vm.openGroups()).toEqual([]);
    expect(vm.requests[0]).toMatchObject({ group: g, holder: 'vm/vm1', path: `bus/pci/devices/${VF0}/driver/unbind`, count: 1 });
    expect(k.violations).toEqual([expect.objectContaining({ device: VF0, holder: 'vm/vm1', group: g })]);
    await vm.stop();
  });

  test('ignoring requests keeps the write blocked until stop()', async () => {
    const g = await toVfio(VF0);
    const vm = await startVm(k, { name: 'vm1', deviceNodes: [`/dev/vfio/${g}`] });
    const write = k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '0');
    await waitFor('three requests', async () => vm.requests.length >= 3);
    expect(await stateAfter(write)).toBe('pending');
    await vm.stop();
    await write;
  });

  test('from an Allocate response: a double hand-out fails with EBUSY and holds nothing; the cdev maps to its group', async () => {
    const g = await toVfio(VF0);
    await k.write(`${FC}/vport_create`, `${WWPN}:c050760000000002`);
    const res = {
      containerResponses: [
        {
          envs: { PCI_RESOURCE_VIRTUALIO_DEV_NIC: VF0, VIRTUALIO_NPIV_VIRTUALIO_DEV_FC: `${WWPN}:c050760000000002` },
          devices: [{ hostPath: '/dev/vfio/vfio' }, { hostPath: `/dev/vfio/${g}` }],
        },
      ],
    };
    const vm1 = await startVmFromAllocation(k, res, { name: 'vm1' });
    expect(vm1).toMatchObject({ groups: [g], vports: [WWPN] });
    await expect(startVmFromAllocation(k, res, { name: 'vm2' })).rejects.toMatchObject({ code: 'EBUSY' });
    expect(k.ownership.holders()).toEqual({ groups: [{ group: g, holder: 'vm/vm1' }], vports: [{ wwpn: WWPN, holder: 'vm/vm1' }] });
    await expect(startVmFromAllocation(k, { containerResponses: [{ envs: { PCI_RESOURCE_X: VF0 }, devices: [] }] }, { name: 'vm3' })).rejects.toThrow(/no node of its IOMMU group/);
    await vm1.stop();
    expect(await groupOfNode(k, '/dev/vfio/devices/vfio0')).toBe(g);
    const vm4 = await startVm(k, { name: 'vm4', deviceNodes: ['/dev/vfio/devices/vfio0'], vports: [WWPN] });
    expect(vm4.groups).toEqual([g]);
    await vm4.stop();
    expect(k.ownership.holders()).toEqual({ groups: [], vports: [] });
  });
});
