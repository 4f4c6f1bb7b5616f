// The agent's DRA driver "virtualio.dev": publishes the DRA pools' slices as ResourceSlices, registers
// with the kubelet's plugin watcher, and serves DRAPlugin v1 and v1beta1 (NodePrepareResources /
// NodeUnprepareResources). The agent loop feeds it through `update` after every cycle; allocation
// safety reads `preparedHolders()`: a claim prepared here, or allocated here by the scheduler and not
// prepared yet, holds its slices like a pod holds a device.
//
// One slice, one holder: a slice the agent's ledger says is held by anyone but one of our claims (a
// pod through the device plugin, before or after the pool's frontEnd changed) is left out of the
// ResourceSlices, and NodePrepareResources refuses it, as it refuses a slice already prepared for
// another claim. The claim is read from the API server outside the serialized part of prepare and
// with a deadline, so one slow request never holds up the other claims of the node.
//
// Nothing is published, prepared or reported before the agent's first cycle (the first `update`):
// until then "no slices" means "not scanned yet". Unhealthy devices are left out instead of tainted
// where the API server drops device taints. Prepared claims the kubelet will never unprepare are
// forgotten (`collectStale`), and what a crash leaves on disk is removed at start.
import { mkdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadDraHealthApi, loadDraV1Api, loadDraV1beta1Api } from '../../../proto/load.js';
import type { DeviceHealth__Input } from '../../../proto/generated/dra-health/v1alpha1/DeviceHealth.js';
import type { NodeWatchResourcesResponse__Input } from '../../../proto/generated/dra-health/v1alpha1/NodeWatchResourcesResponse.js';
import type { DRAPluginHandlers } from '../../../proto/generated/dra-v1/k8s/io/kubelet/pkg/apis/dra/v1/DRAPlugin.js';
import type { DRAPluginHandlers as DRAPluginV1beta1Handlers } from '../../../proto/generated/dra-v1beta1/k8s/io/kubelet/pkg/apis/dra/v1beta1/DRAPlugin.js';
import type { NodePrepareResourceResponse__Input } from '../../../proto/generated/dra-v1/k8s/io/kubelet/pkg/apis/dra/v1/NodePrepareResourceResponse.js';
import type { Logger } from '../log.js';
import type { Inventory, PoolPlan, Slice } from '../model.js';
import { PLUGINS_REGISTRY, RegistrationSocket } from '../kubelet/registration-socket.js';
import { bindUnix, shutdownWithin } from '../kubelet/unix-grpc.js';
import { kubeletPluginFolder } from '../plugin/names.js';
import { AllocatedClaims, allocatedHere, type AllocatedClaim, type ClaimListWatch } from './claims.js';
import { DRA_DRIVER, desiredPools, draDeviceName, isDraPool, resourcePoolName, type DeviceFacts } from './devices.js';
import { pcieRootReader } from './pcie.js';
import {
  Checkpoint, cdiSpecForClaim, cdiSpecPath, metadataDocuments, metadataHostPath, planClaim, removeClaimFiles, sliceIndex, sweepLeftovers, topRequest, writeAtomic,
  type ClaimObject, type ClaimRef, type PreparedClaim, type SliceEntry,
} from './prepare.js';
import { ResourceSlicePublisher, type DroppedFields, type ResourceSliceStore } from './publisher.js';
import { claimUidsOnDisk, relearnClaim } from './recover.js';
import type { IpLink } from '../carving/ip-link.js';
import { claimVfTargets, VfNetSettings } from './vf-net.js';
import type { WantedMdev } from '../carving/ondemand.js';
import { OnDemandDevices, type OnDemandState, type SetDeviceCondition } from './ondemand.js';

/** A slice held through one of our claims (prepared or allocated), shaped like the agent's PodResources holders. */
export interface PreparedHolder {
  resourceName: string;
  namespace: string;
  pod: string;
  container: string;
  /** The ResourceClaim that holds it. */
  claim: string;
}

/**
 * Who holds a slice according to the agent's ledger (AgentManager.holderOf). A holder with `claim`
 * is one of our DRA claims (the agent got it from `preparedHolders()`).
 */
export type DraHoldState = { kind: 'held'; by: string; holder?: { resourceName: string; claim?: string } | undefined } | { kind: 'free' };

/** The gRPC services we offer, preferred first (PluginInfo.supported_versions). */
export const DRA_SERVICES = ['v1.DRAPlugin', 'v1beta1.DRAPlugin'];

