import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { connectX6, emulexFc, FakeKernel, gpuWithAudio, mdevGpu, pciBridge } from '../../../test/sysfs/kernel.js';
import { tempTree } from '../../../test/sysfs/tmp.js';
import { loadUmockdev } from '../../../test/sysfs/umockdev.js';
import { scan } from '../discovery/scan.js';
import { buildSlices } from '../health/slices.js';
import type { CarvingPlan, Inventory, PoolPlan, VirtualIONodeSpec } from '../model.js';
import type { SysfsWriter } from '../sysfs/writer.js';
import { applyCarving } from './apply.js';
import { mdevUuid, uuidV5, vportWwns } from './layout.js';
import { planCarving, planUncarve } from './plan.js';

const NODE = 'node-a';
const PF = '0000:3b:00.0';
const GPU = '0000:af:00.0';
const HBA = '0000:5e:00.0';
const PT_GPU = '0000:65:00.0';
const PT_AUDIO = '0000:65:00.1';
const PT_BRIDGE = '0000:64:00.0';

function pool(p: Partial<PoolPlan> & Pick<PoolPlan, 'name' | 'mode' | 'devices'>): PoolPlan {
  return { resourceName: `virtualio.dev/${p.name}`, class: 'NIC', consumption: 'HostDevice', ...p };
}

let k: FakeKernel;
let cleanup: () => Promise<void>;

beforeEach(async () => {
  const t = await tempTree();
  cleanup = t.cleanup;
  k = await FakeKernel.create(t.root, t.devRoot);
  await k.addFunction(connectX6(PF, { netdev: 'ens1f0np0', totalVFs: 8 }));
  await k.addFunction(mdevGpu(GPU, { instances: 4 }));
  await k.addFunction(emulexFc(HBA, { host: 5, wwpn: '10000090fa000001', wwnn: '20000090fa000001', maxNPIVVports: 3 }));
  await k.addFunction(pciBridge(PT_BRIDGE, { group: 40 }));
  for (const f of gpuWithAudio(PT_GPU, PT_AUDIO, { group: 40 })) await k.addFunction(f);
});
afterEach(() => cleanup());

const inventory = (): Promise<Inventory> => scan(k.root, { devRoot: k.devRoot });

/** Plans and applies until the plan is empty; returns the plans applied (at most `max`). */
async function converge(spec: VirtualIONodeSpec, allocated = new Set<string>(), max = 4): Promise<CarvingPlan[]> {
  const plans: CarvingPlan[] = [];
  for (let i = 0; i < max; i++) {
    const plan = planCarving({ spec, inventory: await inventory(), nodeName: NODE, allocated });
    if (plan.writes.length === 0) return plans;
    plans.push(plan);
    const results = await applyCarving(plan, k);
    expect(results.filter((r) => !r.ok)).toEqual([]);
  }
  throw new Error(`no convergence after ${max} passes`);
}

const sriovPool = (count: number, extra: Partial<PoolPlan> = {}): PoolPlan => pool({ name: 'nic', mode: 'SRIOV', count, devices: [{ pciAddress: PF }], ...extra });

