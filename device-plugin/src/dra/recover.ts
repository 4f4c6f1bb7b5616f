// DRA front end: re-learning prepared claims after the checkpoint was lost (damaged or unreadable).
// Prepare writes, per claim, a CDI spec `<cdi-dir>/virtualio.dev-claim_<uid>.json` and one KubeVirt
// metadata file per request under `<plugin-dir>/metadata/<uid>/`; unprepare removes both. A CDI spec
// whose claim the checkpoint does not know is therefore a claim that was (or may still be) prepared:
// its metadata names the claim and, per request, the pool and device, which the current slices (or
// the device's own attributes) turn back into slice IDs.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ATTR_PCI_BUS_ID, DRA_DRIVER } from './devices.js';
import type { AllocatedClaim } from './claims.js';
import { CDI_KIND, cdiSpecPath, type PreparedClaim, type PreparedDevice } from './prepare.js';

const SPEC = new RegExp(`^${DRA_DRIVER.replace(/\./g, '\\.')}-claim_(.+)\\.json$`);

/** UIDs of the claims that have a CDI spec in `cdiDir` (a missing folder has none). */
export function claimUidsOnDisk(cdiDir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(cdiDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return names.flatMap((n) => {
    const m = SPEC.exec(n);
    return m ? [m[1]!] : [];
  }).sort();
}

interface MetadataDoc {
  metadata?: { name?: string; namespace?: string; uid?: string };
  podClaimName?: string;
  requests?: { name?: string; devices?: { driver?: string; pool?: string; name?: string; attributes?: Record<string, { string?: string }> }[] }[];
}

/** Maps a (resource pool, device) to the slice it is and its pool's resource name. */
export type DeviceLookup = (pool: string, device: string) => { sliceId: string; resourceName?: string } | undefined;

/**
 * The prepared claim behind a CDI spec on disk, or why it cannot be told. Uses the claim's metadata
 * files (names, requests, pools, devices) and, where they are missing, the claim as the API server
 * last showed it allocated here. A device's slice ID comes from `lookup`, else from its attributes
 * (an mdev's UUID, a function's PCI address: what slice IDs are).
 */
export function relearnClaim(uid: string, cdiDir: string, dataDir: string, lookup: DeviceLookup, allocated: AllocatedClaim | undefined): PreparedClaim | string {
  let spec: { devices?: { name?: string; containerEdits?: { mounts?: { hostPath?: string }[] } }[] };
  try {
    spec = JSON.parse(readFileSync(cdiSpecPath(cdiDir, uid), 'utf8')) as typeof spec;
  } catch (err) {
    return `cannot read its CDI spec: ${(err as Error).message}`;
  }
  const cdiDevices = (spec.devices ?? []).map((d) => d.name ?? '').filter((n) => n.startsWith(`${uid}-`)).map((n) => n.slice(uid.length + 1));
  const docs: MetadataDoc[] = [];
  for (const d of spec.devices ?? []) {
    for (const m of d.containerEdits?.mounts ?? []) {
      if (!m.hostPath?.startsWith(join(dataDir, 'metadata', uid))) continue;
      try {
        docs.push(JSON.parse(readFileSync(m.hostPath, 'utf8')) as MetadataDoc);
      } catch {
        /* missing or damaged: the allocated claim may still tell */
      }
    }
  }
  const meta = docs.find((d) => d.metadata?.uid === uid)?.metadata;
  const namespace = meta?.namespace ?? allocated?.namespace;
  const name = meta?.name ?? allocated?.name;
  if (!namespace || !name) return 'neither its metadata files nor the API server name the claim';
  const devices: PreparedDevice[] = [];
  const add = (request: string, pool: string, device: string, attrs?: Record<string, { string?: string }>): string | undefined => {
    if (devices.some((x) => x.pool === pool && x.device === device)) return undefined;
    const m = lookup(pool, device);
    const sliceId = m?.sliceId ?? attrs?.mdevUUID?.string ?? attrs?.[ATTR_PCI_BUS_ID]?.string;
    if (!sliceId) return `device ${pool}/${device} is no slice of this agent any more`;
    devices.push({ request, pool, device, sliceId, cdiId: `${CDI_KIND}=${uid}-${device}`, ...(m?.resourceName ? { resourceName: m.resourceName } : {}) });
    return undefined;
  };
  for (const doc of docs) {
    for (const r of doc.requests ?? []) {
      for (const d of r.devices ?? []) {
        if (d.driver !== DRA_DRIVER || !r.name || !d.pool || !d.name) continue;
        const err = add(r.name, d.pool, d.name, d.attributes);
        if (err) return err;
      }
    }
  }
  for (const d of allocated?.devices ?? []) {
    if (!cdiDevices.includes(d.device)) continue;
    const err = add(d.request, d.pool, d.device);
    if (err) return err;
  }
  const missing = cdiDevices.filter((n) => !devices.some((d) => d.device === n));
  if (missing.length) return `its CDI spec names device(s) ${missing.join(', ')} that neither its metadata nor the API server place in a pool`;
  const podClaimName = docs.find((d) => d.podClaimName)?.podClaimName;
  const pods = allocated?.pods.map((p) => p.name) ?? [];
  return { uid, namespace, name, ...(podClaimName ? { podClaimName } : {}), devices, ...(pods.length ? { pods } : {}) };
}
