// Mixed-size (heterogeneous) vGPU pools with the chart as shipped: the agent has no nvidia-smi, so the
// mode is the host's (nvidia-smi vgpu -i <GPU> -shm 1 once per boot, after sriov-manage -e). The agent
// goes on without it; with the mode on, both sizes are typed; with it off, the driver lists one size
// once a vGPU exists, and the pool of the other size says what the host must do (never a rebind,
// never a clear of the VM-less first size: it is what the admin asked for). Simulated L40S (test/sysfs/nvidia.ts).
import { applyCarving } from '../../device-plugin/src/carving/apply.js';
import { rememberCatalogues, type VgpuType } from '../../device-plugin/src/carving/gpu.js';
import { nvidiaToolRunner } from '../../device-plugin/src/carving/nvidia-tools.js';
import { planCarving } from '../../device-plugin/src/carving/plan.js';
import { scan } from '../../device-plugin/src/discovery/scan.js';
import type { PoolPlan } from '../../device-plugin/src/model.js';
import { FakeKernel } from '../sysfs/kernel.js';
import { addNvidiaVfioGpu, L40S, setMixedSize, sriovManage, vgpuTypeNow } from '../sysfs/nvidia.js';
import { tempTree } from '../sysfs/tmp.js';

const PF = '0000:3b:00.0';
const pool = (name: string, profile: string, count: number): PoolPlan =>
  ({ name, resourceName: `virtualio.dev/${name}`, class: 'GPU', mode: 'SRIOV', consumption: 'HostDevice', vfDriver: 'nvidia', vgpuProfile: profile, vgpuHeterogeneous: true, count, devices: [{ pciAddress: PF }] }) as PoolPlan;
// No nvidia-smi anywhere the agent looks (the chart as shipped).
const noSmi = nvidiaToolRunner({ searchPaths: { nvidiaSmi: ['/nonexistent/nvidia-smi'], sriovManage: ['/nonexistent/sriov-manage'] } });

async function carve(hostSetMode: boolean): Promise<{ typed: Record<string, number>; blocked: string[]; failed: string[] }> {
  const { root, devRoot, cleanup } = await tempTree('vio-mixed-host-');
  try {
    const k = await FakeKernel.create(root, devRoot);
    await addNvidiaVfioGpu(k, PF, L40S);
    await sriovManage(k, '-e', PF); // the host enabled the VFs
    if (hostSetMode) await setMixedSize(k, PF, true); // and, or not, mixed-size mode
    const memory = new Map<string, VgpuType[]>();
    const pools = [pool('a', 'L40S-12Q', 2), pool('b', 'L40S-24Q', 1)];
    let blocked: string[] = [];
    const failed: string[] = [];
    for (let round = 0; round < 5; round++) {
      const inv = rememberCatalogues(await scan(root, { devRoot }), memory);
      const p = planCarving({ spec: { pools }, inventory: inv, nodeName: 'n', allocated: new Set() });
      blocked = p.blocked.map((b) => `${b.pool}: ${b.reason}`);
      if (p.writes.length === 0) break;
      const res = await applyCarving(p, k, undefined, noSmi);
      failed.push(...res.filter((r) => !r.ok).map((r) => `${r.write.path}: ${r.ok ? "" : r.error}`));
      if (p.writes.some((w) => /driver|bind|probe/.test(w.path))) throw new Error('a VF was rebound');
    }
    const typed: Record<string, number> = {};
    for (const vf of ['0000:3b:00.4', '0000:3b:00.5', '0000:3b:00.6']) typed[vf] = await vgpuTypeNow(k, vf);
    return { typed, blocked, failed };
  } finally {
    await cleanup();
  }
}

const id = (name: string): number => L40S.types.find((t) => t.name === `NVIDIA ${name}`)?.id ?? -1;

test('the host set mixed-size mode: a 12Q pool and a 24Q pool share the GPU with no nvidia-smi in the agent', async () => {
  const r = await carve(true);
  expect(r.failed).toEqual([]);
  expect(r.blocked).toEqual([]);
  expect(Object.values(r.typed).sort()).toEqual([id('L40S-12Q'), id('L40S-12Q'), id('L40S-24Q')].sort());
});

test('the host did not: the first size is typed, the other pool names the host command', async () => {
  const r = await carve(false);
  // On the empty GPU both sizes were planned at once; the driver refused the second size's type.
  expect(r.failed).toEqual([expect.stringMatching(/current_vgpu_type: EINVAL: .*L40S-24Q is not creatable now/)]);
  expect(Object.values(r.typed).filter((t) => t === id('L40S-12Q'))).toHaveLength(2);
  expect(Object.values(r.typed)).not.toContain(id('L40S-24Q'));
  expect(r.blocked).toEqual([expect.stringMatching(new RegExp(`^b: .*mixed-size mode is off there.*nvidia-smi vgpu -i ${PF} -shm 1`))]);
});