describe('SR-IOV carving', () => {
  test('enables VFs, then binds them to vfio-pci; a third plan is empty', async () => {
    const spec = { pools: [sriovPool(4)] };
    const plans = await converge(spec);
    expect(plans.map((p) => p.writes.map((w) => `${w.path}=${w.value}`))).toEqual([
      [`bus/pci/devices/${PF}/sriov_drivers_autoprobe=0`, `bus/pci/devices/${PF}/sriov_numvfs=4`],
      ['0000:3b:00.2', '0000:3b:00.3', '0000:3b:00.4', '0000:3b:00.5'].flatMap((vf) => [`bus/pci/devices/${vf}/driver_override=vfio-pci`, `bus/pci/drivers_probe=${vf}`]),
    ]);
    const inv = await inventory();
    expect(inv.devices.filter((d) => d.physfn === PF).map((d) => [d.pciAddress, d.driver])).toEqual([
      ['0000:3b:00.2', 'vfio-pci'], ['0000:3b:00.3', 'vfio-pci'], ['0000:3b:00.4', 'vfio-pci'], ['0000:3b:00.5', 'vfio-pci'],
    ]);
    const slices = buildSlices({ spec, inventory: inv, devRoot: k.devRoot, nodeName: NODE });
    expect(slices.map((s) => [s.id, s.kind, s.health, s.index, s.pfNetdev])).toEqual([
      ['0000:3b:00.2', 'VF', 'Healthy', 0, 'ens1f0np0'], ['0000:3b:00.3', 'VF', 'Healthy', 1, 'ens1f0np0'],
      ['0000:3b:00.4', 'VF', 'Healthy', 2, 'ens1f0np0'], ['0000:3b:00.5', 'VF', 'Healthy', 3, 'ens1f0np0'],
    ]);
    expect(planCarving({ spec, inventory: inv, nodeName: NODE, allocated: new Set() })).toEqual({ writes: [], blocked: [] });
  });

  test('a VF already bound to another driver is unbound first', async () => {
    await k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '1'); // autoprobe on: mlx5_core takes it
    const plan = planCarving({ spec: { pools: [sriovPool(1)] }, inventory: await inventory(), nodeName: NODE, allocated: new Set() });
    expect(plan.writes.map((w) => w.path)).toEqual(['bus/pci/devices/0000:3b:00.2/driver_override', 'bus/pci/devices/0000:3b:00.2/driver/unbind', 'bus/pci/drivers_probe']);
  });

  test('re-carving a PF with an allocated VF is blocked with a reason while other devices proceed', async () => {
    await converge({ pools: [sriovPool(4)] });
    const spec = { pools: [sriovPool(6), pool({ name: 'vgpu', class: 'GPU', mode: 'Mediated', mdevType: 'nvidia-222', count: 1, devices: [{ pciAddress: GPU }] })] };
    const plan = planCarving({ spec, inventory: await inventory(), nodeName: NODE, allocated: new Set(['0000:3b:00.3']) });
    expect(plan.blocked).toEqual([{ pool: 'nic', device: PF, reason: `re-carving ${PF} from 4 to 6 VFs waits: allocated VFs 0000:3b:00.3` }]);
    expect(plan.writes.map((w) => w.path)).toEqual([`bus/pci/devices/${GPU}/mdev_supported_types/nvidia-222/create`]);
    // Released: the PF is disabled first, then enabled with the new count.
    const free = planCarving({ spec, inventory: await inventory(), nodeName: NODE, allocated: new Set() });
    expect(free.writes.slice(0, 3).map((w) => `${w.path.split('/').pop()}=${w.value}`)).toEqual(['sriov_numvfs=0', 'sriov_drivers_autoprobe=0', 'sriov_numvfs=6']);
    await converge(spec);
    expect((await inventory()).devices.find((d) => d.pciAddress === PF)?.sriov?.numVFs).toBe(6);
  });

  test('two pools share a PF by VF range, each with its own driver', async () => {
    const spec = {
      pools: [
        pool({ name: 'a', mode: 'SRIOV', devices: [{ pciAddress: PF, vfFirst: 0, vfLast: 1 }] }),
        pool({ name: 'b', mode: 'SRIOV', vfDriver: 'mlx5_core', devices: [{ pciAddress: PF, vfFirst: 2, vfLast: 4 }] }),
      ],
    };
    await converge(spec);
    const inv = await inventory();
    expect(inv.devices.find((d) => d.pciAddress === PF)?.sriov?.numVFs).toBe(5);
    expect(inv.devices.filter((d) => d.physfn === PF).map((d) => d.driver)).toEqual(['vfio-pci', 'vfio-pci', 'mlx5_core', 'mlx5_core', 'mlx5_core']);
    const slices = buildSlices({ spec, inventory: inv, devRoot: k.devRoot, nodeName: NODE });
    expect(slices.map((s) => [s.pool, s.id, s.health, s.deviceNodes.length > 0])).toEqual([
      ['a', '0000:3b:00.2', 'Healthy', true], ['a', '0000:3b:00.3', 'Healthy', true],
      ['b', '0000:3b:00.4', 'Healthy', false], ['b', '0000:3b:00.5', 'Healthy', false], ['b', '0000:3b:00.6', 'Healthy', false],
    ]);
  });

  test.each([
    ['more VFs than sriov_totalvfs', sriovPool(9), `9 VFs wanted on ${PF} but sriov_totalvfs is 8`],
    ['a device that is not SR-IOV capable', sriovPool(2, { devices: [{ pciAddress: GPU }] }), `device ${GPU} is not SR-IOV capable (no sriov_totalvfs)`],
    ['a device that does not exist', sriovPool(2, { devices: [{ pciAddress: '0000:99:00.0' }] }), 'device 0000:99:00.0 not found'],
  ])('blocks %s', async (_n, p, reason) => {
    const plan = planCarving({ spec: { pools: [p] }, inventory: await inventory(), nodeName: NODE, allocated: new Set() });
    expect(plan).toEqual({ writes: [], blocked: [{ pool: 'nic', device: p.devices[0]?.pciAddress, reason }] });
  });
});

