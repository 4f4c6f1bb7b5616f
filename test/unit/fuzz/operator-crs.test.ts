// Fuzzing the operator's reading of custom resources past their CEL rules (issue 21, hostile
// input): VirtualIODevice pools and VirtualIONodes as the API server may hold them after a schema
// change or from another version (a field deleted, of another type, renamed), next to well-formed
// ones. Planning, KubeVirt entries and status must never throw; one malformed pool must not stop
// the other pools' plans, and must not take its devices from the nodes that carry it (a node keeps
// the malformed pool's current plan entry). Budget: test/fuzz/budget.ts.
import fc from 'fast-check';
import type { Pool, PoolPlan, VioNode } from '../../../operator/src/api/types.js';
import { Reason } from '../../../operator/src/api/conditions.js';
import { kubevirtCondition, poolEntries } from '../../../operator/src/controllers/kubevirt/entries.js';
import { planNode, poolPlanFor, preparePools } from '../../../operator/src/controllers/plan/plan.js';
import { poolSpecProblem } from '../../../operator/src/controllers/plan/shape.js';
import { vioNodeCacheForm } from '../../../operator/src/operator.js';
import { computeStatus } from '../../../operator/src/controllers/status/status.js';
import { gpu, nicPF, nodeObj, nvme, poolObj, slice, vioNodeObj } from '../../support/operator-fixtures.js';
import { mutated } from '../../fuzz/arbitraries.js';
import { fuzz } from '../../fuzz/budget.js';

const kvView = { installed: true, found: true, ref: 'kubevirt/kubevirt', managed: true, current: { pciHostDevices: [], mediatedDevices: [] } };
const inventory = [...nicPF('0000:81:00.0', { vfs: 2 }), gpu('0000:3b:00.0', { mdevTypes: [{ id: 'nvidia-222', availableInstances: 4 }] }), nvme('0000:5e:00.0')];

/** Well-formed pools of every mode, each selecting one device of the inventory. */
const validPool = fc.record({ name: fc.constantFrom('net', 'vgpu', 'disk', 'gpu'), created: fc.nat({ max: 100 }), dra: fc.boolean(), deleting: fc.boolean() }).map(({ name, created, dra, deleting }): Pool => {
  const spec: Partial<Pool['spec']> & Pick<Pool['spec'], 'class'> =
    name === 'net' ? { class: 'NIC', deviceSelector: { vendorIDs: ['8086'], interfaceNames: ['ens1f0#0-1'] }, carving: { mode: 'SRIOV', count: 2 } }
      : name === 'vgpu' ? { class: 'GPU', deviceSelector: { pciAddresses: ['0000:3b:00.0'] }, carving: { mode: 'Mediated', count: 2, mdevType: 'nvidia-222' }, nodeSelector: { matchExpressions: [{ key: 'gpu', operator: 'Exists' }] } }
        : name === 'disk' ? { class: 'Storage', deviceSelector: { vendorIDs: ['144d'] }, carving: { mode: 'Passthrough' } }
          : { class: 'GPU', deviceSelector: { vendorIDs: ['10de'], numaNodes: [0] }, carving: { mode: 'Passthrough' }, allocation: { policy: 'Pack' } };
  return poolObj(name, { ...spec, ...(dra && name !== 'disk' ? { frontEnd: 'DRA' as const } : {}) }, { createdSec: created, deleting });
});
/**
 * The API server keeps metadata well-formed (name, uid, timestamps); what can drift past a schema
 * change is the spec (and the status), so only those are mutated.
 */
