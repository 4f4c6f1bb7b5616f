// VFIO cdev numbers across a reboot (issue 21; docs/design-decisions.md, "Reboot brings back the same
// slices"). The kernel numbers `/dev/vfio/devices/vfioN` lowest-free at bind (an IDA; the simulated
// kernel does the same), a reboot keeps none of them, and the kubelet restarts a VM from its saved
// Allocate answer, which names the old paths. On the simulated node (test/model/node.ts: the REAL
// agent, the fake kubelet with its checkpoint on disk):
// 1. A history the agent's own order at boot does not repeat: every function on vfio-pci is bound
//    again in reverse address order while the agent is stopped, so the spare VFs and the GPU's audio
//    function hold numbers between the held ones, and the vGPU pool's mdevs are made again after
//    them (as an mdev made for a claim after the binds is: an mdev takes a number from the same IDA
//    when it is created). After a reboot every cdev a saved answer names must open the function it
//    opened before (the agent binds and creates in ascending recorded number).
// 2. A number that cannot be had back (a function added while the node was down took vfio0 first):
//    a held slice whose saved cdev now names another function (or none) is listed Unhealthy with the
//    old and new paths, never Healthy.
import { jest } from '@jest/globals';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { NodeUnderTest } from '../model/node.js';
import { startKernel } from '../sysfs/kernel-daemon.js';
import { connectX6 } from '../sysfs/kernel.js';
import { boot, savedCdevs, shutDown } from '../support/reboot.js';

jest.setTimeout(180_000);

let node: NodeUnderTest;

afterAll(async () => {
  await node?.close();
});

const BDF = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/;

/** The agent's record of cdev numbers, as on disk. */
function recordedCdevs(): Record<string, number> {
  try {
    const doc = JSON.parse(readFileSync(join(node.stateDir, 'agent-checkpoint.json'), 'utf8')) as { vfio?: { cdevs?: Record<string, number> } };
    return doc.vfio?.cdevs ?? {};
  } catch {
    return {};
  }
}

/** Functions on vfio-pci now, with their cdev numbers; `mdevs`: mdevs (by UUID) too. */
function cdevsNow(mdevs = false): Record<string, number> {
  const out: Record<string, number> = {};
  const fns = readdirSync(join(node.sys, 'bus/pci/drivers/vfio-pci')).filter((x) => BDF.test(x)).map((f) => [f, join('bus/pci/devices', f)]);
  const uuids = mdevs ? readdirSync(join(node.sys, 'bus/mdev/devices')).map((u) => [u, join('bus/mdev/devices', u)]) : [];
  for (const [id, dir] of [...fns, ...uuids] as [string, string][]) {
    const c = readdirSync(join(node.sys, dir, 'vfio-dev'))[0];
    if (c) out[id] = Number(c.replace(/^vfio/, ''));
  }
  return out;
}

/** The rebooted kubelet's last list of a resource from this agent (lists of this kubelet generation only). */
const listedNow = (resourceName: string, generation: number) => node.kubelet.history.filter((e) => e.resourceName === resourceName && e.generation === generation).at(-1)?.lists.at(-1) ?? [];

