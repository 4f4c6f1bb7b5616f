// Detaching a resource from the kubelet's device manager without its devices going away: the first
// half of an agent hand-over (docs/design-decisions.md, "Agent upgrades without a capacity gap").
//
// The kubelet (pkg/kubelet/cm/devicemanager, v1.36.3) keeps one client per resource name. When a
// client's ListAndWatch stream ends, or its plugin-watcher socket goes, the kubelet disconnects the
// client *currently registered under that name* and marks all the resource's devices unhealthy
// (allocatable 0), whichever plugin that client belongs to. So an agent that stops while it is the
// current client zeroes the node's allocatable until the next agent registers; and one that stops
// after its successor registered disconnects the successor.
//
// A Register whose endpoint answers GetDevicePluginOptions with an error takes the other path:
// connectClient puts the new client under the name, PluginConnected fails before it touches the
// endpoint, and the kubelet deletes the name's client again (plugin/v1beta1/handler.go). Afterwards
// no client is registered under the name, the endpoint and its devices are untouched (healthy,
// allocatable unchanged), and the old agent's streams can end without any effect: the kubelet finds
// no client to disconnect. The next agent's registration then replaces the endpoint. Register
// answers the failure synchronously, so the detach is done when this returns.
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadDevicePluginApi } from '../../../proto/load.js';
import type { DevicePluginHandlers } from '../../../proto/generated/deviceplugin/v1beta1/DevicePlugin.js';
import { registerWithKubelet, type RegisterArgs } from './register.js';
import { bindUnix, shutdownWithin } from './unix-grpc.js';

/** What the kubelet answers when PluginConnected failed on GetDevicePluginOptions (the detach path). */
const DETACHED = /failed to get device plugin options/;
const REFUSAL = 'virtualio agent hand-over: this endpoint only detaches the resource from its previous plugin';

export interface DetachResult {
  resourceName: string;
  /** True when the kubelet answered as its detach path does. */
  detached: boolean;
  /** The kubelet's answer. */
  answer: string;
}

/**
 * Detaches each resource name from the kubelet's device manager through `kubeletSocket`, with a
 * short-lived endpoint in `pluginDir` that refuses GetDevicePluginOptions. Never throws for a
 * resource: each result says whether the kubelet took the detach path.
 */
export async function detachFromKubelet(opts: {
  kubeletSocket: string;
  pluginDir: string;
  resourceNames: readonly string[];
  register?: (args: RegisterArgs) => Promise<void>;
}): Promise<DetachResult[]> {
  const name = `virtualio-handover-${randomBytes(4).toString('hex')}.sock`;
  const socket = join(opts.pluginDir, name);
  const server = new grpc.Server();
  const refuse = (_call: unknown, cb: (err: grpc.ServiceError) => void): void => cb(Object.assign(new Error(REFUSAL), { code: grpc.status.UNAVAILABLE, details: REFUSAL, metadata: new grpc.Metadata() }));
  const handlers: DevicePluginHandlers = {
    GetDevicePluginOptions: refuse,
    ListAndWatch: (call) => call.destroy(new Error(REFUSAL)),
    GetPreferredAllocation: refuse,
    Allocate: refuse,
    PreStartContainer: refuse,
  };
  server.addService(loadDevicePluginApi().v1beta1.DevicePlugin.service, handlers);
  await bindUnix(server, socket);
  const register = opts.register ?? registerWithKubelet;
  const out: DetachResult[] = [];
  try {
    for (const resourceName of opts.resourceNames) {
      try {
        await register({ kubeletSocket: opts.kubeletSocket, endpoint: name, resourceName, timeoutMs: 15_000 });
        // Accepted: the kubelet now has a client on our refusing endpoint (not a kubelet we know).
        out.push({ resourceName, detached: false, answer: 'the kubelet accepted the detaching endpoint' });
      } catch (err) {
        const answer = (err as grpc.ServiceError).details || String(err);
        out.push({ resourceName, detached: DETACHED.test(answer), answer });
      }
    }
  } finally {
    await shutdownWithin(server, 1000);
    rmSync(socket, { force: true });
  }
  return out;
}
