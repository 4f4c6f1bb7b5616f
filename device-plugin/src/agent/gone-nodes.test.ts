import type { Slice } from '../model.js';
import { GoneNodes } from './gone-nodes.js';

const slice = (id: string, nodes: string[], health: Slice['health'] = 'Healthy'): Slice =>
  ({ id, pool: 'nic', resourceName: 'virtualio.dev/nic', kind: 'VF', pciAddress: id, deviceNodes: nodes, health }) as Slice;

describe('GoneNodes (health fast path)', () => {
  const present = new Set(['/dev/vfio/60', '/dev/vfio/61', '/dev/vfio/devices/vfio0']);
  const g = new GoneNodes('/host/dev', (p) => present.has(p.replace('/host/dev/', '/dev/')));
  const slices = [slice('a', ['/dev/vfio/60', '/dev/vfio/devices/vfio0']), slice('b', ['/dev/vfio/61']), slice('c', ['/dev/vfio/62'], 'Unhealthy')];

  it('an event about a node a Healthy slice needs, now gone, turns that slice (only) Unhealthy', () => {
    expect(g.note('/host/dev/vfio', '60', slices)).toBeUndefined(); // still there: nothing to do
    present.delete('/dev/vfio/60');
    expect(g.note('/host/dev/vfio', '60', slices)).toBe('/dev/vfio/60');
    const out = g.apply(slices);
    expect(out.map((s) => [s.id, s.health])).toEqual([['a', 'Unhealthy'], ['b', 'Healthy'], ['c', 'Unhealthy']]);
    expect(out[0]?.reason).toBe('/dev/vfio/60 is missing');
  });

  it('ignores events about nodes no Healthy slice needs, and entries with no name', () => {
    expect(g.note('/host/dev/vfio', '62', slices)).toBeUndefined(); // slice c is already Unhealthy
    expect(g.note('/host/dev/vfio', '99', slices)).toBeUndefined();
    expect(g.note('/host/dev/vfio', null, slices)).toBeUndefined();
    expect(g.note('/sys/bus/pci/devices', '0000:81:00.2', slices)).toBeUndefined(); // not under the dev root
  });

  it('keeps the slice Unhealthy in a cycle built from an older scan, until the node exists again', () => {
    expect(g.apply(slices)[0]?.health).toBe('Unhealthy'); // the scan said Healthy: the event wins
    present.add('/dev/vfio/60');
    expect(g.apply(slices)[0]?.health).toBe('Healthy');
    present.delete('/dev/vfio/60');
    expect(g.apply(slices)[0]?.health).toBe('Healthy'); // forgotten: the next event (or scan) decides
  });
});
