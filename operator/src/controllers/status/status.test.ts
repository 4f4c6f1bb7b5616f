import { Reason, type ConditionInput } from '../../api/conditions.js';
import type { PoolPlan, VioNode } from '../../api/types.js';
import { nicPF, poolObj, slice, vioNodeObj } from '../../../../test/support/operator-fixtures.js';
import { preparePools } from '../plan/plan.js';
import { computeStatus, MAX_NODE_STATUSES, type StatusInput } from './status.js';

const T = Date.UTC(2026, 2, 1, 12, 0, 0);
const plan = (name: string, deleting = false): PoolPlan => ({
  name, resourceName: `virtualio.dev/${name}`, class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork', policy: 'NUMAAligned',
  count: 4, vfDriver: 'vfio-pci', devices: [{ pciAddress: '0000:81:00.0' }], ...(deleting ? { deleting: true } : {}),
});
const kvOk: ConditionInput = { type: 'KubeVirtPermitted', status: 'True', reason: Reason.NotRequired, message: 'not required' };

function input(o: Partial<StatusInput> & { deleting?: boolean } = {}): StatusInput {
  const pool = poolObj('vfs', { class: 'NIC' }, { generation: 3, deleting: o.deleting });
  return {
    prepared: preparePools([pool]).byName.get('vfs')!,
    nodes: [], conflicts: [], kubevirtEntries: [], kubevirtCondition: kvOk, now: T, ...o,
  };
}
const cond = (s: { conditions?: { type: string; message: string; lastTransitionTime: string }[] }, type: string) => s.conditions?.find((c) => c.type === type);

