// A node reboot for the reboot suites (test/integration/reboot-*.test.ts) on the simulated node of
// test/model/node.ts: what goes down and in which order, what comes back, and what the kubelet's
// checkpoint names (its saved Allocate answers, which a rebooted kubelet re-uses without asking).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeContainerResponse, KUBELET_CHECKPOINT, type FakeKubelet } from '../fakes/kubelet.js';
import type { NodeUnderTest } from '../model/node.js';
import { startKernel } from '../sysfs/kernel-daemon.js';
import type { FakeKernel } from '../sysfs/kernel.js';
import { rebootKernel, type RebootReport } from '../sysfs/reboot.js';

/** The PCI function whose vfio-dev folder is the cdev `name` (vfioN), if any. */
export function cdevOwner(sys: string, name: string): string | undefined {
  return readdirSync(join(sys, 'bus/pci/devices')).find((f) => existsSync(join(sys, 'bus/pci/devices', f, 'vfio-dev', name)));
}

/** The kubelet's checkpoint as on disk: pod → resource → device IDs and the saved Allocate answer. */
export function checkpointEntries(kubelet: FakeKubelet): { podUID: string; resourceName: string; ids: string[]; allocResp: string }[] {
  const doc = JSON.parse(readFileSync(join(kubelet.pluginDir, KUBELET_CHECKPOINT), 'utf8')) as { Data: { PodDeviceEntries: { PodUID: string; ResourceName: string; DeviceIDs: Record<string, string[]>; AllocResp: string }[] } };
  return doc.Data.PodDeviceEntries.map((e) => ({ podUID: e.PodUID, resourceName: e.ResourceName, ids: Object.values(e.DeviceIDs).flat().sort(), allocResp: e.AllocResp }));
}

/** The VFIO cdev nodes the kubelet's saved answers name, with the function each named when read. */
export function savedCdevs(node: NodeUnderTest): { podUID: string; resourceName: string; ids: string[]; cdev: string; owner: string | undefined }[] {
  const out: { podUID: string; resourceName: string; ids: string[]; cdev: string; owner: string | undefined }[] = [];
  for (const e of checkpointEntries(node.kubelet)) {
    const cr = decodeContainerResponse(Buffer.from(e.allocResp, 'base64'));
    for (const d of cr?.devices ?? []) {
      const m = /^\/dev\/vfio\/devices\/(vfio\d+)$/.exec(d.hostPath ?? '');
      if (!m) continue;
      const name = m[1] as string;
      out.push({ podUID: e.podUID, resourceName: e.resourceName, ids: e.ids, cdev: d.hostPath as string, owner: existsSync(join(node.dev, 'vfio/devices', name)) ? cdevOwner(node.sys, name) : undefined });
    }
  }
  return out;
}

/** Everything stops as a reboot stops it; the kernel's runtime state is lost (reboot.ts); disks stay. */
export async function shutDown(node: NodeUnderTest, beforeBoot?: (k: FakeKernel) => Promise<void>): Promise<RebootReport> {
  await node.agent?.stop('SIGTERM');
  node.agent = undefined;
  await node.kubelet.stop();
  const k = node.kernel.kernel;
  await node.kernel.stop();
  const lost = await rebootKernel(k);
  node.vms.clear(); // the VMs died with the node
  await beforeBoot?.(k);
  return lost;
}

/** Boot: the kernel, the kubelet with its checkpoint, PodResources (empty for its first second), the agent. */
export async function boot(node: NodeUnderTest): Promise<void> {
  node.kernel = await startKernel(node.sys, node.dev);
  await node.kubelet.restart();
  await node.podres.restart({ emptyForMs: 1000 });
  node.agent = await node.spawnAgent();
}
