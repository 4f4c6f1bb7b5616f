// A DRA pool needs no permittedHostDevices entry (KubeVirt does not check claims against it) and
// says so in its KubeVirtPermitted condition; the same pool through the device plugin needs one.
import { gpu, poolObj, vioNodeObj } from '../../../../test/support/operator-fixtures.js';
import { kubevirtCondition, poolEntries } from '../kubevirt/entries.js';
import { planNode, preparePools } from '../plan/plan.js';

const inv = [gpu('0000:c1:00.0', { mdevTypes: [{ id: 'nvidia-754', name: 'NVIDIA A16-4Q' }] })];
const spec = { class: 'GPU' as const, deviceSelector: { pciAddresses: ['0000:c1:00.0'] }, carving: { mode: 'Mediated' as const, count: 4, mdevType: 'nvidia-754' } };
const view = { installed: true, found: true, ref: 'kubevirt/kubevirt', managed: true, current: { pciHostDevices: [], mediatedDevices: [] } };

test.each([
  ['DRA', 0, { status: 'True', reason: 'NotRequired' }],
  ['DevicePlugin', 1, { status: 'False', reason: 'ApplyPending' }],
] as const)('frontEnd %s: %i entries, condition %j', (frontEnd, n, cond) => {
  const pools = preparePools([poolObj('vgpu', { ...spec, frontEnd })]);
  const node = vioNodeObj('n1', { devices: inv, plan: planNode({ metadata: { name: 'n1' } }, vioNodeObj('n1', { devices: inv }), pools).pools });
  const p = pools.byName.get('vgpu')!;
  const entries = poolEntries(p, [node]);
  expect(entries).toHaveLength(n);
  expect(kubevirtCondition(p, entries, view)).toMatchObject(cond);
});
