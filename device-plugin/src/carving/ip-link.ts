// A PF's per-VF network settings (MAC, port VLAN, trust, spoof check, tx rates) — what
// `ip link set <pf> vf <n> ...` changes through rtnetlink (RTM_SETLINK with IFLA_VFINFO_LIST). Node
// cannot open a netlink socket (no AF_NETLINK in its net module) and a native addon would need a
// compiler and per-ABI builds in the image, so the agent runs iproute2's `ip` with execFile (no
// shell), its path configurable (VIO_IP_CLI), as it runs nvme-cli for NVMe admin commands; its JSON
// output (`ip -json link show`) is what we read. Needs the PF's network namespace (host network)
// and CAP_NET_ADMIN.
//
// Kernel facts this relies on, seen on Debian's 6.12 kernel with QEMU's igb (test/kernel):
//  * rtnetlink applies a VF's attributes in a fixed order (MAC, VLAN, tx rate, rate, spoof check,
//    link state, RSS query, trust: net/core/rtnetlink.c do_setvfinfo) and stops at the first the
//    driver refuses, keeping the ones before: a failed `ip link set` can leave a partial change;
//  * a VF's settings live in the PF driver and go back to defaults when SR-IOV is disabled.
import { execFile } from 'node:child_process';
import type { VlanProtocol } from '../dra/vf-config.js';

/** One VF's settings as the kernel reports them (`vfinfo_list` of `ip -json link show dev <pf>`). */
export interface VfNetState {
  vf: number;
  mac: string;
  vlan: number;
  qos: number;
  vlanProtocol: VlanProtocol;
  /** Absent when the driver does not report it. */
  spoofCheck?: boolean;
  trust?: boolean;
  minTxRateMbps: number;
  maxTxRateMbps: number;
}

/** The settings `set` may change; a field left out is not sent. */
export type VfNetChange = Partial<Omit<VfNetState, 'vf'>>;

/** The PF-side VF settings port (production: {@link execIpLink}; tests: the same over a fake `ip`). */
export interface IpLink {
  /** Every VF's settings on PF network interface `pf`. */
  show(pf: string): Promise<VfNetState[]>;
  /** One `ip link set dev <pf> vf <vf> ...`; rejects with ip's message (a partial change may remain). */
  set(pf: string, vf: number, change: VfNetChange): Promise<void>;
}

/** Runs `ip` with `args` and resolves with its stdout; rejects with its stderr on failure. */
export type IpCli = (args: string[]) => Promise<string>;

/** iproute2's `ip` through execFile (no shell), with a timeout. */
export function execIpCli(file = 'ip', timeoutMs = 10_000): IpCli {
  return (args) =>
    new Promise((resolve, reject) => {
      execFile(file, args, { timeout: timeoutMs, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
        if (err) {
          const e = err as NodeJS.ErrnoException & { killed?: boolean };
          const why = e.code === 'ENOENT' ? `${file} not found (install iproute2 or set VIO_IP_CLI)` : e.killed ? `timed out after ${timeoutMs} ms` : (String(stderr).trim() || e.message);
          reject(new Error(`${file} ${args.join(' ')}: ${why}`));
        } else resolve(String(stdout));
      });
    });
}

function int(v: unknown, d = 0): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : d;
}

