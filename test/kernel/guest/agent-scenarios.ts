// Runs INSIDE the real-kernel guest (test/kernel/agent.sh starts it): the unmodified agent
// (dist/image/agent/main.js, the bundle the image ships; standalone mode with a plan file) against Debian's kernel with
// emulated igb/NVMe SR-IOV, a VGA + audio IOMMU group and the mtty mdev sample, with the fake
// kubelet (test/fakes/kubelet.ts) as the kubelet stand-in, and a nested QEMU as KubeVirt's
// virt-launcher. Every scenario records { ok, details, ms } into $VIO_RESULTS/results.json as it
// finishes (a later failure keeps the earlier results); the host-side jest suite asserts on them.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FakeKubelet, FakePodResources } from '../../fakes/kubelet.js';
import { draNvmeScenario } from './dra-nvme-scenario.js';
import { draScenario } from './dra-scenario.js';
import { NestedVm, SYS, attr, driverOf, find, groupOf, scenarioRecord, sh, sleep, tryWrite, until, vfsOf } from './harness.js';
import { heldThroughScenario } from './held-scenario.js';
import { REBOOT, REBOOT_NEEDS_S } from './reboot-common.js';
import { beforeReboot } from './reboot-scenario.js';

const OUT = process.env.VIO_RESULTS ?? '/vio-results';
const AGENT = process.env.VIO_AGENT_MAIN ?? join(process.cwd(), 'dist/image/agent/main.js');
const MDEV_SAMPLES = process.env.VIO_KERNEL_MDEV_SAMPLES ?? '';
const RUN = '/run/vio';
const PLAN = join(RUN, 'plan.json');
const NODE = 'kernel-guest';
/**
 * The agent's --release-grace here: shorter than the 10 s of empty PodResources in the held-slices
 * scenario, so what keeps a held slice through that window is the kubelet's checkpoint and the
 * agent's ledger, not the timer (the default is 30 s).
 */
const RELEASE_GRACE = '5s';
const { results, figures, save, log, scenario } = scenarioRecord(OUT, 'scenarios');

async function status(): Promise<{ pools?: { name: string; slices?: { id: string; health: string; reason?: string }[]; conditions?: unknown[]; blocked?: unknown[] }[]; [k: string]: unknown }> {
  // A frozen agent must fail the scenario, not hang it.
  const res = await fetch('http://127.0.0.1:9101/status', { signal: AbortSignal.timeout(15_000) });
  return (await res.json()) as never;
}

