// DRA front end: what NodePrepareResources does for one claim, as data (which slices, which CDI
// devices, which KubeVirt metadata files), plus the file writers and the checkpoint that make
// prepare and unprepare idempotent across agent restarts.
import { readdirSync, readFileSync, rmSync, type Dirent } from 'node:fs';
import { join } from 'node:path';
import { decodeChecked, encodeChecked, keepCorruptCopy, writeFileDurable } from '../agent/durable-file.js';
import { isOnDemandNvme, nvmeDeviceName } from '../carving/ondemand-nvme.js';
import type { PoolPlan, Slice } from '../model.js';
import type { AllocationConfig } from './vf-config.js';
import { DRA_DRIVER, draDevice, draDeviceName, resourcePoolName, type DeviceFacts, type DraDevice } from './devices.js';

/** The parts of a ResourceClaim (resource.k8s.io/v1) prepare reads. */
export interface ClaimObject {
  metadata: { name?: string; namespace?: string; uid?: string; annotations?: Record<string, string> };
  status?: {
    allocation?: { devices?: { results?: { request: string; driver: string; pool: string; device: string }[]; config?: AllocationConfig[] } };
    reservedFor?: { resource?: string; name?: string; uid?: string }[];
  };
}

/** Annotation the ResourceClaim controller puts on claims made from a template: the pod's claim name. */
export const POD_CLAIM_NAME_ANNOTATION = 'resource.kubernetes.io/pod-claim-name';
/** Where KubeVirt (v1.8.3+) reads device metadata inside the virt-launcher container. */
export const METADATA_CONTAINER_DIR = '/var/run/kubernetes.io/dra-device-attributes';
export const METADATA_API_VERSION = 'metadata.resource.k8s.io/v1alpha1';
/** CDI kind of the devices we hand out per claim. */
export const CDI_KIND = `${DRA_DRIVER}/claim`;
const CDI_VERSION = '0.5.0';
const VFIO_CONTAINER = '/dev/vfio/vfio';

export interface PreparedDevice {
  /** Request name as in the allocation result ("<request>" or "<request>/<subrequest>"). */
  request: string;
  pool: string;
  device: string;
  sliceId: string;
  cdiId: string;
  /** The pool's extended resource name (status rolls allocations up by it). */
  resourceName?: string;
}

export interface PreparedClaim {
  uid: string;
  namespace: string;
  name: string;
  podClaimName?: string;
  devices: PreparedDevice[];
  /** Pods the claim was reserved for when it was prepared (status.reservedFor). */
  pods?: string[];
}

export interface ClaimRef {
  namespace: string;
  uid: string;
  name: string;
}

/** A slice with the pool it belongs to, as prepare looks it up by DRA device name. */
export interface SliceEntry {
  pool: PoolPlan;
  slice: Slice;
}

/** The current DRA slices of this node by (resource pool name, device name). */
export function sliceIndex(node: string, pools: readonly PoolPlan[], slices: readonly Slice[]): Map<string, SliceEntry> {
  const byName = new Map(pools.map((p) => [p.name, p]));
  const out = new Map<string, SliceEntry>();
  for (const s of slices) {
    const pool = byName.get(s.pool);
    if (!pool || pool.frontEnd !== 'DRA' || s.kind === 'VPort') continue;
    // An on-demand NVMe VF is published once per queue count (nvme-<VF>-q<n>, dra/nvme-counters.ts),
    // never under its plain VF name: a claim names one of those. Whether its controller has that
    // size is the Carved condition's business (the pod is bound only after it).
    const names = isOnDemandNvme(pool) && s.kind === 'VF' ? (pool.onDemand?.nvmeQueues ?? []).map((q) => nvmeDeviceName(s.pciAddress ?? s.id, q)) : [draDeviceName(s)];
    for (const n of names) out.set(`${resourcePoolName(node, pool.name)}\n${n}`, { pool, slice: s });
  }
  return out;
}

const REQUEST_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$/;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function cdiName(uid: string, device: string): string {
  return `${uid}-${device}`;
}

/**
 * Checks a claim the kubelet asked us to prepare and picks its devices: the UID must match (a claim
 * deleted and re-created under the same name is another claim), it must be allocated, and every
 * result of our driver on this node must name a slice that exists and is Healthy.
 */
