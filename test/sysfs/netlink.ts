// The fake kernel's rtnetlink side for SR-IOV NICs: a PF's per-VF settings (MAC, port VLAN with QoS
// and protocol, tx rates, spoof check, trust), as `ip link set <pf> vf <n> ...` changes them and
// `ip -json link show <pf>` reports them. State lives in the tree (`.fake-kernel/vf-net/<pf>.json`),
// so another process (the fake `ip` of ip-cli.ts, run by the agent) and the test see one kernel; every
// change attempted is recorded in `.fake-kernel/netlink.jsonl` (the witness for settings).
//
// Linux behaviour modelled, and where it comes from:
//  * the VF attributes of one RTM_SETLINK are applied in rtnetlink's order — MAC, VLAN, rate, spoof
//    check, trust — and the first the driver refuses stops the rest while the earlier ones stay
//    (net/core/rtnetlink.c do_setvfinfo; seen on Debian 6.12 with QEMU's igb: `mac M vlan 5
//    min_tx_rate 10 trust on` failed with EINVAL and left the MAC and VLAN set, trust unchanged);
//  * the core refuses vlan > 4095 or qos > 7 (EINVAL) before any driver sees them;
//  * per driver (igb seen in test/kernel; ixgbe and mlx5 from their ndo_set_vf_* in
//    drivers/net/ethernet/{intel/ixgbe/ixgbe_sriov.c, mellanox/mlx5/core/en_main.c, eswitch.c}):
//    a multicast MAC is EINVAL, an all-zero MAC clears the administrative MAC; a VLAN protocol other
//    than 802.1Q is EPROTONOSUPPORT; igb and ixgbe refuse a minimum rate (EINVAL) and a maximum rate
//    while the PF has no link or above its speed (igb seen: EINVAL with the PF down, accepted up);
//    ixgbe also refuses a maximum of 10 Mbit/s or less; mlx5 takes both rates;
//  * a VF's settings belong to the PF driver and are back to defaults (zero MAC, no VLAN, spoof check
//    on, trust off, no rates) whenever SR-IOV is enabled again (igb seen: `sriov_numvfs` 0 → 2).
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface FakeVfNet {
  mac: string;
  vlan: number;
  qos: number;
  proto: '802.1Q' | '802.1ad';
  minTx: number;
  maxTx: number;
  spoofchk: boolean;
  trust: boolean;
}

/** One `ip link set ... vf` as the kernel saw it (`.fake-kernel/netlink.jsonl`). */
export interface NetlinkOp {
  at: number;
  pf: string;
  netdev: string;
  vf: number;
  /** What was asked, in rtnetlink's order. */
  asked: Partial<FakeVfNet>;
  /** What changed before the driver refused (all of `asked` when it succeeded). */
  applied: Partial<FakeVfNet>;
  error?: string;
}

export class NetlinkError extends Error {
  readonly errno: 'EINVAL' | 'EPROTONOSUPPORT' | 'EOPNOTSUPP' | 'ENODEV';
  constructor(errno: NetlinkError['errno'], message: string) {
    super(message);
    this.errno = errno;
  }
}

const DEFAULT: FakeVfNet = { mac: '00:00:00:00:00:00', vlan: 0, qos: 0, proto: '802.1Q', minTx: 0, maxTx: 0, spoofchk: true, trust: false };

/** Link speed in Mbit/s of the NICs each driver stands for here. */
const SPEED: Record<string, number> = { igb: 1000, ixgbe: 10_000, mlx5_core: 100_000 };

/** A PF network interface of the fake tree: its PCI address, driver, link state and VF count. */
export interface FakePf {
  netdev: string;
  address: string;
  driver: string;
  up: boolean;
  numVfs: number;
}

export function findPf(root: string, netdev: string): FakePf {
  const link = path.join(root, 'class/net', netdev);
  if (!existsSync(link)) throw new NetlinkError('ENODEV', `Cannot find device "${netdev}"`);
  const fnDir = path.dirname(path.dirname(realpathSync(link)));
  const drv = path.join(fnDir, 'driver');
  const operstate = readFileSync(path.join(link, 'operstate'), 'utf8').trim();
  return {
    netdev,
    address: path.basename(fnDir),
    driver: existsSync(drv) ? path.basename(readlinkSync(drv)) : '',
    up: operstate === 'up',
    numVfs: readdirSync(fnDir).filter((e) => /^virtfn\d+$/.test(e)).length,
  };
}

function stateFile(root: string, pf: string): string {
  return path.join(root, '.fake-kernel/vf-net', `${pf}.json`);
}

/** The settings of every VF of a PF (defaults for VFs never set). */
export function vfStates(root: string, pf: FakePf): FakeVfNet[] {
  const f = stateFile(root, pf.address);
  const saved = existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as Record<string, FakeVfNet>) : {};
  return Array.from({ length: pf.numVfs }, (_, i) => ({ ...DEFAULT, ...saved[String(i)] }));
}

/** SR-IOV was enabled or disabled on `pf`: its VFs' settings are gone (called by FakeKernel). */
export function resetVfStates(root: string, pf: string): void {
  rmSync(stateFile(root, pf), { force: true });
}

