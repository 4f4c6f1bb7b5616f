// VFIO ownership for the fake kernel, and the witness record safety tests assert on.
//
// Who holds what: a VMM ("holder", any string) has `/dev/vfio/<N>` open, or uses the LUNs of an
// NPIV vport (no VFIO node: `holdVport`). A group covers the entries of
// `kernel/iommu_groups/<N>/devices`: PCI functions by address, and a mediated device by UUID in an
// IOMMU group of its own (what Linux does; FakeKernel's mdev create makes that group and its node).
//
// Linux facts modelled (../../../shared/reference/safety.md):
//  * a group node can be open once at a time: any second open() is EBUSY, even by the same holder
//    (torvalds/linux drivers/vfio/group.c); no node (function not on vfio-pci, mdev gone) is ENOENT;
//  * a destructive operation on an open device (unbind, SR-IOV change, mdev remove, PCI remove) ends
//    in vfio_unregister_group_dev() (drivers/vfio/vfio_main.c): the device is unregistered first (no
//    new opens: ENODEV here), then the driver's request callback runs every 10 s until the user lets
//    go, and the writer blocks until then. vfio-pci signals the VMM, QEMU asks the guest to
//    hot-unplug. Here: a 'vfio-request' event and the holder's onRequest, repeated every
//    `requestIntervalMs`;
//  * vport_delete does not block: the SCSI host goes at once, the VM's LUNs fail.
//
// One Ownership per sysfs root and process (`ownership(root, devRoot)`), shared by every FakeKernel
// over that root (the kernel daemon's too), as there is one kernel. Each violation also goes to
// `<root>/.fake-kernel/violations.jsonl`, so a test in another process can read it (readViolations).
//
// WriteGate is the FakeKernel's write chain with the witness in it: writes run one at a time; a
// destructive one calls witness(devices) just before it changes the tree. A write that must wait for
// a holder leaves the chain while it waits, so writes to OTHER devices proceed (as in Linux, where
// only the device's own lock is held), while writes to the devices it destroys wait for it.
import { EventEmitter } from 'node:events';
import { appendFile, lstat, mkdir, readdir, readFile, realpath } from 'node:fs/promises';
import path from 'node:path';
import { KernelError } from './kernel-error.js';

/** A destructive operation applied (or attempted) on a device somebody held. */
export interface Violation {
  /** ms since the epoch. */
  at: number;
  /** The attribute written, relative to the sysfs root. */
  path: string;
  value: string;
  /** PCI address, mdev UUID or vport WWPN (16 lower-case hex digits). */
  device: string;
  /** The VFIO group the holder has open (absent for a vport). */
  group?: number;
  holder: string;
}

/** A destructive operation applied, violating or not: the devices it destroyed, unbound or disturbed. */
export interface Destroyed {
  at: number;
  path: string;
  value: string;
  devices: string[];
}

/** The VFIO core asking a holder to let go of a group (repeated while it does not). */
export interface VfioRequest {
  at: number;
  group: number;
  holder: string;
  /** The write that waits. */
  path: string;
  value: string;
  /** 1 for the first request of this write, then 2, 3... */
  count: number;
}

/** Options of {@link Ownership.open}. */
export interface OpenOptions {
  /** Called on every request to let go (the VMM's request eventfd). */
  onRequest?: (r: VfioRequest) => void;
}

/** A device found held: who holds it and through which group. */
export interface Hit {
  device: string;
  group?: number;
  holder: string;
}

export const VIOLATIONS_REL = '.fake-kernel/violations.jsonl';

interface OpenGroup {
  holder: string;
  /** Group members when it was opened (the tree is read again at every check). */
  members: string[];
  onRequest?: ((r: VfioRequest) => void) | undefined;
  closed: Promise<void>;
  close: () => void;
}

async function list(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}

async function exists(p: string): Promise<boolean> {
  return lstat(p).then(
    () => true,
    () => false,
  );
}

/** `0x%llx` or plain hex → 16 lower-case hex digits; undefined when it is not a WWN. */
export function normalizeWwn(w: string): string | undefined {
  const hex = w.trim().toLowerCase().replace(/^0x/, '');
  if (!/^[0-9a-f]{1,16}$/.test(hex)) return undefined;
  return hex.padStart(16, '0');
}

