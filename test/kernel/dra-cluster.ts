// Host side of the real-kernel DRA scenario: a REAL etcd + kube-apiserver + kube-scheduler on this
// machine's loopback, reachable from the guest only through run.sh's restricted user network
// (10.0.2.100:6443 in the guest → tcp-relay.mjs → 127.0.0.1:<port> here). It holds what a cluster
// holds before a VM's pod starts on the guest: the CRDs, the Node the guest's agent runs as, that
// node's VirtualIONode with an igb pool served through DRA and an on-demand mdev pool on the mtty
// sample (guest/dra-ondemand.ts makes its claims), the pools' DeviceClasses, a ResourceClaim
// and a pod using a VF (the scheduler allocates the claim once the guest's agent publishes its slices,
// and binds the pod to the node). The guest finds its credentials in <results>/dra/.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { deviceClassFor } from '../../device-plugin/src/dra/devices.js';
import { REPO_ROOT, startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import { kubectlOk } from '../support/cluster.js';
import { OD } from './guest/dra-ondemand.js';
import { waitCrdsEstablished } from '../support/crd-wait.js';

/** The guest agent's node name, the pool, the claim and the pod: shared with guest/dra-scenario.ts through setup.json. */
export const DRA_NODE = 'kernel-guest';
export const DRA_POOL = 'nic-dra';
export const DRA_CLAIM = 'vm-nic';
export const DRA_POD = 'virt-launcher-vm-nic';
/** The VF settings the claim carries (opaque parameters of driver virtualio.dev), set on the igb PF at prepare. */
export const DRA_VF_SETTINGS = { mac: '02:00:5e:19:00:01', vlan: 100 } as const;
/** Where the guest dials the apiserver (run.sh's guestfwd rule) and the name its certificate carries. */
export const GUEST_APISERVER = 'https://10.0.2.100:6443';

/** Why the DRA scenario cannot run here, or undefined. */
export function draSkipReason(): string | undefined {
  const bin = process.env.VIO_BIN_DIR;
  if (!bin) return 'VIO_BIN_DIR is not set (the Kubernetes binaries test/cluster/build-bins.sh builds; scripts/test.sh builds them before jest)';
  for (const b of ['etcd', 'kube-apiserver', 'kube-scheduler', 'kubectl']) {
    if (!existsSync(join(bin, b))) return `${join(bin, b)} does not exist (run test/cluster/build-bins.sh)`;
  }
  return undefined;
}

/** The file run.sh's relay reads the apiserver port from (VIO_KERNEL_APISERVER_PORT_FILE). */
export const portFileIn = (results: string): string => join(results, 'dra', 'apiserver-port');

export interface DraCluster {
  cp: ControlPlane;
  kubectl: (args: string[], input?: string) => Promise<string>;
}

/** The igb PF's address in the guest: run.sh puts it alone behind root port rp1, bus 01. */
const IGB_PF = '0000:01:00.0';

export async function startDraCluster(results: string): Promise<DraCluster> {
  const dir = join(results, 'dra');
  mkdirSync(dir, { recursive: true });
  const cp = await startControlPlane({ scheduler: true });
  const kubectl = (args: string[], input?: string): Promise<string> => kubectlOk(args, { input, kubeconfig: cp.kubeconfig, binDir: cp.binDir });
  try {
    await kubectl(['apply', '--server-side', '-f', join(REPO_ROOT, 'crds')]);
    await waitCrdsEstablished(kubectl, ['virtualionodes.virtualio.dev'], 60);
    // The Node a kubelet would register; no kubelet runs (the guest's gRPC client plays its part), so
    // the scheduler's view of it is written here: capacity for one pod, the not-ready taint the
    // TaintNodesByCondition admission adds removed (no node lifecycle controller runs).
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: DRA_NODE, labels: { 'kubernetes.io/hostname': DRA_NODE } } }));
    await kubectl(['taint', 'node', DRA_NODE, 'node.kubernetes.io/not-ready-']).catch(() => '');
    const res = { cpu: '2', memory: '2Gi', pods: '10' };
    await kubectl(['patch', 'node', DRA_NODE, '--subresource=status', '--type=merge', '-p', JSON.stringify({
      status: { capacity: res, allocatable: res, conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'the guest plays the kubelet', lastHeartbeatTime: new Date().toISOString(), lastTransitionTime: new Date().toISOString() }] },
    })]);
    const plan = {
      apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: DRA_NODE },
      spec: { pools: [
        { name: DRA_POOL, resourceName: `virtualio.dev/${DRA_POOL}`, class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', frontEnd: 'DRA', count: 2, devices: [{ pciAddress: IGB_PF }] },
        // The on-demand mdev pool of guest/dra-ondemand.ts (its claims are made by the guest, in order).
        { name: OD.pool, resourceName: `virtualio.dev/${OD.pool}`, class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', frontEnd: 'DRA', onDemand: { mdevTypes: [...OD.types] }, devices: [{ pciAddress: OD.parent }] },
      ] },
    };
    await kubectl(['apply', '--server-side', '--field-manager=virtualio-operator', '-f', '-'], YAML.stringify(plan));
    for (const pool of [DRA_POOL, OD.pool]) await kubectl(['apply', '--server-side', '-f', '-'], JSON.stringify(deviceClassFor(pool)));
    const claim = {
      apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name: DRA_CLAIM, namespace: 'default' },
      spec: { devices: {
        requests: [{ name: 'nic', exactly: { deviceClassName: deviceClassFor(DRA_POOL).metadata.name } }],
        config: [{ requests: ['nic'], opaque: { driver: 'virtualio.dev', parameters: { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VfNetworkConfig', ...DRA_VF_SETTINGS } } }],
      } },
    };
    const pod = {
      apiVersion: 'v1', kind: 'Pod', metadata: { name: DRA_POD, namespace: 'default' },
      spec: { resourceClaims: [{ name: 'nic', resourceClaimName: DRA_CLAIM }], containers: [{ name: 'compute', image: 'example.invalid/virt-launcher:1', resources: { claims: [{ name: 'nic' }] } }] },
    };
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [claim, pod] }));
    // The guest's credentials: the admin client certificate, the cluster CA, and the name in the
    // apiserver's serving certificate (it has no SAN for the guest's address).
    const kc = YAML.parse(readFileSync(cp.kubeconfig, 'utf8')) as { clusters: { cluster: Record<string, string> }[]; users: { user: Record<string, string> }[] };
    const cluster = kc.clusters[0]?.cluster ?? {};
    const user = kc.users[0]?.user ?? {};
    const b64 = (s: string | undefined): string => Buffer.from(s ?? '', 'base64').toString('utf8');
    const guestKc = {
      apiVersion: 'v1', kind: 'Config', 'current-context': 'guest',
      clusters: [{ name: 'host', cluster: { server: GUEST_APISERVER, 'tls-server-name': 'localhost', 'certificate-authority-data': cluster['certificate-authority-data'] } }],
      users: [{ name: 'admin', user: { 'client-certificate-data': user['client-certificate-data'], 'client-key-data': user['client-key-data'] } }],
      contexts: [{ name: 'guest', context: { cluster: 'host', user: 'admin' } }],
    };
    // The relay forwards once the port is known; the guest waits for setup.json, written last.
    writeFileSync(portFileIn(results), `${new URL(cp.server).port}\n`);
    writeFileSync(join(dir, 'kubeconfig'), YAML.stringify(guestKc), { mode: 0o600 });
    writeFileSync(join(dir, 'setup.json'), `${JSON.stringify({
      node: DRA_NODE, pool: DRA_POOL, namespace: 'default', claim: DRA_CLAIM, pod: DRA_POD, server: GUEST_APISERVER, servername: 'localhost',
      hostPort: Number(new URL(cp.server).port), // only for the guest to check that it cannot dial it directly
      ca: b64(cluster['certificate-authority-data']), cert: b64(user['client-certificate-data']), key: b64(user['client-key-data']),
    }, null, 2)}\n`, { mode: 0o600 });
    return { cp, kubectl };
  } catch (err) {
    await cp.stop();
    throw err;
  }
}
