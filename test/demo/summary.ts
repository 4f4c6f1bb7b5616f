// The demo's summary: the machine-readable shape (`--json`) and its readable rendering. Pure.

import type { InventoryDevice } from '../../crds/generated/types.ts';
import type { OnDemandSummary } from './ondemand.ts';

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

/** One thing the demo verified (or could not): `ok` is true only when it was checked and held. */
export interface DemoCheck {
  name: string;
  ok: boolean;
  detail: string;
}

/** The whole summary; `--json` prints this object. */
export interface DemoSummary {
  /** Every check ran and held ({@link verifyDemo}); the demo exits non-zero otherwise. */
  ok: boolean;
  /** What was verified, each with its evidence or why it failed or could not be checked. */
  checks: DemoCheck[];
  kubelet: boolean;
  node: string;
  kubeconfig: string;
  kubectl: string;
  runDir: string;
  /** Where to look: the two programs' metrics endpoints and a Prometheus configuration scraping both. */
  metrics: { agent: string; operator: string; agentStatus: string; prometheusConfig: string };
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
  /** The on-demand step (root only): a VM's claim carved its vGPU, deleting the VM removed it. */
  ondemand?: OnDemandSummary;
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

/** KubeVirt's env variable for a resource: `PCI_RESOURCE_` / `MDEV_PCI_RESOURCE_` + the name upper-cased, `.` and `/` as `_`. */
export function kubevirtEnvName(resource: string, mdev: boolean): string {
  return `${mdev ? 'MDEV_PCI_RESOURCE_' : 'PCI_RESOURCE_'}${resource.toUpperCase().replace(/[./]/g, '_')}`;
}

const VFIO_GROUP_NODE = /^\/dev\/vfio\/\d+$/;

/**
 * What the demo can claim, checked from its own summary: the node reported an inventory, every
 * pool is planned with capacity for its VMs and every slice is Healthy; and, only with a real
 * kubelet, every VM's pod runs holding exactly the slices it asked for, its container got KubeVirt's
 * env for exactly those slices with their VFIO nodes, the node's status names the VM on each of
 * them, and no slice is held twice. Without a kubelet the VM checks fail as "not verified": the demo
 * never reports success for what it did not see.
 */
export function verifyDemo(s: Omit<DemoSummary, 'ok' | 'checks'>, mdevPools: ReadonlySet<string>): DemoCheck[] {
  const checks: DemoCheck[] = [];
  const add = (name: string, problems: string[], good: string) => checks.push({ name, ok: problems.length === 0, detail: problems.length ? problems.join('; ') : good });
  add('inventory', s.inventory.length > 0 ? [] : ['the node reported no inventory'], `${s.inventory.length} PCI functions reported`);
  const wanted = new Map<string, number>();
  for (const v of s.vms) wanted.set(v.pool, (wanted.get(v.pool) ?? 0) + v.requested);
  add('plan', [...wanted.keys()].filter((p) => !(s.plan.find((x) => x.pool === p)?.devices.length)).map((p) => `pool ${p} is not planned on the node`), `${wanted.size} pools planned`);
  add('capacity', [...wanted].flatMap(([p, n]) => {
    const cap = s.pools.find((x) => x.name === p)?.capacity ?? 0;
    return cap >= n ? [] : [`pool ${p}: capacity ${cap}, its VMs need ${n}`];
  }), 'every pool has capacity for its VMs');
  const bad = s.slices.filter((x) => x.health !== 'Healthy');
  add('health', s.slices.length === 0 ? ['the node reports no slices'] : bad.map((x) => `${x.id} (${x.pool}) ${x.health}${x.reason ? `: ${x.reason}` : ''}`), `${s.slices.length} slices Healthy`);
  if (!s.kubelet) {
    const why = 'not verified: no kubelet ran (it needs root), so no VM pod could start; run as root (sudo make demo)';
    checks.push({ name: 'kubelet', ok: false, detail: why });
    checks.push({ name: 'vms', ok: false, detail: why });
    checks.push({ name: 'ondemand', ok: false, detail: why });
    return checks;
  }
  checks.push({ name: 'kubelet', ok: true, detail: 'a real kubelet ran the VM pods' });
  const vmProblems: string[] = [];
  for (const v of s.vms) {
    const p: string[] = [];
    if (v.phase !== 'Running') p.push(`pod ${v.pod || '(none)'} is ${v.phase}`);
    if (v.slices.length !== v.requested) p.push(`holds ${v.slices.length} of ${v.requested} slices`);
    const key = kubevirtEnvName(v.resource, mdevPools.has(v.pool));
    const envSlices = (v.env[key] ?? '').split(',').filter(Boolean).sort();
    if (Object.keys(v.env).join() !== key) p.push(`env ${JSON.stringify(Object.keys(v.env))}, want exactly ${key}`);
    else if (envSlices.join() !== [...v.slices].sort().join() || envSlices.length === 0) p.push(`env ${key}=${v.env[key] ?? ''} does not match its slices ${v.slices.join(',')}`);
    if (v.devices[0] !== '/dev/vfio/vfio') p.push('no /dev/vfio/vfio');
    const groups = v.devices.filter((d) => VFIO_GROUP_NODE.test(d)).length;
    if (groups !== v.requested) p.push(`${groups} /dev/vfio/<group> nodes for ${v.requested} slices`);
    for (const id of v.slices) {
      const sl = s.slices.find((x) => x.id === id);
      if (!sl || sl.pool !== v.pool || sl.vmi !== v.vm || sl.pod !== v.pod) p.push(`node status does not name ${v.vm} on ${id}`);
    }
    if (p.length) vmProblems.push(`${v.vm}: ${p.join(', ')}`);
  }
  if (s.vms.length === 0) vmProblems.push('no VM');
  const held = s.vms.flatMap((v) => v.slices);
  if (new Set(held).size !== held.length) vmProblems.push('a slice is held by two VMs');
  add('vms', vmProblems, `${s.vms.length} VMs hold ${held.length} slices, each with KubeVirt's env and VFIO nodes; the node status names each VM`);
  const od = s.ondemand;
  add('ondemand', onDemandProblems(od), od ? `${od.vm}'s claim got a ${od.mdevType} the kernel created on ${od.whileRunning?.parent ?? '?'} (${od.uuid}, Running after ${od.secondsToRunning} s); deleting the VM removed it (${od.secondsToRemoval} s)` : '');
  return checks;
}

/**
 * The on-demand step's problems, from the kernel's tree as the step read it: while the VM ran, the
 * mdev of its claim existed, laid out as Linux lays it out, of the type asked for; after the VM was
 * deleted it was gone.
 */
export function onDemandProblems(s: OnDemandSummary | undefined): string[] {
  if (!s) return ['the on-demand step did not run'];
  const p: string[] = [];
  if (s.error) p.push(s.error);
  if (!s.uuid) return p.length ? p : ['no device was allocated to the claim'];
  const w = s.whileRunning;
  if (s.phase !== 'Running') p.push(`pod ${s.pod} was ${s.phase || 'not seen'}`);
  if (s.carved !== 'True') p.push(`claim ${s.claim} had no Carved=True condition`);
  if (!w?.onBus) p.push(`while ${s.vm} ran, the kernel had no mdev ${s.uuid}`);
  else {
    p.push(...w.problems);
    if (w.parent !== s.gpu) p.push(`mdev ${s.uuid} sat on ${w.parent ?? '?'}, not on ${s.gpu}`);
    if (w.type !== s.mdevType) p.push(`mdev ${s.uuid} was of type ${w.type ?? '?'}, the claim asked for ${s.mdevType}`);
  }
  if (!s.afterDelete || s.afterDelete.onBus || s.afterDelete.listed) p.push(`after ${s.vm} was deleted the kernel still had mdev ${s.uuid}`);
  return p;
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
  const od = s.ondemand;
  if (od) {
    out.push('');
    out.push(`On demand (pool ${od.pool}, DRA): ${od.vm}'s claim ${od.claim} asked for a ${od.mdevType}`);
    out.push(`  allocated ${od.device || '-'}, Carved=${od.carved || '-'}, pod ${od.pod} ${od.phase || '-'}${od.secondsToRunning !== undefined ? ` after ${od.secondsToRunning} s` : ''}`);
    const w = od.whileRunning;
    out.push(`  kernel while it ran: ${w?.onBus ? `mdev ${od.uuid} of type ${w.type ?? '?'} on ${w.parent ?? '?'}${w.listed ? ', listed by the type' : ''}` : 'no such mdev'}`);
    out.push(`  kernel after the VM was deleted: ${od.afterDelete ? (od.afterDelete.onBus ? 'still there' : `gone${od.secondsToRemoval !== undefined ? ` (${od.secondsToRemoval} s)` : ''}`) : '-'}`);
  }
  out.push('');
  out.push('Where to look');
  out.push(`  metrics   agent ${s.metrics.agent}, operator ${s.metrics.operator}`);
  out.push(`  status    ${s.metrics.agentStatus} (the agent's view: slices, holders, stuck writes)`);
  out.push(`  scrape    ${s.metrics.prometheusConfig} (a Prometheus configuration for both, as the chart's ServiceMonitors label them)`);
  out.push('');
  out.push('What the demo verified');
  for (const c of s.checks) out.push(`  ${c.ok ? 'ok  ' : 'FAIL'}  ${c.name.padEnd(9)} ${c.detail}`);
  out.push('');
  const failed = s.checks.filter((c) => !c.ok);
  out.push(s.ok ? 'OK: every VM holds its slices and got KubeVirt\'s env.' : `NOT OK: ${failed.map((c) => c.name).join(', ')} ${failed.length === 1 ? 'was' : 'were'} not verified (see above).`);
  return out.join('\n');
}
