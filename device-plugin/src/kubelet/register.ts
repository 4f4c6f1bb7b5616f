// The kubelet Registration client: one Register call per (re)start of a pool's server.
import * as grpc from '@grpc/grpc-js';
import { loadDevicePluginApi } from '../../../proto/load.js';

/** The API version every current kubelet accepts. */
export const DEVICE_PLUGIN_VERSION = 'v1beta1';

export interface RegisterArgs {
  kubeletSocket: string;
  /** Socket file name of our server inside the plugin dir. */
  endpoint: string;
  resourceName: string;
  /** Deadline for the whole call (the kubelet dials back synchronously inside it). */
  timeoutMs?: number;
}

/**
 * Calls `Registration.Register` on the kubelet socket with options
 * `{getPreferredAllocationAvailable: true, preStartRequired: false}`. Our server must already be
 * serving: the kubelet dials back and calls GetDevicePluginOptions before answering. Rejects with
 * the gRPC error (e.g. UNAVAILABLE when the kubelet is down).
 */
export async function registerWithKubelet(args: RegisterArgs): Promise<void> {
  const api = loadDevicePluginApi();
  const client = new api.v1beta1.Registration(`unix:${args.kubeletSocket}`, grpc.credentials.createInsecure());
  try {
    await new Promise<void>((resolve, reject) => {
      client.register(
        {
          version: DEVICE_PLUGIN_VERSION,
          endpoint: args.endpoint,
          resourceName: args.resourceName,
          options: { getPreferredAllocationAvailable: true, preStartRequired: false },
        },
        { deadline: Date.now() + (args.timeoutMs ?? 15_000) },
        (err) => (err ? reject(err) : resolve()),
      );
    });
  } finally {
    client.close();
  }
}
