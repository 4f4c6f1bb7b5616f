// Runs INSIDE the real-kernel guest, called by agent-scenarios.ts after the standalone scenarios that
// use the first nested VM (issue 17): a nested VM (the host's QEMU, the VMM: it keeps /dev/vfio/<N>
// open while it runs) holds an igb VF, an NVMe VF and an mtty mdev, each the highest index of its
// pool, handed out through the agent's Allocate for one pod that the fake kubelet admitted, lists in
// PodResources and keeps in its checkpoint. Then, in order, each a recorded step:
//   1. the plan wants the igb PF re-carved (count 4 → 5) and one more mdev; the agent is SIGKILLed as
//      soon as it logs the carving pass, and started again;
//   2. a kubelet restart: the kubelet stand-in restarts (reads its checkpoint back, wipes the plugin
//      sockets) and PodResources answers an empty list (the agent gets empty answers for 10 s);
//      meanwhile the plan lowers the NIC pool's count below the held VF's index and the agent restarts
//      (SIGTERM, a rolling update) so that its first PodResources answer is the empty one;
//   3. every pool's count is lowered below its held slice's index;
//   4. the three pools are deleted from the plan.
// After each step, from the kernel's side: the held functions are still bound to vfio-pci and the
// mdev exists, the PFs keep their VF count, the nested QEMU is running, still has each device's
// /dev/vfio/<group> open and lists the three in `info pci`, the NVMe VF's secondary controller is
// still Online, and the kernel logged no device request (vfio_unregister_group_dev asks the VMM to let
// go, "Relaying device request to user", only when something started to destroy a device it holds).
// A 250 ms monitor checks the sysfs side continuously between the steps too. Finally the VM quits and
// its pod goes: the agent releases what the plan no longer wants (both PFs back to 0 VFs, the mdevs
// removed), and the plan of the earlier scenarios is restored for the scenarios that follow.
//
// The nested guest boots no OS (QEMU starts paused, -S, as in the other scenarios): a kernel inside it
// would run under software emulation twice over (minutes per boot on this machine), so "the nested
// guest still has the device" is QEMU's own view (info pci, the open group nodes) plus the kernel's.
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { basename, join } from 'node:path';
import { mdevUuid } from '../../../device-plugin/src/carving/layout.js';
import type { FakeKubelet, FakePodResources } from '../../fakes/kubelet.js';
import { vfioOpen } from './harness.js';

interface Vm {
  readonly proc: ChildProcess;
  readonly transcript: string;
  command(cmd: string): Promise<string>;
  quit(): Promise<void>;
}
interface StatusDoc {
  pools?: { name: string; state?: string; message?: string }[];
  slices?: { id: string; pool: string; health: string; draining?: string; allocation?: { pod: string } }[];
  conditions?: { type: string; status: string; reason?: string; message?: string }[];
}

export interface HeldCtx {
  node: string;
  igb: string;
  nvme: string;
  /** The NVMe PF's controller (nvme0). */
  ctrl: string;
  kubelet: FakeKubelet;
  podres: FakePodResources;
  scenario: (name: string, fn: (d: Record<string, unknown>) => Promise<void>) => Promise<boolean>;
  figures: Record<string, number>;
  sh: (cmd: string, args: string[], timeoutMs?: number) => Promise<string>;
  until: <T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs: number, everyMs?: number) => Promise<T>;
  log: (msg: string) => void;
  status: () => Promise<unknown>;
  startVm: (devices: string[]) => Promise<Vm>;
  planOf: (c?: { nic?: number; nvme?: number; serial?: number; pools?: readonly string[] }) => unknown;
  writePlan: (spec: unknown) => void;
  /** Stops the agent with `signal`, runs `beforeStart`, starts it again (returns once it is spawned). */
  restartAgent: (signal: 'SIGKILL' | 'SIGTERM', beforeStart?: () => Promise<void>) => Promise<ChildProcess>;
  /** The agent's log so far (every process of it). */
  agentLog: () => string;
  vfsOf: (pf: string) => string[];
  driverOf: (bdf: string) => string | undefined;
}

