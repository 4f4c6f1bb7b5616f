// A stand-in for iproute2's `ip`, for the agent's VF network settings in tests: the two commands the
// agent runs, parsed with iproute2's grammar and answered by the fake kernel's rtnetlink model
// (netlink.ts) over the sysfs tree in $VIO_FAKE_SYSFS_ROOT. Errors look like iproute2's: "RTNETLINK
// answers: <strerror>" with exit status 2, "Cannot find device" with 1. Run through ./ip (a shell
// wrapper), which the agent gets as VIO_IP_CLI.
//   ip -json link show dev <pf>
//   ip link set dev <pf> vf <n> [mac M] [vlan V [qos Q] [proto 802.1Q|802.1ad]] [min_tx_rate R] [max_tx_rate R] [spoofchk on|off] [trust on|off]
import { pathToFileURL } from 'node:url';
import type { IpCli } from '../../device-plugin/src/carving/ip-link.js';
import { findPf, NetlinkError, setVf, showLinkJson, vfStates, type FakeVfNet } from './netlink.js';

class Exit extends Error {
  readonly status: number;
  readonly stderr: string;
  constructor(status: number, stderr: string) {
    super(stderr);
    this.status = status;
    this.stderr = stderr;
  }
}

function fail(status: number, msg: string): never {
  throw new Exit(status, msg);
}

/** One `ip` command against the fake kernel over `root`: exit status, stdout, stderr. */
export function runIp(root: string, argv: readonly string[]): { status: number; stdout: string; stderr: string } {
  try {
    return { status: 0, stdout: ip(root, argv), stderr: '' };
  } catch (err) {
    if (err instanceof Exit) return { status: err.status, stdout: '', stderr: `${err.stderr}\n` };
    throw err;
  }
}

/** The same in-process, as the agent's IpCli port (unit tests; the agent process runs ./ip). */
export function fakeIpCli(root: string): IpCli {
  return async (args) => {
    const r = runIp(root, args);
    if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
    return r.stdout;
  };
}

function ip(root: string, argv: readonly string[]): string {
  let args = argv.slice();
  let json = false;
  while (args[0]?.startsWith('-')) {
    if (args[0] === '-json' || args[0] === '-j') json = true;
    else fail(1, `Option "${args[0]}" is unknown to this stand-in`);
    args = args.slice(1);
  }
  const STRERROR: Record<string, string> = { EINVAL: 'Invalid argument', EPROTONOSUPPORT: 'Protocol not supported', EOPNOTSUPP: 'Operation not supported' };
  try {
    if (args[0] === 'link' && args[1] === 'show' && args[2] === 'dev' && args[3] && args.length === 4) {
      if (!json) fail(1, 'this stand-in prints only -json');
      return `${showLinkJson(root, args[3])}\n`;
    } else if (args[0] === 'link' && args[1] === 'set' && args[2] === 'dev' && args[3] && args[4] === 'vf' && args[5] !== undefined) {
      const dev = args[3];
      const vf = Number(args[5]);
      if (!Number.isInteger(vf)) fail(1, `Invalid "vf" value "${args[5]}"`);
      const want: Partial<FakeVfNet> = {};
      const rest = args.slice(6);
      for (let i = 0; i < rest.length; i += 2) {
        const [k, v] = [rest[i], rest[i + 1]];
        if (v === undefined) fail(1, `Command line is not complete. Try "ip link help".`);
        if (k === 'mac') {
          if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(v)) fail(1, `Invalid "mac" value "${v}"`);
          want.mac = v.toLowerCase();
        } else if (k === 'vlan' || k === 'qos' || k === 'min_tx_rate' || k === 'max_tx_rate') {
          if (!/^\d+$/.test(v)) fail(1, `Invalid "${k}" value "${v}"`);
          const n = Number(v);
          if (k === 'vlan') want.vlan = n;
          else if (k === 'qos') {
            if (want.vlan === undefined) fail(1, 'Error: "qos" is only valid after "vlan"');
            want.qos = n;
          } else if (k === 'min_tx_rate') want.minTx = n;
          else want.maxTx = n;
        } else if (k === 'proto') {
          if (want.vlan === undefined) fail(1, 'Error: "proto" is only valid after "vlan"');
          if (v !== '802.1Q' && v !== '802.1ad') fail(1, `Invalid "proto" value "${v}"`);
          want.proto = v;
        } else if (k === 'spoofchk' || k === 'trust') {
          if (v !== 'on' && v !== 'off') fail(1, `Invalid "${k}" value "${v}"`);
          want[k] = v === 'on';
        } else fail(1, `Error: argument "${k}" is wrong for this stand-in`);
      }
      // iproute2 sends both rates (IFLA_VF_RATE): the one not given is read from the kernel first.
      if ((want.minTx === undefined) !== (want.maxTx === undefined)) {
        const cur = vfStates(root, findPf(root, dev))[vf];
        want.minTx ??= cur?.minTx ?? 0;
        want.maxTx ??= cur?.maxTx ?? 0;
      }
      setVf(root, dev, vf, want);
      return '';
    }
    fail(1, `this stand-in knows only "link show dev <pf>" and "link set dev <pf> vf <n> ...", not: ${args.join(' ')}`);
  } catch (err) {
    if (err instanceof NetlinkError) {
      if (err.errno === 'ENODEV') fail(1, err.message);
      fail(2, `RTNETLINK answers: ${STRERROR[err.errno] ?? err.message}`);
    }
    throw err;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const root = process.env.VIO_FAKE_SYSFS_ROOT;
  const r = root ? runIp(root, process.argv.slice(2)) : { status: 1, stdout: '', stderr: 'VIO_FAKE_SYSFS_ROOT is not set (the fake kernel\'s sysfs tree)\n' };
  process.stdout.write(r.stdout);
  process.stderr.write(r.stderr);
  process.exitCode = r.status;
}