describe('computeStatus', () => {
  test('rolls totals, node statuses and allocations up from node reports', () => {
    const nodes = [
      vioNodeObj('n1', {
        devices: nicPF('0000:81:00.0', { vfs: 2 }), plan: [plan('vfs')],
        status: {
          pools: [{ name: 'vfs', state: 'Ready', capacity: 3, allocatable: 3, allocated: 1 }],
          slices: [
            slice('0000:81:10.0', 'vfs', { pod: 'virt-launcher-a', namespace: 'vms', vmi: 'a' }),
            slice('0000:81:11.1', 'vfs', { pod: 'virt-launcher-a', namespace: 'vms', vmi: 'a' }),
            slice('0000:81:12.2', 'vfs', { healthy: false }),
            slice('0000:81:13.3', 'other'),
          ],
        },
      }),
      vioNodeObj('n2', { plan: [plan('vfs')], status: { pools: [{ name: 'vfs', state: 'Carving', message: 'creating 4 VFs', capacity: 0 }] } }),
      vioNodeObj('n3', { plan: [plan('other')] }),
    ];
    const { status } = computeStatus(undefined, input({ nodes }));
    expect(status).toMatchObject({
      observedGeneration: 3, resourceName: 'virtualio.dev/vfs', consumption: 'SRIOVNetwork',
      nodes: 2, capacity: 3, allocatable: 2, allocated: 2,
      nodeStatuses: [
        { node: 'n2', capacity: 0, allocatable: 0, allocated: 0, state: 'Carving', message: 'creating 4 VFs' },
        { node: 'n1', capacity: 3, allocatable: 2, allocated: 2, state: 'Ready' },
      ],
      allocations: [{ node: 'n1', namespace: 'vms', pod: 'virt-launcher-a', vmi: 'a', slices: ['0000:81:10.0', '0000:81:11.1'] }],
    });
    expect(cond(status, 'Ready')).toMatchObject({ status: 'False', reason: 'NodesNotReady', observedGeneration: 3 });
    expect(cond(status, 'Progressing')).toMatchObject({ status: 'True', reason: 'Carving' });
    expect(cond(status, 'Degraded')).toMatchObject({ status: 'True', reason: 'UnhealthySlices' });
    expect(cond(status, 'Conflict')).toMatchObject({ status: 'False', reason: 'NoConflict' });
    expect(cond(status, 'KubeVirtPermitted')).toMatchObject({ status: 'True', reason: 'NotRequired' });
  });

  test('rolls up which claim each on-demand mdev was carved for', () => {
    const carved = { ...slice('u-1', 'vfs', { pod: 'virt-launcher-b', namespace: 'vms' }), kind: 'Mdev' as const, mdevType: 'nvidia-747', carvedFor: { namespace: 'vms', claim: 'b-gpu-x1', uid: 'c1', since: '2026-03-01T12:00:00Z' } };
    const nodes = [vioNodeObj('n1', { plan: [plan('vfs')], status: { pools: [{ name: 'vfs', state: 'Ready', capacity: 1, allocatable: 1, allocated: 1 }], slices: [carved, slice('u-2', 'vfs')] } })];
    const { status } = computeStatus(undefined, input({ nodes }));
    expect(status).toMatchObject({ carvedOnDemand: 1, carvings: [{ node: 'n1', slice: 'u-1', mdevType: 'nvidia-747', namespace: 'vms', claim: 'b-gpu-x1' }] });
    // Pools that carve nothing on demand show neither field.
    const none = computeStatus(undefined, input({ nodes: [vioNodeObj('n1', { plan: [plan('vfs')], status: { pools: [{ name: 'vfs', state: 'Ready' }], slices: [slice('u-2', 'vfs')] } })] }));
    expect(none.status.carvedOnDemand).toBeUndefined();
    expect(none.status.carvings).toBeUndefined();
  });

  test.each<[string, string, string, string]>([
    ['Error', 'Degraded', 'True', 'CarvingFailed'],
    ['Blocked', 'Degraded', 'True', 'CarvingBlocked'],
    ['Ready', 'Ready', 'True', 'AllNodesReady'],
    ['Ready', 'Progressing', 'False', 'Stable'],
  ])('node state %s → %s=%s (%s)', (state, type, st, reason) => {
    const nodes = [vioNodeObj('n1', { plan: [plan('vfs')], status: { pools: [{ name: 'vfs', state: state as 'Ready', message: 'x' }] } })];
    expect(cond(computeStatus(undefined, input({ nodes })).status, type)).toMatchObject({ status: st, reason });
  });

  test('carving failures and blocks become Warning events naming the node', () => {
    const nodes = [
      vioNodeObj('n1', { plan: [plan('vfs')], status: { pools: [{ name: 'vfs', state: 'Error', message: 'sriov_numvfs: write error' }] } }),
      vioNodeObj('n2', { plan: [plan('vfs')], status: { pools: [{ name: 'vfs', state: 'Blocked', message: 'VFs in use' }] } }),
    ];
    expect(computeStatus(undefined, input({ nodes })).events).toEqual([
      { type: 'Warning', reason: 'CarvingFailed', message: 'Carving failed on node n1: sriov_numvfs: write error' },
      { type: 'Warning', reason: 'CarvingBlocked', message: 'Carving blocked on node n2: VFs in use' },
    ]);
  });

  test('no node carries the pool: Ready=False NoMatchingDevices', () => {
    expect(cond(computeStatus(undefined, input()).status, 'Ready')).toMatchObject({ status: 'False', reason: 'NoMatchingDevices' });
  });

  test('device conflicts are listed and raise Conflict with an event', () => {
    const r = computeStatus(undefined, input({ conflicts: [{ pool: 'vfs', node: 'n1', device: '0000:81:00.0', heldBy: 'old' }] }));
    expect(r.status.conflicts).toEqual([{ node: 'n1', device: '0000:81:00.0', heldBy: 'old' }]);
    expect(cond(r.status, 'Conflict')).toMatchObject({ status: 'True', reason: 'DeviceConflict' });
    expect(cond(r.status, 'Conflict')?.message).toContain('node n1 device 0000:81:00.0 held by old');
    expect(r.events.map((e) => e.reason)).toEqual(['DeviceConflict']);
  });

  test('lastTransitionTime moves only when the status of a condition changes; a recompute is identical', () => {
    const nodes = [vioNodeObj('n1', { plan: [plan('vfs')], status: { pools: [{ name: 'vfs', state: 'Carving' }] } })];
    const first = computeStatus(undefined, input({ nodes })).status;
    const again = computeStatus(first, input({ nodes, now: T + 60_000 })).status;
    expect(again).toEqual(first);
    const ready = [vioNodeObj('n1', { plan: [plan('vfs')], status: { pools: [{ name: 'vfs', state: 'Ready' }] } })];
    const later = computeStatus(first, input({ nodes: ready, now: T + 120_000 })).status;
    expect(cond(later, 'Ready')?.lastTransitionTime).toBe('2026-03-01T12:02:00Z');
    expect(cond(later, 'Conflict')?.lastTransitionTime).toBe('2026-03-01T12:00:00Z');
    expect(cond(later, 'Degraded')?.lastTransitionTime).toBe('2026-03-01T12:00:00Z');
  });

  test('node statuses are bounded and put problems first', () => {
    const nodes = Array.from({ length: 100 }, (_, i) => vioNodeObj(`n${String(i).padStart(3, '0')}`, {
      plan: [plan('vfs')], status: { pools: [{ name: 'vfs', state: i === 99 ? 'Error' : 'Ready' }] },
    }));
    const { status } = computeStatus(undefined, input({ nodes }));
    expect(status.nodes).toBe(100);
    expect(status.nodeStatuses).toHaveLength(MAX_NODE_STATUSES);
    expect(status.nodeStatuses?.[0]).toMatchObject({ node: 'n099', state: 'Error' });
  });

  describe('deletion', () => {
    test('allocated slices block, naming the VMs and pods', () => {
      const nodes = [vioNodeObj('n1', {
        plan: [plan('vfs', true)],
        status: { pools: [{ name: 'vfs', state: 'Deleting' }], slices: [slice('0000:81:10.0', 'vfs', { pod: 'virt-launcher-db-x', namespace: 'prod', vmi: 'db' })] },
      })];
      const r = computeStatus(undefined, input({ nodes, deleting: true }));
      expect(r.released).toBe(false);
      expect(cond(r.status, 'Ready')).toMatchObject({ status: 'False', reason: 'Deleting' });
      expect(cond(r.status, 'Progressing')).toMatchObject({ status: 'True', reason: 'DeletionBlocked' });
      expect(cond(r.status, 'Progressing')?.message).toContain('VMI prod/db (pod virt-launcher-db-x) on node n1');
      expect(r.events.map((e) => e.reason)).toEqual(['DeletionBlocked']);
    });

    test.each<[string, boolean, Parameters<typeof vioNodeObj>[1]]>([
      ['agent still serving', false, { plan: [plan('vfs', true)], status: { pools: [{ name: 'vfs', state: 'Ready' }] } }],
      ['slices left without pool status', false, { plan: [plan('vfs', true)], status: { slices: [slice('0000:81:10.0', 'vfs')] } }],
      ['pool state Released', true, { plan: [plan('vfs', true)], status: { pools: [{ name: 'vfs', state: 'Released' }] } }],
      ['pool state Deleting (kept until the kubelet says who holds it)', false, { plan: [plan('vfs', true)], status: { pools: [{ name: 'vfs', state: 'Deleting' }] } }],
      ['pool left the plan earlier, still Draining there', false, { plan: [plan('other')], status: { pools: [{ name: 'vfs', state: 'Draining' }] } }],
      ['planned, but the agent report does not name the pool', false, { plan: [plan('vfs', true)], status: { slices: [slice('0000:81:10.0', 'other')] } }],
      ['not planned, not reported, no slices (mentioned nowhere)', true, { plan: [plan('other')], status: { slices: [slice('0000:81:10.0', 'other')] } }],
    ])('%s → released=%s', (_n, want, node) => {
      const r = computeStatus(undefined, input({ nodes: [vioNodeObj('n1', node)], deleting: true }));
      expect(r.released).toBe(want);
    });

    const withGen = (v: VioNode, generation: number): VioNode => ({ ...v, metadata: { ...v.metadata, generation } });
    const degraded = (reason: string, message: string) => ({ type: 'Degraded', status: 'True' as const, reason, message, lastTransitionTime: '2026-03-01T12:00:00Z' });
    const waitingMessage = (r: ReturnType<typeof computeStatus>) => cond(r.status, 'Progressing')?.message ?? '';

    test('a planned node whose VirtualIONode has no status has not released the pool', () => {
      const v = vioNodeObj('n1', { plan: [plan('vfs', true)] });
      delete v.status;
      const r = computeStatus(undefined, input({ nodes: [v], deleting: true }));
      expect(r.released).toBe(false);
      expect(waitingMessage(r)).toBe('Waiting for 1 node(s) to release and uncarve the pool: n1 (its agent has not reported)');
    });

    test('a Released from before the deletion mark (status older than the spec) does not count; the same report on the current plan does', () => {
      const report = vioNodeObj('n1', { plan: [plan('vfs', true)], status: { observedGeneration: 4, pools: [{ name: 'vfs', state: 'Released' }] } });
      const stale = computeStatus(undefined, input({ nodes: [withGen(report, 5)], deleting: true }));
      expect(stale.released).toBe(false);
      expect(waitingMessage(stale)).toContain('n1 (its agent has not reported on the current plan (generation 5; last report: 4))');
      const noGen = vioNodeObj('n1', { plan: [plan('vfs', true)], status: { pools: [{ name: 'vfs', state: 'Released' }] } });
      expect(computeStatus(undefined, input({ nodes: [withGen(noGen, 5)], deleting: true })).released).toBe(false);
      expect(computeStatus(undefined, input({ nodes: [withGen(report, 4)], deleting: true })).released).toBe(true);
    });

    test.each([
      ['PodResourcesUnavailable first', degraded('PodResourcesUnavailable', 'PodResourcesUnavailable: PodResources List failed (UNAVAILABLE): connect ENOENT')],
      ['PodResourcesUnavailable behind another problem', degraded('UnhealthySlices', 'UnhealthySlices: 0000:81:10.0 | PodResourcesUnavailable: List failed')],
      ['HoldersUnknown', degraded('HoldersUnknown', 'HoldersUnknown: nothing is destroyed until it is known who holds what: PodResources has not answered yet')],
    ])('an agent that cannot tell who holds its slices has not released the pool (%s)', (_n, condition) => {
      const v = vioNodeObj('n1', { plan: [plan('vfs', true)], status: { pools: [{ name: 'vfs', state: 'Released' }], conditions: [condition] } });
      const r = computeStatus(undefined, input({ nodes: [v], deleting: true }));
      expect(r.released).toBe(false);
      expect(waitingMessage(r)).toContain('n1 (its agent cannot tell who holds the slices: ');
      const fine = vioNodeObj('n1', { plan: [plan('vfs', true)], status: { pools: [{ name: 'vfs', state: 'Released' }], conditions: [{ ...condition, status: 'False' }] } });
      expect(computeStatus(undefined, input({ nodes: [fine], deleting: true })).released).toBe(true);
    });

    test('a Node whose VirtualIONode is gone (or lacks the plan) is waited for; one whose Node is gone too left the cluster', () => {
      const n1 = vioNodeObj('n1', { plan: [plan('vfs', true)], status: { pools: [{ name: 'vfs', state: 'Released' }] } });
      const r = computeStatus(undefined, input({ nodes: [n1], deleting: true, unreported: [{ node: 'n2', why: 'the Node has no VirtualIONode, so its agent cannot report' }] }));
      expect(r.released).toBe(false);
      expect(waitingMessage(r)).toBe('Waiting for 1 node(s) to release and uncarve the pool: n2 (the Node has no VirtualIONode, so its agent cannot report)');
      // Both gone: not in the input at all.
      expect(computeStatus(undefined, input({ nodes: [n1], deleting: true, unreported: [] })).released).toBe(true);
      expect(computeStatus(undefined, input({ nodes: [], deleting: true })).released).toBe(true);
    });

    test('an agent that plans locally has released the pool only on a reported plan that marks it deleting', () => {
      // Its report from before it saw the deletion: the plan it serves still has the pool in service.
      const before = vioNodeObj('n1', { status: { localPlan: { pools: [plan('vfs')] }, pools: [{ name: 'vfs', state: 'Released' }] } });
      const r = computeStatus(undefined, input({ nodes: [before], deleting: true }));
      expect(r.released).toBe(false);
      expect(waitingMessage(r)).toContain('its agent has not planned the deletion yet');
      const after = vioNodeObj('n1', { status: { localPlan: { pools: [plan('vfs', true)] }, pools: [{ name: 'vfs', state: 'Released' }] } });
      expect(computeStatus(undefined, input({ nodes: [after], deleting: true })).released).toBe(true);
      // A spec.pools left from an older operator is not what the agent serves: the reported plan decides.
      const stale = vioNodeObj('n1', { plan: [plan('vfs', true)], status: { localPlan: { pools: [plan('vfs')] }, pools: [{ name: 'vfs', state: 'Released' }] } });
      expect(computeStatus(undefined, input({ nodes: [stale], deleting: true })).released).toBe(false);
    });
  });

  test('a node whose agent plans locally rolls up from the plan it reports, and is Pending while that differs from the computed one', () => {
    const local = vioNodeObj('n1', { status: { localPlan: { pools: [plan('vfs')] }, pools: [{ name: 'vfs', state: 'Ready', capacity: 4, allocatable: 4, allocated: 0 }] } });
    const ready = computeStatus(undefined, input({ nodes: [local] })).status;
    expect(ready.nodes).toBe(1);
    expect(ready.nodeStatuses?.[0]).toMatchObject({ node: 'n1', state: 'Ready' });
    const pending = computeStatus(undefined, input({ nodes: [local], pendingNodes: ['n1'] })).status;
    expect(pending.nodeStatuses?.[0]).toMatchObject({ node: 'n1', state: 'Pending' });
  });
});
