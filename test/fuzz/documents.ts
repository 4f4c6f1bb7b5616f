// Well-formed documents the agent reads from outside (plans, its own checkpoint, the DRA checkpoint,
// the kubelet's checkpoint) as fast-check generators: the starting point that the fuzzers damage
// (test/fuzz/arbitraries.ts) and the inputs that must round-trip unchanged.
import fc from 'fast-check';
import type { CheckpointData } from '../../device-plugin/src/agent/checkpoint.js';
import type { PreparedClaim } from '../../device-plugin/src/dra/prepare.js';
import type { PoolPlan } from '../../device-plugin/src/model.js';

const label = fc.stringMatching(/^[a-z][a-z0-9-]{0,10}[a-z0-9]$/);
const text = fc.string({ maxLength: 16 });

/** Valid plan entries, each on its own PCI bus so no two pools share a device. */
export const poolPlans: fc.Arbitrary<PoolPlan[]> = fc
  .uniqueArray(fc.record({ name: label, bus: fc.integer({ min: 0, max: 255 }), kind: fc.constantFrom('vf', 'mdev', 'pass', 'npiv'), count: fc.option(fc.nat({ max: 64 }), { nil: undefined }), dra: fc.boolean(), policy: fc.constantFrom(undefined, 'Pack', 'Spread', 'NUMAAligned'), fns: fc.integer({ min: 0, max: 3 }) }), { maxLength: 4, selector: (p) => p.name })
  .filter((ps) => new Set(ps.map((p) => p.bus)).size === ps.length)
  .map((ps) => ps.map((p): PoolPlan => {
    const cls = p.kind === 'npiv' ? 'Storage' : p.kind === 'vf' ? 'NIC' : 'GPU';
    const mode = p.kind === 'vf' ? 'SRIOV' : p.kind === 'mdev' ? 'Mediated' : p.kind === 'npiv' ? 'NPIV' : 'Passthrough';
    const bus = p.bus.toString(16).padStart(2, '0');
    return {
      name: p.name,
      resourceName: `virtualio.dev/${p.name}`,
      class: cls,
      mode,
      consumption: mode === 'Mediated' ? 'MediatedDevice' : 'HostDevice',
      ...(p.policy ? { policy: p.policy as PoolPlan['policy'] } : {}),
      ...(p.count !== undefined && mode !== 'Passthrough' ? { count: p.count } : {}),
      ...(mode === 'Mediated' ? { mdevType: 'nvidia-222' } : {}),
      ...(p.dra && mode !== 'NPIV' ? { frontEnd: 'DRA' as const } : {}),
      devices: Array.from({ length: p.fns }, (_, f) => ({ pciAddress: `0000:${bus}:00.${f}` })),
    };
  }));

const pci = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 7 })).map(([b, f]) => `0000:${b.toString(16).padStart(2, '0')}:00.${f}`);
const uuid = fc.uuid();

/** A valid agent checkpoint of `node`. */
export function checkpointData(node: string): fc.Arbitrary<CheckpointData> {
  return fc.record({
    pools: poolPlans,
    retired: poolPlans.chain((ps) => fc.constant(ps.map((plan) => ({ plan, why: 'left the plan' })))),
    pfs: fc.dictionary(pci, fc.record({ pools: fc.array(label, { maxLength: 2 }) }), { maxKeys: 3 }),
    devices: fc.dictionary(pci, fc.record({ driver: fc.constantFrom('ixgbe', 'nvidia', 'mlx5_core'), interfaceNames: fc.array(label, { maxLength: 2 }) }, { requiredKeys: [] }), { maxKeys: 3 }),
    mdevCapacity: fc.option(fc.dictionary(pci, fc.dictionary(label, fc.nat({ max: 32 }), { minKeys: 1, maxKeys: 2 }), { minKeys: 1, maxKeys: 2 }), { nil: undefined }),
    carvings: fc.option(fc.dictionary(uuid, fc.record({ pool: label, namespace: label, claim: label, uid: uuid, since: fc.constant('2026-12-06T00:00:00.000Z') }), { minKeys: 1, maxKeys: 2 }), { nil: undefined }),
    lost: fc.option(fc.record({ at: fc.constant('2026-12-06T00:00:00.000Z'), why: text }), { nil: undefined }),
  }).map((d) => {
    const out: CheckpointData = { version: 1, node, pools: Object.fromEntries(d.pools.map((p) => [p.name, p])), retired: d.retired, pfs: d.pfs, devices: d.devices };
    if (d.mdevCapacity) out.mdevCapacity = d.mdevCapacity;
    if (d.carvings) out.carvings = d.carvings;
    if (d.lost) out.lost = d.lost;
    return out;
  });
}

/** Valid prepared DRA claims with distinct UIDs. */
export const preparedClaims: fc.Arbitrary<PreparedClaim[]> = fc.uniqueArray(
  fc.record({
    uid: uuid, namespace: label, name: label,
    podClaimName: fc.option(label, { nil: undefined }),
    devices: fc.array(fc.record({ request: label, pool: label.map((p) => `node-a/${p}`), device: label, sliceId: label, cdiId: label.map((d) => `virtualio.dev/claim=${d}`), resourceName: fc.option(label.map((n) => `virtualio.dev/${n}`), { nil: undefined }) }, { requiredKeys: ['request', 'pool', 'device', 'sliceId', 'cdiId'] }), { maxLength: 3 }),
    pods: fc.option(fc.array(label, { maxLength: 2 }), { nil: undefined }),
  }, { requiredKeys: ['uid', 'namespace', 'name', 'devices'] }),
  { maxLength: 4, selector: (c) => c.uid },
);

/** The kubelet's device manager checkpoint (both DeviceIDs layouts). */
export const kubeletCheckpoint: fc.Arbitrary<{ Data: { PodDeviceEntries: { PodUID: string; ContainerName: string; ResourceName: string; DeviceIDs: string[] | Record<string, string[]> }[]; RegisteredDevices: Record<string, string[]> }; Checksum: number }> = fc.record({
  Data: fc.record({
    PodDeviceEntries: fc.array(fc.record({
      PodUID: uuid, ContainerName: label, ResourceName: label.map((n) => `virtualio.dev/${n}`),
      DeviceIDs: fc.oneof(fc.array(label, { maxLength: 3 }), fc.dictionary(fc.constantFrom('0', '1', '-1'), fc.array(label, { maxLength: 3 }), { maxKeys: 2 })),
    }), { maxLength: 4 }),
    RegisteredDevices: fc.dictionary(label, fc.array(label, { maxLength: 3 }), { maxKeys: 2 }),
  }),
  Checksum: fc.nat(),
});
