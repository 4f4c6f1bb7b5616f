import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadUmockdev } from '../../../test/sysfs/umockdev.js';
import { emulexFc, FakeKernel } from '../../../test/sysfs/kernel.js';
import { tempTree } from '../../../test/sysfs/tmp.js';
import type { Inventory, InventoryDevice } from '../model.js';
import { normalizeWwn, scan, vfioCdevOf } from './scan.js';

const FIXTURES = path.resolve(import.meta.dirname, '../../../test/fixtures/real-sysfs');

function dev(inv: Inventory, addr: string): InventoryDevice {
  const d = inv.devices.find((x) => x.pciAddress === addr);
  if (!d) throw new Error(`${addr} not in inventory`);
  return d;
}

describe('scan of the recorded vgpu-node (HP server with NVIDIA A16)', () => {
  let inv: Inventory;
  let cleanup: () => Promise<void>;
  beforeAll(async () => {
    const t = await tempTree();
    cleanup = t.cleanup;
    await loadUmockdev(path.join(FIXTURES, 'vgpu-node.umockdev'), t.root, { devRoot: t.devRoot });
    inv = await scan(t.root, { devRoot: t.devRoot });
  }, 60000);
  afterAll(() => cleanup());

  test.each([
    ['0000:08:00.0', { vendorID: '10de', deviceID: '25b6', classCode: '030200', driver: 'nvidia', numaNode: 0, iommuGroup: 38 }],
    ['0000:08:00.4', { vendorID: '10de', deviceID: '25b6', classCode: '030200', driver: 'nvidia', numaNode: 0, iommuGroup: 90, physfn: '0000:08:00.0' }],
    ['0000:08:02.3', { vendorID: '10de', deviceID: '25b6', classCode: '030200', driver: 'nvidia', iommuGroup: 105, physfn: '0000:08:00.0' }],
    ['0000:04:00.0', { vendorID: '8086', deviceID: '10fb', classCode: '020000', driver: 'ixgbe', numaNode: 0, iommuGroup: 35 }],
    ['0000:04:00.1', { vendorID: '8086', deviceID: '10fb', classCode: '020000', driver: 'ixgbe', numaNode: 0, iommuGroup: 36 }],
    ['0000:05:00.0', { vendorID: '144d', deviceID: 'a808', classCode: '010802', driver: 'nvme', numaNode: 0, iommuGroup: 37 }],
    ['0000:03:00.0', { vendorID: '103c', deviceID: '3239', classCode: '010400', driver: 'hpsa', iommuGroup: 34 }],
    ['0000:01:00.1', { vendorID: '102b', deviceID: '0533', classCode: '030000', driver: 'mgag200', iommuGroup: 33 }],
    ['0000:80:00.0', { vendorID: '8086', deviceID: '2f01', classCode: '060400', driver: 'pcieport', numaNode: 1, iommuGroup: 53 }],
  ])('%s has the recorded identity', (addr, want) => {
    expect(dev(inv, addr)).toMatchObject(want);
    expect(dev(inv, addr).errors).toBeUndefined();
  });

  test('the A16 PF lists its 16 VFs in virtfn order', () => {
    const pf = dev(inv, '0000:08:00.0');
    const vfs = ['00.4', '00.5', '00.6', '00.7', '01.0', '01.1', '01.2', '01.3', '01.4', '01.5', '01.6', '01.7', '02.0', '02.1', '02.2', '02.3'].map((s) => `0000:08:${s}`);
    expect(pf.sriov).toEqual({ totalVFs: 16, numVFs: 16, vfs });
    for (const vf of vfs) expect(dev(inv, vf).physfn).toBe('0000:08:00.0');
  });

  test.each([
    ['0000:08:00.4', 'f715f63c-0d00-4007-9c5a-b07b0c6c05de', 'nvidia-754', 106],
    ['0000:08:00.6', '3deab9a4-200a-4c54-99b1-5eb0722d1d81', 'nvidia-751', 108],
    ['0000:08:02.0', 'c728e022-f16f-434b-ad2c-9665ee634d3d', 'nvidia-746', 107],
  ])('VF %s carries mdev %s of type %s in IOMMU group %d', (vf, uuid, type, group) => {
    expect(dev(inv, vf).mdevs).toEqual([{ uuid, type, iommuGroup: group }]);
  });

  test('only three VFs carry mdevs', () => {
    expect(inv.devices.filter((d) => d.mdevs).map((d) => d.pciAddress)).toEqual(['0000:08:00.4', '0000:08:00.6', '0000:08:02.0']);
  });

  test('82599 NICs report their netdevs and SR-IOV capability', () => {
    expect(dev(inv, '0000:04:00.0').netdevs).toEqual([{ name: 'eno49', operState: 'up' }]);
    expect(dev(inv, '0000:04:00.1').netdevs).toEqual([{ name: 'eno50', operState: 'up' }]);
    expect(dev(inv, '0000:04:00.0').sriov).toEqual({ totalVFs: 63, numVFs: 0, vfs: [] });
  });

  test('the NVMe controller reports model and serial without padding', () => {
    expect(dev(inv, '0000:05:00.0').nvme).toEqual([{ name: 'nvme0', model: 'Samsung SSD 970 EVO Plus 2TB', serial: 'S6S2NS0TA17548X' }]);
  });

  test('IOMMU groups list every member, and numa_node -1 is absent', () => {
    expect(dev(inv, '0000:00:1f.0').iommuGroupMembers).toEqual(['0000:00:1f.0', '0000:00:1f.3']);
    expect(dev(inv, '0000:7f:0b.1').numaNode).toBeUndefined();
    expect(dev(inv, '0000:7f:0b.1').iommuGroup).toBe(41);
  });

  test('vfio group nodes of the recorded mdevs are seen under the dev root', () => {
    expect(inv.devNodes).toEqual(['/dev/vfio/106', '/dev/vfio/107', '/dev/vfio/108', '/dev/vfio/vfio']);
  });

  test('the snapshot is sorted, error-free and complete', () => {
    const addrs = inv.devices.map((d) => d.pciAddress);
    expect(addrs.length).toBe(226);
    expect([...addrs].sort()).toEqual(addrs);
    expect(inv.devices.filter((d) => d.errors)).toEqual([]);
    expect(inv.errors).toBeUndefined();
  });
});

