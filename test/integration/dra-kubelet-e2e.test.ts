// The DRA driver against a REAL kubelet (on the fake CRI runtime, registered to a private real control
// plane with the real kube-scheduler): the kubelet finds our registration socket in
// /var/lib/kubelet/plugins_registry and registers driver virtualio.dev; the scheduler allocates a
// claim from the ResourceSlices the driver published; the kubelet calls our NodePrepareResources
// before the pod's containers start and the runtime's recorded container config carries our CDI
// device; deleting the pod makes the kubelet call NodeUnprepareResources; a kubelet restart
// registers the driver again (and the slices it wiped come back). A NIC VF claim with VF network
// settings (opaque parameters) gets them on the PF of the fake kernel (through the `ip` stand-in, run
// as the agent runs iproute2) and they are restored after the pod; a bad setting keeps the pod from
// starting, with the reason in its events. Needs root (the kubelet's folders
// are fixed); without root the suite is reported as skipped, never as passed.
import { jest } from '@jest/globals';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadKubeConfig } from '../../device-plugin/src/kube/adapter.js';
import { silentLogger } from '../../device-plugin/src/log.js';
import type { PoolPlan, Slice } from '../../device-plugin/src/model.js';
import { deviceClassFor, draDeviceName } from '../../device-plugin/src/dra/devices.js';
import { DraDriver } from '../../device-plugin/src/dra/driver.js';
import { claimReader, KubeResourceSliceStore, nodeUidReader } from '../../device-plugin/src/dra/kube.js';
import { execIpCli, execIpLink } from '../../device-plugin/src/carving/ip-link.js';
import { startControlPlane, REPO_ROOT, type ControlPlane } from '../cluster/control-plane.js';
import { FakeKernel, intel82599 } from '../sysfs/kernel.js';
import { findPf, readNetlinkOps, vfStates } from '../sysfs/netlink.js';
import { canRunKubelet, kubeletSkipReason, startKubelet, type Kubelet } from '../cluster/kubelet.js';
import { eventually, kubectlOk, untaintedNode } from '../support/cluster.js';

jest.setTimeout(240_000);

const NODE = '127.0.0.1';
const suite = canRunKubelet() ? describe : describe.skip;

