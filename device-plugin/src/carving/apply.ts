// Applies a carving plan through the SysfsWriter port, one write at a time, in order.
import type { CarvingPlan, SysfsWrite } from '../model.js';
import type { SysfsWriter } from '../sysfs/writer.js';

/** The outcome of one planned write. */
export type WriteResult =
  | { write: SysfsWrite; ok: true }
  | { write: SysfsWrite; ok: false; error: string; code?: string; skipped?: boolean };

/** Runs a write whose effect a vendor tool makes (`SysfsWrite.tool`); rejects like a refused write. */
export type ToolRunner = (write: SysfsWrite) => Promise<void>;

const noTools: ToolRunner = (w) => Promise.reject(new Error(`${w.path}=${w.value}: needs the vendor tool ${w.tool ?? '?'}, which this agent cannot run`));

/**
 * Applies `plan.writes` in order and returns one result per write. Never throws because a write
 * failed: the error is reported in its result. After a failed write, the remaining writes of the
 * same `group` are skipped (reported with `skipped: true`), since they depend on it; other groups
 * proceed. An aborted `signal` skips everything not yet started. Writes with a `tool` go to
 * `tools` instead of the writer.
 */
export async function applyCarving(plan: CarvingPlan, writer: SysfsWriter, signal?: AbortSignal, tools: ToolRunner = noTools, settled: (paths: readonly string[]) => Promise<void> = async () => undefined): Promise<WriteResult[]> {
  const results: WriteResult[] = [];
  const failedGroups = new Set<string>();
  for (const write of plan.writes) {
    if (signal?.aborted) {
      results.push({ write, ok: false, error: 'skipped: shutting down', skipped: true });
      continue;
    }
    if (write.group !== undefined && failedGroups.has(write.group)) {
      results.push({ write, ok: false, error: `skipped: an earlier write for ${write.group} failed`, skipped: true });
      continue;
    }
    try {
      if (write.tool) await tools(write);
      else await writer.write(write.path, write.value, { lane: write.group ?? write.path });
      results.push({ write, ok: true });
      if (write.settle?.length) await settled(write.settle);
    } catch (err) {
      if (write.group !== undefined) failedGroups.add(write.group);
      const code = (err as NodeJS.ErrnoException).code;
      results.push({ write, ok: false, error: err instanceof Error ? err.message : String(err), ...(typeof code === 'string' ? { code } : {}) });
    }
  }
  return results;
}