describe('scan of the recorded server-nic-raid (no IOMMU)', () => {
  let inv: Inventory;
  let cleanup: () => Promise<void>;
  beforeAll(async () => {
    const t = await tempTree();
    cleanup = t.cleanup;
    await loadUmockdev(path.join(FIXTURES, 'server-nic-raid.umockdev'), t.root);
    inv = await scan(t.root);
  }, 60000);
  afterAll(() => cleanup());

  test.each([
    ['0000:04:00.0', { vendorID: '8086', deviceID: '10fb', classCode: '020000', driver: 'ixgbe', numaNode: 0, netdevs: [{ name: 'eno49', operState: 'up' }] }],
    ['0000:04:00.1', { vendorID: '8086', deviceID: '10fb', classCode: '020000', driver: 'ixgbe', numaNode: 0, netdevs: [{ name: 'eno50', operState: 'up' }] }],
    ['0000:03:00.0', { vendorID: '103c', deviceID: '3239', classCode: '010400', driver: 'hpsa', numaNode: 0 }],
    ['0000:01:00.1', { vendorID: '102b', deviceID: '0533', classCode: '030000', driver: 'mgag200' }],
    ['0000:80:03.3', { classCode: '060400', driver: 'pcieport', numaNode: 1 }],
  ])('%s has the recorded identity', (addr, want) => {
    expect(dev(inv, addr)).toMatchObject(want);
  });

  test('no function has an IOMMU group, no GPU and no NVMe is present', () => {
    expect(inv.devices.filter((d) => d.iommuGroup !== undefined)).toEqual([]);
    expect(inv.devices.filter((d) => d.classCode?.startsWith('0302') || d.classCode === '010802')).toEqual([]);
    expect(inv.devices.length).toBe(208);
    expect(inv.devNodes).toBeUndefined();
  });
});

