// What the chart-on-a-real-node suite (chart-real-node.test.ts) uses besides its cluster: the image
// build, the pool and the VM-shaped pod it installs, and readers of container logs and of what the
// kernel enforces on a process.
import { execFile } from 'node:child_process';
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../cluster/control-plane.js';
import type { RealNode } from '../node/node.js';

const run = promisify(execFile);

export const REPO = 'localhost/virtualio';
export const TAG_A = 'e2e-a';
export const TAG_B = 'e2e-b';
export const NIC = 'virtualio.dev/cx6';
export const ENV_NAME = 'PCI_RESOURCE_VIRTUALIO_DEV_CX6';
export const VM_POD = 'virt-launcher-vm1-x7k2p';

export interface Pod {
  metadata: { name: string; uid: string; creationTimestamp: string; labels?: Record<string, string>; deletionTimestamp?: string };
  spec: { nodeName?: string; schedulerName?: string; securityContext?: unknown; containers: { name: string; image: string; securityContext?: unknown }[] };
  status: {
    phase?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: { name: string; containerID?: string; restartCount: number; imageID?: string; image: string; state?: { running?: { startedAt: string } } }[];
  };
}
export const ready = (p: Pod) => p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

/**
 * The log of a pod's running container, read from the file the kubelet writes (CRI format) through a
 * descriptor opened now, so it stays readable after the pod is deleted and the file removed.
 */
export async function openLog(node: RealNode, pod: string, container = 'operator'): Promise<{ text(): string; close(): void }> {
  const list = JSON.parse(await node.crictl(['ps', '--name', `^${container}$`, '--label', `io.kubernetes.pod.name=${pod}`, '-o', 'json'])) as { containers: { id: string }[] };
  const id = list.containers[0]?.id;
  if (!id) throw new Error(`no container ${container} of pod ${pod}`);
  const logPath = (JSON.parse(await node.crictl(['inspect', id])) as { status: { logPath: string } }).status.logPath;
  const fd = openSync(logPath, 'r');
  return {
    text() {
      const buf = Buffer.alloc(fstatSync(fd).size);
      readSync(fd, buf, 0, buf.length, 0);
      // "<time> stdout|stderr F|P <line>"
      return buf.toString('utf8').split('\n').map((l) => l.split(' ').slice(3).join(' ')).join('\n');
    },
    close: () => closeSync(fd),
  };
}
/** The operator's JSON log lines (pino): message and epoch ms. */
export function parseLog(text: string): { msg: string; time: number }[] {
  return text.split('\n').flatMap((l) => {
    try {
      const o = JSON.parse(l) as { msg?: string; time?: string | number };
      return o.msg ? [{ msg: o.msg, time: typeof o.time === 'number' ? o.time : Date.parse(String(o.time)) }] : [];
    } catch {
      return [];
    }
  });
}
/** What the kernel enforces on a running container's main process. */
export function processFacts(pid: number): { uid: string; gid: string; capEff: string; capBnd: string; noNewPrivs: string; seccomp: string; rootReadOnly: boolean } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (k: string) => status.match(new RegExp(`^${k}:\\s*(.*)$`, 'm'))?.[1]?.trim() ?? '';
  const root = readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n').find((l) => l.split(' ')[4] === '/') ?? '';
  return {
    uid: field('Uid').split(/\s+/)[0]!, gid: field('Gid').split(/\s+/)[0]!, capEff: field('CapEff'), capBnd: field('CapBnd'),
    noNewPrivs: field('NoNewPrivs'), seccomp: field('Seccomp'), rootReadOnly: /(^|,)ro(,|$)/.test(root.split(' ')[5] ?? ''),
  };
}

/**
 * Builds the image `${REPO}:${tag}` labelled with `revision` into `${outDir}/${tag}.oci.tar` and
 * returns that path. The archive is the caller's own: the default one in the machine's cache is keyed
 * by image name only, so a run in another checkout building the same name replaces it, and a suite
 * that imports it minutes later (after waiting for the machine's kubelet lock) would run that other
 * checkout's code (how the agent upgrade test once failed: docs/design-decisions.md, "Agent upgrades without a capacity gap").
 */
