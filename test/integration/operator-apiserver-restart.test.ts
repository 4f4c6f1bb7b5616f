// The built operator survives a kube-apiserver restart in the middle of its work: its watches
// break, it keeps running, reconnects (re-listing as needed) and applies every change made right
// after the restart; no update is lost.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { REPO_ROOT, freePort, type ControlPlane } from '../cluster/control-plane.js';
import type { Pool, VioNode } from '../../operator/src/api/types.js';
import type { ClientNodeKube } from '../../operator/src/kube/client-node.js';
import { startOperatorCluster } from '../support/operator-cluster.js';
import type { KubeObject } from '../../operator/src/kube/ports.js';
import { Nodes, VirtualIODevices, VirtualIONodes } from '../../operator/src/kube/resources.js';
import { nicPF } from '../support/operator-fixtures.js';
import { editObject, spawnOperator, waitUntil, writeAgentStatus, type OperatorProcess } from '../support/operator-integration.js';

jest.setTimeout(300_000);

let cp: ControlPlane;
let kube: ClientNodeKube;
let op: OperatorProcess | undefined;
const logDir = mkdtempSync(join(tmpdir(), 'vio-op-restart-'));

const planOf = async (node: string) => ((await kube.get<VioNode>(VirtualIONodes, node))?.spec?.pools ?? []).map((p) => `${p.name}:${p.devices.map((d) => d.pciAddress).join('+')}`);
const pool = (name: string) => kube.get<Pool>(VirtualIODevices, name);

beforeAll(async () => {
  ({ cp, kube } = await startOperatorCluster());
  for (const n of ['node-a', 'node-b']) await kube.create(Nodes, { apiVersion: 'v1', kind: 'Node', metadata: { name: n, labels: { pool: 'yes' } } });
});

afterAll(async () => {
  await op?.kill('SIGKILL');
  await cp?.stop();
});

test('an apiserver restart mid-flight loses no update', async () => {
  op = spawnOperator({
    repoRoot: REPO_ROOT, nodeBin: process.execPath, logFile: join(logDir, 'operator.log'),
    args: ['--kubeconfig', cp.kubeconfig, '--identity', 'op', '--namespace', 'virtualio-system', '--lease-duration', '6s', '--metrics-address', `127.0.0.1:${await freePort()}`],
  });
  for (const n of ['node-a', 'node-b']) {
    await waitUntil(`VirtualIONode ${n}`, () => kube.get<VioNode>(VirtualIONodes, n));
    await writeAgentStatus(kube, n, { inventory: { devices: [...nicPF('0000:81:00.0', { netdev: 'ens1f0' }), ...nicPF('0000:82:00.0', { netdev: 'ens2f0' })] } });
  }
  await kube.create(VirtualIODevices, {
    apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name: 'vfs' },
    spec: { class: 'NIC', nodeSelector: { matchLabels: { pool: 'yes' } }, deviceSelector: { interfaceNames: ['ens1f0'] }, carving: { mode: 'SRIOV', count: 2 } },
  } as Pool);
  await waitUntil('planned on both nodes', async () => (await planOf('node-a')).join() === 'vfs:0000:81:00.0' && (await planOf('node-b')).join() === 'vfs:0000:81:00.0');

  await cp.restartApiserver();
  expect(op.child.exitCode).toBeNull();

  // Changes right after the restart, while the operator is still reconnecting.
  // (As a user's edit: read again and retry when the reconnecting operator wrote the object in between.)
  await editObject<Pool>(kube, VirtualIODevices, 'vfs', (p) => ({ ...p, spec: { ...p.spec, deviceSelector: { interfaceNames: ['ens2f0'] } } }));
  await editObject<KubeObject>(kube, Nodes, 'node-b', (nb) => ({ ...nb, metadata: { ...nb.metadata, labels: {} } }));
  await kube.create(VirtualIODevices, {
    apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name: 'after-restart' },
    spec: { class: 'NIC', deviceSelector: { interfaceNames: ['ens1f0'] }, carving: { mode: 'Passthrough' } },
  } as Pool);
  await writeAgentStatus(kube, 'node-a', {
    inventory: { devices: [...nicPF('0000:81:00.0', { netdev: 'ens1f0' }), ...nicPF('0000:82:00.0', { netdev: 'ens2f0' })] },
    pools: [{ name: 'vfs', state: 'Ready', capacity: 2, allocatable: 2, allocated: 0 }],
  });

  await waitUntil('node-a follows the edit', async () => (await planOf('node-a')).join() === 'after-restart:0000:81:00.0,vfs:0000:82:00.0', 90_000);
  await waitUntil('node-b lost vfs with its label', async () => (await planOf('node-b')).join() === 'after-restart:0000:81:00.0', 90_000);
  await waitUntil('status saw the agent write', async () => {
    const x = await pool('vfs');
    return x?.status?.observedGeneration === 2 && x.status.nodes === 1 && x.status.capacity === 2;
  }, 90_000);
  expect(op.child.exitCode).toBeNull();
});
