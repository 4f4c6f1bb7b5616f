// Runs INSIDE the real-kernel guest on the boot after the reboot that reboot-scenario.ts asked for
// (guest-stage2.sh runs test/kernel/after-reboot.sh): the second half of the node reboot of issue 21.
// The modules are loaded as on the first boot (vfio-pci at once); what the kernel lost is recorded;
// the agent starts with the same state folder and plan, and meanwhile (a node's services come back
// together; this process's test modules load slowly under software emulation, so they load after the
// agent is spawned) the kubelet stand-in comes back with its checkpoint from the disk and
// PodResources lists the pod again after 1 s of empty answers (its sources syncing). Checked from sysfs: every held ID names what it named before the reboot, and the
// first list each resource sends is already Healthy for them; then a nested VM is started as the
// kubelet restarts a pod after a reboot: from the checkpointed Allocate answer (its env and device
// nodes, no new Allocate), and it must list the devices it listed before. Results are merged into
// results.json next to the first boot's.
import { type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { decodeContainerResponse, FakeKubelet, FakePodResources } from '../../fakes/kubelet.js';
import type { PodResources__Input } from '../../../proto/generated/podresources/v1/PodResources.js';
import { NestedVm, driverOf, find, scenarioRecord, sh, until, uptime, vfioOpen, vfsOf } from './harness.js';
import { bootId, groupDevices, identity, PLUGINS, PODRES_SOCKET, REBOOT, RESOURCES, SAVED, startAgent, stopAgent, VM_DEVICES, vfioNumbers, type Saved } from './reboot-common.js';

const OUT = process.env.VIO_RESULTS ?? '/vio-results';
const AGENT = process.env.VIO_AGENT_MAIN ?? join(process.cwd(), 'dist/image/agent/main.js');
const { results, figures, save, log, scenario } = scenarioRecord(OUT, 'after reboot', true);

async function main(): Promise<void> {
  figures.secondBootScriptAtUptimeS = uptime();
  log(`second boot: the checks start at ${figures.secondBootScriptAtUptimeS} s of uptime`);
  const saved = JSON.parse(readFileSync(SAVED, 'utf8')) as Saved;
  await sh('busybox', ['ip', 'link', 'set', 'lo', 'up']);
  await sh('modprobe', ['nvme_core', 'multipath=N']);
  for (const m of ['igb', 'igbvf', 'nvme', 'bochs', 'mdev', 'vfio_iommu_type1', 'vfio-pci']) await sh('modprobe', [m]);
  await sh('insmod', [join(process.env.VIO_KERNEL_MDEV_SAMPLES ?? '', 'mtty.ko')]);
  const igb = find('8086', '10c9');
  const nvme = find('1b36', '0010');
  const vga = find('1234', '1111');
  let kubelet: FakeKubelet | undefined;
  let podres: FakePodResources | undefined;
  let agent: ChildProcess | undefined;
  let vm: NestedVm | undefined;
  let decode: typeof decodeContainerResponse = () => undefined;
  try {
    await scenario(REBOOT.lost, async (d) => {
      d.bootIdBefore = saved.bootId;
      d.bootIdAfter = bootId();
      d.identitiesAtBoot = Object.fromEntries(saved.held.map((h) => [h.id, identity(h.id)]));
      d.kernelAtBoot = { igbVfs: vfsOf(igb).length, nvmeVfs: vfsOf(nvme).length, mdevs: readdirSync('/sys/bus/mdev/devices').length, vgaDriver: driverOf(vga) ?? '(none)' };
      d.diskKept = { kubeletCheckpoint: existsSync(join(PLUGINS, 'kubelet_internal_checkpoint')), agentState: existsSync(join(SAVED, '..', 'agent-state', 'agent-checkpoint.json')) };
      if (d.bootIdAfter === d.bootIdBefore) throw new Error('the boot ID did not change: no reboot');
      if (JSON.stringify(d.kernelAtBoot) !== JSON.stringify({ igbVfs: 0, nvmeVfs: 0, mdevs: 0, vgaDriver: 'bochs-drm' })) throw new Error(`the kernel kept state across the reboot: ${JSON.stringify(d.kernelAtBoot)}`);
      if (!Object.values(d.diskKept as Record<string, boolean>).every(Boolean)) throw new Error(`the disk lost state: ${JSON.stringify(d.diskKept)}`);
    });

    const t0 = performance.now();
    agent = startAgent(AGENT, PODRES_SOCKET, join(OUT, 'reboot-agent-after.log'));
    // The kubelet comes back: its checkpoint read from the disk (restart() reads it, and wipes the
    // plugin sockets as the kubelet does), PodResources lists the pod again after 1 s of empty
    // answers, as on the simulated node (test/support/reboot.ts).
    const fakes = await import('../../fakes/kubelet.js');
    decode = fakes.decodeContainerResponse;
    figures.rebootAgentStartToKubeletLoadedMs = Math.round(performance.now() - t0);
    kubelet = await fakes.FakeKubelet.start(PLUGINS);
    await kubelet.restart();
    podres = await fakes.FakePodResources.start(PODRES_SOCKET, { kubelet });
    podres.setPods(saved.podResources as PodResources__Input[]);
    await podres.restart({ emptyForMs: 1000 });
    const k = kubelet;
    const generation = k.generation;
    const listedNow = (r: string): { ID: string; health: string }[] => k.history.filter((e) => e.resourceName === r && e.generation === generation).at(-1)?.lists.at(-1) ?? [];
    let restored = false;
    await scenario(REBOOT.identity, async (d) => {
      const same = (): boolean => saved.held.every((h) => identity(h.id) === saved.identities[h.id]);
      await until('every held slice listed Healthy and named as before', () => saved.held.every((h) => listedNow(h.resourceName).some((x) => x.ID === h.id && x.health === 'Healthy')) && same(), 90_000, 100).catch((err: unknown) => {
        d.identitiesNow = Object.fromEntries(saved.held.map((h) => [h.id, identity(h.id)]));
        throw err;
      });
      figures.rebootAgentStartToRestoredMs = Math.round(performance.now() - t0);
      restored = true;
      d.before = saved.identities;
      d.after = Object.fromEntries(saved.held.map((h) => [h.id, identity(h.id)]));
    });
    // Every vfio-dev number, held or not (informational: an Allocate answer names the cdevs of PCI
    // functions only, and the held ones are in the identities above).
    const numbersNow = vfioNumbers();
    figures.rebootVfioNumbersMoved = Object.keys(saved.vfioNumbers).filter((x) => numbersNow[x] !== saved.vfioNumbers[x]).length;
    const idResult = results[REBOOT.identity];
    if (idResult) Object.assign(idResult.details, { vfioNumbersBefore: saved.vfioNumbers, vfioNumbersAfter: numbersNow });

    await scenario(REBOOT.firstList, async (d) => {
      const first: Record<string, string[]> = {};
      for (const r of RESOURCES) {
        const l = k.history.find((e) => e.resourceName === r && e.generation === generation)?.lists[0] ?? [];
        first[r] = l.map((x) => `${x.ID}=${x.health}`);
      }
      d.firstLists = first;
      const bad = saved.held.filter((h) => !first[h.resourceName]?.includes(`${h.id}=Healthy`)).map((h) => h.id);
      if (bad.length > 0) throw new Error(`held slices not Healthy in the first list after the reboot: ${bad.join(', ')}`);
      if (!restored) throw new Error('not restored (see the identity check)');
    });

    // The kubelet's checkpointed answers, as on the disk now.
    const cp = JSON.parse(readFileSync(join(PLUGINS, 'kubelet_internal_checkpoint'), 'utf8')) as { Data: { PodDeviceEntries: { PodUID: string; ResourceName: string; AllocResp: string }[] | null } };
    const answers = (cp.Data.PodDeviceEntries ?? []).filter((e) => e.PodUID === saved.pod.uid).map((e) => ({ resourceName: e.ResourceName, cr: decode(Buffer.from(e.AllocResp, 'base64')) }));
    const env: Record<string, string> = Object.assign({}, ...answers.map((a) => a.cr?.envs ?? {}));
    const nodes = [...new Set(answers.flatMap((a) => (a.cr?.devices ?? []).map((x) => x.hostPath)))];

    await scenario(REBOOT.nodes, async (d) => {
      d.env = env;
      d.deviceNodes = nodes;
      const groups = nodes.filter((n) => /^\/dev\/vfio\/\d+$/.test(n));
      d.groupsNow = Object.fromEntries(groups.map((n) => [n, groupDevices(basename(n))]));
      d.groupsBefore = saved.groupNodes;
      const bad: string[] = [];
      if (JSON.stringify(env) !== JSON.stringify(saved.env)) bad.push(`the checkpointed env ${JSON.stringify(env)} is not the one handed out ${JSON.stringify(saved.env)}`);
      for (const n of nodes) if (!existsSync(n)) bad.push(`${n} does not exist`);
      for (const n of groups) if (JSON.stringify(groupDevices(basename(n))) !== JSON.stringify(saved.groupNodes[n])) bad.push(`${n} holds ${groupDevices(basename(n)).join(' ') || 'nothing'}, before the reboot ${saved.groupNodes[n]?.join(' ')}`);
      for (const [k2, v] of Object.entries(env)) if (!groups.some((n) => groupDevices(basename(n)).includes(v))) bad.push(`${k2}=${v} is in none of the answer's groups`);
      if (bad.length > 0) throw new Error(bad.join('; '));
    });

    await scenario(REBOOT.vm, async (d) => {
      // What virt-launcher does with the env; the device nodes are what the runtime would mount.
      const devices = Object.entries(env).map(([name, v]) => (name.startsWith('MDEV_') ? `vfio-pci,sysfsdev=/sys/bus/mdev/devices/${v}` : `vfio-pci,host=${v}`));
      const t = performance.now();
      vm = await NestedVm.start(devices);
      figures.rebootNestedVmStartMs = Math.round(performance.now() - t);
      const pci = await vm.command('info pci');
      d.infoPci = pci.split('\n').filter((l) => /PCI device/.test(l)).map((l) => l.trim());
      d.infoPciBefore = saved.infoPci;
      d.openGroups = vfioOpen(vm.proc.pid as number);
      const want = nodes.filter((n) => /^\/dev\/vfio\/\d+$/.test(n)).map((n) => basename(n)).sort((a, b) => Number(a) - Number(b));
      d.answerGroups = want;
      const absent = Object.entries(VM_DEVICES).filter(([, re]) => !re.test(pci)).map(([x]) => x);
      if (absent.length > 0) throw new Error(`nested VM lacks ${absent.join(', ')}`);
      if (JSON.stringify(d.infoPci) !== JSON.stringify(saved.infoPci)) throw new Error(`info pci differs from before the reboot: ${JSON.stringify(d.infoPci)}`);
      if (JSON.stringify(d.openGroups) !== JSON.stringify(want)) throw new Error(`QEMU has /dev/vfio/${(d.openGroups as string[]).join(',')} open; the answer names ${want.join(',')}`);
    });
  } finally {
    if (vm) await vm.quit();
    if (agent) await stopAgent(agent);
    await kubelet?.stop().catch(() => undefined);
    await podres?.stop().catch(() => undefined);
    figures.secondBootUptimeAtEndS = uptime();
    save();
  }
}

main().then(
  () => {
    const failed = Object.values(REBOOT).filter((n) => n !== REBOOT.before && !results[n]?.ok);
    log(failed.length ? `failed: ${failed.join('; ')}` : 'all reboot checks ok');
    process.exit(failed.length ? 1 : 0);
  },
  (err: unknown) => {
    log(`harness error: ${err instanceof Error ? err.stack : String(err)}`);
    results['reboot (after): harness'] = { ok: false, ms: 0, details: {}, error: String(err) };
    save();
    process.exit(2);
  },
);