describe('scan of malformed sysfs values', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  const bdf = '0000:81:00.0';
  const good: Record<string, string> = { vendor: '0x8086\n', device: '0x10fb\n', class: '0x020000\n', numa_node: '1\n' };

  beforeEach(async () => {
    const t = await tempTree();
    root = t.root;
    cleanup = t.cleanup;
  });
  afterEach(() => cleanup());

  async function device(attrs: Record<string, string | undefined>, extra?: (dir: string) => Promise<void>): Promise<string> {
    const dir = path.join(root, 'devices/pci0000:81', bdf);
    await mkdir(dir, { recursive: true });
    for (const [k, v] of Object.entries({ ...good, ...attrs })) if (v !== undefined) await writeFile(path.join(dir, k), v);
    await mkdir(path.join(root, 'bus/pci/devices'), { recursive: true });
    await symlink('../../../devices/pci0000:81/' + bdf, path.join(root, 'bus/pci/devices', bdf));
    if (extra) await extra(dir);
    return dir;
  }

  test.each([
    ['vendor "0xZZZZ"', { vendor: '0xZZZZ\n' }, 'vendor: malformed value "0xZZZZ"', 'vendorID'],
    ['vendor without 0x', { vendor: '8086\n' }, 'vendor: malformed value "8086"', 'vendorID'],
    ['upper-case vendor', { vendor: '0x8O86\n' }, 'vendor: malformed value', 'vendorID'],
    ['device with 5 digits', { device: '0x10fb1\n' }, 'device: malformed value', 'deviceID'],
    ['missing class', { class: undefined }, 'class: missing', 'classCode'],
    ['short class', { class: '0x0200\n' }, 'class: malformed value', 'classCode'],
    ['numa_node "banana"', { numa_node: 'banana\n' }, 'numa_node: malformed value "banana"', 'numaNode'],
    ['numa_node -7', { numa_node: '-7\n' }, 'numa_node: out of range -7', 'numaNode'],
  ])('%s → reported with an error, the rest still read', async (_name, attrs, message, field) => {
    await device(attrs);
    const inv = await scan(root);
    expect(inv.devices).toHaveLength(1);
    const d = inv.devices[0] as InventoryDevice;
    expect(d.errors?.join('; ')).toContain(message);
    expect(d[field as keyof InventoryDevice]).toBeUndefined();
    // Every other value is still there.
    const others = { vendorID: '8086', deviceID: '10fb', classCode: '020000', numaNode: 1 } as Record<string, unknown>;
    delete others[field];
    expect(d).toMatchObject(others);
  });

  test('a bad IOMMU group, bad sriov_totalvfs and a bad mdev type count are errors, not crashes', async () => {
    await device({ sriov_totalvfs: 'lots\n', sriov_numvfs: '0\n' }, async (dir) => {
      await symlink('../../../kernel/iommu_groups/x7', path.join(dir, 'iommu_group'));
      await mkdir(path.join(dir, 'mdev_supported_types/nvidia-1'), { recursive: true });
      await writeFile(path.join(dir, 'mdev_supported_types/nvidia-1/available_instances'), 'many\n');
      await writeFile(path.join(dir, 'mdev_supported_types/nvidia-1/name'), 'GRID X\n');
    });
    const inv = await scan(root);
    const d = inv.devices[0] as InventoryDevice;
    expect(d.errors).toEqual([
      'iommu_group: malformed link target "x7"',
      'sriov_totalvfs: malformed value "lots"',
      'mdev_supported_types/nvidia-1/available_instances: malformed value "many"',
    ]);
    expect(d.sriov).toEqual({ numVFs: 0, vfs: [] });
    expect(d.mdevTypes).toEqual([{ id: 'nvidia-1', name: 'GRID X' }]);
  });

  test('an IOMMU group link whose group folder is missing is an error', async () => {
    await device({}, async (dir) => {
      await symlink('../../../kernel/iommu_groups/12', path.join(dir, 'iommu_group'));
    });
    const d = (await scan(root)).devices[0] as InventoryDevice;
    expect(d.iommuGroup).toBe(12);
    expect(d.errors).toEqual(['kernel/iommu_groups/12/devices: missing or empty']);
  });

  test('a malformed folder name and an unreadable attribute are reported', async () => {
    await device({}, async (dir) => {
      await mkdir(path.join(dir, 'numa_node.d'));
      await rm(path.join(dir, 'numa_node'));
      await mkdir(path.join(dir, 'numa_node')); // EISDIR on read
      await symlink('../../../devices/pci0000:81/' + bdf, path.join(root, 'bus/pci/devices', 'not-a-bdf'));
    });
    const inv = await scan(root);
    expect(inv.devices.map((d) => d.pciAddress)).toEqual([bdf, 'not-a-bdf']);
    expect(inv.devices[0]?.errors).toEqual(['numa_node: unreadable (EISDIR)']);
    expect(inv.devices[1]?.errors).toEqual(['pciAddress: malformed "not-a-bdf"', 'numa_node: unreadable (EISDIR)']);
  });

  test('a missing sysfs root gives an empty inventory', async () => {
    await expect(scan(path.join(root, 'nothing-here'))).resolves.toEqual({ devices: [] });
  });

  test('FC WWNs are normalized to 16 hex digits', () => {
    expect(normalizeWwn('0x10000090fa1b2c3d\n')).toBe('10000090fa1b2c3d');
    expect(normalizeWwn('0x5001438')).toBe('0000000005001438');
    expect(normalizeWwn('10000090fa1b2c3d')).toBeUndefined();
    expect(normalizeWwn('0x1000000000000000ff')).toBeUndefined();
  });
});

