// The kernel daemon applies a process's writes in the order it made them, as Linux does (a sysfs
// write takes effect before write(2) returns). The case that once did not: releasing a GPU and its
// audio function writes "unbind GPU, probe GPU, unbind audio, probe audio". Both unbinds go through
// the same FIFO (vfio-pci's unbind); when the second writer opens it before the daemon has seen the
// first one's end, the two arrive as ONE message that ends only after the GPU's probe has ended on
// its own FIFO. The probe was applied first (a no-op: the GPU was still bound), the unbind after it,
// and the GPU was left with no driver for good (the fault matrix's "PodResources unavailable" row
// once timed out waiting for it to be back on nvidia).
import { closeSync, openSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { startKernel, type KernelHandle } from '../sysfs/kernel-daemon.js';
import { FakeKernel, gpuWithAudio } from '../sysfs/kernel.js';
import { tempTree, waitFor } from '../sysfs/tmp.js';

const GPU = '0000:3b:00.0';
const AUDIO = '0000:3b:00.1';

let root: string;
let devRoot: string;
let cleanup: () => Promise<void>;
let handle: KernelHandle | undefined;

beforeEach(async () => {
  ({ root, devRoot, cleanup } = await tempTree());
  const k = await FakeKernel.create(root, devRoot);
  for (const f of gpuWithAudio(GPU, AUDIO, { group: 40 })) await k.addFunction(f);
  for (const a of [GPU, AUDIO]) {
    await k.write(`bus/pci/devices/${a}/driver_override`, 'vfio-pci');
    await k.write(`bus/pci/devices/${a}/driver/unbind`, a);
    await k.write('bus/pci/drivers_probe', a);
  }
});
afterEach(async () => {
  await handle?.stop();
  handle = undefined;
  await cleanup();
});

const dev = (a: string, attr: string) => path.join(root, 'bus/pci/devices', a, attr);
const turn = () => new Promise((r) => setTimeout(r, 100));

test('a probe is applied after an unbind of the same device written before it, even when that unbind arrives in one message with a later one', async () => {
  const h = (handle = await startKernel(root, devRoot));
  const k = h.kernel;
  expect([await k.driverOf(GPU), await k.driverOf(AUDIO)]).toEqual(['vfio-pci', 'vfio-pci']);
  // What the agent's release does, one write after the other (each returns before the next starts):
  writeFileSync(dev(GPU, 'driver_override'), '\n');
  writeFileSync(dev(GPU, 'driver/unbind'), GPU);
  writeFileSync(path.join(root, 'bus/pci/drivers_probe'), GPU);
  writeFileSync(dev(AUDIO, 'driver_override'), '\n');
  // The audio function's unbind: its writer opens vfio-pci's unbind FIFO before the daemon ran, so
  // it joins the GPU's unbind message; the daemon runs while this writer is still at it.
  const fd = openSync(dev(AUDIO, 'driver/unbind'), 'w');
  await turn();
  writeSync(fd, AUDIO);
  closeSync(fd);
  writeFileSync(path.join(root, 'bus/pci/drivers_probe'), AUDIO);
  await waitFor('the audio function back on its driver (the last write)', async () => (await k.driverOf(AUDIO)) === 'snd_hda_intel');
  await h.idle();
  expect([await k.driverOf(GPU), await k.driverOf(AUDIO)]).toEqual(['nvidia', 'snd_hda_intel']);
  expect(h.events.filter((e) => !e.ok)).toEqual([]);
});
