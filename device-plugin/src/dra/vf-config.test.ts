// The opaque VF network parameters: validation messages, and how configs of a DeviceClass and a
// claim combine per allocated device.
import { parseVfNetworkConfig, vfConfigsFor, type AllocationConfig } from './vf-config.js';

const P = (o: Record<string, unknown>) => ({ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VfNetworkConfig', ...o });
const cfg = (parameters: unknown, o: Partial<AllocationConfig> = {}): AllocationConfig => ({ source: 'FromClaim', opaque: { driver: 'virtualio.dev', parameters }, ...o });
const nic = { request: 'nic', device: 'vf-0000-81-10-0' };

describe('parseVfNetworkConfig', () => {
  test('a full config', () => {
    expect(parseVfNetworkConfig(P({ mac: '02:00:5E:10:00:01', vlan: 100, qos: 3, vlanProtocol: '802.1Q', trust: false, spoofCheck: true, minTxRateMbps: 0, maxTxRateMbps: 1000 })))
      .toEqual({ mac: '02:00:5e:10:00:01', vlan: 100, qos: 3, vlanProtocol: '802.1Q', trust: false, spoofCheck: true, minTxRateMbps: 0, maxTxRateMbps: 1000 });
  });
  test.each([
    ['another kind', { apiVersion: 'virtualio.dev/v1alpha1', kind: 'GpuConfig' }, /takes apiVersion virtualio.dev\/v1alpha1, kind VfNetworkConfig/],
    ['another version', { apiVersion: 'virtualio.dev/v2', kind: 'VfNetworkConfig' }, /unsupported parameters apiVersion "virtualio.dev\/v2"/],
    ['not an object', 'vlan=100', /must be an object/],
    ['a typo that would drop the VLAN', P({ vlanid: 100 }), /unknown field "vlanid" \(known: mac, vlan,/],
    ['a multicast MAC', P({ mac: '01:00:5e:00:00:01' }), /multicast address/],
    ['the zero MAC', P({ mac: '00:00:00:00:00:00' }), /not an address/],
    ['a malformed MAC', P({ mac: '02-00-00-00-00-01' }), /not a MAC address/],
    ['VLAN 4095', P({ vlan: 4095 }), /vlan 4095 must be a whole number from 0 \(none\) to 4094/],
    ['a VLAN as text', P({ vlan: '100' }), /vlan "100" must be a whole number/],
    ['qos 8', P({ vlan: 5, qos: 8 }), /qos 8 must be a whole number from 0 to 7/],
    ['another protocol', P({ vlan: 5, vlanProtocol: 'QinQ' }), /vlanProtocol "QinQ" must be "802.1Q" or "802.1ad"/],
    ['trust as text', P({ trust: 'yes' }), /trust "yes" must be true or false/],
    ['a negative rate', P({ maxTxRateMbps: -1 }), /maxTxRateMbps -1 must be a whole number of Mbit\/s \(0 = no limit\)/],
  ])('refuses %s', (_n, p, re) => {
    const r = parseVfNetworkConfig(p);
    expect('error' in r && r.error).toMatch(re);
  });
  test('every problem in one message', () => {
    const r = parseVfNetworkConfig(P({ vlan: 5000, trust: 1 }));
    expect('error' in r && r.error).toMatch(/vlan 5000 .*; trust 1 /);
  });
});

describe('vfConfigsFor', () => {
  test('no config of ours: no settings (other drivers\' configs are not ours to read)', () => {
    expect(vfConfigsFor([{ opaque: { driver: 'gpu.example.com', parameters: { x: 1 } } }], [nic])).toEqual(new Map());
    expect(vfConfigsFor(undefined, [nic])).toEqual(new Map());
  });
  test('a config for every request reaches the NIC VFs only; one naming a non-VF request is an error', () => {
    const gpu = { request: 'gpu', device: 'fn-0000-3b-00-0', notNicVf: 'it is a Function of pool gpu (class GPU), not a NIC VF' };
    expect(vfConfigsFor([cfg(P({ vlan: 7 }))], [nic, gpu])).toEqual(new Map([[nic.device, { vlan: 7 }]]));
    const r = vfConfigsFor([cfg(P({ vlan: 7 }), { requests: ['gpu'] })], [nic, gpu]);
    expect('error' in r && r.error).toBe('request gpu has VF network settings, but its device fn-0000-3b-00-0 cannot take them: it is a Function of pool gpu (class GPU), not a NIC VF');
  });
  test('requests select by top-level name (firstAvailable subrequests included)', () => {
    const sub = { request: 'nic/fast', device: 'vf-0000-81-10-2' };
    expect(vfConfigsFor([cfg(P({ vlan: 7 }), { requests: ['nic'] }), cfg(P({ vlan: 9 }), { requests: ['other'] })], [sub])).toEqual(new Map([[sub.device, { vlan: 7 }]]));
  });
  test('fields merge, the class\'s first; a claim may add fields but not change the class\'s', () => {
    const cls = cfg(P({ vlan: 100, spoofCheck: true }), { source: 'FromClass' });
    expect(vfConfigsFor([cls, cfg(P({ mac: '02:00:00:00:00:07', qos: 2 }))], [nic])).toEqual(new Map([[nic.device, { vlan: 100, spoofCheck: true, mac: '02:00:00:00:00:07', qos: 2 }]]));
    expect(vfConfigsFor([cls, cfg(P({ vlan: 100 }))], [nic])).toEqual(new Map([[nic.device, { vlan: 100, spoofCheck: true }]]));
    const r = vfConfigsFor([cls, cfg(P({ vlan: 200 }))], [nic]);
    expect('error' in r && r.error).toBe('request nic: vlan is set to 100 by the DeviceClass; a claim may not change it (asked for 200)');
  });
  test('merged rules: qos needs a VLAN, min ≤ max, one MAC per device', () => {
    const e = (c: AllocationConfig[], t = [nic]) => {
      const r = vfConfigsFor(c, t);
      return 'error' in r ? r.error : 'ok';
    };
    expect(e([cfg(P({ qos: 3 }))])).toBe('request nic: qos needs a vlan other than 0');
    expect(e([cfg(P({ vlanProtocol: '802.1ad' }))])).toBe('request nic: vlanProtocol needs a vlan other than 0');
    expect(e([cfg(P({ minTxRateMbps: 500, maxTxRateMbps: 100 }))])).toBe('request nic: minTxRateMbps 500 is above maxTxRateMbps 100');
    expect(e([cfg(P({ mac: '02:00:00:00:00:01' }))], [nic, { request: 'nic', device: 'vf-0000-81-10-2' }])).toMatch(/request nic has 2 devices but one MAC address 02:00:00:00:00:01/);
    expect(e([cfg(P({ mac: '02:00:00:00:00:01' }))], [nic, { request: 'nic2', device: 'vf-0000-81-10-2' }])).toMatch(/MAC address 02:00:00:00:00:01 is given to two devices/);
    expect(e([cfg(P({ vlan: 5000 }), { requests: ['nic'] })])).toMatch(/^config #0 for request nic: vlan 5000/);
  });
});