describe('scan of FC hosts in both layouts, and vfio cdevs', () => {
  test('a port below its function (link layout) and a class-folder port with a device link (old layout)', async () => {
    const t = await tempTree();
    try {
      const k = await FakeKernel.create(t.root, t.devRoot);
      await k.addFunction(emulexFc('0000:5e:00.0', { host: 5, wwpn: '10000090fa000001', wwnn: '20000090fa000001', maxNPIVVports: 64 }));
      // Old layout: /sys/class/fc_host/host9 is a folder with the attributes and a `device` link
      // to <function>/host9, which has no fc_host subfolder.
      const fn = path.join(t.root, 'devices/pci0000:5e/0000:5e:00.1');
      await mkdir(path.join(fn, 'host9'), { recursive: true });
      for (const [k2, v] of Object.entries({ vendor: '0x10df\n', device: '0xf100\n', class: '0x0c0400\n' })) await writeFile(path.join(fn, k2), v);
      await symlink('../../../devices/pci0000:5e/0000:5e:00.1', path.join(t.root, 'bus/pci/devices/0000:5e:00.1'));
      const cls = path.join(t.root, 'class/fc_host/host9');
      await mkdir(cls, { recursive: true });
      await writeFile(path.join(cls, 'port_name'), '0x10000090fa0000aa\n');
      await writeFile(path.join(cls, 'node_name'), '0x20000090fa0000aa\n');
      await writeFile(path.join(cls, 'port_state'), 'Linkdown\n');
      await writeFile(path.join(cls, 'max_npiv_vports'), '255\n');
      await symlink(path.relative(cls, path.join(fn, 'host9')), path.join(cls, 'device'));
      const inv = await scan(t.root);
      expect(inv.devices.map((d) => [d.pciAddress, d.fcHosts, d.errors])).toEqual([
        ['0000:5e:00.0', [{ host: 'host5', wwpn: '10000090fa000001', wwnn: '20000090fa000001', portState: 'Online', maxNPIVVports: 64, npivVportsInUse: 0 }], undefined],
        ['0000:5e:00.1', [{ host: 'host9', wwpn: '10000090fa0000aa', wwnn: '20000090fa0000aa', portState: 'Linkdown', maxNPIVVports: 255 }], undefined],
      ]);
      expect(inv.errors).toBeUndefined();
    } finally {
      await t.cleanup();
    }
  });

  test('vfioCdevOf maps vfio-dev/vfioN to /dev/vfio/devices/vfioN', async () => {
    const t = await tempTree();
    try {
      const fn = path.join(t.root, 'devices/pci0000:81/0000:81:00.0');
      await mkdir(path.join(fn, 'vfio-dev/vfio7'), { recursive: true });
      await mkdir(path.join(t.root, 'bus/pci/devices'), { recursive: true });
      await symlink('../../../devices/pci0000:81/0000:81:00.0', path.join(t.root, 'bus/pci/devices/0000:81:00.0'));
      await expect(vfioCdevOf(t.root, '0000:81:00.0')).resolves.toBe('/dev/vfio/devices/vfio7');
      await expect(vfioCdevOf(t.root, '0000:82:00.0')).resolves.toBeUndefined();
      expect((await scan(t.root)).vfioCdevs).toEqual({ '0000:81:00.0': '/dev/vfio/devices/vfio7' });
    } finally {
      await t.cleanup();
    }
  });
});

