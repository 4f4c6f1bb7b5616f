import type { PoolAck, VirtualIONodeStatus } from '../../../crds/generated/types.js';
import { planEntryDigest } from '../../../operator/src/controllers/plan/ack.js';
import { silentLogger } from '../log.js';
import { AckWriter, ackOfStatus, type AckPort } from './ack.js';
import { StatusWriter, type KubeAgentPort } from './cluster.js';

const entry = (count: number) => ({
  name: 'vfs', resourceName: 'virtualio.dev/vfs', class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', policy: 'NUMAAligned',
  count, vfDriver: 'vfio-pci', devices: [{ pciAddress: '0000:81:00.0' }],
});
const status = (count: number, state: 'Ready' | 'Carving' = 'Ready'): VirtualIONodeStatus => ({
  localPlan: { pools: [entry(count)] }, pools: [{ name: 'vfs', state, capacity: count }],
});

async function until(what: string, fn: () => boolean): Promise<void> {
  const end = Date.now() + 10_000;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('the ack of a status: the served entries digested with the shared function, and their states', () => {
  expect(ackOfStatus(status(4, 'Carving'))).toEqual([{ name: 'vfs', digest: planEntryDigest(entry(4)), state: 'Carving' }]);
  expect(ackOfStatus({})).toEqual([]);
});

test('the ack writer applies at once, owned by the Node, only when the ack changed, and retries a failed write', async () => {
  const writes: { pools: PoolAck[]; uid: string | undefined }[] = [];
  let fail = 0;
  const kube: AckPort = {
    getNodeUid: () => Promise.resolve('uid-1'),
    applyAck: (_name, pools, uid) => {
      if (fail > 0) {
        fail--;
        return Promise.reject(new Error('apiserver unavailable'));
      }
      writes.push({ pools, uid });
      return Promise.resolve();
    },
  };
  const ac = new AbortController();
  const w = new AckWriter(kube, 'n1', silentLogger(), ac.signal);
  expect(w.submit(status(4, 'Carving'))).toBe(true);
  expect(w.submit(status(4, 'Carving'))).toBe(false);
  await until('first ack', () => writes.length === 1);
  expect(writes[0]).toEqual({ pools: [{ name: 'vfs', digest: planEntryDigest(entry(4)), state: 'Carving' }], uid: 'uid-1' });
  w.submit(status(4, 'Ready'));
  await until('second ack', () => writes.length === 2);
  // A status that differs in what the ack does not carry (counts) writes nothing.
  expect(w.submit({ ...status(4, 'Ready'), pools: [{ name: 'vfs', state: 'Ready', capacity: 99 }] })).toBe(false);
  await new Promise((r) => setTimeout(r, 50));
  expect(writes).toHaveLength(2);
  fail = 1;
  w.submit(status(8, 'Ready'));
  await until('failed once', () => w.failing);
  // While acks fail, a new one does not hold the status write back.
  expect(w.submit(status(8, 'Carving'))).toBe(false);
  w.submit(status(8, 'Ready'));
  await until('retried ack', () => writes.length === 3);
  expect(w.failing).toBe(false);
  expect(writes[2]!.pools[0]!.digest).toBe(planEntryDigest(entry(8)));
  expect(w.writes).toBe(3);
  ac.abort();
}, 15_000);

test('a status submitted with deferMs is written no sooner, with only the newest status', async () => {
  const written: { at: number; status: VirtualIONodeStatus }[] = [];
  const kube = { applyStatus: (_n: string, status: VirtualIONodeStatus) => {
    written.push({ at: Date.now(), status });
    return Promise.resolve();
  } } as unknown as KubeAgentPort;
  const ac = new AbortController();
  const w = new StatusWriter(kube, 'n1', silentLogger(), ac.signal, 10);
  const t0 = Date.now();
  w.submit(status(4, 'Carving'), 300);
  w.submit(status(4, 'Ready'));
  await until('status written', () => written.length === 1);
  expect(written[0]!.at - t0).toBeGreaterThanOrEqual(290);
  expect(written[0]!.status.pools?.[0]?.state).toBe('Ready');
  w.submit(status(8, 'Ready'));
  await until('next status written', () => written.length === 2);
  expect(written[1]!.at - written[0]!.at).toBeLessThan(250);
  ac.abort();
});