export function planClaim(ref: ClaimRef, claim: ClaimObject | undefined, node: string, index: ReadonlyMap<string, SliceEntry>): PreparedClaim | { error: string } {
  const what = `ResourceClaim ${ref.namespace}/${ref.name}`;
  if (!claim) return { error: `${what} not found` };
  // The object is whatever the API server returned (another API version, a field of another type):
  // anything not of the expected shape is refused with a message, never a TypeError.
  if (!isObject(claim) || !isObject(claim.metadata)) return { error: `${what} is malformed: no metadata` };
  if (claim.metadata.uid !== ref.uid) return { error: `${what} has UID ${typeof claim.metadata.uid === 'string' ? claim.metadata.uid : '?'}, the kubelet asked for ${ref.uid}` };
  const results: unknown = claim.status?.allocation?.devices?.results;
  if (!results) return { error: `${what} is not allocated` };
  if (!Array.isArray(results)) return { error: `${what} is malformed: status.allocation.devices.results is not a list` };
  const devices: PreparedDevice[] = [];
  for (const [i, r] of results.entries()) {
    if (!isObject(r) || typeof r.driver !== 'string' || typeof r.pool !== 'string' || typeof r.device !== 'string' || typeof r.request !== 'string') {
      return { error: `${what} is malformed: allocation result ${i} lacks request, driver, pool or device` };
    }
    if (r.driver !== DRA_DRIVER) continue;
    // The request name becomes a folder of the metadata path: DNS labels only (the API's rule), never "..".
    if (!REQUEST_RE.test(r.request)) return { error: `${what}: request name ${JSON.stringify(r.request)} is not a DNS label (or <request>/<subrequest>)` };
    if (!r.pool.startsWith(`${node}/`)) return { error: `${what}: device ${r.pool}/${r.device} is not on node ${node}` };
    const entry = index.get(`${r.pool}\n${r.device}`);
    if (!entry) return { error: `${what}: device ${r.device} of pool ${r.pool} is not published by this agent (gone or not carved yet)` };
    if (entry.slice.health !== 'Healthy') return { error: `${what}: device ${r.device} is Unhealthy: ${entry.slice.reason ?? 'unknown reason'}` };
    devices.push({ request: r.request, pool: r.pool, device: r.device, sliceId: entry.slice.id, cdiId: `${CDI_KIND}=${cdiName(ref.uid, r.device)}`, resourceName: entry.pool.resourceName });
  }
  const podClaimName: unknown = isObject(claim.metadata.annotations) ? claim.metadata.annotations[POD_CLAIM_NAME_ANNOTATION] : undefined;
  const reservedFor: unknown = claim.status?.reservedFor;
  const pods = (Array.isArray(reservedFor) ? reservedFor : []).filter((r) => isObject(r) && r.resource === 'pods' && typeof r.name === 'string' && r.name).map((r) => (r as { name: string }).name);
  return { uid: ref.uid, namespace: ref.namespace, name: ref.name, ...(typeof podClaimName === 'string' && podClaimName ? { podClaimName } : {}), devices, ...(pods.length ? { pods } : {}) };
}

/** In-container path of a request's metadata file (KEP-5304 layout that KubeVirt reads). */
export function metadataContainerPath(c: Pick<PreparedClaim, 'name' | 'podClaimName'>, request: string): string {
  const base = c.podClaimName ? `resourceclaimtemplates/${c.podClaimName}` : `resourceclaims/${c.name}`;
  return `${METADATA_CONTAINER_DIR}/${base}/${request}/${DRA_DRIVER}-metadata.json`;
}

/** Host path of a request's metadata file under the plugin's data folder. */
export function metadataHostPath(dataDir: string, uid: string, request: string): string {
  return join(dataDir, 'metadata', uid, request, `${DRA_DRIVER}-metadata.json`);
}

/**
 * The top-level request a (sub)request belongs to (`firstAvailable`: `<request>/<subrequest>`). The
 * kubelet matches a container's `resources.claims[].request` and KubeVirt its `requestName` against
 * it, so prepare answers with it (as the Go kubeletplugin's stripSubrequestNames does).
 */
export function topRequest(request: string): string {
  return request.split('/')[0] ?? request;
}

