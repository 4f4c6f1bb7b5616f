// The two vendor-VFIO vGPU examples (examples/nvidia-l40s-vgpu: a profile pool for the device
// plugin; examples/dra-l40s-vgpu-profiles: profiles chosen per claim) name a card and profiles the
// L40S actually has: its PCI device ID and type names as the simulated L40S lists them (ids and names
// from Harvester's fixture, test/sysfs/nvidia.ts), a count that fits the framebuffer, and a claim
// that selects one of the pool's profiles. The profile pool also goes through the operator's planner
// and the agent's carving on a simulated L40S host: sriov-manage, then the type on `count` VFs, no
// rebind. The API-server side is in examples-apply/examples-dra.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { applyCarving } from '../../device-plugin/src/carving/apply.js';
import { rememberCatalogues, type VgpuType } from '../../device-plugin/src/carving/gpu.js';
import { toolCommand } from '../../device-plugin/src/carving/nvidia-tools.js';
import { planCarving } from '../../device-plugin/src/carving/plan.js';
import { scan } from '../../device-plugin/src/discovery/scan.js';
import type { Inventory } from '../../device-plugin/src/model.js';
import type { Pool, VioNode } from '../../operator/src/api/types.js';
import { planNode, preparePools } from '../../operator/src/controllers/plan/plan.js';
import { nodeObj } from '../support/operator-fixtures.js';
import { FakeKernel } from '../sysfs/kernel.js';
import { addNvidiaVfioGpu, L40S, nvidiaTool, vgpuTypeNow } from '../sysfs/nvidia.js';
import { tempTree } from '../sysfs/tmp.js';

const REPO = join(import.meta.dirname, '../..');
/* eslint-disable @typescript-eslint/no-explicit-any -- example manifests are plain JSON trees */
const doc = (rel: string): any => YAML.parse(readFileSync(join(REPO, 'examples', rel), 'utf8'));
const size = (profile: string): number | undefined => L40S.types.find((t) => t.name === `NVIDIA ${profile.replace(/^NVIDIA[ _]+/i, '')}`)?.gb;

test('the device-plugin profile pool: an L40S profile, as many as fit the framebuffer', () => {
  const p = doc('nvidia-l40s-vgpu/virtualiodevice.yaml');
  expect(p.spec.deviceSelector.deviceIDs).toEqual([L40S.device]);
  const gb = size(p.spec.carving.vgpu.profile);
  expect(gb).toBeDefined();
  expect(p.spec.carving.count * gb!).toBeLessThanOrEqual(L40S.framebufferGb);
  expect(p.spec.carving.vfDriver).toBeUndefined(); // the VFs stay on nvidia
});

test('the DRA pool lists L40S profiles and the claim template selects one of them', () => {
  const p = doc('dra-l40s-vgpu-profiles/virtualiodevice.yaml');
  expect(p.spec.deviceSelector.deviceIDs).toEqual([L40S.device]);
  const profiles: string[] = p.spec.carving.onDemand.vgpuProfiles;
  for (const n of profiles) expect({ n, gb: size(n) }).toEqual({ n, gb: expect.any(Number) });
  // Mixed-size mode makes the agent run nvidia-smi, which the chart does not give it (docs/gpu/nvidia-vendor-vfio.md).
  expect(p.spec.carving.onDemand.heterogeneous).toBeUndefined();
  const t = doc('dra-l40s-vgpu-profiles/resourceclaimtemplate.yaml');
  const expr: string = t.spec.spec.devices.requests[0].exactly.selectors[0].cel.expression;
  const m = /vgpuProfile == "([^"]+)"/.exec(expr);
  // The agent publishes vgpuProfile without the "NVIDIA " prefix (device-plugin/src/dra/vgpu-counters.ts).
  expect(profiles.map((n) => n.replace(/^NVIDIA[ _]+/i, ''))).toContain(m?.[1]);
});

const PF = '0000:3b:00.0';
const NODE = 'gpu-node-1';

test.each([
  ['the agent enables the VFs with sriov-manage', false],
  ['the admin enabled the VFs on the host and the agent has no NVIDIA tool (the chart as shipped)', true],
])('the device-plugin profile pool on an L40S host: %s, then `count` VFs typed, none rebound', async (_what, hostEnabled) => {
  const { root, devRoot, cleanup } = await tempTree('vio-example-l40s-');
  try {
    const k = await FakeKernel.create(root, devRoot);
    await addNvidiaVfioGpu(k, PF, L40S);
    if (hostEnabled) await nvidiaTool(k, ['sriov-manage', '-e', PF]);
    const runTool = hostEnabled
      ? (w: Parameters<typeof toolCommand>[0]): Promise<void> => Promise.reject(new Error(`NVIDIA's ${toolCommand(w).tool} not found`))
      : async (w: Parameters<typeof toolCommand>[0]): Promise<void> => { const c = toolCommand(w); await nvidiaTool(k, [c.tool, ...c.args]); };
    const example = doc('nvidia-l40s-vgpu/virtualiodevice.yaml') as Pool;
    const pools = preparePools([{ ...example, metadata: { ...example.metadata, uid: 'uid-l40s', creationTimestamp: '2026-01-01T00:00:00Z' } }]);
    const vio = (inv: Inventory): VioNode => ({ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: NODE }, status: { inventory: { devices: inv.devices } } });
    const memory = new Map<string, VgpuType[]>();
    const plan = planNode(nodeObj(NODE, {}), vio(rememberCatalogues(await scan(root, { devRoot }), memory)), pools);
    expect(plan.conflicts).toEqual([]);
    expect(plan.pools.map((p) => [p.name, p.vgpuProfile, p.count, p.devices])).toEqual([['l40s-vgpu-12q', 'L40S-12Q', 4, [{ pciAddress: PF }]]]);
    const log: string[] = [];
    for (let round = 0; round < 6; round++) {
      const inv = rememberCatalogues(await scan(root, { devRoot }), memory);
      const p = planCarving({ spec: { pools: plan.pools }, inventory: inv, nodeName: NODE, allocated: new Set() });
      expect(p.blocked).toEqual([]);
      if (p.writes.length === 0) break;
      const res = await applyCarving(p, k, undefined, runTool);
      expect(res.filter((r) => !r.ok)).toEqual([]);
      for (const r of res) log.push(r.write.tool ? `${toolCommand(r.write).tool} ${toolCommand(r.write).args.join(' ')}` : `${r.write.path}=${r.write.value.trim()}`);
    }
    const id12q = L40S.types.find((t) => t.name === 'NVIDIA L40S-12Q')?.id;
    expect(log.filter((l) => !l.startsWith('bus/'))).toEqual(hostEnabled ? [] : [`sriov-manage -e ${PF}`]);
    const typed = log.filter((l) => l.endsWith('/nvidia/current_vgpu_type=' + String(id12q)));
    expect(typed).toHaveLength(4);
    for (const l of typed) expect(await vgpuTypeNow(k, l.split('/')[3] as string)).toBe(id12q);
    expect(log.filter((l) => /(driver_override|\/bind|\/unbind)=/.test(l))).toEqual([]);
  } finally {
    await cleanup();
  }
}, 60_000);
