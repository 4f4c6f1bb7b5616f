// Binds the node side (discovery, carving, health) to this node's roots: the NodeOps port of the
// agent manager, implemented with discovery/scan, carving/plan+apply and health/slices.
import { applyCarving } from '../carving/apply.js';
import { planCarving, planUncarve } from '../carving/plan.js';
import { scan } from '../discovery/scan.js';
import { buildSlices } from '../health/slices.js';
import type { Logger } from '../log.js';
import { FsSysfsWriter, type SysfsWriter } from '../sysfs/writer.js';
import type { NodeOps } from './ports.js';

export interface NodeOpsOptions {
  sysfsRoot: string;
  devRoot: string;
  nodeName: string;
  logger: Logger;
  /** Where carving writes go (default: plain file writes under the sysfs root). */
  writer?: SysfsWriter;
}

/** The NodeOps of one node. */
export function createNodeOps(opts: NodeOpsOptions): NodeOps {
  const writer = opts.writer ?? new FsSysfsWriter(opts.sysfsRoot);
  return {
    scan: () => scan(opts.sysfsRoot, { devRoot: opts.devRoot }),
    planCarving: (spec, inventory, allocated) => planCarving({ spec, inventory, nodeName: opts.nodeName, allocated }),
    planUncarve: (pool, spec, inventory, allocated) => planUncarve({ pool, spec, inventory, nodeName: opts.nodeName, allocated }),
    applyCarving: async (plan, signal) =>
      (await applyCarving(plan, writer, signal)).map((r) => (r.ok ? { write: r.write } : { write: r.write, error: r.error, ...(r.skipped ? { skipped: true } : {}) })),
    buildSlices: (spec, inventory, previous) => buildSlices({ spec, inventory, devRoot: opts.devRoot, nodeName: opts.nodeName, ...(previous ? { previous } : {}) }),
  };
}