async function main(): Promise<void> {
  mkdirSync(RUN, { recursive: true });
  await sh('busybox', ['ip', 'link', 'set', 'lo', 'up']);
  // A bare guest has no udev: drivers are loaded by hand. vfio-pci is left out on purpose (first scenario).
  // NVMe multipath off: each controller (the PF's and a VF's) gets its own namespace device, so a
  // read proves the VF's own controller works.
  await sh('modprobe', ['nvme_core', 'multipath=N']);
  for (const m of ['igb', 'igbvf', 'nvme', 'bochs', 'mdev', 'vfio_iommu_type1']) await sh('modprobe', [m]);
  await sh('insmod', [join(MDEV_SAMPLES, 'mtty.ko')]);
  const igb = find('8086', '10c9');
  const nvme = find('1b36', '0010');
  const vga = find('1234', '1111');
  const audio = find('8086', '293e');
  const ctrl = readdirSync(join(SYS, nvme, 'nvme'))[0] as string;
  log(`igb ${igb}, nvme ${nvme} (${ctrl}), vga ${vga} (group ${groupOf(vga)} with ${readdirSync(`/sys/kernel/iommu_groups/${groupOf(vga)}/devices`).join(' ')}), vga on ${driverOf(vga)}`);

  /** The standalone plan: pool counts, and which pools it has (default all four). */
  const planOf = (c: { nic?: number; nvme?: number; serial?: number; pools?: readonly string[] } = {}): { pools: Record<string, unknown>[] } => ({
    pools: [
      { name: 'nic', resourceName: 'virtualio.dev/nic', class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', count: c.nic ?? 4, devices: [{ pciAddress: igb }] },
      { name: 'nvme', resourceName: 'virtualio.dev/nvme', class: 'Storage', mode: 'SRIOV', consumption: 'HostDevice', count: c.nvme ?? 2, devices: [{ pciAddress: nvme }] },
      { name: 'gpu', resourceName: 'virtualio.dev/gpu', class: 'GPU', mode: 'Passthrough', consumption: 'HostDevice', devices: [{ pciAddress: vga }] },
      { name: 'serial', resourceName: 'virtualio.dev/serial', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', mdevType: 'mtty-2', count: c.serial ?? 2, devices: [{ pciAddress: 'mtty' }] },
    ].filter((p) => !c.pools || c.pools.includes(p.name)),
  });
  const plan = (nicCount: number): unknown => planOf({ nic: nicCount });
  /** Replaces the plan file by rename (the agent never reads a half-written plan). */
  const writePlan = (spec: unknown): void => {
    writeFileSync(`${PLAN}.tmp`, JSON.stringify(spec, null, 2));
    renameSync(`${PLAN}.tmp`, PLAN);
  };
  writePlan(plan(4));
  const kubelet = await FakeKubelet.start(join(RUN, 'kubelet/device-plugins'));
  // Attached: a List answered runs the kubelet's UpdateAllocatedDevices, as the real one does.
  const podres = await FakePodResources.start(join(RUN, 'kubelet/pod-resources/kubelet.sock'), { kubelet });
  /** The first VM's pod (virt-launcher) as the kubelet admitted it. */
  const VM1 = { uid: randomUUID(), name: 'virt-launcher-vm1', namespace: 'default' };
  const RES = ['virtualio.dev/nic', 'virtualio.dev/nvme', 'virtualio.dev/gpu', 'virtualio.dev/serial'];
  const healthy = (r: string): number => kubelet.capacity(r).allocatable;
  const listed = (r: string, id: string): string | undefined => kubelet.lastList(r)?.find((d) => d.ID === id)?.health;

  const agentLog = join(OUT, 'agent.log');
  const logChunks: Buffer[] = [];
  const startAgent = (): ChildProcess => {
    const p = spawn(process.execPath, [
      AGENT, '--plan-file', PLAN, '--node-name', NODE, '--plugin-dir', join(RUN, 'kubelet/device-plugins'),
      '--pod-resources-socket', podres.socket, '--devinfo-dir', join(RUN, 'devinfo'), '--cdi-dir', join(RUN, 'cdi'),
      '--state-dir', join(RUN, 'state'), '--metrics-address', '127.0.0.1:9101', '--rescan-interval', '10s',
      '--release-grace', RELEASE_GRACE,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout?.on('data', (c: Buffer) => logChunks.push(c));
    p.stderr?.on('data', (c: Buffer) => logChunks.push(c));
    return p;
  };
  const tStart = performance.now();
  let agent = startAgent();
  const flushLog = (): void => writeFileSync(agentLog, Buffer.concat(logChunks));
  let vm: NestedVm | undefined;

  try {
    await scenario('vfio-pci not loaded: clear reason', async (d) => {
      await kubelet.waitFor('all four resources registered', () => RES.every((r) => kubelet.endpoints.has(r)), 120_000);
      figures.startToRegisteredMs = Math.round(performance.now() - tStart);
      const reason = await until('a slice reason naming vfio-pci as not loaded', async () => {
        const s = JSON.stringify(await status());
        const m = /"([^"]*vfio-pci is not loaded[^"]*)"/.exec(s);
        return m?.[1];
      }, 60_000, 500);
      d.reason = reason;
      d.allocatableWithoutVfio = Object.fromEntries(RES.map((r) => [r, healthy(r)]));
      // mdevs need the vfio core only (mtty is their vfio driver): the serial pool may serve already.
      const pciPools = ['virtualio.dev/nic', 'virtualio.dev/nvme', 'virtualio.dev/gpu'];
      if (pciPools.some((r) => healthy(r) > 0)) throw new Error(`PCI slices Healthy without vfio-pci: ${JSON.stringify(d.allocatableWithoutVfio)}`);
      d.vgaDriverWithoutVfio = driverOf(vga); // not unbound from its host driver for a bind that cannot happen
    });

    const tVfio = performance.now();
    await sh('modprobe', ['vfio-pci']);
    await scenario('carve: igb 4 VFs, NVMe 2 VFs, VGA+audio group, 2 mtty mdevs, all Healthy on vfio-pci', async (d) => {
      await kubelet.waitFor('every slice Healthy', () => healthy('virtualio.dev/nic') === 4 && healthy('virtualio.dev/nvme') === 2 && healthy('virtualio.dev/gpu') === 1 && healthy('virtualio.dev/serial') === 2, 120_000);
      figures.vfioLoadedToAllHealthyMs = Math.round(performance.now() - tVfio);
      const nicVfs = vfsOf(igb);
      const nvmeVfs = vfsOf(nvme);
      d.igbVfs = nicVfs.map((v) => ({ vf: v, driver: driverOf(v), group: groupOf(v) }));
      d.nvmeVfs = nvmeVfs.map((v) => ({ vf: v, driver: driverOf(v), group: groupOf(v) }));
      d.gpuGroup = { vga: driverOf(vga), audio: driverOf(audio), group: groupOf(vga), sameGroup: groupOf(vga) === groupOf(audio) };
      d.vfioNodes = readdirSync('/dev/vfio').sort();
      d.vfioCdevDir = existsSync('/dev/vfio/devices');
      d.sysfsVfioDev = readdirSync(join(SYS, nicVfs[0] as string)).includes('vfio-dev');
      d.mdevs = readdirSync('/sys/bus/mdev/devices');
      if (nicVfs.length !== 4 || nvmeVfs.length !== 2) throw new Error(`VF counts igb ${nicVfs.length}, nvme ${nvmeVfs.length}`);
      for (const v of [...nicVfs, ...nvmeVfs, vga, audio]) if (driverOf(v) !== 'vfio-pci') throw new Error(`${v} is on ${driverOf(v)}`);
    });

    await scenario('NVMe secondary controllers Online (provisioned by the agent)', async (d) => {
      const secs = await until('both secondary controllers Online', async () => {
        const j = JSON.parse(await sh('nvme', ['list-secondary', `/dev/${ctrl}`, '-o', 'json'])) as { 'secondary-controllers': Record<string, number>[] };
        const two = j['secondary-controllers'].filter((s) => (s['virtual-function-number'] ?? 0) <= 2);
        return two.every((s) => s['secondary-controller-state'] === 1) ? two : undefined;
      }, 30_000, 500);
      d.secondaries = secs;
      const provisioned = readFileSync(agentLogPath(logChunks), 'utf8').split('\n').filter((l) => l.includes('nvme provisioning')).length;
      d.agentProvisioningLogLines = provisioned;
    });

    let nicVf = '';
    let nvmeVf = '';
    let uuid = '';
    await scenario('Allocate: KubeVirt env and /dev/vfio nodes', async (d) => {
      const nic = await kubelet.allocate('virtualio.dev/nic', [vfsOf(igb)[0] as string], VM1);
      const gpu = await kubelet.allocate('virtualio.dev/gpu', [vga], VM1);
      const ser = kubelet.lastList('virtualio.dev/serial')?.[0]?.ID as string;
      const serial = await kubelet.allocate('virtualio.dev/serial', [ser], VM1);
      const nv = await kubelet.allocate('virtualio.dev/nvme', [vfsOf(nvme)[0] as string], VM1);
      const env = { ...nic.containerResponses[0]?.envs, ...gpu.containerResponses[0]?.envs, ...serial.containerResponses[0]?.envs, ...nv.containerResponses[0]?.envs };
      d.env = env;
      nicVf = env.PCI_RESOURCE_VIRTUALIO_DEV_NIC ?? '';
      nvmeVf = env.PCI_RESOURCE_VIRTUALIO_DEV_NVME ?? '';
      uuid = env.MDEV_PCI_RESOURCE_VIRTUALIO_DEV_SERIAL ?? '';
      const nodes = [nic, gpu, serial, nv].flatMap((r) => (r.containerResponses[0]?.devices ?? []).map((x) => x.hostPath));
      d.deviceNodes = nodes;
      if (!nicVf || !nvmeVf || !uuid || env.PCI_RESOURCE_VIRTUALIO_DEV_GPU !== vga) throw new Error(`env incomplete: ${JSON.stringify(env)}`);
      const missing = nodes.filter((n) => !existsSync(n));
      if (missing.length > 0) throw new Error(`device nodes missing: ${missing.join(', ')}`);
      // What the kubelet now reports through PodResources (and has in its checkpoint): the VM pod holds these slices.
      podres.setPods(kubelet.podResources());
      d.podResources = kubelet.podResources();
    });

    await scenario('nested VM started from the env gets the VF, the NVMe VF, the GPU and the mdev', async (d) => {
      const t = performance.now();
      vm = await NestedVm.start([`vfio-pci,host=${nicVf}`, `vfio-pci,host=${nvmeVf}`, `vfio-pci,host=${vga}`, `vfio-pci,sysfsdev=/sys/bus/mdev/devices/${uuid}`]);
      figures.nestedVmStartMs = Math.round(performance.now() - t);
      const pci = await vm.command('info pci');
      d.infoPci = pci.split('\n').filter((l) => /PCI device/.test(l)).map((l) => l.trim());
      const want = { 'igb VF 8086:10ca': /PCI device 8086:10ca/, 'NVMe VF 1b36:0010': /PCI device 1b36:0010/, 'VGA 1234:1111': /PCI device 1234:1111/, 'mtty 4348:3253': /PCI device 4348:3253/ };
      const absent = Object.entries(want).filter(([, re]) => !re.test(pci)).map(([k]) => k);
      if (absent.length > 0) throw new Error(`nested VM lacks ${absent.join(', ')}: ${pci}`);
    });

    await scenario('re-carving a PF whose VF a VM holds waits and reports; the kernel says EBUSY to N→M', async (d) => {
      d.kernelNtoM = tryWrite(join(SYS, igb, 'sriov_numvfs'), '3');
      if (d.kernelNtoM !== 'EBUSY') throw new Error(`writing 3 over 4 VFs gave ${String(d.kernelNtoM)}, expected EBUSY`);
      writePlan(plan(2));
      const reason = await until('a status entry saying the re-carve waits for the held VF', async () => {
        const s = JSON.stringify(await status());
        const m = /"[^"]*re-carving [^"]*waits[^"]*"/.exec(s);
        return m?.[0];
      }, 60_000, 500);
      d.reason = reason;
      d.numVfsAfter = Number(attr(igb, 'sriov_numvfs'));
      if (d.numVfsAfter !== 4) throw new Error(`numvfs changed to ${String(d.numVfsAfter)} while a VF is held`);
      d.heldVfStillOnVfio = driverOf(nicVf) === 'vfio-pci';
      writePlan(plan(4));
      await sleep(1000);
    });

    await scenario('VF unbound behind the agent\'s back: noticed without sysfs inotify, re-bound', async (d) => {
      const victim = vfsOf(igb)[3] as string;
      await kubelet.waitFor('the victim Healthy', () => listed('virtualio.dev/nic', victim) === 'Healthy', 30_000);
      const t = performance.now();
      writeFileSync('/sys/bus/pci/drivers/vfio-pci/unbind', victim);
      await kubelet.waitFor('the unbound VF Unhealthy', () => listed('virtualio.dev/nic', victim) === 'Unhealthy', 60_000);
      figures.unbindToUnhealthyMs = Math.round(performance.now() - t);
      await kubelet.waitFor('the VF Healthy again', () => listed('virtualio.dev/nic', victim) === 'Healthy', 60_000);
      figures.unbindToHealthyAgainMs = Math.round(performance.now() - t);
      d.victim = victim;
      d.driverAfter = driverOf(victim);
    });

    await scenario('agent SIGKILLed mid-carve and restarted converges; the VM keeps its slices', async (d) => {
      // Grow the mdev pool, kill -9 the agent as soon as it logs the carving pass, start it again.
      const logged = (): number => Buffer.concat(logChunks).toString().split('\n').filter((l) => l.includes('"msg":"carving"')).length;
      const before = logged();
      const p = plan(4) as { pools: { name: string; count?: number }[] };
      for (const pool of p.pools) if (pool.name === 'serial') pool.count = 3;
      writePlan(p);
      await until('the agent to start a carving pass', () => logged() > before, 60_000, 20);
      agent.kill('SIGKILL');
      await until('the agent to die', () => agent.signalCode !== null, 10_000, 20);
      d.mdevsAtKill = readdirSync('/sys/bus/mdev/devices').length;
      const t = performance.now();
      agent = startAgent();
      await kubelet.waitFor('every slice Healthy after the restart (3 mdevs)', () => healthy('virtualio.dev/nic') === 4 && healthy('virtualio.dev/nvme') === 2 && healthy('virtualio.dev/gpu') === 1 && healthy('virtualio.dev/serial') === 3, 120_000);
      figures.restartToAllHealthyMs = Math.round(performance.now() - t);
      d.mdevsAfter = readdirSync('/sys/bus/mdev/devices').length;
      d.heldStillBound = [nicVf, nvmeVf, vga].map((a) => `${a}=${driverOf(a) ?? 'none'}`);
      if ([nicVf, nvmeVf, vga].some((a) => driverOf(a) !== 'vfio-pci')) throw new Error(`a held function left vfio-pci: ${String(d.heldStillBound)}`);
      if (!existsSync(`/sys/bus/mdev/devices/${uuid}`)) throw new Error(`the held mdev ${uuid} is gone`);
      const pci = await vm?.command('info pci');
      d.vmAlive = vm?.proc.exitCode === null && /PCI device 8086:10ca/.test(pci ?? '');
      if (!d.vmAlive) throw new Error('the nested VM lost its devices or died');
    });

    await scenario('a re-carve the kernel blocks (VF still open by a VM the kubelet forgot) leaves the PF stuck, the agent serves on', async (d) => {
      // The pod is gone for the kubelet (PodResources no longer lists it; its checkpoint entries go at
      // the kubelet's next write) but its QEMU still holds VF 0: once the release grace has passed,
      // shrinking the pool disables SR-IOV, and the kernel's VF removal waits for QEMU to let go.
      kubelet.removePod(VM1.uid);
      podres.setPods(kubelet.podResources());
      writePlan(plan(2));
      const stuck = await until('a status entry naming the stuck write', async () => /"[^"]*stuck: [^"]*"/.exec(JSON.stringify(await status()))?.[0], 90_000, 500);
      d.stuck = stuck;
      const t = performance.now();
      const probe = { uid: randomUUID(), name: 'probe', namespace: 'default' };
      const other = await kubelet.allocate('virtualio.dev/nvme', [vfsOf(nvme)[1] as string], probe);
      d.allocateWhileStuckMs = Math.round(performance.now() - t);
      d.allocateWhileStuck = other.containerResponses[0]?.envs;
      kubelet.removePod(probe.uid); // no VM started from it
      podres.setPods(kubelet.podResources());
      await vm?.quit();
      vm = undefined;
      // Not just "2 Healthy in the list" (a list from before the VM let go can show that): the PF
      // really has 2 VFs again and the list names exactly those, Healthy.
      await until('the PF back at 2 VFs, listed Healthy', () => {
        const now = vfsOf(igb);
        const list = kubelet.lastList('virtualio.dev/nic') ?? [];
        return now.length === 2 && list.length === 2 && now.every((v) => listed('virtualio.dev/nic', v) === 'Healthy');
      }, 120_000, 200);
      d.numVfsAfter = vfsOf(igb).length;
    });

    await scenario('agent memory', async (d) => {
      const st = readFileSync(`/proc/${agent.pid}/status`, 'utf8');
      const kb = (k: string): number => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(st)?.[1] ?? 0);
      figures.agentRssMiB = Math.round(kb('VmRSS') / 102.4) / 10;
      figures.agentHwmMiB = Math.round(kb('VmHWM') / 102.4) / 10;
      d.rss = figures.agentRssMiB;
    });

    // Issue 17: a second nested VM holds an igb VF, an NVMe VF and an mdev through an agent SIGKILL
    // mid-carve, a kubelet restart with empty PodResources, lowered counts and deleted pools.
    if (vm) await vm.quit();
    vm = undefined;
    await heldThroughScenario({
      node: NODE, igb, nvme, ctrl, kubelet, podres, scenario, figures, sh, until, log, status, planOf, writePlan, vfsOf, driverOf,
      startVm: (devices) => NestedVm.start(devices),
      restartAgent: async (signal, beforeStart) => {
        agent.kill(signal);
        await until('the agent to exit', () => agent.exitCode !== null || agent.signalCode !== null, 30_000, 20).catch(() => agent.kill('SIGKILL'));
        await until('the agent to be gone', () => agent.exitCode !== null || agent.signalCode !== null, 10_000, 20);
        await beforeStart?.();
        agent = startAgent();
        return agent;
      },
      agentLog: () => Buffer.concat(logChunks).toString(),
    });

    agent.kill('SIGTERM');
    await until('the agent to exit', () => agent.exitCode !== null || agent.signalCode !== null, 30_000, 100).catch(() => agent.kill('SIGKILL'));

    await scenario('an NVMe VF the agent provisioned is a working controller (namespace read through the VF)', async (d) => {
      const vf = vfsOf(nvme)[1] as string;
      writeFileSync(join(SYS, vf, 'driver_override'), 'nvme');
      if (driverOf(vf)) writeFileSync(join(SYS, vf, 'driver/unbind'), vf);
      writeFileSync('/sys/bus/pci/drivers_probe', vf);
      const vfCtrl = await until('the VF\'s nvme controller', () => (existsSync(join(SYS, vf, 'nvme')) ? readdirSync(join(SYS, vf, 'nvme'))[0] : undefined), 30_000, 200);
      const cntlid = readFileSync(`/sys/class/nvme/${vfCtrl}/cntlid`, 'utf8').trim();
      d.vf = vf;
      d.controller = vfCtrl;
      d.cntlid = cntlid;
      // A shared namespace of the subsystem may already be attached to the new controller.
      d.attach = (await sh('nvme', ['attach-ns', `/dev/${ctrl}`, '-n', '1', '-c', cntlid]).catch((e: Error) => (/Already Attached/i.test(e.message) ? 'already attached' : Promise.reject(e)))).trim();
      await sh('nvme', ['ns-rescan', `/dev/${vfCtrl}`]).catch(() => '');
      const ns = await until('a namespace block device on the VF', () => readdirSync('/dev').find((n) => n === `${vfCtrl}n1`), 30_000, 200);
      const fd = readFileSync(`/dev/${ns}`, { encoding: 'latin1', flag: 'r' }).slice(0, 40);
      d.namespaceDevice = ns;
      d.firstBytes = fd.split('\n')[0];
      if (!fd.startsWith('VIRTUALIO-NVME-NAMESPACE-MARKER')) throw new Error(`first block of /dev/${ns} is not the marker: ${JSON.stringify(fd)}`);
    });
    await scenario('sriov_drivers_autoprobe=0 holds on every probe: without driver_override a VF is not probed, bind is refused', async (d) => {
      const all = vfsOf(igb);
      if (all.length === 0) throw new Error('no igb VF left to check');
      const vf = all[all.length - 1] as string; // the agent is stopped: any VF will do
      d.vf = vf;
      d.autoprobe = attr(igb, 'sriov_drivers_autoprobe');
      if (driverOf(vf)) writeFileSync(join(SYS, vf, 'driver/unbind'), vf);
      writeFileSync(join(SYS, vf, 'driver_override'), '\n');
      d.probe = tryWrite('/sys/bus/pci/drivers_probe', vf);
      d.driverAfterProbe = driverOf(vf) ?? 'none';
      d.bind = tryWrite('/sys/bus/pci/drivers/igbvf/bind', vf);
      d.driverAfterBind = driverOf(vf) ?? 'none';
      writeFileSync(join(SYS, vf, 'driver_override'), 'igbvf');
      d.probeWithOverride = tryWrite('/sys/bus/pci/drivers_probe', vf);
      d.driverWithOverride = driverOf(vf) ?? 'none';
      if (d.driverAfterProbe !== 'none' || d.bind === 'ok' || d.driverWithOverride !== 'igbvf') throw new Error(`unexpected: ${JSON.stringify(d)}`);
    });

    // Last (it needs the standalone agent gone): the agent in cluster mode with --dra, a real
    // apiserver and scheduler on the host, the kubelet's DRA calls, a nested VM from prepare's files.
    if (process.env.VIO_KERNEL_DRA === '1') {
      await scenario('DRA: a VF claim the real scheduler allocated, prepared through the DRA gRPC API, reaches a nested VM', (d) => draScenario(d, {
        out: OUT, agentMain: AGENT, podResourcesSocket: podres.socket, sh, until, log, startVm: (devices) => NestedVm.start(devices),
      }));
      await scenario('DRA: an NVMe VF claim for 4 queues brings its secondary controller Online at that size; Offline once released', (d) => draNvmeScenario(d, {
        out: OUT, agentMain: AGENT, podResourcesSocket: podres.socket, sh, until, log, startVm: (devices) => NestedVm.start(devices),
      }));
    } else log('DRA scenario not run: the host started no kube-apiserver for this boot (VIO_KERNEL_APISERVER_PORT_FILE unset)');

    // Last of this boot (issue 21): an agent with its state on the persistent disk, a held pod, and a
    // reboot; guest-stage2.sh runs after-reboot.sh's checks on the next boot. Only when run.sh's
    // timeout leaves it room (it took 170-290 s at load averages 8-18 on 2 shared cores): past
    // that, QEMU would be killed mid-boot and every result lost, so it fails here with the reason.
    const up = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
    const room = Number(process.env.VIO_KERNEL_TIMEOUT ?? 600) - up;
    if (room >= REBOOT_NEEDS_S) await beforeReboot({ out: OUT, agentMain: AGENT, igb, nvme, vga, scenario, figures, log });
    else await scenario(REBOOT.before, () => Promise.reject(new Error(`not run: this boot is at ${up} s of uptime, run.sh's timeout leaves ${Math.round(room)} s and the reboot scenario needs ${REBOOT_NEEDS_S} s (the machine is too loaded for the stage's budget)`)));
  } finally {
    if (vm) await vm.quit();
    if (agent.exitCode === null && agent.signalCode === null) agent.kill('SIGKILL');
    flushLog();
    await kubelet.stop().catch(() => undefined);
    await podres.stop().catch(() => undefined);
    save();
  }
}

/** The agent log so far, written out (for scenarios that grep it). */
function agentLogPath(chunks: Buffer[]): string {
  const p = join(OUT, 'agent.log');
  writeFileSync(p, Buffer.concat(chunks));
  return p;
}

main().then(
  () => {
    const failed = Object.entries(results).filter(([, r]) => !r.ok).map(([n]) => n);
    log(failed.length ? `failed: ${failed.join('; ')}` : 'all scenarios ok');
    process.exit(failed.length ? 1 : 0);
  },
  (err: unknown) => {
    log(`harness error: ${err instanceof Error ? err.stack : String(err)}`);
    results.harness = { ok: false, ms: 0, details: {}, error: String(err) };
    save();
    process.exit(2);
  },
);