export interface DraDriverOptions {
  nodeName: string;
  /** The kubelet's root folder (default /var/lib/kubelet): plugins/ and plugins_registry/ live there. */
  kubeletDir: string;
  cdiDir: string;
  sysfsRoot: string;
  /** Reads a ResourceClaim; undefined when it does not exist. `signal` aborts it at the deadline. */
  getClaim: (namespace: string, name: string, signal?: AbortSignal) => Promise<ClaimObject | undefined>;
  /** How long prepare waits for that read (default 10 s); the claim then gets an error and the kubelet retries. */
  claimTimeoutMs?: number;
  /**
   * Lists and watches ResourceClaims: a claim the scheduler allocated on this node counts as a
   * holder before the kubelet prepares it. Absent: only prepared claims hold slices.
   */
  claims?: ClaimListWatch;
  /** Who holds a slice per the agent's ledger; slices held by anyone but our claims are neither published nor prepared. */
  holderOf?: (sliceId: string) => DraHoldState;
  /**
   * A hold the ledger keeps without naming its holder (a released claim's grace period) counts as our
   * claim's while one of our claims held the slice less than this long ago, in a pool that has been a
   * DRA pool since (default 10 min). Otherwise the slice would be withdrawn after every unprepare.
   */
  recentHoldMs?: number;
  /** Wall clock in ms (tests). */
  nowMs?: () => number;
  store: ResourceSliceStore;
  nodeUid?: () => Promise<string | undefined>;
  logger: Logger;
  /** ResourceSlice re-list period (default 30 s). */
  resyncMs?: number;
  /** How often the registration socket is checked for removal (default 1 s). */
  socketCheckMs?: number;
  /** Called when the set of prepared slices changed (the agent re-plans carving). */
  onHoldersChanged?: () => void;
  /** Called when the kubelet reported a registration outcome (the agent refreshes its status). */
  onRegistration?: () => void;
  /** Called after each claim's prepare or unprepare with its duration (the agent's latency histogram). */
  observe?: (operation: 'prepare' | 'unprepare', ok: boolean, seconds: number) => void;
  /** Health stream: a full device list is re-sent at least this often (default 10 s; the kubelet's timeout is 30 s). */
  healthRefreshMs?: number;
  /** Wall clock in Unix seconds (tests). */
  nowSeconds?: () => number;
  /**
   * How long NodePrepareResources waits for the agent's first cycle (the first `update`) before it
   * answers with an error the kubelet retries (default 30 s, within the kubelet's 45 s call timeout).
   * Until then nothing is published and the health stream stays silent: the driver does not know the
   * node's slices yet.
   */
  readyTimeoutMs?: number;
  /**
   * The kubelet's DRA state file (default `<kubeletDir>/dra_manager_state`): a prepared claim whose
   * UID it does not name is one the kubelet will never unprepare. Missing or unreadable: no claim is
   * ever taken for stale.
   */
  kubeletDraStateFile?: string;
  /**
   * A prepared claim is forgotten once, for this long (default 10 min), the kubelet's state file has
   * not named it, ResourceClaims were listed without it allocated here, and a GET confirms the claim
   * is gone or no longer allocated here.
   */
  staleClaimGraceMs?: number;
  /** How often stale prepared claims are looked for (default 60 s). */
  gcIntervalMs?: number;
  /**
   * Per-claim VF network settings (MAC, VLAN, trust, spoof check, rates) on the PF, through this
   * port (`ip`). Absent: the opt-in is off, and a claim that asks for settings fails prepare saying so.
   */
  vfNetwork?: IpLink;
  /**
   * Sets a condition on one allocated device of a claim (status.devices[]): on-demand devices report
   * Carved (the scheduler then binds the pod) or CarveFailed (it tries elsewhere). Absent: never set.
   */
  setDeviceCondition?: SetDeviceCondition;
}

/** The health the kubelet is told about one device (health stream). */
interface DeviceHealthEntry {
  pool: string;
  device: string;
  healthy: boolean;
  message: string;
}

type PrepareOutcome = { devices: NodePrepareResourceResponse__Input['devices']; error: string };

export class DraDriver {
  readonly pluginDir: string;
  readonly draSocket: string;
  readonly registrationSocket: string;
  private readonly log: Logger;
  private readonly checkpoint: Checkpoint;
  private readonly publisher: ResourceSlicePublisher;
  private readonly pcieRoot: (addr: string) => string | undefined;
  private pools: PoolPlan[] = [];
  private index = new Map<string, SliceEntry>();
  private facts: DeviceFacts = { devices: new Map() };
  private queue: Promise<unknown> = Promise.resolve();
  private lastDesired = '';
  private slices: readonly Slice[] = [];
  private inventory: Inventory = { devices: [] };
  private readonly allocated: AllocatedClaims | undefined;
  /** (resource pool, device) → slice, from every index seen: allocated claims name devices, the ledger protects IDs. */
  private readonly idByDevice = new Map<string, { sliceId: string; resourceName?: string }>();
  /** Slice ID → when one of our claims last held it, and in which pool. */
  private readonly lastOurs = new Map<string, { at: number; pool: string }>();
  /** DRA pool → since when it has been one (without a break). */
  private readonly draSince = new Map<string, number>();
  /** Claim UID → the pods it was reserved for when the kubelet unprepared it (no longer a holder while that is all). */
  private readonly released = new Map<string, { uids: Set<string>; names: Set<string>; at: number }>();
  /** Slice ID → why it is left out of the ResourceSlices (held elsewhere). */
  private withheldNow = new Map<string, string>();
  /** Why a lost checkpoint is not recovered yet. */
  private recoveryBlocker: string | undefined;
  private health: DeviceHealthEntry[] = [];
  private healthText = '';
  private readonly healthStreams = new Set<grpc.ServerWritableStream<unknown, NodeWatchResourcesResponse__Input>>();
  private healthTimer: NodeJS.Timeout | undefined;
  /** True once the agent's first cycle was handed over (`update`): before it the node's slices are unknown. */
  private ready = false;
  private readonly readyWaiters = new Set<() => void>();
  /** Why unhealthy devices are left out instead of tainted (the API server drops device taints). */
  private taintsDropped: string | undefined;
  /** Prepared claim UID → since when it looks stale (see `collectStale`). */
  private readonly staleSince = new Map<string, number>();
  private collecting = false;
  private draServer: grpc.Server | undefined;
  private readonly reg: RegistrationSocket;
  private readonly onDemand: OnDemandDevices;
  /** Last registration outcome reported by the kubelet. */
  registration: { registered: boolean; error?: string } | undefined;
  /** Prepare/unprepare calls served (tests and logs). */
  calls = { prepare: 0, unprepare: 0 };
  /** Per-claim VF network settings (only with the opt-in). */
  readonly vfNet: VfNetSettings | undefined;
  private vfNetSettling = false;

