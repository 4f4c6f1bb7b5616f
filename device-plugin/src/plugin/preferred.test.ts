import type { Slice } from '../model.js';
import { preferredAllocation } from './preferred.js';

function s(id: string, parent: string, numa: number | undefined, group: number, extra: Partial<Slice> = {}): Slice {
  const out: Slice = { id, pool: 'p', resourceName: 'virtualio.dev/p', kind: 'VF', parent, pciAddress: id, iommuGroup: group, deviceNodes: [], health: 'Healthy', ...extra };
  if (numa !== undefined) out.numaNode = numa;
  return out;
}
const snap = (...x: Slice[]): Map<string, Slice> => new Map(x.map((y) => [y.id, y]));

// Two parents on NUMA 0 (A: 3 free, B: 2 free), one parent on NUMA 1 (C: 4 free).
const pool = snap(
  s('a1', 'A', 0, 1), s('a2', 'A', 0, 2), s('a3', 'A', 0, 3),
  s('b1', 'B', 0, 4), s('b2', 'B', 0, 5),
  s('c1', 'C', 1, 6), s('c2', 'C', 1, 7), s('c3', 'C', 1, 8), s('c4', 'C', 1, 9),
);
const all = [...pool.keys()];

describe('preferredAllocation', () => {
  test('Pack fills the fullest parent first, on one NUMA node', () => {
    expect(preferredAllocation({ availableDeviceIDs: all, mustIncludeDeviceIDs: [], allocationSize: 2 }, { policy: 'Pack' }, pool)).toStrictEqual(['b1', 'b2']);
    expect(preferredAllocation({ availableDeviceIDs: all, mustIncludeDeviceIDs: [], allocationSize: 4 }, { policy: 'Pack' }, pool)).toStrictEqual(['c1', 'c2', 'c3', 'c4']);
    expect(preferredAllocation({ availableDeviceIDs: all, mustIncludeDeviceIDs: [], allocationSize: 5 }, { policy: 'Pack' }, pool)).toStrictEqual(['b1', 'b2', 'a1', 'a2', 'a3']);
  });

  test('Spread round-robins parents on the emptiest NUMA node that fits', () => {
    expect(preferredAllocation({ availableDeviceIDs: all, mustIncludeDeviceIDs: [], allocationSize: 3 }, { policy: 'Spread' }, pool)).toStrictEqual(['a1', 'b1', 'a2']);
  });

  test('a request larger than any NUMA node spans nodes', () => {
    const out = preferredAllocation({ availableDeviceIDs: all, mustIncludeDeviceIDs: [], allocationSize: 7 }, { policy: 'Pack' }, pool);
    expect(out).toHaveLength(7);
    expect(new Set(out).size).toBe(7);
  });

  test('must_include comes first and pulls the request to its NUMA node and parent', () => {
    expect(preferredAllocation({ availableDeviceIDs: all, mustIncludeDeviceIDs: ['c3'], allocationSize: 2 }, { policy: 'Pack' }, pool)).toStrictEqual(['c3', 'c1']);
    expect(preferredAllocation({ availableDeviceIDs: all, mustIncludeDeviceIDs: ['a2'], allocationSize: 3 }, { policy: 'Pack' }, pool)).toStrictEqual(['a2', 'a1', 'a3']);
  });

  test('must_include larger than the size is returned whole', () => {
    expect(preferredAllocation({ availableDeviceIDs: all, mustIncludeDeviceIDs: ['a1', 'c1'], allocationSize: 1 }, { policy: 'Pack' }, pool)).toStrictEqual(['a1', 'c1']);
  });

  test('only available IDs are chosen', () => {
    expect(preferredAllocation({ availableDeviceIDs: ['a1', 'c2'], mustIncludeDeviceIDs: [], allocationSize: 2 }, { policy: 'Pack' }, pool)).toStrictEqual(['a1', 'c2']);
  });

  describe('IOMMU groups are never split', () => {
    // GPU + audio share group 7 on parent G1; G2 alone in group 8.
    const gp = snap(s('0000:3b:00.0', 'G1', 0, 7), s('0000:3b:00.1', 'G1', 0, 7), s('0000:5e:00.0', 'G2', 0, 8));
    test('a two-slice group is taken whole', () => {
      expect(preferredAllocation({ availableDeviceIDs: [...gp.keys()], mustIncludeDeviceIDs: [], allocationSize: 2 }, { policy: 'Pack' }, gp)).toStrictEqual(['0000:3b:00.0', '0000:3b:00.1']);
    });
    test('size 1 skips the two-slice group', () => {
      expect(preferredAllocation({ availableDeviceIDs: [...gp.keys()], mustIncludeDeviceIDs: [], allocationSize: 1 }, { policy: 'Pack' }, gp)).toStrictEqual(['0000:5e:00.0']);
    });
    test('must_include of one member brings its companion', () => {
      expect(preferredAllocation({ availableDeviceIDs: [...gp.keys()], mustIncludeDeviceIDs: ['0000:3b:00.1'], allocationSize: 2 }, { policy: 'Pack' }, gp)).toStrictEqual(['0000:3b:00.1', '0000:3b:00.0']);
    });
    test('a group with an unavailable member is not offered', () => {
      expect(preferredAllocation({ availableDeviceIDs: ['0000:3b:00.0', '0000:5e:00.0'], mustIncludeDeviceIDs: [], allocationSize: 2 }, { policy: 'Pack' }, gp)).toStrictEqual(['0000:5e:00.0']);
    });
  });

  test('deterministic whatever the input order', () => {
    const a = preferredAllocation({ availableDeviceIDs: all, mustIncludeDeviceIDs: [], allocationSize: 3 }, { policy: 'Spread' }, pool);
    const b = preferredAllocation({ availableDeviceIDs: [...all].reverse(), mustIncludeDeviceIDs: [], allocationSize: 3 }, { policy: 'Spread' }, new Map([...pool].reverse()));
    expect(b).toStrictEqual(a);
  });

  test('slices without NUMA information still get chosen', () => {
    const p = snap(s('x1', 'X', undefined, 1), s('x2', 'X', undefined, 2));
    expect(preferredAllocation({ availableDeviceIDs: ['x2', 'x1'], mustIncludeDeviceIDs: [], allocationSize: 2 }, {}, p)).toStrictEqual(['x1', 'x2']);
  });
});
