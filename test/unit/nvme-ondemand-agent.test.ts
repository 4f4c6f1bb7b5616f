// On-demand NVMe queue pools end to end on the simulated kernel: the agent process's own parts
// (AgentManager, node ops, carver, checkpoint, nvme-cli through execFile) over a fake PM1733 with
// SR-IOV (test/sysfs) and a nvme-cli stand-in modelled on QEMU's controller (test/fakes/nvme-cli.ts).
// The claims the DRA driver would report are given directly (dra/ondemand.test.ts covers that part).
//  * the VFs are enabled ahead and every secondary controller stays Offline;
//  * a claim for 4 queues brings its VF's controller Online with 4 VQ, recorded in the checkpoint;
//  * a new agent on the same checkpoint sends no virt-mgmt for it (no double assignment);
//  * once the claim is gone the controller stays as it is while the VF is held, then goes Offline
//    with its resources back to the primary, and the record is forgotten.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Checkpoint } from '../../device-plugin/src/agent/checkpoint.js';
import { AgentManager } from '../../device-plugin/src/agent/manager.js';
import { createNodeOps } from '../../device-plugin/src/agent/node-ops.js';
import type { PlanSource, PlanState } from '../../device-plugin/src/agent/plan.js';
import type { WantedMdev } from '../../device-plugin/src/carving/ondemand.js';
import { PluginDirWatcher } from '../../device-plugin/src/kubelet/watcher.js';
import { silentLogger } from '../../device-plugin/src/log.js';
import { createMetrics } from '../../device-plugin/src/metrics.js';
import type { PoolPlan } from '../../device-plugin/src/model.js';
import type { Holder } from '../../device-plugin/src/podresources/client.js';
import { readDrive, writeNvmeCliScript } from '../fakes/nvme-cli.js';
import { FakeKubelet, FakePodResources } from '../fakes/kubelet.js';
import { waitFor } from '../support/operator-fixtures.js';
import { FakeKernel, nvmeWithSriov } from '../sysfs/kernel.js';
import { tempTree } from '../sysfs/tmp.js';

const PF = '0000:d8:00.0';
const pool: PoolPlan = { name: 'nvmeq', resourceName: 'virtualio.dev/nvmeq', class: 'Storage', mode: 'SRIOV', consumption: 'HostDevice', frontEnd: 'DRA', count: 4, vfDriver: 'vfio-pci', onDemand: { nvmeQueues: [2, 4, 8] }, devices: [{ pciAddress: PF }] };
const plan: PlanSource = {
  current: (): PlanState => ({ kind: 'ok', spec: { pools: [pool] }, generation: 1 }),
  run: async (signal, onChange) => {
    onChange();
    await new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));
  },
};

let k: FakeKernel;
let dir: string;
let cleanup: () => Promise<void>;
let kubelet: FakeKubelet;
let podres: FakePodResources;
let cli: { cli: string; state: string };
const wanted = new Map<string, WantedMdev>();
const held = new Map<string, Holder>();

beforeAll(async () => {
  const t = await tempTree('vio-nvmeq-agent-');
  cleanup = t.cleanup;
  k = await FakeKernel.create(t.root, t.devRoot);
  await k.addFunction(nvmeWithSriov(PF, { name: 'nvme3', serial: 'S1', totalVFs: 4 }));
  writeFileSync(join(t.devRoot, 'nvme3'), ''); // the controller's character device, as the agent sees /dev
  dir = mkdtempSync(join(tmpdir(), 'vio-nvmeq-'));
  cli = writeNvmeCliScript(dir, { root: k.root, pf: PF, drive: { maxVfs: 4, vqFlexible: 16, viFlexible: 8, maxVqPerVf: 8, maxViPerVf: 4 } });
  kubelet = await FakeKubelet.start(join(dir, 'plugins'));
  podres = await FakePodResources.start(join(dir, 'pod-resources', 'kubelet.sock'));
});

afterAll(async () => {
  await kubelet.stop();
  await podres.stop();
  rmSync(dir, { recursive: true, force: true });
  await cleanup();
});

