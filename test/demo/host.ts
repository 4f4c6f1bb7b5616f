// The demo's simulated host: the sysfs of a real HP server with an NVIDIA A16 (the umockdev
// recording test/fixtures/real-sysfs/vgpu-node.umockdev, which also holds two Intel 82599
// ports and a Samsung 970 EVO Plus NVMe), plus a simulated Mellanox ConnectX-6 (two ports) and a
// Samsung PM1733 NVMe with SR-IOV added by the fake kernel's builders into the same tree, and a
// second, simulated GPU for the on-demand step (test/demo/ondemand.ts): A16 vGPU types on the
// function itself sharing 16 GB of framebuffer (2Q/4Q/8Q/16Q), so a claim's type decides how much of
// it a VM takes (the fake kernel's mdevGpuMixed).
//
// The recording lacks one thing the A16's vGPU host driver shows on a live system: the
// `mdev_supported_types` folder of each virtual function (the three mdevs it does record point at
// `../mdev_supported_types/nvidia-7xx`, which was not captured). `addA16MdevTypes` adds them with
// the type ids the recording's mdevs use; as on Ampere SR-IOV vGPU, every VF hosts at most one
// vGPU, so a VF that already carries an mdev shows 0 available instances.
//
// Node runs this file directly (type stripping): it imports only Node built-ins and `.ts` files
// whose own imports are built-ins or types.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, readlink, realpath, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { FakeKernel, connectX6, mdevGpuMixed, nvmeWithSriov } from '../sysfs/kernel.ts';
import { loadUmockdev } from '../sysfs/umockdev.ts';

const run = promisify(execFile);

/** The A16 vGPU type ids seen in the recording's mdevs. */
export const A16_MDEV_TYPES = ['nvidia-746', 'nvidia-751', 'nvidia-754'] as const;

/** PCI addresses of what the demo host holds (recorded and simulated). */
export const HOST = {
  a16Pf: '0000:08:00.0',
  x520: ['0000:04:00.0', '0000:04:00.1'],
  evo: '0000:05:00.0',
  cx6: ['0000:86:00.0', '0000:86:00.1'],
  pm1733: '0000:87:00.0',
  /** The simulated GPU the on-demand pool carves on. */
  ondemandGpu: '0000:0a:00.0',
} as const;

/** What {@link buildDemoHost} made. */
export interface DemoHost {
  /** Plays `/sys`. */
  sys: string;
  /** Plays `/dev`. */
  dev: string;
  /** Devices in the tree: recorded PCI functions plus the simulated ones. */
  pciFunctions: number;
  /** A16 virtual functions that got `mdev_supported_types`. */
  a16Vfs: string[];
  /** The recording's mdevs, removed so the demo starts from a free A16. */
  removedMdevs: string[];
}

/**
 * Adds `mdev_supported_types/<id>/{name,available_instances,device_api,description,create,devices/}`
 * to every A16 VF (physfn link, vendor 10de, device 25b6) of the tree, links each VF into
 * `class/mdev_bus`, and links recorded mdevs into their type's `devices/`. Returns the VFs.
 */
export async function addA16MdevTypes(sys: string): Promise<string[]> {
  const vfs: string[] = [];
  const devices = path.join(sys, 'bus/pci/devices');
  for (const bdf of (await readdir(devices)).sort()) {
    const dir = path.join(devices, bdf);
    const vendor = (await readFile(path.join(dir, 'vendor'), 'utf8').catch(() => '')).trim();
    const device = (await readFile(path.join(dir, 'device'), 'utf8').catch(() => '')).trim();
    if (vendor !== '0x10de' || device !== '0x25b6' || !existsSync(path.join(dir, 'physfn'))) continue;
    const entries = await readdir(dir);
    const mdevs: { uuid: string; type: string }[] = [];
    for (const e of entries) {
      if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(e)) continue;
      const t = await readlink(path.join(dir, e, 'mdev_type')).catch(() => undefined);
      if (t) mdevs.push({ uuid: e, type: path.basename(t) });
    }
    for (const id of A16_MDEV_TYPES) {
      const td = path.join(dir, 'mdev_supported_types', id);
      await mkdir(path.join(td, 'devices'), { recursive: true });
      await writeFile(path.join(td, 'name'), `GRID A16 ${id.replace('nvidia-', 'type ')}\n`);
      await writeFile(path.join(td, 'available_instances'), mdevs.length > 0 ? '0\n' : '1\n');
      await writeFile(path.join(td, 'device_api'), 'vfio-pci\n');
      await writeFile(path.join(td, 'description'), 'num_heads=4, frl_config=60, framebuffer=4096M, max_resolution=5120x2880, max_instance=1\n');
      await writeFile(path.join(td, 'create'), '');
      for (const m of mdevs.filter((x) => x.type === id)) {
        await symlink(path.join('..', '..', '..', m.uuid), path.join(td, 'devices', m.uuid)).catch(() => undefined);
      }
    }
    const at = path.join(sys, 'class/mdev_bus', bdf);
    await mkdir(path.dirname(at), { recursive: true });
    await rm(at, { force: true });
    await symlink(path.relative(path.dirname(at), await realpath(dir)), at);
    vfs.push(bdf);
  }
  return vfs;
}