/** Parses `ip -json link show dev <pf>` into its VFs' settings (none when the kernel lists none). */
export function parseVfInfo(text: string, pf: string): VfNetState[] {
  let links: unknown;
  try {
    links = JSON.parse(text);
  } catch {
    throw new Error(`ip -json link show dev ${pf}: not JSON: ${text.slice(0, 200)}`);
  }
  const link = Array.isArray(links) ? (links[0] as Record<string, unknown> | undefined) : undefined;
  if (!link || link.ifname !== pf) throw new Error(`ip -json link show dev ${pf}: no link ${pf} in the answer`);
  const list = Array.isArray(link.vfinfo_list) ? (link.vfinfo_list as Record<string, unknown>[]) : [];
  return list.map((v) => {
    const vl = Array.isArray(v.vlan_list) ? ((v.vlan_list[0] ?? {}) as Record<string, unknown>) : {};
    const rate = (v.rate ?? {}) as Record<string, unknown>;
    const s: VfNetState = {
      vf: int(v.vf, -1),
      mac: typeof v.address === 'string' ? v.address.toLowerCase() : '00:00:00:00:00:00',
      vlan: int(vl.vlan ?? v.vlan),
      qos: int(vl.qos ?? v.qos),
      // iproute2 prints the protocol only when the kernel reports a VLAN list with one.
      vlanProtocol: vl.protocol === '802.1ad' ? '802.1ad' : '802.1Q',
      minTxRateMbps: int(rate.min_tx),
      maxTxRateMbps: int(rate.max_tx, int(v.tx_rate)),
    };
    if (typeof v.spoofchk === 'boolean') s.spoofCheck = v.spoofchk;
    if (typeof v.trust === 'boolean') s.trust = v.trust;
    return s;
  });
}

/**
 * The arguments of one `ip link set`, in iproute2's grammar: `vlan` carries `qos` and `proto`, so a
 * change of either re-sends the VLAN; rates go as `min_tx_rate`/`max_tx_rate`.
 */
export function ipSetArgs(pf: string, vf: number, c: VfNetChange, current?: VfNetState): string[] {
  const a = ['link', 'set', 'dev', pf, 'vf', String(vf)];
  if (c.mac !== undefined) a.push('mac', c.mac);
  if (c.vlan !== undefined || c.qos !== undefined || c.vlanProtocol !== undefined) {
    const vlan = c.vlan ?? current?.vlan ?? 0;
    a.push('vlan', String(vlan));
    if (vlan !== 0) {
      const qos = c.qos ?? current?.qos ?? 0;
      if (qos) a.push('qos', String(qos));
      const proto = c.vlanProtocol ?? current?.vlanProtocol ?? '802.1Q';
      if (proto !== '802.1Q') a.push('proto', proto);
    }
  }
  if (c.minTxRateMbps !== undefined) a.push('min_tx_rate', String(c.minTxRateMbps));
  if (c.maxTxRateMbps !== undefined) a.push('max_tx_rate', String(c.maxTxRateMbps));
  if (c.spoofCheck !== undefined) a.push('spoofchk', c.spoofCheck ? 'on' : 'off');
  if (c.trust !== undefined) a.push('trust', c.trust ? 'on' : 'off');
  return a;
}

/** The fields of `want` that `have` does not match (what one `set` must send). */
export function vfNetDiff(have: VfNetState, want: VfNetChange): VfNetChange {
  const d: VfNetChange = {};
  for (const k of Object.keys(want) as (keyof VfNetChange)[]) {
    const v = want[k];
    if (v !== undefined && have[k] !== v) (d as Record<string, unknown>)[k] = v;
  }
  // A VLAN of 0 has no priority or protocol: nothing to send for those alone.
  if (d.vlan === undefined && have.vlan === 0 && (want.vlan ?? 0) === 0) {
    delete d.qos;
    delete d.vlanProtocol;
  }
  return d;
}

/** The {@link IpLink} over iproute2's `ip`. */
export function execIpLink(cli: IpCli = execIpCli()): IpLink {
  const show = async (pf: string): Promise<VfNetState[]> => parseVfInfo(await cli(['-json', 'link', 'show', 'dev', pf]), pf);
  return {
    show,
    set: async (pf, vf, change) => {
      const current = (change.qos !== undefined || change.vlanProtocol !== undefined) && change.vlan === undefined ? (await show(pf)).find((v) => v.vf === vf) : undefined;
      await cli(ipSetArgs(pf, vf, change, current));
    },
  };
}