/** Runs one agent until `until` holds; the checkpoint file is kept across agents. */
async function withAgent<T>(until: (a: AgentManager) => Promise<T | undefined | false>): Promise<T> {
  const ctl = new AbortController();
  const logger = silentLogger();
  const agent = new AgentManager({
    nodeName: 'n1', agentVersion: 'test', plan, logger, metrics: createMetrics(),
    ops: createNodeOps({ sysfsRoot: k.root, devRoot: k.devRoot, nodeName: 'n1', logger, writer: k, nvmeCli: cli.cli }),
    pluginDir: kubelet.pluginDir, podResourcesSocket: podres.socket, devinfoDir: join(dir, 'devinfo'), cdi: { enabled: false, dir: join(dir, 'cdi') },
    watcher: new PluginDirWatcher({ dir: kubelet.pluginDir, logger, signal: ctl.signal }),
    rescanIntervalMs: 200, watchPaths: [], podResources: { intervalMs: 100, minGapMs: 50 }, releaseGraceMs: 0,
    checkpoint: new Checkpoint(join(dir, 'checkpoint.json'), 'n1', logger),
    onDemandWanted: () => wanted, extraHolderInfo: () => held, draRegistration: () => ({ registered: true }),
  });
  const running = agent.run(ctl.signal);
  try {
    return await waitFor('the agent', () => until(agent), 30_000);
  } catch (err) {
    // What the agent says about the pool, for the failure message.
    const pools = agent.status()?.pools?.map((p) => ({ name: p.name, state: p.state, message: p.message }));
    throw new Error(`${String(err)}: ${JSON.stringify({ pools, nvme: agent.onDemandState().nvme, slices: agent.currentSlices().length })}`, { cause: err });
  } finally {
    ctl.abort();
    await running;
  }
}
const records = (): Record<string, { claim: string }> => (JSON.parse(readFileSync(join(dir, 'checkpoint.json'), 'utf8')) as { carvings?: Record<string, { claim: string }> }).carvings ?? {};
const controllers = (): number => readDrive(cli.state).secs.length;

test('VFs are enabled ahead with every controller Offline; a claim for 4 queues brings its VF Online at 4; a restart does not assign again; release waits for the holder', async () => {
  expect(controllers()).toBe(4);
  const vfs = await withAgent(async (a) => {
    const st = a.onDemandState().nvme[PF];
    return st && Object.keys(st.vfs).length === 4 ? Object.keys(st.vfs).sort() : undefined;
  });
  expect(readDrive(cli.state).secs.map((s) => [s.online, s.nvq])).toEqual([[false, 0], [false, 0], [false, 0], [false, 0]]);
  const vf = vfs[1] as string;
  wanted.set(vf, { pool: 'nvmeq', uuid: vf, queues: 4, claim: 'default/disk', namespace: 'default', name: 'disk', uid: 'u1' });
  const sc = await withAgent(async (a) => {
    const s = a.onDemandState().nvme[PF]?.vfs[vf];
    return s?.online ? s : undefined;
  });
  expect(sc).toMatchObject({ online: true, nvq: 4, nvi: 4, scid: 2 });
  expect(readDrive(cli.state).caps()).toMatchObject({ vqrfa: 4, virfa: 4 });
  expect(records()[vf]).toMatchObject({ claim: 'disk' });
  // A new agent on the same checkpoint: the controller is carved already, nothing is assigned twice.
  const before = readDrive(cli.state).toJSON();
  await withAgent(async (a) => a.onDemandState().nvme[PF]?.vfs[vf]?.online && a.status() !== undefined);
  expect(readDrive(cli.state).toJSON()).toEqual(before);
  // The claim is gone but a VM still holds the VF: left Online.
  wanted.clear();
  held.set(vf, { resourceName: pool.resourceName, namespace: 'default', pod: 'virt-launcher-vm', container: 'compute' });
  await withAgent(async (a) => a.status() !== undefined && a.onDemandState().nvme[PF] !== undefined);
  expect(readDrive(cli.state).secs[1]).toMatchObject({ online: true, nvq: 4 });
  // Nobody holds it: Offline, resources back to the primary, the record forgotten.
  held.clear();
  await withAgent(async (a) => a.onDemandState().nvme[PF]?.vfs[vf]?.online === false && records()[vf] === undefined);
  expect(readDrive(cli.state).secs[1]).toMatchObject({ online: false, nvq: 0, nvi: 0 });
  expect(readDrive(cli.state).caps()).toMatchObject({ vqrfa: 0, virfa: 0 });
});
