// The metrics the alerts and the dashboard read (docs/observability.md): the agent's gauges derived
// from its VirtualIONode status at each scrape (built here by the agent's own buildStatus, so a change
// of the status' wording that breaks them fails here), the counter of slices that turned unhealthy,
// the carving results exported from 0, and the operator's pool conditions.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Registry } from 'prom-client';
import { buildStatus, type StatusInput } from '../../device-plugin/src/agent/status.js';
import { CARVING_RESULTS, NODE_PROBLEMS, createMetrics, ksmResource, stuckWrites } from '../../device-plugin/src/metrics.js';
import type { PoolPlan, Slice } from '../../device-plugin/src/model.js';
import { OperatorMetrics } from '../../operator/src/metrics.js';
import type { Pool } from '../../operator/src/api/types.js';
import { REPO_ROOT } from '../cluster/control-plane.js';

const net: PoolPlan = { name: 'fast-net', resourceName: 'virtualio.dev/fast-net', class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork', devices: [{ pciAddress: '0000:81:00.0' }] };
const vgpu: PoolPlan = { name: 'a16-vgpu', resourceName: 'nvidia.com/NVIDIA_A16-4Q', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', devices: [{ pciAddress: '0000:3b:00.0' }] };
const slice = (pool: PoolPlan, id: string, health: Slice['health'], extra: Partial<Slice> = {}): Slice => ({
  id, pool: pool.name, resourceName: pool.resourceName, kind: 'VF', parent: pool.devices[0]?.pciAddress ?? '', pciAddress: id, deviceNodes: [], health, ...extra,
});

function input(over: Partial<StatusInput> = {}): StatusInput {
  return {
    agentVersion: '0.1.0',
    pools: [net, vgpu],
    planLoaded: true,
    inventory: { devices: [{ pciAddress: '0000:81:00.0' }, { pciAddress: '0000:3b:00.0' }] },
    slices: [
      slice(net, '0000:81:00.2', 'Healthy'),
      slice(net, '0000:81:00.3', 'Unhealthy', { reason: 'VF 0000:81:00.3 is not bound to a driver, expected vfio-pci' }),
      slice(net, '0000:81:00.4', 'Unhealthy', { reason: 'gone' }),
      slice(net, '0000:81:00.5', 'Healthy', { draining: 'no longer planned' }),
    ],
    holders: new Map([['0000:81:00.3', { resourceName: net.resourceName, namespace: 'vms', pod: 'virt-launcher-vm1-x2x4z', container: 'compute', vmi: 'vm1' }]]),
    registration: new Map([['fast-net', { registered: true }], ['a16-vgpu', { registered: true }]]),
    blocked: [{ pool: 'a16-vgpu', device: '0000:3b:00.0', reason: 'stuck: bus/mdev/x/create="u" has not returned for 95 s (the device is probably held open, e.g. by a VM); other devices proceed' }],
    carvingErrors: [],
    holdersUnknown: 'PodResources has not answered yet',
    now: new Date('2026-01-01T00:00:00Z'),
    ...over,
  };
}

/** The exported samples of one metric as "labels=value" lines, sorted. */
async function samples(registry: Registry, name: string): Promise<string[]> {
  const m = registry.getSingleMetric(name);
  if (!m) throw new Error(`no metric ${name}`);
  const got = await m.get();
  return got.values
    .map((v) => `${Object.entries(v.labels).map(([k, x]) => `${k}=${x}`).join(',')} ${v.value}`)
    .sort();
}

describe('agent: gauges derived from the status', () => {
  test('nothing but the counters before the first status', async () => {
    const m = createMetrics();
    expect(await samples(m.registry, 'virtualio_agent_pool_capacity_slices')).toEqual([]);
    expect(await samples(m.registry, 'virtualio_agent_carving_operations_total')).toEqual(CARVING_RESULTS.map((r) => `result=${r} 0`).sort());
  });

  test('pools, slices, conditions, problems and stuck writes, from a status buildStatus made', async () => {
    const m = createMetrics();
    const st = buildStatus(input());
    m.statusSource = () => st;
    const r = m.registry;
    expect(await samples(r, 'virtualio_agent_build_info')).toEqual(['version=0.1.0 1']);
    expect(await samples(r, 'virtualio_agent_pool_capacity_slices')).toEqual(['pool=a16-vgpu,resource=nvidia_com_NVIDIA_A16_4Q 0', 'pool=fast-net,resource=virtualio_dev_fast_net 4']);
    expect(await samples(r, 'virtualio_agent_pool_allocatable_slices')).toEqual(['pool=a16-vgpu,resource=nvidia_com_NVIDIA_A16_4Q 0', 'pool=fast-net,resource=virtualio_dev_fast_net 1']);
    expect(await samples(r, 'virtualio_agent_pool_allocated_slices')).toEqual(['pool=a16-vgpu,resource=nvidia_com_NVIDIA_A16_4Q 0', 'pool=fast-net,resource=virtualio_dev_fast_net 1']);
    expect(await samples(r, 'virtualio_agent_pool_registered')).toEqual(['pool=a16-vgpu,resource=nvidia_com_NVIDIA_A16_4Q 1', 'pool=fast-net,resource=virtualio_dev_fast_net 1']);
    expect(await samples(r, 'virtualio_agent_pool_unhealthy_slices')).toEqual(['pool=a16-vgpu 0', 'pool=fast-net 2']);
    expect(await samples(r, 'virtualio_agent_pool_draining_slices')).toEqual(['pool=a16-vgpu 0', 'pool=fast-net 1']);
    const states = await samples(r, 'virtualio_agent_pool_state');
    expect(states.filter((s) => s.endsWith(' 1'))).toEqual(['pool=a16-vgpu,state=Blocked 1', 'pool=fast-net,state=Draining 1']);
    expect(states).toHaveLength(14);
    expect(await samples(r, 'virtualio_agent_slice_unhealthy')).toEqual([
      'pool=fast-net,slice=0000:81:00.3,parent=0000:81:00.0,held=true,holder_namespace=vms,holder_pod=virt-launcher-vm1-x2x4z,vmi=vm1 1',
      'pool=fast-net,slice=0000:81:00.4,parent=0000:81:00.0,held=false,holder_namespace=,holder_pod=,vmi= 1',
    ]);
    expect(await samples(r, 'virtualio_agent_node_condition')).toEqual(['condition=Degraded,status=True,reason=CarvingBlocked 1', 'condition=Ready,status=True,reason=PoolsRegistered 1']);
    const problems = await samples(r, 'virtualio_agent_node_problem');
    expect(problems.filter((s) => s.endsWith(' 1'))).toEqual(['problem=CarvingBlocked 1', 'problem=Draining 1', 'problem=HoldersUnknown 1', 'problem=UnhealthySlices 1']);
    expect(problems).toHaveLength(NODE_PROBLEMS.length);
    expect(await samples(r, 'virtualio_agent_write_stuck_seconds')).toEqual(['pool=a16-vgpu,device=0000:3b:00.0 95']);
    // Text exposition: what Prometheus reads.
    const text = await r.metrics();
    expect(text).toContain('virtualio_agent_pool_capacity_slices{pool="fast-net",resource="virtualio_dev_fast_net"} 4');
  });

  test('the stuck-write reason parsed here is the one the carver writes', () => {
    // The carver (device-plugin/src/agent/carver.ts) reports a stuck write as a blocked change with this reason.
    const carver = readFileSync(join(REPO_ROOT, 'device-plugin/src/agent/carver.ts'), 'utf8');
    expect(carver).toContain('device: st.lane, reason: `stuck: ${st.path}=${JSON.stringify(st.value)} has not returned for ${secs} s');
  });

  test('a stuck write is found in the Degraded message when the pool message names something else', () => {
    const st = buildStatus(input({ carvingErrors: [{ pool: 'a16-vgpu', message: 'write failed: EINVAL' }] }));
    expect(st.pools?.find((p) => p.name === 'a16-vgpu')?.state).toBe('Error');
    expect(stuckWrites(st)).toEqual([{ pool: 'a16-vgpu', device: '0000:3b:00.0', seconds: 95 }]);
  });

  test('a healthy node: no unhealthy slice series, no problem, no stuck write', async () => {
    const m = createMetrics();
    const st = buildStatus(input({ slices: [slice(net, '0000:81:00.2', 'Healthy')], blocked: [], holdersUnknown: undefined }));
    m.statusSource = () => st;
    expect(await samples(m.registry, 'virtualio_agent_slice_unhealthy')).toEqual([]);
    expect((await samples(m.registry, 'virtualio_agent_node_problem')).filter((s) => s.endsWith(' 1'))).toEqual([]);
    expect(await samples(m.registry, 'virtualio_agent_write_stuck_seconds')).toEqual([]);
    expect(await samples(m.registry, 'virtualio_agent_node_condition')).toEqual(['condition=Degraded,status=False,reason=AsPlanned 1', 'condition=Ready,status=True,reason=PoolsRegistered 1']);
  });

  test('resource names as kube-state-metrics writes them', () => {
    expect(ksmResource('virtualio.dev/fast-net')).toBe('virtualio_dev_fast_net');
    expect(ksmResource('nvidia.com/GRID_T4-1B')).toBe('nvidia_com_GRID_T4_1B');
  });
});

describe('agent: slices that turned unhealthy', () => {
  test('slices that went from Healthy to Unhealthy count, new or vanished ones do not; the counter exists from the pool\'s first report', async () => {
    const m = createMetrics();
    const set = (pool: string, healthy: number, unhealthy: number): void => {
      m.slices.set({ pool, health: 'Healthy' }, healthy);
      m.slices.set({ pool, health: 'Unhealthy' }, unhealthy);
    };
    set('fast-net', 4, 0);
    expect(await samples(m.registry, 'virtualio_agent_slice_health_failures_total')).toEqual(['pool=fast-net 0']);
    set('fast-net', 3, 1); // a VF unbound
    set('fast-net', 4, 0); // re-bound a moment later
    set('fast-net', 2, 2); // two more
    set('fast-net', 3, 1); // one repaired
    set('fast-net', 3, 3); // two new VFs, not ready yet (carving): not a failure
    set('fast-net', 5, 0); // ready
    set('fast-net', 4, 0); // one VF gone (count lowered): not a failure
    m.slices.set({ pool: 'fast-net', health: 'Unhealthy' }, 1); // either order
    m.slices.set({ pool: 'fast-net', health: 'Healthy' }, 3);
    set('a16-vgpu', 1, 1); // a pool that starts with a broken slice
    set('a16-vgpu', 0, 2);
    expect(await samples(m.registry, 'virtualio_agent_slice_health_failures_total')).toEqual(['pool=a16-vgpu 1', 'pool=fast-net 4']);
    expect(await samples(m.registry, 'virtualio_agent_slices')).toEqual([
      'pool=a16-vgpu,health=Healthy 0', 'pool=a16-vgpu,health=Unhealthy 2', 'pool=fast-net,health=Healthy 3', 'pool=fast-net,health=Unhealthy 1',
    ]);
  });
});

describe('operator: pool conditions', () => {
  test('exported from the pools it is given, only while it is given them', async () => {
    const m = new OperatorMetrics();
    const pool = (name: string, conditions: NonNullable<NonNullable<Pool['status']>['conditions']>): Pool =>
      ({ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name }, spec: {}, status: { conditions } }) as unknown as Pool;
    const t = '2026-01-01T00:00:00Z';
    expect(await samples(m.registry, 'virtualio_operator_pool_condition')).toEqual([]);
    m.watchPools(() => [
      pool('x520-vfs', [{ type: 'Ready', status: 'True', reason: 'AllNodesReady', message: '', lastTransitionTime: t }]),
      pool('x520-vfs-b', [{ type: 'Conflict', status: 'True', reason: 'DeviceConflict', message: 'm', lastTransitionTime: t }]),
    ]);
    expect(await samples(m.registry, 'virtualio_operator_pool_condition')).toEqual([
      'pool=x520-vfs,condition=Ready,status=True,reason=AllNodesReady 1',
      'pool=x520-vfs-b,condition=Conflict,status=True,reason=DeviceConflict 1',
    ]);
    m.watchPools(undefined);
    expect(await samples(m.registry, 'virtualio_operator_pool_condition')).toEqual([]);
  });
});