describe('Passthrough carving', () => {
  test('binds the function and its IOMMU group peers to vfio-pci, but not the bridge', async () => {
    const spec = { pools: [pool({ name: 'gpu', class: 'GPU', mode: 'Passthrough', devices: [{ pciAddress: PT_GPU }] })] };
    const plans = await converge(spec);
    expect(plans).toHaveLength(1);
    expect(plans[0]?.writes.filter((w) => w.path === 'bus/pci/drivers_probe').map((w) => w.value)).toEqual([PT_GPU, PT_AUDIO]);
    const inv = await inventory();
    const drv = (a: string): string | undefined => inv.devices.find((d) => d.pciAddress === a)?.driver;
    expect([drv(PT_GPU), drv(PT_AUDIO), drv(PT_BRIDGE)]).toEqual(['vfio-pci', 'vfio-pci', 'pcieport']);
    expect(buildSlices({ spec, inventory: inv, devRoot: k.devRoot, nodeName: NODE })).toEqual([
      expect.objectContaining({ id: PT_GPU, kind: 'Function', health: 'Healthy', iommuGroup: 40, deviceNodes: ['/dev/vfio/40', expect.stringMatching(/^\/dev\/vfio\/devices\/vfio\d+$/)] }),
    ]);
  });
});

describe('Passthrough never destroys what a group member carries', () => {
  test('a GPU sharing its IOMMU group with a vGPU parent that has an mdev is blocked, with no write at all', async () => {
    const GPU2 = '0000:b0:00.0';
    const group = Number((await inventory()).devices.find((d) => d.pciAddress === GPU)?.iommuGroup);
    await k.addFunction({ address: GPU2, vendor: '10de', device: '2236', classCode: '030200', driver: 'nvidia', iommuGroup: group });
    await converge({ pools: [pool({ name: 'vgpu', class: 'GPU', mode: 'Mediated', mdevType: 'nvidia-222', count: 1, devices: [{ pciAddress: GPU }] })] });
    const plan = planCarving({ spec: { pools: [pool({ name: 'gpu', class: 'GPU', mode: 'Passthrough', devices: [{ pciAddress: GPU2 }] })] }, inventory: await inventory(), nodeName: NODE, allocated: new Set() });
    expect(plan.writes).toEqual([]);
    expect(plan.blocked).toEqual([{ pool: 'gpu', device: GPU2, reason: expect.stringContaining(`member(s) ${GPU} carry mdevs or VFs`) }]);
  });
});