/** The ownership state of one kernel: open groups, held vports, the witness record. */
export class Ownership extends EventEmitter {
  readonly root: string;
  readonly devRoot: string;
  /** Every violation, in order. */
  readonly violations: Violation[] = [];
  /** Every destructive operation applied, in order. */
  readonly destroyed: Destroyed[] = [];
  /** Every request to let go sent to a holder, in order. */
  readonly requests: VfioRequest[] = [];
  /** How often the request is repeated while a holder does not let go (Linux: 10 s). */
  requestIntervalMs = 10_000;
  private readonly groups = new Map<number, OpenGroup>();
  private readonly vports = new Map<string, string>();
  /** Groups whose device is being unregistered: no new opens. */
  private readonly unregistering = new Map<number, number>();
  /** Devices a blocked write is destroying: other writes to them wait (Linux: the device lock). */
  private readonly busy = new Map<string, Promise<void>>();

  constructor(root: string, devRoot: string) {
    super();
    this.root = root;
    this.devRoot = devRoot;
    this.setMaxListeners(100);
  }

  /** open(/dev/vfio/<group>): ENOENT without the node, ENODEV while it is being unregistered, EBUSY when open. */
  async open(group: number, holder: string, opts: OpenOptions = {}): Promise<void> {
    if (!Number.isInteger(group) || group < 0) throw new KernelError('EINVAL', `bad group ${String(group)}`);
    if (!(await exists(path.join(this.devRoot, 'vfio', String(group))))) throw new KernelError('ENOENT', `no /dev/vfio/${group}`);
    const members = await list(path.join(this.root, 'kernel/iommu_groups', String(group), 'devices'));
    if (this.unregistering.has(group)) throw new KernelError('ENODEV', `/dev/vfio/${group}: its device is being unregistered`);
    const cur = this.groups.get(group);
    if (cur) throw new KernelError('EBUSY', `/dev/vfio/${group} is open (by ${cur.holder})`);
    let close!: () => void;
    const closed = new Promise<void>((r) => (close = r));
    this.groups.set(group, { holder, members, onRequest: opts.onRequest, closed, close });
  }

  /** close(): EBADF when `holder` does not have the group open. */
  close(group: number, holder: string): void {
    const g = this.groups.get(group);
    if (!g || g.holder !== holder) throw new KernelError('EBADF', `${holder} does not have /dev/vfio/${group} open`);
    this.groups.delete(group);
    g.close();
  }

  /** A VM starts using the LUNs of the vport with this WWPN: ENOENT when it does not exist, EBUSY when held. */
  async holdVport(wwpn: string, holder: string): Promise<void> {
    const w = normalizeWwn(wwpn);
    if (!w) throw new KernelError('EINVAL', `bad WWPN ${JSON.stringify(wwpn)}`);
    if (!(await this.vportExists(w))) throw new KernelError('ENOENT', `no vport with WWPN ${w}`);
    const cur = this.vports.get(w);
    if (cur) throw new KernelError('EBUSY', `vport ${w} is in use (by ${cur})`);
    this.vports.set(w, holder);
  }

  /** EBADF when `holder` does not hold the vport. */
  releaseVport(wwpn: string, holder: string): void {
    const w = normalizeWwn(wwpn) ?? wwpn;
    if (this.vports.get(w) !== holder) throw new KernelError('EBADF', `${holder} does not hold vport ${w}`);
    this.vports.delete(w);
  }

  /** Open groups and held vports now. */
  holders(): { groups: { group: number; holder: string }[]; vports: { wwpn: string; holder: string }[] } {
    return {
      groups: [...this.groups].map(([group, g]) => ({ group, holder: g.holder })),
      vports: [...this.vports].map(([wwpn, holder]) => ({ wwpn, holder })),
    };
  }

  private async vportExists(wwpn: string): Promise<boolean> {
    const dir = path.join(this.root, 'class/fc_vports');
    for (const v of await list(dir)) {
      const pn = await readFile(path.join(dir, v, 'port_name'), 'utf8').catch(() => undefined);
      if (pn !== undefined && normalizeWwn(pn) === wwpn) return true;
    }
    return false;
  }

  /** Which of `devices` (addresses, UUIDs, WWPNs) are held, and by whom. */
  async holdersOf(devices: readonly string[]): Promise<Hit[]> {
    if (devices.length === 0 || (this.groups.size === 0 && this.vports.size === 0)) return [];
    const hits: Hit[] = [];
    for (const [group, g] of this.groups) {
      const members = new Set([...g.members, ...(await list(path.join(this.root, 'kernel/iommu_groups', String(group), 'devices')))]);
      for (const d of devices) if (members.has(d)) hits.push({ device: d, group, holder: g.holder });
    }
    for (const d of devices) {
      const holder = this.vports.get(d);
      if (holder !== undefined) hits.push({ device: d, holder });
    }
    return hits;
  }

