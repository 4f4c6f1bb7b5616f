// The kubelet-facing gRPC server of the DRA driver on its plugin socket: DRAPlugin v1 and v1beta1
// (NodePrepareResources / NodeUnprepareResources, one claim at a time through the driver, timed for
// the agent's latency histogram) and DRAResourceHealth (the health stream).
import { unlinkSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { loadDraHealthApi, loadDraV1Api, loadDraV1beta1Api } from '../../../proto/load.js';
import type { DRAPluginHandlers } from '../../../proto/generated/dra-v1/k8s/io/kubelet/pkg/apis/dra/v1/DRAPlugin.js';
import type { DRAPluginHandlers as DRAPluginV1beta1Handlers } from '../../../proto/generated/dra-v1beta1/k8s/io/kubelet/pkg/apis/dra/v1beta1/DRAPlugin.js';
import { shutdownWithin } from '../kubelet/unix-grpc.js';
import type { PrepareOutcome } from './driver-options.js';
import type { HealthStream } from './health-stream.js';
import type { ClaimRef } from './prepare.js';

/** What the server calls into. */
export interface DraPluginBackend {
  prepare: (ref: ClaimRef) => Promise<PrepareOutcome>;
  unprepare: (ref: ClaimRef) => Promise<string>;
  observe?: ((operation: 'prepare' | 'unprepare', ok: boolean, seconds: number) => void) | undefined;
  watchHealth: (call: HealthStream) => void;
}

function handlers(b: DraPluginBackend): DRAPluginHandlers & DRAPluginV1beta1Handlers {
  return {
    NodePrepareResources: (call, cb) => {
      const claims = call.request.claims ?? [];
      Promise.all(claims.map(async (c) => {
        const t = process.hrtime.bigint();
        const out = await b.prepare({ namespace: c.namespace, uid: c.uid, name: c.name });
        b.observe?.('prepare', out.error === '', Number(process.hrtime.bigint() - t) / 1e9);
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
        const error = await b.unprepare({ namespace: c.namespace, uid: c.uid, name: c.name });
        b.observe?.('unprepare', error === '', Number(process.hrtime.bigint() - t) / 1e9);
        return [c.uid, { error }] as const;
      })).then(
        (pairs) => cb(null, { claims: Object.fromEntries(pairs) }),
        (err: unknown) => cb({ code: grpc.status.INTERNAL, details: String(err) }),
      );
    },
  };
}

/** A server with the DRA plugin and health services, not bound yet. */
export function draPluginServer(b: DraPluginBackend): grpc.Server {
  const server = new grpc.Server();
  const h = handlers(b);
  server.addService(loadDraV1Api().k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin.service, h);
  server.addService(loadDraV1beta1Api().k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin.service, h);
  server.addService(loadDraHealthApi().v1alpha1.DRAResourceHealth.service, {
    NodeWatchResources: (call: HealthStream) => b.watchHealth(call),
  });
  return server;
}

/** Shuts `server` down (if any) and removes its socket. */
export async function stopServer(server: grpc.Server | undefined, socket: string): Promise<void> {
  if (server) await shutdownWithin(server, 2000);
  try {
    unlinkSync(socket);
  } catch {
    /* absent */
  }
}
