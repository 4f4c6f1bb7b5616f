// The DeviceClass controller through the whole operator on the fake API: a DRA pool gets its class,
// a pool switched back to the device plugin loses it, and classes of other owners are left alone.
import pino from 'pino';
import type { Pool } from '../../api/types.js';
import { FakeKube } from '../../../../test/fakes/kube-api.js';
import type { KubeObject } from '../../kube/ports.js';
import { VirtualIODevices } from '../../kube/resources.js';
import { Operator } from '../../operator.js';
import { systemClock } from '../../runtime/clock.js';
import { EventRecorder } from '../../runtime/events.js';
import { poolObj, waitFor } from '../../../../test/support/operator-fixtures.js';
import { DeviceClasses } from './deviceclass.js';

const log = pino({ level: 'silent' });

test('a DRA pool gets <pool>.virtualio.dev selecting its devices, owned by the pool; switching back deletes it', async () => {
  const kube = new FakeKube();
  const { metadata, ...rest } = poolObj('a16-vgpu', { class: 'GPU', frontEnd: 'DRA', deviceSelector: { vendorIDs: ['10de'] }, carving: { mode: 'Mediated', count: 4, mdevType: 'nvidia-754' } });
  const created = await kube.create(VirtualIODevices, { ...rest, metadata: { name: metadata.name } } as Pool);
  await kube.create(DeviceClasses, { apiVersion: 'resource.k8s.io/v1', kind: 'DeviceClass', metadata: { name: 'gpu.example.com' } } as KubeObject);
  const ac = new AbortController();
  const events = new EventRecorder({ kube, namespace: 'virtualio-system', component: 'virtualio-operator', instance: 'test', clock: systemClock, log });
  const run = new Operator({ kube, clock: systemClock, log, events, kubevirt: { namespace: 'kubevirt', name: 'kubevirt', manage: false, extra: { pciHostDevices: [], mediatedDevices: [] } }, tuning: { debounceMs: 1 } }).run(ac.signal);
  try {
    type DC = KubeObject & { spec: { selectors: { cel: { expression: string } }[] } };
    const dc = await waitFor('DeviceClass', () => kube.get<DC>(DeviceClasses, 'a16-vgpu.virtualio.dev'));
    expect(dc.spec.selectors).toEqual([{ cel: { expression: 'device.driver == "virtualio.dev" && device.attributes["virtualio.dev"].pool == "a16-vgpu"' } }]);
    expect(dc.metadata.ownerReferences).toEqual([{ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', name: 'a16-vgpu', uid: created.metadata.uid }]);

    const cur = (await kube.get<Pool>(VirtualIODevices, 'a16-vgpu'))!;
    await kube.replace(VirtualIODevices, { ...cur, spec: { ...cur.spec, frontEnd: 'DevicePlugin' }, metadata: { ...cur.metadata, generation: (cur.metadata.generation ?? 1) + 1 } });
    await waitFor('DeviceClass deleted', async () => (await kube.get(DeviceClasses, 'a16-vgpu.virtualio.dev')) === undefined);
    expect(await kube.get(DeviceClasses, 'gpu.example.com')).toBeDefined();
  } finally {
    ac.abort();
    await run;
  }
});
