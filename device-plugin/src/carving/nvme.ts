// NVMe virtualization management: what carving NVMe VFs takes beyond sysfs. A VF of an NVMe drive
// with flexible resources is a PCI function whose secondary controller stays Offline, with no
// queues and no interrupts, until the primary controller assigns it resources and brings it Online
// (NVMe 1.4 "Virtualization Management", admin opcode 0x1C). Node has no ioctl, so the admin
// commands go through nvme-cli (`nvme`, Debian package nvme-cli, 2.x) run with execFile, its path
// configurable (VIO_NVME_CLI); its JSON output is what we read. Checked against QEMU's NVMe
// controller with SR-IOV in test/kernel.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { devPathUnder } from '../discovery/scan.js';
import type { Inventory, InventoryDevice, PoolPlan, VirtualIONodeSpec } from '../model.js';
import type { SysfsWriter } from '../sysfs/writer.js';
import { indexDevices, vfRange } from './layout.js';
import { isOnDemandNvme, planNvmeOnDemand, stepArgs, type NvmePfState, type NvmeState } from './ondemand-nvme.js';
import type { OnDemandFailure, WantedMdev } from './ondemand.js';

/** Runs nvme-cli with `args` and resolves with its stdout; rejects with its stderr on failure. */
export type NvmeCli = (args: string[]) => Promise<string>;

/** nvme-cli through execFile (no shell), with a timeout. */
export function execNvmeCli(file = 'nvme', timeoutMs = 15_000): NvmeCli {
  return (args) =>
    new Promise((resolve, reject) => {
      execFile(file, args, { timeout: timeoutMs, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
        if (err) {
          const e = err as NodeJS.ErrnoException & { killed?: boolean };
          const why = e.code === 'ENOENT' ? `${file} not found (install nvme-cli or set VIO_NVME_CLI)` : e.killed ? `timed out after ${timeoutMs} ms` : (String(stderr).trim() || e.message);
          reject(new Error(`${file} ${args.join(' ')}: ${why}`));
        } else resolve(String(stdout));
      });
    });
}

/** `nvme primary-ctrl-caps -o json` (Identify CNS 14h), the fields used. */
export interface PrimaryCaps {
  cntlid: number;
  /**
   * VQ flexible resources: total, allocated (to secondaries too: QEMU counts them here), allocated
   * to the primary, minimum per secondary, granularity; the same for VI resources.
   */
  vqfrt: number;
  vqrfa: number;
  vqrfap: number;
  vqfrsm: number;
  vqgran: number;
  vifrt: number;
  virfa: number;
  virfap: number;
  vifrsm: number;
  vigran: number;
}

/** One entry of `nvme list-secondary -o json` (Identify CNS 15h). */
export interface SecondaryCtrl {
  scid: number;
  /** Virtual function number: VF index + 1. */
  vfn: number;
  online: boolean;
  nvq: number;
  nvi: number;
}

function num(o: Record<string, unknown>, k: string): number {
  const v = o[k];
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'string' && /^(0x[0-9a-f]+|\d+)$/i.test(v)) return Number(v);
  throw new Error(`missing or malformed "${k}" in nvme-cli output`);
}

function json(text: string, what: string): Record<string, unknown> {
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    /* below */
  }
  throw new Error(`${what}: not a JSON object: ${text.slice(0, 200)}`);
}

/** Parses `nvme primary-ctrl-caps -o json`. */
export function parsePrimaryCaps(text: string): PrimaryCaps {
  const o = json(text, 'primary-ctrl-caps');
  const k = ['cntlid', 'vqfrt', 'vqrfa', 'vqrfap', 'vqfrsm', 'vqgran', 'vifrt', 'virfa', 'virfap', 'vifrsm', 'vigran'] as const;
  return Object.fromEntries(k.map((x) => [x, num(o, x)])) as unknown as PrimaryCaps;
}

