// Allocate as a pure function of the request, the pool and the current slice snapshot
// (STYLE P8). The gRPC server only translates the outcome; nothing here touches the filesystem.
import type { AllocateRequest__Output } from '../../../proto/generated/deviceplugin/v1beta1/AllocateRequest.js';
import type { ContainerAllocateResponse__Input } from '../../../proto/generated/deviceplugin/v1beta1/ContainerAllocateResponse.js';
import type { DeviceSpec__Input } from '../../../proto/generated/deviceplugin/v1beta1/DeviceSpec.js';
import type { PoolPlan, Slice } from '../model.js';
import { cdiDeviceName, devinfoFileName, mdevEnvName, npivEnvName, pciEnvName } from './names.js';

/** The facts of a pool the plugin side needs (a subset of the plan entry). */
export type PoolSpec = Pick<PoolPlan, 'name' | 'resourceName' | 'class' | 'mode' | 'consumption' | 'policy'>;

/** A Multus device-info file to write for one allocated NIC VF. */
export interface DevInfoFile {
  /** File name inside the device-info directory. */
  fileName: string;
  deviceId: string;
  /** JSON text, `{"type":"pci","version":"1.1.0","pci":{...}}`. */
  content: string;
}

/** gRPC status names this module can ask for (the server maps them to codes). */
export type AllocateErrorCode = 'INVALID_ARGUMENT' | 'FAILED_PRECONDITION';

export type AllocateOutcome =
  | { ok: true; response: { containerResponses: ContainerAllocateResponse__Input[] }; devinfo: DevInfoFile[] }
  | { ok: false; code: AllocateErrorCode; message: string };

export interface AllocateOptions {
  /** Return CDI device names (`--cdi`). */
  cdi: boolean;
}

/** The `/dev/vfio/vfio` container device every vfio consumer needs. */
export const VFIO_CONTAINER_NODE = '/dev/vfio/vfio';

/** Multus device-info (NPWG "device-info" spec 1.1.0) for a VF. */
export function devinfoContent(pciAddress: string, pfAddress: string | undefined): string {
  const pci: Record<string, string> = { 'pci-address': pciAddress };
  if (pfAddress) pci['pf-pci-address'] = pfAddress;
  return JSON.stringify({ type: 'pci', version: '1.1.0', pci });
}

/** True when slices of this pool get a Multus device-info file (NIC VFs, whatever the consumption). */
export function wantsDevinfo(pool: PoolSpec, slice: Slice): boolean {
  return pool.class === 'NIC' && slice.kind === 'VF';
}

type Validation = { ok: true; slices: Slice[] } | { ok: false; code: AllocateErrorCode; message: string };

/** Checks one container request: non-empty, no unknown, duplicate or unhealthy IDs. */
export function validateIds(ids: readonly string[], slices: ReadonlyMap<string, Slice>, pool: PoolSpec): Validation {
  if (ids.length === 0) return { ok: false, code: 'INVALID_ARGUMENT', message: `pool ${pool.name}: container request has no device IDs` };
  const seen = new Set<string>();
  const unknown: string[] = [];
  const dup: string[] = [];
  const unhealthy: string[] = [];
  const found: Slice[] = [];
  for (const id of ids) {
    if (seen.has(id)) {
      if (!dup.includes(id)) dup.push(id);
      continue;
    }
    seen.add(id);
    const s = slices.get(id);
    if (!s) unknown.push(id);
    else {
      if (s.health !== 'Healthy') unhealthy.push(s.reason ? `${id} (${s.reason})` : id);
      found.push(s);
    }
  }
  const problems: string[] = [];
  if (unknown.length) problems.push(`unknown device IDs: ${unknown.join(', ')}`);
  if (dup.length) problems.push(`duplicate device IDs: ${dup.join(', ')}`);
  if (problems.length) {
    if (unhealthy.length) problems.push(`unhealthy device IDs: ${unhealthy.join(', ')}`);
    return { ok: false, code: 'INVALID_ARGUMENT', message: `pool ${pool.name} (${pool.resourceName}): ${problems.join('; ')}` };
  }
  if (unhealthy.length) {
    return { ok: false, code: 'FAILED_PRECONDITION', message: `pool ${pool.name} (${pool.resourceName}): unhealthy device IDs: ${unhealthy.join(', ')}` };
  }
  const kinds = new Set(found.map((s) => envKind(s)));
  if (kinds.size > 1) {
    return { ok: false, code: 'FAILED_PRECONDITION', message: `pool ${pool.name}: request mixes slice kinds (${[...new Set(found.map((s) => s.kind))].join(', ')}); one resource must use one env variable` };
  }
  return { ok: true, slices: found };
}