  constructor(private readonly opts: DraDriverOptions) {
    this.log = opts.logger.child({ component: 'dra' });
    this.pluginDir = kubeletPluginFolder(opts.kubeletDir);
    this.draSocket = join(this.pluginDir, 'dra.sock');
    this.registrationSocket = join(opts.kubeletDir, PLUGINS_REGISTRY, `${DRA_DRIVER}-reg.sock`);
    this.reg = new RegistrationSocket(
      this.registrationSocket,
      () => ({ type: 'DRAPlugin', name: DRA_DRIVER, endpoint: this.draSocket, supportedVersions: DRA_SERVICES }),
      {
        onStatus: (ok, error) => {
          this.registration = ok ? { registered: true } : { registered: false, error };
          if (ok) {
            this.log.info('kubelet registered the DRA driver');
            this.publisher.kick(); // a (re)started kubelet has just wiped this node's ResourceSlices
          } else this.log.error({ error }, 'kubelet refused the DRA driver');
          this.opts.onRegistration?.();
        },
      },
    );
    this.checkpoint = new Checkpoint(join(this.pluginDir, 'checkpoint.json'));
    this.vfNet = opts.vfNetwork ? new VfNetSettings(join(this.pluginDir, 'vf-net.json'), opts.vfNetwork, this.log) : undefined;
    this.onDemand = new OnDemandDevices(opts.nodeName, this.log, opts.setDeviceCondition);
    this.pcieRoot = pcieRootReader(opts.sysfsRoot);
    this.publisher = new ResourceSlicePublisher({
      store: opts.store, node: opts.nodeName, logger: opts.logger,
      onDroppedFields: (d) => this.droppedFields(d),
      ...(opts.nodeUid ? { nodeUid: opts.nodeUid } : {}),
      ...(opts.resyncMs !== undefined ? { resyncMs: opts.resyncMs } : {}),
    });
    if (opts.claims) {
      this.allocated = new AllocatedClaims({
        source: opts.claims, node: opts.nodeName, logger: opts.logger,
        onChange: () => {
          this.refresh();
          this.opts.onHoldersChanged?.();
        },
      });
    }
  }

  private nowMs(): number {
    return (this.opts.nowMs ?? Date.now)();
  }

  /** True when the plan has a pool the DRA front end serves. */
  static wants(pools: readonly PoolPlan[]): boolean {
    return pools.some((p) => isDraPool(p) && !p.deleting);
  }

  /**
   * The agent loop's hook: the plan, slices and inventory of a cycle that ended. The first call
   * ends the start: only from then on are ResourceSlices written, claims prepared and health sent
   * (before it, an empty slice list means "not scanned yet", not "no devices").
   */
  update(pools: readonly PoolPlan[], slices: readonly Slice[], inventory: Inventory, onDemand?: OnDemandState): void {
    this.pools = [...pools];
    this.slices = slices;
    this.inventory = inventory;
    if (onDemand) this.onDemand.state = onDemand;
    if (!this.ready) {
      this.ready = true;
      for (const w of [...this.readyWaiters]) w();
    }
    this.refresh();
  }

  /** True once the first `update` arrived. */
  get started(): boolean {
    return this.ready;
  }

  /** Why unhealthy devices are left out of the ResourceSlices instead of tainted, if they are. */
  get taintsUnsupported(): string | undefined {
    return this.taintsDropped;
  }