function withMutated<T extends { spec?: unknown; status?: unknown }>(valid: fc.Arbitrary<T>, field: 'spec' | 'status'): fc.Arbitrary<T> {
  return valid.chain((v) => mutated(fc.constant(v[field] ?? {}), 3).map((x) => ({ ...v, [field]: x })));
}
const badPool = withMutated(validPool, 'spec');
const pools = fc.array(fc.oneof({ weight: 2, arbitrary: validPool }, { weight: 1, arbitrary: badPool }), { minLength: 1, maxLength: 4 });
const currentPlan = (p: Pool): PoolPlan => poolPlanFor({ pool: p, name: p.metadata.name, resourceName: `virtualio.dev/${p.metadata.name}`, consumption: 'HostDevice', deleting: false, resourceNameConflicts: [] }, [{ pciAddress: '0000:3b:00.0' }]);
const vgpuPlan: PoolPlan = { name: 'vgpu', resourceName: 'virtualio.dev/vgpu', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', mdevType: 'nvidia-222', devices: [{ pciAddress: '0000:3b:00.0' }] };
const goodVioValue = vioNodeObj('node-a', {
  devices: inventory, plan: [vgpuPlan],
  status: { observedGeneration: 2, pools: [{ name: 'vgpu', state: 'Ready', capacity: 2, allocatable: 1, allocated: 1 }], slices: [slice('mdev-1', 'vgpu', { parent: '0000:3b:00.0', pod: 'virt-launcher-a' }), slice('mdev-2', 'vgpu', { parent: '0000:3b:00.0' })] },
});
const goodVio = fc.constant(goodVioValue);
const vioNode = fc.oneof({ weight: 2, arbitrary: goodVio }, { weight: 1, arbitrary: withMutated(goodVio, 'status') }, { weight: 1, arbitrary: withMutated(goodVio, 'spec') });

function planAll(ps: readonly Pool[], vio: VioNode) {
  const prepared = preparePools(ps);
  const plan = planNode(nodeObj('node-a', { gpu: 'yes' }), vio, prepared);
  const statuses = prepared.ordered.map((p) => {
    const entries = poolEntries(p, [vio]);
    return computeStatus(p.pool.status, { prepared: p, nodes: [vio], conflicts: plan.conflicts.filter((c) => c.pool === p.name), kubevirtEntries: entries, kubevirtCondition: kubevirtCondition(p, entries, kvView), now: Date.UTC(2026, 11, 6) });
  });
  return { prepared, plan, statuses };
}

test('planning, KubeVirt entries and status never throw on pools and nodes of any shape', () => {
  fuzz('operator planning+status', 400, [pools, vioNode], (ps, vio) => {
    try {
      planAll(ps, vio);
    } catch (err) {
      throw new Error(`threw ${String(err)}`, { cause: err });
    }
  });
});

test("the informer's cached form of a VirtualIONode of any shape never throws, and planning on it never throws", () => {
  fuzz('operator VirtualIONode cache form', 400, [pools, vioNode], (ps, vio) => {
    let cached: VioNode;
    try {
      cached = vioNodeCacheForm(undefined, vio);
    } catch (err) {
      throw new Error(`vioNodeCacheForm threw ${String(err)}`, { cause: err });
    }
    try {
      planAll(ps, cached);
    } catch (err) {
      throw new Error(`planning on the cached form threw ${String(err)}`, { cause: err });
    }
    // A well-formed VirtualIONode plans the same, cached or not.
    if (vio === goodVioValue) expect(planAll(ps, cached).plan).toEqual(planAll(ps, vio).plan);
  });
});

test('a malformed pool neither stops the well-formed ones nor loses the devices it carries', () => {
  const vgpu = poolObj('vgpu', { class: 'GPU', deviceSelector: { pciAddresses: ['0000:3b:00.0'] }, carving: { mode: 'Mediated', count: 2, mdevType: 'nvidia-222' } });
  const disk = poolObj('disk', { class: 'Storage', deviceSelector: { vendorIDs: ['144d'] }, carving: { mode: 'Passthrough' } }, { createdSec: 5 });
  fuzz('operator malformed pool isolation', 300, [withMutated(fc.constant(vgpu), 'spec')], (bad) => {
    const vio = vioNodeObj('node-a', { devices: inventory, plan: [currentPlan(vgpu)] });
    const { plan } = planAll([bad, disk], vio);
    // The well-formed pool is planned whatever happened to the other.
    expect(plan.pools.find((p) => p.name === 'disk')?.devices).toEqual([{ pciAddress: '0000:5e:00.0' }]);
    // A spec planning cannot read keeps the node's entry for the GPU as it was (a spec that is still
    // well-formed is an edit, and is planned like one).
    if (poolSpecProblem(bad) !== undefined) expect(plan.pools.find((p) => p.name === 'vgpu')?.devices).toEqual([{ pciAddress: '0000:3b:00.0' }]);
    void Reason;
  });
});

describe('counterexamples the fuzzer found, kept as examples', () => {
  const disk = poolObj('disk', { class: 'Storage', deviceSelector: { vendorIDs: ['144d'] }, carving: { mode: 'Passthrough' } });
  const vgpu = poolObj('vgpu', { class: 'GPU', deviceSelector: { pciAddresses: ['0000:3b:00.0'] }, carving: { mode: 'Mediated', count: 2, mdevType: 'nvidia-222' } });

  test('a pool without spec neither throws nor unplans the GPU its node carries; the other pool is planned', () => {
    const bad = { ...vgpu, spec: undefined } as unknown as Pool;
    const vio = vioNodeObj('node-a', { devices: inventory, plan: [vgpuPlan] });
    const { prepared, plan } = planAll([bad, disk], vio);
    expect(prepared.malformed.get('vgpu')?.problem).toBe('spec: not an object');
    expect(plan.pools.map((p) => [p.name, p.devices])).toEqual([['disk', [{ pciAddress: '0000:5e:00.0' }]], ['vgpu', [{ pciAddress: '0000:3b:00.0' }]]]);
  });

  test('an inventory device of another shape (null) is skipped, and the inventory counts as partial', () => {
    const vio = vioNodeObj('node-a', { devices: [null as unknown as (typeof inventory)[number], ...inventory] });
    expect(planAll([disk], vio).plan.pools.map((p) => p.name)).toEqual(['disk']);
  });

  test('an agent pool status whose state is not a string ({toString: null}) is skipped, not a TypeError (seed 630992014)', () => {
    const vio = { ...vioNodeObj('node-a', { devices: inventory, plan: [vgpuPlan] }), status: { ...goodVioValue.status, pools: [{ name: 'vgpu', state: JSON.parse('{"toString":null}') as string }] } } as VioNode;
    expect(() => planAll([vgpu], vio)).not.toThrow();
    expect(vioNodeCacheForm(undefined, vio).status?.pools).toEqual([]);
  });

  test('VirtualIONode spec.pools of another type (an object) reads as no current plan', () => {
    const vio = { ...vioNodeObj('node-a', { devices: inventory }), spec: { pools: { vgpu: vgpuPlan } } } as unknown as VioNode;
    expect(planAll([disk, vgpu], vio).plan.pools.map((p) => p.name)).toEqual(['disk', 'vgpu']);
  });
});
