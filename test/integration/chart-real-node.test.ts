// The chart, installed for real: the image built from the project's own Dockerfile (scripts/build-image.sh:
// BuildKit on local STAND-INS of the two base images, see test/image/bases.sh) runs in real containers
// (containerd + runc) on a real kubelet, scheduled by the real kube-scheduler, with Deployments and
// DaemonSets driven by the real kube-controller-manager (test/node/node.ts has the node and its
// network). The only simulated part is the hardware: the fake sysfs kernel (test/sysfs) mounted where
// the chart mounts /sys and /dev/vfio. Proves: both workloads reach Running with the chart's exact
// security settings (checked in the API and in the running processes); one operator replica holds the
// Lease and a deleted leader fails over; the agent in its pod carves and registers its pool with the
// kubelet; a VM-shaped pod placed by the scheduler gets its slice; `helm test` passes; `helm upgrade`
// to a changed image rolls the agent (surge + hand-over) without the pool's allocatable ever dropping
// (the Node watched and read every 100 ms, the kubelet's log read) and without touching a held slice;
// every runbook command that needs the chart's objects runs against it (after a real agent crash, for
// `logs --previous`); `helm uninstall` leaves no pod. Helpers: real-node-support.ts.
// Needs root; without it the suite is reported as skipped with the reason, never as passed.
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import { startRealNode, realNodeSkipReason, NODE_NAME, type RealNode } from '../node/node.js';
import { FakeKernel, connectX6 } from '../sysfs/kernel.js';
import { startKernel, type KernelHandle } from '../sysfs/kernel-daemon.js';
import { eventually, kubectlOk } from '../support/cluster.js';
import { CHART_DIR, parseObjects, type KubeObject } from './chart-support.js';
import { ClientNodeKube } from '../../operator/src/kube/client-node.js';
import { chartRunbookCommands, runChartRunbookCommands } from '../observability/runbooks-chart.js';
import { ENV_NAME, NIC, REPO, TAG_A, TAG_B, VM_POD, agentToolsProbe, buildImage, openLog, parseLog, pool, processFacts, ready, vmPod, type AgentTools, type Pod } from './real-node-support.js';

const run = promisify(execFile);

const NS = 'virtualio-system';
const RELEASE = 'vio';
const PF = '0000:81:00.0';
const HOST_VFIO = '/dev/vfio';

const skipReason = realNodeSkipReason();
const suite = skipReason ? describe.skip : describe;
if (skipReason) console.log(`chart-real-node: skipped: ${skipReason}`);

let cp: ControlPlane;
let node: RealNode;
let kernel: KernelHandle;
let base: string;
let images: { a: string; b: string };
let imagesDir: string;
let madeHostVfio = false;
const figures: Record<string, number | string> = {};

const kubectl = (args: string[], input?: string): Promise<string> => kubectlOk(args, { input, kubeconfig: cp.kubeconfig, binDir: cp.binDir });
async function getJson<T = Record<string, unknown>>(args: string[]): Promise<T> {
  return JSON.parse(await kubectl([...args, '-o', 'json'])) as T;
}
async function helm(args: string[]): Promise<string> {
  try {
    const { stdout } = await run(join(cp.binDir, 'helm'), [...args, '--kubeconfig', cp.kubeconfig], {
      maxBuffer: 32 * 1024 * 1024,
      env: { ...process.env, HELM_CACHE_HOME: '/tmp/vio-helm/cache', HELM_CONFIG_HOME: '/tmp/vio-helm/config', HELM_DATA_HOME: '/tmp/vio-helm/data' },
    });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string };
    throw new Error(`helm ${args.join(' ')} failed: ${e.stderr ?? ''}${e.stdout ?? ''}\n${await diagnostics()}`, { cause: err });
  }
}

/** What to print when something does not come up: pods, events and the node's logs. */
async function diagnostics(): Promise<string> {
  const pods = await kubectl(['get', 'pods', '-A', '-o', 'wide']).catch((e: unknown) => String(e));
  const events = await kubectl(['get', 'events', '-A', '--sort-by=.lastTimestamp']).catch(() => '');
  const agentLogs = await containerLog('agent').catch((e: unknown) => String(e));
  // Both operator replicas: which one leads, and whether it planned the node (an install once
  // waited for a plan that never came; the agent stays unready without one).
  const operatorLogs = await node.crictl(['ps', '-a', '--name', 'operator', '-q'])
    .then(async (out) => (await Promise.all(out.split('\n').filter(Boolean).map(async (id) => `[${id.slice(0, 12)}]\n${(await node.crictl(['logs', id]).catch((e: unknown) => String(e))).split('\n').slice(-25).join('\n')}`))).join('\n'))
    .catch((e: unknown) => String(e));
  return [`--- pods ---\n${pods}`, `--- events ---\n${events.split('\n').slice(-30).join('\n')}`,
    `--- agent ---\n${agentLogs.split('\n').slice(-30).join('\n')}`, `--- operators ---\n${operatorLogs}`,
    `--- kubelet ---\n${node?.tail(node.logs.kubelet!, 25) ?? ''}`, `--- containerd ---\n${node?.tail(node.logs.containerd!, 15) ?? ''}`].join('\n');
}


async function pods(selector: string, namespace = NS): Promise<Pod[]> {
  return (await getJson<{ items: Pod[] }>(['get', 'pods', '-n', namespace, '-l', selector])).items;
}
const OPERATOR = 'app.kubernetes.io/component=operator,app.kubernetes.io/instance=vio';
const AGENT = 'app.kubernetes.io/component=agent,app.kubernetes.io/instance=vio';

