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
//
// This class ties the parts together; the parts live beside it: driver-options.ts (options and shared
// types), claim-prepare.ts (the prepare/unprepare queue), claim-holders.ts (who holds which slice),
// health-stream.ts, plugin-server.ts (the gRPC services), stale-claims.ts (claim GET and stale-claim
// collection) and checkpoint-recovery.ts (start-up sweep and re-learning a lost checkpoint).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from '../log.js';
import type { Inventory, PoolPlan, Slice } from '../model.js';
import { PLUGINS_REGISTRY, RegistrationSocket } from '../kubelet/registration-socket.js';
import { bindUnix } from '../kubelet/unix-grpc.js';
import { kubeletPluginFolder } from '../plugin/names.js';
import type { WantedMdev } from '../carving/ondemand.js';
import { CheckpointRecovery } from './checkpoint-recovery.js';
import { ClaimPreparer } from './claim-prepare.js';
import { ClaimHolders } from './claim-holders.js';
import { AllocatedClaims, type AllocatedClaim } from './claims.js';
import { DRA_DRIVER, desiredPools, isDraPool, type DeviceFacts } from './devices.js';
import { DRA_SERVICES, type DraDriverOptions, type PreparedHolder, type PrepareOutcome } from './driver-options.js';
import { DeviceHealthStreams } from './health-stream.js';
import { OnDemandDevices, type OnDemandState } from './ondemand.js';
import { pcieRootReader } from './pcie.js';
import { draPluginServer, stopServer } from './plugin-server.js';
import { Checkpoint, sliceIndex, type ClaimRef, type SliceEntry } from './prepare.js';
import { ResourceSlicePublisher, type DroppedFields } from './publisher.js';
import { StaleClaims } from './stale-claims.js';
import { VfNetSettings } from './vf-net.js';

