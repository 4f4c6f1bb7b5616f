// Releasing a passthrough pool returns its functions to the drivers they had; a release the kernel
// has not finished is not "released". The case: the agent stops between a function's unbind and its
// probe (a SIGTERM mid-release; the fake kernel daemon once applied a probe before its unbind too),
// so the GPU is left with NO driver. The restarted agent must probe it back to nvidia (its original
// driver, from the checkpoint) before it declares the retired pool released; it once skipped every
// function not on vfio-pci and declared the pool released with the GPU driverless for good.
import { mkdtempSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeKernel, gpuWithAudio } from '../../../test/sysfs/kernel.js';
import { tempTree } from '../../../test/sysfs/tmp.js';
import { scan } from '../discovery/scan.js';
import { silentLogger } from '../log.js';
import { createMetrics } from '../metrics.js';
import type { PoolPlan, VirtualIONodeSpec } from '../model.js';
import type { SysfsWriter } from '../sysfs/writer.js';
import { Carver, type RoundInput, type RoundResult } from './carver.js';
import { Checkpoint } from './checkpoint.js';
import { createNodeOps } from './node-ops.js';
import type { Retired } from './retire.js';

const GPU = '0000:3b:00.0';
const AUDIO = '0000:3b:00.1';
const POOL: PoolPlan = { name: 'gpu', resourceName: 'virtualio.dev/gpu', class: 'GPU', mode: 'Passthrough', consumption: 'HostDevice', devices: [{ pciAddress: GPU }] } as PoolPlan;

let kernel: FakeKernel;
let root: string;
let devRoot: string;
let dir: string;
let cleanup: () => Promise<void>;

beforeEach(async () => {
  ({ root, devRoot, cleanup } = await tempTree('vio-carver-release-'));
  kernel = await FakeKernel.create(root, devRoot);
  for (const f of gpuWithAudio(GPU, AUDIO, { group: 40 })) await kernel.addFunction(f);
  dir = mkdtempSync(join(tmpdir(), 'vio-carver-ckpt-'));
});
afterEach(async () => {
  rmSync(dir, { recursive: true, force: true });
  await cleanup();
});

/** One agent process: its checkpoint (loaded from the file) and a carver over the fake kernel, writing through `writer`. */
function agent(writer: SysfsWriter): Carver {
  const log = silentLogger();
  const ops = createNodeOps({ sysfsRoot: root, devRoot, nodeName: 'n1', logger: log, writer });
  return new Carver(ops, new Checkpoint(join(dir, 'checkpoint.json'), 'n1', log), createMetrics(), log, () => 1_000);
}

async function round(carver: Carver, spec: VirtualIONodeSpec, retired: ReadonlyMap<string, Retired>, signal = new AbortController().signal): Promise<RoundResult> {
  const input: RoundInput = {
    spec, provisional: false, retired, inventory: await scan(root, { devRoot }),
    protectedIds: () => new Set(), protection: () => undefined, activeIds: () => new Set(), fence: () => undefined, unfence: () => undefined,
    suspectScan: () => undefined, signal,
  };
  return carver.round(input);
}

const drivers = async () => [await kernel.driverOf(GPU), await kernel.driverOf(AUDIO)];
const plain: SysfsWriter = { write: (p, v) => kernel.write(p, v) };

/** The pool carved, then removed; the agent releasing it is stopped right after the GPU's unbind. */
async function interruptedRelease(): Promise<{ retired: Map<string, Retired>; released: string[] }> {
  await round(agent(plain), { pools: [POOL] }, new Map());
  expect(await drivers()).toEqual(['vfio-pci', 'vfio-pci']);
  const retired = new Map<string, Retired>([['gpu', { plan: POOL, why: 'removed from the plan' }]]);
  const stop = new AbortController();
  const stopping: SysfsWriter = {
    write: async (p, v) => {
      await kernel.write(p, v);
      if (p === `bus/pci/devices/${GPU}/driver/unbind`) stop.abort();
    },
  };
  const { released } = await round(agent(stopping), { pools: [] }, retired, stop.signal);
  return { retired, released };
}

test('a function left with no driver by an interrupted release is probed back to its original driver before the pool counts as released', async () => {
  const { retired, released } = await interruptedRelease();
  expect(released).toEqual([]);
  expect(await drivers()).toEqual([undefined, 'vfio-pci']);

  // The restarted agent finishes the release: the GPU back on nvidia, the audio function on its driver.
  const restarted = agent(plain);
  const done = await round(restarted, { pools: [] }, retired);
  expect(await drivers()).toEqual(['nvidia', 'snd_hda_intel']);
  expect(done.released).toEqual(['gpu']);
  // Nothing left to do, and nothing left on record: both are back as they were.
  expect((await round(restarted, { pools: [] }, retired)).released).toEqual(['gpu']);
  expect(new Checkpoint(join(dir, 'checkpoint.json'), 'n1', silentLogger()).originals().size).toBe(0);
});

test('left with no driver while its original driver is not loaded (rmmod meanwhile): nothing to probe it back to, the pool is released', async () => {
  const { retired } = await interruptedRelease();
  await rm(join(root, 'bus/pci/drivers/nvidia'), { recursive: true }); // nothing is bound to it: rmmod nvidia
  const done = await round(agent(plain), { pools: [] }, retired);
  expect(done.released).toEqual(['gpu']);
  expect(await drivers()).toEqual([undefined, 'snd_hda_intel']);
});
