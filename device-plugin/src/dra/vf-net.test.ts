// Per-claim VF network settings through the DRA driver, on the fake kernel's rtnetlink model
// (test/sysfs/netlink.ts, through the in-process `ip` stand-in): applied at prepare with the earlier
// settings recorded first, restored at unprepare once the VF is free, refused with clear errors
// (bad parameters, a driver that says no — with what it did apply rolled back — no opt-in), and a
// crash between the record and the claim's record is repaired at the next start.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execIpLink } from '../carving/ip-link.js';
import { silentLogger } from '../log.js';
import type { PoolPlan, Slice } from '../model.js';
import { draDeviceName } from './devices.js';
import { DraDriver, type DraHoldState } from './driver.js';
import type { ClaimObject } from './prepare.js';
import { MemoryStore, until } from '../../../test/fakes/dra.js';
import { FakeKernel, intel82599 } from '../../../test/sysfs/kernel.js';
import { fakeIpCli } from '../../../test/sysfs/ip-cli.js';
import { readNetlinkOps, setVf, vfStates, findPf } from '../../../test/sysfs/netlink.js';

const NODE = 'worker-1';
const PF = '0000:81:00.0';
const pool: PoolPlan = { name: 'nic', resourceName: 'virtualio.dev/nic', class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', frontEnd: 'DRA', devices: [{ pciAddress: PF }] };
const vf = (i: number): Slice => {
  const addr = `0000:81:10.${i * 2}`;
  return { id: addr, pool: 'nic', resourceName: pool.resourceName, kind: 'VF', parent: PF, pciAddress: addr, index: i, pfNetdev: 'eno49', iommuGroup: 70 + i, numaNode: 0, deviceNodes: [`/dev/vfio/${70 + i}`], health: 'Healthy' };
};
const VFS = [vf(0), vf(1)];
const P = (o: Record<string, unknown>) => ({ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VfNetworkConfig', ...o });

function claim(uid: string, name: string, devs: Slice[], config: unknown[] = []): ClaimObject {
  return {
    metadata: { name, namespace: 'vms', uid },
    status: { allocation: { devices: { results: devs.map((s) => ({ request: 'nic', driver: 'virtualio.dev', pool: `${NODE}/nic`, device: draDeviceName(s) })), config: config as never } } },
  };
}

let base: string;
let root: string;
const stops: (() => Promise<void>)[] = [];
beforeEach(async () => {
  base = mkdtempSync(join(tmpdir(), 'vio-vfnet-'));
  root = join(base, 'sys');
  const k = await FakeKernel.create(root, join(base, 'dev'));
  await k.addFunction(intel82599(PF, { netdev: 'eno49', totalVFs: 8 }));
  await k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '2');
});
afterEach(async () => {
  for (const s of stops.splice(0)) await s();
  rmSync(base, { recursive: true, force: true });
});

async function driver(o: { vfNet?: boolean; holds?: Map<string, DraHoldState>; api: Map<string, ClaimObject> }): Promise<{ d: DraDriver; store: MemoryStore }> {
  const store = new MemoryStore();
  const ctl = new AbortController();
  const d = new DraDriver({
    nodeName: NODE, kubeletDir: join(base, 'kubelet'), cdiDir: join(base, 'cdi'), sysfsRoot: root,
    getClaim: (ns, name) => Promise.resolve(o.api.get(`${ns}/${name}`)),
    store, logger: silentLogger(), resyncMs: 60_000, socketCheckMs: 50,
    holderOf: (id) => o.holds?.get(id) ?? { kind: 'free' },
    ...(o.vfNet === false ? {} : { vfNetwork: execIpLink(fakeIpCli(root)) }),
  });
  d.update([pool], VFS, { devices: [{ pciAddress: PF, vendorID: '8086', deviceID: '10fb' }] });
  const running = d.run(ctl.signal);
  stops.push(async () => {
    ctl.abort();
    await running;
  });
  await until('the driver serving', () => existsSync(d.draSocket));
  return { d, store };
}

const kernelVf = (i: number) => vfStates(root, findPf(root, 'eno49'))[i]!;
const ref = (c: ClaimObject) => ({ namespace: 'vms', name: c.metadata.name!, uid: c.metadata.uid! });

test('prepare sets MAC, VLAN, trust and spoof check on the PF; unprepare restores what the VF had before (an admin\'s VLAN too)', async () => {
  setVf(root, 'eno49', 0, { vlan: 7 }); // the admin's baseline for VF 0
  const c = claim('u1', 'vm1-nic', [VFS[0]!], [{ source: 'FromClaim', requests: ['nic'], opaque: { driver: 'virtualio.dev', parameters: P({ mac: '02:00:00:00:00:01', vlan: 100, qos: 3, trust: true, spoofCheck: false }) } }]);
  const api = new Map([['vms/vm1-nic', c]]);
  const { d } = await driver({ api });
  const r = await d.prepare(ref(c));
  expect(r.error).toBe('');
  expect(kernelVf(0)).toMatchObject({ mac: '02:00:00:00:00:01', vlan: 100, qos: 3, trust: true, spoofchk: false });
  expect(kernelVf(1)).toMatchObject({ mac: '00:00:00:00:00:00', vlan: 0 });
  // The earlier settings were recorded before the change, durably.
  const rec = JSON.parse(readFileSync(join(d.pluginDir, 'vf-net.json'), 'utf8')) as { records: { vf: string; claimUid: string; previous: { vlan: number } }[] };
  expect(rec.records).toEqual([expect.objectContaining({ vf: VFS[0]!.id, claimUid: 'u1', previous: expect.objectContaining({ vlan: 7, mac: '00:00:00:00:00:00' }) })]);
  // Prepared again (kubelet retry): nothing sent to the kernel twice.
  const ops = readNetlinkOps(root).length;
  expect((await d.prepare(ref(c))).error).toBe('');
  expect(readNetlinkOps(root)).toHaveLength(ops);
  expect(await d.unprepare(ref(c))).toBe('');
  expect(kernelVf(0)).toMatchObject({ mac: '00:00:00:00:00:00', vlan: 7, qos: 0, trust: false, spoofchk: true });
  expect(d.vfNet?.all()).toEqual([]);
});

test.each([
  ['a parameter the API server cannot check', P({ vlan: 4095 }), /^ResourceClaim vms\/bad: config #0 for request nic: vlan 4095 must be a whole number from 0 \(none\) to 4094$/],
  ['a typo', P({ vlanID: 100 }), /unknown field "vlanID"/],
  ['another kind', { apiVersion: 'virtualio.dev/v1alpha1', kind: 'NicConfig' }, /takes apiVersion virtualio.dev\/v1alpha1, kind VfNetworkConfig/],
])('%s fails prepare with the reason, and the kernel is not touched', async (_n, params, re) => {
  const c = claim('u2', 'bad', [VFS[0]!], [{ source: 'FromClaim', requests: ['nic'], opaque: { driver: 'virtualio.dev', parameters: params } }]);
  const { d } = await driver({ api: new Map([['vms/bad', c]]) });
  const r = await d.prepare(ref(c));
  expect(r.error).toMatch(re);
  expect(readNetlinkOps(root)).toEqual([]);
  expect(d.preparedSliceIds().size).toBe(0);
});

test('a driver that refuses part of it (ixgbe: no 802.1ad): prepare fails with the kernel\'s answer and what was applied is rolled back', async () => {
  const c = claim('u3', 'qinq', [VFS[1]!], [{ source: 'FromClaim', opaque: { driver: 'virtualio.dev', parameters: P({ mac: '02:00:00:00:00:02', vlan: 5, vlanProtocol: '802.1ad' }) } }]);
  const { d } = await driver({ api: new Map([['vms/qinq', c]]) });
  const r = await d.prepare(ref(c));
  expect(r.error).toMatch(/^ResourceClaim vms\/qinq: VF network settings: ip link set dev eno49 vf 1 mac 02:00:00:00:00:02 vlan 5 proto 802.1ad: RTNETLINK answers: Protocol not supported$/);
  // rtnetlink applied the MAC before the VLAN failed; the driver put it back.
  const ops = readNetlinkOps(root);
  expect(ops[0]).toMatchObject({ vf: 1, applied: { mac: '02:00:00:00:00:02' }, error: 'EPROTONOSUPPORT: Protocol not supported' });
  expect(kernelVf(1)).toMatchObject({ mac: '00:00:00:00:00:00', vlan: 0 });
  expect(d.vfNet?.all()).toEqual([]);
  expect(d.preparedSliceIds().size).toBe(0);
});

test('without the opt-in a claim with settings fails prepare saying what to turn on; one without settings is prepared', async () => {
  const c = claim('u4', 'want-vlan', [VFS[0]!], [{ source: 'FromClaim', opaque: { driver: 'virtualio.dev', parameters: P({ vlan: 100 }) } }]);
  const plain = claim('u5', 'plain', [VFS[1]!]);
  const { d } = await driver({ vfNet: false, api: new Map([['vms/want-vlan', c], ['vms/plain', plain]]) });
  expect((await d.prepare(ref(c))).error).toBe(`ResourceClaim vms/want-vlan: device ${draDeviceName(VFS[0]!)} is asked for VF network settings (vlan 100), but VF network configuration is off on this node: the agent needs the host's network namespace and CAP_NET_ADMIN for it (chart value agent.dra.vfNetworkConfig=true, agent flag --vf-net-config; docs/security.md)`);
  expect((await d.prepare(ref(plain))).error).toBe('');
  expect(readNetlinkOps(root)).toEqual([]);
});

test('unprepared while the ledger still shows the VF held: settings stay and the VF is not offered; restored once free', async () => {
  const holds = new Map<string, DraHoldState>();
  const c = claim('u6', 'vm6', [VFS[0]!], [{ source: 'FromClaim', opaque: { driver: 'virtualio.dev', parameters: P({ vlan: 300 }) } }]);
  const { d, store } = await driver({ holds, api: new Map([['vms/vm6', c]]) });
  expect((await d.prepare(ref(c))).error).toBe('');
  holds.set(VFS[0]!.id, { kind: 'held', by: 'pod vms/virt-launcher-vm6 (PodResources)', holder: { resourceName: 'virtualio.dev/nic' } });
  expect(await d.unprepare(ref(c))).toBe('');
  expect(kernelVf(0).vlan).toBe(300);
  d.update([pool], VFS, { devices: [] });
  await until('the VF withheld', () => store.objects.size > 0 && !store.devices().includes(draDeviceName(VFS[0]!)));
  holds.delete(VFS[0]!.id);
  d.update([pool], [...VFS], { devices: [] });
  await until('the VLAN restored', () => kernelVf(0).vlan === 0);
  d.update([pool], [...VFS], { devices: [] });
  await until('the VF offered again', () => store.devices().includes(draDeviceName(VFS[0]!)));
});

test('a crash after the record but before the claim was recorded: the next start restores the VF', async () => {
  const c = claim('u7', 'vm7', [VFS[0]!], [{ source: 'FromClaim', opaque: { driver: 'virtualio.dev', parameters: P({ mac: '02:00:00:00:00:77' }) } }]);
  const api = new Map([['vms/vm7', c]]);
  const first = await driver({ api });
  expect((await first.d.prepare(ref(c))).error).toBe('');
  await stops.pop()!();
  // What a crash between the two files leaves: the VF settings record, no checkpoint entry.
  rmSync(join(first.d.pluginDir, 'checkpoint.json'));
  expect(kernelVf(0).mac).toBe('02:00:00:00:00:77');
  const again = await driver({ api });
  await until('the MAC restored', () => kernelVf(0).mac === '00:00:00:00:00:00');
  expect(again.d.vfNet?.all()).toEqual([]);
});

test('a restore the kernel refuses (ixgbe: no rate change while the PF has no link) keeps the VF out of the ResourceSlices, with the reason, until it succeeds', async () => {
  setVf(root, 'eno49', 0, { minTx: 0, maxTx: 100 }); // the admin's rate limit, set while the link is up
  const c = claim('u8', 'vm8', [VFS[0]!], [{ source: 'FromClaim', opaque: { driver: 'virtualio.dev', parameters: P({ maxTxRateMbps: 500 }) } }]);
  const { d, store } = await driver({ api: new Map([['vms/vm8', c]]) });
  expect((await d.prepare(ref(c))).error).toBe('');
  expect(kernelVf(0).maxTx).toBe(500);
  const operstate = join(root, 'class/net/eno49/operstate');
  writeFileSync(operstate, 'down\n'); // the PF loses its link while the VM runs
  expect(await d.unprepare(ref(c))).toBe('');
  expect(kernelVf(0).maxTx).toBe(500);
  expect(d.vfNet?.pending().get(VFS[0]!.id)).toMatch(/still carries the network settings of ResourceClaim vms\/vm8; restoring them failed: .*RTNETLINK answers: Invalid argument/);
  d.update([pool], [...VFS], { devices: [] });
  await until('the VF withheld', () => store.objects.size > 0 && !store.devices().includes(draDeviceName(VFS[0]!)) && store.devices().includes(draDeviceName(VFS[1]!)));
  writeFileSync(operstate, 'up\n');
  d.update([pool], [...VFS], { devices: [] });
  await until('the rate restored', () => kernelVf(0).maxTx === 100 && d.vfNet?.all().length === 0, 10_000);
  d.update([pool], [...VFS], { devices: [] });
  await until('the VF offered again', () => store.devices().includes(draDeviceName(VFS[0]!)));
});