  /** Records one violation per hit (memory, 'violation' event, violations.jsonl). */
  async recordViolations(op: { path: string; value: string }, hits: readonly Hit[]): Promise<void> {
    if (hits.length === 0) return;
    const at = Date.now();
    const lines: string[] = [];
    for (const h of hits) {
      const v: Violation = { at, path: op.path, value: op.value, device: h.device, ...(h.group === undefined ? {} : { group: h.group }), holder: h.holder };
      this.violations.push(v);
      this.emit('violation', v);
      lines.push(JSON.stringify(v));
    }
    const file = path.join(this.root, VIOLATIONS_REL);
    await mkdir(path.dirname(file), { recursive: true });
    await appendFile(file, `${lines.join('\n')}\n`);
  }

  recordDestroyed(op: { path: string; value: string }, devices: readonly string[]): void {
    if (devices.length > 0) this.destroyed.push({ at: Date.now(), path: op.path, value: op.value, devices: [...devices] });
  }

  /**
   * The VFIO core's wait in vfio_unregister_group_dev(): no new opens of `groups`; every holder that
   * still has one open is asked to let go now and every `requestIntervalMs`; resolves once all are closed.
   */
  async waitReleased(groups: readonly number[], op: { path: string; value: string }): Promise<void> {
    for (const g of groups) this.unregistering.set(g, (this.unregistering.get(g) ?? 0) + 1);
    try {
      for (let count = 1; ; count++) {
        const open = groups.flatMap((g) => {
          const o = this.groups.get(g);
          return o ? [{ group: g, o }] : [];
        });
        if (open.length === 0) return;
        for (const { group, o } of open) {
          const r: VfioRequest = { at: Date.now(), group, holder: o.holder, path: op.path, value: op.value, count };
          this.requests.push(r);
          try {
            o.onRequest?.(r);
            this.emit('vfio-request', r);
          } catch (err) {
            console.error(`[fake-kernel] vfio-request listener failed: ${String(err)}`);
          }
        }
        let timer: NodeJS.Timeout | undefined;
        const tick = new Promise<void>((r) => {
          timer = setTimeout(r, this.requestIntervalMs);
          timer.unref();
        });
        await Promise.race([Promise.all(open.map(({ o }) => o.closed)), tick]);
        clearTimeout(timer);
      }
    } finally {
      for (const g of groups) {
        const n = (this.unregistering.get(g) ?? 1) - 1;
        if (n <= 0) this.unregistering.delete(g);
        else this.unregistering.set(g, n);
      }
    }
  }

  /** Marks `keys` busy until the returned function is called. */
  lock(keys: readonly string[]): () => void {
    let done!: () => void;
    const p = new Promise<void>((r) => (done = r));
    for (const k of keys) this.busy.set(k, p);
    return () => {
      for (const k of keys) if (this.busy.get(k) === p) this.busy.delete(k);
      done();
    };
  }

  get anyBusy(): boolean {
    return this.busy.size > 0;
  }

  /** A promise that settles when the first busy one of `keys` is free again, or undefined. */
  busyFor(keys: readonly string[]): Promise<void> | undefined {
    for (const k of keys) {
      const p = this.busy.get(k);
      if (p) return p;
    }
    return undefined;
  }
}

// ---- the write gate ----------------------------------------------------------------------------

const BDF_RE = /^[0-9a-f]{4,5}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const BDF_G = /[0-9a-f]{4,5}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]/gi;
const UUID_G = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi;

/** Drivers that manage DMA themselves and may bind inside a group a VMM holds (Linux: driver_managed_dma). */
function managesDma(drv: string): boolean {
  return drv.includes('vfio') || drv === 'pci-stub' || drv === 'pcieport';
}

/** The write being applied. */
interface Op {
  path: string;
  value: string;
  onBlocked?: (() => void) | undefined;
  /** Lets the next write in. */
  release: () => void;
  /** Frees the devices this write locked while it waited. */
  unlock?: () => void;
}

/** Serializes a kernel's writes and witnesses the destructive ones (see the file header). */
export class WriteGate {
  private readonly own: Ownership;
  private readonly root: string;
  private tail: Promise<void> = Promise.resolve();
  private current: Op | undefined;

  constructor(own: Ownership, root: string) {
    this.own = own;
    this.root = root;
  }

