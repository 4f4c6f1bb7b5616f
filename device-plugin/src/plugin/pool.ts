// One pool's device plugin, kept registered with the kubelet for its whole life. Two ways in:
//  - plugin watcher (preferred): serve the pool's socket under <kubelet>/plugins/virtualio.dev and put a
//    registration socket in <kubelet>/plugins_registry; the kubelet finds it, calls GetInfo, connects,
//    and after its own restart finds it again by itself;
//  - kubelet.sock (fallback, and every kubelet before the watcher handled device plugins): serve in the
//    device plugin folder → Register → watch for a kubelet restart (our socket wiped, kubelet.sock
//    recreated, ListAndWatch stream ended) → new server → Register again, with backoff while
//    kubelet.sock is absent (STYLE P9).
// `auto` takes the watcher when the kubelet has one next to its device plugin folder, and falls back
// for good when the kubelet refuses it or never answers while kubelet.sock is up.
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { RegistrationMode } from '../config.js';
import type { Logger } from '../log.js';
import type { AgentMetrics } from '../metrics.js';
import type { Slice } from '../model.js';
import { DEVICE_PLUGIN_VERSION, registerWithKubelet } from '../kubelet/register.js';
import { PLUGINS_REGISTRY, RegistrationSocket, socketPath } from '../kubelet/registration-socket.js';
import type { PluginDirWatcher } from '../kubelet/watcher.js';
import { allocate, wantsDevinfo, type DevInfoFile, type PoolSpec } from './allocate.js';
import { buildCdiSpec, syncCdiSpec } from './cdi.js';
import { devinfoFileName, kubeletPluginFolder, socketName } from './names.js';
import { preferredAllocation } from './preferred.js';
import { PoolServer, deviceList, type ServerView } from './server.js';
import type { DevicePluginHandlers } from '../../../proto/generated/deviceplugin/v1beta1/DevicePlugin.js';
import type { AllocationWindow } from '../podresources/allocation-window.js';

export interface PoolPluginOptions {
  pool: PoolSpec;
  pluginDir: string;
  devinfoDir: string;
  cdi: { enabled: boolean; dir: string };
  watcher: PluginDirWatcher;
  logger: Logger;
  metrics: AgentMetrics;
  /** Parent shutdown signal. */
  signal: AbortSignal;
  /** Called after every successful Allocate with the allocated IDs. */
  onAllocated?: (pool: string, ids: string[]) => void;
  /**
   * Asked before an Allocate is answered: a reason refuses it (FAILED_PRECONDITION); undefined lets
   * it go ahead, and the callee has then durably recorded the IDs as handed out.
   */
  admit?: (pool: string, resourceName: string, ids: string[]) => string | undefined;
  /** Called when the registration state changes. */
  onStateChange?: () => void;
  /** Told of every allocation call, which waits for a PodResources List in flight first (see allocation-window.ts). */
  window?: AllocationWindow;
  /** Register call, replaceable in tests. */
  register?: typeof registerWithKubelet;
  /** How to register (default: kubelet.sock only). */
  registration?: RegistrationOptions;
}

export interface RegistrationOptions {
  mode: RegistrationMode;
  /** The kubelet's root folder: plugins_registry/ and plugins/ live there. */
  kubeletDir: string;
  /** auto: give up on the watcher when it has not registered us this long while kubelet.sock exists (default 30 s). */
  fallbackMs?: number;
  /** Watcher: re-create the registration socket when the kubelet has not reconnected this long after a disconnect (default 30 s). */
  reconnectMs?: number;
}

/** How a pool got registered, as the pool status reports it. */
export type RegisteredVia = 'PluginWatcher' | 'KubeletSocket';

/**
 * The way `auto` starts: the plugin watcher when the kubelet's plugins_registry folder exists and the
 * device plugin folder is that same kubelet's (`<kubeletDir>/device-plugins`); kubelet.sock otherwise
 * (with the reason, for the log).
 */