/** Parses `nvme list-secondary -o json` (nvme-cli 2.x key names). */
export function parseSecondaries(text: string): SecondaryCtrl[] {
  const o = json(text, 'list-secondary');
  const list = o['secondary-controllers'];
  if (!Array.isArray(list)) throw new Error('list-secondary: no "secondary-controllers" list');
  return list.map((e: unknown) => {
    const x = e as Record<string, unknown>;
    return {
      scid: num(x, 'secondary-controller-identifier'),
      vfn: num(x, 'virtual-function-number'),
      online: num(x, 'secondary-controller-state') === 1,
      nvq: num(x, 'num-virtual-queues'),
      nvi: num(x, 'num-virtual-interrupts'),
    };
  });
}

/**
 * Resources one secondary controller gets: an equal share of the flexible pool in granules, at most
 * `max` (VQFRSM / VIFRSM: the most a secondary may be given; QEMU's hw/nvme/ctrl.c refuses an
 * assignment above it; 0: not reported). 0 when not even a granule fits.
 */
export function shareOf(total: number, vfs: number, max: number, gran: number): number {
  const g = Math.max(1, gran);
  const share = Math.floor(Math.floor(total / Math.max(1, vfs)) / g) * g;
  return max > 0 ? Math.min(max, share) : share;
}

/** Input of {@link provisionNvme}. */
export interface NvmeProvisionInput {
  spec: VirtualIONodeSpec;
  inventory: Inventory;
  devRoot: string;
  cli: NvmeCli;
  /** For the PF reset (`bus/pci/devices/<pf>/reset`) that makes a released primary's resources free. */
  writer: SysfsWriter;
  /** Slice IDs (VF addresses) held by pods: their controllers are never touched. */
  held?: ReadonlySet<string>;
  /** On-demand NVMe pools (carving/ondemand-nvme.ts): the claims, and the record kept before a controller is sized. */
  onDemand?: NvmeOnDemandInput;
}

/** What on-demand NVMe provisioning needs from the agent. */
export interface NvmeOnDemandInput {
  /** VF address → the claim allocated it (with its queue count). */
  wanted: ReadonlyMap<string, WantedMdev>;
  /** VFs the checkpoint says we sized for a claim: only those are ever set Offline. */
  ours: ReadonlySet<string>;
  /** Records (durably) that `vf` is sized for `w`; called before its first nvme-cli command. */
  record: (vf: string, w: WantedMdev) => void;
}

/** What provisioning did, and what stands in the way (per pool and PF). */
export interface NvmeProvisionResult {
  actions: { pool: string; device: string; what: string }[];
  problems: { pool: string; device: string; reason: string }[];
  /** PFs whose controller could not be reached (no device node): nothing was tried. */
  skipped?: { pool: string; device: string; reason: string }[];
  /** On-demand pools: the controllers as read after the steps (for DRA), and the claims not served. */
  nvme?: NvmeState;
  failed?: OnDemandFailure[];
}

/** Storage SR-IOV pools' PFs that are NVMe controllers, with the VF index ranges they take. */
function nvmePfs(spec: VirtualIONodeSpec, devices: Map<string, InventoryDevice>): { pool: PoolPlan; pf: InventoryDevice; ctrl: string; first: number; last: number }[] {
  const out: { pool: PoolPlan; pf: InventoryDevice; ctrl: string; first: number; last: number }[] = [];
  for (const pool of spec.pools ?? []) {
    if (pool.deleting || pool.mode !== 'SRIOV' || pool.class !== 'Storage') continue;
    for (const pd of pool.devices) {
      const pf = devices.get(pd.pciAddress);
      const ctrl = pf?.nvme?.[0]?.name;
      if (!pf || !ctrl || pf.sriov?.totalVFs === undefined) continue;
      const { first, last } = vfRange(pool, pd, pf.sriov.totalVFs);
      out.push({ pool, pf, ctrl, first, last });
    }
  }
  return out;
}