  /** Resolves true at the first `update`, false after `readyTimeoutMs` without one. */
  private whenReady(): Promise<boolean> {
    if (this.ready) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (ok: boolean): void => {
        clearTimeout(t);
        this.readyWaiters.delete(onReady);
        resolve(ok);
      };
      const onReady = (): void => done(true);
      const t = setTimeout(() => done(false), this.opts.readyTimeoutMs ?? 30_000);
      t.unref();
      this.readyWaiters.add(onReady);
    });
  }

  /**
   * The publisher found fields the API server dropped. Device taints: unhealthy devices cannot be
   * marked, so they are left out of the ResourceSlices from now on (as a slice held elsewhere is),
   * and the pool is written once more without them instead of every resync.
   */
  private droppedFields(d: DroppedFields): void {
    if (!d.features.includes('DRADeviceTaints') || this.taintsDropped) return;
    this.taintsDropped = `the API server dropped the device taints of ResourceSlice #${d.index} of pool ${d.poolName} (feature gate DRADeviceTaints off)`;
    this.log.error({ pool: d.poolName }, `${this.taintsDropped}: unhealthy devices are left out of the ResourceSlices instead of tainted until the agent restarts`);
    this.refresh();
  }

  /** Re-derives what is published (and the health stream) from the last update and who holds what now. */
  private refresh(): void {
    if (!this.ready) return; // the node's slices are not known yet: publishing now would withdraw them all
    const now = this.nowMs();
    const dra = new Set(this.pools.filter((p) => isDraPool(p) && !p.deleting).map((p) => p.name));
    for (const p of dra) if (!this.draSince.has(p)) this.draSince.set(p, now);
    for (const p of [...this.draSince.keys()]) if (!dra.has(p)) this.draSince.delete(p);
    this.facts = { devices: new Map(this.inventory.devices.map((d) => [d.pciAddress, d])), pcieRoot: this.pcieRoot };
    this.index = sliceIndex(this.opts.nodeName, this.pools, this.slices);
    if (this.idByDevice.size > 8192) this.idByDevice.clear();
    for (const [k, e] of this.index) this.idByDevice.set(k, { sliceId: e.slice.id, resourceName: e.pool.resourceName });
    const recent = this.opts.recentHoldMs ?? 600_000;
    for (const [id, o] of this.lastOurs) if (now - o.at >= recent) this.lastOurs.delete(id);
    for (const [uid, r] of this.released) if (now - r.at >= recent && !this.allocated?.all().has(uid)) this.released.delete(uid);
    const ours = this.draHolders(); // stamps lastOurs
    const withheld = new Map<string, string>();
    for (const s of this.slices) {
      if (!dra.has(s.pool)) continue;
      const why = this.heldElsewhere(s.id, s.pool) ?? this.vfNet?.pending().get(s.id);
      if (why) withheld.set(s.id, why);
    }
    if (this.vfNet?.pending().size) this.settleVfNet();
    for (const [id, why] of withheld) if (!this.withheldNow.has(id)) this.log.warn({ slice: id, heldBy: why }, 'slice held outside DRA: not published, not prepared');
    for (const id of this.withheldNow.keys()) if (!withheld.has(id)) this.log.info({ slice: id }, 'slice no longer held outside DRA: published again');
    this.withheldNow = withheld;
    this.setHealth(dra, this.slices.filter((s) => !withheld.has(s.id)), ours);
    // Without device taints an unhealthy device would be allocatable: left out instead.
    const offered = this.slices.filter((s) => !withheld.has(s.id) && !(this.taintsDropped && s.health !== 'Healthy'));
    this.tryRecover();
    const live = this.onDemand.liveVgpus(this.pools, this.allocatedClaims(), this.checkpoint.all(), (c) => this.isReleased(c));
    const desired = desiredPools(this.opts.nodeName, this.pools, offered, this.facts, (p) => this.onDemand.content(p, this.inventory, live, this.facts));
    this.onDemand.report(this.pools, this.allocatedClaims(), (c) => this.isReleased(c), this.slices);
    const text = JSON.stringify(desired);
    if (text === this.lastDesired) return; // most cycles change nothing DRA publishes
    this.lastDesired = text;
    this.publisher.setDesired(desired);
  }

  /** On-demand pools: the mdevs the scheduler allocated claims on this node, not released (the agent carves them). */
  onDemandWanted(): Map<string, WantedMdev> {
    return this.onDemand.wanted(this.pools, this.allocatedClaims(), (c) => this.isReleased(c));
  }

  /** Slices left out of the ResourceSlices because someone other than our claims holds them, with who. */
  get withheld(): ReadonlyMap<string, string> {
    return this.withheldNow;
  }

  /**
   * Who holds `sliceId` if not one of our claims, per the agent's ledger, or undefined. A hold
   * that names no holder is our claim's grace period when one of our claims held the slice
   * recently in a pool that has stayed a DRA pool since (no device plugin could have handed it out).
   */
  private heldElsewhere(sliceId: string, pool: string): string | undefined {
    const h = this.opts.holderOf?.(sliceId);
    if (!h || h.kind === 'free') return undefined;
    if (h.holder?.claim) return undefined; // one of our claims: prepare checks which one
    if (!h.holder) {
      const o = this.lastOurs.get(sliceId);
      const since = this.draSince.get(pool);
      if (o && o.pool === pool && since !== undefined && since <= o.at && this.nowMs() - o.at < (this.opts.recentHoldMs ?? 600_000)) return undefined;
    }
    return h.by;
  }

  /**
   * The health of every device of a DRA pool — draining ones included: they are still prepared for a
   * VM, and the kubelet marks every device a report leaves out Unknown — and of every other slice one
   * of our claims holds; streams get it at once when it changed.
   */
  private setHealth(dra: ReadonlySet<string>, slices: readonly Slice[], ours: ReadonlyMap<string, PreparedHolder>): void {
    const health = slices
      .filter((s) => s.kind !== 'VPort' && (dra.has(s.pool) || ours.has(s.id)))
      .map((s) => ({ pool: resourcePoolName(this.opts.nodeName, s.pool), device: draDeviceName(s), healthy: s.health === 'Healthy', message: s.health === 'Healthy' ? '' : (s.reason ?? 'unhealthy').slice(0, 1024) }))
      .sort((a, b) => (a.pool + a.device < b.pool + b.device ? -1 : 1));
    const text = JSON.stringify(health);
    if (text === this.healthText) return;
    this.healthText = text;
    this.health = health;
    for (const st of this.healthStreams) this.sendHealth(st);
  }

  private sendHealth(st: grpc.ServerWritableStream<unknown, NodeWatchResourcesResponse__Input>): void {
    if (!this.ready) return; // an empty report before the first cycle would mark every device Unknown
    const now = Math.floor((this.opts.nowSeconds ?? (() => Date.now() / 1000))());
    const devices: DeviceHealth__Input[] = this.health.map((h) => ({
      device: { poolName: h.pool, deviceName: h.device },
      health: h.healthy ? 'HEALTHY' : 'UNHEALTHY',
      lastUpdatedTime: now,
      healthCheckTimeoutSeconds: 0,
      message: h.message,
    }));
    st.write({ devices });
  }

  /**
   * Who holds each slice through one of our claims, in the agent's holder form (status allocations):
   * claims prepared here (what prepare recorded), and claims the scheduler allocated on this node
   * that are not prepared yet — between the scheduler's decision and the kubelet's prepare, carving
   * must not tear the device down. The claim's namespace and the pod it is reserved for (or
   * "claim/<name>"). A claim the kubelet unprepared stops counting while it is still reserved only
   * for the pods it was reserved for then (without the ResourceClaim controller nobody clears that).
   */
  preparedHolders(): Map<string, PreparedHolder> {
    return this.draHolders();
  }

  private draHolders(): Map<string, PreparedHolder> {
    const out = new Map<string, PreparedHolder>();
    for (const c of this.allocated?.all().values() ?? []) {
      if (this.checkpoint.get(c.uid) || this.isReleased(c)) continue;
      for (const d of c.devices) {
        const m = this.lookup(d.pool, d.device);
        if (m) out.set(m.sliceId, { resourceName: m.resourceName ?? '', namespace: c.namespace, pod: c.pods[0]?.name ?? `claim/${c.name}`, container: '', claim: c.name });
      }
    }
    for (const c of this.checkpoint.all()) {
      for (const d of c.devices) {
        out.set(d.sliceId, { resourceName: d.resourceName ?? '', namespace: c.namespace, pod: c.pods?.[0] ?? `claim/${c.name}`, container: '', claim: c.name });
      }
    }
    const now = this.nowMs();
    for (const id of out.keys()) {
      const pool = this.poolOfSlice(id);
      if (pool) this.lastOurs.set(id, { at: now, pool });
    }
    return out;
  }

  private poolOfSlice(id: string): string | undefined {
    for (const e of this.index.values()) if (e.slice.id === id) return e.pool.name;
    return this.slices.find((s) => s.id === id)?.pool;
  }

  private lookup(pool: string, device: string): { sliceId: string; resourceName?: string } | undefined {
    const e = this.index.get(`${pool}\n${device}`);
    if (e) return { sliceId: e.slice.id, resourceName: e.pool.resourceName };
    // An on-demand device not carved yet: its mdev UUID is in its name, and it is held from allocation on.
    return this.idByDevice.get(`${pool}\n${device}`) ?? this.onDemand.lookup(this.pools, pool, device);
  }

  private isReleased(c: AllocatedClaim): boolean {
    const r = this.released.get(c.uid);
    if (!r) return false;
    return c.pods.every((p) => (p.uid !== undefined && r.uids.has(p.uid)) || ((p.uid === undefined || r.uids.size === 0) && r.names.has(p.name)));
  }

  /** Claims allocated on this node as last listed/watched (tests and status). */
  allocatedClaims(): ReadonlyMap<string, AllocatedClaim> {
    return this.allocated?.all() ?? new Map();
  }

  /** The registration as pool status reports it (not yet told by the kubelet: not registered). */
  registrationState(): { registered: boolean; error?: string } {
    if (this.registration?.registered) return { registered: true };
    return { registered: false, error: this.registration?.error ? `kubelet refused DRA driver virtualio.dev: ${this.registration.error}` : 'DRA driver virtualio.dev not registered with the kubelet yet' };
  }

  /**
   * Why nobody can tell which slices our claims hold, or undefined: the checkpoint is not read yet,
   * or it was lost (damaged or unreadable, now or before a restart) and is not recovered yet, or
   * ResourceClaims were never listed. The agent then counts every slice as held.
   */
  holdersUnknown(): string | undefined {
    const cp = this.checkpoint;
    if (cp.state === 'unloaded') return 'the DRA driver has not read its prepared claims yet';
    if (cp.unknown) {
      const l = cp.lost;
      const why = l?.why ?? cp.loadError ?? `DRA checkpoint ${cp.state}`;
      return `${why}${l?.copy ? ` (damaged file kept as ${l.copy})` : ''}; prepared claims not re-learned yet: ${this.recoveryBlocker ?? 'starting'}`;
    }
    return this.allocated?.unknown();
  }

  /**
   * After a lost checkpoint: re-learns the claims whose CDI specs are still on disk (prepare writes
   * them, unprepare removes them) and ends the loss once every such claim is recorded again and
   * ResourceClaims were listed since the start (claims allocated here count as held from then on,
   * prepared or not). What blocks it is in `holdersUnknown()`; docs/dra.md has the way out by hand.
   */
  private tryRecover(): void {
    const cp = this.checkpoint;
    if (cp.state === 'unloaded' || !cp.unknown) return;
    let uids: string[];
    try {
      uids = claimUidsOnDisk(this.opts.cdiDir);
    } catch (err) {
      this.recoveryBlocker = `cannot list the CDI folder ${this.opts.cdiDir}: ${String(err)}`;
      return;
    }
    const stuck: string[] = [];
    for (const uid of uids) {
      if (cp.get(uid)) continue;
      const c = relearnClaim(uid, this.opts.cdiDir, this.pluginDir, (pool, device) => this.lookup(pool, device), this.allocated?.all().get(uid));
      if (typeof c === 'string') {
        stuck.push(`claim ${uid} (${cdiSpecPath(this.opts.cdiDir, uid)}): ${c}`);
        continue;
      }
      try {
        cp.put(c);
        this.log.warn({ claim: `${c.namespace}/${c.name}`, uid, devices: c.devices.map((d) => `${d.request}=${d.sliceId}`) }, 'prepared claim re-learned from its CDI spec and metadata');
      } catch (err) {
        stuck.push(`claim ${uid}: cannot record it: ${String(err)}`);
      }
    }
    const blocker = stuck.length ? stuck.join('; ') : this.allocated?.unknown();
    if (blocker) {
      if (blocker !== this.recoveryBlocker) this.log.warn({ blocker }, 'DRA checkpoint not recovered yet: every slice still counts as held');
      this.recoveryBlocker = blocker;
      return;
    }
    const lost = cp.lost;
    cp.markRecovered();
    this.recoveryBlocker = undefined;
    this.log.warn({ lost, claims: cp.all().length }, 'DRA checkpoint recovered: prepared claims re-learned from the CDI specs on disk; claims allocated here are known from the API server');
    this.opts.onHoldersChanged?.();
  }

  /** Slice IDs held by prepared claims: carving must not destroy them. */
  preparedSliceIds(): Set<string> {
    return new Set(this.checkpoint.all().flatMap((c) => c.devices.map((d) => d.sliceId)));
  }

  /** The publisher, for status and tests. */
  get slicePublisher(): ResourceSlicePublisher {
    return this.publisher;
  }

  /** Serves until `signal` aborts, then removes both sockets (the kubelet deregisters the driver). */
  async run(signal: AbortSignal): Promise<void> {
    mkdirSync(this.pluginDir, { recursive: true });
    // A damaged or unreadable checkpoint never stops the driver: the kubelet must still be able to
    // unprepare, and new claims are still prepared (and recorded in a new file, after the damaged
    // one was kept). holdersUnknown() keeps every slice held until the claims are re-learned.
    const st = this.checkpoint.tryLoad();
    if (st === 'corrupt' || st === 'unreadable') {
      this.log.error({ error: this.checkpoint.loadError }, 'DRA checkpoint lost: every slice counts as held until the prepared claims are re-learned (docs/dra.md); still serving prepare and unprepare');
    } else if (this.checkpoint.unknown) {
      this.log.warn({ lost: this.checkpoint.lost }, 'DRA checkpoint records an earlier loss not recovered yet: every slice counts as held until the prepared claims are re-learned');
    }
    this.sweep();
    this.tryRecover();
    this.loadVfNet();
    this.opts.onHoldersChanged?.();
    await this.startDraServer();
    await this.reg.start();
    const publishing = this.publisher.run(signal);
    const listing = this.allocated?.run(signal);
    const timer = setInterval(() => {
      if (this.reg.intact()) return;
      this.log.info({ socket: this.registrationSocket }, 'registration socket gone (kubelet restart or cleanup); registering again');
      this.reg.start().catch((err: unknown) => this.log.error({ err }, 'cannot re-create the registration socket'));
    }, this.opts.socketCheckMs ?? 1000);
    const gc = setInterval(() => {
      this.collectStale().catch((err: unknown) => this.log.warn({ err: String(err) }, 'looking for stale prepared claims failed'));
    }, this.opts.gcIntervalMs ?? 60_000);
    gc.unref();
    await new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true })));
    clearInterval(timer);
    clearInterval(gc);
    if (this.healthTimer) clearInterval(this.healthTimer);
    for (const st of this.healthStreams) st.end();
    this.healthStreams.clear();
    await publishing;
    await listing;
    await Promise.all([this.reg.stop(), stopServer(this.draServer, this.draSocket)]);
    this.log.info('DRA driver stopped');
  }

  /**
   * Before serving: removes temp files a crash left, and — with a checkpoint that was read and is
   * trusted — the CDI specs and metadata of claims it does not record (a prepare that died before
   * recording, so never answered). A lost checkpoint keeps them: claims are re-learned from them.
   */
  private sweep(): void {
    const cp = this.checkpoint;
    const trusted = cp.state === 'ok' && !cp.unknown;
    try {
      const r = sweepLeftovers(this.opts.cdiDir, this.pluginDir, trusted ? new Set(cp.all().map((c) => c.uid)) : undefined);
      if (r.tempFiles.length || r.orphanClaims.length) this.log.warn({ tempFiles: r.tempFiles, orphanClaims: r.orphanClaims }, 'removed what an interrupted write or prepare left behind');
    } catch (err) {
      this.log.warn({ err: String(err) }, 'cannot clean up after an interrupted write or prepare');
    }
  }

  /**
   * Reads the VF settings records. Records of claims a trusted checkpoint does not know (a prepare
   * that died before it recorded its claim, so never answered) become restores to do.
   */
  private loadVfNet(): void {
    const net = this.vfNet;
    if (!net) return;
    net.load();
    if (net.loadError) this.log.error({ error: net.loadError }, 'VF network settings records lost');
    const cp = this.checkpoint;
    if (cp.state !== 'ok' && cp.state !== 'absent') return;
    if (cp.unknown) return;
    const orphans = [...net.claimUids()].filter((uid) => !cp.get(uid));
    if (orphans.length === 0) return;
    void this.serial(async () => {
      for (const uid of orphans) await net.release(uid);
    }).then(() => this.refresh(), (err: unknown) => this.log.warn({ err: String(err) }, 'cannot release VF settings of unrecorded claims'));
  }

  /** The kubelet's DRA state file as text, or undefined when it cannot be read. */
  private kubeletState(): string | undefined {
    try {
      return readFileSync(this.opts.kubeletDraStateFile ?? join(this.opts.kubeletDir, 'dra_manager_state'), 'utf8');
    } catch {
      return undefined;
    }
  }

  /**
   * Forgets prepared claims the kubelet will never unprepare (its state was wiped, the node was
   * rebuilt under the same name): the kubelet's DRA state file does not name the claim, ResourceClaims
   * were listed without it allocated here, both for `staleClaimGraceMs`, and a GET finds the claim gone,
   * replaced or no longer allocated here. Then its files go and its slices are free for carving again.
   * Without a trusted checkpoint, a list of ResourceClaims or a readable kubelet state nothing is
   * forgotten. Runs every `gcIntervalMs`; returns the UIDs forgotten.
   */
  async collectStale(): Promise<string[]> {
    const cp = this.checkpoint;
    const allocated = this.allocated;
    if (this.collecting || cp.state === 'unloaded' || cp.unknown || !allocated || allocated.unknown() !== undefined) return [];
    this.collecting = true;
    try {
      const now = this.nowMs();
      const grace = this.opts.staleClaimGraceMs ?? 600_000;
      const kubelet = this.kubeletState();
      const present = new Set(cp.all().map((c) => c.uid));
      for (const uid of [...this.staleSince.keys()]) if (!present.has(uid)) this.staleSince.delete(uid);
      const due: PreparedClaim[] = [];
      for (const c of cp.all()) {
        if (kubelet === undefined || kubelet.includes(c.uid) || allocated.all().has(c.uid)) {
          this.staleSince.delete(c.uid);
          continue;
        }
        const since = this.staleSince.get(c.uid) ?? now;
        this.staleSince.set(c.uid, since);
        if (now - since >= grace) due.push(c);
      }
      const forgotten: string[] = [];
      for (const c of due) {
        let obj: ClaimObject | undefined;
        try {
          obj = await this.fetchClaim(c);
        } catch {
          continue; // not confirmed: next time
        }
        if (obj && obj.metadata.uid === c.uid && allocatedHere(obj, this.opts.nodeName)) {
          this.staleSince.delete(c.uid);
          continue;
        }
        const done = await this.serial(async () => {
          // Again under the queue: the kubelet may have prepared or unprepared it meanwhile.
          const text = this.kubeletState();
          if (!cp.get(c.uid) || allocated.all().has(c.uid) || text === undefined || text.includes(c.uid)) return false;
          try {
            removeClaimFiles(this.opts.cdiDir, this.pluginDir, c.uid);
            cp.delete(c.uid);
            await this.vfNet?.release(c.uid, `${c.namespace}/${c.name}`);
          } catch (err) {
            this.log.warn({ claim: `${c.namespace}/${c.name}`, uid: c.uid, err: String(err) }, 'cannot forget a stale prepared claim');
            return false;
          }
          this.staleSince.delete(c.uid);
          this.log.warn({ claim: `${c.namespace}/${c.name}`, uid: c.uid, devices: c.devices.map((d) => `${d.request}=${d.sliceId}`), claimNow: obj ? 'no longer allocated here' : 'gone' },
            'prepared claim forgotten: the kubelet no longer knows it and the API server no longer allocates it here');
          return true;
        });
        if (done) forgotten.push(c.uid);
      }
      if (forgotten.length) {
        this.settleVfNet();
        this.opts.onHoldersChanged?.();
      }
      return forgotten;
    } finally {
      this.collecting = false;
    }
  }

  /**
   * NodePrepareResources for one claim. The ResourceClaim is read first, with a deadline and outside
   * the serialized part; only the check against what is prepared and the state change are serialized
   * with every other call. Before the agent's first cycle the driver waits for it (`readyTimeoutMs`).
   */
  async prepare(ref: ClaimRef): Promise<PrepareOutcome> {
    this.calls.prepare++;
    const ready = this.whenReady();
    if (this.checkpoint.get(ref.uid) && (await ready)) {
      const again = await this.serial(async () => this.answerPrepared(ref));
      if (again) return again;
    }
    let claim: ClaimObject | undefined;
    try {
      claim = await this.fetchClaim(ref);
    } catch (err) {
      const error = `reading ResourceClaim ${ref.namespace}/${ref.name}: ${err instanceof Error ? err.message : String(err)}`;
      this.log.warn({ claim: `${ref.namespace}/${ref.name}`, uid: ref.uid, error }, 'cannot prepare claim');
      return { devices: [], error };
    }
    if (!(await ready)) {
      const error = `the agent has not finished its first scan of the node yet (waited ${this.opts.readyTimeoutMs ?? 30_000} ms); try again`;
      this.log.warn({ claim: `${ref.namespace}/${ref.name}`, uid: ref.uid, error }, 'cannot prepare claim');
      return { devices: [], error };
    }
    return this.serial(() => this.prepareNow(ref, claim));
  }

  /** NodeUnprepareResources for one claim (serialized with every other call). */
  unprepare(ref: ClaimRef): Promise<string> {
    return this.serial(() => this.unprepareNow(ref));
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** The GET of the claim, abandoned (and aborted) after `claimTimeoutMs`. */
  private async fetchClaim(ref: ClaimRef): Promise<ClaimObject | undefined> {
    const ms = this.opts.claimTimeoutMs ?? 10_000;
    const ctl = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        ctl.abort();
        reject(new Error(`no answer from the API server within ${ms} ms`));
      }, ms);
    });
    try {
      return await Promise.race([this.opts.getClaim(ref.namespace, ref.name, ctl.signal), deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  private answer(c: PreparedClaim): PrepareOutcome {
    // The top-level request name: the kubelet and KubeVirt match a container's claim by it.
    return { devices: c.devices.map((d) => ({ requestNames: [topRequest(d.request)], poolName: d.pool, deviceName: d.device, cdiDeviceIds: [d.cdiId] })), error: '' };
  }

  /** Idempotent prepare: the recorded answer, files re-written if someone removed them; undefined when not (fully) prepared now. */
  private async answerPrepared(ref: ClaimRef): Promise<PrepareOutcome | undefined> {
    const done = this.checkpoint.get(ref.uid);
    if (!done || !done.devices.every((d) => this.index.has(`${d.pool}\n${d.device}`))) return undefined;
    try {
      this.writeFiles(done);
    } catch (err) {
      return { devices: [], error: `re-writing CDI spec or metadata for ${ref.namespace}/${ref.name}: ${String(err)}` };
    }
    return this.answer(done);
  }

  /** Why a planned claim must not get its devices: one is prepared for another claim, or held outside DRA. */
  private conflict(plan: PreparedClaim): string | undefined {
    const what = `ResourceClaim ${plan.namespace}/${plan.name}`;
    for (const d of plan.devices) {
      const other = this.checkpoint.all().find((c) => c.uid !== plan.uid && c.devices.some((x) => x.sliceId === d.sliceId));
      if (other) return `${what}: device ${d.device} (${d.sliceId}) is already prepared for ResourceClaim ${other.namespace}/${other.name} (UID ${other.uid}); not handing it out twice`;
      const pool = this.index.get(`${d.pool}\n${d.device}`)?.pool.name ?? '';
      const by = this.heldElsewhere(d.sliceId, pool);
      if (by) return `${what}: device ${d.device} (${d.sliceId}) is held by ${by}; not handing it out twice`;
    }
    return undefined;
  }

  private async prepareNow(ref: ClaimRef, claim: ClaimObject | undefined): Promise<PrepareOutcome> {
    const again = await this.answerPrepared(ref); // a concurrent call for the same claim got here first
    if (again) return again;
    const plan = planClaim(ref, claim, this.opts.nodeName, this.index);
    const error = 'error' in plan ? plan.error : this.conflict(plan);
    if (error !== undefined) {
      this.log.warn({ claim: `${ref.namespace}/${ref.name}`, uid: ref.uid, error }, 'cannot prepare claim');
      return { devices: [], error };
    }
    if ('error' in plan) return { devices: [], error: plan.error }; // (narrowing only)
    const netError = await this.applyVfNet(ref, claim, plan);
    if (netError) {
      this.log.warn({ claim: `${ref.namespace}/${ref.name}`, uid: ref.uid, error: netError }, 'cannot prepare claim');
      return { devices: [], error: netError };
    }
    try {
      this.writeFiles(plan);
      this.checkpoint.put(plan);
    } catch (err) {
      removeClaimFiles(this.opts.cdiDir, this.pluginDir, ref.uid);
      await this.vfNet?.release(ref.uid, `${ref.namespace}/${ref.name}`);
      await this.vfNet?.settle(() => true); // prepare did not answer: no VM has these VFs
      return { devices: [], error: `writing CDI spec or metadata for ${ref.namespace}/${ref.name}: ${String(err)}` };
    }
    this.released.delete(ref.uid);
    this.log.info({ claim: `${ref.namespace}/${ref.name}`, uid: ref.uid, devices: plan.devices.map((d) => `${d.request}=${d.sliceId}`) }, 'claim prepared');
    this.opts.onHoldersChanged?.();
    return this.answer(plan);
  }

  /** The claim's VF network settings applied on the PFs (or why not), before prepare records the claim. */
  private async applyVfNet(ref: ClaimRef, claim: ClaimObject | undefined, plan: PreparedClaim): Promise<string | undefined> {
    const what = `ResourceClaim ${ref.namespace}/${ref.name}`;
    const t = claimVfTargets(plan.devices, this.index, claim?.status?.allocation?.devices?.config, this.vfNet !== undefined);
    if ('error' in t) return `${what}: ${t.error}`;
    if (!this.vfNet || t.targets.length === 0) return undefined;
    const err = await this.vfNet.apply(ref.uid, `${ref.namespace}/${ref.name}`, t.targets);
    return err ? `${what}: VF network settings: ${err}` : undefined;
  }

  /** Restores released VF settings whose VF is free (nobody but our claims holds it, no claim prepared on it). */
  private settleVfNet(): void {
    const net = this.vfNet;
    if (!net || this.vfNetSettling) return;
    this.vfNetSettling = true;
    void this.serial(async () => {
      const prepared = this.preparedSliceIds();
      await net.settle((vf) => !prepared.has(vf) && this.heldElsewhere(vf, this.poolOfSlice(vf) ?? '') === undefined);
    }).catch((err: unknown) => this.log.warn({ err: String(err) }, 'restoring VF network settings failed'))
      .finally(() => {
        this.vfNetSettling = false;
      });
  }

  private writeFiles(c: PreparedClaim): void {
    for (const [req, doc] of metadataDocuments(c, this.index, this.facts)) {
      writeAtomic(metadataHostPath(this.pluginDir, c.uid, req), `${JSON.stringify(doc)}\n`);
    }
    writeAtomic(cdiSpecPath(this.opts.cdiDir, c.uid), `${JSON.stringify(cdiSpecForClaim(c, this.index, this.pluginDir), null, 2)}\n`);
  }

  private async unprepareNow(ref: ClaimRef): Promise<string> {
    this.calls.unprepare++;
    try {
      this.draHolders(); // when our claims last held their slices: the ledger's grace period that follows is ours
      removeClaimFiles(this.opts.cdiDir, this.pluginDir, ref.uid);
      const had = this.checkpoint.get(ref.uid);
      const allocated = this.allocated?.all().get(ref.uid);
      // Still allocated and reserved for the same pods, it holds nothing any more (see preparedHolders).
      this.released.set(ref.uid, {
        uids: new Set((allocated?.pods ?? []).flatMap((p) => (p.uid ? [p.uid] : []))),
        names: new Set([...(allocated?.pods ?? []).map((p) => p.name), ...(had?.pods ?? [])]),
        at: this.nowMs(),
      });
      this.checkpoint.delete(ref.uid);
      if (this.vfNet) {
        // The kubelet unprepares once the pod's containers are gone (the VM with them); the settings
        // go back only when the ledger also shows the VF free (settleVfNet).
        await this.vfNet.release(ref.uid, `${ref.namespace}/${ref.name}`);
        const prepared = this.preparedSliceIds();
        await this.vfNet.settle((vf) => !prepared.has(vf) && this.heldElsewhere(vf, this.poolOfSlice(vf) ?? '') === undefined);
      }
      if (had || allocated) {
        this.log.info({ claim: `${ref.namespace}/${ref.name}`, uid: ref.uid }, 'claim unprepared');
        this.opts.onHoldersChanged?.();
      }
      if (this.checkpoint.unknown) this.tryRecover(); // one claim fewer to re-learn
      return '';
    } catch (err) {
      return `unpreparing ${ref.namespace}/${ref.name}: ${String(err)}`;
    }
  }

  private handlers(): DRAPluginHandlers & DRAPluginV1beta1Handlers {
    return {
      NodePrepareResources: (call, cb) => {
        const claims = call.request.claims ?? [];
        Promise.all(claims.map(async (c) => {
          const t = process.hrtime.bigint();
          const out = await this.prepare({ namespace: c.namespace, uid: c.uid, name: c.name });
          this.opts.observe?.('prepare', out.error === '', Number(process.hrtime.bigint() - t) / 1e9);
          return [c.uid, out] as const;
        })).then(
          (pairs) => cb(null, { claims: Object.fromEntries(pairs) }),
          (err: unknown) => cb({ code: grpc.status.INTERNAL, details: String(err) }),
        );
      },
      NodeUnprepareResources: (call, cb) => {
        const claims = call.request.claims ?? [];
        Promise.all(claims.map(async (c) => {
          const t = process.hrtime.bigint();
          const error = await this.unprepare({ namespace: c.namespace, uid: c.uid, name: c.name });
          this.opts.observe?.('unprepare', error === '', Number(process.hrtime.bigint() - t) / 1e9);
          return [c.uid, { error }] as const;
        })).then(
          (pairs) => cb(null, { claims: Object.fromEntries(pairs) }),
          (err: unknown) => cb({ code: grpc.status.INTERNAL, details: String(err) }),
        );
      },
    };
  }

  private async startDraServer(): Promise<void> {
    await stopServer(this.draServer, this.draSocket);
    const server = new grpc.Server();
    const h = this.handlers();
    server.addService(loadDraV1Api().k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin.service, h);
    server.addService(loadDraV1beta1Api().k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin.service, h);
    server.addService(loadDraHealthApi().v1alpha1.DRAResourceHealth.service, {
      NodeWatchResources: (call: grpc.ServerWritableStream<unknown, NodeWatchResourcesResponse__Input>) => {
        this.healthStreams.add(call);
        const drop = (): void => {
          this.healthStreams.delete(call);
        };
        call.on('cancelled', drop);
        call.on('close', drop);
        call.on('error', drop);
        this.sendHealth(call); // nothing before the first cycle: the first report follows it
      },
    });
    this.healthTimer ??= setInterval(() => {
      for (const st of this.healthStreams) this.sendHealth(st);
    }, this.opts.healthRefreshMs ?? 10_000);
    this.healthTimer.unref();
    await bindUnix(server, this.draSocket);
    this.draServer = server;
    this.log.info({ socket: this.draSocket, services: DRA_SERVICES }, 'DRA plugin serving');
  }
}

async function stopServer(server: grpc.Server | undefined, socket: string): Promise<void> {
  if (server) await shutdownWithin(server, 2000);
  try {
    unlinkSync(socket);
  } catch {
    /* absent */
  }
}
