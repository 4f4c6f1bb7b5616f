// MIG-backed vGPU on the simulated H100 (test/sysfs/nvidia.ts, behaviour 8), driven by the agent's own
// planner, gate-free apply and NVIDIA tool commands: a pool asking for 7 × H100-1-10C (MIG 1g.10gb)
// ends with MIG mode on, 7 GPU instances and 7 typed VFs, in the order the driver needs; deleting it
// with nothing held tears down in reverse and restores the card; a held vGPU stops the teardown at
// the types.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { applyCarving } from '../../device-plugin/src/carving/apply.js';
import { rememberCatalogues, type VgpuType } from '../../device-plugin/src/carving/gpu.js';
import { toolCommand } from '../../device-plugin/src/carving/nvidia-tools.js';
import { planCarving, planUncarve } from '../../device-plugin/src/carving/plan.js';
import { scan } from '../../device-plugin/src/discovery/scan.js';
import type { CarvingPlan, Inventory, PoolPlan } from '../../device-plugin/src/model.js';
import { FakeKernel } from '../sysfs/kernel.js';
import { addNvidiaVfioGpu, gpuInstances, H100, nvidiaTool } from '../sysfs/nvidia.js';
import { tempTree } from '../sysfs/tmp.js';

const PF = '0000:c1:00.0';
const pool: PoolPlan = { name: 'h100-1g', resourceName: 'virtualio.dev/h100-1g', class: 'GPU', mode: 'SRIOV', consumption: 'HostDevice', count: 7, vfDriver: 'nvidia', vgpuProfile: 'H100-1-10C', devices: [{ pciAddress: PF }] };

async function setup(): Promise<{ k: FakeKernel; root: string; memory: Map<string, VgpuType[]>; log: string[] }> {
  const { root, devRoot } = await tempTree();
  const k = await FakeKernel.create(root, devRoot);
  await addNvidiaVfioGpu(k, PF, H100);
  return { k, root, memory: new Map(), log: [] };
}

/** Rounds of scan → plan → apply until the plan is empty (at most `max`); returns the writes in order. */
async function converge(t: Awaited<ReturnType<typeof setup>>, plan: (inv: Inventory) => CarvingPlan, max = 8): Promise<CarvingPlan> {
  for (let i = 0; i < max; i++) {
    const inv = rememberCatalogues(await scan(t.root), t.memory);
    const last = plan(inv);
    if (last.writes.length === 0) return last;
    const res = await applyCarving(last, t.k, undefined, async (w) => {
      const c = toolCommand(w);
      await nvidiaTool(t.k, [c.tool, ...c.args]);
    });
    for (const r of res) t.log.push(`${r.write.tool ? toolCommand(r.write).args.join(' ') : `${r.write.path}=${r.write.value}`}${r.ok ? '' : ` FAILED ${r.error}`}`);
    expect(res.filter((r) => !r.ok)).toEqual([]);
  }
  throw new Error(`no convergence in ${max} rounds: ${t.log.join('\n')}`);
}

const typedVfs = (root: string): string[] => {
  const out: string[] = [];
  for (let i = 0; i < 32; i++) {
    const vf = `0000:c1:0${Math.floor((4 + i) / 8)}.${(4 + i) % 8}`;
    const f = path.join(root, 'bus/pci/devices', vf, 'nvidia/current_vgpu_type');
    if (existsSync(f) && readFileSync(f, 'utf8').trim() !== '0') out.push(vf);
  }
  return out;
};

test('7 × H100-1-10C: MIG mode, VFs, 7 GPU instances, 7 typed VFs; deleting the pool restores the card', async () => {
  const t = await setup();
  const made = await converge(t, (inv) => planCarving({ spec: { pools: [pool] }, inventory: inv, nodeName: 'n', allocated: new Set() }));
  expect(made.blocked).toEqual([]);
  expect(t.log.slice(0, 3)).toEqual([`-i ${PF} -mig 1`, `-e ${PF}`, `mig -i ${PF} -cgi ${Array(7).fill('1g.10gb').join(',')}`]);
  expect(await gpuInstances(t.k, PF)).toHaveLength(7);
  const vfs = typedVfs(t.root);
  expect(vfs).toHaveLength(7);
  const gis = vfs.map((vf) => readFileSync(path.join(t.root, 'bus/pci/devices', vf, 'nvidia/gpu_instance_id'), 'utf8').trim());
  expect(new Set(gis).size).toBe(7);

  t.log.length = 0;
  const gone = { ...pool, deleting: true };
  await converge(t, (inv) => planUncarve({ pool: gone, spec: { pools: [gone] }, inventory: inv, nodeName: 'n', allocated: new Set() }));
  expect(t.log.slice(-3)).toEqual([`mig -i ${PF} -dgi`, `-d ${PF}`, `-i ${PF} -mig 0`]);
  expect(t.log.filter((l) => l.endsWith('current_vgpu_type=0'))).toHaveLength(7);
  expect(await gpuInstances(t.k, PF)).toEqual([]);
  expect(readFileSync(path.join(t.root, 'bus/pci/devices', PF, 'sriov_numvfs'), 'utf8').trim()).toBe('0');
  expect(await t.k.driverOf(PF)).toBe('nvidia');
}, 120_000);

test('a held MIG-backed vGPU stops the teardown at the types: its GI, the VFs and MIG mode stay', async () => {
  const t = await setup();
  await converge(t, (inv) => planCarving({ spec: { pools: [{ ...pool, count: 2 }] }, inventory: inv, nodeName: 'n', allocated: new Set() }));
  const [held, free] = typedVfs(t.root);
  const gone = { ...pool, count: 2, deleting: true };
  const last = await converge(t, (inv) => planUncarve({ pool: gone, spec: { pools: [gone] }, inventory: inv, nodeName: 'n', allocated: new Set([held as string]) }));
  expect(typedVfs(t.root)).toEqual([held]);
  expect(t.log.some((l) => l.includes(`${free as string}/nvidia/current_vgpu_type=0`))).toBe(true);
  expect(t.log.some((l) => /-dgi|-d |-mig 0/.test(l))).toBe(false);
  expect(last.held).toEqual([held]);
  expect(await gpuInstances(t.k, PF)).toHaveLength(2);
}, 120_000);