describe('Mediated carving', () => {
  const spec = (count: number): VirtualIONodeSpec => ({ pools: [pool({ name: 'vgpu', class: 'GPU', mode: 'Mediated', mdevType: 'GRID_T4-1B', count, devices: [{ pciAddress: GPU }] })] });

  test('creates deterministic UUIDs (type named by its name), idempotently', async () => {
    await converge(spec(2));
    const want = [0, 1].map((i) => mdevUuid(NODE, GPU, 'nvidia-222', i)).sort();
    const gpu = (await inventory()).devices.find((d) => d.pciAddress === GPU);
    expect(gpu?.mdevs?.map((m) => m.uuid).sort()).toEqual(want);
    expect(await converge(spec(2))).toEqual([]);
    const slices = buildSlices({ spec: spec(2), inventory: await inventory(), devRoot: k.devRoot, nodeName: NODE });
    expect(slices.map((s) => [s.id, s.kind, s.health])).toEqual(want.map((u) => [u, 'Mdev', 'Healthy']));
  });

  test('removes our extra mdevs (count shrank) unless allocated, never a foreign one', async () => {
    await converge(spec(3));
    const ours = [0, 1, 2].map((i) => mdevUuid(NODE, GPU, 'nvidia-222', i));
    const foreign = '0b3c2d1e-0000-4000-8000-00000000000f';
    await k.write(`bus/pci/devices/${GPU}/mdev_supported_types/nvidia-222/create`, foreign);
    const held = planCarving({ spec: spec(1), inventory: await inventory(), nodeName: NODE, allocated: new Set([ours[2] as string]) });
    expect(held.writes.map((w) => `${w.path}=${w.value}`)).toEqual([`bus/mdev/devices/${ours[1]}/remove=1`]);
    expect(held.blocked).toEqual([{ pool: 'vgpu', device: GPU, reason: `mdev ${ours[2]} is not one of the pool's but is allocated; kept until released` }]);
    expect(held.foreign).toEqual([{ pool: 'vgpu', device: GPU, reason: `mdev ${foreign} of type nvidia-222 was not created by virtualio; left alone` }]);
    await converge(spec(1));
    const left = (await inventory()).devices.find((d) => d.pciAddress === GPU)?.mdevs?.map((m) => m.uuid).sort();
    expect(left).toEqual([ours[0], foreign].sort());
    // The foreign mdev occupies capacity: 4 instances, ours[0] + foreign leave room for 2 more.
    const more = planCarving({ spec: spec(4), inventory: await inventory(), nodeName: NODE, allocated: new Set() });
    expect(more.writes.map((w) => w.value)).toEqual([ours[1], ours[2]]);
    expect(more.blocked).toEqual([{ pool: 'vgpu', device: GPU, reason: `3 mdevs of type nvidia-222 wanted on ${GPU} but only 2 instances are available` }]);
    // Uncarving the pool removes ours only.
    const un = planUncarve({ pool: spec(1).pools?.[0] as PoolPlan, spec: { pools: [] }, inventory: await inventory(), nodeName: NODE, allocated: new Set() });
    expect(un.writes.map((w) => w.path)).toEqual([`bus/mdev/devices/${ours[0]}/remove`]);
  });

  test('an edited type: our mdevs of the old type go (from their UUIDs alone, no record), held ones wait, foreign ones stay', async () => {
    await converge(spec(3));
    const old = [0, 1, 2].map((i) => mdevUuid(NODE, GPU, 'nvidia-222', i));
    const foreign = '0b3c2d1e-0000-4000-8000-00000000000e';
    await k.write(`bus/pci/devices/${GPU}/mdev_supported_types/nvidia-222/create`, foreign);
    const edited: VirtualIONodeSpec = { pools: [pool({ name: 'vgpu', class: 'GPU', mode: 'Mediated', mdevType: 'nvidia-230', count: 1, devices: [{ pciAddress: GPU }] })] };
    const plan = planCarving({ spec: edited, inventory: await inventory(), nodeName: NODE, allocated: new Set([old[1] as string]) });
    const removes = plan.writes.filter((w) => w.path.endsWith('/remove')).map((w) => w.path).sort();
    expect(removes).toEqual([old[0], old[2]].map((u) => `bus/mdev/devices/${u}/remove`).sort());
    expect(plan.blocked).toContainEqual({ pool: 'vgpu', device: GPU, reason: `mdev ${old[1]} is not one of the pool's but is allocated; kept until released` });
    expect(plan.foreign).toEqual([{ pool: 'vgpu', device: GPU, reason: `mdev ${foreign} of type nvidia-222 was not created by virtualio; left alone` }]);
  });

  test('creates only what available_instances allows and says why', async () => {
    const plan = planCarving({ spec: spec(6), inventory: await inventory(), nodeName: NODE, allocated: new Set() });
    expect(plan.writes).toHaveLength(4);
    expect(plan.blocked).toEqual([{ pool: 'vgpu', device: GPU, reason: `6 mdevs of type nvidia-222 wanted on ${GPU} but only 4 instances are available` }]);
  });
});

