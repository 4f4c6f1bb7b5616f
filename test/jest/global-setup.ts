// Starts one real control plane (etcd + kube-apiserver) for the integration project and hands it to
// the test workers through environment variables:
//   VIO_KUBECONFIG  admin kubeconfig      VIO_APISERVER  https URL
//   VIO_CP_DIR      run dir (logs)        VIO_BIN_DIR    Kubernetes/etcd/helm binaries
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startControlPlane, type ControlPlane } from '../cluster/control-plane.ts';

declare global {
  var __VIO_CONTROL_PLANE__: ControlPlane | undefined;
}

export default async function globalSetup(): Promise<void> {
  const cp = await startControlPlane({ verbose: true, scheduler: true });
  globalThis.__VIO_CONTROL_PLANE__ = cp;
  process.env.VIO_KUBECONFIG = cp.kubeconfig;
  process.env.VIO_APISERVER = cp.server;
  process.env.VIO_CP_DIR = cp.dir;
  process.env.VIO_BIN_DIR = cp.binDir;
  // The summary reporter prints these logs when a test fails.
  writeFileSync(join(process.env.VIO_RESULTS_DIR ?? cp.dir, 'control-plane-logs.json'), JSON.stringify(cp.logs));
}