/**
 * Brings the secondary controllers of every Storage SR-IOV pool's NVMe VFs Online with an equal
 * share of the flexible resources, where the drive reports flexible resources (others need
 * nothing). Idempotent: reads the controllers' state first and changes only what differs.
 * - Before VFs exist (numVFs 0), flexible resources the primary controller still holds are
 *   released and the PF is reset, which is when a release takes effect (and which would drop VFs
 *   if there were any, so it is done only then).
 * - Once VFs exist, each VF's Offline secondary controller is assigned VQ and VI resources and set
 *   Online. Controllers of held VFs are left alone.
 * Never throws: failures are returned as problems for the pool's status.
 */
export async function provisionNvme(input: NvmeProvisionInput): Promise<NvmeProvisionResult> {
  const res: NvmeProvisionResult = { actions: [], problems: [] };
  const devices = indexDevices(input.inventory);
  for (const { pool, pf, ctrl, first, last } of nvmePfs(input.spec, devices)) {
    const dev = devPathUnder(input.devRoot, `/dev/${ctrl}`);
    const act = (what: string): void => void res.actions.push({ pool: pool.name, device: pf.pciAddress, what });
    if (!existsSync(dev)) {
      // The controller's character device is not visible to the agent (the chart mounts only
      // /dev/vfio; a simulated drive has none): admin commands cannot be sent, and a drive without
      // flexible resources needs none. Noted, not a blocker: VFs of such drives work as they are.
      (res.skipped ??= []).push({ pool: pool.name, device: pf.pciAddress, reason: `${dev} is not visible to the agent: secondary controllers not provisioned` });
      continue;
    }
    try {
      const caps = parsePrimaryCaps(await input.cli(['primary-ctrl-caps', dev, '-o', 'json']));
      if (caps.vqfrt === 0 && caps.vifrt === 0) {
        // No flexible resources: VFs work as they are, and there is no budget to hand out on demand.
        if (isOnDemandNvme(pool)) res.problems.push({ pool: pool.name, device: pf.pciAddress, reason: `NVMe controller ${ctrl} of ${pf.pciAddress} reports no flexible resources: onDemand.nvmeQueues has no queues to give` });
        continue;
      }
      const vfs = pf.sriov?.vfs ?? [];
      if ((pf.sriov?.numVFs ?? vfs.length) === 0) {
        if (caps.vqrfap > 0 || caps.virfap > 0) {
          await input.cli(['virt-mgmt', dev, '-c', String(caps.cntlid), '-r', '0', '-a', '1', '-n', '0']);
          await input.cli(['virt-mgmt', dev, '-c', String(caps.cntlid), '-r', '1', '-a', '1', '-n', '0']);
          act(`released the primary controller's flexible resources (${caps.vqrfap} VQ, ${caps.virfap} VI)`);
        }
        if (caps.vqrfap > 0 || caps.virfap > 0) {
          await input.writer.write(`bus/pci/devices/${pf.pciAddress}/reset`, '1');
          act('reset the PF so the release takes effect');
        }
        continue;
      }
      if (isOnDemandNvme(pool)) {
        await onDemandPf(input, res, pool.name, pf, dev, first, last);
        continue;
      }
      if (caps.vqrfap > 0 || caps.virfap > 0) {
        res.problems.push({
          pool: pool.name,
          device: pf.pciAddress,
          reason: `NVMe primary controller ${ctrl} of ${pf.pciAddress} holds ${caps.vqrfap} VQ and ${caps.virfap} VI flexible resources; they are released only with SR-IOV off (sriov_numvfs=0), so its secondary controllers may not get any`,
        });
      }
      const secs = parseSecondaries(await input.cli(['list-secondary', dev, '-o', 'json']));
      const total = pf.sriov?.totalVFs ?? vfs.length;
      const wantVq = shareOf(caps.vqfrt, total, caps.vqfrsm, caps.vqgran);
      const wantVi = shareOf(caps.vifrt, total, caps.vifrsm, caps.vigran);
      for (let i = first; i <= last && i < vfs.length; i++) {
        const vf = vfs[i] as string;
        const sc = secs.find((s) => s.vfn === i + 1);
        if (!sc) {
          res.problems.push({ pool: pool.name, device: pf.pciAddress, reason: `VF ${vf}: no secondary controller with virtual function number ${i + 1} on ${ctrl}` });
          continue;
        }
        if (sc.online || input.held?.has(vf)) continue;
        try {
          if (sc.nvq < wantVq) await input.cli(['virt-mgmt', dev, '-c', String(sc.scid), '-r', '0', '-a', '8', '-n', String(wantVq)]);
          if (sc.nvi < wantVi) await input.cli(['virt-mgmt', dev, '-c', String(sc.scid), '-r', '1', '-a', '8', '-n', String(wantVi)]);
          await input.cli(['virt-mgmt', dev, '-c', String(sc.scid), '-a', '9', '-n', '0']);
          act(`VF ${vf}: secondary controller ${sc.scid} Online with ${Math.max(sc.nvq, wantVq)} VQ and ${Math.max(sc.nvi, wantVi)} VI resources`);
        } catch (err) {
          res.problems.push({ pool: pool.name, device: pf.pciAddress, reason: `VF ${vf}: secondary controller ${sc.scid} stays Offline: ${err instanceof Error ? err.message : String(err)}` });
        }
      }
    } catch (err) {
      res.problems.push({ pool: pool.name, device: pf.pciAddress, reason: `NVMe provisioning of ${pf.pciAddress} (${ctrl}): ${err instanceof Error ? err.message : String(err)}` });
    }
  }
  return res;
}

