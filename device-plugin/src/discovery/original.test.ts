import type { InventoryDevice } from '../model.js';
import { factsOf, parseOriginalRecord, recordOriginals, settledOriginals, withOriginals, type OriginalRecord } from './original.js';

const gpuOnNvidia: InventoryDevice = { pciAddress: '0000:41:00.0', vendorID: '10de', deviceID: '2231', classCode: '030000', driver: 'nvidia', iommuGroup: 40 };
const audio: InventoryDevice = { pciAddress: '0000:41:00.1', vendorID: '10de', deviceID: '1aef', classCode: '040300', driver: 'snd_hda_intel', iommuGroup: 40 };
const nic: InventoryDevice = { pciAddress: '0000:82:00.0', vendorID: '8086', deviceID: '1593', classCode: '020000', driver: 'ice', netdevs: [{ name: 'ens2f0', operState: 'up' }, { name: 'ens2f0d1' }] };
const unbound: InventoryDevice = { pciAddress: '0000:c1:00.0', vendorID: '144d', deviceID: 'a808', classCode: '010802' };
const onVfio = (d: InventoryDevice): InventoryDevice => {
  const { netdevs: _n, ...rest } = d;
  return { ...rest, driver: 'vfio-pci' };
};

describe('factsOf', () => {
  test('driver and sorted, distinct netdev names; nothing for an unbound function', () => {
    expect(factsOf(nic)).toEqual({ driver: 'ice', interfaceNames: ['ens2f0', 'ens2f0d1'] });
    expect(factsOf(gpuOnNvidia)).toEqual({ driver: 'nvidia' });
    expect(factsOf(unbound)).toEqual({});
  });
});

describe('recordOriginals', () => {
  const inv = [gpuOnNvidia, audio, nic];

  test('records what each device looks like before the first move', () => {
    const r = recordOriginals({}, inv, ['0000:41:00.0', '0000:41:00.1', '0000:82:00.0']);
    expect(r.changed).toBe(true);
    expect(r.record).toEqual({
      '0000:41:00.0': { driver: 'nvidia' },
      '0000:41:00.1': { driver: 'snd_hda_intel' },
      '0000:82:00.0': { driver: 'ice', interfaceNames: ['ens2f0', 'ens2f0d1'] },
    });
  });

  test('the first facts win: moving again (after a restart, the device now on vfio-pci) does not record vfio-pci', () => {
    const first = recordOriginals({}, inv, ['0000:41:00.0']).record;
    const again = recordOriginals(first, [onVfio(gpuOnNvidia)], ['0000:41:00.0']);
    expect(again).toEqual({ record: first, changed: false });
    expect(again.record).toBe(first);
  });

  test('a device missing from the inventory is not recorded; the input record is not modified', () => {
    const base: OriginalRecord = { '0000:41:00.0': { driver: 'nvidia' } };
    const r = recordOriginals(base, inv, ['0000:99:00.0', '0000:82:00.0', '0000:82:00.0']);
    expect(Object.keys(r.record).sort()).toEqual(['0000:41:00.0', '0000:82:00.0']);
    expect(Object.keys(base)).toEqual(['0000:41:00.0']);
    expect(recordOriginals(base, inv, ['0000:99:00.0'])).toEqual({ record: base, changed: false });
  });
});

describe('withOriginals', () => {
  const record: OriginalRecord = {
    '0000:41:00.0': { driver: 'nvidia' },
    '0000:82:00.0': { driver: 'ice', interfaceNames: ['ens2f0', 'ens2f0d1'] },
    '0000:c1:00.0': {},
  };

  test('a device the agent moved carries its facts from before; others are the same objects', () => {
    const inv = [onVfio(gpuOnNvidia), audio, onVfio(nic), { ...unbound, driver: 'vfio-pci' }];
    const out = withOriginals(inv, record);
    expect(out[0]).toEqual({ ...onVfio(gpuOnNvidia), original: { driver: 'nvidia' } });
    expect(out[1]).toBe(inv[1]);
    expect(out[2]?.original).toEqual({ driver: 'ice', interfaceNames: ['ens2f0', 'ens2f0d1'] });
    // It had no driver: the record says so, and the report is an empty original (it was moved, from nothing).
    expect(out[3]?.original).toEqual({});
    expect(inv[0]).not.toHaveProperty('original');
  });

  test('a device back as it was (released) carries no original; a stale one from the scan is dropped', () => {
    const out = withOriginals([gpuOnNvidia, { ...nic, original: { driver: 'stale' } }], record);
    expect(out[0]).toBe(gpuOnNvidia);
    expect(out[1]).toEqual(nic);
    expect(out[1]).not.toHaveProperty('original');
  });

  test('a netdev that vanished while the driver stayed counts as a change', () => {
    const out = withOriginals([{ ...nic, netdevs: [{ name: 'ens2f0' }] }], record);
    expect(out[0]?.original).toEqual({ driver: 'ice', interfaceNames: ['ens2f0', 'ens2f0d1'] });
  });
});

describe('settledOriginals', () => {
  test('records of devices back on their driver can go; moved or missing devices keep theirs', () => {
    const record: OriginalRecord = { '0000:41:00.0': { driver: 'nvidia' }, '0000:82:00.0': { driver: 'ice', interfaceNames: ['ens2f0'] }, '0000:99:00.0': { driver: 'x' } };
    expect(settledOriginals(record, [gpuOnNvidia, onVfio(nic)])).toEqual(['0000:41:00.0']);
  });
});

describe('parseOriginalRecord', () => {
  test('keeps well-formed entries and names each bad one', () => {
    const { record, errors } = parseOriginalRecord({
      '0000:41:00.0': { driver: 'nvidia' },
      '0000:82:00.0': { driver: 'ice', interfaceNames: ['ens2f0'] },
      '0000:c1:00.0': {},
      'not-an-address': { driver: 'x' },
      '0000:42:00.0': 'nvidia',
      '0000:43:00.0': { driver: 7 },
      '0000:44:00.0': { interfaceNames: 'eth0' },
    });
    expect(record).toEqual({ '0000:41:00.0': { driver: 'nvidia' }, '0000:82:00.0': { driver: 'ice', interfaceNames: ['ens2f0'] }, '0000:c1:00.0': {} });
    expect(errors).toEqual([
      'original facts: "not-an-address" is not a PCI address',
      'original facts of 0000:42:00.0: expected an object',
      'original facts of 0000:43:00.0: driver must be a non-empty string, got 7',
      'original facts of 0000:44:00.0: interfaceNames must be a list of names, got "eth0"',
    ]);
  });

  test('nothing is an empty record; a list or a string is refused as a whole', () => {
    expect(parseOriginalRecord(undefined)).toEqual({ record: {}, errors: [] });
    expect(parseOriginalRecord([]).errors).toEqual(['original facts: expected an object keyed by PCI address, got a list']);
    expect(parseOriginalRecord('x').errors).toEqual(['original facts: expected an object keyed by PCI address, got string']);
  });
});
