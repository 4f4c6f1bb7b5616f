// Runs INSIDE the real-kernel guest: the node reboot of issue 21 on Debian's kernel. The first half
// (beforeReboot, last of agent-scenarios.ts) and the second (after-reboot.ts, on the next boot).
//
// Before: the node is brought back to what a boot leaves (no VFs, no mdevs, the VGA function on its
// own driver: the earlier scenarios' history would otherwise decide the IOMMU group numbers), then a
// standalone agent whose state folder, plan and kubelet plugin folder (the kubelet's checkpoint) are
// on run.sh's persistent disk (ext4 on virtio-blk, /vio-disk) carves igb 4 VFs, NVMe 2 VFs, the VGA +
// audio group and 2 mtty mdevs; one pod gets VF 2, NVMe VF 1, the GPU and mdev slot 1 through
// Allocate, and a nested VM started from that env lists them. What each held ID names in sysfs (PF
// and VF index, mdev parent and type, driver, IOMMU group, vfio-dev number) and the nested VM's view
// are saved to the disk; the VM and the agent stop as a reboot stops them, and the guest asks
// guest-stage2.sh for a reboot (reboot(2)).
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { mdevUuid } from '../../../device-plugin/src/carving/layout.js';
import { FakeKubelet, FakePodResources } from '../../fakes/kubelet.js';
import { NestedVm, SYS, driverOf, until, vfsOf } from './harness.js';
import { bootId, DISK, groupDevices, identity, NODE, PLAN, PLUGINS, PODRES_SOCKET, REBOOT, SAVED, STATE, VM_DEVICES, plan, startAgent, stopAgent, vfioNumbers, type Saved } from './reboot-common.js';

/** The node as a boot leaves it: no VFs, no mdevs, no function on vfio-pci (the earlier scenarios' leftovers gone). */
async function asAtBoot(igb: string, nvme: string): Promise<void> {
  if (existsSync('/sys/bus/mdev/devices')) for (const m of readdirSync('/sys/bus/mdev/devices')) writeFileSync(`/sys/bus/mdev/devices/${m}/remove`, '1');
  for (const pf of [igb, nvme]) if (vfsOf(pf).length > 0) writeFileSync(join(SYS, pf, 'sriov_numvfs'), '0');
  const drv = '/sys/bus/pci/drivers/vfio-pci';
  for (const f of readdirSync(drv).filter((x) => /^[0-9a-f]{4}:/.test(x))) {
    writeFileSync(join(drv, 'unbind'), f);
    writeFileSync(join(SYS, f, 'driver_override'), '\n');
    writeFileSync('/sys/bus/pci/drivers_probe', f);
  }
  await until('no VFs and no mdevs', () => vfsOf(igb).length === 0 && vfsOf(nvme).length === 0 && readdirSync('/sys/bus/mdev/devices').length === 0, 30_000, 200);
}

export interface BeforeCtx {
  out: string;
  agentMain: string;
  igb: string;
  nvme: string;
  vga: string;
  scenario: (name: string, fn: (d: Record<string, unknown>) => Promise<void>) => Promise<boolean>;
  figures: Record<string, number>;
  log: (msg: string) => void;
}