describe('NPIV carving', () => {
  const spec: VirtualIONodeSpec = { pools: [pool({ name: 'fc', class: 'Storage', mode: 'NPIV', wwnPrefix: 'c05076', count: 2, devices: [{ pciAddress: HBA }] })] };

  test('creates deterministic vports "wwpn:wwnn", idempotently, and reports them as slices', async () => {
    await converge(spec);
    const w = [0, 1].map((i) => vportWwns('c05076', NODE, HBA, '10000090fa000001', i));
    const inv = await inventory();
    expect(inv.vports?.map((v) => [v.wwpn, v.wwnn]).sort()).toEqual(w.map((x) => [x.wwpn, x.wwnn]).sort());
    for (const x of w) expect(x.wwpn).toMatch(/^c05076[0-9a-f]{10}$/);
    expect(await converge(spec)).toEqual([]);
    expect(buildSlices({ spec, inventory: inv, devRoot: k.devRoot, nodeName: NODE }).map((s) => [s.id, s.kind, s.health, s.vport?.parentHost])).toEqual(
      w.map((x) => [x.wwpn, 'VPort', 'Healthy', 'host5']).sort((a, b) => (String(a[0]) < String(b[0]) ? -1 : 1)),
    );
  });

  test('stops at max_npiv_vports with a reason', async () => {
    const big = { pools: [{ ...(spec.pools?.[0] as PoolPlan), count: 5 }] };
    const plan = planCarving({ spec: big, inventory: await inventory(), nodeName: NODE, allocated: new Set() });
    expect(plan.writes).toHaveLength(3);
    expect(plan.blocked).toEqual([{ pool: 'fc', device: HBA, reason: '5 vports wanted on host5 but only 3 of max_npiv_vports 3 are free' }]);
  });

  test('never deletes a vport it did not create, even with the pool prefix; ours beyond count go', async () => {
    await converge({ pools: [{ ...(spec.pools?.[0] as PoolPlan), count: 2 }] });
    const foreign = { wwpn: 'c050760000000abc', wwnn: 'c050760000000abd' };
    await k.write('class/fc_host/host5/vport_create', `${foreign.wwpn}:${foreign.wwnn}`);
    const one = { pools: [{ ...(spec.pools?.[0] as PoolPlan), count: 1 }] };
    const plan = planCarving({ spec: one, inventory: await inventory(), nodeName: NODE, allocated: new Set() });
    const second = vportWwns('c05076', NODE, HBA, '10000090fa000001', 1);
    expect(plan.writes.map((w) => `${w.path}=${w.value}`)).toEqual([`class/fc_host/host5/vport_delete=${second.wwpn}:${second.wwnn}`]);
    expect(plan.foreign).toEqual([{ pool: 'fc', device: HBA, reason: expect.stringMatching(new RegExp(`^vport vport-5:0-\\d+ \\(${foreign.wwpn}\\) on host5 was not created by virtualio; left alone$`)) }]);
  });
});