/** One metadata document per request: the devices of that request with the slice's attributes. */
export function metadataDocuments(c: PreparedClaim, index: ReadonlyMap<string, SliceEntry>, facts: DeviceFacts): Map<string, unknown> {
  const out = new Map<string, unknown>();
  const grouped = new Map<string, { pool: string; dev: DraDevice }[]>();
  for (const d of c.devices) {
    const e = index.get(`${d.pool}\n${d.device}`);
    if (!e) continue;
    const dev = draDevice(e.pool, e.slice, facts);
    const req = topRequest(d.request);
    grouped.set(req, [...(grouped.get(req) ?? []), { pool: d.pool, dev }]);
  }
  for (const [req, devs] of grouped) {
    out.set(req, {
      apiVersion: METADATA_API_VERSION,
      kind: 'DeviceMetadata',
      metadata: { name: c.name, namespace: c.namespace, uid: c.uid },
      ...(c.podClaimName ? { podClaimName: c.podClaimName } : {}),
      requests: [{ name: req, devices: devs.map(({ pool, dev }) => ({ driver: DRA_DRIVER, pool, name: dev.name, attributes: dev.attributes })) }],
    });
  }
  return out;
}

export interface CdiClaimSpec {
  cdiVersion: string;
  kind: string;
  devices: {
    name: string;
    containerEdits: {
      deviceNodes: { path: string; permissions: string }[];
      mounts?: { hostPath: string; containerPath: string; options: string[] }[];
    };
  }[];
}

/**
 * The CDI spec of a claim: per device its vfio nodes (plus the vfio container node) and, on the first
 * device of each request, the read-only bind mount of that request's metadata file.
 */
export function cdiSpecForClaim(c: PreparedClaim, index: ReadonlyMap<string, SliceEntry>, dataDir: string): CdiClaimSpec {
  const mounted = new Set<string>();
  return {
    cdiVersion: CDI_VERSION,
    kind: CDI_KIND,
    devices: c.devices.map((d) => {
      const e = index.get(`${d.pool}\n${d.device}`);
      const nodes = [VFIO_CONTAINER, ...(e?.slice.deviceNodes ?? [])];
      const req = topRequest(d.request);
      const edits: CdiClaimSpec['devices'][number]['containerEdits'] = { deviceNodes: nodes.map((path) => ({ path, permissions: 'rwm' })) };
      if (!mounted.has(req)) {
        mounted.add(req);
        edits.mounts = [{ hostPath: metadataHostPath(dataDir, c.uid, req), containerPath: metadataContainerPath(c, req), options: ['ro', 'bind'] }];
      }
      return { name: cdiName(c.uid, d.device), containerEdits: edits };
    }),
  };
}

/** CDI spec file of a claim. */
export function cdiSpecPath(cdiDir: string, uid: string): string {
  return join(cdiDir, `${DRA_DRIVER}-claim_${uid}.json`);
}

/**
 * Writes a file atomically and durably, creating its folder: a uniquely named temp file beside it,
 * fsync, rename, fsync of the folder; on failure the temp file is removed. (A crash can still leave
 * one behind: {@link sweepLeftovers} removes those at start.)
 */
export function writeAtomic(file: string, text: string): void {
  writeFileDurable(file, text, { mode: 0o644 });
}

/** Temp files of writeFileDurable (`.<name>.<pid>-<hex>.tmp`) and of earlier versions (`<name>.tmp`). */
function isTempFile(name: string): boolean {
  return /^\..+\.[0-9]+-[0-9a-f]+\.tmp$/.test(name) || name.endsWith('.json.tmp');
}

/** What {@link sweepLeftovers} removed. */
export interface Leftovers {
  tempFiles: string[];
  /** Claims whose CDI spec or metadata was on disk without a checkpoint entry. */
  orphanClaims: string[];
}

/**
 * Removes, before the driver serves, what a crash can leave: temp files of ours in the CDI folder,
 * the plugin folder and the metadata folders, and — only when `recorded` is given, i.e. the
 * checkpoint was read and is trusted — the CDI spec and metadata of claims it does not record. Those
 * were written by a prepare that died before it recorded the claim, so the kubelet never got their
 * CDI IDs (prepare answers only after the record is saved) and no container uses them. With a lost
 * checkpoint they are kept: they are what the claims are re-learned from.
 */