const pool: PoolPlan = { name: 'gpu-pt', resourceName: 'virtualio.dev/gpu-pt', class: 'GPU', mode: 'Passthrough', consumption: 'HostDevice', frontEnd: 'DRA', devices: [{ pciAddress: '0000:3b:00.0' }] };
const gpu: Slice = { id: '0000:3b:00.0', pool: 'gpu-pt', resourceName: pool.resourceName, kind: 'Function', parent: '0000:3b:00.0', pciAddress: '0000:3b:00.0', iommuGroup: 60, numaNode: 0, deviceNodes: ['/dev/vfio/60'], health: 'Healthy' };
/** An 82599 PF (ixgbe, netdev eno49) with 2 VFs in the fake kernel, served as a DRA pool. */
const PF = '0000:81:00.0';
const nicPool: PoolPlan = { name: 'nic-vfs', resourceName: 'virtualio.dev/nic-vfs', class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', frontEnd: 'DRA', devices: [{ pciAddress: PF }] };
const nicVf = (i: number): Slice => ({ id: `0000:81:10.${2 * i}`, pool: 'nic-vfs', resourceName: nicPool.resourceName, kind: 'VF', parent: PF, pciAddress: `0000:81:10.${2 * i}`, index: i, pfNetdev: 'eno49', iommuGroup: 80 + i, numaNode: 0, deviceNodes: [`/dev/vfio/${80 + i}`], health: 'Healthy' });

let cp: ControlPlane;
let kubelet: Kubelet;
let driver: DraDriver;
let base: string;
const ctl = new AbortController();
let running: Promise<void>;

const kubectl = (args: string[], input?: string): Promise<string> => kubectlOk(args, { input, kubeconfig: cp.kubeconfig, binDir: cp.binDir });

/** The last lines of a log file that match `re` (empty when the file is missing). */
function logTail(file: string | undefined, re: RegExp, n = 30): string {
  try {
    return readFileSync(file ?? '', 'utf8').split('\n').filter((l) => re.test(l)).slice(-n).join('\n');
  } catch {
    return '';
  }
}

/** What a stuck pod needs explained: its status, its claim, the events, the scheduler, the kubelet and the driver. */
async function podDiagnostics(pod: string, claim: string): Promise<string> {
  const get = (args: string[]) => kubectl(args).catch((err: unknown) => String(err));
  return [
    `--- pod ---\n${await get(['get', 'pod', pod, '-o', 'yaml'])}`,
    `--- claim ---\n${await get(['get', 'resourceclaim', claim, '-o', 'yaml'])}`,
    `--- node taints ---\n${await get(['get', 'node', NODE, '-o', 'jsonpath={.spec.taints}'])}`,
    `--- events ---\n${await get(['get', 'events', '-A'])}`,
    `--- driver --- registration=${JSON.stringify(driver.registration)} calls=${JSON.stringify(driver.calls)}`,
    `--- kube-scheduler log tail ---\n${logTail(cp.logs['kube-scheduler'], /./)}`,
    `--- kubelet log tail ---\n${logTail(kubelet.logs.kubelet, /dra|DRA|claim|virtualio|plugin/)}`,
  ].join('\n');
}

suite(`a real kubelet prepares claims through the DRA driver${kubeletSkipReason()}`, () => {
  beforeAll(async () => {
    cp = await startControlPlane({ scheduler: true });
    kubelet = await startKubelet(cp);
    // The API server's TaintNodesByCondition admission taints the new Node not-ready and no node
    // lifecycle controller runs here to lift it; the scheduler (which must allocate the claim) would
    // otherwise place nothing. The kubelet reports Ready, so lift it as that controller would.
    // Verified, not fire-and-forget: a pod left Pending on this taint never reaches the kubelet.
    await untaintedNode(kubectl, NODE);
    // The driver's folder and checkpoint live under the machine's kubelet root: start from nothing.
    rmSync(join(kubelet.rootDir, 'plugins/virtualio.dev'), { recursive: true, force: true });
    base = mkdtempSync(join(tmpdir(), 'vio-dra-kubelet-'));
    const k = await FakeKernel.create(join(base, 'sys'), join(base, 'dev'));
    await k.addFunction(intel82599(PF, { netdev: 'eno49', totalVFs: 8 }));
    await k.write(`bus/pci/devices/${PF}/sriov_numvfs`, '2');
    // The driver runs the `ip` stand-in as the agent runs iproute2 (execFile), through a wrapper that
    // tells it the tree (jest's process.env is not the one child processes inherit).
    writeFileSync(join(base, 'ip'), `#!/bin/sh\nVIO_FAKE_SYSFS_ROOT=${join(base, 'sys')} exec ${join(REPO_ROOT, 'test/sysfs/ip')} "$@"\n`, { mode: 0o755 });
    const kc = loadKubeConfig(cp.kubeconfig);
    driver = new DraDriver({
      nodeName: NODE, kubeletDir: kubelet.rootDir, cdiDir: join(base, 'cdi'), sysfsRoot: join(base, 'sys'),
      getClaim: claimReader(kc), store: new KubeResourceSliceStore(kc, NODE), nodeUid: nodeUidReader(kc, NODE),
      // A long re-list period: slices the kubelet wipes at its restart must come back through the
      // re-registration, not the timer.
      logger: silentLogger(), resyncMs: 600_000, socketCheckMs: 200,
      vfNetwork: execIpLink(execIpCli(join(base, 'ip'))),
    });
    driver.update([pool], [gpu], { devices: [{ pciAddress: '0000:3b:00.0', vendorID: '10de', deviceID: '2231', numaNode: 0 }] });
    running = driver.run(ctl.signal);
    await kubectl(['apply', '--server-side', '-f', '-'], JSON.stringify(deviceClassFor('gpu-pt')));
  }, 20 * 60_000);

  afterAll(async () => {
    ctl.abort();
    await running;
    await kubelet?.stop();
    await cp?.stop();
    if (base) rmSync(base, { recursive: true, force: true });
    if (kubelet) rmSync(join(kubelet.rootDir, 'plugins/virtualio.dev'), { recursive: true, force: true });
  });

  test('the kubelet registers the driver from plugins_registry', async () => {
    await eventually('registration', async () => (driver.registration?.registered ? true : undefined), 60_000, 100);
    expect(existsSync('/var/lib/kubelet/plugins_registry/virtualio.dev-reg.sock')).toBe(true);
    expect(driver.draSocket).toBe('/var/lib/kubelet/plugins/virtualio.dev/dra.sock');
  });

  test('the published slice is on the Node (owned by it) and the scheduler allocates it to a pod\'s claim', async () => {
    const slices = await eventually('our ResourceSlice', async () => {
      const l = JSON.parse(await kubectl(['get', 'resourceslices', '--field-selector', `spec.nodeName=${NODE},spec.driver=virtualio.dev`, '-o', 'json']));
      return l.items.length === 1 ? l.items : undefined;
    }, 60_000, 200);
    expect(slices[0].metadata.ownerReferences[0]).toMatchObject({ kind: 'Node', name: NODE });
    const claim = { apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name: 'vm1-gpu', namespace: 'default' }, spec: { devices: { requests: [{ name: 'gpu', exactly: { deviceClassName: 'gpu-pt.virtualio.dev' } }] } } };
    const pod = {
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'virt-launcher-vm1-dra', namespace: 'default' },
      spec: {
        resourceClaims: [{ name: 'gpu', resourceClaimName: 'vm1-gpu' }],
        containers: [{ name: 'compute', image: 'example.invalid/virt-launcher:1', resources: { claims: [{ name: 'gpu' }] } }],
      },
    };
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [claim, pod] }));
    await eventually('the pod to run', async () => {
      const p = JSON.parse(await kubectl(['get', 'pod', 'virt-launcher-vm1-dra', '-o', 'json']));
      return p.status?.phase === 'Running' ? true : undefined;
    }, 120_000, 250).catch(async (err: unknown) => {
      throw new Error(`${String(err)}\n${await podDiagnostics('virt-launcher-vm1-dra', 'vm1-gpu')}`, { cause: err });
    });
    const c = JSON.parse(await kubectl(['get', 'resourceclaim', 'vm1-gpu', '-o', 'json']));
    expect(c.status.allocation.devices.results).toEqual([{ request: 'gpu', driver: 'virtualio.dev', pool: `${NODE}/gpu-pt`, device: draDeviceName(gpu) }]);
  });

  test('the kubelet called NodePrepareResources and the runtime got our CDI device; the metadata file is in place', async () => {
    expect(driver.calls.prepare).toBeGreaterThanOrEqual(1);
    const uid = JSON.parse(await kubectl(['get', 'resourceclaim', 'vm1-gpu', '-o', 'json'])).metadata.uid as string;
    const rec = kubelet.createdContainers().find((r) => r.podName === 'virt-launcher-vm1-dra' && r.container === 'compute');
    expect(rec?.cdiDevices).toEqual([{ name: `virtualio.dev/claim=${uid}-${draDeviceName(gpu)}` }]);
    expect(driver.preparedSliceIds()).toEqual(new Set([gpu.id]));
    const spec = JSON.parse(readFileSync(join(base, 'cdi', `virtualio.dev-claim_${uid}.json`), 'utf8'));
    const mount = spec.devices[0].containerEdits.mounts[0];
    expect(mount.containerPath).toBe('/var/run/kubernetes.io/dra-device-attributes/resourceclaims/vm1-gpu/gpu/virtualio.dev-metadata.json');
    const meta = JSON.parse(readFileSync(mount.hostPath, 'utf8'));
    expect(meta.requests[0].devices[0].attributes['resource.kubernetes.io/pciBusID']).toEqual({ string: gpu.pciAddress });
    // The kubelet's own DRA state names the claim while it is prepared: what the driver reads before it
    // forgets a prepared claim as stale.
    expect(readFileSync(join(kubelet.rootDir, 'dra_manager_state'), 'utf8')).toContain(uid);
  });

  test('the health stream: a prepared device that turns Unhealthy shows in the pod status, and recovers', async () => {
    type Status = { containerStatuses?: { name: string; allocatedResourcesStatus?: { name: string; resources?: { resourceID: string; health?: string }[] }[] }[] };
    const health = async (): Promise<string | undefined> => {
      const p = JSON.parse(await kubectl(['get', 'pod', 'virt-launcher-vm1-dra', '-o', 'json'])) as { status: Status };
      const res = (p.status.containerStatuses ?? []).flatMap((c) => c.allocatedResourcesStatus ?? []).flatMap((a) => a.resources ?? []);
      return res.find((r) => r.resourceID.includes(draDeviceName(gpu)))?.health;
    };
    const inventory = { devices: [{ pciAddress: gpu.pciAddress!, vendorID: '10de', deviceID: '2231', numaNode: 0 }] };
    driver.update([pool], [{ ...gpu, health: 'Unhealthy', reason: 'function 0000:3b:00.0 is bound to nvidia, expected vfio-pci' }], inventory);
    await eventually('Unhealthy in the pod status', async () => ((await health()) === 'Unhealthy' ? true : undefined), 60_000, 250);
    driver.update([pool], [gpu], inventory);
    await eventually('Healthy again in the pod status', async () => ((await health()) === 'Healthy' ? true : undefined), 60_000, 250);
  });

  test('a slice deleted behind the driver\'s back is written again at once (watch, not the 10-minute re-list)', async () => {
    const sel = `spec.nodeName=${NODE},spec.driver=virtualio.dev`;
    const before = await eventually('our ResourceSlice', async () => {
      const l = JSON.parse(await kubectl(['get', 'resourceslices', '--field-selector', sel, '-o', 'json']));
      return l.items.length === 1 ? l.items[0] : undefined;
    }, 30_000, 200);
    await kubectl(['delete', 'resourceslice', before.metadata.name]);
    // 60 s on a loaded 2-core machine still tells the watch from the 10-minute re-list by an order of magnitude.
    const back = await eventually('the slice back', async () => {
      const l = JSON.parse(await kubectl(['get', 'resourceslices', '--field-selector', sel, '-o', 'json']));
      return l.items.length === 1 && l.items[0].metadata.uid !== before.metadata.uid ? l.items[0] : undefined;
    }, 60_000, 200);
    expect(back.spec.pool.generation).toBeGreaterThan(before.spec.pool.generation);
  });

  test('a kubelet restart registers the driver again and the slices it wiped come back', async () => {
    type RS = { metadata: { uid: string }; spec: { pool: { generation: number } } };
    const ours = async (): Promise<RS[]> => JSON.parse(await kubectl(['get', 'resourceslices', '--field-selector', `spec.nodeName=${NODE},spec.driver=virtualio.dev`, '-o', 'json'])).items as RS[];
    const before = await eventually('our ResourceSlice', async () => {
      const l = await ours();
      return l.length === 1 ? l[0] : undefined;
    }, 30_000, 200);
    expect(before.spec.pool.generation).toBeGreaterThan(0);
    driver.registration = undefined;
    await kubelet.restart();
    await eventually('registration after the restart', async () => (driver.registration?.registered ? true : undefined), 60_000, 100);
    // The kubelet wipes this node's slices from a goroutine its DRA manager starts (retrying failed
    // deletes after 1 s, 2 s, 4 s, ...), while its plugin watcher registers the driver on its own
    // (here ≈0.3 s after the start): on a loaded machine the registration can come first. Waiting
    // for "one slice" could then read the old slice before the wipe; waiting for a new object
    // (another uid) proves it was wiped and written again.
    const back = await eventually('our ResourceSlice wiped by the kubelet and written again', async () => {
      const l = await ours();
      return l.length === 1 && l[0]!.metadata.uid !== before.metadata.uid ? l[0] : undefined;
    }, 60_000, 200).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- kubelet log tail ---\n${logTail(kubelet.logs.kubelet, /dra|DRA|ResourceSlice|virtualio.dev-reg/)}`, { cause: err });
    });
    // Written again, not merely left alone: a higher generation than the one wiped.
    expect(back.spec.pool.generation).toBeGreaterThan(before.spec.pool.generation);
  });

  test('deleting the pod makes the kubelet unprepare the claim: files and checkpoint entry gone', async () => {
    const uid = JSON.parse(await kubectl(['get', 'resourceclaim', 'vm1-gpu', '-o', 'json'])).metadata.uid as string;
    await kubectl(['delete', 'pod', 'virt-launcher-vm1-dra', '--wait=false']);
    await eventually('NodeUnprepareResources', async () => (driver.calls.unprepare > 0 && driver.preparedSliceIds().size === 0 ? true : undefined), 90_000, 250);
    expect(existsSync(join(base, 'cdi', `virtualio.dev-claim_${uid}.json`))).toBe(false);
    await eventually('the claim gone from the kubelet\'s DRA state', async () => (readFileSync(join(kubelet.rootDir, 'dra_manager_state'), 'utf8').includes(uid) ? undefined : true), 30_000, 250);
  });

  test('a firstAvailable claim: the container that names the request gets the CDI device', async () => {
    // KubeVirt's virt-launcher names the request (gpus[].requestName); with firstAvailable the
    // allocation result says `gpu/passthrough`, and the kubelet matches the container's request
    // against the requestNames prepare answers. vm1-gpu keeps its device allocated (no ResourceClaim
    // controller runs here): a second GPU is published for this claim.
    const gpu2: Slice = { ...gpu, id: '0000:3c:00.0', parent: '0000:3c:00.0', pciAddress: '0000:3c:00.0', iommuGroup: 61, deviceNodes: ['/dev/vfio/61'] };
    driver.update([{ ...pool, devices: [...pool.devices, { pciAddress: gpu2.pciAddress! }] }], [gpu, gpu2], {
      devices: [gpu, gpu2].map((g) => ({ pciAddress: g.pciAddress!, vendorID: '10de', deviceID: '2231', numaNode: 0 })),
    });
    const claim = {
      apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name: 'vm2-gpu', namespace: 'default' },
      spec: { devices: { requests: [{ name: 'gpu', firstAvailable: [{ name: 'passthrough', deviceClassName: 'gpu-pt.virtualio.dev' }] }] } },
    };
    const pod = {
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'virt-launcher-vm2-dra', namespace: 'default' },
      spec: {
        resourceClaims: [{ name: 'gpu', resourceClaimName: 'vm2-gpu' }],
        containers: [{ name: 'compute', image: 'example.invalid/virt-launcher:1', resources: { claims: [{ name: 'gpu', request: 'gpu' }] } }],
      },
    };
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [claim, pod] }));
    await eventually('the pod to run', async () => {
      const p = JSON.parse(await kubectl(['get', 'pod', 'virt-launcher-vm2-dra', '-o', 'json']));
      return p.status?.phase === 'Running' ? true : undefined;
    }, 120_000, 250).catch(async (err: unknown) => {
      throw new Error(`${String(err)}\n${await podDiagnostics('virt-launcher-vm2-dra', 'vm2-gpu')}`, { cause: err });
    });
    const c = JSON.parse(await kubectl(['get', 'resourceclaim', 'vm2-gpu', '-o', 'json']));
    expect(c.status.allocation.devices.results).toEqual([{ request: 'gpu/passthrough', driver: 'virtualio.dev', pool: `${NODE}/gpu-pt`, device: draDeviceName(gpu2) }]);
    const rec = kubelet.createdContainers().find((r) => r.podName === 'virt-launcher-vm2-dra' && r.container === 'compute');
    expect(rec?.cdiDevices).toEqual([{ name: `virtualio.dev/claim=${c.metadata.uid}-${draDeviceName(gpu2)}` }]);
    const spec = JSON.parse(readFileSync(join(base, 'cdi', `virtualio.dev-claim_${c.metadata.uid}.json`), 'utf8'));
    expect(spec.devices[0].containerEdits.mounts[0].containerPath).toBe('/var/run/kubernetes.io/dra-device-attributes/resourceclaims/vm2-gpu/gpu/virtualio.dev-metadata.json');
    await kubectl(['delete', 'pod', 'virt-launcher-vm2-dra', '--wait=false']);
    await eventually('NodeUnprepareResources', async () => (driver.preparedSliceIds().size === 0 ? true : undefined), 90_000, 250);
  });
  describe('NIC VFs with per-claim network settings', () => {
    const sys = (): string => join(base, 'sys');
    const vfOf = (i: number) => vfStates(sys(), findPf(sys(), 'eno49'))[i]!;
    const params = (o: Record<string, unknown>) => ({ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VfNetworkConfig', ...o });
    const objects = (name: string, p: Record<string, unknown>) => [
      {
        apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name, namespace: 'default' },
        spec: { devices: { requests: [{ name: 'nic', exactly: { deviceClassName: 'nic-vfs.virtualio.dev' } }], config: [{ requests: ['nic'], opaque: { driver: 'virtualio.dev', parameters: params(p) } }] } },
      },
      {
        apiVersion: 'v1', kind: 'Pod', metadata: { name: `virt-launcher-${name}`, namespace: 'default' },
        spec: { resourceClaims: [{ name: 'nic', resourceClaimName: name }], containers: [{ name: 'compute', image: 'example.invalid/virt-launcher:1', resources: { claims: [{ name: 'nic' }] } }] },
      },
    ];

    beforeAll(async () => {
      const gpu2: Slice = { ...gpu, id: '0000:3c:00.0', parent: '0000:3c:00.0', pciAddress: '0000:3c:00.0', iommuGroup: 61, deviceNodes: ['/dev/vfio/61'] };
      driver.update([{ ...pool, devices: [...pool.devices, { pciAddress: gpu2.pciAddress! }] }, nicPool], [gpu, gpu2, nicVf(0), nicVf(1)], {
        devices: [...[gpu, gpu2].map((g) => ({ pciAddress: g.pciAddress!, vendorID: '10de', deviceID: '2231', numaNode: 0 })), { pciAddress: PF, vendorID: '8086', deviceID: '10fb', numaNode: 0 }],
      });
      await kubectl(['apply', '--server-side', '-f', '-'], JSON.stringify(deviceClassFor('nic-vfs')));
    });

    test('the kubelet prepares a VF claim with a MAC and a VLAN: the PF\'s VF carries them while the pod runs, and loses them after', async () => {
      await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects('vm3-nic', { mac: '02:00:5e:00:03:01', vlan: 300, qos: 2, spoofCheck: true, trust: false }) }));
      await eventually('the pod to run', async () => {
        const p = JSON.parse(await kubectl(['get', 'pod', 'virt-launcher-vm3-nic', '-o', 'json']));
        return p.status?.phase === 'Running' ? true : undefined;
      }, 120_000, 250).catch(async (err: unknown) => {
        throw new Error(`${String(err)}\n${await podDiagnostics('virt-launcher-vm3-nic', 'vm3-nic')}`, { cause: err });
      });
      const c = JSON.parse(await kubectl(['get', 'resourceclaim', 'vm3-nic', '-o', 'json']));
      const dev = c.status.allocation.devices.results[0].device as string;
      const i = [nicVf(0), nicVf(1)].findIndex((v) => draDeviceName(v) === dev);
      expect(i).toBeGreaterThanOrEqual(0);
      // The scheduler copied the claim's config into the allocation, and the driver applied it on the PF.
      expect(c.status.allocation.devices.config).toEqual([expect.objectContaining({ source: 'FromClaim', requests: ['nic'] })]);
      expect(vfOf(i)).toMatchObject({ mac: '02:00:5e:00:03:01', vlan: 300, qos: 2 });
      expect(vfOf(1 - i)).toMatchObject({ mac: '00:00:00:00:00:00', vlan: 0 });
      await kubectl(['delete', 'pod', 'virt-launcher-vm3-nic', '--wait=false']);
      // The restore reads the VF back before it drops its record: wait for both.
      await eventually('the VF settings restored after the pod', async () => (vfOf(i).vlan === 0 && vfOf(i).mac === '00:00:00:00:00:00' && driver.vfNet?.all().length === 0 ? true : undefined), 90_000, 250);
      expect(vfOf(i)).toMatchObject({ qos: 0, spoofchk: true, trust: false });
    });

    test('a VF setting the kernel cannot take keeps the pod from starting, and its events say why', async () => {
      const ops = readNetlinkOps(sys()).length;
      await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects('vm4-nic', { vlan: 4095 }) }));
      const msg = await eventually('the prepare error in the pod\'s events', async () => {
        const ev = JSON.parse(await kubectl(['get', 'events', '-n', 'default', '--field-selector', 'involvedObject.name=virt-launcher-vm4-nic', '-o', 'json'])) as { items: { reason: string; message: string }[] };
        return ev.items.find((e) => /vlan 4095 must be/.test(e.message));
      }, 120_000, 500).catch(async (err: unknown) => {
        throw new Error(`${String(err)}\n${await podDiagnostics('virt-launcher-vm4-nic', 'vm4-nic')}`, { cause: err });
      });
      expect(msg.message).toMatch(/ResourceClaim default\/vm4-nic: config #0 for request nic: vlan 4095 must be a whole number from 0 \(none\) to 4094/);
      const p = JSON.parse(await kubectl(['get', 'pod', 'virt-launcher-vm4-nic', '-o', 'json']));
      expect(p.status.phase).toBe('Pending');
      expect(readNetlinkOps(sys())).toHaveLength(ops); // refused before anything reached the kernel
      await kubectl(['delete', 'pod', 'virt-launcher-vm4-nic', '--wait=false']);
    });
  });
});