describe('uncarving', () => {
  test('SR-IOV: held VFs block disabling; once released the PF goes back to 0 VFs', async () => {
    const p = sriovPool(2);
    await converge({ pools: [p] });
    const held = planUncarve({ pool: { ...p, deleting: true }, spec: { pools: [{ ...p, deleting: true }] }, inventory: await inventory(), nodeName: NODE, allocated: new Set(['0000:3b:00.2']) });
    expect(held).toEqual({ writes: [], blocked: [{ pool: 'nic', device: PF, reason: `disabling VFs of ${PF} waits: allocated VFs 0000:3b:00.2` }], held: ['0000:3b:00.2'] });
    const free = planUncarve({ pool: p, spec: { pools: [] }, inventory: await inventory(), nodeName: NODE, allocated: new Set() });
    await applyCarving(free, k);
    expect((await inventory()).devices.find((d) => d.pciAddress === PF)?.sriov).toEqual({ totalVFs: 8, numVFs: 0, vfs: [] });
    expect(planUncarve({ pool: p, spec: { pools: [] }, inventory: await inventory(), nodeName: NODE, allocated: new Set() }).writes).toEqual([]);
  });

  test('Mediated, Passthrough and NPIV pools release what no pod holds', async () => {
    const vgpu = pool({ name: 'vgpu', class: 'GPU', mode: 'Mediated', mdevType: 'nvidia-222', count: 2, devices: [{ pciAddress: GPU }] });
    const pt = pool({ name: 'gpu', class: 'GPU', mode: 'Passthrough', devices: [{ pciAddress: PT_GPU }] });
    const fc = pool({ name: 'fc', class: 'Storage', mode: 'NPIV', wwnPrefix: 'c05076', count: 1, devices: [{ pciAddress: HBA }] });
    await converge({ pools: [vgpu, pt, fc] });
    const keep = mdevUuid(NODE, GPU, 'nvidia-222', 1);
    const wwpn = vportWwns('c05076', NODE, HBA, '10000090fa000001', 0).wwpn;
    for (const p of [vgpu, pt, fc]) {
      const plan = planUncarve({ pool: p, spec: { pools: [] }, inventory: await inventory(), nodeName: NODE, allocated: new Set([keep]) });
      await applyCarving(plan, k);
      if (p === vgpu) expect(plan.held).toEqual([keep]);
    }
    const inv = await inventory();
    expect(inv.devices.find((d) => d.pciAddress === GPU)?.mdevs?.map((m) => m.uuid)).toEqual([keep]);
    expect([PT_GPU, PT_AUDIO].map((a) => inv.devices.find((d) => d.pciAddress === a)?.driver)).toEqual(['nvidia', 'snd_hda_intel']);
    expect(inv.vports?.some((v) => v.wwpn === wwpn)).toBeFalsy();
    // The held mdev's group node and its vfio device node (an mdev is a vfio device, numbered like a bound function).
    expect(inv.devNodes?.filter((n) => n !== '/dev/vfio/vfio').map((n) => n.replace(/\d+$/, 'N')).sort()).toEqual(['/dev/vfio/N', '/dev/vfio/devices/vfioN']);
  });

  test('Passthrough: a function the release left with no driver is probed back to its original driver; one without an original (or whose driver is gone) is left alone', async () => {
    const pt = pool({ name: 'gpu', class: 'GPU', mode: 'Passthrough', devices: [{ pciAddress: PT_GPU }] });
    await converge({ pools: [pt] });
    await k.write(`bus/pci/devices/${PT_GPU}/driver_override`, '\n');
    await k.write(`bus/pci/devices/${PT_GPU}/driver/unbind`, PT_GPU); // and no probe: no driver now
    const inv = await inventory();
    const driverless = (original?: { driver?: string }, pciDrivers = inv.pciDrivers) => ({ ...inv, ...(pciDrivers ? { pciDrivers } : {}), devices: inv.devices.map((d) => (d.pciAddress === PT_GPU && original ? { ...d, original } : d)) });
    const plan = (i: typeof inv) => planUncarve({ pool: pt, spec: { pools: [] }, inventory: i, nodeName: NODE, allocated: new Set() }).writes.map((w) => `${w.path}=${w.value.trim()}`);
    const audio = [`bus/pci/devices/${PT_AUDIO}/driver_override=`, `bus/pci/devices/${PT_AUDIO}/driver/unbind=${PT_AUDIO}`, `bus/pci/drivers_probe=${PT_AUDIO}`];
    expect(plan(driverless({ driver: 'nvidia' }))).toEqual([`bus/pci/devices/${PT_GPU}/driver_override=`, `bus/pci/drivers_probe=${PT_GPU}`, ...audio]);
    expect(plan(driverless())).toEqual(audio);
    expect(plan(driverless({ driver: 'nvidia' }, (inv.pciDrivers ?? []).filter((d) => d !== 'nvidia')))).toEqual(audio);
    await applyCarving(planUncarve({ pool: pt, spec: { pools: [] }, inventory: driverless({ driver: 'nvidia' }), nodeName: NODE, allocated: new Set() }), k);
    expect((await inventory()).devices.filter((d) => d.pciAddress === PT_GPU || d.pciAddress === PT_AUDIO).map((d) => d.driver)).toEqual(['nvidia', 'snd_hda_intel']);
  });
});

describe('applyCarving', () => {
  test('reports each write; a failure skips the rest of its group only', async () => {
    const seen: string[] = [];
    const writer: SysfsWriter = {
      write: async (p, v) => {
        seen.push(`${p}=${v}`);
        if (p === 'a/1') throw new Error('EBUSY: busy');
      },
    };
    const results = await applyCarving(
      {
        writes: [
          { path: 'a/1', value: '0', why: '', group: 'a' },
          { path: 'a/2', value: '4', why: '', group: 'a' },
          { path: 'b/1', value: 'x', why: '', group: 'b' },
          { path: 'c', value: 'y', why: '' },
        ],
        blocked: [],
      },
      writer,
    );
    expect(results.map((r) => [r.write.path, r.ok, r.ok ? undefined : r.error])).toEqual([
      ['a/1', false, 'EBUSY: busy'],
      ['a/2', false, 'skipped: an earlier write for a failed'],
      ['b/1', true, undefined],
      ['c', true, undefined],
    ]);
    expect(seen).toEqual(['a/1=0', 'b/1=x', 'c=y']);
  });

  test('a refused kernel write is a result, not an exception', async () => {
    const results = await applyCarving({ writes: [{ path: `bus/pci/devices/${PF}/sriov_numvfs`, value: '99', why: 'too many' }], blocked: [] }, k);
    expect(results).toEqual([{ write: expect.objectContaining({ value: '99' }), ok: false, error: expect.stringContaining('ERANGE'), code: 'ERANGE' }]);
  });
});

