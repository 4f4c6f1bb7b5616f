// CDI spec of one pool (CDI SPEC.md): one device per slice named by the slice ID, its vfio device
// nodes as edits, and /dev/vfio/vfio as a spec-wide edit. Pure builder + an atomic file writer.
import { mkdirSync, renameSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Slice } from '../model.js';
import { CDI_VENDOR, cdiClass, cdiSpecFileName, npivEnvName } from './names.js';
import { VFIO_CONTAINER_NODE } from './allocate.js';

/**
 * The lowest CDI version covering what we write (devices, containerEdits.deviceNodes/env, names
 * containing `:` and `.`); 0.5.0 is also what the container runtimes of Kubernetes ≥1.27 read.
 */
export const CDI_VERSION = '0.5.0';

export interface CdiSpec {
  cdiVersion: string;
  kind: string;
  devices: { name: string; containerEdits: { deviceNodes?: { path: string; permissions: string }[]; env?: string[] } }[];
  containerEdits?: { deviceNodes: { path: string; permissions: string }[] };
}

/** The spec of a pool, or undefined when the pool has no slices (CDI requires ≥ 1 device). */
export function buildCdiSpec(pool: string, resourceName: string, slices: readonly Slice[]): CdiSpec | undefined {
  if (slices.length === 0) return undefined;
  const sorted = [...slices].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const spec: CdiSpec = {
    cdiVersion: CDI_VERSION,
    kind: `${CDI_VENDOR}/${cdiClass(pool)}`,
    devices: sorted.map((s) => {
      if (s.kind === 'VPort') {
        // No device node: the edit is the vport's names, one variable per device so they never clash.
        const v = s.vport ? `${s.vport.wwpn}:${s.vport.wwnn}` : s.id;
        return { name: s.id, containerEdits: { env: [`${npivEnvName(resourceName)}_${s.id.toUpperCase()}=${v}`] } };
      }
      return { name: s.id, containerEdits: { deviceNodes: s.deviceNodes.map((path) => ({ path, permissions: 'rwm' })) } };
    }),
  };
  if (sorted.some((s) => s.kind !== 'VPort')) spec.containerEdits = { deviceNodes: [{ path: VFIO_CONTAINER_NODE, permissions: 'rwm' }] };
  return spec;
}

/** Writes (atomically, only when changed) or removes the pool's spec file in `dir`. */
export function syncCdiSpec(dir: string, pool: string, spec: CdiSpec | undefined): void {
  const file = join(dir, cdiSpecFileName(pool));
  if (!spec) {
    rmSync(file, { force: true });
    return;
  }
  const text = `${JSON.stringify(spec, null, 2)}\n`;
  try {
    if (readFileSync(file, 'utf8') === text) return;
  } catch {
    /* absent */
  }
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.${cdiSpecFileName(pool)}.tmp`);
  writeFileSync(tmp, text, { mode: 0o644 });
  renameSync(tmp, file);
}
