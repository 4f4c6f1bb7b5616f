// One simulated node with a ConnectX-6 for the agent process of an integration test: a fresh folder
// with the fake sysfs tree, the fake kernel daemon applying the agent's writes (the witness), the fake
// kubelet and fake PodResources. `agentArgs` gives the flags that point an agent at them; `stop`
// stops everything and removes the folder.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeKubelet, FakePodResources } from '../fakes/kubelet.js';
import { FakeKernel, connectX6 } from '../sysfs/kernel.js';
import { startKernel, type KernelHandle } from '../sysfs/kernel-daemon.js';

export interface NicNode {
  readonly dir: string;
  readonly kernel: KernelHandle;
  readonly kubelet: FakeKubelet;
  readonly podres: FakePodResources;
  /** Flags of an agent on this node: its sysfs and /dev, the kubelet's sockets, device-info and state folders. */
  agentArgs(): string[];
  stop(): Promise<void>;
}

export async function startNicNode(prefix: string, nic: { pciAddress: string; netdev: string; totalVFs: number; numaNode: number }): Promise<NicNode> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const sys = join(dir, 'sys');
  const dev = join(dir, 'dev');
  const k = await FakeKernel.create(sys, dev);
  await k.addFunction(connectX6(nic.pciAddress, { netdev: nic.netdev, totalVFs: nic.totalVFs, numaNode: nic.numaNode }));
  const kernel = await startKernel(sys, dev);
  const kubelet = await FakeKubelet.start(join(dir, 'device-plugins'));
  const podres = await FakePodResources.start(join(dir, 'pod-resources', 'kubelet.sock'));
  return {
    dir, kernel, kubelet, podres,
    agentArgs: () => [
      '--sysfs-root', sys, '--dev-root', dev, '--plugin-dir', kubelet.pluginDir, '--pod-resources-socket', podres.socket,
      '--devinfo-dir', join(dir, 'devinfo'), '--state-dir', join(dir, 'state'),
    ],
    stop: async () => {
      await kubelet.stop();
      await podres.stop();
      await kernel.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
