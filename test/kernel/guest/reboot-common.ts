// The node reboot of issue 21 on the real-kernel guest: what both halves share (reboot-scenario.ts
// before the reboot, after-reboot.ts on the next boot) and kernel.test.ts's scenario names. Light on
// purpose (node builtins only): after the reboot the agent is started before the heavy test modules
// load, as a node's services come back together.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, realpathSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { SYS, until } from './harness.js';

export const REBOOT = {
  before: 'reboot (before): an agent with its state folder on a disk carves the pools; one pod holds an igb VF, an NVMe VF, the GPU and an mdev; a nested VM lists them; the guest reboots',
  lost: 'reboot (after): the kernel lost its runtime state (new boot ID, no VFs, no mdevs, the GPU on its own driver); the disk kept the state folder and the kubelet checkpoint',
  identity: 'reboot (after): the agent restores every held slice with the identity it had (PF + VF index, mdev UUID/parent/type, driver, IOMMU group, a function\'s vfio-dev number)',
  firstList: 'reboot (after): the first ListAndWatch list of every resource already has the held slices Healthy',
  nodes: 'reboot (after): every /dev/vfio/<group> of the kubelet\'s checkpointed Allocate answers exists and holds the function it held before',
  vm: 'reboot (after): a nested VM restarted from the checkpointed Allocate answer (old env, old device nodes) gets the same devices',
} as const;

/** Guest seconds the reboot scenario is given at most (both halves, the reboot and the second boot). */
export const REBOOT_NEEDS_S = 240;
export const NODE = 'kernel-guest';
export const DISK = process.env.VIO_DISK ?? '/vio-disk';
export const PLAN = join(DISK, 'plan.json');
export const PLUGINS = join(DISK, 'kubelet/device-plugins');
export const SAVED = join(DISK, 'before-reboot.json');
export const STATE = join(DISK, 'agent-state');
const RUN = '/run/vio-reboot';
/** What the nested VM must list: vendor:device of the igb VF, the NVMe VF, the VGA, the mtty mdev. */
export const VM_DEVICES = { 'igb VF 8086:10ca': /PCI device 8086:10ca/, 'NVMe VF 1b36:0010': /PCI device 1b36:0010/, 'VGA 1234:1111': /PCI device 1234:1111/, 'mtty 4348:3253': /PCI device 4348:3253/ };
export const RESOURCES = ['virtualio.dev/nic', 'virtualio.dev/nvme', 'virtualio.dev/gpu', 'virtualio.dev/serial'];

/** What both halves save and compare. */
export interface Saved {
  bootId: string;
  pod: { uid: string; name: string; namespace: string };
  held: { id: string; resourceName: string }[];
  identities: Record<string, string>;
  /** vfio-dev numbers (vfioN) of every function on vfio-pci and every mdev, by device. */
  vfioNumbers: Record<string, string>;
  /** The Allocate answers' group nodes, with the devices in each group then. */
  groupNodes: Record<string, string[]>;
  podResources: unknown;
  infoPci: string[];
  env: Record<string, string>;
}

const link = (p: string): string | undefined => {
  try {
    return basename(readlinkSync(p));
  } catch {
    return undefined;
  }
};
const vfioDev = (dir: string): string => (existsSync(join(dir, 'vfio-dev')) ? readdirSync(join(dir, 'vfio-dev')).join(',') || '(none)' : '(none)');

/** What a device ID names in the kernel's sysfs now. */
export function identity(id: string): string {
  if (/^[0-9a-f]{8}-/.test(id)) {
    const dir = `/sys/bus/mdev/devices/${id}`;
    if (!existsSync(dir)) return `mdev ${id}: absent`;
    // No vfio-dev number: the agent hands an mdev out by its group node only (see vfioNumbers).
    return `mdev ${id}: parent ${basename(dirname(realpathSync(dir)))}, type ${link(join(dir, 'mdev_type'))}, driver ${link(join(dir, 'driver')) ?? '(none)'}, group ${link(join(dir, 'iommu_group'))}`;
  }
  const dir = join(SYS, id);
  if (!existsSync(dir)) return `PCI ${id}: absent`;
  const pf = link(join(dir, 'physfn'));
  const index = pf ? readdirSync(join(SYS, pf)).find((n) => /^virtfn\d+$/.test(n) && link(join(SYS, pf, n)) === id) : undefined;
  return `PCI ${id}: ${pf ? `${index} of ${pf}` : 'function'}, driver ${link(join(dir, 'driver')) ?? '(none)'}, group ${link(join(dir, 'iommu_group'))}, ${vfioDev(dir)}`;
}

