// The `ip` port: reading `ip -json link show` as iproute2 6.1 printed it for QEMU's igb under Debian's
// 6.12 kernel (test/kernel, recorded 2026-12-06), and the `ip link set ... vf` arguments.
import { ipSetArgs, parseVfInfo, vfNetDiff, type VfNetState } from './ip-link.js';

// Recorded in the real-kernel guest after `ip link set dev eth0 vf 0 mac 02:00:00:00:00:01 vlan 100 qos 3`,
// `... vf 0 trust on spoofchk off` and `... vf 1 mac 02:00:00:00:00:09 vlan 5` (igb 82576, PF down).
const IGB = '[{"ifindex":2,"ifname":"eth0","flags":["BROADCAST","MULTICAST"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"52:54:00:12:34:56","broadcast":"ff:ff:ff:ff:ff:ff","vfinfo_list":[{"vf":0,"link_type":"ether","address":"02:00:00:00:00:01","broadcast":"ff:ff:ff:ff:ff:ff","vlan_list":[{"vlan":100,"qos":3}],"rate":{"max_tx":0,"min_tx":0},"spoofchk":false,"link_state":"auto","trust":true},{"vf":1,"link_type":"ether","address":"02:00:00:00:00:09","broadcast":"ff:ff:ff:ff:ff:ff","vlan_list":[{"vlan":5}],"rate":{"max_tx":0,"min_tx":0},"spoofchk":true,"link_state":"auto","trust":false}]}]';
// The same PF later, up, with a tx limit on VF 0 and its MAC and VLAN cleared (`mac 00:… vlan 0`).
const IGB_RATE = '[{"ifindex":2,"ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"mq","operstate":"UP","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"52:54:00:12:34:56","broadcast":"ff:ff:ff:ff:ff:ff","vfinfo_list":[{"vf":0,"link_type":"ether","address":"00:00:00:00:00:00","broadcast":"ff:ff:ff:ff:ff:ff","vlan_list":[{}],"tx_rate":100,"rate":{"max_tx":100,"min_tx":0},"spoofchk":false,"link_state":"auto","trust":true}]}]';

test('parses the VFs of a real igb PF', () => {
  expect(parseVfInfo(IGB, 'eth0')).toEqual([
    { vf: 0, mac: '02:00:00:00:00:01', vlan: 100, qos: 3, vlanProtocol: '802.1Q', spoofCheck: false, trust: true, minTxRateMbps: 0, maxTxRateMbps: 0 },
    { vf: 1, mac: '02:00:00:00:00:09', vlan: 5, qos: 0, vlanProtocol: '802.1Q', spoofCheck: true, trust: false, minTxRateMbps: 0, maxTxRateMbps: 0 },
  ]);
  expect(parseVfInfo(IGB_RATE, 'eth0')).toEqual([{ vf: 0, mac: '00:00:00:00:00:00', vlan: 0, qos: 0, vlanProtocol: '802.1Q', spoofCheck: false, trust: true, minTxRateMbps: 0, maxTxRateMbps: 100 }]);
});

test('a PF without VFs, another link, or no JSON', () => {
  expect(parseVfInfo('[{"ifindex":2,"ifname":"eth0","address":"52:54:00:12:34:56"}]', 'eth0')).toEqual([]);
  expect(() => parseVfInfo(IGB, 'eth1')).toThrow('no link eth1 in the answer');
  expect(() => parseVfInfo('Device "eth1" does not exist.', 'eth1')).toThrow(/not JSON/);
});

test('ip link set arguments in iproute2\'s grammar', () => {
  expect(ipSetArgs('eth0', 2, { mac: '02:00:00:00:00:07', vlan: 100, qos: 3, vlanProtocol: '802.1ad', minTxRateMbps: 0, maxTxRateMbps: 500, spoofCheck: false, trust: true }))
    .toEqual(['link', 'set', 'dev', 'eth0', 'vf', '2', 'mac', '02:00:00:00:00:07', 'vlan', '100', 'qos', '3', 'proto', '802.1ad', 'min_tx_rate', '0', 'max_tx_rate', '500', 'spoofchk', 'off', 'trust', 'on']);
  // qos alone re-sends the VLAN it belongs to (iproute2 takes qos only after vlan).
  const cur: VfNetState = { vf: 2, mac: '00:00:00:00:00:00', vlan: 40, qos: 0, vlanProtocol: '802.1Q', minTxRateMbps: 0, maxTxRateMbps: 0 };
  expect(ipSetArgs('eth0', 2, { qos: 5 }, cur)).toEqual(['link', 'set', 'dev', 'eth0', 'vf', '2', 'vlan', '40', 'qos', '5']);
  expect(ipSetArgs('eth0', 2, { vlan: 0, qos: 0, vlanProtocol: '802.1Q' })).toEqual(['link', 'set', 'dev', 'eth0', 'vf', '2', 'vlan', '0']);
});

test('only what differs is sent', () => {
  const have = parseVfInfo(IGB, 'eth0')[1]!;
  expect(vfNetDiff(have, { mac: '02:00:00:00:00:09', vlan: 5, trust: true })).toEqual({ trust: true });
  expect(vfNetDiff(have, { vlan: 0, qos: 0, vlanProtocol: '802.1Q' })).toEqual({ vlan: 0 });
  expect(vfNetDiff({ ...have, vlan: 0 }, { vlan: 0, qos: 0, vlanProtocol: '802.1Q' })).toEqual({});
});