/** The pool's VFs of one PF with their secondary controllers, as the drive reports them now. */
async function readPf(cli: NvmeCli, dev: string, pool: string, vfs: readonly string[], first: number, last: number): Promise<NvmePfState> {
  const caps = parsePrimaryCaps(await cli(['primary-ctrl-caps', dev, '-o', 'json']));
  const secs = parseSecondaries(await cli(['list-secondary', dev, '-o', 'json']));
  const out: NvmePfState = { pool, caps, vfs: {} };
  for (let i = first; i <= last && i < vfs.length; i++) {
    const sc = secs.find((s) => s.vfn === i + 1);
    if (sc) out.vfs[vfs[i] as string] = { ...sc, index: i };
  }
  return out;
}

/**
 * An on-demand PF: controllers stay Offline until a claim wants one; sized and set Online for the
 * claim (recorded first), set Offline once no claim wants it and nobody holds it. The state read
 * after the steps is what DRA publishes.
 */
async function onDemandPf(input: NvmeProvisionInput, res: NvmeProvisionResult, pool: string, pf: InventoryDevice, dev: string, first: number, last: number): Promise<void> {
  const vfs = pf.sriov?.vfs ?? [];
  if (vfs.length === 0) return;
  const od = input.onDemand;
  const st = await readPf(input.cli, dev, pool, vfs, first, last);
  const plan = planNvmeOnDemand(pool, st, od?.wanted ?? new Map(), od?.ours ?? new Set(), input.held ?? new Set());
  (res.failed ??= []).push(...plan.failed);
  for (const step of plan.steps) {
    if (step.kind === 'size' && step.wanted) {
      if (!od) continue;
      od.record(step.vf, step.wanted);
    }
    try {
      for (const args of stepArgs(dev, step)) await input.cli(args);
      res.actions.push({ pool, device: pf.pciAddress, what: step.why });
    } catch (err) {
      const why = `VF ${step.vf}: ${step.kind === 'size' ? `secondary controller ${step.scid} not brought Online with ${step.queues} queues` : `secondary controller ${step.scid} not set Offline`}: ${err instanceof Error ? err.message : String(err)}`;
      if (step.kind === 'size') res.failed.push({ pool, uuid: step.vf, reason: why });
      else res.problems.push({ pool, device: pf.pciAddress, reason: why });
    }
  }
  (res.nvme ??= {})[pf.pciAddress] = plan.steps.length > 0 ? await readPf(input.cli, dev, pool, vfs, first, last) : st;
}
