// The agent's DRA driver "virtualio.dev": publishes the DRA pools' slices as ResourceSlices, registers
// with the kubelet's plugin watcher, and serves DRAPlugin v1 and v1beta1 (NodePrepareResources /
// NodeUnprepareResources). The agent loop feeds it through `update` after every cycle; allocation
// safety reads `preparedSliceIds()` (a prepared claim holds its slices like a pod holds a device).
import { mkdirSync, unlinkSync } from 'node:fs';
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
import { DRA_DRIVER, desiredPools, draDeviceName, isDraPool, resourcePoolName, type DeviceFacts } from './devices.js';
import { pcieRootReader } from './pcie.js';
import {
  Checkpoint, cdiSpecForClaim, cdiSpecPath, metadataDocuments, metadataHostPath, planClaim, removeClaimFiles, sliceIndex, writeAtomic,
  type ClaimObject, type ClaimRef, type PreparedClaim, type SliceEntry,
} from './prepare.js';
import { ResourceSlicePublisher, type ResourceSliceStore } from './publisher.js';

/** A slice held through a prepared claim, shaped like the agent's PodResources holders. */
export interface PreparedHolder {
  resourceName: string;
  namespace: string;
  pod: string;
  container: string;
  /** The ResourceClaim that holds it. */
  claim: string;
}

/** The gRPC services we offer, preferred first (PluginInfo.supported_versions). */
export const DRA_SERVICES = ['v1.DRAPlugin', 'v1beta1.DRAPlugin'];

