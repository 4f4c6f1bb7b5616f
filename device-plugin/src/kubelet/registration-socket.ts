// A plugin-watcher registration socket: a gRPC `pluginregistration.Registration` server on a unix socket
// in the kubelet's plugins_registry folder. The kubelet notices the socket (inotify), calls GetInfo,
// connects to the endpoint it names, then reports the outcome through NotifyRegistrationStatus;
// removing the socket deregisters the plugin. Used by the DRA driver and by the device plugins.
import { createHash } from 'node:crypto';
import { unlinkSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadPluginRegistrationApi } from '../../../proto/load.js';
import type { RegistrationHandlers } from '../../../proto/generated/pluginregistration/pluginregistration/Registration.js';
import type { PluginInfo__Input } from '../../../proto/generated/pluginregistration/pluginregistration/PluginInfo.js';
import { bindUnix, shutdownWithin } from './unix-grpc.js';
import { socketIdentity } from './watcher.js';

/** The plugin-watcher folder under the kubelet's root folder. */
export const PLUGINS_REGISTRY = 'plugins_registry';

/** Longest unix socket path Linux accepts (sun_path is 108 bytes with the terminating NUL). */
export const MAX_SOCKET_PATH = 107;

/**
 * `<dir>/<stem>.sock`, or, when that path is too long for a unix socket, the stem cut short and
 * followed by 8 hex digits of its SHA-256 (stable across restarts, distinct per stem).
 */
export function socketPath(dir: string, stem: string): string {
  const plain = join(dir, `${stem}.sock`);
  if (Buffer.byteLength(plain) <= MAX_SOCKET_PATH) return plain;
  const hash = createHash('sha256').update(stem).digest('hex').slice(0, 8);
  const room = MAX_SOCKET_PATH - Buffer.byteLength(join(dir, `-${hash}.sock`));
  if (room < 1) throw new Error(`socket folder ${dir} is too long for a unix socket path`);
  return join(dir, `${stem.slice(0, room)}-${hash}.sock`);
}

export interface RegistrationEvents {
  /** The kubelet asked who we are (it found the socket). */
  onGetInfo?: () => void;
  /** The kubelet's verdict: registered, or the error it gives. */
  onStatus: (registered: boolean, error: string) => void;
}

export class RegistrationSocket {
  private server: grpc.Server | undefined;
  private identity: string | undefined;

  constructor(
    readonly path: string,
    private readonly info: () => PluginInfo__Input,
    private readonly events: RegistrationEvents,
  ) {}

  /** (Re)creates the socket: any previous server stops and a stale file is replaced. */
  async start(): Promise<void> {
    await this.stop();
    const server = new grpc.Server();
    const handlers: RegistrationHandlers = {
      GetInfo: (_call, cb) => {
        this.events.onGetInfo?.();
        cb(null, this.info());
      },
      NotifyRegistrationStatus: (call, cb) => {
        cb(null, {});
        this.events.onStatus(call.request.pluginRegistered, call.request.error);
      },
    };
    server.addService(loadPluginRegistrationApi().pluginregistration.Registration.service, handlers);
    await bindUnix(server, this.path);
    this.server = server;
    this.identity = socketIdentity(this.path);
  }

  /** True while the socket file is the one this server bound (false once removed or replaced). */
  intact(): boolean {
    return this.identity !== undefined && socketIdentity(this.path) === this.identity;
  }

  /** Stops serving and removes the socket if it is still ours (the kubelet then deregisters). */
  async stop(): Promise<void> {
    const server = this.server;
    const ours = this.intact();
    this.server = undefined;
    this.identity = undefined;
    if (server) await shutdownWithin(server, 2000);
    if (ours) {
      try {
        unlinkSync(this.path);
      } catch {
        /* already gone */
      }
    }
  }
}
