// Temp sysfs/dev trees for tests, and a condition wait for effects applied asynchronously.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** A fresh `<tmp>/sys` and `<tmp>/dev`; `cleanup()` removes both. */
export async function tempTree(prefix = 'vio-sysfs-'): Promise<{ root: string; devRoot: string; cleanup: () => Promise<void> }> {
  const base = await mkdtemp(path.join(tmpdir(), prefix));
  return { root: path.join(base, 'sys'), devRoot: path.join(base, 'dev'), cleanup: () => rm(base, { recursive: true, force: true }) };
}

/**
 * Re-evaluates `check` until it returns a value other than undefined/false, or throws with
 * `what` after `timeoutMs` (a generous bound on an asynchronous effect, not a speed assertion).
 */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 15000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
