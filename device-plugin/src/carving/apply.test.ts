// applyCarving: a write with `settle` paths holds the next write until they are there.
import type { SysfsWrite } from '../model.js';
import type { SysfsWriter } from '../sysfs/writer.js';
import { applyCarving } from './apply.js';

test('the next write waits for the settle paths of the one before; writes without any do not wait', async () => {
  const order: string[] = [];
  const writer: SysfsWriter = { write: async (p) => void order.push(`write ${p}`) };
  const settled = async (paths: readonly string[]): Promise<void> => {
    await new Promise((r) => setTimeout(r, 20)); // the effect shows up a little later
    order.push(`settled ${paths.join(',')}`);
  };
  const writes: SysfsWrite[] = [
    { path: 'bus/pci/drivers_probe', value: '0000:5e:00.0', why: 'bind', settle: ['bus/pci/devices/0000:5e:00.0/vfio-dev'] },
    { path: 'bus/pci/devices/0000:3b:00.0/mdev_supported_types/nvidia-746/create', value: 'u', why: 'create' },
    { path: 'bus/mdev/devices/u/remove', value: '1', why: 'remove' },
  ];
  const r = await applyCarving({ writes, blocked: [] }, writer, undefined, undefined, settled);
  expect(r.every((x) => x.ok)).toBe(true);
  expect(order).toEqual([
    'write bus/pci/drivers_probe',
    'settled bus/pci/devices/0000:5e:00.0/vfio-dev',
    'write bus/pci/devices/0000:3b:00.0/mdev_supported_types/nvidia-746/create',
    'write bus/mdev/devices/u/remove',
  ]);
});
