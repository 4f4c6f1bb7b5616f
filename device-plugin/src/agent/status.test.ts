import type { PoolPlan, Slice } from '../model.js';
import { buildStatus, setCondition, type StatusInput } from './status.js';

const pool: PoolPlan = { name: 'fast-net', resourceName: 'virtualio.dev/fast-net', class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork', devices: [{ pciAddress: '0000:81:00.0' }] };
const slice = (id: string, health: Slice['health'], reason?: string): Slice => ({
  id, pool: 'fast-net', resourceName: pool.resourceName, kind: 'VF', parent: '0000:81:00.0', pciAddress: id, iommuGroup: 40, numaNode: 0, deviceNodes: [], health, ...(reason ? { reason } : {}),
});
const t0 = new Date('2026-01-01T00:00:00Z');
const t1 = new Date('2026-01-01T00:01:00Z');

function input(over: Partial<StatusInput> = {}): StatusInput {
  return {
    generation: 3,
    agentVersion: '0.1.0',
    pools: [pool],
    planLoaded: true,
    inventory: { devices: [{ pciAddress: '0000:81:00.0', vendorID: '15b3' }] },
    slices: [slice('0000:81:00.2', 'Healthy'), slice('0000:81:00.3', 'Healthy')],
    holders: new Map([['0000:81:00.2', { resourceName: pool.resourceName, namespace: 'vms', pod: 'virt-launcher-a', container: 'compute', vmi: 'a' }]]),
    registration: new Map([['fast-net', { registered: true }]]),
    blocked: [],
    carvingErrors: [],
    now: t0,
    ...over,
  };
}

describe('buildStatus', () => {
  test('healthy, registered node', () => {
    const s = buildStatus(input());
    expect(s.observedGeneration).toBe(3);
    expect(s.summary).toStrictEqual({ pools: 1, devices: 1, slices: 2, healthy: 2, allocated: 1 });
    expect(s.pools).toStrictEqual([{ name: 'fast-net', resourceName: 'virtualio.dev/fast-net', state: 'Ready', registered: true, capacity: 2, allocatable: 2, allocated: 1 }]);
    expect(s.slices?.[0]).toStrictEqual({ id: '0000:81:00.2', pool: 'fast-net', kind: 'VF', parent: '0000:81:00.0', health: 'Healthy', numaNode: 0, iommuGroup: 40, allocation: { namespace: 'vms', pod: 'virt-launcher-a', container: 'compute', vmi: 'a' } });
    expect(s.conditions?.map((c) => [c.type, c.status, c.reason])).toStrictEqual([
      ['Degraded', 'False', 'AsPlanned'],
      ['Ready', 'True', 'PoolsRegistered'],
    ]);
  });

  test('registeredVia reports how the kubelet took a registered pool, and only a registered one', () => {
    expect(buildStatus(input({ registration: new Map([['fast-net', { registered: true, via: 'PluginWatcher' }]]) })).pools?.[0]?.registeredVia).toBe('PluginWatcher');
    expect(buildStatus(input({ registration: new Map([['fast-net', { registered: false, error: 'x', via: 'KubeletSocket' }]]) })).pools?.[0]).not.toHaveProperty('registeredVia');
  });

  test('foreign mdevs/vports left alone are named in the pool message, the pool stays Ready', () => {
    const s = buildStatus(input({ foreign: [{ pool: 'fast-net', device: '0000:81:00.0', reason: 'mdev x of type t was not created by virtualio; left alone' }] }));
    expect(s.pools?.[0]).toMatchObject({ state: 'Ready', message: '0000:81:00.0: mdev x of type t was not created by virtualio; left alone' });
  });

  test('same world later: equal object (transition times kept)', () => {
    const a = buildStatus(input());
    const b = buildStatus(input({ previous: a.conditions ?? [], now: t1 }));
    expect(b).toStrictEqual(a);
  });

  test('unhealthy slice and a blocked re-carve: Degraded, pool Blocked; flip moves the transition time', () => {
    const a = buildStatus(input());
    const b = buildStatus(
      input({
        previous: a.conditions ?? [],
        now: t1,
        slices: [slice('0000:81:00.2', 'Healthy'), slice('0000:81:00.3', 'Unhealthy', 'driver is mlx5_core, want vfio-pci')],
        blocked: [{ pool: 'fast-net', device: '0000:81:00.0', reason: 'VFs held by pods' }],
      }),
    );
    const degraded = b.conditions?.find((c) => c.type === 'Degraded');
    expect(degraded).toMatchObject({ status: 'True', reason: 'CarvingBlocked', lastTransitionTime: '2026-01-01T00:01:00Z' });
    expect(degraded?.message).toContain('0000:81:00.3 (driver is mlx5_core, want vfio-pci)');
    expect(b.conditions?.find((c) => c.type === 'Ready')?.lastTransitionTime).toBe('2026-01-01T00:00:00Z');
    expect(b.pools?.[0]).toMatchObject({ state: 'Blocked', allocatable: 1, message: '0000:81:00.0: VFs held by pods' });
  });

  test('invalid plan, unregistered pool, discovery errors', () => {
    const s = buildStatus(
      input({
        planError: 'invalid plan file: bad',
        registration: new Map([['fast-net', { registered: false, error: 'kubelet.sock is absent' }]]),
        inventory: { devices: [{ pciAddress: '0000:81:00.0', errors: ['numa_node: not a number: "x"'] }] },
      }),
    );
    expect(s.conditions?.find((c) => c.type === 'Ready')).toMatchObject({ status: 'False', reason: 'InvalidPlan' });
    expect(s.conditions?.find((c) => c.type === 'Degraded')?.message).toContain('numa_node: not a number');
    expect(s.pools?.[0]).toMatchObject({ state: 'Error', registered: false, message: 'kubelet.sock is absent' });
  });

  test('deleting pool: Deleting while held, Released when free', () => {
    const del = { ...pool, deleting: true };
    expect(buildStatus(input({ pools: [del] })).pools?.[0]?.state).toBe('Deleting');
    // Slices still listed (kept, e.g. while the kubelet has not said who holds them) are not released.
    expect(buildStatus(input({ pools: [del], holders: new Map() })).pools?.[0]?.state).toBe('Deleting');
    expect(buildStatus(input({ pools: [del], holders: new Map(), slices: [] })).pools?.[0]?.state).toBe('Released');
    expect(buildStatus(input({ pools: [del], holders: new Map(), slices: [], holdersUnknown: 'PodResources has not answered yet' })).pools?.[0]).toMatchObject({ state: 'Deleting', message: expect.stringContaining('PodResources has not answered yet') });
  });

  test('setCondition sorts by type and only moves the time on a flip', () => {
    const c1 = setCondition([], { type: 'Ready', status: 'False', reason: 'NoPlan', message: '' }, t0);
    const c2 = setCondition(c1, { type: 'Ready', status: 'False', reason: 'Other', message: 'x' }, t1);
    expect(c2[0]?.lastTransitionTime).toBe('2026-01-01T00:00:00Z');
    const c3 = setCondition(c2, { type: 'Ready', status: 'True', reason: 'Ok', message: '' }, t1);
    expect(c3[0]?.lastTransitionTime).toBe('2026-01-01T00:01:00Z');
  });
});
