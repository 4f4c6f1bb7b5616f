// A node reboot on the simulated kernel brings back the same slices (issue 21). Pools of every
// device-plugin mode (SR-IOV VFs on vfio-pci, a passthrough GPU with its audio function, mdev vGPUs,
// NPIV vports) on one node with the REAL agent process (standalone), the fake kubelet (its checkpoint
// on disk) and VMs holding slices. The reboot (test/sysfs/reboot.ts): the agent and the kubelet stop,
// the VMs die, the kernel's runtime state is lost (VFs, mdevs, vports, bindings), the agent's state
// folder and the kubelet's checkpoint stay. Then the kubelet comes back with its checkpoint and the
// agent starts. Asserted from the witness kernel's tree and the kubelet's checkpoint: every held
// device ID names the same thing as before (VF: same PF and VF index; mdev: same UUID, parent and
// type; vport: same WWPN, WWNN and physical port; all on the same driver and IOMMU group), the first
// list the kubelet gets from the new agent already shows it Healthy, and each VM restarted from the
// kubelet's checkpointed Allocate answer (its old env and device nodes) opens its devices. The time
// from the agent's start to all restored is printed (a figure, not an assertion).
import { jest } from '@jest/globals';
import { readFileSync, readdirSync, readlinkSync, realpathSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { decodeContainerResponse } from '../fakes/kubelet.js';
import { NodeUnderTest } from '../model/node.js';
import { startKernel } from '../sysfs/kernel-daemon.js';
import { startVmFromAllocation, type Vm } from '../sysfs/vmm.js';
import { cdevOwner, checkpointEntries, shutDown } from '../support/reboot.js';

jest.setTimeout(180_000);

let node: NodeUnderTest;
const restarted: Vm[] = [];

afterAll(async () => {
  for (const v of restarted) await v.stop();
  await node?.close();
});

const tryRead = (p: string): string | undefined => {
  try {
    return readFileSync(p, 'utf8').trim();
  } catch {
    return undefined;
  }
};
const linkName = (p: string): string | undefined => {
  try {
    return basename(readlinkSync(p));
  } catch {
    return undefined;
  }
};

/** What a device ID names on the (witness) kernel right now, read from its sysfs tree. */
function identity(sys: string, id: string): string {
  if (/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(id)) {
    const dir = join(sys, 'bus/pci/devices', id);
    const pf = linkName(join(dir, 'physfn'));
    const index = pf ? readdirSync(join(sys, 'bus/pci/devices', pf)).find((n) => n.startsWith('virtfn') && linkName(join(sys, 'bus/pci/devices', pf, n)) === id) : undefined;
    return `PCI ${id}: ${pf ? `${index} of ${pf}` : 'function'}, driver ${linkName(join(dir, 'driver')) ?? '(none)'}, group ${linkName(join(dir, 'iommu_group')) ?? '(none)'}`;
  }
  if (/^[0-9a-f]{8}-/.test(id)) {
    const dir = join(sys, 'bus/mdev/devices', id);
    let parent: string;
    try {
      parent = basename(dirname(realpathSync(dir)));
    } catch {
      return `mdev ${id}: absent`;
    }
    return `mdev ${id}: parent ${parent}, type ${linkName(join(dir, 'mdev_type'))}, group ${linkName(join(dir, 'iommu_group'))}`;
  }
  for (const v of readdirSync(join(sys, 'class/fc_vports'))) {
    const a = join(sys, 'class/fc_vports', v);
    if (tryRead(join(a, 'port_name'))?.replace(/^0x/, '') !== id) continue;
    const vdir = dirname(dirname(realpathSync(a)));
    const port = tryRead(join(dirname(vdir), 'fc_host', basename(dirname(vdir)), 'port_name'));
    return `vport ${id}: wwnn ${tryRead(join(a, 'node_name'))}, port ${port}, state ${tryRead(join(a, 'vport_state'))}`;
  }
  return `${id}: absent`;
}

test('after a reboot the agent re-creates every held slice with the identity it had, before it lists it, and each VM restarts with its old allocation', async () => {
  node = new NodeUnderTest();
  await node.start();
  for (const [pool, n] of [['net', 2], ['vgpu', 2], ['gpu', 1], ['fc', 1]] as const) expect(await node.startVm(pool, n)).toMatch(/^started/);
  await node.kernel.idle();
  const held = [...node.vms.values()].flatMap((v) => v.ids.map((id) => ({ id, resourceName: v.resourceName })));
  const before = new Map(held.map((h) => [h.id, identity(node.sys, h.id)]));
  for (const what of before.values()) expect(what).not.toMatch(/absent|\(none\)/); // all there before the reboot
  const checkpointBefore = checkpointEntries(node.kubelet);

  // The reboot.
  const lost = await shutDown(node);
  expect(lost.vfsDisabledOn).toEqual(['0000:81:00.0']);
  expect(lost.mdevs).toHaveLength(2);
  expect(lost.vports).toHaveLength(2);
  for (const h of held) expect(identity(node.sys, h.id)).toMatch(/absent|driver (?!vfio-pci)/);

  // Boot: the kernel, the kubelet with its checkpoint (pods come back once its sources sync), the agent.
  node.kernel = await startKernel(node.sys, node.dev);
  await node.kubelet.restart();
  await node.podres.restart({ emptyForMs: 1000 });
  const generation = node.kubelet.generation;
  const t0 = Date.now();
  node.agent = await node.spawnAgent();
  // What the rebooted kubelet was last told for a resource: lists of this generation only (lastList
  // would still answer the pre-reboot endpoint's list until the pool registers again).
  const listedNow = (r: string) => node.kubelet.history.filter((e) => e.resourceName === r && e.generation === generation).at(-1)?.lists.at(-1) ?? [];
  const restoredMs = await (async () => {
    for (;;) {
      const ok = held.every((h) => listedNow(h.resourceName).some((d) => d.ID === h.id && d.health === 'Healthy'));
      if (ok) {
        await node.kernel.idle();
        if (held.every((h) => identity(node.sys, h.id) === before.get(h.id))) return Date.now() - t0;
      }
      if (Date.now() - t0 > 60_000) throw new Error(`not restored after 60 s: ${held.map((h) => `${identity(node.sys, h.id)} (was ${before.get(h.id)})`).join('; ')}\n${node.agent?.tail() ?? ''}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  console.log(`reboot: agent start → every held slice restored with its identity and listed Healthy: ${restoredMs} ms (${held.length} slices, 4 pools)`);

  for (const h of held) expect(identity(node.sys, h.id)).toBe(before.get(h.id));
  // Nothing was advertised before it was restored: the first list of each pool after the reboot
  // already has every held ID, Healthy.
  for (const r of new Set(held.map((h) => h.resourceName))) {
    const first = node.kubelet.history.find((e) => e.resourceName === r && e.generation === generation)?.lists[0] ?? [];
    const seen = node.kubelet.history.filter((e) => e.resourceName === r && e.generation === generation).flatMap((e) => e.lists).map((l) => l.map((d) => `${d.ID}=${d.health}`).join(','));
    for (const h of held.filter((x) => x.resourceName === r)) expect(`${h.id}: ${first.find((d) => d.ID === h.id)?.health} (lists: ${seen.join(' | ')})`).toMatch(new RegExp(`^${h.id}: Healthy `));
  }
  // The kubelet's checkpoint still names the same devices for the same pods.
  expect(checkpointEntries(node.kubelet).map(({ podUID, resourceName, ids }) => ({ podUID, resourceName, ids })))
    .toEqual(checkpointBefore.map(({ podUID, resourceName, ids }) => ({ podUID, resourceName, ids })));
  // Each VM restarts as the kubelet restarts it after a reboot: from its checkpointed Allocate answer
  // (no new Allocate), opening the IOMMU group nodes and devices its old env names. The VFIO cdev nodes
  // (/dev/vfio/devices/vfioN) of the answer are left out and counted: the kernel numbers them in bind
  // order, which the agent repeats from its record (test/integration/reboot-cdev.test.ts asserts that).
  let cdevs = 0;
  let cdevsMoved = 0;
  for (const e of checkpointBefore) {
    const cr = decodeContainerResponse(Buffer.from(e.allocResp, 'base64'));
    expect(cr).toBeDefined();
    const groupNodes = (cr!.devices ?? []).filter((d) => !/\/dev\/vfio\/devices\//.test(d.hostPath ?? ''));
    for (const d of (cr!.devices ?? []).filter((x) => !groupNodes.includes(x))) {
      cdevs++;
      const now = readdirSync(join(node.dev, 'vfio/devices')).includes(basename(d.hostPath ?? '')) ? cdevOwner(node.sys, basename(d.hostPath ?? '')) : undefined;
      if (!now || !Object.values(cr!.envs ?? {}).some((v) => v.split(',').includes(now))) cdevsMoved++;
    }
    restarted.push(await startVmFromAllocation(node.kernel, { containerResponses: [{ ...cr!, devices: groupNodes }] }, { name: `restarted-${e.podUID}` }));
  }
  console.log(`reboot: VFIO cdev nodes in the kubelet's checkpointed answers: ${cdevs}, naming another device (or none) after the reboot: ${cdevsMoved}`);
  expect(node.kernel.kernel.violations).toEqual([]);
});

test('a held slice that cannot be re-created after a reboot (its mdev type is gone) is listed Unhealthy with the reason, and nothing else takes its ID', async () => {
  // Continues on the node of the test above: its VMs run again. The node reboots into a GPU driver that
  // no longer offers the type the vGPU pool's held mdevs had.
  const vgpu = 'virtualio.dev/vgpu';
  const heldMdevs = checkpointEntries(node.kubelet).filter((e) => e.resourceName === vgpu).flatMap((e) => e.ids);
  expect(heldMdevs).toHaveLength(2);
  for (const v of restarted.splice(0)) await v.stop();
  await shutDown(node, async () => rmSync(join(node.sys, 'bus/pci/devices/0000:3b:00.0/mdev_supported_types/nvidia-222'), { recursive: true }));
  node.kernel = await startKernel(node.sys, node.dev);
  await node.kubelet.restart();
  await node.podres.restart({ emptyForMs: 1000 });
  node.agent = await node.spawnAgent();
  const generation = node.kubelet.generation;
  const list = await node.kubelet.waitFor('the vGPU pool listed again', () => {
    const ep = node.kubelet.endpoints.get(vgpu);
    const l = ep?.generation === generation ? ep.lists.at(-1) : undefined;
    return l && heldMdevs.every((id) => l.some((d) => d.ID === id)) ? l : undefined;
  }, 60_000);
  for (const id of heldMdevs) expect(list.find((d) => d.ID === id)?.health).toBe('Unhealthy');
  const status = JSON.parse((await node.agent.get('/status')).text) as { slices?: { id: string; health: string; reason?: string }[] };
  for (const id of heldMdevs) {
    const s = status.slices?.find((x) => x.id === id);
    expect(s?.health).toBe('Unhealthy');
    expect(s?.reason).toMatch(/held by .*cannot re-create it with the identity it had/);
  }
  // The witness: no mdev under those UUIDs (of any type), and the other pools are back.
  await node.kernel.idle();
  for (const id of heldMdevs) expect(identity(node.sys, id)).toBe(`mdev ${id}: absent`);
  expect(node.kernel.kernel.violations).toEqual([]);
});