/**
 * Removes the vGPUs the recording holds (`echo 1 > <mdev>/remove`, through the fake kernel), so the
 * demo starts from an A16 handed to virtualio with every VF free. The recording omits the
 * write-only `remove` attribute that every mdev has; it is added first. Returns the removed UUIDs.
 */
export async function removeRecordedMdevs(sys: string, kernel: FakeKernel): Promise<string[]> {
  const dir = path.join(sys, 'bus/mdev/devices');
  const removed: string[] = [];
  for (const uuid of (await readdir(dir).catch(() => [] as string[])).sort()) {
    const parent = path.dirname(await realpath(path.join(dir, uuid)));
    await writeFile(path.join(dir, uuid, 'remove'), '');
    await kernel.write(`bus/mdev/devices/${uuid}/remove`, '1');
    // The VF hosts no vGPU any more: every type is available on it again.
    for (const t of await readdir(path.join(parent, 'mdev_supported_types')).catch(() => [] as string[])) {
      await writeFile(path.join(parent, 'mdev_supported_types', t, 'available_instances'), '1\n');
    }
    removed.push(uuid);
  }
  return removed;
}

async function buildFresh(base: string, recording: string): Promise<DemoHost> {
  const sys = path.join(base, 'sys');
  const dev = path.join(base, 'dev');
  const loaded = await loadUmockdev(recording, sys, { devRoot: dev });
  const kernel = await FakeKernel.create(sys, dev);
  const a16Vfs = await addA16MdevTypes(sys);
  const removedMdevs = await removeRecordedMdevs(sys, kernel);
  const cx6 = connectX6(HOST.cx6[1], { netdev: 'ens2f1np1', totalVFs: 8, numaNode: 1 });
  const added = [
    connectX6(HOST.cx6[0], { netdev: 'ens2f0np0', totalVFs: 8, numaNode: 1 }),
    // Port 2's VFs follow port 1's (VF offset 9 from 0000:86:00.1), as on a dual-port ConnectX.
    { ...cx6, netdev: { name: 'ens2f1np1', operstate: 'up', address: '0c:42:a1:00:00:02' }, sriov: { totalVFs: 8, vfDevice: '101e', offset: 9, stride: 1 } },
    nvmeWithSriov(HOST.pm1733, { name: 'nvme1', serial: 'S4YNNE0R300917', totalVFs: 8, numaNode: 1 }),
    mdevGpuMixed(HOST.ondemandGpu, { numaNode: 0 }),
  ];
  for (const f of added) {
    if (existsSync(path.join(sys, 'bus/pci/devices', f.address))) throw new Error(`simulated device ${f.address} collides with a recorded one`);
    await kernel.addFunction(f);
  }
  // The recorded 82599 ports' VF driver (ixgbevf) is loaded on such a host; VFs bind to it until
  // the agent moves them to vfio-pci.
  await kernel.loadModule('ixgbevf');
  return { sys, dev, pciFunctions: loaded.pciDevices.length + added.length, a16Vfs, removedMdevs };
}

/**
 * A digest of the code that builds the tree (this file and the fake kernel's), so a cached tree is
 * rebuilt when that code changes rather than served stale.
 */
async function builderHash(): Promise<string> {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const h = createHash('sha256');
  for (const f of ['host.ts', '../sysfs/kernel.ts', '../sysfs/builders.ts', '../sysfs/umockdev.ts']) h.update(await readFile(path.join(here, f)));
  return h.digest('hex').slice(0, 12);
}

/**
 * Builds the host under `base` (`<base>/sys`, `<base>/dev`; both replaced when present) from the
 * recording at `recording`. With `cacheDir`, a pristine tree is built once per recording (size and
 * mtime) and version of the code that builds it, and copied (`cp -a`; every link in the tree is relative) on later runs. Throws when a
 * simulated device would collide with a recorded one.
 */
export async function buildDemoHost(base: string, recording: string, opts: { cacheDir?: string } = {}): Promise<DemoHost> {
  await rm(path.join(base, 'sys'), { recursive: true, force: true });
  await rm(path.join(base, 'dev'), { recursive: true, force: true });
  if (!opts.cacheDir) return buildFresh(base, recording);
  const st = await stat(recording);
  const key = `host-v2-${st.size}-${Math.round(st.mtimeMs)}-${await builderHash()}`;
  const cached = path.join(opts.cacheDir, key);
  if (!existsSync(path.join(cached, 'host.json'))) {
    await rm(cached, { recursive: true, force: true });
    const tmp = `${cached}.tmp-${process.pid}`;
    await rm(tmp, { recursive: true, force: true });
    const h = await buildFresh(tmp, recording);
    await writeFile(path.join(tmp, 'host.json'), JSON.stringify({ ...h, sys: undefined, dev: undefined }));
    await rename(tmp, cached).catch(async () => rm(tmp, { recursive: true, force: true }));
  }
  await mkdir(base, { recursive: true });
  await run('cp', ['-a', path.join(cached, 'sys'), path.join(cached, 'dev'), base]);
  const meta = JSON.parse(await readFile(path.join(cached, 'host.json'), 'utf8')) as Omit<DemoHost, 'sys' | 'dev'>;
  return { ...meta, sys: path.join(base, 'sys'), dev: path.join(base, 'dev') };
}