export function initialRegistration(r: RegistrationOptions, pluginDir: string): { way: 'plugin-watcher' | 'kubelet-sock'; why: string } {
  if (r.mode !== 'auto') return { way: r.mode, why: `--device-plugin-registration=${r.mode}` };
  const registry = join(r.kubeletDir, PLUGINS_REGISTRY);
  if (resolve(pluginDir) !== join(resolve(r.kubeletDir), 'device-plugins')) {
    return { way: 'kubelet-sock', why: `the device plugin folder ${pluginDir} is not ${join(r.kubeletDir, 'device-plugins')}, so the kubelet's plugin watcher is unknown` };
  }
  let isDir = false;
  try {
    isDir = statSync(registry).isDirectory();
  } catch {
    /* absent */
  }
  return isDir ? { way: 'plugin-watcher', why: `${registry} exists` } : { way: 'kubelet-sock', why: `${registry} does not exist` };
}

/** Registration state of a pool, for status and /readyz. */
export interface PoolPluginState {
  registered: boolean;
  /** Last registration or serving error, cleared on success. */
  error?: string;
  registrations: number;
  /** How the current registration was made. */
  via?: RegisteredVia;
}

/** Writes one device-info file: a stale file is removed first, the new one is read-only (0444). */
export function writeDevinfoFile(dir: string, f: DevInfoFile): void {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, f.fileName);
  rmSync(path, { force: true });
  writeFileSync(path, f.content, { mode: 0o444, flag: 'wx' });
}

export class PoolPlugin {
  readonly socketPath: string;
  private slices = new Map<string, Slice>();
  private server: PoolServer | undefined;
  private readonly controller = new AbortController();
  private readonly signal: AbortSignal;
  private restartReason: string | undefined;
  private registeredKubelet: string | undefined;
  private lastSeenKubelet: string | undefined;
  private wakers: (() => void)[] = [];
  private running: Promise<void> | undefined;
  private readonly log: Logger;
  /** Device-info files this process wrote, by slice ID: the file name and what it holds. */
  private readonly devinfoWritten = new Map<string, { file: string; content: string }>();
  /**
   * Set by stop() without keepDevices: the pool is gone, so its devices are withdrawn (empty list)
   * and its files removed. The agent's own shutdown (parent signal) never withdraws.
   */
  private withdraw = false;
  /** The registration socket while serving through the plugin watcher. */
  private reg: RegistrationSocket | undefined;
  readonly state: PoolPluginState = { registered: false, registrations: 0 };

  constructor(private readonly opts: PoolPluginOptions) {
    this.socketPath = join(opts.pluginDir, socketName(opts.pool.name));
    this.signal = AbortSignal.any([opts.signal, this.controller.signal]);
    this.log = opts.logger.child({ component: 'pool', pool: opts.pool.name });
  }

  get pool(): PoolSpec {
    return this.opts.pool;
  }

  /**
   * Takes plan changes that keep the pool's identity (consumption, policy, class, mode); a new name
   * or resource name needs a new PoolPlugin.
   */
  setPool(pool: PoolSpec): void {
    if (pool.name !== this.opts.pool.name || pool.resourceName !== this.opts.pool.resourceName) throw new Error('setPool cannot change the pool identity');
    this.opts.pool = pool;
  }

  /** The current snapshot of the pool's slices. */
  snapshot(): ReadonlyMap<string, Slice> {
    return this.slices;
  }

  /**
   * Replaces the pool's slices; ListAndWatch streams get the new list only when it changed.
   * Removes device-info files of slices that disappeared and rewrites the CDI spec.
   */
  update(slices: readonly Slice[]): void {
    const next = new Map(slices.map((s) => [s.id, s]));
    for (const [id, s] of this.slices) {
      if (!next.has(id) && wantsDevinfo(this.opts.pool, s)) this.removeDevinfo(id);
    }
    this.slices = next;
    if (this.opts.cdi.enabled) {
      try {
        syncCdiSpec(this.opts.cdi.dir, this.opts.pool.name, buildCdiSpec(this.opts.pool.name, this.opts.pool.resourceName, slices));
      } catch (err) {
        this.log.error({ err }, 'cannot write CDI spec');
      }
    }
    this.server?.push();
  }