export function sweepLeftovers(cdiDir: string, dataDir: string, recorded: ReadonlySet<string> | undefined): Leftovers {
  const out: Leftovers = { tempFiles: [], orphanClaims: [] };
  const list = (dir: string): string[] => {
    try {
      return readdirSync(dir);
    } catch {
      return [];
    }
  };
  const specTemp = new RegExp(`^\\.?${DRA_DRIVER.replace(/\./g, '\\.')}-claim_.+\\.json\\.`);
  for (const n of list(cdiDir)) {
    if (isTempFile(n) && specTemp.test(n)) {
      rmSync(join(cdiDir, n), { force: true });
      out.tempFiles.push(join(cdiDir, n));
    }
  }
  for (const n of list(dataDir)) {
    if (isTempFile(n)) {
      rmSync(join(dataDir, n), { force: true });
      out.tempFiles.push(join(dataDir, n));
    }
  }
  const metaDir = join(dataDir, 'metadata');
  const walk = (dir: string): void => {
    let entries: Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (isTempFile(e.name)) {
        rmSync(p, { force: true });
        out.tempFiles.push(p);
      }
    }
  };
  walk(metaDir);
  if (recorded) {
    const uids = new Set<string>(list(metaDir));
    const spec = new RegExp(`^${DRA_DRIVER.replace(/\./g, '\\.')}-claim_(.+)\\.json$`);
    for (const n of list(cdiDir)) {
      const m = spec.exec(n);
      if (m) uids.add(m[1]!);
    }
    for (const uid of [...uids].sort()) {
      if (recorded.has(uid)) continue;
      removeClaimFiles(cdiDir, dataDir, uid);
      out.orphanClaims.push(uid);
    }
  }
  return out;
}

/** Removes what prepare wrote for a claim. Missing files are fine (unprepare is idempotent). */
export function removeClaimFiles(cdiDir: string, dataDir: string, uid: string): void {
  rmSync(cdiSpecPath(cdiDir, uid), { force: true });
  rmSync(join(dataDir, 'metadata', uid), { recursive: true, force: true });
}

function isPreparedClaim(c: unknown): c is PreparedClaim {
  if (typeof c !== 'object' || c === null) return false;
  const o = c as Record<string, unknown>;
  const str = (v: unknown) => typeof v === 'string';
  return str(o.uid) && str(o.namespace) && str(o.name) && (o.podClaimName === undefined || str(o.podClaimName)) &&
    (o.pods === undefined || (Array.isArray(o.pods) && o.pods.every(str))) &&
    Array.isArray(o.devices) && o.devices.every((d: unknown) => {
      if (typeof d !== 'object' || d === null) return false;
      const x = d as Record<string, unknown>;
      return str(x.request) && str(x.pool) && str(x.device) && str(x.sliceId) && str(x.cdiId) && (x.resourceName === undefined || str(x.resourceName));
    });
}

/**
 * What loading the DRA checkpoint found: not `load`ed yet, a valid file, no file (nothing
 * prepared), or a file that is damaged or unreadable. `unloaded`, `corrupt` and `unreadable` mean
 * "unknown": the caller must treat every DRA slice as held by a prepared claim (the kubelet's DRA
 * manager refuses to start on a damaged state file for the same reason).
 */
export type DraCheckpointState = 'unloaded' | 'ok' | 'absent' | 'corrupt' | 'unreadable';

/** A checkpoint that could not be read: what it held is unknown until the caller says otherwise. */
export interface DraCheckpointLoss {
  at: string;
  why: string;
  /** Where the damaged file was kept. */
  copy?: string;
}

/**
 * The prepared claims, kept in one JSON file so a restarted agent answers the same. Written
 * durably (temp file, fsync, rename, fsync of the folder) with a checksum. A damaged file is never
 * read as "no claims": `state`/`unknown` say so, the file is kept as `<file>.corrupt-<time>` before
 * the first write replaces it, and the loss is carried in the new file until `markRecovered()`.
 */
export class Checkpoint {
  private claims = new Map<string, PreparedClaim>();
  private lostInfo: DraCheckpointLoss | undefined;
  private mustKeepCopy = false;
  /** What loading found. */
  state: DraCheckpointState = 'unloaded';
  /** Why the file could not be loaded (state `corrupt` or `unreadable`). */
  loadError: string | undefined;

  constructor(
    private readonly file: string,
    private readonly now: () => Date = () => new Date(),
  ) {}

