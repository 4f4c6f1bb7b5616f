// The steps a generated fault sequence draws from (fast-check model commands) and the run loop that
// the test and the long benchmark share. Each step acts on the NodeUnderTest, lets the agent react,
// then asserts the invariant from the kernel's side (NodeUnderTest.check). A sequence ends with the
// faults stopped and the node converging to its plan (NodeUnderTest.converge).
import fc from 'fast-check';
import type { PoolPlan } from '../../device-plugin/src/model.js';
import { NIC, NodeUnderTest, initialPools } from './node.js';

/** The model is the node itself: every command reads the real state it needs. */
type Model = Record<string, never>;
type Cmd = fc.AsyncCommand<Model, NodeUnderTest>;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Time for the agent to see a change (its plan file watch, PodResources poll, a cycle). */
const SETTLE_MS = 400;

export interface Figures {
  sequences: number;
  steps: number;
  faults: number;
  violations: number;
  slowestConvergenceMs: number;
}

abstract class Step implements Cmd {
  abstract toString(): string;
  abstract act(n: NodeUnderTest): Promise<unknown>;
  check(): boolean {
    return true;
  }
  async run(_m: Model, n: NodeUnderTest): Promise<void> {
    const r = await this.act(n);
    n.journal.push(`${this.toString()}${typeof r === 'string' ? `: ${r}` : ''}`);
    await sleep(SETTLE_MS);
    await n.check(this.toString());
    n.steps++;
  }
}

class StartVm extends Step {
  readonly pool: string;
  readonly n: number;
  constructor(pool: string, n: number) {
    super();
    this.pool = pool;
    this.n = n;
  }
  toString(): string {
    return `StartVm(${this.pool}, ${this.n})`;
  }
  act(n: NodeUnderTest): Promise<unknown> {
    return n.startVm(this.pool, this.n);
  }
}

class StopVm extends Step {
  readonly i: number;
  constructor(i: number) {
    super();
    this.i = i;
  }
  toString(): string {
    return `StopVm(${this.i})`;
  }
  act(n: NodeUnderTest): Promise<unknown> {
    return n.stopVm(this.i);
  }
}

class Wait extends Step {
  readonly ms: number;
  constructor(ms: number) {
    super();
    this.ms = ms;
  }
  toString(): string {
    return `Wait(${this.ms})`;
  }
  act(): Promise<unknown> {
    return sleep(this.ms);
  }
}

/** An edit of one mutable field of a pool's plan (what the operator writes after a spec edit). */
class Edit extends Step {
  readonly pool: string;
  readonly field: 'count' | 'mdevType' | 'wwnPrefix' | 'resourceName' | 'policy';
  readonly value: string | number;
  constructor(pool: string, field: 'count' | 'mdevType' | 'wwnPrefix' | 'resourceName' | 'policy', value: string | number) {
    super();
    this.pool = pool;
    this.field = field;
    this.value = value;
  }
  toString(): string {
    return `Edit(${this.pool}.${this.field}=${JSON.stringify(this.value)})`;
  }
  async act(n: NodeUnderTest): Promise<void> {
    const p = n.pools[this.pool];
    if (!p) return;
    const base = initialPools()[this.pool] as PoolPlan;
    if (this.field === 'resourceName') p.resourceName = `${base.resourceName}${this.value}`;
    else (p as unknown as Record<string, unknown>)[this.field] = this.value;
    n.writePlan();
  }
}

/** Deletion as the operator does it: first `deleting`, then the pool leaves the plan; or it comes back. */
class Lifecycle extends Step {
  readonly pool: string;
  readonly what: 'deleting' | 'remove' | 'restore';
  constructor(pool: string, what: 'deleting' | 'remove' | 'restore') {
    super();
    this.pool = pool;
    this.what = what;
  }
  toString(): string {
    return `Pool(${this.pool}, ${this.what})`;
  }
  async act(n: NodeUnderTest): Promise<void> {
    if (this.what === 'restore') n.pools[this.pool] ??= initialPools()[this.pool] as PoolPlan;
    else if (this.what === 'remove') delete n.pools[this.pool];
    else if (n.pools[this.pool]) (n.pools[this.pool] as PoolPlan).deleting = true;
    n.writePlan();
  }
}