/** The CRI container of a running container of ours (by container name, in NS unless given). */
async function criContainer(name: string, namespace = NS): Promise<{ id: string; pid: number }> {
  const list = JSON.parse(await node.crictl(['ps', '--name', `^${name}$`, '--label', `io.kubernetes.pod.namespace=${namespace}`, '--state', 'Running', '-o', 'json'])) as { containers: { id: string }[] };
  const id = list.containers[0]?.id;
  if (!id) throw new Error(`no running container ${name} in ${namespace}`);
  const info = JSON.parse(await node.crictl(['inspect', id])) as { info: { pid: number } };
  return { id, pid: info.info.pid };
}
async function containerLog(name: string, namespace = NS): Promise<string> {
  const { id } = await criContainer(name, namespace);
  return node.crictl(['logs', id]).catch((e: unknown) => String(e));
}

/** virtualio_operator_leader of an operator pod, from its /metrics. */
async function leaderGauge(p: Pod): Promise<string | undefined> {
  const ip = (await getJson<{ status: { podIP?: string } }>(['get', 'pod', '-n', NS, p.metadata.name])).status.podIP;
  if (!ip) throw new Error(`pod ${p.metadata.name} has no IP`);
  const t = Date.now();
  try {
    const text = await (await fetch(`http://${ip}:8080/metrics`, { signal: AbortSignal.timeout(5000) })).text();
    return /^virtualio_operator_leader (\d)/m.exec(text)?.[1];
  } catch (err) {
    // Which replica, where, after how long (a CI run once timed out here for 30 s on end).
    throw new Error(`GET http://${ip}:8080/metrics of ${p.metadata.name} (Ready ${ready(p)}): ${String(err)} after ${Date.now() - t} ms`, { cause: err });
  }
}

/** Polls pods matching `selector` until `count` are Ready; returns ms from `since` to each pod's Ready. */
async function waitReady(what: string, selector: string, count: number, since: number, timeoutMs = 180_000): Promise<number[]> {
  const readyAt = new Map<string, number>();
  await eventually(what, async () => {
    const ps = (await pods(selector)).filter((p) => !p.metadata.deletionTimestamp);
    for (const p of ps) if (ready(p) && !readyAt.has(p.metadata.name)) readyAt.set(p.metadata.name, Date.now() - since);
    return ps.filter(ready).length === count && ps.length === count ? true : undefined;
  }, timeoutMs, 250).catch(async (err: unknown) => { throw new Error(`${String(err)}\n${await diagnostics()}`, { cause: err }); });
  return [...readyAt.values()];
}

/** The one live agent pod once it runs `tag` and is Ready (the old one deleted). */
async function waitReadyPod(what: string, tag: string): Promise<Pod | undefined> {
  return eventually(what, async () => {
    const live = (await pods(AGENT)).filter((p) => !p.metadata.deletionTimestamp);
    return live.length === 1 && live[0]!.spec.containers[0]!.image === `${REPO}:${tag}` && ready(live[0]!) ? live[0] : undefined;
  }, 180_000, 250).catch(async (err: unknown) => { throw new Error(`${String(err)}\n${await diagnostics()}`, { cause: err }); });
}

const helmValues = (tag: string) => [
  '--namespace', NS, '--create-namespace',
  '--set', `image.repository=${REPO}`, '--set', `image.tag=${tag}`, '--set', 'image.pullPolicy=Never',
  '--set', `agent.hostPaths.sys=${join(base, 'sys')}`,
  '--set', `agent.hostPaths.devVfio=${join(base, 'dev/vfio')}`,
  '--set', `agent.hostPaths.devinfo=${join(base, 'devinfo')}`,
  // The agent's checkpoint: a fresh folder per run, so no run carves from an earlier run's plan.
  '--set', `agent.hostPaths.state=${join(base, 'state')}`,
  '--set', 'agent.rescanInterval=5s',
  '--set', 'operator.leaderElection.leaseDuration=6s',
];

