// Waiting for CRDs to be Established with `kubectl wait`, without its race against a new CRD.
//
// A CRD the API server has just created has `status.conditions: null` (the field has no omitempty)
// until its naming and establishing controllers write them, a moment later. `kubectl wait
// --for=condition=Established` then fails at once, instead of waiting, with
// `.status.conditions accessor error: <nil> is of the type <nil>, expected []interface{}`; on a busy
// machine that moment is long enough to lose. A CRD not created yet (an apply still landing) fails
// the same way with NotFound. Both mean "not ready yet" and are retried here until the deadline;
// any other failure is kubectl's and is thrown as it is.

/** Runs kubectl with these arguments and returns stdout; throws (with kubectl's stderr) when it fails. */
export type KubectlRunner = (args: string[]) => Promise<string>;

/** kubectl's failures that mean the CRD is not there yet, or has no conditions yet. */
const NOT_YET = /\.status\.conditions accessor error|\(NotFound\)/;

/** Whether this `kubectl wait` failure is the not-yet-ready race rather than a real failure. */
export function isNotYetEstablished(err: unknown): boolean {
  return NOT_YET.test(err instanceof Error ? err.message : String(err));
}

/**
 * Waits until every CRD in `names` (plural.group, with or without `crd/`) is Established, within
 * `timeoutSeconds` overall: each `kubectl wait` gets what is left of it, and the not-yet-ready race
 * is retried every `everyMs` until then.
 */
export async function waitCrdsEstablished(kubectl: KubectlRunner, names: string[], timeoutSeconds: number, everyMs = 100): Promise<void> {
  const refs = names.map((n) => (n.startsWith('crd/') ? n : `crd/${n}`));
  const deadline = Date.now() + timeoutSeconds * 1000;
  for (;;) {
    const left = Math.max(1, Math.ceil((deadline - Date.now()) / 1000));
    try {
      await kubectl(['wait', '--for=condition=Established', `--timeout=${left}s`, ...refs]);
      return;
    } catch (err) {
      if (!isNotYetEstablished(err)) throw err;
      if (Date.now() + everyMs > deadline) {
        throw new Error(`CRDs ${refs.join(', ')} not Established within ${timeoutSeconds}s: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
