// Our DRA prepare against KubeVirt's own virt-launcher code: the agent's driver prepares three claims
// (a NIC VF claimed directly, a passthrough GPU and an mdev vGPU claimed through templates), the
// metadata files it writes are laid out exactly where its CDI specs mount them in the container,
// and KubeVirt v1.9.0's DRA host-device builders (pkg/virt-launcher/virtwrap/device/hostdevice/dra,
// reading through pkg/dra) turn them into the libvirt host devices a VM gets: PCI host devices
// with managed='no' (vfio-pci binding is ours) for the VF and the GPU, an mdev for the vGPU.
// Harness: test/conformance/kubevirt-hostdev.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { silentLogger } from '../../device-plugin/src/log.js';
import type { PoolPlan, Slice } from '../../device-plugin/src/model.js';
import { draDeviceName, resourcePoolName } from '../../device-plugin/src/dra/devices.js';
import { DraDriver } from '../../device-plugin/src/dra/driver.js';
import { cdiSpecPath, METADATA_CONTAINER_DIR, POD_CLAIM_NAME_ANNOTATION, type ClaimObject } from '../../device-plugin/src/dra/prepare.js';
import type { ResourceSliceStore } from '../../device-plugin/src/dra/publisher.js';
import { ensureConformance, runKubevirtHostdev } from '../conformance/harness.js';