/** The first half; asks for the reboot only when it passed. */
export async function beforeReboot(c: BeforeCtx): Promise<void> {
  const { igb, nvme, vga } = c;
  let kubelet: FakeKubelet | undefined;
  let podres: FakePodResources | undefined;
  let agent: ChildProcess | undefined;
  let vm: NestedVm | undefined;
  const ok = await c.scenario(REBOOT.before, async (d) => {
    if (!existsSync(join(DISK, 'boots')) || !readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === DISK)) throw new Error(`no persistent disk mounted at ${DISK}`);
    await asAtBoot(igb, nvme);
    d.vgaDriverAtStart = driverOf(vga) ?? '(none)';
    for (const p of [STATE, PLUGINS]) rmSync(p, { recursive: true, force: true });
    mkdirSync(PLUGINS, { recursive: true });
    writeFileSync(PLAN, JSON.stringify(plan(igb, nvme, vga), null, 2));
    kubelet = await FakeKubelet.start(PLUGINS);
    podres = await FakePodResources.start(PODRES_SOCKET, { kubelet });
    const k = kubelet;
    agent = startAgent(c.agentMain, PODRES_SOCKET, join(c.out, 'reboot-agent-before.log'));
    const healthy = (r: string): number => k.capacity(r).allocatable;
    const tAgent = performance.now();
    await k.waitFor('nic 4, nvme 2, gpu 1, serial 2 Healthy', () => healthy('virtualio.dev/nic') === 4 && healthy('virtualio.dev/nvme') === 2 && healthy('virtualio.dev/gpu') === 1 && healthy('virtualio.dev/serial') === 2, 120_000);
    c.figures.rebootFirstAgentStartToHealthyMs = Math.round(performance.now() - tAgent);
    const pod = { uid: randomUUID(), name: 'virt-launcher-vm-reboot', namespace: 'default' };
    const ask: [string, string][] = [['virtualio.dev/nic', vfsOf(igb)[2] as string], ['virtualio.dev/nvme', vfsOf(nvme)[1] as string], ['virtualio.dev/gpu', vga], ['virtualio.dev/serial', mdevUuid(NODE, 'mtty', 'mtty-2', 1)]];
    const env: Record<string, string> = {};
    const nodes = new Set<string>();
    for (const [r, id] of ask) {
      const a = await k.allocate(r, [id], pod);
      Object.assign(env, a.containerResponses[0]?.envs);
      for (const x of a.containerResponses[0]?.devices ?? []) nodes.add(x.hostPath);
    }
    d.env = env;
    const held = ask.map(([resourceName, id]) => ({ id, resourceName }));
    podres!.setPods(k.podResources());
    const want = [env.PCI_RESOURCE_VIRTUALIO_DEV_NIC, env.PCI_RESOURCE_VIRTUALIO_DEV_NVME, env.PCI_RESOURCE_VIRTUALIO_DEV_GPU, env.MDEV_PCI_RESOURCE_VIRTUALIO_DEV_SERIAL];
    if (want.join() !== ask.map(([, id]) => id).join()) throw new Error(`Allocate answered ${JSON.stringify(env)}; asked for ${ask.map(([, id]) => id).join(', ')}`);
    vm = await NestedVm.start([`vfio-pci,host=${want[0]}`, `vfio-pci,host=${want[1]}`, `vfio-pci,host=${want[2]}`, `vfio-pci,sysfsdev=/sys/bus/mdev/devices/${want[3]}`]);
    const pci = await vm.command('info pci');
    const infoPci = pci.split('\n').filter((l) => /PCI device/.test(l)).map((l) => l.trim());
    d.infoPci = infoPci;
    const absent = Object.entries(VM_DEVICES).filter(([, re]) => !re.test(pci)).map(([x]) => x);
    if (absent.length > 0) throw new Error(`nested VM lacks ${absent.join(', ')}`);
    // The agent records the vfio-dev numbers (agent/vfio-numbers.ts): wait for its record to cover
    // every function on vfio-pci now, so the reboot does not come before the write.
    const numbers = vfioNumbers();
    const recorded = (): Record<string, number> => {
      try {
        return (JSON.parse(readFileSync(join(STATE, 'agent-checkpoint.json'), 'utf8')) as { vfio?: { cdevs?: Record<string, number> } }).vfio?.cdevs ?? {};
      } catch {
        return {};
      }
    };
    const pciNumbers = Object.entries(numbers).filter(([f]) => /^[0-9a-f]{4}:/.test(f));
    d.agentRecordedVfioNumbers = await until('the agent to record the vfio-dev number of every function on vfio-pci', () => {
      const r = recorded();
      return pciNumbers.every(([f, n]) => `vfio${r[f]}` === n) ? r : undefined;
    }, 30_000, 500).catch((err: unknown) => `not recorded: ${String(err)} (recorded ${JSON.stringify(recorded())})`);
    const saved: Saved = {
      bootId: bootId(),
      pod,
      held,
      identities: Object.fromEntries(held.map((h) => [h.id, identity(h.id)])),
      vfioNumbers: numbers,
      groupNodes: Object.fromEntries([...nodes].filter((n) => /^\/dev\/vfio\/\d+$/.test(n)).map((n) => [n, groupDevices(basename(n))])),
      podResources: k.podResources(),
      infoPci,
      env,
    };
    Object.assign(d, { identities: saved.identities, vfioNumbers: saved.vfioNumbers, groupNodes: saved.groupNodes, bootId: saved.bootId, deviceNodes: [...nodes] });
    const bad = Object.entries(saved.identities).filter(([, v]) => /absent|\(none\)/.test(v));
    if (bad.length > 0) throw new Error(`held slices not all there: ${bad.map(([, v]) => v).join('; ')}`);
    // The reboot stops everything: the VM dies with the node, the agent gets SIGTERM, the kubelet goes.
    await vm.quit();
    vm = undefined;
    await stopAgent(agent);
    await kubelet.stop();
    await podres.stop();
    d.kubeletCheckpointOnDisk = existsSync(join(PLUGINS, 'kubelet_internal_checkpoint'));
    d.stateFolderOnDisk = existsSync(join(STATE, 'agent-checkpoint.json')) ? readdirSync(STATE).sort() : [];
    if (!d.kubeletCheckpointOnDisk || !existsSync(join(STATE, 'agent-checkpoint.json'))) throw new Error(`the disk lacks the kubelet checkpoint or the agent's checkpoint: ${JSON.stringify(d.stateFolderOnDisk)}`);
    writeFileSync(SAVED, JSON.stringify(saved, null, 2));
  });
  if (vm) await vm.quit();
  if (agent) await stopAgent(agent);
  await kubelet?.stop().catch(() => undefined);
  await podres?.stop().catch(() => undefined);
  if (!ok) return;
  c.figures.rebootRequestedAtUptimeS = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
  writeFileSync(join(DISK, 'reboot-requested'), join(process.cwd(), 'test/kernel/after-reboot.sh'));
  c.log('reboot requested: guest-stage2.sh reboots once the scenarios end, then runs test/kernel/after-reboot.sh');
}
