// Another controller that keeps writing KubeVirt's permittedHostDevices (the HyperConverged operator,
// a GitOps tool's self-heal) is not fought for ever: the operator re-applies with exponential
// backoff, then stops, and says so in the pools' KubeVirtPermitted condition and in Warning Events.
import pino from 'pino';
import type { Pool, VioNode } from '../../api/types.js';
import { FakeKube } from '../../../../test/fakes/kube-api.js';
import type { KubeObject } from '../../kube/ports.js';
import { AGENT_FIELD_MANAGER, KubeVirts, Nodes, VirtualIODevices, VirtualIONodes } from '../../kube/resources.js';
import { Operator } from '../../operator.js';
import { systemClock } from '../../runtime/clock.js';
import { EventRecorder } from '../../runtime/events.js';
import { gpu, nodeObj, poolObj, waitFor } from '../../../../test/support/operator-fixtures.js';

const log = pino({ level: 'silent' });
type KubeVirtCR = KubeObject & { spec?: { configuration?: { permittedHostDevices?: { pciHostDevices?: { resourceName: string }[] } } } };

test('a controller that keeps changing the lists back is fought with backoff for maxRounds rounds, then left alone', async () => {
  const kube = new FakeKube();
  kube.install(KubeVirts);
  await kube.create(KubeVirts, { apiVersion: 'kubevirt.io/v1', kind: 'KubeVirt', metadata: { name: 'kubevirt', namespace: 'kubevirt' } } as KubeObject);
  const node = await kube.create(Nodes, nodeObj('node-0'));
  await kube.create(VirtualIONodes, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'node-0', ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: 'node-0', uid: node.metadata.uid ?? '' }] } });
  await kube.apply(VirtualIONodes, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'node-0' }, status: { inventory: { devices: [gpu('0000:c1:00.0', { device: '25b6' })] } } },
    { fieldManager: AGENT_FIELD_MANAGER, subresource: 'status', force: true });
  const { metadata, ...rest } = poolObj('gpu', { class: 'GPU', deviceSelector: { vendorIDs: ['10de'] }, carving: { mode: 'Passthrough' } });
  await kube.create(VirtualIODevices, { ...rest, metadata: { name: metadata.name } } as Pool);

  // The contender: whenever our entry shows up, it writes its own list back (as HCO would).
  let operatorApplies = 0;
  const stamps: number[] = [];
  const contend = async () => {
    const cr = await kube.get<KubeVirtCR>(KubeVirts, 'kubevirt', 'kubevirt');
    const list = cr?.spec?.configuration?.permittedHostDevices?.pciHostDevices ?? [];
    if (list.some((e) => e.resourceName === 'virtualio.dev/gpu')) {
      operatorApplies++;
      stamps.push(Date.now());
      await kube.apply(KubeVirts, {
        apiVersion: 'kubevirt.io/v1', kind: 'KubeVirt', metadata: { name: 'kubevirt', namespace: 'kubevirt' },
        spec: { configuration: { permittedHostDevices: { pciHostDevices: [{ pciVendorSelector: '10de:1eb8', resourceName: 'nvidia.com/T4' }] } } },
      }, { fieldManager: 'hyperconverged-cluster-operator', force: true });
    }
  };
  const ac = new AbortController();
  const contender = (async () => {
    while (!ac.signal.aborted) {
      await contend();
      await new Promise((r) => setTimeout(r, 2));
    }
  })();

  const events = new EventRecorder({ kube, namespace: 'default', component: 'virtualio-operator', instance: 'test', clock: systemClock, log });
  const run = new Operator({
    kube, clock: systemClock, log, events,
    kubevirt: { namespace: 'kubevirt', name: 'kubevirt', manage: true, extra: { pciHostDevices: [], mediatedDevices: [] } },
    tuning: { debounceMs: 1, kubevirtRecheckMs: 20, kubevirtContest: { baseMs: 40, maxRounds: 4 } },
  }).run(ac.signal);
  try {
    const pool = await waitFor('Contested', async () => {
      const p = await kube.get<Pool>(VirtualIODevices, 'gpu');
      return p?.status?.conditions?.find((c) => c.type === 'KubeVirtPermitted' && c.reason === 'Contested') && p;
    });
    const cond = pool.status?.conditions?.find((c) => c.type === 'KubeVirtPermitted');
    expect(cond?.status).toBe('False');
    expect(cond?.message).toContain('changed the operator\'s lists back 4 times');
    expect(cond?.message).toContain('pciVendorSelector: "10de:25b6", resourceName: "virtualio.dev/gpu"');
    // 1 first apply + 3 re-applies after the rounds lost (the 4th round gives up), with growing gaps.
    const applied = operatorApplies;
    expect(applied).toBe(4);
    const gaps = stamps.slice(1).map((t, i) => t - (stamps[i] ?? t));
    expect(gaps.length).toBe(3);
    expect(gaps[0]).toBeGreaterThanOrEqual(35);
    expect(gaps[2]).toBeGreaterThanOrEqual(150);
    // Left alone: the contender's list stays.
    await new Promise((r) => setTimeout(r, 400));
    expect(operatorApplies).toBe(applied);
    const cr = await kube.get<KubeVirtCR>(KubeVirts, 'kubevirt', 'kubevirt');
    expect(cr?.spec?.configuration?.permittedHostDevices?.pciHostDevices).toEqual([{ pciVendorSelector: '10de:1eb8', resourceName: 'nvidia.com/T4' }]);
    expect(kube.events.map((e) => e.reason)).toEqual(expect.arrayContaining(['PermittedHostDevicesReverted', 'PermittedHostDevicesContested']));
    expect(kube.events.find((e) => e.reason === 'PermittedHostDevicesContested')).toMatchObject({ type: 'Warning', involvedObject: { kind: 'VirtualIODevice', name: 'gpu' } });

    // What the operator wants changes (another device shows up): it tries once more, and gives up
    // again on the next round lost.
    await kube.apply(VirtualIONodes, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'node-0' }, status: { inventory: { devices: [gpu('0000:c1:00.0', { device: '25b6' }), gpu('0000:c2:00.0', { device: '2236' })] } } },
      { fieldManager: AGENT_FIELD_MANAGER, subresource: 'status', force: true });
    await waitFor('one more apply', async () => operatorApplies === applied + 1);
    await new Promise((r) => setTimeout(r, 400));
    expect(operatorApplies).toBe(applied + 1);
    expect((await kube.get<VioNode>(VirtualIONodes, 'node-0'))?.spec?.pools?.[0]?.devices).toHaveLength(2);
  } finally {
    ac.abort();
    await Promise.all([run, contender]);
  }
});

