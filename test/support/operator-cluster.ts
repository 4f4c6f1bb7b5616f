// A private real control plane for the operator's process-level suites (failover, apiserver
// restart): builds dist/ (the suites spawn the built operator), starts etcd + kube-apiserver,
// installs our CRDs, creates the operator's namespace and returns a client on the admin kubeconfig.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT, startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import { ClientNodeKube } from '../../operator/src/kube/client-node.js';
import { installCrdFiles, kubectlAt } from './operator-integration.js';

export async function startOperatorCluster(): Promise<{ cp: ControlPlane; kube: ClientNodeKube }> {
  execFileSync(process.execPath, [join(REPO_ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(REPO_ROOT, 'tsconfig.build.json')], { cwd: REPO_ROOT, stdio: 'pipe' });
  const cp = await startControlPlane();
  await installCrdFiles(cp.binDir, cp.kubeconfig,
    [join(REPO_ROOT, 'crds/virtualio.dev_virtualiodevices.yaml'), join(REPO_ROOT, 'crds/virtualio.dev_virtualionodes.yaml')],
    ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev']);
  await kubectlAt(cp.binDir, cp.kubeconfig, ['create', 'namespace', 'virtualio-system']);
  return { cp, kube: ClientNodeKube.fromOptions({ kubeconfig: cp.kubeconfig }) };
}