  /** Runs `apply` for the write `w` after every write before it; `onBlocked` is called if it waits. */
  run(w: { path: string; value: string; onBlocked?: (() => void) | undefined }, apply: () => Promise<void>): Promise<void> {
    const op: Op = { ...w, release: () => undefined };
    const turn = this.acquire();
    return (async () => {
      op.release = await turn;
      try {
        await this.waitUntilFree(op);
        this.current = op;
        await apply();
      } finally {
        this.current = undefined;
        op.unlock?.();
        op.release();
      }
    })();
  }

  /** Waits for the previous write to finish; resolves to the function that lets the next one in. */
  private acquire(): Promise<() => void> {
    let release!: () => void;
    const done = new Promise<void>((r) => (release = r));
    const turn = this.tail.then(() => release);
    this.tail = this.tail.then(() => done);
    return turn;
  }

  /** A write to a device a blocked write is destroying waits for it (outside the chain). */
  private async waitUntilFree(op: Op): Promise<void> {
    while (this.own.anyBusy) {
      const busy = this.own.busyFor(await this.keysOf(op));
      if (!busy) return;
      op.onBlocked?.();
      op.release();
      await busy;
      op.release = await this.acquire();
    }
  }

  /** The device a write is for: the deepest address/UUID in the attribute's real path, and those in the value. */
  private async keysOf(op: { path: string; value: string }): Promise<string[]> {
    const abs = path.join(this.root, op.path);
    const dir = await realpath(path.dirname(abs)).catch(() => path.dirname(abs));
    const parts = dir.split(path.sep).filter((p) => BDF_RE.test(p) || UUID_RE.test(p));
    const keys = parts.length > 0 ? [parts[parts.length - 1] as string] : [];
    return [...keys, ...(op.value.match(BDF_G) ?? []), ...(op.value.match(UUID_G) ?? []).map((u) => u.toLowerCase())];
  }

  private where(): { path: string; value: string } {
    return { path: this.current?.path ?? '', value: this.current?.value ?? '' };
  }

  /**
   * Called by every destructive write just before it changes the tree, with the devices it
   * destroys, unbinds or disturbs (addresses, mdev UUIDs, vport WWPNs). Records a violation per
   * held one; then, when a VMM holds a PCI function or mdev among them, waits like
   * vfio_unregister_group_dev() until every such holder has let go (asking it to), with the chain
   * released and the devices locked. Logs the operation in `destroyed` when it goes ahead.
   */
  async witness(devices: string[]): Promise<void> {
    const op = this.current;
    const where = this.where();
    const hits = await this.own.holdersOf(devices);
    await this.own.recordViolations(where, hits);
    const groups = [...new Set(hits.flatMap((h) => (h.group === undefined ? [] : [h.group])))];
    if (groups.length > 0 && op) {
      op.unlock = this.own.lock([...devices, ...(await this.keysOf(op))]);
      op.onBlocked?.();
      op.release();
      try {
        await this.own.waitReleased(groups, where);
      } finally {
        op.release = await this.acquire();
        this.current = op;
      }
    }
    this.own.recordDestroyed(where, devices);
  }

  /**
   * Binding driver `drv` that does not manage DMA itself to `bdf`, a member of a group a VMM holds:
   * Linux refuses (EBUSY, the group's DMA owner is the user). True (and recorded as a violation)
   * when refused.
   */
  async refuseBind(bdf: string, drv: string): Promise<boolean> {
    if (managesDma(drv)) return false;
    const hits = await this.own.holdersOf([bdf]);
    await this.own.recordViolations(this.where(), hits);
    return hits.length > 0;
  }
}

const registry = new Map<string, Ownership>();

/** The ownership state of the kernel over `root` in this process (created on first use). */
export function ownership(root: string, devRoot: string): Ownership {
  const key = path.resolve(root);
  let o = registry.get(key);
  if (!o) {
    o = new Ownership(key, path.resolve(devRoot));
    registry.set(key, o);
  }
  return o;
}

/** Every violation recorded over `root` by any process (`<root>/.fake-kernel/violations.jsonl`). */
export async function readViolations(root: string): Promise<Violation[]> {
  let text: string;
  try {
    text = await readFile(path.join(root, VIOLATIONS_REL), 'utf8');
  } catch {
    return [];
  }
  const out: Violation[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      out.push(JSON.parse(line) as Violation);
    } catch {
      /* a line being appended by another process */
    }
  }
  return out;
}