test('a new operator process keeps the give-up of the last one, and tries a wish that changed meanwhile once', async () => {
  const kube = new FakeKube();
  kube.install(KubeVirts);
  await kube.create(KubeVirts, { apiVersion: 'kubevirt.io/v1', kind: 'KubeVirt', metadata: { name: 'kubevirt', namespace: 'kubevirt' } } as KubeObject);
  const node = await kube.create(Nodes, nodeObj('node-0'));
  await kube.create(VirtualIONodes, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'node-0', ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: 'node-0', uid: node.metadata.uid ?? '' }] } });
  const inventory = (...devices: ReturnType<typeof gpu>[]) => kube.apply(VirtualIONodes, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'node-0' }, status: { inventory: { devices } } },
    { fieldManager: AGENT_FIELD_MANAGER, subresource: 'status', force: true });
  await inventory(gpu('0000:c1:00.0', { device: '25b6' }));
  const { metadata, ...rest } = poolObj('gpu', { class: 'GPU', deviceSelector: { vendorIDs: ['10de'] }, carving: { mode: 'Passthrough' } });
  await kube.create(VirtualIODevices, { ...rest, metadata: { name: metadata.name } } as Pool);

  let operatorApplies = 0;
  const contender = new AbortController();
  const contending = (async () => {
    while (!contender.signal.aborted) {
      const cr = await kube.get<KubeVirtCR>(KubeVirts, 'kubevirt', 'kubevirt');
      if ((cr?.spec?.configuration?.permittedHostDevices?.pciHostDevices ?? []).some((e) => e.resourceName === 'virtualio.dev/gpu')) {
        operatorApplies++;
        await kube.apply(KubeVirts, {
          apiVersion: 'kubevirt.io/v1', kind: 'KubeVirt', metadata: { name: 'kubevirt', namespace: 'kubevirt' },
          spec: { configuration: { permittedHostDevices: { pciHostDevices: [{ pciVendorSelector: '10de:1eb8', resourceName: 'nvidia.com/T4' }] } } },
        }, { fieldManager: 'hyperconverged-cluster-operator', force: true });
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  })();
  const start = () => {
    const ac = new AbortController();
    const op = new Operator({
      kube, clock: systemClock, log, events: new EventRecorder({ kube, namespace: 'default', component: 'virtualio-operator', instance: 'test', clock: systemClock, log }),
      kubevirt: { namespace: 'kubevirt', name: 'kubevirt', manage: true, extra: { pciHostDevices: [], mediatedDevices: [] } },
      tuning: { debounceMs: 1, kubevirtRecheckMs: 20, kubevirtContest: { baseMs: 20, maxRounds: 3 } },
    });
    return { ac, op, run: op.run(ac.signal) };
  };
  const contested = () => waitFor('Contested', async () =>
    (await kube.get<Pool>(VirtualIODevices, 'gpu'))?.status?.conditions?.find((c) => c.type === 'KubeVirtPermitted' && c.reason === 'Contested'));
  const quietly = async (p: { ac: AbortController; op: Operator; run: Promise<void> }) => {
    await waitFor('controllers running', async () => p.op.ready);
    await new Promise((r) => setTimeout(r, 300));
  };
  let current = start();
  try {
    await contested();
    // At least the 3 rounds (the plan settling as the operator starts can add a first apply or two).
    const afterFirst = operatorApplies;
    expect(afterFirst).toBeGreaterThanOrEqual(3);
    current.ac.abort();
    await current.run;

    // Same wish: the next process applies nothing and the pool stays Contested.
    current = start();
    await quietly(current);
    expect(operatorApplies).toBe(afterFirst);
    await contested();
    current.ac.abort();
    await current.run;

    // The wish changed while no operator ran: the next process applies it once, then gives up again.
    await inventory(gpu('0000:c1:00.0', { device: '25b6' }), gpu('0000:c2:00.0', { device: '2236' }));
    current = start();
    await waitFor('one more apply', async () => operatorApplies === afterFirst + 1);
    await quietly(current);
    expect(operatorApplies).toBe(afterFirst + 1);
    await contested();
  } finally {
    current.ac.abort();
    contender.abort();
    await Promise.all([current.run, contending]);
  }
});
