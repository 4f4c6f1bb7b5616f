// The kernel daemon (plain file writes by an unmodified agent) is the witness too: violations from
// value attributes and trigger FIFOs, a blocked write that does not stall other devices, and the
// control socket through which another process holds devices.
import { readlink, realpath } from 'node:fs/promises';
import path from 'node:path';
import { scan } from '../../device-plugin/src/discovery/scan.js';
import { FsSysfsWriter } from '../../device-plugin/src/sysfs/writer.js';
import { kernelControl, spawnKernelDaemon, startKernel, type KernelHandle } from '../sysfs/kernel-daemon.js';
import { connectX6, emulexFc, FakeKernel, mdevGpu, readViolations } from '../sysfs/kernel.js';
import { tempTree, waitFor } from '../sysfs/tmp.js';

const PF = '0000:3b:00.0';
const VF0 = '0000:3b:00.2';
const GPU = '0000:af:00.0';
const WWPN = 'c050760000000001';
const FC = 'class/fc_host/host5';
const U1 = '2f0a4b7e-0000-4000-8000-000000000001';

let root: string;
let devRoot: string;
let cleanup: () => Promise<void>;
let handle: KernelHandle | undefined;
/** The group of VF0, on vfio-pci. */
let g0: number;

beforeEach(async () => {
  const t = await tempTree();
  ({ root, devRoot, cleanup } = t);
  const k = await FakeKernel.create(root, devRoot);
  await k.addFunction(connectX6(PF, { netdev: 'ens1f0np0', totalVFs: 8 }));
  await k.addFunction(mdevGpu(GPU, { instances: 4 }));
  await k.addFunction(emulexFc('0000:5e:00.0', { host: 5, wwpn: '10000090fa000001', wwnn: '20000090fa000001', maxNPIVVports: 4 }));
  await k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '2');
  await k.write(`bus/pci/devices/${VF0}/driver_override`, 'vfio-pci');
  await k.write(`bus/pci/devices/${VF0}/driver/unbind`, VF0);
  await k.write('bus/pci/drivers_probe', VF0);
  await k.write(`${FC}/vport_create`, `${WWPN}:c050760000000002`);
  g0 = Number(path.basename(await readlink(path.join(root, 'bus/pci/devices', VF0, 'iommu_group'))));
});
afterEach(async () => {
  await handle?.stop();
  handle = undefined;
  await cleanup();
});

/** The daemon sees real paths (`devices/...`), as the kernel does. */
const real = async (rel: string): Promise<string> => path.relative(root, path.join(await realpath(path.join(root, path.dirname(rel))), path.basename(rel)));
const vfsOf = async (): Promise<string[]> => (await scan(root)).devices.find((d) => d.pciAddress === PF)?.sriov?.vfs ?? [];

test('a plain sriov_numvfs write on the PF of a held VF: violation recorded, the daemon goes on, the write completes once let go', async () => {
  handle = await startKernel(root, devRoot);
  const h = handle;
  await h.openVfio(g0, 'vm/a');
  const writer = new FsSysfsWriter(root);
  await writer.write(`bus/pci/devices/${PF}/sriov_numvfs`, '0');
  await waitFor('the violation', async () => h.violations.length > 0);
  const numvfs = await real(`bus/pci/devices/${PF}/sriov_numvfs`);
  expect(h.violations).toEqual([{ at: expect.any(Number), path: numvfs, value: '0', device: VF0, group: g0, holder: 'vm/a' }]);
  expect(h.events).toContainEqual({ path: numvfs, value: '0', ok: true, blocked: true });
  // Another device is carved meanwhile (a trigger FIFO), and a trigger on the held VF is witnessed too.
  await writer.write(`bus/pci/devices/${GPU}/mdev_supported_types/nvidia-222/create`, U1);
  await waitFor('the mdev', async () => (await scan(root)).devices.find((d) => d.pciAddress === GPU)?.mdevs?.length === 1);
  await writer.write('bus/pci/drivers/vfio-pci/unbind', VF0);
  await waitFor('the unbind witnessed', async () => h.events.some((e) => e.path === 'bus/pci/drivers/vfio-pci/unbind' && e.blocked === true));
  expect(await vfsOf()).toHaveLength(2);
  h.closeVfio(g0, 'vm/a');
  await waitFor('the VFs gone', async () => (await vfsOf()).length === 0);
  await waitFor('the outcome', async () => h.events.filter((e) => e.path.endsWith('sriov_numvfs') && e.blocked === undefined).length === 1);
  expect(await readViolations(root)).toEqual(h.violations);
});

