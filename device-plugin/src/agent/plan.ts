// The plan (VirtualIONode.spec): what a plan source offers, and the validation both modes share. The
// standalone source that reads it from a file is plan-file.ts.
import type { PoolPlan, VirtualIONodeSpec } from '../model.js';

/** The plan as last read: absent, valid, or invalid (with the last valid one kept by the caller). */
export type PlanState =
  | { kind: 'none'; message: string }
  | { kind: 'ok'; spec: VirtualIONodeSpec; generation?: number }
  | { kind: 'error'; message: string };

/** A source of plans; `onChange` is called whenever `current()` may have changed. */
export interface PlanSource {
  current(): PlanState;
  run(signal: AbortSignal, onChange: () => void): Promise<void>;
}

const NAME_RE = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
const PCI_RE = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/;
const MDEV_PARENT_RE = /^[A-Za-z][-A-Za-z0-9_.]{0,63}$/;
const CLASSES = ['NIC', 'Storage', 'GPU'];
const MODES = ['SRIOV', 'Mediated', 'Passthrough', 'NPIV'];
const CONSUMPTIONS = ['HostDevice', 'MediatedDevice', 'SRIOVNetwork'];
const POLICIES = ['NUMAAligned', 'Pack', 'Spread'];

/** A plain object (not null, not an array). */
export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Validates a plan object: either a `VirtualIONode.spec` (`{pools: [...]}`) or a whole
 * `VirtualIONode` (its `spec` is used). Returns every problem found, naming the pool and field.
 */