suite(`the chart on a real node: built image, containerd + runc, real kubelet/scheduler/controller-manager${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  beforeAll(async () => {
    let t = Date.now();
    // This run's own archives and revisions: another checkout's run may build the same image names
    // meanwhile, and this one imports its images only once it holds the machine's kubelet lock.
    imagesDir = mkdtempSync(join(tmpdir(), 'vio-images-'));
    const runId = imagesDir.slice(-6);
    const revisions = { [TAG_A]: `e2e-a-${runId}`, [TAG_B]: `e2e-b-changed-${runId}` };
    images = { a: await buildImage(TAG_A, revisions[TAG_A], imagesDir), b: '' };
    figures.imageBuildMs = Date.now() - t;
    t = Date.now();
    images.b = await buildImage(TAG_B, revisions[TAG_B], imagesDir);
    figures.imageRebuildMs = Date.now() - t;

    base = mkdtempSync(join(tmpdir(), 'vio-real-node-'));
    const sys = join(base, 'sys');
    const dev = join(base, 'dev');
    mkdirSync(join(base, 'devinfo'));
    mkdirSync(join(base, 'state'));
    const k = await FakeKernel.create(sys, dev);
    await k.addFunction(connectX6(PF, { netdev: 'ens1f0np0', totalVFs: 8, numaNode: 0 }));
    kernel = await startKernel(sys, dev);

    t = Date.now();
    cp = await startControlPlane({ scheduler: true, controllerManager: true });
    node = await startRealNode(cp, { images: [images.a, images.b] });
    // The node runs the code of this checkout: the images it imported are the ones built above.
    for (const [tag, revision] of Object.entries(revisions)) {
      const img = JSON.parse(await node.crictl(['inspecti', `${REPO}:${tag}`])) as { info: { imageSpec: { config: { Labels?: Record<string, string> } } } };
      const found = img.info.imageSpec.config.Labels?.['org.opencontainers.image.revision'];
      if (found !== revision) throw new Error(`the node's image ${REPO}:${tag} has revision ${String(found)}, not this run's ${revision}: not the code under test`);
    }
    figures.clusterAndNodeStartMs = Date.now() - t;
    await kubectl(['label', 'node', NODE_NAME, 'virtualio.dev/nic=cx6']);

    t = Date.now();
    await helm(['install', RELEASE, CHART_DIR, ...helmValues(TAG_A), '--wait', '--timeout', '5m']);
    figures.helmInstallWaitMs = Date.now() - t;
    // helm --wait is satisfied by replicas - maxUnavailable ready pods; the suite wants both operators
    // Ready and the agent Running (it turns Ready once its node has a plan whose pools it registered,
    // which needs a VirtualIODevice; see the carving test).
    figures.installToOperatorsReadyMs = Math.max(...await waitReady('2 operator replicas Ready', OPERATOR, 2, t));
    await eventually('the agent Running', async () => {
      const p = (await pods(AGENT))[0];
      return p?.status.containerStatuses?.[0]?.state?.running ? true : undefined;
    }, 120_000, 250).catch(async (err: unknown) => { throw new Error(`${String(err)}\n${await diagnostics()}`, { cause: err }); });
    figures.installToAgentRunningMs = Date.now() - t;
  }, 40 * 60_000);

  afterAll(async () => {
    await kubectl(['delete', 'pod', '-n', 'default', VM_POD, '--ignore-not-found', '--grace-period=1']).catch(() => undefined);
    await node?.stop();
    await kernel?.stop();
    await cp?.stop();
    if (madeHostVfio) rmSync(HOST_VFIO, { recursive: true, force: true });
    if (base) rmSync(base, { recursive: true, force: true });
    if (imagesDir) rmSync(imagesDir, { recursive: true, force: true });
    if (Object.keys(figures).length) {
      console.log(`chart on a real node, figures: ${JSON.stringify(figures)}`);
      if (process.env.VIO_RESULTS_DIR) writeFileSync(join(process.env.VIO_RESULTS_DIR, 'chart-real-node-figures.json'), JSON.stringify(figures, null, 2));
    }
  }, 120_000);

  test('operator (2 replicas) and agent (DaemonSet) Running with the chart\'s exact security settings, in the API and in the kernel', async () => {
    const dep = await getJson<{ status: { readyReplicas?: number } }>(['get', 'deployment', '-n', NS, 'vio-virtualio-operator']);
    expect(dep.status.readyReplicas).toBe(2);
    const ds = await getJson<{ status: { currentNumberScheduled?: number; desiredNumberScheduled?: number } }>(['get', 'daemonset', '-n', NS, 'vio-virtualio-agent']);
    expect(ds.status.desiredNumberScheduled).toBe(1);
    expect(ds.status.currentNumberScheduled).toBe(1);

    const rendered = parseObjects(await helm(['template', RELEASE, CHART_DIR, ...helmValues(TAG_A)]));
    const tmpl = (kind: string) => (rendered.find((o: KubeObject) => o.kind === kind) as unknown as { spec: { template: { spec: Pod['spec'] } } }).spec.template.spec;
    const live = { operator: await pods(OPERATOR), agent: await pods(AGENT) };
    expect(live.operator).toHaveLength(2);
    expect(live.agent).toHaveLength(1);
    for (const [component, want] of [['operator', tmpl('Deployment')], ['agent', tmpl('DaemonSet')]] as const) {
      for (const p of live[component]) {
        expect(p.spec.nodeName).toBe(NODE_NAME);
        expect(p.spec.securityContext).toEqual(want.securityContext);
        expect(p.spec.containers[0]!.securityContext).toEqual(want.containers[0]!.securityContext);
        expect(p.spec.containers[0]!.image).toBe(`${REPO}:${TAG_A}`);
      }
    }
    // What runc actually applied to the running processes.
    const op = processFacts((await criContainer('operator')).pid);
    expect(op).toEqual({ uid: '65532', gid: '65532', capEff: '0000000000000000', capBnd: '0000000000000000', noNewPrivs: '1', seccomp: '2', rootReadOnly: true });
    const ag = processFacts((await criContainer('agent')).pid);
    expect(ag).toEqual({ uid: '0', gid: '0', capEff: '0000000000000000', capBnd: '0000000000000000', noNewPrivs: '1', seccomp: '2', rootReadOnly: true });
    // The shipped image: no shell, and the build-only CA setting never reaches it.
    const cfg = JSON.parse(await node.crictl(['inspecti', `${REPO}:${TAG_A}`])) as { info: { imageSpec: { config: { Env?: string[]; User?: string; Entrypoint?: string[] } } } };
    expect(cfg.info.imageSpec.config.User).toBe('65532:65532');
    expect(cfg.info.imageSpec.config.Entrypoint).toEqual(['/nodejs/bin/node']);
    expect((cfg.info.imageSpec.config.Env ?? []).filter((e) => e.startsWith('NODE_EXTRA_CA_CERTS'))).toEqual([]);
    // The programs the agent runs for opt-in features, through its own code at its defaults, in its
    // container with the chart's settings: found on the image's PATH and able to load their libraries.
    const tools = JSON.parse(await node.crictl(['exec', (await criContainer('agent')).id, '/nodejs/bin/node', '--input-type=module', '-e', agentToolsProbe])) as AgentTools;
    expect(tools.ip).toMatch(/^ip utility, iproute2-6\.\d+\.\d+, libbpf \d/);
    expect(tools.ipStderr).toBe('');
    expect(tools.loopback).toMatchObject([{ ifname: 'lo', link_type: 'loopback' }]);
    expect(tools.nvme).toMatch(/^nvme version 2\.\d+.*\nlibnvme version 1\.\d+/);

    // Pod start times from the API (second resolution): created → container started, created → Ready.
    for (const p of [...live.operator, ...live.agent]) {
      const name = `${p.metadata.name.includes('agent') ? 'agent' : 'operator'}.${p.metadata.name.slice(-5)}`;
      const created = Date.parse(p.metadata.creationTimestamp);
      const started = p.status.containerStatuses?.[0]?.state?.running?.startedAt;
      if (started) figures[`podStarted.${name}.s`] = (Date.parse(started) - created) / 1000;
      const readyAt = (p.status.conditions as unknown as { type: string; status: string; lastTransitionTime: string }[]).find((c) => c.type === 'Ready' && c.status === 'True')?.lastTransitionTime;
      if (readyAt) figures[`podReady.${name}.s`] = (Date.parse(readyAt) - created) / 1000;
    }
  });

  test('one operator replica holds the Lease; deleting the leader pod hands it over: released on the way out, one leader again', async () => {
    // Any live replica other than the deleted one may take over: the standby, or the Deployment's
    // replacement when it campaigns between the release and the standby's next retry (both are
    // correct; the replacement is as warm as the standby, which syncs its caches only once it leads).
    // What must hold: the deleted leader drains, releases the Lease and exits within its grace period;
    // another replica takes it (the test fails when none does); exactly one replica leads afterwards.
    const rounds = Math.max(1, Number(process.env.VIO_FAILOVER_ROUNDS ?? 2));
    const kube = ClientNodeKube.fromOptions({ kubeconfig: cp.kubeconfig });
    const lease = async () => (await kube.getLease(NS, 'virtualio-operator'))!;
    const live = async () => (await pods(OPERATOR)).filter((p) => !p.metadata.deletionTimestamp);
    const timelines: Record<string, number | string>[] = [];
    for (let round = 0; round < rounds; round++) {
      const before = await live();
      const names = before.map((p) => p.metadata.name);
      const leader = await eventually('a leader', async () => {
        const h = (await lease()).holderIdentity ?? '';
        return names.includes(h) ? h : undefined;
      }, 60_000);
      const transitions = (await lease()).leaseTransitions ?? 0;
      const leaderLog = await openLog(node, leader);
      const t = Date.now();
      await kubectl(['delete', 'pod', '-n', NS, leader, '--wait=false']);
      // The Lease as it changes (every 50 ms): when it was released, who took it, when.
      let releasedMs: number | undefined;
      const taken = await eventually('another operator replica to take the Lease', async () => {
        const l = await lease();
        if (l.holderIdentity === '' && releasedMs === undefined) releasedMs = Date.now() - t;
        return l.holderIdentity && l.holderIdentity !== leader ? { holder: l.holderIdentity, ms: Date.now() - t, transitions: l.leaseTransitions ?? 0 } : undefined;
      }, 60_000, 50).catch(async (err: unknown) => { throw new Error(`${String(err)}\n--- deleted leader ---\n${leaderLog.text()}\n${await diagnostics()}`, { cause: err }); });
      // Its whole shutdown (it has 30 s; the wait ends early once it logged its last line).
      await eventually('the deleted leader to finish', async () => (leaderLog.text().includes('Stopped virtualio operator') ? true : undefined), 40_000, 100).catch(() => undefined);
      const out = parseLog(leaderLog.text());
      leaderLog.close();
      const at = (msg: string) => out.find((l) => l.msg === msg)?.time;
      const standby = names.find((n) => n !== leader)!;
      const tl: Record<string, number | string> = {
        round, takeoverMs: taken.ms, by: taken.holder === standby ? 'standby' : 'replacement',
        ...(releasedMs !== undefined ? { releaseSeenMs: releasedMs } : {}),
      };
      for (const [k, msg] of [['sigtermMs', 'Shutting down'], ['releasedMs', 'Released leader Lease'], ['exitedMs', 'Stopped virtualio operator']] as const) {
        const x = at(msg);
        if (x !== undefined) tl[k] = x - t;
      }
      timelines.push(tl);
      // The deleted leader shut down in order: released the Lease itself (no wait for expiry), exited.
      expect(out.map((l) => l.msg)).toEqual(expect.arrayContaining(['Shutting down', 'Released leader Lease', 'Stopped virtualio operator']));
      expect(tl.exitedMs as number).toBeLessThan(30_000);
      // The new holder is a live replica of this Deployment, and the Lease changed hands exactly once.
      expect((await live()).map((p) => p.metadata.name)).toContain(taken.holder);
      expect(taken.transitions).toBe(transitions + 1);
      // Both replicas Ready again, and exactly one of them says it leads: the Lease holder.
      const readyMs = Math.max(...await waitReady('2 operator replicas again', OPERATOR, 2, t));
      // When the replacement started campaigning (it does so at once), and when the new holder says it
      // took the Lease, with its Lease request failures meanwhile: the race between the two.
      const replacement = (await live()).find((p) => !names.includes(p.metadata.name));
      for (const [key, pod] of [['replacement', replacement?.metadata.name], ['holder', taken.holder]] as const) {
        if (!pod) continue;
        const plog = await openLog(node, pod);
        const lines = parseLog(plog.text()).filter((l) => l.time >= t);
        plog.close();
        const x = key === 'replacement' ? lines.find((l) => l.msg === 'Started virtualio operator') : lines.find((l) => l.msg === 'Acquired leader Lease');
        if (x) tl[`${key}${key === 'replacement' ? 'Started' : 'Acquired'}Ms`] = x.time - t;
        const failures = lines.filter((l) => /leader Lease/.test(l.msg) && l.msg.startsWith('Failed')).length;
        if (failures) tl[`${key}LeaseFailures`] = failures;
      }
      console.log(`chart-real-node fail-over: ${JSON.stringify(tl)}`);
      const gauges = await eventually('exactly one replica reports leading', async () => {
        const ps = await live();
        const g = await Promise.all(ps.map(async (p) => [p.metadata.name, await leaderGauge(p)] as const));
        if (g.filter(([, v]) => v === '1').length === 1) return g;
        throw new Error(`leader gauges ${JSON.stringify(g)}`);
      }, 30_000, 250).catch(async (err: unknown) => {
        const logs = await Promise.all((await live()).map(async (p) => {
          const l = await openLog(node, p.metadata.name).catch(() => undefined);
          const text = l?.text().split('\n').slice(-15).join('\n') ?? '(no log)';
          l?.close();
          return `--- ${p.metadata.name} ---\n${text}`;
        }));
        throw new Error(`${String(err)}\n${logs.join('\n')}\n${await diagnostics()}`, { cause: err });
      });
      expect(gauges.filter(([, v]) => v === '1').map(([n]) => n)).toEqual([(await lease()).holderIdentity]);
      if (round === 0) {
        figures.leaderFailoverMs = taken.ms;
        figures.operatorReplacementReadyMs = readyMs;
      }
    }
    figures.leaderFailovers = JSON.stringify(timelines);
  }, 600_000);

  test('the agent in its pod carves the simulated host and registers the pool with the kubelet', async () => {
    // Before any pool: what the agent's /readyz says (recorded, not asserted).
    const agentIp = (await getJson<{ status: { podIP: string } }>(['get', 'pod', '-n', NS, (await pods(AGENT))[0]!.metadata.name])).status.podIP;
    figures.agentReadyzBeforePool = await fetch(`http://${agentIp}:8080/readyz`).then(async (r) => `${r.status} ${(await r.text()).slice(0, 200)}`, (e: unknown) => String(e));
    const planBefore = await getJson<{ spec?: unknown; metadata: { managedFields?: { manager?: string }[] } }>(['get', 'virtualionode', NODE_NAME, '--show-managed-fields']).catch(() => undefined);
    figures.virtualIONodeBeforePool = JSON.stringify({ spec: planBefore?.spec, managers: planBefore?.metadata.managedFields?.map((m) => m.manager) });
    const eventsBefore = kernel.events.length;
    const t = Date.now();
    await kubectl(['apply', '-f', '-'], JSON.stringify(pool));
    await eventually('4 VFs of the cx6 pool on the Node', async () => {
      const n = await getJson<{ status: { capacity: Record<string, string>; allocatable: Record<string, string> } }>(['get', 'node', NODE_NAME]);
      return n.status.capacity[NIC] === '4' && n.status.allocatable[NIC] === '4' ? true : undefined;
    }, 120_000, 250).catch(async (err: unknown) => { throw new Error(`${String(err)}\n${await diagnostics()}`, { cause: err }); });
    figures.poolToNodeCapacityMs = Date.now() - t;
    // With its pool registered, the agent reports Ready.
    figures.poolToAgentReadyMs = Math.max(...await waitReady('the agent Ready', AGENT, 1, t, 60_000));
    // The carving happened in the (simulated) kernel, written by the agent from inside its container.
    expect(readFileSync(join(base, 'sys/bus/pci/devices', PF, 'sriov_numvfs'), 'utf8').trim()).toBe('4');
    // ...and the kernel's event log saw those writes (the upgrade test relies on it to prove "untouched").
    expect(kernel.events.findIndex((e) => e.ok && e.path.endsWith(`${PF}/sriov_numvfs`) && e.value.trim() === '4')).toBeGreaterThanOrEqual(eventsBefore);
    const vfs = readdirSync(join(base, 'sys/bus/pci/devices', PF)).filter((f) => f.startsWith('virtfn'));
    expect(vfs).toHaveLength(4);
    for (const v of vfs) expect(basename(realpathSync(join(base, 'sys/bus/pci/devices', PF, v, 'driver')))).toBe('vfio-pci');
    expect(await containerLog('agent')).toMatch(/regist/i);
    // The chart's default (auto): the kubelet took the pool through its plugin watcher, from the
    // folders the chart mounts at their host paths.
    const via = await eventually('registeredVia in the pool status', async () => {
      const vn = await getJson<{ status?: { pools?: { name: string; registeredVia?: string }[] } }>(['get', 'virtualionode', NODE_NAME]);
      return vn.status?.pools?.[0]?.registeredVia ? vn.status.pools.map((p) => p.registeredVia) : undefined;
    }, 30_000, 250);
    expect(via).toEqual(['PluginWatcher']);
    expect(readdirSync('/var/lib/kubelet/plugins_registry').filter((f) => f.startsWith('virtualio.dev-dp-'))).toHaveLength(1);
  });

  test('a VM-shaped pod placed by the real scheduler gets its slice (env and VFIO device nodes)', async () => {
    // The runtime passes the allocated /dev/vfio nodes from the host; this host has no VFIO, so the
    // group nodes the simulated kernel has are mirrored as character devices (1:3, i.e. like /dev/null).
    if (!existsSync(HOST_VFIO)) {
      mkdirSync(HOST_VFIO);
      madeHostVfio = true;
    }
    if (madeHostVfio) {
      for (const e of readdirSync(join(base, 'dev/vfio'), { withFileTypes: true, recursive: true })) {
        const rel = join(e.parentPath, e.name).slice(join(base, 'dev/vfio').length + 1);
        if (e.isDirectory()) mkdirSync(join(HOST_VFIO, rel), { recursive: true });
        else if (!existsSync(join(HOST_VFIO, rel))) await run('mknod', ['-m', '0666', join(HOST_VFIO, rel), 'c', '1', '3']);
      }
    }
    const t = Date.now();
    await kubectl(['apply', '-f', '-'], JSON.stringify(vmPod()));
    const p = await eventually('the VM pod Running', async () => {
      const got = await getJson<Pod>(['get', 'pod', '-n', 'default', VM_POD]);
      return got.status.phase === 'Running' ? got : undefined;
    }, 120_000, 250).catch(async (err: unknown) => { throw new Error(`${String(err)}\n${await diagnostics()}`, { cause: err }); });
    figures.vmPodRunningMs = Date.now() - t;
    expect(p.spec.nodeName).toBe(NODE_NAME);
    expect(p.spec.schedulerName).toBe('default-scheduler');
    const events = await kubectl(['get', 'events', '-n', 'default', '--field-selector', `involvedObject.name=${VM_POD},reason=Scheduled`, '-o', 'jsonpath={.items[*].source.component}{.items[*].reportingComponent}']);
    expect(events).toContain('default-scheduler');

    const log = await eventually('the VM pod\'s report', async () => {
      const l = await containerLog('compute', 'default');
      return l.includes('VM-DEV') ? l : undefined;
    }, 30_000);
    const env = JSON.parse(log.match(/VM-ENV (.*)/)![1]!) as Record<string, string>;
    expect(Object.keys(env)).toEqual([ENV_NAME]);
    const vf = env[ENV_NAME]!;
    expect(vf).toMatch(/^0000:81:00\.[2-5]$/); // one of the 4 VFs (offset 2, stride 1)
    expect(basename(realpathSync(join(base, 'sys/bus/pci/devices', vf, 'physfn')))).toBe(PF);
    const group = basename(realpathSync(join(base, 'sys/bus/pci/devices', vf, 'iommu_group')));
    // /dev/vfio in the container: the VFIO container node, the VF's group, and its VFIO cdev when the
    // (simulated) kernel has one; nothing of the other VFs.
    const devs = (JSON.parse(log.match(/VM-DEV (.*)/)![1]!) as string[]).filter((d) => d !== 'devices');
    const cdevs = existsSync(join(base, 'sys/bus/pci/devices', vf, 'vfio-dev'))
      ? readdirSync(join(base, 'sys/bus/pci/devices', vf, 'vfio-dev')).filter((c) => existsSync(join(base, 'dev/vfio/devices', c))).map((c) => `devices/${c}`)
      : [];
    expect(devs).toEqual([group, 'vfio', ...cdevs].sort());
  }, 240_000);

  test('helm test passes', async () => {
    const t = Date.now();
    const out = await helm(['test', RELEASE, '-n', NS, '--timeout', '3m']);
    figures.helmTestMs = Date.now() - t;
    expect(out).toMatch(/Phase:\s+Succeeded/);
  });

  test('helm upgrade to a changed image: the new agent takes over (surge + hand-over), the pool\'s allocatable never drops, the held slice is untouched', async () => {
    const vmBefore = await getJson<Pod>(['get', 'pod', '-n', 'default', VM_POD]);
    const held = (JSON.parse((await containerLog('compute', 'default')).match(/VM-ENV (.*)/)![1]!) as Record<string, string>)[ENV_NAME]!;
    const agentBefore = (await pods(AGENT))[0]!;
    const eventsBefore = kernel.events.length;
    const imageA = agentBefore.status.containerStatuses![0]!.imageID;
    const oldAgentLog = await openLog(node, agentBefore.metadata.name, 'agent');
    const kubeletLogBefore = readFileSync(node.logs.kubelet!, 'utf8').length;

    // Every value of the pool's allocatable the Node object ever has during the upgrade: a watch sees
    // each stored version (nothing between two samples is missed), plus a GET every 100 ms.
    const seen: { ms: number; value: string; via: string }[] = [];
    const t = Date.now();
    const watch = spawn(join(cp.binDir, 'kubectl'), ['--kubeconfig', cp.kubeconfig, 'get', 'node', NODE_NAME, '--watch', '-o', `jsonpath={.status.allocatable.${NIC.replace('.', '\\.')}}{"\\n"}`], { stdio: ['ignore', 'pipe', 'ignore'] });
    watch.stdout.setEncoding('utf8').on('data', (d: string) => { for (const v of d.split('\n').filter(Boolean)) seen.push({ ms: Date.now() - t, value: v, via: 'watch' }); });
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const n = await getJson<{ status: { allocatable: Record<string, string> } }>(['get', 'node', NODE_NAME]).catch(() => undefined);
        if (n) seen.push({ ms: Date.now() - t, value: n.status.allocatable[NIC] ?? '(absent)', via: 'get' });
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    try {
      await helm(['upgrade', RELEASE, CHART_DIR, ...helmValues(TAG_B), '--wait', '--timeout', '5m']);
      figures.helmUpgradeWaitMs = Date.now() - t;
      // Until the old agent pod is gone (the DaemonSet deletes it once the new one is Ready).
      await eventually('the old agent pod gone', async () => ((await pods(AGENT)).some((p) => p.metadata.uid === agentBefore.metadata.uid) ? undefined : true), 120_000, 250);
      await new Promise((r) => setTimeout(r, 3000)); // one more node status update (every 2 s here) after it
    } finally {
      sampling = false;
      await sampler;
      watch.kill('SIGTERM');
    }
    const values = [...new Set(seen.map((x) => x.value))];
    figures.upgradeAllocatableSamples = seen.filter((x) => x.via === 'get').length;
    figures.upgradeAllocatableWatchEvents = seen.filter((x) => x.via === 'watch').length;
    figures.upgradeAllocatableValues = values.join(',');
    expect(seen.filter((x) => x.via === 'get').length).toBeGreaterThan(10);
    expect(seen.filter((x) => x.value !== '4')).toEqual([]);
    // The kubelet itself never marked the pool's devices unhealthy (what it does when the plugin it
    // uses goes away; its node status would then report allocatable 0 at its next update).
    const kubeletLog = readFileSync(node.logs.kubelet!, 'utf8').slice(kubeletLogBefore);
    expect(kubeletLog.split('\n').filter((l) => l.includes('Mark all resources Unhealthy') && l.includes(NIC))).toEqual([]);
    // The old agent detached the pool before it stopped, and the new one took the lock from it.
    const oldLines = parseLog(oldAgentLog.text()).map((l) => l.msg);
    oldAgentLog.close();
    expect(oldLines).toEqual(expect.arrayContaining(['handing the node over to a new agent', 'detached the pool from the kubelet; its devices stay allocatable']));
    const agentAfter = (await pods(AGENT)).filter((p) => !p.metadata.deletionTimestamp);
    expect(agentAfter).toHaveLength(1);
    expect(agentAfter[0]!.metadata.uid).not.toBe(agentBefore.metadata.uid);
    expect(agentAfter[0]!.spec.containers[0]!.image).toBe(`${REPO}:${TAG_B}`);
    expect(agentAfter[0]!.status.containerStatuses![0]!.imageID).not.toBe(imageA); // a different image, not just a tag
    // Old operator replicas may still be terminating after --wait (their grace period): count the live ones.
    const operators = await eventually('both operator replicas on the new image', async () => {
      const live = (await pods(OPERATOR)).filter((p) => !p.metadata.deletionTimestamp);
      return live.length === 2 && live.every((p) => p.spec.containers[0]!.image === `${REPO}:${TAG_B}`) ? live : undefined;
    }, 120_000);
    expect(operators).toHaveLength(2);

    // The new agent registered the pool again: capacity 4, one slice still allocated to the VM.
    await eventually('the pool back on the Node', async () => {
      const n = await getJson<{ status: { capacity: Record<string, string>; allocatable: Record<string, string> } }>(['get', 'node', NODE_NAME]);
      return n.status.capacity[NIC] === '4' && n.status.allocatable[NIC] === '4' ? true : undefined;
    }, 120_000, 250);
    await kernel.idle();
    // The held VF: no write of the kernel touched it or the PF's VF count, it is still on vfio-pci,
    // and the VM's container never restarted.
    const touched = kernel.events.slice(eventsBefore).filter((e) => e.path.includes(held) || e.value.includes(held) || e.path.endsWith(`${PF}/sriov_numvfs`));
    expect(touched).toEqual([]);
    expect(basename(realpathSync(join(base, 'sys/bus/pci/devices', held, 'driver')))).toBe('vfio-pci');
    const vmAfter = await getJson<Pod>(['get', 'pod', '-n', 'default', VM_POD]);
    expect(vmAfter.metadata.uid).toBe(vmBefore.metadata.uid);
    expect(vmAfter.status.containerStatuses![0]!.containerID).toBe(vmBefore.status.containerStatuses![0]!.containerID);
    expect(vmAfter.status.containerStatuses![0]!.restartCount).toBe(0);
    const vn = await getJson<{ status: { slices: { id: string; health: string }[] } }>(['get', 'virtualionode', NODE_NAME]);
    expect(vn.status.slices.find((s) => s.id === held)?.health).toBe('Healthy');
  }, 420_000);

  test('every runbook command that needs the chart runs against it (after an agent crash, as VirtualIOAgentDown finds it)', async () => {
    // A crash of the agent's process (SIGKILL on the node): the kubelet restarts the container, so
    // `kubectl logs --previous` has a previous container to show, as after a real crash.
    const live = async () => (await pods(AGENT)).filter((p) => !p.metadata.deletionTimestamp);
    const agentPod = (await live())[0]!;
    const restarts = agentPod.status.containerStatuses![0]!.restartCount;
    process.kill((await criContainer('agent')).pid, 'SIGKILL');
    await eventually('the agent container restarted and Ready', async () => {
      const p = (await live()).find((x) => x.metadata.name === agentPod.metadata.name);
      return p && p.status.containerStatuses![0]!.restartCount > restarts && ready(p) ? true : undefined;
    }, 120_000, 250).catch(async (err: unknown) => { throw new Error(`${String(err)}\n${await diagnostics()}`, { cause: err }); });
    const leader = (await getJson<{ spec: { holderIdentity?: string } }>(['get', 'lease', '-n', NS, 'virtualio-operator'])).spec.holderIdentity ?? '';
    const held = (JSON.parse((await containerLog('compute', 'default')).match(/VM-ENV (.*)/)![1]!) as Record<string, string>)[ENV_NAME]!;
    const commands = chartRunbookCommands();
    const t = Date.now();
    const { ran, failed } = await runChartRunbookCommands(commands, {
      values: { node: NODE_NAME, pool: 'cx6', slice: held, device: PF, namespace: 'default', pod: VM_POD, 'agent-pod': agentPod.metadata.name, 'operator-pod': leader },
      fullname: `${RELEASE}-virtualio`, kubeconfig: cp.kubeconfig, binDir: cp.binDir, localPort: await freePort(),
    });
    figures.runbookChartCommands = ran.length;
    figures.runbookChartCommandsMs = Date.now() - t;
    expect(failed).toEqual([]);
    expect(ran).toHaveLength(commands.length);
    // The last one deleted the agent pod: the DaemonSet's replacement comes back Ready.
    await waitReady('the replaced agent Ready', AGENT, 1, Date.now());
  }, 300_000);

  test('upgrading from an agent that cannot hand over (no --handover, like a version before it): the new one is Ready as a standby, the rollout ends, one agent at a time', async () => {
    // The running agent becomes one that ignores requests (restarted in place, no surge), then the
    // chart's defaults upgrade from it: without the standby the new pod never turns Ready.
    const noSurge = ['--set', 'agent.updateStrategy.rollingUpdate.maxSurge=0', '--set', 'agent.updateStrategy.rollingUpdate.maxUnavailable=1'];
    await helm(['upgrade', RELEASE, CHART_DIR, ...helmValues(TAG_A), '--set', 'agent.handover=false', ...noSurge, '--wait', '--timeout', '5m']);
    const old = (await waitReadyPod('the agent without hand-over Ready', TAG_A))!;
    const eventsBefore = kernel.events.length;
    const held = (JSON.parse((await containerLog('compute', 'default')).match(/VM-ENV (.*)/)![1]!) as Record<string, string>)[ENV_NAME]!;
    const t = Date.now();
    await helm(['upgrade', RELEASE, CHART_DIR, ...helmValues(TAG_B), '--wait', '--timeout', '5m']);
    const fresh = (await waitReadyPod('the new agent Ready and alone', TAG_B))!;
    figures.upgradeFromNoHandoverMs = Date.now() - t;
    const lines = parseLog(await kubectl(['logs', '-n', NS, fresh.metadata.name])).map((l) => l.msg);
    const standby = lines.findIndex((m) => m.includes('it does not accept hand-over requests') && m.includes('Reporting Ready as a standby'));
    const acquired = lines.findIndex((m) => m.startsWith('holding the node\'s agent lock'));
    expect(standby).toBeGreaterThanOrEqual(0);
    expect(acquired).toBeGreaterThan(standby); // it took the node only after the standby, i.e. after the old one let go
    expect(fresh.metadata.uid).not.toBe(old.metadata.uid);
    await kernel.idle();
    expect(kernel.events.slice(eventsBefore).filter((e) => e.path.includes(held) || e.value.includes(held) || e.path.endsWith(`${PF}/sriov_numvfs`))).toEqual([]);
    expect((await getJson<Pod>(['get', 'pod', '-n', 'default', VM_POD])).status.containerStatuses![0]!.restartCount).toBe(0);
  }, 420_000);

  test('helm uninstall leaves no pod behind', async () => {
    const t = Date.now();
    await helm(['uninstall', RELEASE, '-n', NS, '--wait', '--timeout', '3m']);
    await eventually('no virtualio pod in the API', async () => ((await pods('app.kubernetes.io/instance=vio')).length === 0 ? true : undefined), 90_000, 250);
    await eventually('no virtualio container on the node', async () => {
      const list = JSON.parse(await node.crictl(['ps', '--label', `io.kubernetes.pod.namespace=${NS}`, '-o', 'json'])) as { containers: unknown[] };
      return list.containers.length === 0 ? true : undefined;
    }, 60_000, 250);
    figures.helmUninstallMs = Date.now() - t;
    expect(await kubectl(['get', 'all', '-n', NS, '-o', 'name'])).toBe('');
    // The agent unregistered on its way out: the kubelet no longer offers the pool.
    expect(readdirSync('/var/lib/kubelet/device-plugins').filter((f) => f.startsWith('virtualio-'))).toEqual([]);
    expect(readdirSync('/var/lib/kubelet/plugins_registry').filter((f) => f.startsWith('virtualio.dev-'))).toEqual([]);
    const helmList = await helm(['list', '-n', NS, '-q']);
    expect(helmList.trim()).toBe('');
  }, 240_000);
});