export { DRA_SERVICES, type DraDriverOptions, type DraHoldState, type PreparedHolder } from './driver-options.js';

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
  private lastDesired = '';
  private slices: readonly Slice[] = [];
  private inventory: Inventory = { devices: [] };
  private readonly allocated: AllocatedClaims | undefined;
  /** Which slices our claims hold, and who else holds one. */
  private readonly holders: ClaimHolders;
  /** Slice ID → why it is left out of the ResourceSlices (held elsewhere). */
  private withheldNow = new Map<string, string>();
  /** Re-learns prepared claims after a lost checkpoint. */
  private readonly recovery: CheckpointRecovery;
  private readonly health: DeviceHealthStreams;
  /** True once the agent's first cycle was handed over (`update`): before it the node's slices are unknown. */
  private ready = false;
  private readonly readyWaiters = new Set<() => void>();
  /** Why unhealthy devices are left out instead of tainted (the API server drops device taints). */
  private taintsDropped: string | undefined;
  private readonly stale: StaleClaims;
  /** Prepare and unprepare, serialized. */
  private readonly preparer: ClaimPreparer;
  private draServer: grpc.Server | undefined;
  private readonly reg: RegistrationSocket;
  private readonly onDemand: OnDemandDevices;
  /** Last registration outcome reported by the kubelet. */
  registration: { registered: boolean; error?: string } | undefined;
  /** Prepare/unprepare calls served (tests and logs). */
  calls = { prepare: 0, unprepare: 0 };
  /** Per-claim VF network settings (only with the opt-in). */
  readonly vfNet: VfNetSettings | undefined;

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
    this.holders = new ClaimHolders({
      nowMs: () => this.nowMs(),
      holderOf: opts.holderOf,
      recentHoldMs: opts.recentHoldMs ?? 600_000,
      index: () => this.index,
      slices: () => this.slices,
      pools: () => this.pools,
      allocated: () => this.allocated?.all(),
      prepared: () => this.checkpoint.all(),
      isPrepared: (uid) => this.checkpoint.get(uid) !== undefined,
      onDemandLookup: (pools, pool, device) => this.onDemand.lookup(pools, pool, device),
    });
    this.recovery = new CheckpointRecovery({
      checkpoint: this.checkpoint, allocated: this.allocated, cdiDir: opts.cdiDir, pluginDir: this.pluginDir, log: this.log,
      lookup: (pool, device) => this.holders.lookup(pool, device),
      onRecovered: () => this.opts.onHoldersChanged?.(),
    });
    this.preparer = new ClaimPreparer({
      opts, pluginDir: this.pluginDir, log: this.log, checkpoint: this.checkpoint, holders: this.holders, allocated: this.allocated, vfNet: this.vfNet,
      calls: () => this.calls,
      index: () => this.index,
      facts: () => this.facts,
      whenReady: () => this.whenReady(),
      nowMs: () => this.nowMs(),
      preparedSliceIds: () => this.preparedSliceIds(),
      attemptRecovery: () => this.recovery.attempt(),
    });
    this.health = new DeviceHealthStreams(opts.nodeName, () => this.ready, opts.nowSeconds, opts.healthRefreshMs);
    this.stale = new StaleClaims({
      checkpoint: this.checkpoint, allocated: this.allocated, nodeName: opts.nodeName, cdiDir: opts.cdiDir, pluginDir: this.pluginDir,
      kubeletStateFile: opts.kubeletDraStateFile ?? join(opts.kubeletDir, 'dra_manager_state'),
      graceMs: opts.staleClaimGraceMs ?? 600_000,
      nowMs: () => this.nowMs(),
      log: this.log,
      vfNet: this.vfNet,
      fetchClaim: (ref) => this.preparer.fetchClaim(ref),
      serial: (fn) => this.preparer.serial(fn),
      onForgotten: () => {
        this.preparer.settleVfNet();
        this.opts.onHoldersChanged?.();
      },
    });
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
    this.facts = { devices: new Map(this.inventory.devices.map((d) => [d.pciAddress, d])), pcieRoot: this.pcieRoot };
    this.index = sliceIndex(this.opts.nodeName, this.pools, this.slices);
    this.holders.noteCycle(dra, now);
    const ours = this.holders.holders(); // stamps when our claims last held their slices
    const withheld = new Map<string, string>();
    for (const s of this.slices) {
      if (!dra.has(s.pool)) continue;
      const why = this.holders.heldElsewhere(s.id, s.pool) ?? this.vfNet?.pending().get(s.id);
      if (why) withheld.set(s.id, why);
    }
    if (this.vfNet?.pending().size) this.preparer.settleVfNet();
    for (const [id, why] of withheld) if (!this.withheldNow.has(id)) this.log.warn({ slice: id, heldBy: why }, 'slice held outside DRA: not published, not prepared');
    for (const id of this.withheldNow.keys()) if (!withheld.has(id)) this.log.info({ slice: id }, 'slice no longer held outside DRA: published again');
    this.withheldNow = withheld;
    this.health.set(dra, this.slices.filter((s) => !withheld.has(s.id)), ours);
    // Without device taints an unhealthy device would be allocatable: left out instead.
    const offered = this.slices.filter((s) => !withheld.has(s.id) && !(this.taintsDropped && s.health !== 'Healthy'));
    this.recovery.attempt();
    const live = this.onDemand.liveVgpus(this.pools, this.allocatedClaims(), this.checkpoint.all(), (c) => this.holders.isReleased(c));
    const desired = desiredPools(this.opts.nodeName, this.pools, offered, this.facts, (p) => this.onDemand.content(p, this.inventory, live, this.facts));
    this.onDemand.report(this.pools, this.allocatedClaims(), (c) => this.holders.isReleased(c), this.slices);
    const text = JSON.stringify(desired);
    if (text === this.lastDesired) return; // most cycles change nothing DRA publishes
    this.lastDesired = text;
    this.publisher.setDesired(desired);
  }

  /** On-demand pools: the mdevs the scheduler allocated claims on this node, not released (the agent carves them). */
  onDemandWanted(): Map<string, WantedMdev> {
    return this.onDemand.wanted(this.pools, this.allocatedClaims(), (c) => this.holders.isReleased(c));
  }

  /** Slices left out of the ResourceSlices because someone other than our claims holds them, with who. */
  get withheld(): ReadonlyMap<string, string> {
    return this.withheldNow;
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
    return this.holders.holders();
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
      return `${why}${l?.copy ? ` (damaged file kept as ${l.copy})` : ''}; prepared claims not re-learned yet: ${this.recovery.blocker ?? 'starting'}`;
    }
    return this.allocated?.unknown();
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
    this.recovery.sweep();
    this.recovery.attempt();
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
    this.health.stop();
    await publishing;
    await listing;
    await Promise.all([this.reg.stop(), stopServer(this.draServer, this.draSocket)]);
    this.log.info('DRA driver stopped');
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
    void this.preparer.serial(async () => {
      for (const uid of orphans) await net.release(uid);
    }).then(() => this.refresh(), (err: unknown) => this.log.warn({ err: String(err) }, 'cannot release VF settings of unrecorded claims'));
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
    return this.stale.collect();
  }

  /**
   * NodePrepareResources for one claim. The ResourceClaim is read first, with a deadline and outside
   * the serialized part; only the check against what is prepared and the state change are serialized
   * with every other call. Before the agent's first cycle the driver waits for it (`readyTimeoutMs`).
   */
  prepare(ref: ClaimRef): Promise<PrepareOutcome> {
    return this.preparer.prepare(ref);
  }

  /** NodeUnprepareResources for one claim (serialized with every other call). */
  unprepare(ref: ClaimRef): Promise<string> {
    return this.preparer.unprepare(ref);
  }

  private async startDraServer(): Promise<void> {
    await stopServer(this.draServer, this.draSocket);
    const server = draPluginServer({
      prepare: (ref) => this.prepare(ref),
      unprepare: (ref) => this.unprepare(ref),
      observe: this.opts.observe,
      watchHealth: (call) => this.health.watch(call),
    });
    this.health.startRefresh();
    await bindUnix(server, this.draSocket);
    this.draServer = server;
    this.log.info({ socket: this.draSocket, services: DRA_SERVICES }, 'DRA plugin serving');
  }
}
