// One gRPC DevicePlugin server of one pool, bound to one socket. A PoolPlugin creates a new server
// for every (re)registration; the slice snapshot lives in the PoolPlugin and is read through `view`.
import { unlinkSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { loadDevicePluginApi } from '../../../proto/load.js';
import type { DevicePluginHandlers } from '../../../proto/generated/deviceplugin/v1beta1/DevicePlugin.js';
import type { Device__Input } from '../../../proto/generated/deviceplugin/v1beta1/Device.js';
import type { ListAndWatchResponse__Input } from '../../../proto/generated/deviceplugin/v1beta1/ListAndWatchResponse.js';
import type { Logger } from '../log.js';
import type { Slice } from '../model.js';
import { bindUnix, shutdownWithin } from '../kubelet/unix-grpc.js';
import { socketIdentity } from '../kubelet/watcher.js';

/** The ListAndWatch device list of a snapshot: ID, health, NUMA topology when known. Sorted by ID. */
export function deviceList(slices: Iterable<Slice>): Device__Input[] {
  return [...slices]
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .map((s) => {
      const d: Device__Input = { ID: s.id, health: s.health };
      if (s.numaNode !== undefined) d.topology = { nodes: [{ ID: s.numaNode }] };
      return d;
    });
}

/** What a server needs from its owner: the handlers' logic and the current device list. */
export interface ServerView {
  devices(): Device__Input[];
  handlers: Pick<DevicePluginHandlers, 'Allocate' | 'GetPreferredAllocation'>;
}

/** A bound gRPC server with its ListAndWatch streams. */
export class PoolServer {
  private server: grpc.Server | undefined;
  private readonly streams = new Set<grpc.ServerWritableStream<unknown, ListAndWatchResponse__Input>>();
  private lastSent = '';
  private stopping = false;
  private streamEndListeners = new Set<() => void>();
  private streamStartListeners = new Set<() => void>();
  /** Identity of the socket file we bound (to notice it being wiped). */
  identity: string | undefined;

  constructor(
    readonly socketPath: string,
    private readonly view: ServerView,
    private readonly logger: Logger,
  ) {}

  /** Removes a stale socket, binds and starts serving. */
  async start(): Promise<void> {
    const api = loadDevicePluginApi();
    const server = new grpc.Server();
    const handlers: DevicePluginHandlers = {
      GetDevicePluginOptions: (_call, cb) => cb(null, { preStartRequired: false, getPreferredAllocationAvailable: true }),
      ListAndWatch: (call) => this.onListAndWatch(call),
      GetPreferredAllocation: this.view.handlers.GetPreferredAllocation,
      Allocate: this.view.handlers.Allocate,
      PreStartContainer: (_call, cb) => cb(null, {}),
    };
    server.addService(api.v1beta1.DevicePlugin.service, handlers);
    await bindUnix(server, this.socketPath);
    this.server = server;
    this.identity = socketIdentity(this.socketPath);
  }

  /** True while our socket file is still the one we bound. */
  socketIntact(): boolean {
    return this.identity !== undefined && socketIdentity(this.socketPath) === this.identity;
  }

  /** Number of open ListAndWatch streams. */
  get streamCount(): number {
    return this.streams.size;
  }

  /** Called when the kubelet opens a ListAndWatch stream. */
  onStreamStart(listener: () => void): void {
    this.streamStartListeners.add(listener);
  }

  /** Called when a ListAndWatch stream ends while the server is not stopping. */
  onStreamEnd(listener: () => void): void {
    this.streamEndListeners.add(listener);
  }

  private onListAndWatch(call: grpc.ServerWritableStream<unknown, ListAndWatchResponse__Input>): void {
    if (this.stopping) {
      call.end();
      return;
    }
    this.streams.add(call);
    const ended = (): void => {
      if (!this.streams.delete(call)) return;
      if (!this.stopping) for (const l of this.streamEndListeners) l();
    };
    call.on('cancelled', ended);
    call.on('close', ended);
    call.on('error', (err) => {
      this.logger.debug({ err }, 'ListAndWatch stream error');
      ended();
    });
    const devices = this.view.devices();
    this.lastSent = JSON.stringify(devices);
    call.write({ devices });
    for (const l of this.streamStartListeners) l();
  }

  /** Sends the current list to every stream when it differs from the last one sent. */
  push(force = false): void {
    const devices = this.view.devices();
    const text = JSON.stringify(devices);
    if (text === this.lastSent && !force) return;
    this.lastSent = text;
    for (const s of this.streams) s.write({ devices });
  }

  /**
   * Stops serving (idempotent). With `sendEmpty`, each stream first gets an empty list so the kubelet
   * drops capacity at once. Removes our socket file only if it is still ours.
   */
  async stop(sendEmpty: boolean): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const s of this.streams) {
      try {
        if (sendEmpty) s.write({ devices: [] });
        s.end();
      } catch (err) {
        this.logger.debug({ err }, 'closing ListAndWatch stream');
      }
    }
    this.streams.clear();
    const server = this.server;
    this.server = undefined;
    if (server) {
      const ours = this.socketIntact();
      if (sendEmpty) {
        // Graceful: let the kubelet read the empty list, then force after a second at most.
        await shutdownWithin(server, 1000);
      } else {
        server.forceShutdown();
      }
      if (ours) {
        try {
          unlinkSync(this.socketPath);
        } catch {
          /* already gone */
        }
      }
    }
  }
}