test('after a reboot every VFIO cdev a saved Allocate answer names opens the function it opened before, though spare VFs and the audio function held numbers between the held ones', async () => {
  node = new NodeUnderTest();
  await node.start();
  // The GPU's slice can be listed while its audio function's bind is still on its way (a driverless
  // group member leaves the group viable); the history below needs all six on vfio-pci.
  await node.kubelet.waitFor('every function of the pools on vfio-pci', () => Object.keys(cdevsNow()).length === 6 || undefined, 30_000);
  await node.agent?.stop('SIGTERM');
  node.agent = undefined;
  const k = node.kernel.kernel;
  await node.kernel.stop();
  const onVfio = Object.keys(cdevsNow()).sort();
  expect(onVfio).toHaveLength(6); // 4 VFs, the GPU and its audio function
  const mdevs = readdirSync(join(node.sys, 'bus/mdev/devices')).map((u) => ({ uuid: u, type: readlinkSync(join(node.sys, 'bus/mdev/devices', u, 'mdev_type')).split('/').at(-1) as string, parent: readlinkSync(join(node.sys, 'bus/mdev/devices', u)).split('/').at(-2) as string }));
  expect(mdevs).toHaveLength(2); // the vGPU pool's
  for (const m of mdevs) await k.write(`bus/mdev/devices/${m.uuid}/remove`, '1');
  for (const f of onVfio) await k.write('bus/pci/drivers/vfio-pci/unbind', f);
  for (const f of [...onVfio].reverse()) await k.write('bus/pci/drivers_probe', f);
  for (const m of mdevs) await k.write(`bus/pci/devices/${m.parent}/mdev_supported_types/${m.type}/create`, m.uuid);
  const history = cdevsNow(true);
  expect(Object.keys(history).sort()).toEqual([...onVfio, ...mdevs.map((m) => m.uuid)].sort());
  expect(mdevs.map((m) => history[m.uuid])).toEqual([6, 7]); // after the functions' numbers
  node.kernel = await startKernel(node.sys, node.dev);
  const registrations = node.kubelet.history.length;
  node.agent = await node.spawnAgent();
  // The new agent's endpoints (registered after it started) list every pool Healthy.
  await node.kubelet.waitFor('the restarted agent to register every pool', () => Object.values(node.pools).every((p) => node.kubelet.history.slice(registrations).some((e) => e.resourceName === p.resourceName && (e.lists.at(-1) ?? []).some((d) => d.health === 'Healthy'))) || undefined, 30_000);
  await node.kubelet.waitFor('the agent to record every cdev number', () => JSON.stringify(Object.entries(recordedCdevs()).sort()) === JSON.stringify(Object.entries(history).sort()) || undefined, 30_000).catch(() => {
    throw new Error(`recorded ${JSON.stringify(recordedCdevs())}, kernel has ${JSON.stringify(history)}\n${node.agent?.tail() ?? ''}`);
  });
  expect(await node.startVm('net', 2)).toMatch(/^started/);
  expect(await node.startVm('gpu', 1)).toMatch(/^started/);
  const before = savedCdevs(node);
  expect(before).toHaveLength(3); // 2 VFs and the GPU (its audio function is reached through the group)
  for (const c of before) expect(c.owner).toBeDefined();

  await shutDown(node);
  await boot(node);
  const generation = node.kubelet.generation;
  const held = before.map((c) => ({ id: c.ids, resourceName: c.resourceName }));
  // Pools register once their held slices are restored, or when the restore wait is over.
  await node.kubelet.waitFor('every held slice listed again after the reboot', () => held.every((h) => h.id.every((id) => listedNow(h.resourceName, generation).some((d) => d.ID === id))) || undefined, 60_000);
  await node.kernel.idle();
  const after = savedCdevs(node);
  const was = new Map(before.map((c) => [`${c.podUID} ${c.cdev}`, c.owner]));
  expect(after.map((c) => `${c.podUID} ${c.cdev}`).sort()).toEqual([...was.keys()].sort());
  const moved = after.filter((c) => c.owner !== was.get(`${c.podUID} ${c.cdev}`)).map((c) => `${c.cdev}: was ${was.get(`${c.podUID} ${c.cdev}`)}, now ${c.owner ?? 'nothing'}`);
  console.log(`reboot-cdev: cdevs in saved answers ${after.length}, naming another function after the reboot ${moved.length}; numbers before ${JSON.stringify(history)}, after ${JSON.stringify(cdevsNow(true))}`);
  expect(moved).toEqual([]);
  expect(cdevsNow(true)).toEqual(history);
  for (const h of held) for (const id of h.id) expect(`${id}: ${listedNow(h.resourceName, generation).find((d) => d.ID === id)?.health}`).toBe(`${id}: Healthy`);
  expect(node.kernel.kernel.violations).toEqual([]);
});

test('a held slice whose cdev number was taken while the node was down is listed Unhealthy with the old and new paths, never Healthy', async () => {
  // Continues on the node above (its VMs held their slices until this reboot). While the node is
  // down a NIC is added and bound to vfio-pci first at boot: it takes vfio0.
  const before = savedCdevs(node);
  await shutDown(node, async (k) => {
    await k.addFunction(connectX6('0000:82:00.0', { netdev: 'ens2f0np0' }));
    await k.write('bus/pci/devices/0000:82:00.0/driver_override', 'vfio-pci');
    const drv = await k.driverOf('0000:82:00.0');
    if (drv) await k.write(`bus/pci/drivers/${drv}/unbind`, '0000:82:00.0');
    await k.write('bus/pci/drivers_probe', '0000:82:00.0');
  });
  expect(cdevsNow()).toEqual({ '0000:82:00.0': 0 });
  await boot(node);
  const generation = node.kubelet.generation;
  const resources = [...new Set(before.map((c) => c.resourceName))];
  // Every pool lists every held ID again (the restore wait is over by then at the latest).
  await node.kubelet.waitFor('every pool listed again', () => before.every((c) => c.ids.every((id) => listedNow(c.resourceName, generation).some((d) => d.ID === id))) || undefined, 60_000);
  await node.kernel.idle();
  const status = JSON.parse((await node.agent!.get('/status')).text) as { slices?: { id: string; health: string; reason?: string }[] };
  const after = savedCdevs(node);
  const was = new Map(before.map((c) => [`${c.podUID} ${c.cdev}`, c.owner]));
  expect(after.map((c) => `${c.podUID} ${c.cdev}`).sort()).toEqual([...was.keys()].sort());
  let movedCount = 0;
  for (const c of after) {
    if (c.owner === was.get(`${c.podUID} ${c.cdev}`)) continue;
    movedCount++;
    // The slice the cdev was handed out for (a VF, or the passthrough GPU: the function that had it):
    // never Healthy, and its reason names the old path.
    const id = was.get(`${c.podUID} ${c.cdev}`) as string;
    expect(c.ids).toContain(id);
    const listed = listedNow(c.resourceName, generation).find((d) => d.ID === id);
    const s = status.slices?.find((x) => x.id === id);
    expect(`${id}: ${listed?.health}`).toBe(`${id}: Unhealthy`);
    expect(s?.reason).toContain(c.cdev);
    expect(s?.reason).toMatch(/the kernel numbered it anew/);
  }
  console.log(`reboot-cdev: with vfio0 taken, saved cdevs naming another function ${movedCount} of ${after.length}; resources ${resources.join(', ')}`);
  expect(movedCount).toBeGreaterThan(0);
  expect(node.kernel.kernel.violations).toEqual([]);
});
