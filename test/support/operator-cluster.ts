// A private real control plane for the operator's process-level suites (failover, apiserver
// restart): builds dist/ (the suites spawn the built operator), starts etcd + kube-apiserver,
// installs our CRDs, creates the operator's namespace and returns a client on the admin kubeconfig.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT, startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import type { Logger } from 'pino';
import { ClientNodeKube } from '../../operator/src/kube/client-node.js';
import { CLUSTER_EVENTS_NAMESPACE, COMPONENT } from '../../operator/src/kube/resources.js';
import { Operator } from '../../operator/src/operator.js';
import { systemClock } from '../../operator/src/runtime/clock.js';
import { EventRecorder } from '../../operator/src/runtime/events.js';
import { installCrdFiles, kubectlAt } from './operator-integration.js';

export async function startOperatorCluster(): Promise<{ cp: ControlPlane; kube: ClientNodeKube }> {
  execFileSync(process.execPath, [join(REPO_ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(REPO_ROOT, 'tsconfig.build.json')], { cwd: REPO_ROOT, stdio: 'pipe' });
  const cp = await startControlPlane();
  await installCrdFiles(cp.binDir, cp.kubeconfig,
    ['virtualiodevices', 'virtualionodes', 'virtualionodeacks'].map((k) => join(REPO_ROOT, `crds/virtualio.dev_${k}.yaml`)),
    ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev', 'virtualionodeacks.virtualio.dev']);
  await kubectlAt(cp.binDir, cp.kubeconfig, ['create', 'namespace', 'virtualio-system']);
  return { cp, kube: ClientNodeKube.fromOptions({ kubeconfig: cp.kubeconfig }) };
}

/**
 * The operator in this process on `kube` (no KubeVirt CR managed, 50 ms debounce); returns what
 * stops it and waits until its work has ended.
 */
export function runOperatorInProcess(kube: ClientNodeKube, log: Logger): () => Promise<void> {
  const ac = new AbortController();
  const events = new EventRecorder({ kube, namespace: CLUSTER_EVENTS_NAMESPACE, component: COMPONENT, instance: 'it', clock: systemClock, log });
  const op = new Operator({
    kube, clock: systemClock, log, events,
    kubevirt: { namespace: 'kubevirt', name: 'kubevirt', manage: false, extra: { pciHostDevices: [], mediatedDevices: [] } },
    tuning: { kubevirtRecheckMs: 60_000, debounceMs: 50 },
  });
  const run = op.run(ac.signal);
  return async () => {
    ac.abort();
    await run;
  };
}