  /**
   * Reads the file without throwing and returns what it found. A missing file is an empty
   * checkpoint; a damaged or unreadable one leaves no claims loaded and {@link unknown} true.
   */
  tryLoad(): DraCheckpointState {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return (this.state = 'absent');
      return this.lose('unreadable', `cannot read DRA checkpoint ${this.file}: ${(err as Error).message}`);
    }
    const d = decodeChecked(text);
    if (!d.ok) {
      const what = d.message.startsWith('not JSON') ? `is not valid JSON: ${d.message.slice('not JSON: '.length)}` : `is damaged: ${d.message}`;
      return this.lose('corrupt', `DRA checkpoint ${this.file} ${what}`);
    }
    const doc = d.doc;
    if (doc.version !== 1 || !Array.isArray(doc.claims)) return this.lose('corrupt', `DRA checkpoint ${this.file} has an unknown layout (want version 1)`);
    const bad = doc.claims.findIndex((c) => !isPreparedClaim(c));
    if (bad >= 0) return this.lose('corrupt', `DRA checkpoint ${this.file} is damaged: malformed claims[${bad}]`);
    const l = doc.lost as Partial<DraCheckpointLoss> | undefined;
    if (l !== undefined && (typeof l !== 'object' || l === null || typeof l.at !== 'string' || typeof l.why !== 'string')) {
      return this.lose('corrupt', `DRA checkpoint ${this.file} is damaged: malformed lost`);
    }
    this.claims = new Map((doc.claims as PreparedClaim[]).map((c) => [c.uid, c]));
    this.lostInfo = l ? { at: l.at!, why: l.why!, ...(typeof l.copy === 'string' ? { copy: l.copy } : {}) } : undefined;
    return (this.state = 'ok');
  }

  private lose(state: 'corrupt' | 'unreadable', why: string): DraCheckpointState {
    this.state = state;
    this.loadError = why;
    this.claims = new Map();
    this.lostInfo = { at: this.now().toISOString(), why };
    this.mustKeepCopy = true;
    return state;
  }

  /** Like {@link tryLoad}, but throws (naming the file) when the file is damaged or unreadable. */
  load(): void {
    const st = this.tryLoad();
    if (st === 'corrupt' || st === 'unreadable') throw new Error(this.loadError);
  }

  /**
   * True while it is unknown which claims were prepared (not loaded yet, or the file was damaged,
   * now or before a restart): every DRA slice must count as held. Ends with {@link markRecovered}.
   */
  get unknown(): boolean {
    return this.state === 'unloaded' || this.lostInfo !== undefined;
  }

  /** The loss behind {@link unknown}, if any. */
  get lost(): DraCheckpointLoss | undefined {
    return this.lostInfo ? { ...this.lostInfo } : undefined;
  }

  /**
   * The caller re-learned the prepared claims elsewhere: ends {@link unknown}. Written with the next
   * put or delete (until then a restart finds the loss again, which errs on the safe side).
   */
  markRecovered(): void {
    if (this.state !== 'unloaded') this.lostInfo = undefined;
  }

  get(uid: string): PreparedClaim | undefined {
    return this.claims.get(uid);
  }

  all(): PreparedClaim[] {
    return [...this.claims.values()];
  }

  /** Records a prepared claim: on disk first, in memory only once it is saved (throws, changing nothing, when it cannot be). */
  put(c: PreparedClaim): void {
    const next = new Map(this.claims);
    next.set(c.uid, c);
    this.save(next);
    this.claims = next;
  }

  /** Forgets a claim: on disk first, in memory only once it is saved (throws, changing nothing, when it cannot be). */
  delete(uid: string): void {
    if (!this.claims.has(uid)) return;
    const next = new Map(this.claims);
    next.delete(uid);
    this.save(next);
    this.claims = next;
  }

  /** Throws when the file cannot be written, or a damaged file cannot be kept first (then nothing is written). */
  private save(claimsToSave: ReadonlyMap<string, PreparedClaim>): void {
    if (this.state === 'unloaded') throw new Error(`DRA checkpoint ${this.file} not loaded yet; not overwriting it`);
    if (this.mustKeepCopy) {
      const copy = keepCorruptCopy(this.file, this.now());
      if (copy && this.lostInfo) this.lostInfo.copy = copy;
      this.mustKeepCopy = false;
    }
    const claims = [...claimsToSave.values()].sort((a, b) => a.uid.localeCompare(b.uid));
    writeFileDurable(this.file, encodeChecked({ version: 1, claims, ...(this.lostInfo ? { lost: this.lostInfo } : {}) }), { mode: 0o644 });
  }
}