describe('mdev parents that are not PCI functions (layout of the kernel sample mtty, checked in test/kernel)', () => {
  const UUID = '83b8f4f2-509f-382f-3c1e-e6bfe0fa1001';
  test('reported by their /sys/class/mdev_bus name with types and mdevs; PCI parents are not duplicated', async () => {
    const t = await tempTree();
    try {
      const parent = path.join(t.root, 'devices/virtual/mtty/mtty');
      for (const [type, avail] of [['mtty-1', '24'], ['mtty-2', '11']] as const) {
        const d = path.join(parent, 'mdev_supported_types', type);
        await mkdir(d, { recursive: true });
        await writeFile(path.join(d, 'name'), `Single port serial\n`);
        await writeFile(path.join(d, 'available_instances'), `${avail}\n`);
        await writeFile(path.join(d, 'device_api'), 'vfio-pci\n');
        await writeFile(path.join(d, 'create'), '');
      }
      await mkdir(path.join(parent, UUID), { recursive: true });
      await mkdir(path.join(t.root, 'kernel/iommu_groups/14/devices'), { recursive: true });
      await symlink('../mdev_supported_types/mtty-2', path.join(parent, UUID, 'mdev_type'));
      await symlink('../../../../../kernel/iommu_groups/14', path.join(parent, UUID, 'iommu_group'));
      await mkdir(path.join(parent, UUID, 'vfio-dev/vfio3'), { recursive: true }); // its number, taken when it was created
      await mkdir(path.join(t.root, 'class/mdev_bus'), { recursive: true });
      await symlink('../../devices/virtual/mtty/mtty', path.join(t.root, 'class/mdev_bus/mtty'));
      // A PCI parent is listed in class/mdev_bus too; the PCI scan reports it (once).
      const k = await FakeKernel.create(t.root, t.devRoot);
      await k.addFunction(emulexFc('0000:5e:00.0', { host: 5, wwpn: '10000090fa000001', wwnn: '20000090fa000001' }));
      await symlink('../../bus/pci/devices/0000:5e:00.0', path.join(t.root, 'class/mdev_bus/0000:5e:00.0'));
      const inv = await scan(t.root);
      expect(inv.devices.map((d) => d.pciAddress)).toEqual(['0000:5e:00.0', 'mtty']);
      expect(dev(inv, 'mtty')).toEqual({
        pciAddress: 'mtty',
        mdevTypes: [
          { id: 'mtty-1', name: 'Single port serial', availableInstances: 24, deviceAPI: 'vfio-pci' },
          { id: 'mtty-2', name: 'Single port serial', availableInstances: 11, deviceAPI: 'vfio-pci' },
        ],
        mdevs: [{ uuid: UUID, type: 'mtty-2', iommuGroup: 14 }],
      });
      expect(inv.vfioCdevs).toEqual({ [UUID]: '/dev/vfio/devices/vfio3' });
    } finally {
      await t.cleanup();
    }
  });
});

test('scan never reads sriov_numvfs (it blocks on the PF lock while a numvfs write waits for a VMM): VF count from virtfnN links', async () => {
  const { execFileSync } = await import('node:child_process');
  const t = await tempTree();
  try {
    const k = await FakeKernel.create(t.root, t.devRoot);
    await k.addFunction(emulexFc('0000:5e:00.0', { host: 5, wwpn: '10000090fa000001', wwnn: '20000090fa000001' }));
    const pf = path.join(t.root, 'bus/pci/devices/0000:5e:00.0');
    await writeFile(path.join(pf, 'sriov_totalvfs'), '4\n');
    await symlink('../0000:5e:00.0', path.join(pf, 'virtfn0'));
    // A FIFO blocks any reader, like the real attribute under a stuck write.
    execFileSync('mkfifo', [path.join(pf, 'sriov_numvfs')]);
    const inv = await scan(t.root);
    expect(dev(inv, '0000:5e:00.0').sriov).toMatchObject({ totalVFs: 4, numVFs: 1 });
  } finally {
    await t.cleanup();
  }
}, 20000);