/** Step names: kernel.test.ts asserts on them. */
export const HELD = {
  setup: 'held: a nested VM holds an igb VF, an NVMe VF and an mdev (highest index of each pool), Allocated for one pod',
  sigkill: 'held (1): agent SIGKILLed during a carving pass while the plan wants the igb PF re-carved; restarted; the VM keeps all three',
  kubeletRestart: 'held (2): kubelet restart, PodResources empty for 10 s, NIC count lowered below the held VF and the agent restarted inside the window; the VM keeps all three',
  countLowered: 'held (3): every pool\'s count lowered below its held slice; free slices go, the held ones drain; the VM keeps all three',
  poolsDeleted: 'held (4): the three pools deleted from the plan; their held slices drain; the VM keeps all three',
  released: 'held: once the VM quits and its pod is gone, the agent releases what the plan no longer wants (PFs to 0 VFs, mdevs removed)',
  restored: 'held: plan of the earlier scenarios restored for the scenarios that follow',
} as const;

/** What the kernel says when something started to destroy a device a VMM holds (vfio_unregister_group_dev). */
export const DEVICE_REQUEST = /Relaying device request to user|No device request channel registered|Device is currently in use|blocked until device is released/i;
const SYS = '/sys/bus/pci/devices';
const uptime = (): number => Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);

