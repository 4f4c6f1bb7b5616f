// The REAL agent process with --dra, in cluster mode on a fake sysfs kernel, with a REAL kubelet (fake
// CRI) and the real scheduler: a pool with frontEnd DRA is carved (GPU and its audio companion to
// vfio-pci) but served through DRA only — no extended resource on the Node, one device in a
// ResourceSlice instead; a pod's claim for the pool's DeviceClass is allocated by the scheduler and
// prepared by the agent when the kubelet asks, and the container config the runtime records carries
// the agent's CDI device. Needs root (the kubelet's folders are fixed); without root the suite is
// reported as skipped, never as passed.
import { jest } from '@jest/globals';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { deviceClassFor } from '../../device-plugin/src/dra/devices.js';
import { REPO_ROOT, startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import { DEVICE_PLUGIN_DIR, canRunKubelet, kubeletSkipReason, startKubelet, type Kubelet } from '../cluster/kubelet.js';
import { startAgent, type AgentProcess } from '../fakes/agent-process.js';
import { FakeKernel, gpuWithAudio } from '../sysfs/kernel.js';
import { startKernel, type KernelHandle } from '../sysfs/kernel-daemon.js';
import { eventually, kubectlOk } from '../support/cluster.js';

jest.setTimeout(240_000);

const NODE = '127.0.0.1';
const GPU_FN = '0000:3b:00.0';
const GPU_AUDIO = '0000:3b:00.1';
const suite = canRunKubelet() ? describe : describe.skip;

let cp: ControlPlane;
let kubelet: Kubelet;
let kernel: KernelHandle;
let agent: AgentProcess | undefined;
let base: string;

const kubectl = (args: string[], input?: string): Promise<string> => kubectlOk(args, { input, kubeconfig: cp.kubeconfig, binDir: cp.binDir });

const plan = {
  apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: NODE },
  spec: { pools: [{ name: 'gpu-dra', resourceName: 'virtualio.dev/gpu-dra', class: 'GPU', mode: 'Passthrough', consumption: 'HostDevice', frontEnd: 'DRA', devices: [{ pciAddress: GPU_FN }] }] },
};