export function buildImage(tag: string, revision: string, outDir: string): Promise<string> {
  const out = join(outDir, `${tag}.oci.tar`);
  return run('bash', [join(REPO_ROOT, 'scripts/build-image.sh'), '--name', `${REPO}:${tag}`, '--revision', revision, '--output', out, '--quiet'], {
    maxBuffer: 64 * 1024 * 1024,
  }).then(({ stdout, stderr }) => {
    for (const l of stderr.split('\n')) if (/^\[build-image\] (image|time)/.test(l)) console.log(l);
    return stdout.trim().split('\n').pop() ?? '';
  });
}

/** The org.opencontainers.image.revision label of the image in an OCI archive (as build-image.sh writes it). */
export async function archiveRevision(archive: string): Promise<string | undefined> {
  const member = async (name: string) => (await run('tar', ['-xOf', archive, name], { maxBuffer: 16 * 1024 * 1024 })).stdout;
  const blob = async (digest: string) => JSON.parse(await member(`blobs/${digest.replace(':', '/')}`)) as Record<string, unknown>;
  type Desc = { digest: string; platform?: { architecture?: string } };
  let desc = (JSON.parse(await member('index.json')) as { manifests: Desc[] }).manifests[0]!;
  let manifest = await blob(desc.digest) as { manifests?: Desc[]; config: { digest: string } };
  if (manifest.manifests) { // an index: the amd64 (or only) manifest
    desc = manifest.manifests.find((m) => m.platform?.architecture === 'amd64') ?? manifest.manifests[0]!;
    manifest = await blob(desc.digest) as typeof manifest;
  }
  const config = await blob(manifest.config.digest) as { config?: { Labels?: Record<string, string> } };
  return config.config?.Labels?.['org.opencontainers.image.revision'];
}

/**
 * A script for `node` inside the agent's container: runs `ip` and `nvme` by name, as the agent's
 * runners do with their defaults (carving/ip-link.ts, carving/nvme.ts: execFile of `ip` / `nvme`
 * found on PATH, without VIO_IP_CLI / VIO_NVME_CLI; the image ships the agent bundled, so its
 * modules cannot be imported one by one), and prints what they answered, as JSON ({@link AgentTools});
 * `ip -V`'s stderr too (a library it cannot find or read shows there).
 */
export const agentToolsProbe = [
  "const { execFileSync, spawnSync } = await import('node:child_process');",
  "const run = (file, args) => execFileSync(file, args, { encoding: 'utf8', timeout: 10000 });",
  "const direct = spawnSync('ip', ['-V'], { encoding: 'utf8' });",
  "console.log(JSON.stringify({ ip: run('ip', ['-V']).trim(), ipStderr: String(direct.stderr ?? direct.error).trim(),",
  "loopback: JSON.parse(run('ip', ['-json', 'link', 'show', 'dev', 'lo'])), nvme: run('nvme', ['version']).trim() }));",
].join(' ');
export interface AgentTools { ip: string; ipStderr: string; loopback: { ifname: string; link_type: string }[]; nvme: string }

export const pool = {
  apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice',
  metadata: { name: 'cx6' },
  spec: {
    class: 'NIC', resourceName: NIC,
    nodeSelector: { matchLabels: { 'virtualio.dev/nic': 'cx6' } },
    deviceSelector: { vendorIDs: ['15b3'], deviceIDs: ['101d'] },
    carving: { mode: 'SRIOV', count: 4 },
    kubevirt: { consumption: 'HostDevice' },
  },
};

export const vmScript = [
  "const fs = require('node:fs');",
  "const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.includes('PCI_RESOURCE')));",
  "console.log('VM-ENV ' + JSON.stringify(env));",
  "console.log('VM-DEV ' + JSON.stringify(fs.readdirSync('/dev/vfio', { recursive: true }).sort()));",
  'setInterval(() => {}, 3600000);',
].join(' ');
export const vmPod = () => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name: VM_POD, namespace: 'default', labels: { 'kubevirt.io': 'virt-launcher', 'vm.kubevirt.io/name': 'vm1' } },
  spec: {
    // No nodeName: the real scheduler places it by the extended resource.
    terminationGracePeriodSeconds: 1,
    containers: [{
      name: 'compute', image: `${REPO}:${TAG_A}`, imagePullPolicy: 'Never', args: ['-e', vmScript],
      resources: { limits: { [NIC]: '1', cpu: '50m', memory: '64Mi' } },
    }],
  },
});
