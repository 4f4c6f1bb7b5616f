// The plan (VirtualIONode.spec): validation shared by both modes, and the standalone source that
// reads it from a file (YAML or JSON) and re-reads it when it changes.
import { readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname } from 'node:path';
import type * as Yaml from 'yaml';
import type { Logger } from '../log.js';
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

function isObject(v: unknown): v is Record<string, unknown> {
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

let yamlParse: typeof Yaml.parse | undefined;
/**
 * The YAML parser, loaded on the first plan file read: only standalone mode reads one, and loading
 * `yaml` costs about 20 ms and 2 MiB of every cluster-mode start (docs/design-decisions.md,
 * "Agent start-up"). Synchronous (`require`, the package ships CommonJS for Node) so parsing stays so.
 */
function parseYaml(): typeof Yaml.parse {
  yamlParse ??= (createRequire(import.meta.url)('yaml') as typeof Yaml).parse;
  return yamlParse;
}

const EMPTY_PLAN_HINT = 'an empty plan must say so explicitly: "pools: []"';

/**
 * Parses plan file text (YAML is a superset of JSON). Stricter than {@link validatePlan} about what
 * counts as a plan: the file must hold a document with an explicit `pools` list (in the document or
 * in its `spec`). An empty or whitespace-only file, a file of comments only, `pools:` without a value
 * or anything that does not parse is an error, never an empty plan: a half-written or truncated file
 * (an editor's save, a writer that crashed, a read racing a non-atomic write) would otherwise read as
 * "no pools" and release every slice.
 */
export function parsePlanText(text: string): { ok: true; spec: VirtualIONodeSpec } | { ok: false; message: string } {
  if (text.trim() === '') return { ok: false, message: `the file is empty; ${EMPTY_PLAN_HINT}` };
  let doc: unknown;
  try {
    doc = parseYaml()(text);
  } catch (err) {
    return { ok: false, message: `cannot parse plan (incomplete or not YAML/JSON): ${(err as Error).message}` };
  }
  if (doc === null || doc === undefined) return { ok: false, message: `the file holds no document (only comments or "---"); ${EMPTY_PLAN_HINT}` };
  if (!isObject(doc)) return { ok: false, message: 'plan must be an object with a "pools" list' };
  const whole = doc.kind === 'VirtualIONode' || 'spec' in doc;
  const spec = whole ? doc.spec : doc;
  if (!isObject(spec) || spec.pools === undefined || spec.pools === null) {
    return { ok: false, message: `no "pools" list${whole ? ' in spec' : ''} (the file is incomplete or not a plan); ${EMPTY_PLAN_HINT}` };
  }
  return validatePlan(doc);
}

/** What tells one version of the plan file from another without reading it. */
function stampOf(file: string): string {
  try {
    const st = statSync(file);
    return `${st.ino}:${st.mtimeMs}:${st.size}`;
  } catch (err) {
    return `missing:${(err as NodeJS.ErrnoException).code ?? ''}`;
  }
}

/**
 * Standalone mode: the plan from a file, re-read on change (fs.watch on its folder + a 1 s stat poll).
 * A file that is missing, empty or does not parse is an error state: the caller keeps serving the
 * last valid plan (or, with none yet, removes nothing) and reports the error. Write the file
 * atomically (a temp file renamed over it): a truncated YAML file cut exactly between two pool
 * entries still parses and cannot be told from a shorter plan.
 */
export class FilePlanSource implements PlanSource {
  private state: PlanState;
  private lastStamp = '';
  private readonly log: Logger;

  constructor(
    private readonly file: string,
    logger: Logger,
    private readonly pollMs = 1000,
  ) {
    this.log = logger.child({ component: 'plan-file', file });
    this.state = { kind: 'none', message: `plan file ${file} not read yet` };
  }

  current(): PlanState {
    return this.state;
  }

  /** Reads the file when its stamp changed; returns true when the state changed. */
  reload(): boolean {
    const stamp = stampOf(this.file);
    if (stamp === this.lastStamp) return false;
    this.lastStamp = stamp;
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      this.state = { kind: 'error', message: `cannot read plan file ${this.file}: ${(err as Error).message}` };
      this.log.error(this.state.message);
      return true;
    }
    const r = parsePlanText(text);
    if (!r.ok && stampOf(this.file) !== stamp) {
      // Changed while it was read (a writer that does not rename into place): read it again later.
      this.lastStamp = '';
      return false;
    }
    if (r.ok) {
      this.state = { kind: 'ok', spec: r.spec };
      this.log.info({ pools: (r.spec.pools ?? []).map((p) => p.name) }, 'plan loaded');
    } else {
      this.state = { kind: 'error', message: `invalid plan file ${this.file}: ${r.message}` };
      this.log.error(this.state.message);
    }
    return true;
  }

  async run(signal: AbortSignal, onChange: () => void): Promise<void> {
    const check = (): void => {
      if (this.reload()) onChange();
    };
    check();
    let fsw: FSWatcher | undefined;
    try {
      fsw = watch(dirname(this.file), { persistent: false }, (_ev, name) => {
        if (!name || name === basename(this.file)) check();
      });
      fsw.on('error', () => fsw?.close());
    } catch {
      /* polling only */
    }
    const timer = setInterval(check, this.pollMs);
    await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
    clearInterval(timer);
    fsw?.close();
  }
}
