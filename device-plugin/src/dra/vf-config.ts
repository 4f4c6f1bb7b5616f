// DRA front end, pure part: the opaque parameters a claim (or a DeviceClass) gives a NIC VF of ours —
// MAC, VLAN (+ QoS, protocol), trust, spoof check, tx rates — as a versioned type, validated with
// errors a person can act on, and gathered per allocated device from the claim's allocation result
// (`status.allocation.devices.config`, where the scheduler copies the class's configs first, then the
// claim's). No I/O: `vf-net.ts` applies what this returns on the PF.
import { DRA_DRIVER } from './devices.js';

/** apiVersion and kind of the parameters (`spec.devices.config[].opaque.parameters`). */
export const VF_CONFIG_API_VERSION = `${DRA_DRIVER}/v1alpha1`;
export const VF_CONFIG_KIND = 'VfNetworkConfig';

export type VlanProtocol = '802.1Q' | '802.1ad';

/** What a claim may ask of a VF; every field optional (absent: left as the VF is). */
export interface VfNetworkConfig {
  /** Unicast MAC address the PF assigns to the VF (`ip link set <pf> vf <n> mac`). */
  mac?: string;
  /** Port VLAN the PF tags the VF's traffic with; 0 = none. */
  vlan?: number;
  /** 802.1p priority of that VLAN (0–7); needs a VLAN. */
  qos?: number;
  /** Tag protocol of that VLAN; needs a VLAN. */
  vlanProtocol?: VlanProtocol;
  /** Let the VF change its MAC, enter promiscuous mode and so on. */
  trust?: boolean;
  /** Drop frames the VF sends with another source MAC. */
  spoofCheck?: boolean;
  /** Guaranteed / limited transmit rate in Mbit/s; 0 = none. */
  minTxRateMbps?: number;
  maxTxRateMbps?: number;
}

export type VfConfigField = keyof VfNetworkConfig;
export const VF_CONFIG_FIELDS: readonly VfConfigField[] = ['mac', 'vlan', 'qos', 'vlanProtocol', 'trust', 'spoofCheck', 'minTxRateMbps', 'maxTxRateMbps'];