/** The NIC moves to another pool (a selector edit, or two overlapping pools) and back. */
class MoveNic extends Step {
  toString(): string {
    return 'MoveNic';
  }
  async act(n: NodeUnderTest): Promise<void> {
    if (n.pools.net) {
      n.pools.net2 = { ...(n.pools.net as PoolPlan), name: 'net2', resourceName: 'virtualio.dev/net2', deleting: false, devices: [{ pciAddress: NIC }] };
      delete n.pools.net;
    } else {
      delete n.pools.net2;
      n.pools.net = initialPools().net as PoolPlan;
    }
    n.writePlan();
  }
}

class Fault extends Step {
  readonly name: string;
  readonly f: (n: NodeUnderTest) => Promise<unknown> | unknown;
  constructor(name: string, f: (n: NodeUnderTest) => Promise<unknown> | unknown) {
    super();
    this.name = name;
    this.f = f;
  }
  toString(): string {
    return this.name;
  }
  async act(n: NodeUnderTest): Promise<unknown> {
    return this.f(n);
  }
}

const pools = ['net', 'vgpu', 'gpu', 'fc'] as const;

/** Named steps, for regression sequences written out by hand (a shrunk counterexample). */
export const S = {
  startVm: (pool: string, n: number): Cmd => new StartVm(pool, n),
  stopVm: (i: number): Cmd => new StopVm(i),
  wait: (ms: number): Cmd => new Wait(ms),
  edit: (pool: string, field: 'count' | 'mdevType' | 'wwnPrefix' | 'resourceName' | 'policy', value: string | number): Cmd => new Edit(pool, field, value),
  pool: (pool: string, what: 'deleting' | 'remove' | 'restore'): Cmd => new Lifecycle(pool, what),
  moveNic: (): Cmd => new MoveNic(),
  killAgent: (when: 'now' | 'on-next-write'): Cmd => new Fault(`KillAgent(${when})`, (n) => n.killAgent(when)),
  restartKubelet: (ms: number): Cmd => new Fault(`RestartKubelet(empty ${ms} ms)`, (n) => n.restartKubelet(ms)),
  podResourcesFail: (): Cmd => new Fault('PodResourcesFail', (n) => n.failPodResources()),
  podResourcesRecover: (): Cmd => new Fault('PodResourcesRecover', (n) => n.recoverPodResources()),
  breakPlan: (k: 'empty' | 'truncated'): Cmd => new Fault(`BreakPlan(${k})`, (n) => n.breakPlan(k)),
  corrupt: (f: 'agent-checkpoint.json' | 'agent-ledger.json', k: 'empty' | 'truncated'): Cmd => new Fault(`Corrupt(${f}, ${k})`, (n) => n.corruptState(f, k)),
  secondAgent: (ms: number): Cmd => new Fault(`SecondAgent(${ms} ms)`, (n) => n.secondAgent(ms)),
};

/** Runs one sequence on a fresh node and returns its figures (throws on a violation or no convergence). */
export async function runOne(cmds: readonly Cmd[]): Promise<{ steps: number; faults: number; convergenceMs: number; journal: string[] }> {
  const node = new NodeUnderTest();
  try {
    await node.start();
    for (const c of cmds) await c.run({} as Model, node);
    const ms = await node.converge();
    return { steps: node.steps, faults: node.faults, convergenceMs: ms, journal: node.journal };
  } finally {
    await node.close();
  }
}