/** The driver's verdict on one attribute, as its ndo_set_vf_* would answer. */
function check(pf: FakePf, k: keyof FakeVfNet, want: Partial<FakeVfNet>, cur: FakeVfNet): void {
  const speed = SPEED[pf.driver] ?? 10_000;
  if (k === 'mac') {
    if (parseInt(want.mac!.slice(0, 2), 16) & 1) throw new NetlinkError('EINVAL', 'Invalid argument');
  } else if (k === 'vlan') {
    if (want.vlan! > 4095 || (want.qos ?? 0) > 7) throw new NetlinkError('EINVAL', 'Invalid argument');
    if ((want.proto ?? '802.1Q') !== '802.1Q' && pf.driver !== 'ice') throw new NetlinkError('EPROTONOSUPPORT', 'Protocol not supported');
  } else if (k === 'maxTx') {
    const min = want.minTx ?? cur.minTx;
    const max = want.maxTx ?? cur.maxTx;
    if (pf.driver === 'igb' || pf.driver === 'ixgbe') {
      if (min !== 0) throw new NetlinkError('EINVAL', 'Invalid argument');
      if (!pf.up || max > speed) throw new NetlinkError('EINVAL', 'Invalid argument');
      if (pf.driver === 'ixgbe' && max !== 0 && max <= 10) throw new NetlinkError('EINVAL', 'Invalid argument');
    } else if (max !== 0 && min > max) throw new NetlinkError('EINVAL', 'Invalid argument');
  }
}

/**
 * One `ip link set dev <netdev> vf <vf> ...`: applied attribute by attribute in rtnetlink's order,
 * stopping at the first refusal (what was applied before it stays). Records the attempt.
 */
export function setVf(root: string, netdev: string, vf: number, asked: Partial<FakeVfNet>): void {
  const pf = findPf(root, netdev);
  if (vf < 0 || vf >= pf.numVfs) throw new NetlinkError('EINVAL', 'Invalid argument');
  const all = vfStates(root, pf);
  const cur = { ...all[vf]! };
  const applied: Partial<FakeVfNet> = {};
  const groups: (keyof FakeVfNet)[][] = [['mac'], ['vlan', 'qos', 'proto'], ['minTx', 'maxTx'], ['spoofchk'], ['trust']];
  let error: NetlinkError | undefined;
  for (const g of groups) {
    const present = g.filter((k) => asked[k] !== undefined);
    if (present.length === 0) continue;
    try {
      check(pf, g[0] === 'minTx' ? 'maxTx' : g[0]!, asked, cur);
    } catch (e) {
      error = e as NetlinkError;
      break;
    }
    if (g[0] === 'vlan') {
      // IFLA_VF_VLAN carries the three together: what is not given is 0 / 802.1Q, as iproute2 sends it.
      Object.assign(cur, { vlan: asked.vlan ?? 0, qos: asked.qos ?? 0, proto: asked.proto ?? '802.1Q' });
      Object.assign(applied, { vlan: cur.vlan, qos: cur.qos, proto: cur.proto });
    } else {
      for (const k of present) {
        (cur as unknown as Record<string, unknown>)[k] = asked[k];
        (applied as Record<string, unknown>)[k] = asked[k];
      }
    }
  }
  const f = stateFile(root, pf.address);
  mkdirSync(path.dirname(f), { recursive: true });
  const saved = existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as Record<string, FakeVfNet>) : {};
  saved[String(vf)] = cur;
  writeFileSync(f, JSON.stringify(saved));
  const op: NetlinkOp = { at: Date.now(), pf: pf.address, netdev, vf, asked, applied, ...(error ? { error: `${error.errno}: ${error.message}` } : {}) };
  appendFileSync(path.join(root, '.fake-kernel/netlink.jsonl'), `${JSON.stringify(op)}\n`);
  if (error) throw error;
}

/** Every VF settings change attempted on this tree, oldest first. */
export function readNetlinkOps(root: string): NetlinkOp[] {
  const f = path.join(root, '.fake-kernel/netlink.jsonl');
  if (!existsSync(f)) return [];
  return readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as NetlinkOp);
}

/** `ip -json link show dev <netdev>` as iproute2 6.1 prints it for a PF (the fields the agent reads, and a few around them). */
export function showLinkJson(root: string, netdev: string): string {
  const pf = findPf(root, netdev);
  const addr = readFileSync(path.join(root, 'class/net', netdev, 'address'), 'utf8').trim();
  const vfs = vfStates(root, pf).map((s, i) => {
    const vlan: Record<string, unknown> = {};
    if (s.vlan) {
      vlan.vlan = s.vlan;
      if (s.qos) vlan.qos = s.qos;
      if (s.proto !== '802.1Q') vlan.protocol = s.proto;
    }
    return {
      vf: i, link_type: 'ether', address: s.mac, broadcast: 'ff:ff:ff:ff:ff:ff', vlan_list: [vlan],
      ...(s.maxTx ? { tx_rate: s.maxTx } : {}), rate: { max_tx: s.maxTx, min_tx: s.minTx },
      spoofchk: s.spoofchk, link_state: 'auto', trust: s.trust,
    };
  });
  return JSON.stringify([{
    ifindex: 2, ifname: netdev, flags: pf.up ? ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'] : ['BROADCAST', 'MULTICAST'], mtu: 1500,
    operstate: pf.up ? 'UP' : 'DOWN', link_type: 'ether', address: addr, broadcast: 'ff:ff:ff:ff:ff:ff',
    ...(vfs.length ? { vfinfo_list: vfs } : {}),
  }]);
}