/**
 * vfio-dev numbers of every function on vfio-pci and every mdev. On this kernel an mdev takes its
 * number from the same IDA as a PCI function's bind (mtty registers a vfio device at creation); the
 * simulated kernel (test/sysfs/kernel-iommu.ts) numbers PCI functions only.
 */
export function vfioNumbers(): Record<string, string> {
  const out: Record<string, string> = {};
  const drv = '/sys/bus/pci/drivers/vfio-pci';
  if (existsSync(drv)) for (const f of readdirSync(drv).filter((x) => /^[0-9a-f]{4}:/.test(x))) out[f] = vfioDev(join(SYS, f));
  if (existsSync('/sys/bus/mdev/devices')) for (const m of readdirSync('/sys/bus/mdev/devices')) out[m] = vfioDev(`/sys/bus/mdev/devices/${m}`);
  return out;
}

/** The devices in IOMMU group `n` now. */
export const groupDevices = (n: string): string[] => (existsSync(`/sys/kernel/iommu_groups/${n}/devices`) ? readdirSync(`/sys/kernel/iommu_groups/${n}/devices`).sort() : []);
export const bootId = (): string => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();

/** The standalone plan of these pools on the guest's devices. */
export function plan(igb: string, nvme: string, vga: string): unknown {
  return {
    pools: [
      { name: 'nic', resourceName: 'virtualio.dev/nic', class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', count: 4, devices: [{ pciAddress: igb }] },
      { name: 'nvme', resourceName: 'virtualio.dev/nvme', class: 'Storage', mode: 'SRIOV', consumption: 'HostDevice', count: 2, devices: [{ pciAddress: nvme }] },
      { name: 'gpu', resourceName: 'virtualio.dev/gpu', class: 'GPU', mode: 'Passthrough', consumption: 'HostDevice', devices: [{ pciAddress: vga }] },
      { name: 'serial', resourceName: 'virtualio.dev/serial', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', mdevType: 'mtty-2', count: 2, devices: [{ pciAddress: 'mtty' }] },
    ],
  };
}

/** The agent with everything it keeps on the disk; its output goes to `logFile`. */
export function startAgent(agentMain: string, podresSocket: string, logFile: string): ChildProcess {
  mkdirSync(RUN, { recursive: true });
  const p = spawn(process.execPath, [
    agentMain, '--plan-file', PLAN, '--node-name', NODE, '--plugin-dir', PLUGINS, '--pod-resources-socket', podresSocket,
    '--devinfo-dir', join(RUN, 'devinfo'), '--cdi-dir', join(RUN, 'cdi'), '--state-dir', STATE,
    '--metrics-address', '127.0.0.1:9104', '--rescan-interval', '10s', '--release-grace', '5s',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  const chunks: Buffer[] = [];
  const flush = (c: Buffer): void => {
    chunks.push(c);
    writeFileSync(logFile, Buffer.concat(chunks));
  };
  p.stdout?.on('data', flush);
  p.stderr?.on('data', flush);
  return p;
}
export const PODRES_SOCKET = join(RUN, 'pod-resources/kubelet.sock');

export async function stopAgent(agent: ChildProcess): Promise<void> {
  if (agent.exitCode !== null || agent.signalCode !== null) return;
  agent.kill('SIGTERM');
  await until('the agent to exit', () => agent.exitCode !== null || agent.signalCode !== null, 30_000, 100).catch(() => agent.kill('SIGKILL'));
}
