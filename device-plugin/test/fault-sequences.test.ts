// Generated fault sequences (issue 17): VMs starting and stopping on every pool mode, every mutable
// pool field edited, pools deleted and moved, the agent SIGKILLed (also right after a write, before
// it records it), the kubelet restarted with PodResources empty for a while, PodResources failing,
// the plan file and the agent's records damaged, a second agent on the node. After every step the
// fake kernel's witness log must show no destructive write on a device a VM holds open and no slice
// may be handed out twice; when the faults stop, the node converges to its plan with nothing leaked.
// The CI budget is bounded (VIO_SEQ_RUNS, VIO_SEQ_STEPS, VIO_SEQ_SECONDS); `make bench` runs a long
// one. A failure prints the seed and the shrunk sequence; replay it with VIO_SEQ_SEED and
// VIO_SEQ_PATH, and commit it to the regression list below.
import { jest } from '@jest/globals';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureAgentBuilt } from '../../test/fakes/agent-process.js';
import { S, runOne, runSequences } from '../../test/model/commands.js';

const runs = Number(process.env.VIO_SEQ_RUNS ?? 6);
const maxSteps = Number(process.env.VIO_SEQ_STEPS ?? 14);
const seconds = Number(process.env.VIO_SEQ_SECONDS ?? 240);
jest.setTimeout((seconds + 180) * 1000);

beforeAll(async () => {
  await ensureAgentBuilt();
});

// Shrunk counterexamples found by the generated runs, kept as regression tests.
const regressions = {
  'a damaged agent checkpoint after a kill mid-write, with a VM on an NPIV vport': [S.pool('fc', 'restore'), S.killAgent('on-next-write'), S.startVm('fc', 1), S.edit('vgpu', 'policy', 'NUMAAligned'), S.corrupt('agent-checkpoint.json', 'empty')],
  // The reproduction: VFs draining, the kubelet restarts and PodResources answers empty.
  'a kubelet restart with PodResources empty while the NIC pool leaves and a re-carve waits': [S.startVm('net', 2), S.restartKubelet(10_000), S.edit('net', 'count', 1), S.wait(1500), S.pool('net', 'remove'), S.wait(3000), S.killAgent('now'), S.wait(3000)],
  'lowered count, new mdev type and WWN prefix under running VMs': [S.startVm('vgpu', 2), S.startVm('fc', 2), S.edit('vgpu', 'count', 1), S.edit('vgpu', 'mdevType', 'nvidia-230'), S.edit('fc', 'wwnPrefix', 'c05077'), S.edit('fc', 'count', 1), S.wait(3000)],
  'SIGKILL right after a write of a re-carve, PodResources failing meanwhile': [S.startVm('net', 1), S.edit('net', 'count', 2), S.killAgent('on-next-write'), S.podResourcesFail(), S.edit('net', 'count', 3), S.killAgent('on-next-write'), S.wait(1500), S.podResourcesRecover(), S.wait(1500)],
  'an mdev type with fewer instances than asked, then a pool removed': [S.edit('fc', 'count', 3), S.edit('vgpu', 'mdevType', 'nvidia-230'), S.podResourcesRecover(), S.pool('gpu', 'remove')],
  // Found by the long run: the NIC moved to another pool while the agent was down and its ledger was
  // lost; the VM's VF was held only through the old resource name, which nothing remembered.
  'a VF held through a resource name the agent forgot (pool moved, ledger lost, PodResources failing)': [S.startVm('net', 1), S.podResourcesFail(), S.edit('vgpu', 'count', 4), S.killAgent('now'), S.moveNic(), S.corrupt('agent-ledger.json', 'empty'), S.edit('fc', 'wwnPrefix', 'c05076')],
  // Found by a CI-budget run (seed 1322639076): old-prefix vports left beside the new ones.
  'a damaged agent checkpoint, then a new WWN prefix': [S.corrupt('agent-checkpoint.json', 'truncated'), S.edit('fc', 'wwnPrefix', 'c05077'), S.podResourcesRecover(), S.killAgent('now')],
  // Found by a CI-budget run (seed 1334610740): the NIC pool's VFs kept after its deletion.
  'a damaged agent checkpoint, the NIC pool being deleted, a second agent': [S.corrupt('agent-checkpoint.json', 'empty'), S.pool('net', 'deleting'), S.secondAgent(500)],
  'the ledger damaged while a VM holds a passthrough GPU and the pool is deleted': [S.startVm('gpu', 1), S.pool('gpu', 'deleting'), S.corrupt('agent-ledger.json', 'truncated'), S.wait(1500), S.pool('gpu', 'remove'), S.wait(3000)],
  // Found by a hunt (seed 1373135669): the vGPU type edited, then the checkpoint damaged before the
  // old type's mdevs were removed; with the record of the old type gone they were taken for foreign.
  'a new mdev type, then a damaged checkpoint before the old mdevs went': [S.secondAgent(500), S.edit('vgpu', 'mdevType', 'nvidia-222'), S.edit('net', 'count', 3), S.stopVm(3), S.edit('vgpu', 'mdevType', 'nvidia-230'), S.wait(300), S.wait(1500), S.edit('vgpu', 'mdevType', 'nvidia-230'), S.corrupt('agent-checkpoint.json', 'truncated')],
  // Found by a hunt: the NIC moved to net2, then net restored with it: a plan the agent refuses (a
  // device in two pools); the model expected the refused plan to be carried out.
  'the NIC in two pools (a plan the agent refuses), then the last valid plan again': [S.moveNic(), S.pool('net', 'restore')],
  // Found by a hunt: the checkpoint lost, then the NIC pool's count lowered: the agent keeps the 4 VFs
  // it no longer knows it made (Conflict) and lists the pool's 2; the model expected all 4 listed.
  'a lost checkpoint, then the NIC pool shrunk': [S.breakPlan('truncated'), S.corrupt('agent-checkpoint.json', 'empty'), S.restartKubelet(10_000), S.edit('net', 'count', 2), S.breakPlan('truncated')],
};

test.each(Object.entries(regressions))('regression: %s', async (_name, cmds) => {
  const r = await runOne(cmds);
  console.log(r.journal.join('\n'));
  expect(r.steps).toBe(cmds.length);
});

test(`generated fault sequences (${runs} runs of up to ${maxSteps} steps, ${seconds} s budget): no violation in the kernel's log, nothing handed out twice, convergence to the plan`, async () => {
  const seed = process.env.VIO_SEQ_SEED ? Number(process.env.VIO_SEQ_SEED) : undefined;
  const lines: string[] = [];
  const figures = await runSequences({
    runs,
    maxSteps,
    ...(seed !== undefined ? { seed } : {}),
    ...(process.env.VIO_SEQ_PATH ? { path: process.env.VIO_SEQ_PATH } : {}),
    timeLimitMs: seconds * 1000,
    log: (l) => {
      lines.push(l);
      console.log(l);
    },
  });
  if (process.env.VIO_RESULTS_DIR) writeFileSync(join(process.env.VIO_RESULTS_DIR, 'fault-sequences.json'), JSON.stringify({ ...figures, log: lines }, null, 2));
  expect(figures.sequences).toBeGreaterThan(0);
  expect(figures.violations).toBe(0);
});