describe('deterministic names', () => {
  test('uuidV5 matches the RFC 9562 example and mdev UUIDs are stable, distinct and v5', () => {
    expect(uuidV5('www.example.com', '6ba7b810-9dad-11d1-80b4-00c04fd430c8')).toBe('2ed6657d-e927-568b-95e1-2665a8aea6a2');
    const a = mdevUuid(NODE, GPU, 'nvidia-222', 0);
    expect(mdevUuid(NODE, GPU, 'nvidia-222', 0)).toBe(a);
    expect(new Set([a, mdevUuid(NODE, GPU, 'nvidia-222', 1), mdevUuid('node-b', GPU, 'nvidia-222', 0), mdevUuid(NODE, GPU, 'nvidia-230', 0)]).size).toBe(4);
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});

/**
 * What a live A16 host shows but the recording lacks: `mdev_supported_types` on each VF (as the
 * demo host adds them). One vGPU per VF: a VF that carries an mdev shows 0 available instances.
 */
async function addA16Types(root: string, inv: Inventory): Promise<void> {
  for (const d of inv.devices.filter((x) => x.physfn === A16)) {
    for (const id of ['nvidia-746', 'nvidia-751', 'nvidia-754']) {
      const td = path.join(root, 'bus/pci/devices', d.pciAddress, 'mdev_supported_types', id);
      await mkdir(path.join(td, 'devices'), { recursive: true });
      await writeFile(path.join(td, 'name'), `GRID A16 ${id}\n`);
      await writeFile(path.join(td, 'available_instances'), (d.mdevs ?? []).length > 0 ? '0\n' : '1\n');
      await writeFile(path.join(td, 'device_api'), 'vfio-pci\n');
      await writeFile(path.join(td, 'create'), '');
    }
  }
}

const A16 = '0000:08:00.0';
const RECORDED = { '0000:08:00.4': 'f715f63c-0d00-4007-9c5a-b07b0c6c05de', '0000:08:00.6': '3deab9a4-200a-4c54-99b1-5eb0722d1d81', '0000:08:02.0': 'c728e022-f16f-434b-ad2c-9665ee634d3d' };

describe('carving plans on the recorded vgpu-node', () => {
  let t: Awaited<ReturnType<typeof tempTree>>;
  beforeEach(async () => {
    t = await tempTree();
    await loadUmockdev(path.resolve(import.meta.dirname, '../../../test/fixtures/real-sysfs/vgpu-node.umockdev'), t.root, { devRoot: t.devRoot });
  }, 60000);
  afterEach(() => t.cleanup());
  const a16Pool = (count: number, mdevType = 'nvidia-754'): VirtualIONodeSpec => ({ pools: [pool({ name: 'a16', class: 'GPU', mode: 'Mediated', mdevType, count, devices: [{ pciAddress: A16 }] })] });

  test('as recorded (no type folders): the recorded mdev is foreign, never removed; the pool says why it is blocked', async () => {
    const inv = await scan(t.root, { devRoot: t.devRoot });
    const plan = planCarving({ spec: a16Pool(1), inventory: inv, nodeName: NODE, allocated: new Set() });
    expect(plan.writes).toEqual([]);
    expect(plan.foreign).toEqual([{ pool: 'a16', device: '0000:08:00.4', reason: `mdev ${RECORDED['0000:08:00.4']} of type nvidia-754 was not created by virtualio; left alone` }]);
    expect(plan.blocked).toEqual([{ pool: 'a16', device: A16, reason: `1 of 1 mdevs of type nvidia-754 have no parent on ${A16} that is free (1 support the type, 1 foreign mdev(s) occupy some)` }]);
    // SR-IOV on a recorded 82599 PF: 63 VFs possible, none enabled.
    const nic: VirtualIONodeSpec = { pools: [pool({ name: 'x', mode: 'SRIOV', count: 8, devices: [{ pciAddress: '0000:04:00.0' }] })] };
    expect(planCarving({ spec: nic, inventory: inv, nodeName: NODE, allocated: new Set() }).writes.map((w) => `${w.path}=${w.value}`)).toEqual([
      'bus/pci/devices/0000:04:00.0/sriov_drivers_autoprobe=0',
      'bus/pci/devices/0000:04:00.0/sriov_numvfs=8',
    ]);
  }, 60000);

  test('with the VF type folders: mdevs go on VFs with available instances, around the recorded ones, and stay put', async () => {
    await addA16Types(t.root, await scan(t.root, { devRoot: t.devRoot }));
    const kernel = await FakeKernel.create(t.root, t.devRoot);
    const spec = a16Pool(4);
    const inv = await scan(t.root, { devRoot: t.devRoot });
    const plan = planCarving({ spec, inventory: inv, nodeName: NODE, allocated: new Set() });
    const vfs = ['0000:08:00.5', '0000:08:00.7', '0000:08:01.0', '0000:08:01.1'];
    expect(plan.blocked).toEqual([]);
    expect(plan.writes.map((w) => `${w.path}=${w.value}`)).toEqual(vfs.map((vf) => `bus/pci/devices/${vf}/mdev_supported_types/nvidia-754/create=${mdevUuid(NODE, vf, 'nvidia-754', 0)}`));
    expect(plan.foreign?.map((f) => f.device)).toEqual(['0000:08:00.4', '0000:08:00.6', '0000:08:02.0']);
    expect((await applyCarving(plan, kernel)).filter((r) => !r.ok)).toEqual([]);
    // Now 00.5 … 01.1 show 0 available instances and hold ours: the same VFs are chosen, nothing to do.
    const after = await scan(t.root, { devRoot: t.devRoot });
    expect(planCarving({ spec, inventory: after, nodeName: NODE, allocated: new Set() })).toMatchObject({ writes: [], blocked: [] });
    const slices = buildSlices({ spec, inventory: after, devRoot: t.devRoot, nodeName: NODE });
    expect(slices.map((s) => [s.parent, s.health]).sort()).toEqual(vfs.map((vf) => [vf, 'Healthy']));
    for (const [vf, uuid] of Object.entries(RECORDED)) expect(after.devices.find((d) => d.pciAddress === vf)?.mdevs?.map((m) => m.uuid)).toEqual([uuid]);
  }, 60000);
});

test('mdevs on a parent that is not a PCI function are created through /sys/class/mdev_bus', () => {
  const inventory = { devices: [{ pciAddress: 'mtty', mdevTypes: [{ id: 'mtty-2', availableInstances: 12, deviceAPI: 'vfio-pci' }] }] };
  const spec = { pools: [{ name: 'serial', resourceName: 'virtualio.dev/serial', class: 'GPU' as const, mode: 'Mediated' as const, consumption: 'MediatedDevice' as const, mdevType: 'mtty-2', count: 2, devices: [{ pciAddress: 'mtty' }] }] };
  const plan = planCarving({ spec, inventory, nodeName: 'node-a', allocated: new Set() });
  expect(plan.blocked).toEqual([]);
  expect(plan.writes.map((w) => w.path)).toEqual(['class/mdev_bus/mtty/mdev_supported_types/mtty-2/create', 'class/mdev_bus/mtty/mdev_supported_types/mtty-2/create']);
});

test('binding to a driver that is not loaded is blocked with the reason, not written (the function keeps its driver)', () => {
  const inventory = {
    devices: [{ pciAddress: '0000:03:00.0', vendorID: '1234', deviceID: '1111', classCode: '030000', driver: 'bochs-drm', iommuGroup: 9, iommuGroupMembers: ['0000:03:00.0'] }],
    pciDrivers: ['bochs-drm', 'igb', 'nvme'],
  };
  const spec = { pools: [{ name: 'gpu', resourceName: 'virtualio.dev/gpu', class: 'GPU' as const, mode: 'Passthrough' as const, consumption: 'HostDevice' as const, devices: [{ pciAddress: '0000:03:00.0' }] }] };
  const plan = planCarving({ spec, inventory, nodeName: 'node-a', allocated: new Set() });
  expect(plan.writes).toEqual([]);
  expect(plan.blocked).toEqual([{ pool: 'gpu', device: '0000:03:00.0', reason: 'cannot bind 0000:03:00.0 to vfio-pci: driver vfio-pci is not loaded (modprobe vfio-pci)' }]);
  const loaded = planCarving({ spec, inventory: { ...inventory, pciDrivers: [...inventory.pciDrivers, 'vfio-pci'] }, nodeName: 'node-a', allocated: new Set() });
  expect(loaded.writes.map((w) => w.path)).toEqual(['bus/pci/devices/0000:03:00.0/driver_override', 'bus/pci/devices/0000:03:00.0/driver/unbind', 'bus/pci/drivers_probe']);
});
