// NVIDIA's host tools, for the two steps of vendor-VFIO vGPU that are not plain sysfs writes the
// nvidia driver takes: enabling/disabling VFs (the driver has no sriov_configure, so a write to
// sriov_numvfs is refused; NVIDIA's `sriov-manage` moves the PF to pci-pf-stub and back around it)
// and the GPU's mixed-size vGPU mode (`nvidia-smi vgpu -i <GPU> -shm 1`). Both ship with the vGPU
// host driver; the agent looks for them where the driver installs them (or the GPU operator's driver
// container mounts them) and runs them with a timeout.
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import type { SysfsWrite } from '../model.js';
import type { ToolRunner } from './apply.js';

/** Where the vGPU host driver puts sriov-manage: a host install, or the GPU operator's driver root. */
export const SRIOV_MANAGE_PATHS = ['/usr/lib/nvidia/sriov-manage', '/run/nvidia/driver/usr/lib/nvidia/sriov-manage'];
/** Where nvidia-smi is: a host install, or the GPU operator's driver root. */
export const NVIDIA_SMI_PATHS = ['/usr/bin/nvidia-smi', '/run/nvidia/driver/usr/bin/nvidia-smi'];

export interface NvidiaToolOptions {
  /** sriov-manage to run (`VIO_NVIDIA_SRIOV_MANAGE`); default: the first executable of {@link SRIOV_MANAGE_PATHS}. */
  sriovManage?: string;
  /** nvidia-smi to run (`VIO_NVIDIA_SMI`); default: the first executable of {@link NVIDIA_SMI_PATHS}. */
  nvidiaSmi?: string;
  /** Where to look for the tools when no path is given (default {@link SRIOV_MANAGE_PATHS}, {@link NVIDIA_SMI_PATHS}). */
  searchPaths?: { sriovManage?: readonly string[]; nvidiaSmi?: readonly string[] };
  /** Per run (default 120 s: sriov-manage rebinds the GPU's driver). */
  timeoutMs?: number;
}

function executable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The tool to run: the explicit path, else the first executable candidate, else undefined. */
export function findTool(explicit: string | undefined, candidates: readonly string[]): string | undefined {
  if (explicit) return explicit;
  return candidates.find(executable);
}

/** The PF a tool write is for: `bus/pci/devices/<PF>[/…]`. */
function pfOf(w: SysfsWrite): string {
  const m = /^bus\/pci\/devices\/([^/]+)/.exec(w.path);
  if (!m) throw new Error(`${w.path}: not a PCI device path`);
  return m[1] as string;
}

/** The command line a tool write stands for (pure, for logs and tests). */
export function toolCommand(w: SysfsWrite): { tool: 'sriov-manage' | 'nvidia-smi'; args: string[] } {
  const pf = pfOf(w);
  if (w.tool === 'sriov-manage') return { tool: 'sriov-manage', args: [w.value.trim() === '0' ? '-d' : '-e', pf] };
  if (w.tool === 'nvidia-smi-shm') return { tool: 'nvidia-smi', args: ['vgpu', '-i', pf, '-shm', w.value.trim() === '0' ? '0' : '1'] };
  if (w.tool === 'nvidia-smi-mig') {
    const v = w.value.trim();
    if (v === 'mode=1' || v === 'mode=0') return { tool: 'nvidia-smi', args: ['-i', pf, '-mig', v.slice(5)] };
    if (v.startsWith('cgi=')) return { tool: 'nvidia-smi', args: ['mig', '-i', pf, '-cgi', v.slice(4)] };
    if (v === 'dgi') return { tool: 'nvidia-smi', args: ['mig', '-i', pf, '-dgi'] };
    throw new Error(`${w.path}: bad nvidia-smi-mig value ${JSON.stringify(w.value)}`);
  }
  throw new Error(`${w.path}: no tool`);
}

/** Runs tool writes with NVIDIA's tools; a missing tool or a failed run rejects with the reason. */
export function nvidiaToolRunner(o: NvidiaToolOptions = {}): ToolRunner {
  return async (w) => {
    const { tool, args } = toolCommand(w);
    const smPaths = o.searchPaths?.sriovManage ?? SRIOV_MANAGE_PATHS;
    const smiPaths = o.searchPaths?.nvidiaSmi ?? NVIDIA_SMI_PATHS;
    const path = tool === 'sriov-manage' ? findTool(o.sriovManage, smPaths) : findTool(o.nvidiaSmi, smiPaths);
    if (!path && w.tool === 'nvidia-smi-shm' && w.value.trim() !== '0') {
      // Mixed-size mode is left to the host: the chart gives the agent no nvidia-smi, and an admin
      // sets the mode once per boot (nvidia-smi vgpu -i <GPU> -shm 1, after sriov-manage -e). No
      // sysfs file shows the mode, but the driver does: with it off, once one vGPU exists the VFs list
      // only types of that framebuffer size, and the planner says so (carving/vgpu.ts).
      return;
    }
    if (!path) {
      const where = (tool === 'sriov-manage' ? smPaths : smiPaths).join(', ');
      const env = tool === 'sriov-manage' ? 'VIO_NVIDIA_SRIOV_MANAGE' : 'VIO_NVIDIA_SMI';
      throw Object.assign(new Error(`NVIDIA's ${tool} not found (looked at ${where}): install the NVIDIA vGPU host driver on the node, or set ${env}`), { code: 'ENOENT' });
    }
    await new Promise<void>((resolve, reject) => {
      execFile(path, args, { timeout: o.timeoutMs ?? 120_000 }, (err, stdout, stderr) => {
        if (!err) return resolve();
        const said = `${String(stderr).trim()} ${String(stdout).trim()}`.trim();
        reject(Object.assign(new Error(`${tool} ${args.join(' ')} failed: ${said || err.message}`), { code: err.killed ? 'ETIMEDOUT' : 'EIO' }));
      });
    });
  };
}
