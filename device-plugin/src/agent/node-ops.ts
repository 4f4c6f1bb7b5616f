// Binds the node side (discovery, carving, health) to this node's roots: the NodeOps port of the
// agent manager, implemented with discovery/scan, carving/plan+apply and health/slices.
import { existsSync } from 'node:fs';
import { applyCarving, type ToolRunner } from '../carving/apply.js';
import { rememberCatalogues, type VgpuType } from '../carving/gpu.js';
import { nvidiaToolRunner } from '../carving/nvidia-tools.js';
import { execNvmeCli, provisionNvme } from '../carving/nvme.js';
import { planCarving, planUncarve } from '../carving/plan.js';
import { scan } from '../discovery/scan.js';
import { buildSlices } from '../health/slices.js';
import type { Logger } from '../log.js';
import { IsolatedSysfsWriter } from '../sysfs/isolated-writer.js';
import { FsSysfsWriter, resolveUnderRoot, type SysfsWriter } from '../sysfs/writer.js';
import type { NodeOps } from './ports.js';

/** How long a write's `settle` paths are waited for (model.ts SysfsWrite.settle). */
const SETTLE_MS = 1000;

/** Waits until every path exists under the root, or `ms` passed (then the pass goes on: the next rescan tells). */
async function appeared(root: string, paths: readonly string[], ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (const p of paths) {
    const full = resolveUnderRoot(root, p);
    while (!existsSync(full) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  }
}

export interface NodeOpsOptions {
  sysfsRoot: string;
  devRoot: string;
  nodeName: string;
  logger: Logger;
  /**
   * Where carving writes go: a writer, or `isolated` (each write in a helper process with a
   * timeout, what production runs). Default: plain in-process file writes under the sysfs root.
   */
  writer?: SysfsWriter | { isolated: { timeoutMs: number; onUnstuck?: () => void } };
  /** nvme-cli for NVMe secondary controller provisioning (default `nvme` on PATH). */
  nvmeCli?: string;
  /** Runs writes that need a vendor tool (NVIDIA sriov-manage, nvidia-smi); default: NVIDIA's tools where the driver installs them. */
  tools?: ToolRunner;
}

/** The NodeOps of one node. */
export function createNodeOps(opts: NodeOpsOptions): NodeOps {
  const w = opts.writer;
  const writer: SysfsWriter =
    w === undefined
      ? new FsSysfsWriter(opts.sysfsRoot)
      : 'isolated' in w
        ? new IsolatedSysfsWriter({ root: opts.sysfsRoot, timeoutMs: w.isolated.timeoutMs, ...(w.isolated.onUnstuck ? { onUnstuck: w.isolated.onUnstuck } : {}) })
        : w;
  const tools = opts.tools ?? nvidiaToolRunner();
  const catalogues = new Map<string, VgpuType[]>();
  return {
    stuckWrites: () => (writer instanceof IsolatedSysfsWriter ? writer.stuck() : []),
    close: () => {
      if (writer instanceof IsolatedSysfsWriter) writer.close();
    },
    scan: async () => rememberCatalogues(await scan(opts.sysfsRoot, { devRoot: opts.devRoot }), catalogues),
    planCarving: (spec, inventory, allocated, ownedPfs, onDemand) => planCarving({ spec, inventory, nodeName: opts.nodeName, allocated, ...(ownedPfs ? { ownedPfs } : {}), ...(onDemand ? { onDemand } : {}) }),
    planUncarve: (pool, spec, inventory, allocated, ownedPfs, kept) => planUncarve({ pool, spec, inventory, nodeName: opts.nodeName, allocated, ...(ownedPfs ? { ownedPfs } : {}), ...(kept ? { kept } : {}) }),
    applyCarving: async (plan, signal) =>
      (await applyCarving(plan, writer, signal, tools, (paths) => appeared(opts.sysfsRoot, paths, SETTLE_MS))).map((r) => (r.ok ? { write: r.write } : { write: r.write, error: r.error, ...(r.code ? { code: r.code } : {}), ...(r.skipped ? { skipped: true } : {}) })),
    provision: async (spec, inventory, held, onDemand) => {
      const r = await provisionNvme({ spec, inventory, devRoot: opts.devRoot, cli: execNvmeCli(opts.nvmeCli ?? 'nvme'), writer, held, ...(onDemand ? { onDemand } : {}) });
      for (const a of r.actions) opts.logger.info(a, 'nvme provisioning');
      for (const k of r.skipped ?? []) opts.logger.debug(k, 'nvme provisioning skipped');
      return { problems: r.problems, ...(r.nvme ? { nvme: r.nvme } : {}), ...(r.failed ? { failed: r.failed } : {}) };
    },
    buildSlices: (spec, inventory, previous, onDemand) => buildSlices({ spec, inventory, devRoot: opts.devRoot, nodeName: opts.nodeName, ...(previous ? { previous } : {}), ...(onDemand ? { capacity: onDemand.capacity } : {}) }),
  };
}