export interface DraDriverOptions {
  nodeName: string;
  /** The kubelet's root folder (default /var/lib/kubelet): plugins/ and plugins_registry/ live there. */
  kubeletDir: string;
  cdiDir: string;
  sysfsRoot: string;
  /** Reads a ResourceClaim; undefined when it does not exist. */
  getClaim: (namespace: string, name: string) => Promise<ClaimObject | undefined>;
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
  /** Health stream: a full device list is re-sent at least this often (default 10 s; the kubelet's timeout is 30 s). */
  healthRefreshMs?: number;
  /** Wall clock in Unix seconds (tests). */
  nowSeconds?: () => number;
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
  private health: DeviceHealthEntry[] = [];
  private healthText = '';
  private readonly healthStreams = new Set<grpc.ServerWritableStream<unknown, NodeWatchResourcesResponse__Input>>();
  private healthTimer: NodeJS.Timeout | undefined;
  private draServer: grpc.Server | undefined;
  private readonly reg: RegistrationSocket;
  /** Last registration outcome reported by the kubelet. */
  registration: { registered: boolean; error?: string } | undefined;
  /** Prepare/unprepare calls served (tests and logs). */
  calls = { prepare: 0, unprepare: 0 };

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
    this.pcieRoot = pcieRootReader(opts.sysfsRoot);
    this.publisher = new ResourceSlicePublisher({
      store: opts.store, node: opts.nodeName, logger: opts.logger,
      ...(opts.nodeUid ? { nodeUid: opts.nodeUid } : {}),
      ...(opts.resyncMs !== undefined ? { resyncMs: opts.resyncMs } : {}),
    });
  }

  /** True when the plan has a pool the DRA front end serves. */
  static wants(pools: readonly PoolPlan[]): boolean {
    return pools.some((p) => isDraPool(p) && !p.deleting);
  }

  /** The agent loop's hook: the plan, slices and inventory of the cycle that just ended. */
  update(pools: readonly PoolPlan[], slices: readonly Slice[], inventory: Inventory): void {
    this.pools = [...pools];
    this.facts = { devices: new Map(inventory.devices.map((d) => [d.pciAddress, d])), pcieRoot: this.pcieRoot };
    this.index = sliceIndex(this.opts.nodeName, pools, slices);
    this.setHealth(pools, slices);
    const desired = desiredPools(this.opts.nodeName, pools, slices, this.facts);
    const text = JSON.stringify(desired);
    if (text === this.lastDesired) return; // most cycles change nothing DRA publishes
    this.lastDesired = text;
    this.publisher.setDesired(desired);
  }

  /** Every published device with its health; streams get it at once when it changed. */
  private setHealth(pools: readonly PoolPlan[], slices: readonly Slice[]): void {
    const dra = new Set(pools.filter((p) => isDraPool(p) && !p.deleting).map((p) => p.name));
    const health = slices
      .filter((s) => dra.has(s.pool) && s.kind !== 'VPort' && !(s as { draining?: string }).draining)
      .map((s) => ({ pool: resourcePoolName(this.opts.nodeName, s.pool), device: draDeviceName(s), healthy: s.health === 'Healthy', message: s.health === 'Healthy' ? '' : (s.reason ?? 'unhealthy').slice(0, 1024) }))
      .sort((a, b) => (a.pool + a.device < b.pool + b.device ? -1 : 1));
    const text = JSON.stringify(health);
    if (text === this.healthText) return;
    this.healthText = text;
    this.health = health;
    for (const st of this.healthStreams) this.sendHealth(st);
  }

  private sendHealth(st: grpc.ServerWritableStream<unknown, NodeWatchResourcesResponse__Input>): void {
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
   * Who holds each prepared slice, in the agent's holder form (status allocations): the claim's
   * namespace and the pod it was reserved for (or "claim/<name>" when none was recorded).
   */
  preparedHolders(): Map<string, PreparedHolder> {
    const out = new Map<string, PreparedHolder>();
    for (const c of this.checkpoint.all()) {
      for (const d of c.devices) {
        out.set(d.sliceId, { resourceName: d.resourceName ?? '', namespace: c.namespace, pod: c.pods?.[0] ?? `claim/${c.name}`, container: '', claim: c.name });
      }
    }
    return out;
  }

  /** The registration as pool status reports it (not yet told by the kubelet: not registered). */
  registrationState(): { registered: boolean; error?: string } {
    if (this.registration?.registered) return { registered: true };
    return { registered: false, error: this.registration?.error ? `kubelet refused DRA driver virtualio.dev: ${this.registration.error}` : 'DRA driver virtualio.dev not registered with the kubelet yet' };
  }

  /** Why nobody can tell which claims were prepared (record not read yet, damaged or unreadable), or undefined. */
  holdersUnknown(): string | undefined {
    const st = this.checkpoint.state;
    if (st === 'ok' || st === 'absent') return undefined;
    return st === 'unloaded' ? 'the DRA driver has not read its prepared claims yet' : (this.checkpoint.loadError ?? `DRA checkpoint ${st}`);
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
    this.checkpoint.load();
    await this.startDraServer();
    await this.reg.start();
    const publishing = this.publisher.run(signal);
    const timer = setInterval(() => {
      if (this.reg.intact()) return;
      this.log.info({ socket: this.registrationSocket }, 'registration socket gone (kubelet restart or cleanup); registering again');
      this.reg.start().catch((err: unknown) => this.log.error({ err }, 'cannot re-create the registration socket'));
    }, this.opts.socketCheckMs ?? 1000);
    await new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true })));
    clearInterval(timer);
    if (this.healthTimer) clearInterval(this.healthTimer);
    for (const st of this.healthStreams) st.end();
    this.healthStreams.clear();
    await publishing;
    await Promise.all([this.reg.stop(), stopServer(this.draServer, this.draSocket)]);
    this.log.info('DRA driver stopped');
  }

  /** NodePrepareResources for one claim (serialized with every other call). */
  prepare(ref: ClaimRef): Promise<PrepareOutcome> {
    return this.serial(() => this.prepareNow(ref));
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

  private answer(c: PreparedClaim): PrepareOutcome {
    return { devices: c.devices.map((d) => ({ requestNames: [d.request], poolName: d.pool, deviceName: d.device, cdiDeviceIds: [d.cdiId] })), error: '' };
  }

  private async prepareNow(ref: ClaimRef): Promise<PrepareOutcome> {
    this.calls.prepare++;
    const done = this.checkpoint.get(ref.uid);
    if (done && done.devices.every((d) => this.index.has(`${d.pool}\n${d.device}`))) {
      this.writeFiles(done); // idempotent: the same answer, files re-written if someone removed them
      return this.answer(done);
    }
    let claim: ClaimObject | undefined;
    try {
      claim = await this.opts.getClaim(ref.namespace, ref.name);
    } catch (err) {
      return { devices: [], error: `reading ResourceClaim ${ref.namespace}/${ref.name}: ${String(err)}` };
    }
    const plan = planClaim(ref, claim, this.opts.nodeName, this.index);
    if ('error' in plan) {
      this.log.warn({ claim: `${ref.namespace}/${ref.name}`, uid: ref.uid, error: plan.error }, 'cannot prepare claim');
      return { devices: [], error: plan.error };
    }
    try {
      this.writeFiles(plan);
      this.checkpoint.put(plan);
    } catch (err) {
      removeClaimFiles(this.opts.cdiDir, this.pluginDir, ref.uid);
      return { devices: [], error: `writing CDI spec or metadata for ${ref.namespace}/${ref.name}: ${String(err)}` };
    }
    this.log.info({ claim: `${ref.namespace}/${ref.name}`, uid: ref.uid, devices: plan.devices.map((d) => `${d.request}=${d.sliceId}`) }, 'claim prepared');
    this.opts.onHoldersChanged?.();
    return this.answer(plan);
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
      removeClaimFiles(this.opts.cdiDir, this.pluginDir, ref.uid);
      const had = this.checkpoint.get(ref.uid);
      this.checkpoint.delete(ref.uid);
      if (had) {
        this.log.info({ claim: `${ref.namespace}/${ref.name}`, uid: ref.uid }, 'claim unprepared');
        this.opts.onHoldersChanged?.();
      }
      return '';
    } catch (err) {
      return `unpreparing ${ref.namespace}/${ref.name}: ${String(err)}`;
    }
  }

  private handlers(): DRAPluginHandlers & DRAPluginV1beta1Handlers {
    return {
      NodePrepareResources: (call, cb) => {
        const claims = call.request.claims ?? [];
        Promise.all(claims.map(async (c) => [c.uid, await this.prepare({ namespace: c.namespace, uid: c.uid, name: c.name })] as const)).then(
          (pairs) => cb(null, { claims: Object.fromEntries(pairs) }),
          (err: unknown) => cb({ code: grpc.status.INTERNAL, details: String(err) }),
        );
      },
      NodeUnprepareResources: (call, cb) => {
        const claims = call.request.claims ?? [];
        Promise.all(claims.map(async (c) => [c.uid, { error: await this.unprepare({ namespace: c.namespace, uid: c.uid, name: c.name }) }] as const)).then(
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
        this.sendHealth(call);
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