  /**
   * Sends the current list again even though it did not change. The kubelet rewrites its device
   * checkpoint on every list it receives, without the pods it has since found gone (it prunes them
   * on a PodResources List once its pod sources are ready): this is how a stale entry goes away.
   */
  resend(): void {
    this.server?.push(true);
  }

  /** Starts the serve/register loop (idempotent). */
  start(): void {
    this.running ??= this.run().catch((err: unknown) => this.log.error({ err }, 'pool plugin loop failed'));
  }

  /**
   * Stops serving (idempotent). By default the pool is gone: an empty list tells the kubelet to drop
   * its devices, and the socket, device-info files and CDI spec are removed. With `keepDevices`
   * (agent shutdown or upgrade) the streams just close: the kubelet keeps the devices for its
   * grace period until the next agent registers, and running pods keep their CDI spec and files.
   */
  async stop(opts: { keepDevices?: boolean } = {}): Promise<void> {
    this.withdraw = !opts.keepDevices;
    this.controller.abort();
    this.wake();
    await this.running;
  }

  private wake(): void {
    const w = this.wakers;
    this.wakers = [];
    for (const f of w) f();
  }

  /** Sleeps `ms`, or less when woken or aborted. */
  private async sleep(ms: number): Promise<void> {
    if (this.signal.aborted) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.signal.removeEventListener('abort', done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.wakers.push(done);
      this.signal.addEventListener('abort', done, { once: true });
    });
  }

  /** Level-triggered check from the plugin dir watcher. */
  private check(): void {
    const server = this.server;
    const kubelet = this.opts.watcher.kubeletIdentity();
    if (server && this.restartReason === undefined) {
      if (server.identity !== undefined && !server.socketIntact()) this.requestRestart('plugin socket removed');
      else if (this.reg && !this.reg.intact()) this.requestRestart('registration socket removed');
      // Through the watcher, a restarted kubelet finds the registration socket by itself.
      else if (!this.reg && this.state.registered && kubelet !== undefined && kubelet !== this.registeredKubelet) this.requestRestart('kubelet.sock recreated');
    }
    if (kubelet !== this.lastSeenKubelet) {
      this.lastSeenKubelet = kubelet;
      this.wake();
    }
  }

  private requestRestart(reason: string): void {
    if (this.restartReason !== undefined || this.signal.aborted) return;
    this.restartReason = reason;
    this.log.info({ reason }, 'kubelet restart detected; re-registering');
    this.opts.metrics.kubeletRestarts.inc({ pool: this.opts.pool.name });
    this.wake();
  }

  private setRegistered(registered: boolean, error?: string, via?: RegisteredVia): void {
    const changed = this.state.registered !== registered || this.state.error !== error || this.state.via !== via;
    this.state.registered = registered;
    if (error === undefined) delete this.state.error;
    else this.state.error = error;
    if (via === undefined) delete this.state.via;
    else this.state.via = via;
    if (changed) this.opts.onStateChange?.();
  }

  private async run(): Promise<void> {
    const unsubscribe = this.opts.watcher.onChange(() => this.check());
    const registration = this.opts.registration ?? { mode: 'kubelet-sock' as const, kubeletDir: '/var/lib/kubelet' };
    const first = initialRegistration(registration, this.opts.pluginDir);
    let way = first.way;
    this.log.info({ way, why: first.why }, 'device plugin registration');
    let startDelay = 100;
    try {
      while (!this.signal.aborted) {
        this.restartReason = undefined;
        const path = way === 'plugin-watcher' ? socketPath(kubeletPluginFolder(registration.kubeletDir), `dp-${this.opts.pool.name}`) : this.socketPath;
        const server = new PoolServer(path, this.serverView(), this.log);
        try {
          await server.start();
          startDelay = 100;
        } catch (err) {
          this.log.error({ err, socket: path }, 'cannot serve the plugin socket; retrying');
          this.setRegistered(false, `cannot serve ${path}: ${String(err)}`);
          await server.stop(false);
          await this.sleep(startDelay);
          startDelay = Math.min(startDelay * 2, 5000);
          continue;
        }
        this.server = server;
        if (way === 'kubelet-sock') {
          server.onStreamEnd(() => this.requestRestart('ListAndWatch stream ended'));
          await this.registerThroughKubeletSock();
          // Serve until a restart is wanted or we are stopped; the watcher wakes us.
          while (!this.signal.aborted && this.restartReason === undefined) await this.sleep(5000);
        } else if ((await this.serveThroughWatcher(server, registration)) === 'fall back') {
          way = 'kubelet-sock';
        }
        this.server = undefined;
        this.setRegistered(false, this.signal.aborted ? undefined : this.restartReason);
        await server.stop(this.signal.aborted && this.withdraw);
        // After the endpoint: a pool that is gone first sends its empty list, then deregisters.
        await this.reg?.stop();
        this.reg = undefined;
      }
    } finally {
      unsubscribe();
      if (this.withdraw) this.cleanupFiles();
      this.setRegistered(false);
    }
  }

  /** Register through kubelet.sock until it succeeds (backoff), a restart is wanted or we are stopped. */
  private async registerThroughKubeletSock(): Promise<void> {
    const register = this.opts.register ?? registerWithKubelet;
    let delay = 100;
    while (!this.signal.aborted && this.restartReason === undefined) {
      const kubelet = this.opts.watcher.kubeletIdentity();
      this.lastSeenKubelet = kubelet;
      if (kubelet === undefined) {
        this.setRegistered(false, 'kubelet.sock is absent');
        await this.sleep(delay);
        delay = Math.min(delay * 2, 2000);
        continue;
      }
      try {
        await register({ kubeletSocket: this.opts.watcher.kubeletSocket, endpoint: socketName(this.opts.pool.name), resourceName: this.opts.pool.resourceName });
        this.registeredKubelet = kubelet;
        this.state.registrations++;
        this.opts.metrics.registrations.inc({ pool: this.opts.pool.name, result: 'ok' });
        this.log.info({ resourceName: this.opts.pool.resourceName, socket: this.socketPath }, 'registered with the kubelet through kubelet.sock');
        this.setRegistered(true, undefined, 'KubeletSocket');
        return;
      } catch (err) {
        this.opts.metrics.registrations.inc({ pool: this.opts.pool.name, result: 'error' });
        const message = (err as grpc.ServiceError).details || String(err);
        this.log.warn({ err: message, retryInMs: delay }, 'Register failed; retrying');
        this.setRegistered(false, `Register failed: ${message}`);
        await this.sleep(delay);
        delay = Math.min(delay * 2, 5000);
      }
    }
  }

  /**
   * Offers the pool to the kubelet's plugin watcher and serves until a restart is wanted or we are
   * stopped. The kubelet owns the connection: after a disconnect (its restart) we wait for it to
   * connect again and only re-create the registration socket when it has not within `reconnectMs`
   * (re-creating deregisters the live connection, so doing it on every stream end would loop).
   * Returns 'fall back' when `auto` should use kubelet.sock instead.
   */
  private async serveThroughWatcher(server: PoolServer, r: RegistrationOptions): Promise<'served' | 'fall back'> {
    const name = this.opts.pool.name;
    let refused: string | undefined;
    let everRegistered = false;
    let lostAt: number | undefined;
    const reg = new RegistrationSocket(
      socketPath(join(r.kubeletDir, PLUGINS_REGISTRY), `virtualio.dev-dp-${name}`),
      () => ({ type: 'DevicePlugin', name: this.opts.pool.resourceName, endpoint: server.socketPath, supportedVersions: [DEVICE_PLUGIN_VERSION] }),
      {
        onStatus: (ok, error) => {
          if (ok) {
            everRegistered = true;
            refused = undefined;
            lostAt = undefined;
            this.state.registrations++;
            this.opts.metrics.registrations.inc({ pool: name, result: 'ok' });
            this.log.info({ resourceName: this.opts.pool.resourceName, socket: server.socketPath, registration: reg.path }, 'registered with the kubelet through its plugin watcher');
            // Registered (and /readyz) means the kubelet holds our device list: the kubelet opens
            // ListAndWatch around the time it notifies, and admits pods only against that list.
            if (server.streamCount > 0) this.setRegistered(true, undefined, 'PluginWatcher');
            else this.setRegistered(false, 'the kubelet registered the plugin; waiting for it to open ListAndWatch');
          } else {
            refused = error;
            this.opts.metrics.registrations.inc({ pool: name, result: 'error' });
            this.log.warn({ error }, 'the kubelet refused the device plugin');
            this.setRegistered(false, `the kubelet's plugin watcher refused the device plugin: ${error}`);
          }
          this.wake();
        },
      },
    );
    server.onStreamEnd(() => {
      lostAt = Date.now();
      this.setRegistered(false, 'the kubelet closed ListAndWatch (restart?); waiting for its plugin watcher to connect again');
      this.wake();
    });
    server.onStreamStart(() => {
      lostAt = undefined;
      if (everRegistered) this.setRegistered(true, undefined, 'PluginWatcher');
    });
    try {
      await reg.start();
      this.reg = reg; // only a started socket is watched for removal, and stopped by run()
    } catch (err) {
      this.log.error({ err, socket: reg.path }, 'cannot create the registration socket');
      if (r.mode === 'auto') return 'fall back';
      this.setRegistered(false, `cannot create ${reg.path}: ${String(err)}`);
      await this.sleep(5000);
      this.restartReason ??= 'registration socket failed';
      return 'served';
    }
    if (!this.state.registered) this.setRegistered(false, `waiting for the kubelet's plugin watcher to pick up ${reg.path}`);
    const fallbackMs = r.fallbackMs ?? 30_000;
    const reconnectMs = r.reconnectMs ?? 30_000;
    // The fallback clock runs only while kubelet.sock is up: a kubelet that is still starting (or
    // down) has not had its chance to pick the socket up.
    let upSince: number | undefined;
    while (!this.signal.aborted && this.restartReason === undefined) {
      const kubeletUp = this.opts.watcher.kubeletIdentity() !== undefined;
      upSince = kubeletUp ? upSince ?? Date.now() : undefined;
      if (r.mode === 'auto' && !everRegistered) {
        const why = refused !== undefined
          ? `the kubelet refused it: ${refused}`
          : upSince !== undefined && Date.now() - upSince >= fallbackMs ? `the kubelet has not picked up ${reg.path} within ${Math.round(fallbackMs / 1000)} s of kubelet.sock being up` : undefined;
        if (why !== undefined) {
          this.log.warn({ why }, 'falling back from the plugin watcher to kubelet.sock');
          return 'fall back';
        }
      }
      if (lostAt !== undefined && kubeletUp && Date.now() - lostAt >= reconnectMs) {
        this.requestRestart(`the kubelet has not connected again within ${Math.round(reconnectMs / 1000)} s`);
        break;
      }
      await this.sleep(1000);
    }
    return 'served';
  }

  private cleanupFiles(): void {
    for (const [id, s] of this.slices) if (wantsDevinfo(this.opts.pool, s)) this.removeDevinfo(id);
    for (const id of [...this.devinfoWritten.keys()]) this.removeDevinfo(id);
    if (this.opts.cdi.enabled) {
      try {
        syncCdiSpec(this.opts.cdi.dir, this.opts.pool.name, undefined);
      } catch (err) {
        this.log.warn({ err }, 'cannot remove CDI spec');
      }
    }
  }

  private removeDevinfo(id: string): void {
    const name = this.devinfoWritten.get(id)?.file ?? devinfoFileName(this.opts.pool.resourceName, id);
    this.devinfoWritten.delete(id);
    try {
      rmSync(join(this.opts.devinfoDir, name), { force: true });
    } catch (err) {
      this.log.warn({ err, file: name }, 'cannot remove device-info file');
    }
  }

  private serverView(): ServerView {
    const Allocate: DevicePluginHandlers['Allocate'] = (call, cb) => {
      const end = this.opts.window?.begin('Allocate');
      try {
        this.answerAllocate(call, cb);
      } finally {
        end?.();
      }
    };
    const GetPreferredAllocation: DevicePluginHandlers['GetPreferredAllocation'] = (call, cb) => {
      const end = this.opts.window?.begin('GetPreferredAllocation');
      // The kubelet reserves what it picks right after this answer: a List of ours still in flight
      // must have reached it before (allocation-window.ts).
      void (this.opts.window?.listsDone() ?? Promise.resolve()).then(() => {
        try {
          const pool = this.opts.pool;
          const containerResponses = call.request.containerRequests.map((r) => ({ deviceIDs: preferredAllocation(r, pool, this.slices) }));
          cb(null, { containerResponses });
        } catch (err) {
          this.log.error({ err }, 'GetPreferredAllocation failed');
          cb({ code: grpc.status.INTERNAL, details: String(err) });
        } finally {
          end?.();
        }
      });
    };
    return { devices: () => deviceList(this.slices.values()), handlers: { Allocate, GetPreferredAllocation } };
  }

  private answerAllocate(call: Parameters<DevicePluginHandlers['Allocate']>[0], cb: Parameters<DevicePluginHandlers['Allocate']>[1]): void {
    const pool = this.opts.pool;
    const t0 = process.hrtime.bigint();
    const elapsed = (): number => Number(process.hrtime.bigint() - t0) / 1e9;
    const out = allocate(call.request, pool, this.slices, { cdi: this.opts.cdi.enabled });
    if (!out.ok) {
      this.opts.metrics.allocateSeconds.observe({ pool: pool.name, result: 'error' }, elapsed());
      this.log.warn({ code: out.code, error: out.message }, 'Allocate rejected');
      cb({ code: grpc.status[out.code], details: out.message });
      return;
    }
    const ids = call.request.containerRequests.flatMap((c) => c.devicesIds);
    const refused = this.opts.admit?.(pool.name, pool.resourceName, ids);
    if (refused) {
      this.opts.metrics.allocateSeconds.observe({ pool: pool.name, result: 'error' }, elapsed());
      this.log.error({ ids, reason: refused }, 'Allocate refused: the slice is held elsewhere or being changed');
      cb({ code: grpc.status.FAILED_PRECONDITION, details: `pool ${pool.name}: ${refused}` });
      return;
    }
    for (const f of out.devinfo) {
      // Its content depends on the slice alone: one an earlier Allocate wrote and that is still there
      // is not written again (a VM restarted on the same VF), so only the first Allocate of a VF pays.
      const had = this.devinfoWritten.get(f.deviceId);
      if (had?.file === f.fileName && had.content === f.content && existsSync(join(this.opts.devinfoDir, f.fileName))) continue;
      try {
        writeDevinfoFile(this.opts.devinfoDir, f);
        this.devinfoWritten.set(f.deviceId, { file: f.fileName, content: f.content });
      } catch (err) {
        this.log.error({ err, file: f.fileName }, 'cannot write Multus device-info file');
        if (pool.consumption === 'SRIOVNetwork') {
          this.opts.metrics.allocateSeconds.observe({ pool: pool.name, result: 'error' }, elapsed());
          cb({ code: grpc.status.INTERNAL, details: `pool ${pool.name}: cannot write device-info file ${f.fileName}: ${String(err)}` });
          return;
        }
      }
    }
    // The answer first: grpc-js hands it to Node's HTTP/2 session, which writes it in the event
    // loop's next check phase; the metric, the log line and what follows an allocation wait until then.
    const seconds = elapsed();
    cb(null, out.response);
    setImmediate(() => {
      this.opts.metrics.allocateSeconds.observe({ pool: pool.name, result: 'ok' }, seconds);
      this.log.info({ ids }, 'allocated');
      this.opts.onAllocated?.(pool.name, ids);
    });
  }
}
