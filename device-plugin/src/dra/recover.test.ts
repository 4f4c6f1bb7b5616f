// Re-learning a prepared claim from what prepare left on disk (recover.ts), for the cases the driver
// tests do not reach: metadata gone (the API server's allocated claim tells), a device no current
// slice maps (its attributes tell), and a CDI folder that does not exist.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { claimUidsOnDisk, relearnClaim } from './recover.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vio-dra-rec-'));
  mkdirSync(join(dir, 'cdi'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function spec(uid: string, devices: string[], mount?: string): void {
  writeFileSync(join(dir, 'cdi', `virtualio.dev-claim_${uid}.json`), JSON.stringify({
    cdiVersion: '0.5.0', kind: 'virtualio.dev/claim',
    devices: devices.map((d, i) => ({ name: `${uid}-${d}`, containerEdits: { deviceNodes: [], ...(i === 0 && mount ? { mounts: [{ hostPath: mount, containerPath: '/x', options: ['ro', 'bind'] }] } : {}) } })),
  }));
}

test('claimUidsOnDisk: our specs only; no folder, no claims', () => {
  spec('u1', ['fn-0000-3b-00-0']);
  writeFileSync(join(dir, 'cdi', 'nvidia.com-gpu.json'), '{}');
  expect(claimUidsOnDisk(join(dir, 'cdi'))).toEqual(['u1']);
  expect(claimUidsOnDisk(join(dir, 'missing'))).toEqual([]);
});

test('metadata gone: the claim as the API server shows it allocated here', () => {
  spec('u1', ['fn-0000-3b-00-0']);
  const c = relearnClaim('u1', join(dir, 'cdi'), join(dir, 'plugin'), (pool, device) => (pool === 'w1/gpu' && device === 'fn-0000-3b-00-0' ? { sliceId: '0000:3b:00.0', resourceName: 'virtualio.dev/gpu' } : undefined), {
    uid: 'u1', namespace: 'vms', name: 'c1', devices: [{ request: 'gpu', pool: 'w1/gpu', device: 'fn-0000-3b-00-0' }, { request: 'nic', pool: 'w1/nic', device: 'vf-0000-81-02-0' }], pods: [{ name: 'virt-launcher-a', uid: 'p' }],
  });
  // Only the devices the spec on disk has: the other one was never prepared here.
  expect(c).toEqual({ uid: 'u1', namespace: 'vms', name: 'c1', devices: [{ request: 'gpu', pool: 'w1/gpu', device: 'fn-0000-3b-00-0', sliceId: '0000:3b:00.0', cdiId: 'virtualio.dev/claim=u1-fn-0000-3b-00-0', resourceName: 'virtualio.dev/gpu' }], pods: ['virt-launcher-a'] });
});

test('a device no current slice maps: its slice ID from the metadata attributes (mdev UUID)', () => {
  const uuid = 'c22f6d4d-4ecc-5030-93a3-eb7f1a400ee2';
  const meta = join(dir, 'plugin', 'metadata', 'u2', 'gpu', 'virtualio.dev-metadata.json');
  mkdirSync(join(meta, '..'), { recursive: true });
  writeFileSync(meta, JSON.stringify({
    apiVersion: 'metadata.resource.k8s.io/v1alpha1', kind: 'DeviceMetadata', metadata: { name: 'c2', namespace: 'vms', uid: 'u2' }, podClaimName: 'gpu-claim',
    requests: [{ name: 'gpu', devices: [{ driver: 'virtualio.dev', pool: 'w1/vgpu', name: `mdev-${uuid}`, attributes: { mdevUUID: { string: uuid } } }] }],
  }));
  spec('u2', [`mdev-${uuid}`], meta);
  expect(relearnClaim('u2', join(dir, 'cdi'), join(dir, 'plugin'), () => undefined, undefined)).toEqual({
    uid: 'u2', namespace: 'vms', name: 'c2', podClaimName: 'gpu-claim',
    devices: [{ request: 'gpu', pool: 'w1/vgpu', device: `mdev-${uuid}`, sliceId: uuid, cdiId: `virtualio.dev/claim=u2-mdev-${uuid}` }],
  });
});

test('a spec device neither the metadata nor the API server place: refused with the reason', () => {
  spec('u3', ['fn-0000-3b-00-0']);
  expect(relearnClaim('u3', join(dir, 'cdi'), join(dir, 'plugin'), () => undefined, { uid: 'u3', namespace: 'vms', name: 'c3', devices: [], pods: [] }))
    .toBe('its CDI spec names device(s) fn-0000-3b-00-0 that neither its metadata nor the API server place in a pool');
});