const NODE = 'node-a';
const nic: PoolPlan = { name: 'cx6', resourceName: 'virtualio.dev/cx6', class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', frontEnd: 'DRA', count: 4, devices: [{ pciAddress: '0000:81:00.0' }] };
const gpu: PoolPlan = { name: 'a5000', resourceName: 'virtualio.dev/a5000', class: 'GPU', mode: 'Passthrough', consumption: 'HostDevice', frontEnd: 'DRA', devices: [{ pciAddress: '0000:3b:00.0' }] };
const vgpu: PoolPlan = { name: 'a16', resourceName: 'virtualio.dev/a16', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', frontEnd: 'DRA', count: 2, mdevType: 'nvidia-754', devices: [{ pciAddress: '0000:08:00.4' }] };
const UUID = '6f2a3c56-0a4f-5b49-9c1d-4a3f1b2c3d4e';
const slices: Slice[] = [
  { id: '0000:81:00.2', pool: 'cx6', resourceName: nic.resourceName, kind: 'VF', parent: '0000:81:00.0', pciAddress: '0000:81:00.2', index: 0, iommuGroup: 60, deviceNodes: ['/dev/vfio/60'], health: 'Healthy' },
  { id: '0000:3b:00.0', pool: 'a5000', resourceName: gpu.resourceName, kind: 'Function', parent: '0000:3b:00.0', pciAddress: '0000:3b:00.0', iommuGroup: 30, deviceNodes: ['/dev/vfio/30'], health: 'Healthy' },
  { id: UUID, pool: 'a16', resourceName: vgpu.resourceName, kind: 'Mdev', parent: '0000:08:00.4', mdevUuid: UUID, iommuGroup: 101, deviceNodes: ['/dev/vfio/101'], health: 'Healthy' },
];

function claim(name: string, uid: string, request: string, pool: PoolPlan, s: Slice, podClaimName?: string): ClaimObject {
  return {
    metadata: { name, namespace: 'vms', uid, ...(podClaimName ? { annotations: { [POD_CLAIM_NAME_ANNOTATION]: podClaimName } } : {}) },
    status: { allocation: { devices: { results: [{ request, driver: 'virtualio.dev', pool: resourcePoolName(NODE, pool.name), device: draDeviceName(s) }] } } },
  };
}

const noStore: ResourceSliceStore = { list: async () => [], create: async () => undefined, update: async () => undefined, remove: async () => undefined };

let bin: string;
let dir: string;
beforeAll(() => {
  bin = ensureConformance('kubevirt-hostdev')['kubevirt-hostdev'];
  dir = mkdtempSync(join(tmpdir(), 'vio-kv-dra-'));
}, 20 * 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('KubeVirt builds a PCI host device for a VF and a GPU and an mdev for a vGPU from our metadata files', async () => {
  const claims = new Map<string, ClaimObject>([
    ['vms/vm1-nic', claim('vm1-nic', 'u-nic', 'nic', nic, slices[0]!)],
    // Claims made from a VMI's resourceClaimTemplateName get a generated name and the pod's claim name.
    ['vms/virt-launcher-vm1-gpu-x7k2p', claim('virt-launcher-vm1-gpu-x7k2p', 'u-gpu', 'gpu', gpu, slices[1]!, 'gpu')],
    ['vms/virt-launcher-vm1-vgpu-q9w3e', claim('virt-launcher-vm1-vgpu-q9w3e', 'u-vgpu', 'vgpu', vgpu, slices[2]!, 'vgpu')],
  ]);
  const driver = new DraDriver({
    nodeName: NODE, kubeletDir: join(dir, 'kubelet'), cdiDir: join(dir, 'cdi'), sysfsRoot: join(dir, 'sys'),
    getClaim: async (ns, name) => claims.get(`${ns}/${name}`), store: noStore, logger: silentLogger(),
  });
  driver.update([nic, gpu, vgpu], slices, { devices: [] });
  // Running, as in the agent: the driver reads its prepared-claims checkpoint before it prepares.
  const ctl = new AbortController();
  const running = driver.run(ctl.signal);
  await new Promise((r) => setTimeout(r, 200));
  const container = join(dir, 'container', 'dra-device-attributes');
  for (const [key, c] of claims) {
    const r = await driver.prepare({ namespace: 'vms', name: key.split('/')[1]!, uid: c.metadata.uid! });
    expect(r.error).toBe('');
    // What the runtime does with our CDI spec: bind each metadata file at its container path.
    const spec = JSON.parse(readFileSync(cdiSpecPath(join(dir, 'cdi'), c.metadata.uid!), 'utf8'));
    for (const d of spec.devices) {
      for (const m of d.containerEdits.mounts ?? []) {
        const target = join(container, relative(METADATA_CONTAINER_DIR, m.containerPath));
        mkdirSync(dirname(target), { recursive: true });
        copyFileSync(m.hostPath, target);
      }
    }
  }
  const vmi = {
    spec: {
      resourceClaims: [
        { name: 'nic', resourceClaimName: 'vm1-nic' },
        { name: 'gpu', resourceClaimTemplateName: 'gpu-passthrough' },
        { name: 'vgpu', resourceClaimTemplateName: 'a16-vgpu' },
      ],
      domain: {
        devices: {
          gpus: [{ name: 'gpu0', claimName: 'gpu', requestName: 'gpu' }, { name: 'vgpu0', claimName: 'vgpu', requestName: 'vgpu' }],
          hostDevices: [{ name: 'nic0', claimName: 'nic', requestName: 'nic' }],
        },
      },
    },
  };
  const [res] = await runKubevirtHostdev(bin, [{ vmi, env: {}, draBasePath: container }]);
  expect(res?.dra).toBeDefined();
  const pick = (l: { devices?: { type: string; managed: string; pciAddress?: string; mdevUUID?: string; alias?: string }[]; error?: string } | undefined) => {
    if (!l?.devices) throw new Error(`KubeVirt refused: ${l?.error ?? 'no result'}\nwarnings: ${JSON.stringify(res?.warnings)}`);
    return l.devices.map((d) => ({ type: d.type, managed: d.managed, alias: d.alias, ...(d.pciAddress ? { pciAddress: d.pciAddress } : {}), ...(d.mdevUUID ? { mdevUUID: d.mdevUUID } : {}) }));
  };
  expect(pick(res?.dra?.hostDevices)).toEqual([{ type: 'pci', managed: 'no', alias: 'dra-hostdevice-nic0', pciAddress: '0000:81:00.2' }]);
  const gpus = pick(res?.dra?.gpus);
  expect(gpus).toEqual(expect.arrayContaining([
    expect.objectContaining({ type: 'pci', managed: 'no', pciAddress: '0000:3b:00.0' }),
    expect.objectContaining({ type: 'mdev', mdevUUID: UUID }),
  ]));
  expect(gpus).toHaveLength(2);
  ctl.abort();
  await running;
});
