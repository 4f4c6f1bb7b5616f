// Reproduction, not a test (needs root and the machine's kubelet lock, ~1 min): the REAL kubelet
// (v1.36.3) hands a device a live pod holds to a second pod, when a PodResources List reaches it while
// an Allocate is in flight and a device-plugin pod has just gone inactive (the List rebuilds the
// kubelet's allocated set from its per-pod records, which do not have the reservation in flight yet;
// kubernetes/kubernetes pull request 137534). Why the agent keeps its own Lists out of allocations:
// device-plugin/src/podresources/allocation-window.ts.
// A stand-in device plugin with two devices; p0 gets one; p0 is deleted and p1 admitted at once (p0
// still terminating, so p1 gets the other); p1's Allocate is held until p0 is gone, and the agent's
// PodResources watcher is asked to List then; then p2 is offered both devices and gets p1's (the
// stand-in prefers the device handed out last, to show the effect: the agent's own preference
// picks the lower ID, so half the time). With --window the stand-in and the watcher share the
// agent's AllocationWindow, as the agent's pools and watcher do: the List waits for the Allocate.
//   node --experimental-transform-types --import ./test/sysfs/ts-hooks.mjs test/soak/kubelet-double-grant.ts [--window]
// Prints REPRODUCED (both pods hold one device, as PodResources lists them) or "not reproduced".
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startControlPlane } from '../cluster/control-plane.js';
import { DEVICE_PLUGIN_DIR, startKubelet } from '../cluster/kubelet.js';
import { client } from '../bench/api.js';
import { PoolServer } from '../../device-plugin/src/plugin/server.js';
import { registerWithKubelet } from '../../device-plugin/src/kubelet/register.js';
import { silentLogger } from '../../device-plugin/src/log.js';
import { loadPodResourcesApi } from '../../proto/load.js';
import { createMetrics } from '../../device-plugin/src/metrics.js';
import { AllocationWindow } from '../../device-plugin/src/podresources/allocation-window.js';
import { PodResourcesWatcher } from '../../device-plugin/src/podresources/client.js';
import type { ListPodResourcesResponse__Output } from '../../proto/generated/podresources/v1/ListPodResourcesResponse.js';