/** One entry of `status.allocation.devices.config` (resource.k8s.io/v1 DeviceAllocationConfiguration). */
export interface AllocationConfig {
  source?: 'FromClass' | 'FromClaim' | string;
  requests?: string[];
  opaque?: { driver?: string; parameters?: unknown };
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

function isInt(v: unknown, lo: number, hi: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= lo && v <= hi;
}

/**
 * Parses and validates one opaque parameters object of our driver. Unknown fields and other kinds
 * are errors (a typo must not be ignored: `vlanid: 100` would put the VM on the untagged network).
 */
export function parseVfNetworkConfig(p: unknown): VfNetworkConfig | { error: string } {
  if (typeof p !== 'object' || p === null || Array.isArray(p)) return { error: 'parameters must be an object with apiVersion and kind' };
  const o = p as Record<string, unknown>;
  if (o.apiVersion !== VF_CONFIG_API_VERSION || o.kind !== VF_CONFIG_KIND) {
    return { error: `unsupported parameters apiVersion ${JSON.stringify(o.apiVersion)}, kind ${JSON.stringify(o.kind)}: driver ${DRA_DRIVER} takes apiVersion ${VF_CONFIG_API_VERSION}, kind ${VF_CONFIG_KIND}` };
  }
  const problems: string[] = [];
  for (const k of Object.keys(o)) {
    if (k !== 'apiVersion' && k !== 'kind' && !(VF_CONFIG_FIELDS as readonly string[]).includes(k)) problems.push(`unknown field "${k}" (known: ${VF_CONFIG_FIELDS.join(', ')})`);
  }
  const c: VfNetworkConfig = {};
  if (o.mac !== undefined) {
    if (typeof o.mac !== 'string' || !MAC.test(o.mac)) problems.push(`mac ${JSON.stringify(o.mac)} is not a MAC address like 02:00:5e:10:00:01`);
    else {
      const mac = o.mac.toLowerCase();
      // The kernel's drivers refuse multicast addresses (igb: EINVAL); all-zero means "no MAC".
      if (parseInt(mac.slice(0, 2), 16) & 1) problems.push(`mac ${mac} is a multicast address (lowest bit of the first octet set); a VF needs a unicast address`);
      else if (mac === '00:00:00:00:00:00') problems.push('mac 00:00:00:00:00:00 is not an address; leave mac out to keep the VF\'s own');
      else c.mac = mac;
    }
  }
  if (o.vlan !== undefined) {
    // 4095 is reserved (IEEE 802.1Q); the kernel itself only refuses > 4095.
    if (!isInt(o.vlan, 0, 4094)) problems.push(`vlan ${JSON.stringify(o.vlan)} must be a whole number from 0 (none) to 4094`);
    else c.vlan = o.vlan;
  }
  if (o.qos !== undefined) {
    if (!isInt(o.qos, 0, 7)) problems.push(`qos ${JSON.stringify(o.qos)} must be a whole number from 0 to 7 (802.1p priority)`);
    else c.qos = o.qos;
  }
  if (o.vlanProtocol !== undefined) {
    if (o.vlanProtocol !== '802.1Q' && o.vlanProtocol !== '802.1ad') problems.push(`vlanProtocol ${JSON.stringify(o.vlanProtocol)} must be "802.1Q" or "802.1ad"`);
    else c.vlanProtocol = o.vlanProtocol;
  }
  for (const k of ['trust', 'spoofCheck'] as const) {
    if (o[k] === undefined) continue;
    if (typeof o[k] !== 'boolean') problems.push(`${k} ${JSON.stringify(o[k])} must be true or false`);
    else c[k] = o[k];
  }
  for (const k of ['minTxRateMbps', 'maxTxRateMbps'] as const) {
    if (o[k] === undefined) continue;
    if (!isInt(o[k], 0, 4_294_967_295)) problems.push(`${k} ${JSON.stringify(o[k])} must be a whole number of Mbit/s (0 = no ${k.startsWith('min') ? 'guarantee' : 'limit'})`);
    else c[k] = o[k];
  }
  // qos and vlanProtocol without a VLAN, or min above max, are checked once a device's configs are
  // merged (a DeviceClass may give the VLAN, the claim the priority).
  return problems.length ? { error: problems.join('; ') } : c;
}

/** A device of ours in the allocation, as far as the config rules need it. */
export interface ConfigTarget {
  /** The result's request (`<request>` or `<request>/<subrequest>`). */
  request: string;
  device: string;
  /** Why this device cannot take VF network settings (not a NIC VF, PF without a netdev), or undefined. */
  notNicVf?: string;
}

/** Does a config's `requests` list name this result's request (an empty list names every request)? */
function names(requests: readonly string[] | undefined, request: string): boolean {
  if (!requests || requests.length === 0) return true;
  const top = request.split('/')[0] ?? request;
  return requests.includes(request) || requests.includes(top);
}

/**
 * The VF network settings of each allocated device of ours, from the allocation's configs in order
 * (the scheduler lists the DeviceClass's configs first, then the claim's). Fields merge, later over
 * earlier, with one rule on top: a field a DeviceClass config sets cannot be changed by a claim config
 * (an admin's VLAN keeps a tenant's VM on its network; the claim then gets an error, not silently the
 * class's value). A config naming no request applies to the NIC VFs among the results; one naming a
 * request whose device is not a NIC VF is an error. Devices without settings are left out.
 */
export function vfConfigsFor(configs: readonly AllocationConfig[] | undefined, targets: readonly ConfigTarget[]): Map<string, VfNetworkConfig> | { error: string } {
  const out = new Map<string, VfNetworkConfig>();
  const parsed: { source: string; requests?: string[]; config: VfNetworkConfig }[] = [];
  for (const [i, c] of (configs ?? []).entries()) {
    if (c.opaque?.driver !== DRA_DRIVER) continue;
    const p = parseVfNetworkConfig(c.opaque.parameters);
    const where = `config #${i}${c.source === 'FromClass' ? ' (from the DeviceClass)' : ''}${c.requests?.length ? ` for request${c.requests.length > 1 ? 's' : ''} ${c.requests.join(', ')}` : ''}`;
    if ('error' in p) return { error: `${where}: ${p.error}` };
    parsed.push({ source: c.source ?? 'FromClaim', ...(c.requests ? { requests: c.requests } : {}), config: p });
  }
  if (parsed.length === 0) return out;
  const perRequest = new Map<string, number>();
  for (const t of targets) perRequest.set(t.request, (perRequest.get(t.request) ?? 0) + 1);
  for (const t of targets) {
    const merged: VfNetworkConfig = {};
    const fromClass = new Set<VfConfigField>();
    let applies = false;
    for (const p of parsed) {
      if (!names(p.requests, t.request)) continue;
      if (t.notNicVf) {
        if (p.requests?.length) return { error: `request ${t.request} has VF network settings, but its device ${t.device} cannot take them: ${t.notNicVf}` };
        continue; // a config for every request: only the NIC VFs among them
      }
      applies = true;
      for (const k of VF_CONFIG_FIELDS) {
        const v = p.config[k];
        if (v === undefined) continue;
        if (p.source !== 'FromClass' && fromClass.has(k) && merged[k] !== v) {
          return { error: `request ${t.request}: ${k} is set to ${JSON.stringify(merged[k])} by the DeviceClass; a claim may not change it (asked for ${JSON.stringify(v)})` };
        }
        (merged as Record<string, unknown>)[k] = v;
        if (p.source === 'FromClass') fromClass.add(k);
      }
    }
    if (!applies) continue;
    if (merged.mac && (perRequest.get(t.request) ?? 0) > 1) return { error: `request ${t.request} has ${perRequest.get(t.request)} devices but one MAC address ${merged.mac}: give each VF its own request` };
    if ((merged.qos ?? 0) > 0 && !merged.vlan) return { error: `request ${t.request}: qos needs a vlan other than 0` };
    if (merged.vlanProtocol !== undefined && !merged.vlan) return { error: `request ${t.request}: vlanProtocol needs a vlan other than 0` };
    if (merged.minTxRateMbps && merged.maxTxRateMbps && merged.minTxRateMbps > merged.maxTxRateMbps) {
      return { error: `request ${t.request}: minTxRateMbps ${merged.minTxRateMbps} is above maxTxRateMbps ${merged.maxTxRateMbps}` };
    }
    out.set(t.device, merged);
  }
  const macs = new Map<string, string>();
  for (const [dev, c] of out) {
    if (!c.mac) continue;
    const other = macs.get(c.mac);
    if (other) return { error: `MAC address ${c.mac} is given to two devices (${other}, ${dev})` };
    macs.set(c.mac, dev);
  }
  return out;
}

/** "mac 02:…, vlan 100" — the settings of a config, for messages. */
export function describeVfConfig(c: VfNetworkConfig): string {
  return VF_CONFIG_FIELDS.filter((k) => c[k] !== undefined).map((k) => `${k} ${String(c[k])}`).join(', ');
}
