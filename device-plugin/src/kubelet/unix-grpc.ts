// The two halves every gRPC server the agent offers the kubelet shares (device plugin, plugin-watcher
// registration, DRA): bind on a unix socket that replaces any stale file, and a graceful stop that
// is forced after a deadline so a stuck peer never holds shutdown.
import { mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';

/** Removes a stale file at `socket`, creates its folder, and binds `server` there (insecure: local only). */
export function bindUnix(server: grpc.Server, socket: string): Promise<void> {
  try {
    unlinkSync(socket);
  } catch {
    /* absent */
  }
  mkdirSync(dirname(socket), { recursive: true });
  return new Promise((resolve, reject) => {
    server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
  });
}

/** Lets open calls finish, then forces the server down after `graceMs` at most. */
export function shutdownWithin(server: grpc.Server, graceMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const t = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(t);
      resolve();
    });
  });
}
