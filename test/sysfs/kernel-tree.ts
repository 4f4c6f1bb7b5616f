// Tree helpers of the fake kernel (kernel.ts): reading attributes the way the kernel's files read,
// listing, linking and touching inside the temp sysfs tree, and PCI address / WWN formats.
import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { KernelError } from './kernel-error.js';

export const BDF_RE = /^([0-9a-f]{4,5}):([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$/;
export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * An attribute's text, or undefined when it is absent or a FIFO. Tests put a FIFO in place of an
 * attribute to make the agent's write to it block for real; a plain read of it would park a libuv
 * thread in open(2) until some writer comes, which freezes this kernel's queue (and keeps the test
 * process from exiting). Opening with O_NONBLOCK returns at once, and a FIFO is left unread (reading
 * would consume a write meant for the test).
 */
export async function readAttr(p: string): Promise<string | undefined> {
  let fh;
  try {
    fh = await open(p, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    if ((await fh.stat()).isFIFO()) return undefined;
    return await fh.readFile('utf8');
  } catch {
    return undefined;
  } finally {
    await fh.close();
  }
}

export async function readTrim(p: string): Promise<string | undefined> {
  return (await readAttr(p))?.trim();
}

export async function list(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch {
    return [];
  }
}

export async function link(target: string, at: string): Promise<void> {
  await mkdir(path.dirname(at), { recursive: true });
  await rm(at, { force: true, recursive: false }).catch(() => undefined);
  await symlink(path.relative(path.dirname(at), target) || '.', at);
}

export async function touch(p: string, content = ''): Promise<void> {
  await mkdir(path.dirname(p), { recursive: true });
  if (!(await exists(p))) await writeFile(p, content);
}

/** `dddd:bb:dd.f` → routing ID parts. */
export function parseBdf(bdf: string): { domain: string; rid: number } {
  const m = BDF_RE.exec(bdf);
  if (!m) throw new KernelError('EINVAL', `bad PCI address ${JSON.stringify(bdf)}`);
  const bus = parseInt(m[2] as string, 16);
  const dev = parseInt(m[3] as string, 16);
  const fn = parseInt(m[4] as string, 10);
  return { domain: m[1] as string, rid: (bus << 8) | (dev << 3) | fn };
}

export function formatBdf(domain: string, rid: number): string {
  const bus = (rid >> 8) & 0xff;
  const dev = (rid >> 3) & 0x1f;
  const fn = rid & 7;
  return `${domain}:${bus.toString(16).padStart(2, '0')}:${dev.toString(16).padStart(2, '0')}.${fn}`;
}

/** `0x%llx` as the FC transport prints WWNs. */
export function wwnAttr(hex16: string): string {
  return `0x${BigInt(`0x${hex16}`).toString(16)}\n`;
}

/** Moves a file or folder within the tree, replacing what is at `to`. */
export async function rmRename(from: string, to: string): Promise<void> {
  await mkdir(path.dirname(to), { recursive: true });
  await rm(to, { recursive: true, force: true });
  await rename(from, to);
}

/** True when `p` is a FIFO (the daemon turns trigger attributes into FIFOs while it runs). */
export async function isFifo(p: string): Promise<boolean> {
  try {
    return (await lstat(p)).isFIFO();
  } catch {
    return false;
  }
}