const RES = 'example.com/dev';
const say = (m: string): void => void process.stderr.write(`[repro] ${m}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const cp = await startControlPlane({});
const kubelet = await startKubelet(cp).catch(async (e: unknown) => { await cp.stop(); throw e; });
const api = client(cp);
let server: PoolServer | undefined;
const stopWatcher = new AbortController();
let watching: Promise<void> | undefined;
try {
  const window = process.argv.includes('--window') ? new AllocationWindow() : undefined;
  say(window ? 'with the allocation window' : 'without the allocation window');
  const allocs: { ids: string[] }[] = [];
  const offered: string[][] = [];
  let hold: { reached: () => void; release: Promise<void> } | undefined;
  let lastHanded = '';
  server = new PoolServer(join(DEVICE_PLUGIN_DIR, 'repro.sock'), {
    devices: () => [{ ID: 'dev-a', health: 'Healthy' }, { ID: 'dev-b', health: 'Healthy' }],
    handlers: {
      GetPreferredAllocation: (call, cb) => {
        const end = window?.begin('GetPreferredAllocation');
        void (window?.listsDone() ?? Promise.resolve()).then(() => {
          const avail = call.request.containerRequests[0]?.availableDeviceIDs ?? [];
          offered.push([...avail].sort());
          // Prefer the device handed out last when offered (shows the effect); else the first.
          const pick = avail.includes(lastHanded) ? lastHanded : [...avail].sort()[0]!;
          cb(null, { containerResponses: [{ deviceIDs: [pick] }] });
          end?.();
        });
      },
      Allocate: (call, cb) => {
        const end = window?.begin('Allocate');
        const ids = call.request.containerRequests.flatMap((c) => c.devicesIds);
        allocs.push({ ids });
        lastHanded = ids[0] ?? '';
        say(`Allocate ${ids.join(',')}${hold ? ' (held)' : ''}`);
        const answer = (): void => {
          cb(null, { containerResponses: [{ envs: { DEV: ids.join(',') } }] });
          end?.();
        };
        const h = hold;
        hold = undefined;
        if (h) {
          h.reached();
          void h.release.then(answer);
        } else answer();
      },
    },
  }, silentLogger());
  await server.start();
  await registerWithKubelet({ kubeletSocket: join(DEVICE_PLUGIN_DIR, 'kubelet.sock'), endpoint: 'repro.sock', resourceName: RES });
  for (let i = 0; ; i++) {
    const n = await api('GET', '/api/v1/nodes/127.0.0.1') as { status: { allocatable: Record<string, string> } };
    if (n.status.allocatable[RES] === '2') break;
    if (i > 120) throw new Error('node never advertised 2 devices');
    await sleep(250);
  }
  const pod = (name: string): unknown => ({
    apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'default' },
    spec: { nodeName: '127.0.0.1', automountServiceAccountToken: false, terminationGracePeriodSeconds: 1, tolerations: [{ operator: 'Exists' }], containers: [{ name: 'c', image: 'example.invalid/x:1', resources: { limits: { [RES]: '1' } } }] },
  });
  const phase = async (name: string): Promise<string | undefined> => {
    try { return ((await api('GET', `/api/v1/namespaces/default/pods/${name}`)) as { status?: { phase?: string } }).status?.phase ?? 'Pending'; } catch { return undefined; }
  };
  const until = async (what: string, f: () => Promise<boolean>): Promise<void> => {
    for (let i = 0; !(await f()); i++) { if (i > 600) throw new Error(`timed out: ${what}`); await sleep(100); }
  };
  const metrics = createMetrics();
  const listed = async (): Promise<number> => (await metrics.podResourcesLists.get()).values.reduce((n, v) => n + v.value, 0);
  const watcher = new PodResourcesWatcher({ socket: kubelet.podResourcesSocket, logger: silentLogger(), metrics, resourceNames: () => new Set([RES]), onChange: () => undefined, intervalMs: 3_600_000, minGapMs: 0, afterAllocateMs: 0, ...(window ? { window } : {}) });
  watching = watcher.run(stopWatcher.signal);
  const list = async (): Promise<Record<string, string[]>> => {
    const c = new (loadPodResourcesApi().v1.PodResourcesLister)(`unix://${kubelet.podResourcesSocket}`, grpc.credentials.createInsecure());
    try {
      const r = await new Promise<ListPodResourcesResponse__Output>((res, rej) => c.List({}, (e, x) => (e || !x ? rej(e ?? new Error('empty')) : res(x))));
      return Object.fromEntries(r.podResources.map((p) => [p.name, p.containers.flatMap((ct) => ct.devices.filter((d) => d.resourceName === RES).flatMap((d) => d.deviceIds))]));
    } finally { c.close(); }
  };

  await api('POST', '/api/v1/namespaces/default/pods', pod('p0'));
  await until('p0 Running', async () => (await phase('p0')) === 'Running');
  say(`p0 Running; PodResources ${JSON.stringify(await list())}`);

  // p1 is admitted while p0 is still terminating (active): p0's device stays reserved then.
  let reached!: () => void;
  const atAllocate = new Promise<void>((r) => (reached = r));
  let release!: () => void;
  hold = { reached, release: new Promise<void>((r) => (release = r)) };
  await api('DELETE', '/api/v1/namespaces/default/pods/p0');
  await api('POST', '/api/v1/namespaces/default/pods', pod('p1'));
  await atAllocate;
  say('p1 Allocate in flight; waiting for p0 to be gone');
  await until('p0 gone', async () => (await phase('p0')) === undefined);
  // The agent's watcher Lists now (as it does 300 ms after an Allocate, or every 5 s): p0 is
  // inactive, so the kubelet rebuilds its allocated set from its per-pod records, which do not have
  // p1's reservation in flight yet. With the window the List waits for the Allocate answer.
  const before = await listed();
  watcher.kick(0);
  await sleep(1500);
  say(`watcher Lists during p1's Allocate: ${(await listed()) - before}; holders ${JSON.stringify([...watcher.holders()])}`);
  release();
  await until('the watcher listed', async () => (await listed()) > before);
  await until('p1 Running', async () => (await phase('p1')) === 'Running');
  say(`p1 Running; PodResources ${JSON.stringify(await list())}`);

  await api('POST', '/api/v1/namespaces/default/pods', pod('p2'));
  await until('p2 Running or Failed', async () => ['Running', 'Failed'].includes((await phase('p2')) ?? ''));
  const held = await list();
  say(`p2 ${await phase('p2')}; PodResources ${JSON.stringify(held)}`);
  say(`GetPreferredAllocation offered: ${JSON.stringify(offered)}; Allocate calls: ${JSON.stringify(allocs.map((a) => a.ids))}`);
  const p1 = held.p1 ?? [];
  const p2 = held.p2 ?? [];
  const both = p1.filter((d) => p2.includes(d));
  console.log(both.length ? `REPRODUCED: p1 and p2 both hold ${both.join(',')} (p1 ${p1}, p2 ${p2}); the kubelet offered p2 ${JSON.stringify(offered.at(-1))}` : `not reproduced: p1 ${p1}, p2 ${p2}; offered to p2 ${JSON.stringify(offered.at(-1))}`);
} finally {
  stopWatcher.abort();
  await watching;
  await server?.stop(false);
  await kubelet.stop().catch(() => undefined);
  await cp.stop().catch(() => undefined);
}
