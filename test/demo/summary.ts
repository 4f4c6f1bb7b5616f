// The demo's summary: the machine-readable shape (`--json`) and its readable rendering. Pure.

import type { InventoryDevice } from '../../crds/generated/types.ts';

/** One device of `VirtualIONode.status.inventory`: the generated API type, the single source. */
export type InventoryRow = InventoryDevice;

/** What one VM received. */
export interface VmSummary {
  vm: string;
  vmiUid: string;
  pool: string;
  resource: string;
  requested: number;
  pod: string;
  phase: string;
  /** Slice IDs the pool's status reports for this VM. */
  slices: string[];
  /** Env the kubelet passed to the `compute` container (device-plugin variables only). */
  env: Record<string, string>;
  /** Host paths of the device nodes the kubelet passed. */
  devices: string[];
}

/** The whole summary; `--json` prints this object. */
export interface DemoSummary {
  ok: boolean;
  kubelet: boolean;
  node: string;
  kubeconfig: string;
  kubectl: string;
  runDir: string;
  seconds: number;
  timings: Record<string, number>;
  inventory: InventoryRow[];
  plan: { pool: string; devices: string[] }[];
  pools: {
    name: string;
    class: string;
    mode: string;
    resource: string;
    capacity: number;
    allocatable: number;
    allocated: number;
    ready: string;
    nodeState: string;
    message: string;
    allocations: { pod: string; vmi: string; slices: string[] }[];
  }[];
  slices: { id: string; pool: string; kind: string; parent: string; health: string; reason: string; vmi: string; pod: string }[];
  vms: VmSummary[];
}

const CLASS_NAMES: [RegExp, string][] = [
  [/^0302/, 'GPU (3D)'], [/^0300/, 'VGA'], [/^0200/, 'Ethernet'], [/^0207/, 'InfiniBand'], [/^0108/, 'NVMe'],
  [/^0104/, 'RAID'], [/^0c04/, 'Fibre Channel'], [/^0106/, 'SATA'], [/^0403/, 'Audio'],
];

function className(code = ''): string {
  return CLASS_NAMES.find(([re]) => re.test(code))?.[1] ?? code;
}

/** Devices worth a line: NICs, storage controllers and GPUs that are not VFs (VFs are summed on their PF). */
export function interestingDevices(inv: InventoryRow[]): InventoryRow[] {
  return inv.filter((d) => !d.physfn && /^(02|0108|0104|0c04|0302|0300)/.test(d.classCode ?? '') && !(d.classCode?.startsWith('0300') && !d.mdevTypes));
}

function table(rows: string[][], indent = '  '): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => indent + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd()).join('\n');
}

function describe(d: InventoryRow, inv: InventoryRow[]): string {
  const parts: string[] = [];
  if (d.sriov) parts.push(`SR-IOV ${d.sriov.numVFs ?? 0}/${d.sriov.totalVFs ?? 0} VFs`);
  for (const n of d.netdevs ?? []) parts.push(`${n.name} ${n.operState ?? ''}`.trim());
  for (const n of d.nvme ?? []) parts.push(`${n.name} ${n.model ?? ''}`.trim());
  for (const f of d.fcHosts ?? []) parts.push(`${f.host} WWPN ${f.wwpn ?? '?'} ${f.portState ?? ''}`.trim());
  const vfs = inv.filter((x) => x.physfn === d.pciAddress);
  const drivers = [...new Set(vfs.map((v) => v.driver ?? 'unbound'))];
  if (vfs.length > 0) parts.push(`VFs on ${drivers.join('/')}`);
  const types = new Map<string, number>();
  for (const v of vfs) for (const t of v.mdevTypes ?? []) types.set(t.id, (types.get(t.id) ?? 0) + (t.availableInstances ?? 0));
  if (types.size > 0) parts.push(`vGPU types on VFs: ${[...types].map(([k, n]) => `${k} (${n} free)`).join(', ')}`);
  const mdevs = vfs.flatMap((v) => v.mdevs ?? []).length + (d.mdevs?.length ?? 0);
  if (mdevs > 0) parts.push(`${mdevs} mdevs`);
  return parts.join('; ');
}

/** The readable summary. */
export function renderSummary(s: DemoSummary): string {
  const out: string[] = [];
  out.push('');
  out.push(`virtualio demo: node ${s.node}, ${s.kubelet ? 'real kubelet on a fake container runtime' : 'NO kubelet (not root)'}, ready in ${s.seconds} s`);
  out.push('');
  out.push(`Inventory of node ${s.node} (VirtualIONode status; ${s.inventory.length} PCI functions, NICs / storage / GPUs shown)`);
  out.push(table([
    ['PCI', 'ID', 'CLASS', 'DRIVER', 'NUMA', 'IOMMU', 'DETAILS'],
    ...interestingDevices(s.inventory).map((d) => [
      d.pciAddress, `${d.vendorID ?? '?'}:${d.deviceID ?? '?'}`, className(d.classCode), d.driver ?? '-', String(d.numaNode ?? '-'), String(d.iommuGroup ?? '-'), describe(d, s.inventory),
    ]),
  ]));
  out.push('');
  out.push('Pools (VirtualIODevice status)');
  out.push(table([
    ['POOL', 'CLASS', 'MODE', 'RESOURCE', 'CAPACITY', 'ALLOCATABLE', 'ALLOCATED', 'READY', 'CARVES'],
    ...s.pools.map((p) => [
      p.name, p.class, p.mode, p.resource, String(p.capacity), String(p.allocatable), String(p.allocated), p.ready,
      (s.plan.find((x) => x.pool === p.name)?.devices ?? []).join(' ') || '-',
    ]),
  ]));
  for (const p of s.pools.filter((x) => x.message)) out.push(`  ${p.name}: ${p.nodeState} ${p.message}`);
  out.push('');
  out.push('Slices held by VMs (VirtualIODevice status.allocations)');
  const held = s.pools.flatMap((p) => p.allocations.map((a) => [a.vmi || '-', a.pod, p.name, a.slices.join(' ')]));
  out.push(held.length > 0 ? table([['VM', 'POD', 'POOL', 'SLICES'], ...held]) : '  (none)');
  const unhealthy = s.slices.filter((x) => x.health !== 'Healthy');
  out.push(`  slices on the node: ${s.slices.length}, healthy ${s.slices.length - unhealthy.length}, held ${s.slices.filter((x) => x.pod).length}`);
  for (const u of unhealthy.slice(0, 5)) out.push(`  unhealthy: ${u.id} (${u.pool}): ${u.reason}`);
  out.push('');
  out.push('What each VM\'s virt-launcher container received from the kubelet (fake runtime records)');
  for (const v of s.vms) {
    out.push(`  ${v.vm}  pod ${v.pod || '-'} (${v.phase}), ${v.requested} × ${v.resource}`);
    const env = Object.entries(v.env);
    if (env.length === 0) out.push('    env: (none)');
    for (const [k, val] of env) out.push(`    env ${k}=${val}`);
    if (v.devices.length > 0) out.push(`    devices ${v.devices.join(' ')}`);
  }
  out.push('');
  out.push(s.ok ? 'OK: every VM holds its slices and got KubeVirt\'s env.' : 'NOT OK: see above (some VM lacks slices or env).');
  return out.join('\n');
}