suite(`the agent with --dra serves a pool through DRA to a real kubelet${kubeletSkipReason()}`, () => {
  beforeAll(async () => {
    cp = await startControlPlane({ scheduler: true });
    await kubectl(['apply', '--server-side', '-f', join(REPO_ROOT, 'crds')]);
    await kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd/virtualionodes.virtualio.dev']);
    kubelet = await startKubelet(cp);
    // TaintNodesByCondition taints the new Node not-ready and no node lifecycle controller runs here.
    await kubectl(['taint', 'node', NODE, 'node.kubernetes.io/not-ready-']).catch(() => '');
    // The driver's folder and checkpoint live under the machine's kubelet root: start from nothing.
    rmSync(join(kubelet.rootDir, 'plugins/virtualio.dev'), { recursive: true, force: true });
    base = mkdtempSync(join(tmpdir(), 'vio-dra-agent-'));
    const sys = join(base, 'sys');
    const dev = join(base, 'dev');
    const k = await FakeKernel.create(sys, dev);
    for (const f of gpuWithAudio(GPU_FN, GPU_AUDIO, { group: 61, numaNode: 0 })) await k.addFunction(f);
    kernel = await startKernel(sys, dev);
    await kubectl(['apply', '--server-side', '--field-manager=virtualio-operator', '-f', '-'], YAML.stringify(plan));
    await kubectl(['apply', '--server-side', '-f', '-'], JSON.stringify(deviceClassFor('gpu-dra')));
    mkdirSync(join(base, 'devinfo'));
    agent = await startAgent([
      '--node-name', NODE, '--kubeconfig', cp.kubeconfig, '--sysfs-root', sys, '--dev-root', dev,
      '--plugin-dir', DEVICE_PLUGIN_DIR, '--pod-resources-socket', kubelet.podResourcesSocket,
      '--devinfo-dir', join(base, 'devinfo'), '--cdi-dir', join(base, 'cdi'), '--metrics-address', '127.0.0.1:0',
      '--rescan-interval', '2s', '--dra', '--kubelet-dir', kubelet.rootDir,
    ]);
  }, 20 * 60_000);

  afterAll(async () => {
    await agent?.stop();
    await kubelet?.stop();
    await kernel?.stop();
    await cp?.stop();
    if (base) rmSync(base, { recursive: true, force: true });
    if (kubelet) rmSync(join(kubelet.rootDir, 'plugins/virtualio.dev'), { recursive: true, force: true });
  });

  test('the carved GPU is published as one DRA device, and not as an extended resource', async () => {
    const items = await eventually('our ResourceSlice with the GPU', async () => {
      const l = JSON.parse(await kubectl(['get', 'resourceslices', '--field-selector', `spec.nodeName=${NODE},spec.driver=virtualio.dev`, '-o', 'json']));
      // Published at once, tainted Unhealthy until carving has bound the GPU (and its audio function) to vfio-pci.
      return l.items.length === 1 && l.items[0].spec.devices.length === 1 && !l.items[0].spec.devices[0].taints ? l.items : undefined;
    }, 90_000, 250).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- agent ---\n${agent?.tail() ?? ''}`, { cause: err });
    });
    const d = items[0].spec.devices[0];
    expect(d.name).toBe('fn-0000-3b-00-0');
    expect(d.attributes['resource.kubernetes.io/pciBusID']).toEqual({ string: GPU_FN });
    expect(d.attributes.iommuGroup).toEqual({ int: 61 });
    const n = JSON.parse(await kubectl(['get', 'node', NODE, '-o', 'json']));
    expect(n.status.capacity['virtualio.dev/gpu-dra']).toBeUndefined();
    // The pool is Ready once the kubelet registered the DRA driver (no device plugin socket involved).
    const pool = await eventually('pool gpu-dra Ready in VirtualIONode status', async () => {
      const v = JSON.parse(await kubectl(['get', 'virtualionode', NODE, '-o', 'json'])) as { status?: { pools?: { name: string; state: string; registered: boolean; capacity: number }[] } };
      const p = v.status?.pools?.find((x) => x.name === 'gpu-dra');
      return p?.state === 'Ready' ? p : undefined;
    }, 60_000, 250);
    expect(pool).toMatchObject({ registered: true, capacity: 1 });
  });

  test('a pod with a claim runs; the agent prepared it and the runtime got its CDI device', async () => {
    const claim = { apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name: 'vm2-gpu', namespace: 'default' }, spec: { devices: { requests: [{ name: 'gpu', exactly: { deviceClassName: 'gpu-dra.virtualio.dev' } }] } } };
    const pod = {
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'virt-launcher-vm2-dra', namespace: 'default' },
      spec: { resourceClaims: [{ name: 'gpu', resourceClaimName: 'vm2-gpu' }], containers: [{ name: 'compute', image: 'example.invalid/virt-launcher:1', resources: { claims: [{ name: 'gpu' }] } }] },
    };
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [claim, pod] }));
    await eventually('the pod to run', async () => {
      const p = JSON.parse(await kubectl(['get', 'pod', 'virt-launcher-vm2-dra', '-o', 'json']));
      return p.status?.phase === 'Running' ? true : undefined;
    }, 90_000, 250).catch(async (err: unknown) => {
      const p = await kubectl(['get', 'pod', 'virt-launcher-vm2-dra', '-o', 'yaml']).catch(() => '');
      throw new Error(`${String(err)}\n--- pod ---\n${p}\n--- agent ---\n${agent?.tail() ?? ''}`, { cause: err });
    });
    const uid = JSON.parse(await kubectl(['get', 'resourceclaim', 'vm2-gpu', '-o', 'json'])).metadata.uid as string;
    const rec = kubelet.createdContainers().find((r) => r.podName === 'virt-launcher-vm2-dra' && r.container === 'compute');
    expect(rec?.cdiDevices).toEqual([{ name: `virtualio.dev/claim=${uid}-fn-0000-3b-00-0` }]);
    const spec = JSON.parse(readFileSync(join(base, 'cdi', `virtualio.dev-claim_${uid}.json`), 'utf8'));
    const nodes = spec.devices[0].containerEdits.deviceNodes.map((x: { path: string }) => x.path) as string[];
    expect(nodes.slice(0, 2)).toEqual(['/dev/vfio/vfio', '/dev/vfio/61']);
    expect(nodes.slice(2)).toEqual([expect.stringMatching(/^\/dev\/vfio\/devices\/vfio\d+$/)]); // its vfio cdev (number: bind order)
    const ckpt = JSON.parse(readFileSync(join(kubelet.rootDir, 'plugins/virtualio.dev/checkpoint.json'), 'utf8'));
    expect(ckpt.claims.map((c: { uid: string; devices: { sliceId: string }[] }) => [c.uid, c.devices.map((x) => x.sliceId)])).toEqual([[uid, [GPU_FN]]]);
  });

  test('the VirtualIONode status counts the prepared claim as an allocation of the pool, like a device-plugin one', async () => {
    type VN = { status?: { slices?: { id: string; allocation?: { namespace: string; pod: string } }[]; pools?: { name: string; allocated?: number }[] } };
    const vn = await eventually('the claim in VirtualIONode status', async () => {
      const v = JSON.parse(await kubectl(['get', 'virtualionode', NODE, '-o', 'json'])) as VN;
      return v.status?.pools?.find((p) => p.name === 'gpu-dra')?.allocated === 1 ? v : undefined;
    }, 60_000, 250);
    expect(vn.status?.slices?.find((x) => x.id === GPU_FN)?.allocation).toMatchObject({ namespace: 'default', pod: 'virt-launcher-vm2-dra' });
  });

  test('deleting the pod unprepares the claim, and the allocation leaves the status', async () => {
    const uid = JSON.parse(await kubectl(['get', 'resourceclaim', 'vm2-gpu', '-o', 'json'])).metadata.uid as string;
    await kubectl(['delete', 'pod', 'virt-launcher-vm2-dra', '--wait=false']);
    await eventually('the claim unprepared', async () => {
      const ckpt = JSON.parse(readFileSync(join(kubelet.rootDir, 'plugins/virtualio.dev/checkpoint.json'), 'utf8'));
      return ckpt.claims.length === 0 ? true : undefined;
    }, 90_000, 250);
    expect(() => readFileSync(join(base, 'cdi', `virtualio.dev-claim_${uid}.json`))).toThrow();
    await eventually('no allocation in VirtualIONode status', async () => {
      const v = JSON.parse(await kubectl(['get', 'virtualionode', NODE, '-o', 'json'])) as { status?: { pools?: { name: string; allocated?: number }[] } };
      return v.status?.pools?.find((p) => p.name === 'gpu-dra')?.allocated === 0 ? true : undefined;
    }, 60_000, 250);
  });
});