function envKind(s: Slice): 'pci' | 'mdev' | 'npiv' {
  if (s.kind === 'Mdev') return 'mdev';
  if (s.kind === 'VPort') return 'npiv';
  return 'pci';
}

function envValue(s: Slice): string {
  switch (s.kind) {
    case 'Mdev':
      return s.mdevUuid ?? s.id;
    case 'VPort':
      return s.vport ? `${s.vport.wwpn}:${s.vport.wwnn}` : s.id;
    default:
      return s.pciAddress ?? s.id;
  }
}

/** Builds the response of one container from validated slices (request order is kept). */
export function containerResponse(pool: PoolSpec, chosen: readonly Slice[], opts: AllocateOptions): { response: ContainerAllocateResponse__Input; devinfo: DevInfoFile[] } {
  const envs: Record<string, string> = {};
  const first = chosen[0];
  if (first) {
    const kind = envKind(first);
    const name = kind === 'mdev' ? mdevEnvName(pool.resourceName) : kind === 'npiv' ? npivEnvName(pool.resourceName) : pciEnvName(pool.resourceName);
    envs[name] = chosen.map(envValue).join(',');
  }
  const paths: string[] = [];
  if (chosen.some((s) => s.kind !== 'VPort')) paths.push(VFIO_CONTAINER_NODE);
  for (const s of chosen) for (const p of s.deviceNodes) if (!paths.includes(p)) paths.push(p);
  const devices: DeviceSpec__Input[] = paths.map((p) => ({ containerPath: p, hostPath: p, permissions: 'mrw' }));
  const response: ContainerAllocateResponse__Input = { envs, devices, mounts: [], annotations: {} };
  if (opts.cdi) response.cdiDevices = chosen.map((s) => ({ name: cdiDeviceName(pool.name, s.id) }));
  const devinfo = chosen
    .filter((s) => wantsDevinfo(pool, s))
    .map((s) => ({
      fileName: devinfoFileName(pool.resourceName, s.id),
      deviceId: s.id,
      content: devinfoContent(s.pciAddress ?? s.id, s.parent),
    }));
  return { response, devinfo };
}

/**
 * The device plugin `Allocate` of one pool. Every container request is validated first; any unknown,
 * duplicate or unhealthy ID fails the whole call (INVALID_ARGUMENT for unknown/duplicate IDs,
 * FAILED_PRECONDITION for unhealthy ones) with a message naming the IDs. On success: one env variable
 * per container (`PCI_RESOURCE_<NAME>` for VF/Function slices, `MDEV_PCI_RESOURCE_<NAME>` for mdevs,
 * `VIRTUALIO_NPIV_<NAME>` for vports) holding exactly one value per slice; device specs
 * `/dev/vfio/vfio` plus each slice's device nodes, de-duplicated, host path = container path, "mrw";
 * CDI names when enabled; and the device-info files the caller must write for NIC VFs.
 */
export function allocate(req: Pick<AllocateRequest__Output, 'containerRequests'>, pool: PoolSpec, slices: ReadonlyMap<string, Slice>, opts: AllocateOptions): AllocateOutcome {
  const requests = req.containerRequests ?? [];
  if (requests.length === 0) return { ok: false, code: 'INVALID_ARGUMENT', message: `pool ${pool.name}: AllocateRequest has no container requests` };
  const containerResponses: ContainerAllocateResponse__Input[] = [];
  const devinfo: DevInfoFile[] = [];
  for (const creq of requests) {
    const v = validateIds(creq.devicesIds ?? [], slices, pool);
    if (!v.ok) return v;
    const r = containerResponse(pool, v.slices, opts);
    containerResponses.push(r.response);
    devinfo.push(...r.devinfo);
  }
  return { ok: true, response: { containerResponses }, devinfo };
}
