// KubeVirt's permittedHostDevices under a GitOps tool, on a real kube-apiserver with KubeVirt's real
// CRD (a private control plane: the operator is cluster-wide). An Argo CD-like self-heal keeps
// server-side applying a KubeVirt CR from "Git" that sets pciHostDevices (field manager
// argocd-controller, forcing conflicts as Argo CD does): the operator re-applies with backoff,
// gives up after the configured rounds, names argocd-controller in the pool's KubeVirtPermitted
// condition and in a Warning Event, and no longer writes. A new operator process (a restart, a new
// leader) reads the give-up back from that condition and does not start another fight. Once the lists are taken out of the Git
// manifest (the documented fix), the operator applies its entries again and a server-side diff of the
// Git manifest is empty: the tool sees no drift.
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { jest } from '@jest/globals';
import pino from 'pino';
import YAML from 'yaml';
import { REPO_ROOT, startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import type { Pool, VioNode } from '../../operator/src/api/types.js';
import { ClientNodeKube } from '../../operator/src/kube/client-node.js';
import type { KubeObject } from '../../operator/src/kube/ports.js';
import { CLUSTER_EVENTS_NAMESPACE, COMPONENT, FIELD_MANAGER, KubeVirts, Nodes, VirtualIODevices, VirtualIONodes } from '../../operator/src/kube/resources.js';
import { Operator } from '../../operator/src/operator.js';
import { systemClock } from '../../operator/src/runtime/clock.js';
import { EventRecorder } from '../../operator/src/runtime/events.js';
import { gpu } from '../support/operator-fixtures.js';
import { installCrdFiles, kubectlAt, waitUntil, writeAgentStatus } from '../support/operator-integration.js';

jest.setTimeout(40 * 60_000); // the first run builds KubeVirt's CRD generator

const run = promisify(execFile);
const log = pino({ level: process.env.VIO_TEST_LOG_LEVEL ?? 'silent' });
const ARGO = 'argocd-controller';
let cp: ControlPlane;
let kube: ClientNodeKube;
let dir: string;
let ac = new AbortController();
let operator: Promise<void> | undefined;
const operatorOptions = () => ({
  kube, clock: systemClock, log,
  events: new EventRecorder({ kube, namespace: CLUSTER_EVENTS_NAMESPACE, component: COMPONENT, instance: 'it', clock: systemClock, log }),
  kubevirt: { namespace: 'kubevirt', name: 'kubevirt', manage: true, extra: { pciHostDevices: [], mediatedDevices: [] } },
  tuning: { kubevirtRecheckMs: 500, debounceMs: 50, kubevirtContest: { baseMs: 300, maxRounds: 4 } },
});

type KubeVirtCR = KubeObject & { spec?: { configuration?: { permittedHostDevices?: { pciHostDevices?: { pciVendorSelector: string; resourceName: string }[] } } } };
const kubectl = (args: string[]) => kubectlAt(cp.binDir, cp.kubeconfig, args);
const cr = () => kube.get<KubeVirtCR>(KubeVirts, 'kubevirt', 'kubevirt');
const permitted = async () => (await kube.get<Pool>(VirtualIODevices, 'gpu'))?.status?.conditions?.find((c) => c.type === 'KubeVirtPermitted');
const ours = (c: KubeVirtCR | undefined) => (c?.spec?.configuration?.permittedHostDevices?.pciHostDevices ?? []).some((e) => e.resourceName === 'virtualio.dev/gpu');

/** The KubeVirt CR as it is in "Git". */
function gitManifest(withLists: boolean): string {
  const file = join(dir, `kubevirt-${withLists}.yaml`);
  writeFileSync(file, YAML.stringify({
    apiVersion: 'kubevirt.io/v1', kind: 'KubeVirt', metadata: { name: 'kubevirt', namespace: 'kubevirt' },
    spec: {
      configuration: {
        developerConfiguration: { featureGates: ['HostDevices'] },
        ...(withLists ? { permittedHostDevices: { pciHostDevices: [{ pciVendorSelector: '10de:1eb8', resourceName: 'nvidia.com/TU104GL_Tesla_T4' }] } } : {}),
      },
    },
  }));
  return file;
}
const argoSync = (file: string) => kubectl(['apply', '--server-side', '--force-conflicts', `--field-manager=${ARGO}`, '-f', file]);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vio-gitops-kv-'));
  cp = await startControlPlane();
  kube = ClientNodeKube.fromOptions({ kubeconfig: cp.kubeconfig });
  await installCrdFiles(cp.binDir, cp.kubeconfig,
    [join(REPO_ROOT, 'crds/virtualio.dev_virtualiodevices.yaml'), join(REPO_ROOT, 'crds/virtualio.dev_virtualionodes.yaml')],
    ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev']);
  const crds = execFileSync('bash', [join(REPO_ROOT, 'test/kubevirt/crds.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30 * 60_000 }).trim().split('\n').pop() ?? '';
  await installCrdFiles(cp.binDir, cp.kubeconfig, [join(crds, 'kubevirts.kubevirt.io.yaml')], ['kubevirts.kubevirt.io']);
  await kubectl(['create', 'namespace', 'kubevirt']);
  await argoSync(gitManifest(true));
  await kube.create(Nodes, { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-0' } });
  operator = new Operator(operatorOptions()).run(ac.signal);
  await waitUntil('VirtualIONode node-0', () => kube.get<VioNode>(VirtualIONodes, 'node-0'));
  await writeAgentStatus(kube, 'node-0', { inventory: { devices: [gpu('0000:c1:00.0', { device: '25b6' })] } });
});

afterAll(async () => {
  ac.abort();
  await operator;
  await cp?.stop();
});

test('an Argo CD self-heal that sets the lists is fought with backoff, then left alone with a Contested condition and a Warning Event', async () => {
  // The self-heal: whenever the live lists differ from Git, sync again.
  const git = gitManifest(true);
  let syncs = 0;
  const heal = new AbortController();
  const healer = (async () => {
    while (!heal.signal.aborted) {
      if (ours(await cr())) {
        syncs++;
        await argoSync(git);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  try {
    writeFileSync(join(dir, 'pool.yaml'), YAML.stringify({
      apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name: 'gpu' },
      spec: { class: 'GPU', deviceSelector: { pciAddresses: ['0000:c1:00.0'] }, carving: { mode: 'Passthrough' } },
    }));
    await kubectl(['apply', '-f', join(dir, 'pool.yaml')]);
    const c = await waitUntil('Contested', async () => {
      const x = await permitted();
      return x?.reason === 'Contested' && x;
    }, 120_000, 200);
    expect(c.status).toBe('False');
    expect(c.message).toContain(`field manager ${ARGO}`);
    expect(c.message).toContain('changed the operator\'s lists back 4 times');
    const events = JSON.parse(await kubectl(['get', 'events', '-n', 'default', '-o', 'json'])) as { items: { reason: string; type: string; message: string; involvedObject: { name: string } }[] };
    expect(events.items.find((e) => e.reason === 'PermittedHostDevicesContested' && e.involvedObject.name === 'gpu')).toMatchObject({ type: 'Warning' });
    expect(syncs).toBe(4);
    // Left alone: no more writes by the operator, so nothing for the self-heal to undo.
    await new Promise((r) => setTimeout(r, 3000));
    expect(syncs).toBe(4);
    expect(ours(await cr())).toBe(false);
  } finally {
    heal.abort();
    await healer;
  }
});

test('a new operator process keeps the give-up it reads from the Contested condition: no new round', async () => {
  const git = gitManifest(true);
  let syncs = 0;
  const heal = new AbortController();
  const healer = (async () => {
    while (!heal.signal.aborted) {
      if (ours(await cr())) {
        syncs++;
        await argoSync(git);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  try {
    ac.abort();
    await operator;
    // The next process, logging to a buffer (its warnings say what it decided).
    const lines: string[] = [];
    ac = new AbortController();
    const next = new Operator({ ...operatorOptions(), log: pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) }) });
    operator = next.run(ac.signal);
    await waitUntil('the new process runs its controllers', () => next.ready, 60_000, 50);
    // Let it run them (status and KubeVirt) for a while: it writes no list, so the self-heal has
    // nothing to undo, and the pool stays Contested.
    await new Promise((r) => setTimeout(r, 3000));
    expect(syncs).toBe(0);
    expect(ours(await cr())).toBe(false);
    expect(await permitted()).toMatchObject({ status: 'False', reason: 'Contested' });
    expect(lines.find((l) => l.includes('Kept the give-up'))).toContain(ARGO);
  } finally {
    heal.abort();
    await healer;
  }
});

test('with the lists out of the Git manifest the operator applies its entries again, and the tool sees no drift', async () => {
  const git = gitManifest(false);
  await argoSync(git);
  await waitUntil('Permitted', async () => (await permitted())?.reason === 'Permitted', 60_000, 200);
  const live = (await cr())!;
  expect(live.spec?.configuration?.permittedHostDevices?.pciHostDevices).toEqual([
    { pciVendorSelector: '10de:25b6', resourceName: 'virtualio.dev/gpu', externalResourceProvider: true },
  ]);
  const managers = JSON.parse(await kubectl(['get', 'kubevirt', 'kubevirt', '-n', 'kubevirt', '-o', 'json', '--show-managed-fields'])).metadata.managedFields as { manager: string; fieldsV1: object }[];
  expect(JSON.stringify(managers.find((m) => m.manager === FIELD_MANAGER)?.fieldsV1)).toContain('f:pciHostDevices');
  expect(JSON.stringify(managers.find((m) => m.manager === ARGO)?.fieldsV1)).not.toContain('f:permittedHostDevices');
  try {
    await run(join(cp.binDir, 'kubectl'), ['--kubeconfig', cp.kubeconfig, 'diff', '--server-side', `--field-manager=${ARGO}`, '-f', git]);
  } catch (err) {
    throw new Error(`kubectl diff found drift: ${(err as { stdout?: string }).stdout ?? String(err)}`, { cause: err });
  }
});
