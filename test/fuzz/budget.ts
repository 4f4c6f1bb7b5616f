// The fuzzers' budget and bookkeeping (issue 21, hostile input). In CI every target runs a fixed,
// small number of generated inputs from a fixed seed (a few seconds each; a failure replays
// exactly); `make bench` runs them long. Environment:
//   VIO_FUZZ_RUNS    inputs per target (default: the target's CI budget)
//   VIO_FUZZ_SEED    the seed (default below; `random` for a fresh one, printed on failure)
//   VIO_FUZZ_REPORT  a file to which every target appends one JSON line {target, runs, ms}
// A failure prints fast-check's counterexample, seed and path; keep the counterexample as an
// example test beside the fix.
import fc from 'fast-check';
import { appendFileSync } from 'node:fs';

const DEFAULT_SEED = 20261206;

/** The seed of this run. */
export function fuzzSeed(): number {
  const v = process.env.VIO_FUZZ_SEED;
  if (v === 'random') return Math.floor(Math.random() * 2 ** 31);
  return v !== undefined && v !== '' && Number.isInteger(Number(v)) ? Number(v) : DEFAULT_SEED;
}

/** Inputs per target: VIO_FUZZ_RUNS when set, else the target's CI budget. */
export function fuzzRuns(ciRuns: number): number {
  const v = Number(process.env.VIO_FUZZ_RUNS);
  return Number.isInteger(v) && v > 0 ? v : ciRuns;
}

/** fast-check parameters of one target: the seed, its budget, and a per-run deadline for async properties. */
export function fuzzParams(ciRuns: number, opts: { timeoutMs?: number } = {}): fc.Parameters<unknown> {
  return { seed: fuzzSeed(), numRuns: fuzzRuns(ciRuns), ...(opts.timeoutMs ? { timeout: opts.timeoutMs } : {}) };
}

/** Records how many inputs a target ran (VIO_FUZZ_REPORT), for the long run's figures. */
export function recordRuns(target: string, runs: number, ms: number): void {
  const file = process.env.VIO_FUZZ_REPORT;
  if (file) appendFileSync(file, `${JSON.stringify({ target, runs, ms: Math.round(ms) })}\n`);
}

/** fc.assert for a synchronous property, counting the inputs actually run. */
export function fuzz<Ts extends [unknown, ...unknown[]]>(target: string, ciRuns: number, arbs: { [K in keyof Ts]: fc.Arbitrary<Ts[K]> }, check: (...args: Ts) => void): void {
  let runs = 0;
  const t0 = Date.now();
  fc.assert(
    fc.property(...arbs, (...args: Ts) => {
      runs++;
      check(...args);
    }),
    fuzzParams(ciRuns) as fc.Parameters<Ts>,
  );
  recordRuns(target, runs, Date.now() - t0);
}

/** fc.assert for an asynchronous property; a run that takes longer than `timeoutMs` fails (a hang). */
export async function fuzzAsync<Ts extends [unknown, ...unknown[]]>(target: string, ciRuns: number, arbs: { [K in keyof Ts]: fc.Arbitrary<Ts[K]> }, check: (...args: Ts) => Promise<void>, timeoutMs = 10_000): Promise<void> {
  let runs = 0;
  const t0 = Date.now();
  await fc.assert(
    fc.asyncProperty(...arbs, async (...args: Ts) => {
      runs++;
      await check(...args);
    }),
    fuzzParams(ciRuns, { timeoutMs }) as fc.Parameters<Ts>,
  );
  recordRuns(target, runs, Date.now() - t0);
}
