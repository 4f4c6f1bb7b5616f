// The conditions kstatus reads (Reconciling, Stalled, abnormal-true) and nodes that have not carried
// out the latest plan. The real kstatus runs against these on a real API server in
// test/integration/gitops-health.test.ts.
import { Reason, type ConditionInput } from '../../api/conditions.js';
import type { PoolPlan } from '../../api/types.js';
import { poolObj, vioNodeObj } from '../../../../test/support/operator-fixtures.js';
import { preparePools } from '../plan/plan.js';
import { computeStatus, type StatusInput } from './status.js';

const T = Date.UTC(2026, 2, 1, 12, 0, 0);
const plan: PoolPlan = {
  name: 'vfs', resourceName: 'virtualio.dev/vfs', class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork', policy: 'NUMAAligned',
  count: 4, vfDriver: 'vfio-pci', devices: [{ pciAddress: '0000:81:00.0' }],
};
const kvOk: ConditionInput = { type: 'KubeVirtPermitted', status: 'True', reason: Reason.NotRequired, message: 'not required' };
const node = (name: string, state: string, message?: string) =>
  vioNodeObj(name, { plan: [plan], status: { pools: [{ name: 'vfs', state: state as 'Ready', ...(message ? { message } : {}) }] } });

function status(o: Partial<StatusInput> = {}) {
  const pool = poolObj('vfs', { class: 'NIC' }, { generation: 2 });
  const input: StatusInput = { prepared: preparePools([pool]).byName.get('vfs')!, nodes: [], conflicts: [], kubevirtEntries: [], kubevirtCondition: kvOk, now: T, ...o };
  const s = computeStatus(undefined, input).status;
  const c = (type: string) => s.conditions?.find((x) => x.type === type);
  return { s, reconciling: c('Reconciling'), stalled: c('Stalled'), ready: c('Ready') };
}

test('a Ready pool: neither Reconciling nor Stalled', () => {
  const { reconciling, stalled, ready } = status({ nodes: [node('n1', 'Ready')] });
  expect(ready).toMatchObject({ status: 'True', observedGeneration: 2 });
  expect(reconciling).toMatchObject({ status: 'False', reason: 'Stable', observedGeneration: 2 });
  expect(stalled).toMatchObject({ status: 'False', reason: 'AsExpected', observedGeneration: 2 });
});

test.each([
  ['Carving', 'Carving'],
  ['Blocked', 'CarvingBlocked'],
])('a node %s: Reconciling=True %s', (state, reason) => {
  const { reconciling, stalled } = status({ nodes: [node('n1', 'Ready'), node('n2', state, 'busy')] });
  expect(reconciling).toMatchObject({ status: 'True', reason });
  expect(stalled?.status).toBe('False');
});

test('a device conflict or a failed carving: Stalled=True, and not Reconciling while another node carves', () => {
  let r = status({ nodes: [node('n1', 'Carving')], conflicts: [{ node: 'n1', device: '0000:81:00.1', pool: 'vfs', heldBy: 'older' }] });
  expect(r.stalled).toMatchObject({ status: 'True', reason: 'DeviceConflict' });
  expect(r.reconciling?.status).toBe('False');
  r = status({ nodes: [node('n1', 'Carving'), node('n2', 'Error', 'write failed')] });
  expect(r.stalled).toMatchObject({ status: 'True', reason: 'CarvingFailed', message: 'Carving failed on 1 node(s): node n2: write failed' });
});

test('KubeVirt entries another controller keeps removing: Stalled=True Contested', () => {
  const { stalled } = status({ nodes: [node('n1', 'Ready')], kubevirtCondition: { type: 'KubeVirtPermitted', status: 'False', reason: Reason.Contested, message: 'another controller' } });
  expect(stalled).toMatchObject({ status: 'True', reason: 'Contested', message: 'another controller' });
});

test('a node that has not acted on the latest plan counts as Pending, whatever its agent said before', () => {
  const { s, reconciling, ready } = status({ nodes: [node('n1', 'Ready'), node('n2', 'Ready')], pendingNodes: ['n2', 'n3'] });
  expect(s.nodeStatuses).toEqual([
    { node: 'n2', capacity: 0, allocatable: 0, allocated: 0, state: 'Pending', message: 'the agent has not acted on the latest plan yet' },
    { node: 'n3', capacity: 0, allocatable: 0, allocated: 0, state: 'Pending', message: 'the plan is not written yet' },
    { node: 'n1', capacity: 0, allocatable: 0, allocated: 0, state: 'Ready' },
  ]);
  expect(s.nodes).toBe(3);
  expect(ready).toMatchObject({ status: 'False', reason: 'NodesNotReady' });
  expect(reconciling).toMatchObject({ status: 'True', reason: 'Carving', message: 'Carving on 2 node(s): n2; n3' });
});

test('while deleting: Reconciling=True until every node released the pool', () => {
  const pool = poolObj('vfs', { class: 'NIC' }, { generation: 2, deleting: true });
  const input: StatusInput = {
    prepared: preparePools([pool]).byName.get('vfs')!, nodes: [node('n1', 'Deleting')], conflicts: [], kubevirtEntries: [], kubevirtCondition: kvOk, now: T, pendingNodes: ['n1'],
  };
  const c = computeStatus(undefined, input).status.conditions ?? [];
  expect(c.find((x) => x.type === 'Reconciling')).toMatchObject({ status: 'True', reason: 'Deleting' });
  expect(c.find((x) => x.type === 'Stalled')?.status).toBe('False');
});