test('the control socket holds groups and vports for another process; vport_delete through the FIFO is a violation', async () => {
  handle = await startKernel(root, devRoot, { control: true });
  const h = handle;
  expect(h.control).toBe(path.join(root, '.fake-kernel/control'));
  expect(await kernelControl(root, `open ${g0} vm/x`)).toBe('');
  await expect(kernelControl(root, `open ${g0} vm/y`)).rejects.toMatchObject({ code: 'EBUSY' });
  await expect(kernelControl(root, 'open 999 vm/y')).rejects.toMatchObject({ code: 'ENOENT' });
  await expect(kernelControl(root, 'frobnicate')).rejects.toMatchObject({ code: 'EINVAL' });
  expect(await kernelControl(root, `hold-vport ${WWPN} vm/x`)).toBe('');
  expect(JSON.parse(await kernelControl(root, 'status'))).toEqual({ groups: [{ group: g0, holder: 'vm/x' }], vports: [{ wwpn: WWPN, holder: 'vm/x' }], violations: 0 });
  const vportDelete = await real(`${FC}/vport_delete`);
  await new FsSysfsWriter(root).write(`${FC}/vport_delete`, `${WWPN}:c050760000000002`);
  await waitFor('the violation', async () => (await readViolations(root)).length > 0);
  expect(await readViolations(root)).toEqual([{ at: expect.any(Number), path: vportDelete, value: `${WWPN}:c050760000000002`, device: WWPN, holder: 'vm/x' }]);
  // The violation is recorded when the write reaches the held vport, before the write completes.
  await waitFor('the vport_delete applied', async () => h.events.some((e) => e.path.endsWith('vport_delete') && e.ok && e.blocked === undefined));
  expect((await scan(root)).vports).toBeUndefined(); // torn down at once, not waiting for the holder
  expect(await kernelControl(root, `release-vport ${WWPN} vm/x`)).toBe('');
  await expect(kernelControl(root, `close ${g0} vm/y`)).rejects.toMatchObject({ code: 'EBADF' });
  expect(await kernelControl(root, `close ${g0} vm/x`)).toBe('');
  expect(h.kernel.ownership.holders()).toEqual({ groups: [], vports: [] });
  await h.stop();
  await expect(kernelControl(root, 'status', 2000)).rejects.toThrow();
});

test('the CLI daemon serves the control socket: a VM that lets go on request lets the write complete', async () => {
  const daemon = await spawnKernelDaemon(root, devRoot);
  try {
    expect(await kernelControl(root, `open ${g0} vm/cli 50`)).toBe('');
    await new FsSysfsWriter(root).write(`bus/pci/devices/${PF}/sriov_numvfs`, '0');
    await waitFor('the VFs gone once the VM let go', async () => (await vfsOf()).length === 0);
    expect(await readViolations(root)).toEqual([expect.objectContaining({ device: VF0, group: g0, holder: 'vm/cli', path: await real(`bus/pci/devices/${PF}/sriov_numvfs`) })]);
    expect(JSON.parse(await kernelControl(root, 'status'))).toEqual({ groups: [], vports: [], violations: 1 });
    expect(daemon.stderr()).toContain('"violation"');
  } finally {
    await daemon.stop();
  }
}, 60000);