export async function heldThroughScenario(c: HeldCtx): Promise<void> {
  const { kubelet, podres, igb, nvme, until, log } = c;
  const pod = { uid: randomUUID(), name: 'virt-launcher-vm2', namespace: 'default' };
  const heldStart = uptime();
  let vm: Vm | undefined;
  let nicVf = '';
  let nvmeVf = '';
  let uuid = '';
  let groups: Record<string, string> = {};
  const violations: string[] = [];
  let monitor: NodeJS.Timeout | undefined;

  const st = async (): Promise<StatusDoc> => (await c.status()) as StatusDoc;
  const pool = (s: StatusDoc | null, name: string): { name: string; state?: string; message?: string } | undefined => s?.pools?.find((p) => p.name === name);
  const carvingPasses = (): number => c.agentLog().split('\n').filter((l) => l.includes('"msg":"carving"')).length;
  const mdevs = (): string[] => (existsSync('/sys/bus/mdev/devices') ? readdirSync('/sys/bus/mdev/devices').sort() : []);
  /** Kernel messages stamped in [from, to) s of uptime, and those of them that are device requests. */
  const dmesgSince = async (from: number, to = Infinity): Promise<{ lines: string[]; requests: string[] }> => {
    const lines = (await c.sh('dmesg', [])).split('\n').filter((l) => {
      const m = /^\[\s*(\d+\.\d+)\]/.exec(l);
      return m && Number(m[1]) >= from && Number(m[1]) < to;
    });
    return { lines, requests: lines.filter((l) => DEVICE_REQUEST.test(l) || /hot.?unplug/i.test(l)) };
  };

  /** The sysfs and process side, synchronous (the monitor runs it every 250 ms): what is wrong, or []. */
  const intactNow = (): string[] => {
    const bad: string[] = [];
    if (c.driverOf(nicVf) !== 'vfio-pci') bad.push(`igb VF ${nicVf} on ${c.driverOf(nicVf) ?? 'no driver'}`);
    if (c.driverOf(nvmeVf) !== 'vfio-pci') bad.push(`NVMe VF ${nvmeVf} on ${c.driverOf(nvmeVf) ?? 'no driver'}`);
    if (!existsSync(`/sys/bus/mdev/devices/${uuid}`)) bad.push(`mdev ${uuid} gone`);
    if (c.vfsOf(igb).length !== 4) bad.push(`igb PF has ${c.vfsOf(igb).length} VFs`);
    if (c.vfsOf(nvme).length !== 2) bad.push(`NVMe PF has ${c.vfsOf(nvme).length} VFs`);
    if (!vm || vm.proc.exitCode !== null || vm.proc.signalCode !== null) bad.push('nested QEMU not running');
    else {
      const open = vfioOpen(vm.proc.pid as number);
      for (const [what, g] of Object.entries(groups)) if (!open.includes(g)) bad.push(`QEMU no longer has /dev/vfio/${g} (${what}) open`);
    }
    return bad;
  };
  /** Everything, the nested VM's own view and the NVMe secondary controller included; throws what is wrong. */
  const checkIntact = async (d: Record<string, unknown>, since: number): Promise<void> => {
    const bad = intactNow();
    let pci = '';
    try {
      if (vm && vm.proc.exitCode === null) pci = await vm.command('info pci');
    } catch (err) {
      bad.push(`the nested QEMU's monitor did not answer: ${String(err)}`);
    }
    d.infoPci = pci.split('\n').filter((l) => /PCI device/.test(l)).map((l) => l.trim());
    const want = { 'igb VF 8086:10ca': /PCI device 8086:10ca/, 'NVMe VF 1b36:0010': /PCI device 1b36:0010/, 'mtty 4348:3253': /PCI device 4348:3253/ };
    for (const [k, re] of Object.entries(want)) if (!re.test(pci)) bad.push(`nested VM lacks ${k}`);
    d.vfioOpenByQemu = vm ? vfioOpen(vm.proc.pid as number) : [];
    d.sysfs = { [nicVf]: c.driverOf(nicVf) ?? 'none', [nvmeVf]: c.driverOf(nvmeVf) ?? 'none', [uuid]: existsSync(`/sys/bus/mdev/devices/${uuid}`) ? 'exists' : 'gone', igbVfs: c.vfsOf(igb).length, nvmeVfs: c.vfsOf(nvme).length, mdevs: mdevs().length };
    const sec: Record<string, unknown> | undefined = await secondary(c, 2).catch((err: unknown) => ({ error: String(err) }));
    d.nvmeSecondary = sec;
    if (sec?.['secondary-controller-state'] !== 1) bad.push(`the held NVMe VF's secondary controller is not Online: ${JSON.stringify(sec)}`);
    const k = await dmesgSince(since);
    d.deviceRequests = k.requests;
    d.vfioKernelLines = k.lines.filter((l) => /vfio/i.test(l)).slice(-20);
    if (k.requests.length > 0) bad.push(`the kernel asked the VMM to release a device: ${k.requests.join(' | ')}`);
    // QEMU answers the kernel's request by asking the guest to unplug the device (hw/vfio/pci.c).
    const qemuSays = (vm?.transcript ?? '').split('\n').filter((l) => /unplug|hotplug|device request/i.test(l));
    d.qemuUnplugLines = qemuSays.slice(-10);
    if (qemuSays.length > 0) bad.push(`QEMU printed: ${qemuSays.slice(0, 3).join(' | ')}`);
    d.monitorViolations = [...violations];
    if (violations.length > 0) bad.push(`the 250 ms monitor saw: ${violations.slice(0, 5).join(' | ')}`);
    if (bad.length > 0) throw new Error(bad.join('; '));
  };

  /**
   * One step: what it does and what the agent answers (`body`), then the kernel-side check, which runs
   * even when the body failed (a failure then says what the kernel saw, not only what timed out).
   */
  let lost: string | undefined;
  const step = (name: string, body: (d: Record<string, unknown>) => Promise<void>): Promise<boolean> =>
    c.scenario(name, async (d) => {
      // Once a held device is gone the later steps prove nothing (and would only wait for their timeouts).
      if (lost) throw new Error(`not run: ${lost}`);
      const since = uptime();
      let agentSide: unknown;
      try {
        await body(d);
      } catch (err) {
        agentSide = err;
      }
      let kernelSide: unknown;
      try {
        await checkIntact(d, since);
      } catch (err) {
        kernelSide = err;
      }
      const text = (e: unknown): string => (e instanceof Error ? e.message : String(e));
      if (kernelSide) lost = `an earlier step (${name.slice(0, 9)}) lost a held device`;
      if (kernelSide || agentSide) throw new Error([kernelSide ? `kernel side: ${text(kernelSide)}` : '', agentSide ? `agent side: ${text(agentSide)}` : ''].filter(Boolean).join(' || '));
    });

  // ---- setup: the second VM and its three slices ------------------------------------------------
  const ok = await c.scenario(HELD.setup, async (d) => {
    // Where the earlier scenarios left off (NIC pool at 2 VFs): back to 4 VFs, 2 NVMe VFs, 2 mdevs.
    c.writePlan(c.planOf({ nic: 4, nvme: 2, serial: 2 }));
    const healthy = (r: string): number => kubelet.capacity(r).allocatable;
    await kubelet.waitFor('nic 4, nvme 2, serial 2 Healthy', () => healthy('virtualio.dev/nic') === 4 && healthy('virtualio.dev/nvme') === 2 && healthy('virtualio.dev/serial') === 2 && c.vfsOf(igb).length === 4, 120_000);
    const wantNic = c.vfsOf(igb)[3] as string;
    const wantNvme = c.vfsOf(nvme)[1] as string;
    const wantMdev = mdevUuid(c.node, 'mtty', 'mtty-2', 1);
    if (!existsSync(`/sys/bus/mdev/devices/${wantMdev}`)) throw new Error(`mdev slot 1 ${wantMdev} does not exist (mdevs: ${mdevs().join(' ')})`);
    await until('the NVMe VF\'s secondary controller Online', async () => (await secondary(c, 2))?.['secondary-controller-state'] === 1, 30_000, 500);
    // The pod's devices (one container, three resources), through Allocate as the kubelet does at admission.
    const nic = await kubelet.allocate('virtualio.dev/nic', [wantNic], pod);
    const nv = await kubelet.allocate('virtualio.dev/nvme', [wantNvme], pod);
    const ser = await kubelet.allocate('virtualio.dev/serial', [wantMdev], pod);
    const env = { ...nic.containerResponses[0]?.envs, ...nv.containerResponses[0]?.envs, ...ser.containerResponses[0]?.envs };
    d.env = env;
    nicVf = env.PCI_RESOURCE_VIRTUALIO_DEV_NIC ?? '';
    nvmeVf = env.PCI_RESOURCE_VIRTUALIO_DEV_NVME ?? '';
    uuid = env.MDEV_PCI_RESOURCE_VIRTUALIO_DEV_SERIAL ?? '';
    if (nicVf !== wantNic || nvmeVf !== wantNvme || uuid !== wantMdev) throw new Error(`Allocate answered ${JSON.stringify(env)}; asked for ${wantNic}, ${wantNvme}, ${wantMdev}`);
    podres.setPods(kubelet.podResources());
    d.podResources = kubelet.podResources();
    const cp = JSON.parse(readFileSync(kubelet.checkpointFile, 'utf8')) as { Data: { PodDeviceEntries: { PodUID: string; ResourceName: string; DeviceIDs: unknown }[] | null } };
    d.kubeletCheckpoint = (cp.Data.PodDeviceEntries ?? []).filter((e) => e.PodUID === pod.uid).map((e) => ({ resourceName: e.ResourceName, deviceIds: e.DeviceIDs }));
    groups = { [`igb VF ${nicVf}`]: group(join(SYS, nicVf)), [`NVMe VF ${nvmeVf}`]: group(join(SYS, nvmeVf)), [`mdev ${uuid}`]: group(`/sys/bus/mdev/devices/${uuid}`) };
    d.groups = groups;
    const t = performance.now();
    vm = await c.startVm([`vfio-pci,host=${nicVf}`, `vfio-pci,host=${nvmeVf}`, `vfio-pci,sysfsdev=/sys/bus/mdev/devices/${uuid}`]);
    c.figures.heldVmStartMs = Math.round(performance.now() - t);
    // The kernel-side negative check must be able to fail: the earlier scenario whose VM the kubelet
    // forgot made the kernel ask QEMU for VF 0 ("Relaying device request to user"); it is in this
    // boot's log, and the same pattern is what the steps below must not find.
    d.positiveControl = (await dmesgSince(0, heldStart)).requests.slice(0, 3);
    await checkIntact(d, heldStart);
    monitor = setInterval(() => {
      const bad = intactNow();
      if (bad.length > 0 && violations.length < 50) violations.push(`+${(uptime() - heldStart).toFixed(1)} s: ${bad.join(', ')}`);
    }, 250);
  });
  try {
    if (!ok) return;

    // ---- (1) SIGKILL while carving, with a re-carve of the igb PF wanted -----------------------------
    await step(HELD.sigkill, async (d) => {
      const before = carvingPasses();
      c.writePlan(c.planOf({ nic: 5, nvme: 2, serial: 3 }));
      await until('the agent to start a carving pass for the new plan', () => carvingPasses() > before, 60_000, 20);
      d.killedDuring = c.agentLog().split('\n').filter((l) => l.includes('"msg":"carving"')).slice(-1)[0]?.slice(0, 600);
      const t = performance.now();
      await c.restartAgent('SIGKILL');
      d.mdevsAtKill = mdevs().length;
      // Once it knows who holds what (before that it protects every VF), the re-carve waits for the held VF only.
      const s = await until('the restarted agent to report the igb re-carve waiting for the held VF alone, with 3 mdevs', async () => {
        const doc = await st();
        const m = pool(doc, 'nic')?.message ?? '';
        return m.includes(`from 4 to 5 VFs waits: allocated VFs ${nicVf}`) && !m.includes(`${nicVf},`) && mdevs().length === 3 ? doc : undefined;
      }, 60_000, 500);
      c.figures.heldSigkillToConvergedMs = Math.round(performance.now() - t);
      d.nicPool = pool(s, 'nic');
    });

    // ---- (2) kubelet restart: PodResources empty for 10 s; count lowered; agent restarted inside ----
    await step(HELD.kubeletRestart, async (d) => {
      const emptyBefore = podres.emptyListCalls;
      // The agent goes down first (SIGTERM: a rolling update) and the kubelet restarts meanwhile, so the
      // new agent's first PodResources answer is the empty one, with a plan that wants the held VF gone.
      // The kubelet's pod sources stay unsynced until the agent has had empty answers for 10 s (the
      // agent's own start takes ~10 s here under software emulation: a fixed window from the kubelet's
      // restart would mostly pass before the agent asks).
      let t0 = 0;
      await c.restartAgent('SIGTERM', async () => {
        await kubelet.restart();
        await podres.restart({ emptyForMs: Infinity });
        t0 = performance.now();
        c.writePlan(c.planOf({ nic: 2, nvme: 2, serial: 3 }));
      });
      await until('the restarted agent to get the empty PodResources list', () => podres.emptyListCalls > emptyBefore, 45_000, 50);
      const tEmpty = performance.now();
      d.firstEmptyListAfterRestartMs = Math.round(tEmpty - t0);
      // Inside the window: the agent ran a cycle on the empty list and says the re-carve waits for the
      // held VF alone (it is not in "don't know" mode, which would protect every VF: the empty list is
      // an answer; the kubelet's checkpoint and the agent's ledger say who holds the VF).
      await new Promise((r) => setTimeout(r, 1_500));
      const inWindow = await until('the restarted agent to report the NIC re-carve waiting', async () => {
        const doc = await st();
        const m = pool(doc, 'nic')?.message ?? '';
        return m.includes(`from 4 to 2 VFs waits: allocated VFs ${nicVf}`) ? doc : undefined;
      }, 30_000, 250);
      const seenAt = performance.now() - tEmpty;
      d.waitReportedAfterFirstEmptyMs = Math.round(seenAt);
      d.nicPoolInWindow = pool(inWindow, 'nic');
      d.degradedInWindow = inWindow.conditions?.find((x) => x.type === 'Degraded')?.message?.slice(0, 600);
      d.heldSlicesInWindow = (inWindow.slices ?? []).filter((x) => [nicVf, nvmeVf, uuid].includes(x.id));
      await until('10 s of empty answers', () => performance.now() - tEmpty >= 10_000, 30_000, 50);
      podres.synced();
      d.emptyListCalls = podres.emptyListCalls - emptyBefore;
      d.emptyWindowMs = Math.round(performance.now() - t0);
      const listsAtSync = podres.listCalls;
      await until('the agent to List PodResources again after the kubelet synced', () => podres.listCalls > listsAtSync, 30_000, 50);
      await kubelet.waitFor('every pool registered with the restarted kubelet', () => ['virtualio.dev/nic', 'virtualio.dev/nvme', 'virtualio.dev/gpu', 'virtualio.dev/serial'].every((r) => kubelet.endpoints.get(r)?.connected && kubelet.endpoints.get(r)?.generation === kubelet.generation), 60_000);
      await new Promise((r) => setTimeout(r, 1_000));
      if (seenAt > 10_000) throw new Error(`the agent reported the waiting re-carve only ${Math.round(seenAt)} ms after its first empty answer: its cycle on the empty list was not seen inside the window`);
    });

    // ---- (3) every pool's count lowered below its held slice ----------------------------------------
    await step(HELD.countLowered, async (d) => {
      const extra = mdevUuid(c.node, 'mtty', 'mtty-2', 2);
      d.freeMdevBefore = existsSync(`/sys/bus/mdev/devices/${extra}`);
      c.writePlan(c.planOf({ nic: 1, nvme: 1, serial: 1 }));
      const s = await until('NIC and NVMe re-carves waiting, the held mdev draining, the free mdev slot 2 removed', async () => {
        const doc = await st();
        const nicMsg = pool(doc, 'nic')?.message ?? '';
        const nvmeMsg = pool(doc, 'nvme')?.message ?? '';
        const drained = (doc.slices ?? []).find((x) => x.id === uuid)?.draining;
        return nicMsg.includes('from 4 to 1 VFs waits') && nvmeMsg.includes('from 2 to 1 VFs waits') && drained && !existsSync(`/sys/bus/mdev/devices/${extra}`) ? doc : undefined;
      }, 45_000, 500);
      d.pools = ['nic', 'nvme', 'serial'].map((n) => pool(s, n));
      d.heldSlices = (s.slices ?? []).filter((x) => [nicVf, nvmeVf, uuid].includes(x.id));
      d.mdevsAfter = mdevs();
    });

    // ---- (4) the three pools deleted ----------------------------------------------------------------
    await step(HELD.poolsDeleted, async (d) => {
      c.writePlan(c.planOf({ pools: ['gpu'] }));
      const s = await until('nic, nvme and serial draining with their held slices', async () => {
        const doc = await st();
        const draining = ['nic', 'nvme', 'serial'].every((n) => pool(doc, n)?.state === 'Draining');
        const held = [nicVf, nvmeVf, uuid].every((id) => (doc.slices ?? []).find((x) => x.id === id)?.draining);
        return draining && held ? doc : undefined;
      }, 45_000, 500);
      d.pools = ['nic', 'nvme', 'serial'].map((n) => pool(s, n));
      d.heldSlices = (s.slices ?? []).filter((x) => [nicVf, nvmeVf, uuid].includes(x.id));
      // One more rescan period and a release grace on top: nothing is destroyed later either.
      await new Promise((r) => setTimeout(r, 6_000));
    });

    // ---- the VM quits, its pod goes: released --------------------------------------------------------
    if (monitor) clearInterval(monitor);
    monitor = undefined;
    await c.scenario(HELD.released, async (d) => {
      const whole = await dmesgSince(heldStart);
      d.deviceRequestsWhileHeld = whole.requests;
      d.monitorViolations = [...violations];
      if (whole.requests.length > 0) throw new Error(`while the VM held its devices the kernel asked it to release one: ${whole.requests.join(' | ')}`);
      const t = performance.now();
      await vm?.quit();
      vm = undefined;
      kubelet.removePod(pod.uid);
      podres.setPods(kubelet.podResources());
      const doc = await until('both PFs at 0 VFs, no mdev left, nothing draining', async () => {
        const s = await st();
        const draining = (s.slices ?? []).filter((x) => x.draining).length + (s.pools ?? []).filter((p) => p.state === 'Draining').length;
        return c.vfsOf(igb).length === 0 && c.vfsOf(nvme).length === 0 && mdevs().length === 0 && draining === 0 ? s : undefined;
      }, 60_000, 500);
      c.figures.heldQuitToReleasedMs = Math.round(performance.now() - t);
      d.after = { igbVfs: c.vfsOf(igb).length, nvmeVfs: c.vfsOf(nvme).length, mdevs: mdevs(), pools: doc.pools };
      d.releaseLog = c.agentLog().split('\n').filter((l) => /released|"msg":"carving"/.test(l)).slice(-6).map((l) => l.slice(0, 500));
    });
  } finally {
    if (monitor) clearInterval(monitor);
    if (vm) await vm.quit();
  }

  // ---- the earlier scenarios' plan again (the NVMe and autoprobe scenarios need VFs) ----------------
  await c.scenario(HELD.restored, async () => {
    c.writePlan(c.planOf({ nic: 2, nvme: 2, serial: 2 }));
    const healthy = (r: string): number => kubelet.capacity(r).allocatable;
    await kubelet.waitFor('nic 2, nvme 2, gpu 1, serial 2 Healthy', () => healthy('virtualio.dev/nic') === 2 && healthy('virtualio.dev/nvme') === 2 && healthy('virtualio.dev/gpu') === 1 && healthy('virtualio.dev/serial') === 2, 120_000);
    await until('both NVMe secondary controllers Online', async () => (await secondary(c, 1))?.['secondary-controller-state'] === 1 && (await secondary(c, 2))?.['secondary-controller-state'] === 1, 30_000, 500);
  });
  log(`held-slices scenario done (${(uptime() - heldStart).toFixed(1)} s)`);
}

function group(dev: string): string {
  return basename(readlinkSync(join(dev, 'iommu_group')));
}

/** The NVMe PF's secondary controller of VF number `vf` (1-based), as `nvme list-secondary` reports it. */
async function secondary(c: HeldCtx, vf: number): Promise<Record<string, number> | undefined> {
  const j = JSON.parse(await c.sh('nvme', ['list-secondary', `/dev/${c.ctrl}`, '-o', 'json'])) as { 'secondary-controllers': Record<string, number>[] };
  return j['secondary-controllers'].find((s) => s['virtual-function-number'] === vf);
}