/** Every step a sequence may draw. */
export function commandArbitraries(): fc.Arbitrary<Cmd>[] {
  return [
    fc.tuple(fc.constantFrom(...pools, 'net2'), fc.integer({ min: 1, max: 2 })).map(([p, k]) => new StartVm(p, k)),
    fc.integer({ min: 0, max: 7 }).map((i) => new StopVm(i)),
    fc.constantFrom(300, 1500, 3000).map((ms) => new Wait(ms)),
    fc.tuple(fc.constantFrom('net', 'vgpu', 'fc'), fc.integer({ min: 1, max: 4 })).map(([p, c]) => new Edit(p, 'count', c)),
    fc.constantFrom('nvidia-222', 'nvidia-230').map((t) => new Edit('vgpu', 'mdevType', t)),
    fc.constantFrom('c05076', 'c05077').map((w) => new Edit('fc', 'wwnPrefix', w)),
    fc.tuple(fc.constantFrom(...pools), fc.constantFrom('', '-b')).map(([p, s]) => new Edit(p, 'resourceName', s)),
    fc.tuple(fc.constantFrom('net', 'vgpu'), fc.constantFrom('Pack', 'Spread', 'NUMAAligned')).map(([p, v]) => new Edit(p, 'policy', v)),
    fc.tuple(fc.constantFrom(...pools), fc.constantFrom('deleting', 'remove', 'restore') as fc.Arbitrary<'deleting' | 'remove' | 'restore'>).map(([p, w]) => new Lifecycle(p, w)),
    fc.constant(new MoveNic()),
    fc.constantFrom('now', 'on-next-write').map((w) => new Fault(`KillAgent(${w})`, (n) => n.killAgent(w as 'now' | 'on-next-write'))),
    fc.constantFrom(0, 3000, 10_000).map((ms) => new Fault(`RestartKubelet(empty ${ms} ms)`, (n) => n.restartKubelet(ms))),
    fc.constant(new Fault('PodResourcesFail', (n) => n.failPodResources())),
    fc.constant(new Fault('PodResourcesRecover', (n) => n.recoverPodResources())),
    fc.constantFrom('empty', 'truncated').map((k) => new Fault(`BreakPlan(${k})`, (n) => n.breakPlan(k as 'empty' | 'truncated'))),
    fc.constant(new Fault('FixPlan', (n) => n.writePlan())),
    fc.tuple(fc.constantFrom('agent-checkpoint.json', 'agent-ledger.json'), fc.constantFrom('empty', 'truncated')).map(([f, k]) => new Fault(`Corrupt(${f}, ${k})`, (n) => n.corruptState(f as 'agent-checkpoint.json', k as 'empty'))),
    fc.constantFrom(500, 2000).map((ms) => new Fault(`SecondAgent(${ms} ms)`, (n) => n.secondAgent(ms))),
  ];
}

/** Runs generated sequences; throws (with the seed and the shrunk sequence) on the first failure. */
export async function runSequences(o: { runs: number; maxSteps: number; seed?: number; path?: string; timeLimitMs?: number; log?: (line: string) => void }): Promise<Figures> {
  const figures: Figures = { sequences: 0, steps: 0, faults: 0, violations: 0, slowestConvergenceMs: 0 };
  const seed = o.seed ?? Date.now() % 2 ** 31;
  o.log?.(`fault sequences: seed ${seed}, ${o.runs} runs of up to ${o.maxSteps} steps`);
  await fc.assert(
    fc.asyncProperty(fc.commands(commandArbitraries(), { maxCommands: o.maxSteps, size: 'max' }), async (cmds) => {
      const node = new NodeUnderTest();
      try {
        await node.start();
        await fc.asyncModelRun(() => ({ model: {} as Model, real: node }), cmds);
        const ms = await node.converge();
        figures.sequences++;
        figures.steps += node.steps;
        figures.faults += node.faults;
        figures.slowestConvergenceMs = Math.max(figures.slowestConvergenceMs, ms);
        o.log?.(`sequence ${figures.sequences}: ${node.steps} steps, ${node.faults} faults, converged in ${ms} ms: ${cmds.toString()}`);
      } catch (err) {
        figures.violations += node.kernel?.violations.length ?? 0;
        o.log?.(`FAILED (${node.steps} steps done): ${cmds.toString()}\n  ${String(err).split('\n')[0]?.slice(0, 1500)}`);
        throw err;
      } finally {
        await node.close();
      }
    }),
    { numRuns: o.runs, seed, ...(o.path ? { path: o.path } : {}), ...(o.timeLimitMs ? { interruptAfterTimeLimit: o.timeLimitMs, markInterruptAsFailure: false } : {}), endOnFailure: false },
  );
  return figures;
}
