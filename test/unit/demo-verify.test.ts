// The demo's verdict comes from checks over what it observed, never from an assumption: a VM that
// holds no slice, got the wrong env, or could not start (no kubelet) makes it NOT OK.
import { renderSummary, verifyDemo, type DemoSummary } from '../demo/summary.js';

type Facts = Omit<DemoSummary, 'ok' | 'checks'>;

function good(): Facts {
  return {
    kubelet: true, node: '127.0.0.1', kubeconfig: '/k', kubectl: '/kubectl', runDir: '/run', seconds: 20, timings: {},
    metrics: { agent: 'http://127.0.0.1:9101/metrics', operator: 'http://127.0.0.1:9102/metrics', agentStatus: 'http://127.0.0.1:9101/status', prometheusConfig: '/run/prometheus.yml' },
    inventory: [{ pciAddress: '0000:86:00.0' }, { pciAddress: '0000:08:00.0' }],
    plan: [{ pool: 'cx6-vfs', devices: ['0000:86:00.0'] }, { pool: 'a16-vgpu', devices: ['0000:08:00.0'] }],
    pools: [
      { name: 'cx6-vfs', class: 'NIC', mode: 'SRIOV', resource: 'virtualio.dev/cx6-vfs', capacity: 8, allocatable: 8, allocated: 2, ready: 'True', nodeState: 'Ready', message: '', allocations: [] },
      { name: 'a16-vgpu', class: 'GPU', mode: 'Mediated', resource: 'virtualio.dev/a16-vgpu', capacity: 4, allocatable: 4, allocated: 1, ready: 'True', nodeState: 'Ready', message: '', allocations: [] },
    ],
    slices: [
      { id: '0000:86:00.2', pool: 'cx6-vfs', kind: 'VF', parent: '0000:86:00.0', health: 'Healthy', reason: '', vmi: 'vm-net', pod: 'virt-launcher-vm-net-1' },
      { id: '0000:86:00.3', pool: 'cx6-vfs', kind: 'VF', parent: '0000:86:00.0', health: 'Healthy', reason: '', vmi: 'vm-net', pod: 'virt-launcher-vm-net-1' },
      { id: 'c22f6d4d-4ecc-5030-93a3-eb7f1a400ee2', pool: 'a16-vgpu', kind: 'Mdev', parent: '0000:08:00.4', health: 'Healthy', reason: '', vmi: 'vm-vgpu', pod: 'virt-launcher-vm-vgpu-1' },
    ],
    vms: [
      {
        vm: 'vm-net', vmiUid: 'u1', pool: 'cx6-vfs', resource: 'virtualio.dev/cx6-vfs', requested: 2, pod: 'virt-launcher-vm-net-1', phase: 'Running',
        slices: ['0000:86:00.2', '0000:86:00.3'], env: { 'PCI_RESOURCE_VIRTUALIO_DEV_CX6-VFS': '0000:86:00.3,0000:86:00.2' },
        devices: ['/dev/vfio/vfio', '/dev/vfio/113', '/dev/vfio/114'],
      },
      {
        vm: 'vm-vgpu', vmiUid: 'u2', pool: 'a16-vgpu', resource: 'virtualio.dev/a16-vgpu', requested: 1, pod: 'virt-launcher-vm-vgpu-1', phase: 'Running',
        slices: ['c22f6d4d-4ecc-5030-93a3-eb7f1a400ee2'], env: { 'MDEV_PCI_RESOURCE_VIRTUALIO_DEV_A16-VGPU': 'c22f6d4d-4ecc-5030-93a3-eb7f1a400ee2' },
        devices: ['/dev/vfio/vfio', '/dev/vfio/109'],
      },
    ],
    ondemand: {
      pool: 'gpu-ondemand', gpu: '0000:0a:00.0', vm: 'vm-ondemand', pod: 'virt-launcher-vm-ondemand-1', claim: 'vm-ondemand-vgpu', mdevType: 'nvidia-747',
      device: 'mdev-3740c550-3290-5374-9338-60acd8d33d7c', uuid: '3740c550-3290-5374-9338-60acd8d33d7c', carved: 'True', phase: 'Running',
      whileRunning: { onBus: true, parent: '0000:0a:00.0', type: 'nvidia-747', listed: true, problems: [] },
      afterDelete: { onBus: false, listed: false, problems: [] },
      secondsToRunning: 12, secondsToRemoval: 5,
    },
  };
}
const MDEV = new Set(['a16-vgpu']);
const failed = (f: Facts) => verifyDemo(f, MDEV).filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`);

test('everything observed: every check holds', () => {
  const checks = verifyDemo(good(), MDEV);
  expect(checks.map((c) => [c.name, c.ok])).toEqual([['inventory', true], ['plan', true], ['capacity', true], ['health', true], ['kubelet', true], ['vms', true], ['ondemand', true]]);
  const text = renderSummary({ ok: true, checks, ...good() });
  expect(text).toContain('OK: every VM holds its slices');
  // Where to look: both metrics endpoints and the scrape configuration.
  expect(text).toContain('metrics   agent http://127.0.0.1:9101/metrics, operator http://127.0.0.1:9102/metrics');
  expect(text).toContain('scrape    /run/prometheus.yml');
});

test('no VM holds a slice: NOT OK, naming each VM', () => {
  const f = good();
  for (const v of f.vms) v.slices = [];
  expect(failed(f)).toEqual([expect.stringMatching(/^vms: vm-net: holds 0 of 2 slices.*; vm-vgpu: holds 0 of 1 slices/)]);
});

test('no kubelet: the VM checks fail as not verified, whatever else held', () => {
  const f = { ...good(), kubelet: false, vms: good().vms.map((v) => ({ ...v, slices: [], env: {}, devices: [], pod: '', phase: 'not started (no kubelet)' })) };
  expect(failed(f)).toEqual([
    'kubelet: not verified: no kubelet ran (it needs root), so no VM pod could start; run as root (sudo make demo)',
    'vms: not verified: no kubelet ran (it needs root), so no VM pod could start; run as root (sudo make demo)',
    'ondemand: not verified: no kubelet ran (it needs root), so no VM pod could start; run as root (sudo make demo)',
  ]);
  const checks = verifyDemo(f, MDEV);
  const text = renderSummary({ ok: checks.every((c) => c.ok), checks, ...f });
  expect(text).toContain('NOT OK: kubelet, vms, ondemand were not verified');
  expect(text).not.toContain('OK: every VM');
});

test.each<[string, (f: Facts) => void, string[]]>([
  ['the step did not run', (f) => { delete f.ondemand; }, ['ondemand: the on-demand step did not run']],
  ['the kernel still had the mdev after the VM was deleted', (f) => { f.ondemand!.afterDelete = { onBus: true, parent: '0000:0a:00.0', type: 'nvidia-747', listed: true, problems: [] }; }, ['ondemand: after vm-ondemand was deleted the kernel still had mdev 3740c550-3290-5374-9338-60acd8d33d7c']],
  ['a type other than the one asked for', (f) => { f.ondemand!.whileRunning!.type = 'nvidia-745'; }, ['ondemand: mdev 3740c550-3290-5374-9338-60acd8d33d7c was of type nvidia-745, the claim asked for nvidia-747']],
  ['an mdev the type does not list', (f) => { f.ondemand!.whileRunning = { onBus: true, parent: '0000:0a:00.0', type: 'nvidia-747', listed: false, problems: ["0000:0a:00.0's mdev_supported_types/nvidia-747/devices/ does not list it"] }; }, ["ondemand: 0000:0a:00.0's mdev_supported_types/nvidia-747/devices/ does not list it"]],
  ['the pod never ran', (f) => { Object.assign(f.ondemand!, { phase: 'Pending', carved: '', whileRunning: undefined, afterDelete: undefined, error: 'timed out' }); }, ['ondemand: timed out; pod virt-launcher-vm-ondemand-1 was Pending; claim vm-ondemand-vgpu had no Carved=True condition; while vm-ondemand ran, the kernel had no mdev 3740c550-3290-5374-9338-60acd8d33d7c; after vm-ondemand was deleted the kernel still had mdev 3740c550-3290-5374-9338-60acd8d33d7c']],
])('on demand, %s: NOT OK, saying what the kernel showed', (_, spoil, want) => {
  const f = good();
  spoil(f);
  expect(failed(f)).toEqual(want);
});

test.each<[string, (f: Facts) => void, RegExp]>([
  ['env for other slices', (f) => { (f.vms[0] as Facts['vms'][number]).env = { 'PCI_RESOURCE_VIRTUALIO_DEV_CX6-VFS': '0000:86:00.4' }; }, /^vms: vm-net: env PCI_RESOURCE_VIRTUALIO_DEV_CX6-VFS=0000:86:00.4 does not match/],
  ['mdev pool given the PCI variable', (f) => { (f.vms[1] as Facts['vms'][number]).env = { 'PCI_RESOURCE_VIRTUALIO_DEV_A16-VGPU': 'c22f6d4d-4ecc-5030-93a3-eb7f1a400ee2' }; }, /^vms: vm-vgpu: env \["PCI_RESOURCE_VIRTUALIO_DEV_A16-VGPU"\], want exactly MDEV_PCI_RESOURCE_VIRTUALIO_DEV_A16-VGPU/],
  ['a missing VFIO group node', (f) => { (f.vms[0] as Facts['vms'][number]).devices = ['/dev/vfio/vfio', '/dev/vfio/113']; }, /^vms: vm-net: 1 \/dev\/vfio\/<group> nodes for 2 slices/],
  ['pod not running', (f) => { (f.vms[0] as Facts['vms'][number]).phase = 'Pending'; }, /^vms: vm-net: pod virt-launcher-vm-net-1 is Pending/],
  ['node status does not name the VM', (f) => { (f.slices[0] as Facts['slices'][number]).vmi = ''; }, /^vms: vm-net: node status does not name vm-net on 0000:86:00.2/],
  ['a slice held twice', (f) => { (f.vms[1] as Facts['vms'][number]).slices = ['0000:86:00.2']; }, /a slice is held by two VMs/],
  ['an unhealthy slice', (f) => { f.slices[2] = { ...(f.slices[2] as Facts['slices'][number]), health: 'Unhealthy', reason: 'mdev gone' }; }, /^health: c22f6d4d-4ecc-5030-93a3-eb7f1a400ee2 \(a16-vgpu\) Unhealthy: mdev gone/],
  ['a pool not planned', (f) => { f.plan = f.plan.filter((p) => p.pool !== 'cx6-vfs'); }, /^plan: pool cx6-vfs is not planned on the node/],
  ['too little capacity', (f) => { (f.pools[0] as Facts['pools'][number]).capacity = 1; }, /^capacity: pool cx6-vfs: capacity 1, its VMs need 2/],
  ['no inventory', (f) => { f.inventory = []; }, /^inventory: the node reported no inventory/],
])('%s: NOT OK', (_name, spoil, want) => {
  const f = good();
  spoil(f);
  expect(failed(f).join(' | ')).toMatch(want);
});