export function validatePlan(doc: unknown): { ok: true; spec: VirtualIONodeSpec } | { ok: false; message: string } {
  if (doc === null || doc === undefined) return { ok: true, spec: { pools: [] } };
  if (!isObject(doc)) return { ok: false, message: 'plan must be an object with a "pools" list' };
  const spec = doc.kind === 'VirtualIONode' || 'spec' in doc ? doc.spec : doc;
  if (spec === undefined || spec === null) return { ok: true, spec: { pools: [] } };
  if (!isObject(spec)) return { ok: false, message: 'spec must be an object' };
  const pools = spec.pools ?? [];
  if (!Array.isArray(pools)) return { ok: false, message: 'pools must be a list' };
  const problems: string[] = [];
  const names = new Set<string>();
  const resources = new Set<string>();
  const devices = new Map<string, { name: string; vgpu: boolean }>();
  pools.forEach((p: unknown, i) => {
    const where = `pools[${i}]`;
    if (!isObject(p)) {
      problems.push(`${where}: must be an object`);
      return;
    }
    const at = typeof p.name === 'string' ? `pool ${p.name}` : where;
    if (typeof p.name !== 'string' || !NAME_RE.test(p.name) || p.name.length > 63) problems.push(`${where}.name: must be a lower-case DNS label-like name, got ${JSON.stringify(p.name)}`);
    else if (names.has(p.name)) problems.push(`${at}: duplicate pool name`);
    else names.add(p.name);
    if (typeof p.resourceName !== 'string' || !/^[a-z0-9.-]+\/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/.test(p.resourceName)) {
      problems.push(`${at}.resourceName: must look like "domain/name", got ${JSON.stringify(p.resourceName)}`);
    } else if (resources.has(p.resourceName)) problems.push(`${at}.resourceName: ${p.resourceName} is used by two pools`);
    else resources.add(p.resourceName);
    if (!CLASSES.includes(p.class as string)) problems.push(`${at}.class: one of ${CLASSES.join(', ')}, got ${JSON.stringify(p.class)}`);
    if (!MODES.includes(p.mode as string)) problems.push(`${at}.mode: one of ${MODES.join(', ')}, got ${JSON.stringify(p.mode)}`);
    if (!CONSUMPTIONS.includes(p.consumption as string)) problems.push(`${at}.consumption: one of ${CONSUMPTIONS.join(', ')}, got ${JSON.stringify(p.consumption)}`);
    if (p.policy !== undefined && !POLICIES.includes(p.policy as string)) problems.push(`${at}.policy: one of ${POLICIES.join(', ')}, got ${JSON.stringify(p.policy)}`);
    if (p.frontEnd !== undefined && p.frontEnd !== 'DevicePlugin' && p.frontEnd !== 'DRA') problems.push(`${at}.frontEnd: DevicePlugin or DRA, got ${JSON.stringify(p.frontEnd)}`);
    else if (p.frontEnd === 'DRA' && p.mode === 'NPIV') problems.push(`${at}.frontEnd: NPIV pools cannot use DRA (KubeVirt has no NPIV path for DRA devices)`);
    if (p.count !== undefined && (!Number.isInteger(p.count) || (p.count as number) < 0)) problems.push(`${at}.count: a non-negative integer, got ${JSON.stringify(p.count)}`);
    const od = p.onDemand;
    if (od !== undefined) {
      const names = (x: unknown): boolean => Array.isArray(x) && x.length > 0 && x.every((t) => typeof t === 'string' && t.length > 0);
      if (isObject(od) && od.nvmeQueues !== undefined && od.mdevTypes === undefined && od.vgpuProfiles === undefined) {
        const qs = od.nvmeQueues;
        if (!Array.isArray(qs) || qs.length === 0 || !qs.every((q) => Number.isInteger(q) && (q as number) >= 2)) problems.push(`${at}.onDemand.nvmeQueues: a non-empty list of queue counts (integers, at least 2)`);
        else if (p.mode !== 'SRIOV' || p.frontEnd !== 'DRA') problems.push(`${at}.onDemand.nvmeQueues: needs mode SRIOV and frontEnd DRA`);
      } else if (isObject(od) && od.vgpuProfiles !== undefined && od.mdevTypes === undefined) {
        if (!names(od.vgpuProfiles)) problems.push(`${at}.onDemand.vgpuProfiles: a non-empty list of vGPU profile names or type ids`);
        else if (p.mode !== 'SRIOV' || p.frontEnd !== 'DRA') problems.push(`${at}.onDemand.vgpuProfiles: needs mode SRIOV and frontEnd DRA`);
        else if (p.vgpuProfile !== undefined) problems.push(`${at}.onDemand.vgpuProfiles: not with vgpuProfile (the claim picks the profile)`);
      } else if (!isObject(od) || !names(od.mdevTypes) || od.vgpuProfiles !== undefined) {
        problems.push(`${at}.onDemand.mdevTypes: a non-empty list of mdev type names (or vgpuProfiles instead, not both)`);
      } else if (p.mode !== 'Mediated' || p.frontEnd !== 'DRA') problems.push(`${at}.onDemand: needs mode Mediated and frontEnd DRA`);
    }
    if (p.mode === 'Mediated' && typeof p.mdevType !== 'string' && od === undefined) problems.push(`${at}.mdevType: required for mode Mediated (or onDemand)`);
    if (!Array.isArray(p.devices)) problems.push(`${at}.devices: must be a list`);
    else
      p.devices.forEach((d: unknown, j) => {
        // Mediated pools may also name an mdev parent that is not a PCI function by its
        // /sys/class/mdev_bus entry (e.g. mtty, or s390's vfio_ap "matrix").
        const mdevParent = p.mode === 'Mediated' && isObject(d) && typeof d.pciAddress === 'string' && MDEV_PARENT_RE.test(d.pciAddress);
        if (!isObject(d) || typeof d.pciAddress !== 'string' || (!PCI_RE.test(d.pciAddress) && !mdevParent)) {
          problems.push(`${at}.devices[${j}].pciAddress: must be dddd:bb:dd.f${p.mode === 'Mediated' ? ' or an mdev parent named in /sys/class/mdev_bus' : ''}, got ${JSON.stringify(isObject(d) ? d.pciAddress : d)}`);
          return;
        }
        const other = devices.get(d.pciAddress);
        // Two SR-IOV pools may split one PF by VF range, and NVIDIA vGPU pools share a GPU (the
        // agent lays out their VFs); anything else must not share a device.
        const ranged = d.vfFirst !== undefined || d.vfLast !== undefined;
        const vgpu = p.mode === 'SRIOV' && typeof p.vgpuProfile === 'string';
        if (other !== undefined && !ranged && !(vgpu && other.vgpu)) problems.push(`${at}.devices[${j}]: ${d.pciAddress} is also in pool ${other.name}`);
        devices.set(d.pciAddress, { name: typeof p.name === 'string' ? p.name : JSON.stringify(p.name), vgpu }); // String() throws on {toString: 1}
      });
  });
  if (problems.length) return { ok: false, message: problems.join('; ') };
  return { ok: true, spec: { pools: pools as PoolPlan[] } };
}
